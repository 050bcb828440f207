// Internal to conv.cpp / pool.cpp and their AVX2 twins: the loop kernels
// (direct convolution for C/groups == 1, pooling). The kernels live in convpool_kernels.inc, compiled
// twice: in the namespace `generic` (baseline ISA, conv.cpp/pool.cpp) and `avx2` (convpool_avx2.cpp,
// -mavx2 -mfma), and chosen at run time by cpu_path(). The .inc uses no std:: templates, so no inline
// function compiled for AVX2 can be merged by the linker into the generic path.
#pragma once
#include <cstdint>

#include "layerforge/detail/convpool_geometry.h"  // ConvGeo, PoolGeo (shared with the CUDA kernels)

#ifndef LAYERFORGE_HAVE_AVX2_BUILD
#define LAYERFORGE_HAVE_AVX2_BUILD 0
#endif

namespace layerforge {
namespace detail {

// Elements of one zero-padded input plane for the NCHW direct kernel.
inline int64_t direct_scratch_size(const ConvGeo& g) {
    return ((g.P - 1) * g.sh + (g.R - 1) * g.dh + 1) * ((g.Q - 1) * g.sw + (g.S - 1) * g.dw + 1);
}

// Scratch of the direct backward: NHWC per-chunk grad_w partials; NCHW per-thread padded planes + sums.
inline int64_t direct_bwd_scratch_size(const ConvGeo& g, int nt) {
    if (g.nhwc) return nt * g.R * g.S * g.K;
    // per thread: a padded x plane and a padded grad_out plane (each the larger of the two sizes), the
    // grad_w accumulators (R*S x 64) and the flipped kernel (R*S)
    const int64_t a = direct_scratch_size(g), b = (g.H + (g.R - 1) * g.dh) * (g.W + (g.S - 1) * g.dw);
    return nt * (2 * (a > b ? a : b) + g.R * g.S * 65);
}

// The register-blocked direct convolution (float32, stride 1, undilated): 6 output columns x 16 output
// channels per micro-tile. Wp: the padded image's row length (whole 6-wide blocks + the kernel's reach);
// scratch per thread: the padded image (C, P + R - 1, Wp; NHWC (P + R - 1, Wp, C)) and one micro-tile.
constexpr int kBlockedQ = 6, kBlockedK = 16;

inline int64_t blocked_padded_width(const ConvGeo& g) {
    return (g.Q + kBlockedQ - 1) / kBlockedQ * kBlockedQ + g.S - 1;
}

inline int64_t blocked_scratch_size(const ConvGeo& g) {
    return g.C * (g.P + g.R - 1) * blocked_padded_width(g) + kBlockedQ * kBlockedK;
}

#define LF_DECLARE_CONVPOOL_KERNELS                                                                   \
    /* direct conv, C/groups == 1. NHWC takes wt = weight as (R*S, K) (transposed by the caller); */  \
    /* NCHW takes scratch: nt * Hp * Wp (direct_scratch_size) for zero-padded input planes.  */        \
    template <typename T>                                                                             \
    void conv_direct_fwd(const ConvGeo& g, const T* x, const T* w, const T* wt, const T* b, T* out,   \
                         T* scratch, int nt);                                                         \
    /* gx, gw, gb may be null. scratch: direct_bwd_scratch_size(g, nt) elements. Returns true   */ \
    /* when it wrote gb (NCHW stride 1, one channel per group, gx and gw both asked: one pass);  */ \
    /* otherwise the caller computes the bias gradient.                                           */ \
    template <typename T>                                                                             \
    bool conv_direct_bwd(const ConvGeo& g, const T* go, const T* x, const T* w, const T* wt, T* gx,   \
                         T* gw, T* gb, T* gw_partial, int nt);                                        \
    /* register-blocked direct conv (conv.cpp packs wp; scratch: nt * blocked_scratch_size) */      \
    void conv_blocked_fwd(const ConvGeo& g, const float* x, const float* wp, const float* b, float* out, \
                          float* scratch, int nt);                                                   \
    /* Winograd F(m x m, 3x3) transforms, m = 2 or 4, al = m + 2 (conv.cpp runs the GEMMs).     */    \
    /* Tiles are numbered t = (n*th + i)*tw + j over N images x th x tw tiles of m x m          */    \
    /* outputs; [t0, t1) is a block of them.                                                    */    \
    /* input: x (N images at x_img apart, Cin planes H x W) -> V (Cin, al^2, ldv), column       */    \
    /* t - t0: B^T d B of the al x al patch at rows m*i - pt, cols m*j - pl (zero outside).     */    \
    /* scratch: al * (m * tw + 2).                                                             */    \
    template <typename T>                                                                             \
    void winograd_input_tiles(int m, const T* x, int64_t x_img, int64_t Cin, int64_t H, int64_t W,    \
                              int64_t pt, int64_t pl, int64_t th, int64_t tw, int64_t t0, int64_t t1, \
                              T* V, int64_t ldv, T* scratch);                                         \
    /* grad_weight: go (N images at go_img apart, Kout planes P x Q) -> Z (Kout, al^2, ldz),    */    \
    /* column t - t0: A dY A^T of the tile's m x m output gradients (zero outside).             */    \
    /* scratch: m * tw.                                                                         */    \
    template <typename T>                                                                             \
    void winograd_grad_out_tiles(int m, const T* go, int64_t go_img, int64_t Kout, int64_t P,         \
                                 int64_t Q, int64_t th, int64_t tw, int64_t t0, int64_t t1, T* Z,     \
                                 int64_t ldz, T* scratch);                                            \
    /* grad_x (the adjoint of the input transform): D (C, al^2, ldd), column t - t0: the        */    \
    /* gradient of tile t's transformed input -> B D B^T added (+=) into gx's planes (patches   */    \
    /* overlap; parts outside the plane dropped). D is overwritten. scratch: m * tw + 2.        */    \
    /* Returns whether a sum it added to turned NaN.                                             */    \
    template <typename T>                                                                             \
    bool winograd_input_adjoint(int m, T* D, int64_t ldd, int64_t C, int64_t H, int64_t W,            \
                                int64_t pt, int64_t pl, int64_t th, int64_t tw, int64_t t0,           \
                                int64_t t1, T* gx, int64_t gx_img, T* scratch);                       \
    /* output: M (Kout, al^2, ldm) -> out (N images at out_img apart, Kout planes P x Q):       */    \
    /* A^T m A (+ bias) written (=) to the tile's m x m outputs inside the plane. M is          */    \
    /* overwritten. Returns whether it wrote a NaN.                                             */    \
    template <typename T>                                                                             \
    bool winograd_output_tiles(int m, T* M, int64_t ldm, int64_t Kout, int64_t P, int64_t Q,          \
                               int64_t th, int64_t tw, int64_t t0, int64_t t1, const T* bias, T* out, \
                               int64_t out_img);                                                      \
    template <typename T>                                                                             \
    void maxpool_fwd(const PoolGeo& g, const T* x, T* out, int64_t* idx, int nt);                     \
    /* returns false when an index was out of range (that element is skipped) */                     \
    template <typename T>                                                                             \
    bool maxpool_bwd(const PoolGeo& g, const T* go, const int64_t* idx, T* gx, int nt);               \
    template <typename T>                                                                             \
    void avgpool_fwd(const PoolGeo& g, const T* x, T* out, int nt);                                   \
    template <typename T>                                                                             \
    void avgpool_bwd(const PoolGeo& g, const T* go, T* gx, int nt);                                   \
    template <typename T>                                                                             \
    void adaptive_avg_fwd(const PoolGeo& g, const T* x, T* out, int nt);                              \
    template <typename T>                                                                             \
    void adaptive_avg_bwd(const PoolGeo& g, const T* go, T* gx, int nt);

namespace generic {
LF_DECLARE_CONVPOOL_KERNELS
}
#if LAYERFORGE_HAVE_AVX2_BUILD
namespace avx2 {
LF_DECLARE_CONVPOOL_KERNELS
}
#endif

}  // namespace detail
}  // namespace layerforge
