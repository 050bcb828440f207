// 2-d convolution on the CPU: validation, the choice of algorithm, and the im2col/GEMM paths.
// The direct kernels (C/groups == 1) are in convpool_kernels.inc. See layerforge/conv.h for the plan.
#include "layerforge/conv.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "cpu_internal.h"
#include "convpool_internal.h"
#include "layerforge/detail/convpool_checks.h"
#include "layerforge/gemm.h"
#include "layerforge/runtime.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace layerforge {

namespace {

using detail::ConvGeo;

enum class Algo { direct, gemm_1x1, im2col, winograd, winograd4, blocked };

const char* algo_name(Algo a) {
    switch (a) {
        case Algo::direct: return "direct";
        case Algo::gemm_1x1: return "gemm_1x1";
        case Algo::im2col: return "im2col_gemm";
        case Algo::winograd: return "winograd_f2x2_3x3";
        case Algo::winograd4: return "winograd_f4x4_3x3";
        case Algo::blocked: return "direct_blocked";
    }
    return "?";
}

// The algorithm per shape. C/groups == 1 with groups > 1 (depthwise, channel multipliers): direct loops
// (a GEMM per group would have one row). C == 1 (the first layer) goes to im2col + GEMM: measured here,
// the packed GEMM with depth R*S = 9 runs ~5x faster than the direct loops over 26-wide rows. 3x3,
// stride 1, undilated, NCHW float32 with >= 16 channels in and out per group: Winograd F(4x4, 3x3) or
// F(2x2, 3x3) (winograd_wins below). Small planes that Winograd skips go to the register-blocked direct
// kernel (blocked_wins below). float64 keeps im2col.
// LAYERFORGE_CONV_ALGO=direct|im2col|winograd|winograd4|blocked forces a path where it applies (tests,
// comparisons; winograd = F(2x2), winograd4 = F(4x4)).
// (NHWC runs the NCHW Winograd passes on transposed copies: see nhwc_via_nchw_forward / _backward.)
bool winograd_applies(const ConvGeo& g) {
    return g.R == 3 && g.S == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1;
}

bool blocked_applies(const ConvGeo& g, bool f32) {
    return f32 && g.G == 1 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1;
}

// The register-blocked direct kernel computes whole 6-column x 16-channel tiles, and grad_x runs it as a
// convolution of zero-padded grad_out (the padding's zeros are multiplied too): taken where the work it
// computes is at most 1.3x the useful multiply-adds and >= 8 input channels keep its inner loop long.
// Measured (2 threads): the tutorial's 32x32x13x13 -> 64 forward 2.4 ms vs 3.1 ms im2col (Winograd F(4x4)
// now takes it: 1.6 ms); its grad_x (13x13 from 11x11 with padding 2: 1.9x the work) 4.2 ms vs 3.1 ms.
// NHWC (forward only) also with few input channels, where im2col copies one value per tap and row of the
// column matrix: the first layer, 32x28x28x1 -> 32, took 0.85-0.93 ms on im2col and 0.48-0.53 ms here
// (2 threads; torch channels_last 0.57-0.64 ms); 32x13x13x32 -> 64 ties (2.5-2.8 vs 2.7 ms). NCHW with
// one input channel stays on im2col (0.47 vs 0.53 ms).
bool blocked_wins(const ConvGeo& g, bool f32, bool grad_x) {
    if (!blocked_applies(g, f32) || (g.nhwc && grad_x)) return false;
    const int64_t cin = grad_x ? g.K : g.C, kout = grad_x ? g.C : g.K;
    const int64_t oh = grad_x ? g.H : g.P, ow = grad_x ? g.W : g.Q;
    const double computed = static_cast<double>(oh) * ((ow + detail::kBlockedQ - 1) / detail::kBlockedQ) *
                            detail::kBlockedQ * ((kout + detail::kBlockedK - 1) / detail::kBlockedK) *
                            detail::kBlockedK;
    const double useful = static_cast<double>(g.P) * g.Q * kout;
    // It threads over images only and copies each image zero-padded into a per-thread buffer: a batch
    // that fills the threads and a buffer of at most 8 MiB.
    const int64_t padded = cin * (oh + g.R - 1) * ((ow + detail::kBlockedQ - 1) / detail::kBlockedQ *
                                                   detail::kBlockedQ + g.S - 1);
    return (cin >= 8 || g.nhwc) && computed <= 1.3 * useful && g.N >= get_num_threads() &&
           padded <= (int64_t(2) << 20);
}

const char* forced_algo() {
    const char* force = std::getenv("LAYERFORGE_CONV_ALGO");
    return force && force[0] ? force : nullptr;
}

// The Winograd tile size m (2 or 4) where Winograd wins, else 0; oh x ow: the plane the pass writes (P x Q
// forward and for grad_weight's tiles, H x W for grad_x). float32 with >= 16 channels in and out per group:
// F(4x4) where its tiles need at most 0.75x the multiplies of F(2x2)'s (4x fewer than direct instead of
// 2.25x; outputs 11, 14, 20, 28, 56 wide but not 10, where F(4x4)'s 12-wide tiles waste 44%) and both sides
// are >= 8; else F(2x2) for output rows >= 16. Measured (2 threads, forward / grad_x / grad_weight ms):
// ResNet 8x64x56x56 -> 64 F(4x4) 12.2 / 12.6 / 15.2, F(2x2) 19.6 / 20.5 / 21.0; the tutorial's 32x32x13x13
// -> 64 F(4x4) 1.56 / 3.1 / 2.4 (grad_x from the forward's tiles: 1.7-2.2), F(2x2) 2.5 / 4.3 / 3.1, im2col
// 3.3 / 3.3 / 3.2. At 7x7 (512 channels) neither wins: im2col. F(4x4) costs accuracy: float32 outputs carry
// ~1e-6 of max|y| (F(2x2) ~2e-7, im2col ~1e-7); float64 keeps im2col.
int winograd_wins(const ConvGeo& g, bool f32, int64_t oh, int64_t ow) {
    if (!winograd_applies(g)) return 0;
    if (const char* force = forced_algo()) {
        if (std::strcmp(force, "winograd") == 0) return 2;
        return std::strcmp(force, "winograd4") == 0 ? 4 : 0;
    }
    if (!f32 || g.Cg < 16 || g.Kg < 16) return 0;
    const double f4 = 36.0 * ((oh + 3) / 4) * ((ow + 3) / 4), f2 = 16.0 * ((oh + 1) / 2) * ((ow + 1) / 2);
    if (std::min(oh, ow) >= 8 && f4 <= 0.75 * f2) return 4;
    return ow >= 16 ? 2 : 0;
}

Algo choose(const ConvGeo& g, bool f32) {
    if (const char* force = forced_algo()) {
        if (std::strcmp(force, "im2col") == 0) return Algo::im2col;
        if (std::strcmp(force, "direct") == 0 && g.Cg == 1) return Algo::direct;
        if (std::strcmp(force, "winograd") == 0 && winograd_applies(g)) return Algo::winograd;
        if (std::strcmp(force, "winograd4") == 0 && winograd_applies(g)) return Algo::winograd4;
        if (std::strcmp(force, "blocked") == 0 && blocked_applies(g, f32)) return Algo::blocked;
    }
    if (g.Cg == 1 && g.G > 1) return Algo::direct;
    if (g.R == 1 && g.S == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 && g.P == g.H && g.Q == g.W)
        return Algo::gemm_1x1;
    if (const int m = winograd_wins(g, f32, g.P, g.Q)) return m == 4 ? Algo::winograd4 : Algo::winograd;
    if (!forced_algo() && blocked_wins(g, f32, false)) return Algo::blocked;
    return Algo::im2col;
}

// Threads over images (GEMMs single-threaded) when the batch splits evenly, else threads inside GEMMs.
int image_chunks(const ConvGeo& g, int nt) {
    if (nt <= 1 || g.N <= 1) return 1;
    if (g.N % nt == 0 || g.N >= 4 * nt) return nt;
    return 1;
}

// ---- im2col / col2im --------------------------------------------------------------------------------
inline void out_range(int64_t off, int64_t stride, int64_t size, int64_t n_out, int64_t& lo, int64_t& hi) {
    lo = off >= 0 ? 0 : (-off + stride - 1) / stride;
    hi = (size - 1 - off) < 0 ? 0 : (size - 1 - off) / stride + 1;
    if (hi > n_out) hi = n_out;
    if (lo > hi) lo = hi;
}

// Columns of the output plane (NCHW) or rows (NHWC) per im2col tile: the tile (C/g*R*S x cols) stays
// around 384 KiB (float) so the GEMM packs it from cache; the GEMM is also fastest at these widths.
int64_t tile_cols(const ConvGeo& g) {
    const int64_t CRS = g.Cg * g.R * g.S, PQ = g.P * g.Q;
    int64_t nj = (96 * 1024 / CRS) / 16 * 16;
    if (nj < 64) nj = 64;
    return nj >= PQ ? PQ : nj;
}

// NCHW, columns [j0, j1) of the output plane:
// col[(c*R + r)*S + s][j - j0] = x[c, h, w] (0 in the padding), j = p*Q + q; xg points at channel g*Cg.
template <typename T>
void im2col_nchw(const ConvGeo& g, const T* xg, T* col, int64_t j0, int64_t j1) {
    const int64_t HW = g.H * g.W, nj = j1 - j0;
    const int64_t pa = j0 / g.Q, pb = (j1 - 1) / g.Q;
    for (int64_t c = 0; c < g.Cg; ++c)
        for (int64_t r = 0; r < g.R; ++r)
            for (int64_t s = 0; s < g.S; ++s) {
                T* row = col + ((c * g.R + r) * g.S + s) * nj - j0;  // indexed by j
                const int64_t woff = s * g.dw - g.pl;
                int64_t q0, q1;
                out_range(woff, g.sw, g.W, g.Q, q0, q1);
                for (int64_t p = pa; p <= pb; ++p) {
                    const int64_t qa = std::max<int64_t>(0, j0 - p * g.Q), qb = std::min<int64_t>(g.Q, j1 - p * g.Q);
                    T* o = row + p * g.Q;
                    const int64_t h = p * g.sh + r * g.dh - g.pt;
                    if (h < 0 || h >= g.H) {
                        for (int64_t q = qa; q < qb; ++q) o[q] = T(0);
                        continue;
                    }
                    const T* xr = xg + c * HW + h * g.W + woff;
                    const int64_t lo = std::max(qa, q0), hi = std::min(qb, q1);
                    for (int64_t q = qa; q < std::min(qb, lo); ++q) o[q] = T(0);
                    if (g.sw == 1) {
                        if (hi - lo >= 64)
                            std::memcpy(o + lo, xr + lo, sizeof(T) * (hi - lo));
                        else  // short rows (small images): an inline loop beats a library call
                            for (int64_t q = lo; q < hi; ++q) o[q] = xr[q];
                    } else {
                        for (int64_t q = lo; q < hi; ++q) o[q] = xr[q * g.sw];
                    }
                    for (int64_t q = std::max(qa, std::max(lo, hi)); q < qb; ++q) o[q] = T(0);
                }
            }
}

// The adjoint of im2col_nchw: gxg[c, h, w] += col[...] for the tile's columns.
template <typename T>
void col2im_nchw(const ConvGeo& g, const T* col, T* gxg, int64_t j0, int64_t j1) {
    const int64_t HW = g.H * g.W, nj = j1 - j0;
    const int64_t pa = j0 / g.Q, pb = (j1 - 1) / g.Q;
    for (int64_t c = 0; c < g.Cg; ++c)
        for (int64_t r = 0; r < g.R; ++r)
            for (int64_t s = 0; s < g.S; ++s) {
                const T* row = col + ((c * g.R + r) * g.S + s) * nj - j0;
                const int64_t woff = s * g.dw - g.pl;
                int64_t q0, q1;
                out_range(woff, g.sw, g.W, g.Q, q0, q1);
                for (int64_t p = pa; p <= pb; ++p) {
                    const int64_t h = p * g.sh + r * g.dh - g.pt;
                    if (h < 0 || h >= g.H) continue;
                    const int64_t qa = std::max<int64_t>(0, j0 - p * g.Q), qb = std::min<int64_t>(g.Q, j1 - p * g.Q);
                    const int64_t lo = std::max(qa, q0), hi = std::min(qb, q1);
                    const T* o = row + p * g.Q;
                    T* xr = gxg + c * HW + h * g.W + woff;
                    if (g.sw == 1) {
                        for (int64_t q = lo; q < hi; ++q) xr[q] += o[q];
                    } else {
                        for (int64_t q = lo; q < hi; ++q) xr[q * g.sw] += o[q];
                    }
                }
            }
}

// NHWC, rows [j0, j1) of the output plane: col[j - j0][(r*S + s)*Cg + c] = x[h, w, g*Cg + c];
// xg points at image n, channel g*Cg.
template <typename T>
void im2col_nhwc(const ConvGeo& g, const T* xg, T* col, int64_t j0, int64_t j1) {
    const int64_t ld = g.R * g.S * g.Cg;
    for (int64_t j = j0; j < j1; ++j) {
        const int64_t p = j / g.Q, q = j % g.Q;
        T* row = col + (j - j0) * ld;
        for (int64_t r = 0; r < g.R; ++r) {
            const int64_t h = p * g.sh - g.pt + r * g.dh;
            for (int64_t s = 0; s < g.S; ++s) {
                T* dst = row + (r * g.S + s) * g.Cg;
                const int64_t w = q * g.sw - g.pl + s * g.dw;
                const bool inside = h >= 0 && h < g.H && w >= 0 && w < g.W;
                if (g.Cg <= 8) {  // few channels (the first layer): no library call per tap
                    if (inside) {
                        const T* src = xg + (h * g.W + w) * g.C;
                        for (int64_t c = 0; c < g.Cg; ++c) dst[c] = src[c];
                    } else {
                        for (int64_t c = 0; c < g.Cg; ++c) dst[c] = T(0);
                    }
                } else if (!inside) {
                    std::memset(dst, 0, sizeof(T) * g.Cg);
                } else {
                    std::memcpy(dst, xg + (h * g.W + w) * g.C, sizeof(T) * g.Cg);
                }
            }
        }
    }
}

template <typename T>
void col2im_nhwc(const ConvGeo& g, const T* col, T* gxg, int64_t j0, int64_t j1) {
    const int64_t ld = g.R * g.S * g.Cg;
    for (int64_t j = j0; j < j1; ++j) {
        const int64_t p = j / g.Q, q = j % g.Q;
        const T* row = col + (j - j0) * ld;
        for (int64_t r = 0; r < g.R; ++r) {
            const int64_t h = p * g.sh - g.pt + r * g.dh;
            if (h < 0 || h >= g.H) continue;
            for (int64_t s = 0; s < g.S; ++s) {
                const int64_t w = q * g.sw - g.pl + s * g.dw;
                if (w < 0 || w >= g.W) continue;
                const T* src = row + (r * g.S + s) * g.Cg;
                T* dst = gxg + (h * g.W + w) * g.C;
                for (int64_t c = 0; c < g.Cg; ++c) dst[c] += src[c];
            }
        }
    }
}

// Runs body(chunk, gemm_threads) for chunk in [0, chunks): in parallel with single-threaded GEMMs when
// chunks > 1, else once with threaded GEMMs.
template <typename F>
void for_chunks(int chunks, int nt, F&& body) {
    if (chunks > 1) {
#pragma omp parallel for num_threads(chunks) schedule(static)
        for (int t = 0; t < chunks; ++t) body(t, 1);
    } else {
        body(0, nt);
    }
}

#if LAYERFORGE_HAVE_AVX2_BUILD
#define LF_DISPATCH(fn, ...) \
    (cpu_path() == CpuPath::avx2 ? detail::avx2::fn(__VA_ARGS__) : detail::generic::fn(__VA_ARGS__))
#else
#define LF_DISPATCH(fn, ...) detail::generic::fn(__VA_ARGS__)
#endif

// src (n, a, b) -> dst (n, b, a), images split over the threads.
template <typename T>
void swap_inner_axes(const T* src, int64_t n, int64_t a, int64_t b, T* dst, int nt) {
    const int threads = n * a * b < (int64_t(1) << 16) ? 1 : nt;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t i = 0; i < n; ++i) {
        const T* s = src + i * a * b;
        T* d = dst + i * a * b;
        for (int64_t r = 0; r < a; ++r)
            for (int64_t c = 0; c < b; ++c) d[c * a + r] = s[r * b + c];
    }
}

// weight (K, R, S, 1) -> wt (R*S, K), for the NHWC direct kernels.
template <typename T>
const T* transpose_weight_rsk(const ConvGeo& g, const T* w) {
    const int64_t RS = g.R * g.S;
    T* wt = detail::thread_arena(detail::ArenaSlot::k3).get_as<T>(static_cast<size_t>(RS * g.K));
    swap_inner_axes(w, 1, g.K, RS, wt, 1);
    return wt;
}

// ---- Winograd F(m x m, 3x3), NCHW: m = 2 or 4, al = m + 2 ----------------------------------------------
// winograd_fallback: the transforms take differences of inputs, so a +-inf input becomes inf - inf = NaN in
// outputs where a direct sum gives +-inf. The output transform notes any NaN it writes; the pass is then
// redone by im2col, which gives NaN and +-inf where torch does (a NaN input costs the pass twice).
//
// U (al^2, Kout, Cin) = G g G^T per (output, input) channel pair (G: al x 3, convpool_kernels.inc), computed in
// double. Forward: g = weight[k, c] (Kout = K, Cin = C per group). grad_x: the transposed convolution is a
// convolution of grad_out with weight[k, c] flipped in both axes and the channel roles swapped
// (Kout = C, Cin = K per group), so it reuses the same tiles.
constexpr double kWinogradG2[4][3] = {{1, 0, 0}, {.5, .5, .5}, {.5, -.5, .5}, {0, 0, 1}};
constexpr double kWinogradG4[6][3] = {{1, 0, 0},
                                      {-1.0 / 3, -1.0 / 3, -1.0 / 3},
                                      {1.0 / 3, -1.0 / 3, 1.0 / 3},
                                      {1.0 / 15, 2.0 / 15, 4.0 / 15},
                                      {-16.0 / 15, 8.0 / 15, -4.0 / 15},
                                      {0, 0, 1}};

template <int m>
constexpr const double (&winograd_g())[m + 2][3] {
    if constexpr (m == 2)
        return kWinogradG2;
    else
        return kWinogradG4;
}

template <int m, typename T>
void winograd_weights(const T* w, int64_t K, int64_t C, bool for_grad_x, T* U) {
    constexpr int al = m + 2;
    const auto& G = winograd_g<m>();
    const int64_t KC = K * C;
    // planes over the pair index o: gk (9, KC) -> tmp = G g (al * 3, KC) -> U = (G g) G^T (al^2, KC); the
    // loops over o vectorise
    double* gk =
        detail::thread_arena(detail::ArenaSlot::k2).get_as<double>(static_cast<size_t>((9 + 3 * al) * KC));
    double* tmp = gk + 9 * KC;
    for (int64_t k = 0; k < K; ++k)
        for (int64_t c = 0; c < C; ++c) {
            const T* s = w + (k * C + c) * 9;
            const int64_t o = for_grad_x ? c * K + k : k * C + c;
            for (int i = 0; i < 9; ++i) gk[i * KC + o] = static_cast<double>(for_grad_x ? s[8 - i] : s[i]);
        }
    for (int a = 0; a < al; ++a)
        for (int col = 0; col < 3; ++col) {
            const double g0 = G[a][0], g1 = G[a][1], g2 = G[a][2];
            const double *r0 = gk + col * KC, *r1 = gk + (3 + col) * KC, *r2 = gk + (6 + col) * KC;
            double* dst = tmp + (3 * a + col) * KC;
            for (int64_t o = 0; o < KC; ++o) dst[o] = g0 * r0[o] + g1 * r1[o] + g2 * r2[o];
        }
    for (int a = 0; a < al; ++a)
        for (int b = 0; b < al; ++b) {
            const double g0 = G[b][0], g1 = G[b][1], g2 = G[b][2];
            const double *r0 = tmp + (3 * a) * KC, *r1 = r0 + KC, *r2 = r0 + 2 * KC;
            T* dst = U + (al * a + b) * KC;
            for (int64_t o = 0; o < KC; ++o) dst[o] = static_cast<T>(g0 * r0[o] + g1 * r1[o] + g2 * r2[o]);
        }
}

// Tiles per block, a multiple of 16 (whole B panels of the micro-kernel): V and M (channels x al^2 x TB)
// near L2 for 64 channels (~128 tiles for F(2x2), ~48 for F(4x4)), at most a thread's share.
template <int m>
int64_t winograd_block_tiles(int64_t channels, int64_t tiles, int nt) {
    constexpr int al = m + 2;
    const int64_t cache =
        std::max<int64_t>(16, 128 * 64 * 16 / (al * al) / std::max<int64_t>(64, channels) / 16 * 16);
    return (std::min(cache, (tiles + nt - 1) / nt) + 15) / 16 * 16;
}

// U = G g G^T of every group (winograd_weights: U[e] R x D, R = Kout, D = Cin of the pass) packed into A
// panels: rows x depth = R x D, or D x R (transpose: grad_x from the forward's tiles), group gi, position e,
// depth block pc at Ap + ((gi * nal + e) * kb + pc) * a_blk.
template <int m, typename T>
void winograd_pack_u(const ConvGeo& g, const T* w, bool flip, bool transpose, const detail::GemmKernelInfo<T>& ki,
                     int64_t KC, int64_t kb, int64_t a_blk, T* Ap) {
    constexpr int nal = (m + 2) * (m + 2);
    const int64_t R = flip ? g.Cg : g.Kg, D = flip ? g.Kg : g.Cg, rows = transpose ? D : R;
    const int64_t depth = transpose ? R : D;
    T* U = detail::thread_arena(detail::ArenaSlot::gemm_b).get_as<T>(static_cast<size_t>(nal * R * D));
    for (int64_t gi = 0; gi < g.G; ++gi) {
        winograd_weights<m, T>(w + gi * g.Kg * g.Cg * 9, g.Kg, g.Cg, flip, U);
        for (int e = 0; e < nal; ++e)
            for (int64_t pc = 0; pc < kb; ++pc) {
                const T* Ue = U + e * R * D;
                T* dst = Ap + ((gi * nal + e) * kb + pc) * a_blk;
                const int64_t kc = std::min(KC, depth - pc * KC);
                if (transpose)
                    ki.pack_a(rows, kc, Ue + pc * KC * D, 1, D, dst);
                else
                    ki.pack_a(rows, kc, Ue + pc * KC, D, 1, dst);
            }
    }
}

// A thread's buffers for one block of TB tiles: planes (a: a x al^2 x TB) and (b: b x al^2 x TB) in the
// layout of V, Z and M, and the gathers' scratch rows.
template <typename T>
struct WinogradBuffers {
    T *a, *b, *scratch;
};
template <int m, typename T>
WinogradBuffers<T> winograd_buffers(int64_t a, int64_t b, int64_t TB, int64_t tw) {
    constexpr int al = m + 2;
    return {detail::thread_arena(detail::ArenaSlot::k0).get_as<T>(static_cast<size_t>(al * al * a * TB)),
            detail::thread_arena(detail::ArenaSlot::k1).get_as<T>(static_cast<size_t>(al * al * b * TB)),
            detail::thread_arena(detail::ArenaSlot::k2).get_as<T>(static_cast<size_t>(al * (m * tw + 2)))};
}

// The al^2 products of a block: M[e] (rows x nbr) = A[e] (rows x depth) @ B[e] (depth x nbr), e < nal, in the
// (channels, al^2, TB) layout of V, Z and M: B[e] row p at B + (p * nal + e) * TB, read in place as the
// micro-kernel's B panels (nbr a multiple of NR); M[e] row r at M + (r * nal + e) * TB. A[e] packed into A
// panels per depth block pc (KC deep, kb blocks) at Ap + (e * kb + pc) * a_blk.
template <typename T>
void winograd_products(const detail::GemmKernelInfo<T>& ki, int nal, int64_t rows, int64_t depth, int64_t KC,
                       int64_t kb, int64_t a_blk, const T* Ap, const T* B, T* M, int64_t TB, int64_t nbr) {
    const int64_t mr = ki.mr, nr = ki.nr, mp = (rows + mr - 1) / mr, ld = nal * TB;
    alignas(64) T tile[16 * 32];  // MR x NR <= 16 x 32 on every path
    for (int e = 0; e < nal; ++e)
        for (int64_t pc = 0; pc < kb; ++pc) {
            const int64_t kc = std::min(KC, depth - pc * KC);
            const T* A = Ap + (e * kb + pc) * a_blk;
            const T* Be = B + (pc * KC * nal + e) * TB;
            T* Me = M + e * TB;
            for (int64_t j0 = 0; j0 < nbr; j0 += nr)  // a B panel serves every A panel (in L1)
                for (int64_t a = 0; a < mp; ++a) {
                    const int r = static_cast<int>(std::min(mr, rows - a * mr));
                    T* c = Me + a * mr * ld + j0;
                    if (r == mr || ki.ukernel_rows) {
                        detail::gemm_tile_rows(ki, r, kc, A + a * mr * kc, Be + j0, ld, c, ld, T(1),
                                               pc == 0 ? T(0) : T(1));
                        continue;
                    }
                    ki.ukernel(kc, A + a * mr * kc, Be + j0, ld, tile, nr, 1, T(1), T(0));
                    for (int i = 0; i < r; ++i)
                        for (int64_t j = 0; j < nr; ++j)
                            c[i * ld + j] = pc == 0 ? tile[i * nr + j] : tile[i * nr + j] + c[i * ld + j];
                }
        }
}

// Forward: in = x (N, C, H, W) -> out (N, K, P, Q). grad_x: in = grad_out (N, K, P, Q) -> gx (N, C, H, W)
// with padding 2 - pt, 2 - pl (negative padding is an offset; reads outside the plane are zeros).
// Tiles of m x m outputs go in blocks of TB; per block and group: input transform -> V (Cin, al^2, TB),
// al^2 products M[e] (Kout x TB) = U[e] (Kout x Cin) @ V[e] into M (Kout, al^2, TB), output transform. U is
// packed into the micro-kernel's A panels once per call and the kernel reads V's rows in place as its B
// panels (no per-product packing: at 32 channels and 48 tiles a product is only ~100k multiply-adds). Blocks
// run in parallel; each writes its own tiles' outputs, so no reduction and no races. Returns whether an
// output is NaN (the caller then recomputes by im2col: see winograd_fallback).
template <int m, typename T>
bool winograd_conv(const ConvGeo& g, const T* in, const T* w, const T* b, T* out, bool grad_x, int nt) {
    constexpr int al = m + 2, nal = al * al;
    const detail::GemmKernelInfo<T>& ki = detail::gemm_kernel_current<T>();
    const int64_t mr = ki.mr, nr = ki.nr;
    const int64_t Cin = grad_x ? g.Kg : g.Cg, Kout = grad_x ? g.Cg : g.Kg;
    const int64_t Hin = grad_x ? g.P : g.H, Win = grad_x ? g.Q : g.W, Hout = grad_x ? g.H : g.P,
                  Wout = grad_x ? g.W : g.Q;
    const int64_t pt = grad_x ? 2 - g.pt : g.pt, pl = grad_x ? 2 - g.pl : g.pl;
    const int64_t in_img = (grad_x ? g.K : g.C) * Hin * Win, out_img = (grad_x ? g.C : g.K) * Hout * Wout;
    const int64_t th = (Hout + m - 1) / m, tw = (Wout + m - 1) / m, tiles = g.N * th * tw;
    const int64_t TB = winograd_block_tiles<m>(std::max(Cin, Kout), tiles, nt);  // a multiple of nr
    // A panels of U: group gi, position e, depth block pc at Ap + ((gi * nal + e) * kb + pc) * a_blk
    const int64_t kb = (Cin + ki.kc - 1) / ki.kc, KC = (Cin + kb - 1) / kb;  // even depth blocks
    const int64_t mp = (Kout + mr - 1) / mr, a_blk = mp * mr * KC;
    T* Ap = detail::thread_arena(detail::ArenaSlot::k3)
                .get_as<T>(static_cast<size_t>(g.G * nal * kb * a_blk + detail::kGemmPackSlack));
    winograd_pack_u<m, T>(g, w, grad_x, false, ki, KC, kb, a_blk, Ap);
    // Threads take equal shares of the 16-tile panels of all groups (11 blocks on 2 threads would leave one
    // idle for a block), cut into blocks of at most TB tiles.
    const int64_t panels = (tiles + 15) / 16, units = g.G * panels;
    const int threads = static_cast<int>(std::min<int64_t>(nt, units));
    bool nan = false;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(|| : nan) if (threads > 1)
    for (int tid = 0; tid < threads; ++tid) {
        const WinogradBuffers<T> buf = winograd_buffers<m, T>(Cin, Kout, TB, tw);
        T *V = buf.a, *M = buf.b, *scratch = buf.scratch;
        const int64_t u1 = units * (tid + 1) / threads;
        for (int64_t u = units * tid / threads; u < u1;) {
            const int64_t gi = u / panels, p0 = u % panels, p1 = std::min({p0 + TB / 16, panels, p0 + (u1 - u)});
            u += p1 - p0;
            const int64_t t0 = p0 * 16, t1 = std::min(tiles, p1 * 16), nb = t1 - t0;
            const int64_t nbr = (nb + nr - 1) / nr * nr;  // the columns the kernel reads and writes
            LF_DISPATCH(winograd_input_tiles<T>, m, in + gi * Cin * Hin * Win, in_img, Cin, Hin, Win, pt, pl, th, tw,
                        t0, t1, V, TB, scratch);
            if (nbr > nb)  // a partial last panel reads zeros past the block's tiles
                for (int64_t r = 0; r < nal * Cin; ++r) std::fill(V + r * TB + nb, V + r * TB + nbr, T(0));
            winograd_products(ki, nal, Kout, Cin, KC, kb, a_blk, Ap + gi * nal * kb * a_blk, V, M, TB, nbr);
            nan = LF_DISPATCH(winograd_output_tiles<T>, m, M, TB, Kout, Hout, Wout, th, tw, t0, t1,
                              b ? b + gi * Kout : nullptr, out + gi * Kout * Hout * Wout, out_img) || nan;
        }
    }
    return nan;
}

// grad_weight and/or grad_x by Winograd F(m x m, 3x3), from the tiles of the forward's output. With
// Y = A^T [U o V] A per tile (U = G g G^T, V = B^T d B) and Z = A dY A^T (the transform of the tile's
// output gradient, both gradients' operand):
//  * grad_weight = G^T [sum over tiles of Z o V] G: per block the forward's input transform V and Z, then
//    al^2 GEMMs M[e] (Kout x Cin) += Z[e] (Kout x TB) @ V[e]^T reducing over the block's tiles (2.25x / 4x
//    fewer multiplies than im2col's GEMM of depth N*P*Q). Each thread sums a fixed, contiguous range of
//    tiles into its own M; the threads' M are added in thread order (deterministic for a given thread
//    count), then gw = G^T M G.
//  * grad_x = the sum over tiles of B [U^T Z] B^T, each the gradient of the tile's (m + 2)^2 input patch:
//    al^2 GEMMs D[e] (Cin x TB) = U[e]^T (Cin x Kout) @ Z[e] (U^T packed once, Z read in place), then the
//    adjoint transform, added into gx (patches overlap by two rows and columns). This runs on the forward's
//    tiles: the tutorial's 11x11 outputs take 3x3 tiles where grad_x as a convolution of the padded grad_out
//    takes 4x4 tiles for its 13x13 plane. Threads then own whole images (their planes take the sums), so
//    it needs N >= threads (the caller checks).
// Returns whether a gradient is NaN (as winograd_conv).
template <int m, typename T>
bool winograd_backward(const ConvGeo& g, const T* go, const T* x, const T* w, T* gx, T* gw, int nt) {
    constexpr int al = m + 2, nal = al * al;
    const auto& G = winograd_g<m>();
    const detail::GemmKernelInfo<T>& ki = detail::gemm_kernel_current<T>();
    const int64_t mr = ki.mr, nr = ki.nr;
    const int64_t Cin = g.Cg, Kout = g.Kg;
    const int64_t th = (g.P + m - 1) / m, tw = (g.Q + m - 1) / m, per_img = th * tw, tiles = g.N * per_img;
    // grad_weight's products reduce over a block's TB tiles into M (al^2 x Kout x Cin a thread, past L2 at
    // 128 channels), so alone it takes deep blocks: 256 tiles, V and Z (al^2 x channels x TB) within ~8 MiB.
    // With grad_x, D (like V) is produced and consumed per block: 64 tiles (measured against 48-192: the
    // tutorial's backward 3.1-3.3 ms for all, ResNet's 25-28 ms, 64 best for both).
    const int64_t tb_mem = (8 << 20) / (nal * (Cin + Kout) * static_cast<int64_t>(sizeof(T)));
    const int64_t TB =
        std::max<int64_t>(16, std::min<int64_t>({gx ? 64 : 256, tb_mem, (tiles + nt - 1) / nt}) / 16 * 16);
    const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nt, gx ? g.N : tiles / 16)));
    const int64_t wsz = nal * Kout * Cin;
    // grad_x: U[e]^T (Cin x Kout) as A panels, group gi, position e, depth block pc at
    // Ap + ((gi * nal + e) * kb + pc) * a_blk; after the threads' M in the same arena
    const int64_t kb = (Kout + ki.kc - 1) / ki.kc, KC = (Kout + kb - 1) / kb;
    const int64_t mp = (Cin + mr - 1) / mr, a_blk = mp * mr * KC;
    const int64_t msz = gw ? threads * g.G * wsz : 0;
    const int64_t asz = gx ? g.G * nal * kb * a_blk + detail::kGemmPackSlack : 0;
    T* Msum = detail::thread_arena(detail::ArenaSlot::k3).get_as<T>(static_cast<size_t>(msz + asz));
    T* Ap = Msum + msz;
    std::fill(Msum, Msum + msz, T(0));
    if (gx) winograd_pack_u<m, T>(g, w, false, true, ki, KC, kb, a_blk, Ap);  // U[e]^T (Cin x Kout)
    const int64_t x_img = g.C * g.H * g.W, go_img = g.K * g.P * g.Q;
    bool nan_x = false;
#pragma omp parallel for num_threads(threads) schedule(static) reduction(|| : nan_x) if (threads > 1)
    for (int t = 0; t < threads; ++t) {
        const WinogradBuffers<T> buf = winograd_buffers<m, T>(Cin, Kout, TB, tw);
        T *V = buf.a, *Z = buf.b, *scratch = buf.scratch;
        // this thread's tiles: whole images for grad_x (zeroed here, then summed into), else an even share
        const int64_t ta = gx ? g.N * t / threads * per_img : tiles * t / threads;
        const int64_t tb = gx ? g.N * (t + 1) / threads * per_img : tiles * (t + 1) / threads;
        if (gx) std::fill(gx + ta / per_img * x_img, gx + tb / per_img * x_img, T(0));
        for (int64_t gi = 0; gi < g.G; ++gi)
            for (int64_t t0 = ta; t0 < tb; t0 += TB) {
                const int64_t t1 = std::min(tb, t0 + TB), nb = t1 - t0, nbr = (nb + nr - 1) / nr * nr;
                const int64_t ld = nal * TB;  // rows of V[e] and Z[e]
                LF_DISPATCH(winograd_grad_out_tiles<T>, m, go + gi * Kout * g.P * g.Q, go_img, Kout, g.P, g.Q, th,
                            tw, t0, t1, Z, TB, scratch);
                if (gw) {
                    LF_DISPATCH(winograd_input_tiles<T>, m, x + gi * Cin * g.H * g.W, x_img, Cin, g.H, g.W, g.pt,
                                g.pl, th, tw, t0, t1, V, TB, scratch);
                    T* M = Msum + (t * g.G + gi) * wsz;
                    for (int e = 0; e < nal; ++e)  // M[e] += Z[e] @ V[e]^T
                        gemm_strided<T>(Kout, Cin, nb, T(1), Z + e * TB, ld, 1, V + e * TB, 1, ld, T(1),
                                        M + e * Kout * Cin, Cin, 1, 1);
                }
                if (!gx) continue;
                if (nbr > nb)  // a partial last panel reads zeros past the block's tiles
                    for (int64_t r = 0; r < nal * Kout; ++r) std::fill(Z + r * TB + nb, Z + r * TB + nbr, T(0));
                T* D = V;  // D[e] = U[e]^T @ Z[e], (Cin, al^2, TB) like V
                winograd_products(ki, nal, Cin, Kout, KC, kb, a_blk, Ap + gi * nal * kb * a_blk, Z, D, TB, nbr);
                nan_x = LF_DISPATCH(winograd_input_adjoint<T>, m, D, TB, Cin, g.H, g.W, g.pt, g.pl, th, tw, t0, t1,
                                    gx + gi * Cin * g.H * g.W, x_img, scratch) || nan_x;
            }
    }
    if (!gw) return nan_x;
    // gw = G^T M G per (output, input) channel pair, as passes over the pair index pr (vectorised), pairs
    // split over the threads: the threads' M added in thread order, r = G^T M (3 x al), then r G (3 x 3).
    const int64_t pairs = Kout * Cin;
    bool nan = false;
#pragma omp parallel num_threads(threads) reduction(|| : nan) if (threads > 1)
    {
        int tid = 0, nth = 1;
#ifdef _OPENMP
        tid = omp_get_thread_num();
        nth = omp_get_num_threads();
#endif
        const int64_t p0 = pairs * tid / nth, p1 = pairs * (tid + 1) / nth, np = p1 - p0;
        T* r = detail::thread_arena(detail::ArenaSlot::k0).get_as<T>(static_cast<size_t>(3 * al * np + 9 * np));
        T* y = r + 3 * al * np;
        for (int64_t gi = 0; gi < g.G; ++gi) {
            T* M0 = Msum + gi * wsz;
            for (int t = 1; t < threads; ++t) {
                const T* Mt = Msum + (t * g.G + gi) * wsz;
                for (int e = 0; e < nal; ++e)
                    for (int64_t pr = p0; pr < p1; ++pr) M0[e * pairs + pr] += Mt[e * pairs + pr];
            }
            for (int i = 0; i < 3; ++i)
                for (int b = 0; b < al; ++b) {
                    T* dst = r + (i * al + b) * np;
                    std::fill(dst, dst + np, T(0));
                    for (int a = 0; a < al; ++a) {
                        const T c = static_cast<T>(G[a][i]);
                        if (c == T(0)) continue;
                        const T* src = M0 + (a * al + b) * pairs + p0;
                        for (int64_t q = 0; q < np; ++q) dst[q] += c * src[q];
                    }
                }
            for (int i = 0; i < 3; ++i)
                for (int j = 0; j < 3; ++j) {
                    T* dst = y + (3 * i + j) * np;
                    std::fill(dst, dst + np, T(0));
                    for (int b = 0; b < al; ++b) {
                        const T c = static_cast<T>(G[b][j]);
                        if (c == T(0)) continue;
                        const T* src = r + (i * al + b) * np;
                        for (int64_t q = 0; q < np; ++q) dst[q] += c * src[q];
                    }
                }
            T* out = gw + (gi * pairs + p0) * 9;
            for (int64_t q = 0; q < np; ++q)
                for (int ij = 0; ij < 9; ++ij) {
                    const T v = y[ij * np + q];
                    out[q * 9 + ij] = v;
                    nan = nan || v != v;
                }
        }
    }
    return nan || nan_x;
}

// ---- Register-blocked direct convolution (convpool_kernels.inc: conv_blocked_fwd) ----------------------
// The kernel computes a stride-1 undilated convolution of `in` (N, Cin, Hin, Win) into out (N, Kout, Hout,
// Wout) with padding (pt, pl). Forward: in = x, Kout = K. grad_x: in = grad_out with the weight flipped in
// both axes and its channel roles swapped, padding R - 1 - pt, S - 1 - pl (the transposed convolution).
// wp (ceil(Kout/16), Cin, R, S, 16), channels past Kout zero.
void pack_blocked_weight(const ConvGeo& g, const float* w, bool grad_x, float* wp) {
    const int64_t Kout = grad_x ? g.C : g.K, Cin = grad_x ? g.K : g.C, RS = g.R * g.S;
    const int64_t kblocks = (Kout + detail::kBlockedK - 1) / detail::kBlockedK;
    for (int64_t kb = 0; kb < kblocks; ++kb)
        for (int64_t c = 0; c < Cin; ++c)
            for (int64_t rs = 0; rs < RS; ++rs)
                for (int j = 0; j < detail::kBlockedK; ++j) {
                    const int64_t k = kb * detail::kBlockedK + j;
                    float v = 0.f;
                    if (k < Kout && g.nhwc)  // forward only: w (K, R, S, C)
                        v = w[(k * RS + rs) * g.C + c];
                    else if (k < Kout)
                        v = grad_x ? w[(c * g.C + k) * RS + (RS - 1 - rs)] : w[(k * g.C + c) * RS + rs];
                    wp[((kb * Cin + c) * RS + rs) * detail::kBlockedK + j] = v;
                }
}

void blocked_conv(const ConvGeo& g, const float* in, const float* w, const float* b, float* out, bool grad_x,
                  int nt) {
    ConvGeo k = g;  // the geometry of the convolution the kernel runs
    if (grad_x) {
        k.C = g.K, k.H = g.P, k.W = g.Q, k.K = g.C, k.P = g.H, k.Q = g.W;
        k.pt = g.R - 1 - g.pt, k.pl = g.S - 1 - g.pl;
        k.Cg = k.C, k.Kg = k.K;
    }
    const int64_t kblocks = (k.K + detail::kBlockedK - 1) / detail::kBlockedK;
    float* wp = detail::thread_arena(detail::ArenaSlot::k3)
                    .get_as<float>(static_cast<size_t>(kblocks * k.C * k.R * k.S * detail::kBlockedK));
    pack_blocked_weight(g, w, grad_x, wp);
    const int threads = static_cast<int>(std::min<int64_t>(nt, k.N));
    float* scratch = detail::thread_arena(detail::ArenaSlot::k2)
                         .get_as<float>(static_cast<size_t>(threads * detail::blocked_scratch_size(k)));
    LF_DISPATCH(conv_blocked_fwd, k, in, wp, b, out, scratch, threads);
}

// 1x1 NCHW over the whole batch: out_n = W_g x_n for every image n and group g (grad_x: gx_n = W_g^T go_n,
// `in` = grad_out, no bias), as one GEMM whose columns are the images' pixels back to back (J = n*HW + j).
// Column panels run across image boundaries (8 images of 14x14 = 98 panels of 16, where per-image GEMMs pay
// a 4-column edge panel each) and W is packed once per call instead of once per image. Threads take
// contiguous ranges of column panels (one thread below ~2 MFLOP, as the GEMM).
// Blocking as the GEMM's: W in MC-row blocks (L2), B in blocks of 16 panels at depth <= KC, one B panel (L1)
// against every A strip of the block. A tile that crosses an image (or the end), or a partial row strip
// where the path has no rows kernel, goes through a scratch tile.
template <typename T>
void conv1x1_nchw_batch(const ConvGeo& g, const T* in, const T* w, const T* b, T* out, bool grad_x, int nt) {
    const detail::GemmKernelInfo<T>& ki = detail::gemm_kernel_current<T>();
    const int64_t mr = ki.mr, nr = ki.nr, HW = g.H * g.W, cols = g.N * HW;
    // rows of the GEMM (output channels per group) and its depth (input channels per group); channel totals
    const int64_t Kg = grad_x ? g.Cg : g.Kg, Cg = grad_x ? g.Kg : g.Cg;
    const int64_t Kall = grad_x ? g.C : g.K, Call = grad_x ? g.K : g.C;
    const int64_t kb = (Cg + ki.kc - 1) / ki.kc, KC = (Cg + kb - 1) / kb;  // even depth blocks
    const int64_t mp = (Kg + mr - 1) / mr, MCp = std::max<int64_t>(1, ki.mc / mr);  // A strips; per L2 block
    const int64_t np = (cols + nr - 1) / nr, NB = 16;                                // B panels; per block
    // W (W^T for grad_x) of every group packed once: group gi, depth block pc at Ap + (gi * kb + pc) * a_blk
    const int64_t a_blk = mp * mr * KC;
    T* Ap = detail::thread_arena(detail::ArenaSlot::k3)
                .get_as<T>(static_cast<size_t>(g.G * kb * a_blk + detail::kGemmPackSlack));
    for (int64_t gi = 0; gi < g.G; ++gi)
        for (int64_t pc = 0; pc < kb; ++pc) {
            const int64_t p0 = pc * KC, kc = std::min(KC, Cg - p0);
            const T* wg = w + gi * g.Kg * g.Cg;  // (Kg x Cg) of the forward's view
            if (grad_x)
                ki.pack_a(Kg, kc, wg + p0 * g.Cg, 1, g.Cg, Ap + (gi * kb + pc) * a_blk);
            else
                ki.pack_a(Kg, kc, wg + p0, g.Cg, 1, Ap + (gi * kb + pc) * a_blk);
        }
    const bool small = 2.0 * static_cast<double>(g.G) * Kg * Cg * cols < 2.0e6;
    const int threads = small ? 1 : static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nt, np)));
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int t = 0; t < threads; ++t) {
        const int64_t q0 = np * t / threads, q1 = np * (t + 1) / threads;  // this thread's column panels
        T* Bp = detail::thread_arena(detail::ArenaSlot::k0).get_as<T>(static_cast<size_t>(NB * nr * KC));
        alignas(64) T tile[16 * 32];  // MR x NR <= 16 x 32 on every path
        for (int64_t gi = 0; gi < g.G; ++gi)
            for (int64_t qb = q0; qb < q1; qb += NB) {
                const int64_t nq = std::min(NB, q1 - qb);
                for (int64_t pc = 0; pc < kb; ++pc) {
                    const int64_t p0 = pc * KC, kc = std::min(KC, Cg - p0);
                    // B panels: rows p0.. of the group's channels, columns of the panels (zero past cols)
                    for (int64_t q = 0; q < nq; ++q) {
                        T* dst = Bp + q * nr * kc;
                        for (int64_t jj = 0; jj < nr;) {
                            const int64_t J = (qb + q) * nr + jj;
                            if (J >= cols) {
                                for (int64_t p = 0; p < kc; ++p)
                                    std::fill(dst + p * nr + jj, dst + (p + 1) * nr, T(0));
                                break;
                            }
                            const int64_t n = J / HW, j = J % HW, len = std::min(nr - jj, HW - j);
                            const T* src = in + (n * Call + gi * Cg + p0) * HW + j;
                            for (int64_t p = 0; p < kc; ++p)
                                std::copy(src + p * HW, src + p * HW + len, dst + p * nr + jj);
                            jj += len;
                        }
                    }
                    const T beta = pc == 0 ? T(0) : T(1);
                    const T* A = Ap + (gi * kb + pc) * a_blk;
                    for (int64_t ic = 0; ic < mp; ic += MCp)
                        for (int64_t q = 0; q < nq; ++q) {
                            const int64_t J0 = (qb + q) * nr, n = J0 / HW, j = J0 % HW;
                            const bool whole = j + nr <= HW;  // the panel's columns lie in one image
                            for (int64_t a = ic; a < std::min(mp, ic + MCp); ++a) {
                                const int rows = static_cast<int>(std::min(mr, Kg - a * mr));
                                const T* ap = A + a * mr * kc;
                                const T* bp = Bp + q * nr * kc;
                                if (whole && (rows == mr || ki.ukernel_rows)) {  // (else the kernel writes mr rows)
                                    T* c = out + (n * Kall + gi * Kg + a * mr) * HW + j;
                                    detail::gemm_tile_rows(ki, rows, kc, ap, bp, nr, c, HW, T(1), beta);
                                    continue;
                                }
                                ki.ukernel(kc, ap, bp, nr, tile, nr, 1, T(1), T(0));
                                for (int64_t jj = 0; jj < nr && J0 + jj < cols; ++jj) {
                                    const int64_t J = J0 + jj;
                                    T* c = out + ((J / HW) * Kall + gi * Kg + a * mr) * HW + J % HW;
                                    for (int i = 0; i < rows; ++i)
                                        c[i * HW] = tile[i * nr + jj] + (pc == 0 ? T(0) : c[i * HW]);
                                }
                            }
                        }
                }
                const int64_t J_end = std::min(cols, (qb + nq) * nr);
                if (b)  // bias over this block's columns
                    for (int64_t J = qb * nr; J < J_end;) {
                        const int64_t n = J / HW, j = J % HW, len = std::min(J_end - J, HW - j);
                        for (int64_t k = 0; k < Kg; ++k) {
                            T* c = out + (n * Kall + gi * Kg + k) * HW + j;
                            const T bk = b[gi * Kg + k];
                            for (int64_t e = 0; e < len; ++e) c[e] += bk;
                        }
                        J += len;
                    }
            }
    }
}

// ---- NHWC through the NCHW Winograd passes ------------------------------------------------------------
// NHWC shapes that take Winograd run the NCHW passes on transposed copies (x, weight and grad_out in; out,
// grad_x and grad_weight back): at the tutorial's 32x13x13x32 -> 64 the copies cost ~0.1 ms each against
// the blocked kernel's 2.2-2.4 ms forward (Winograd: ~1.5 ms).

// Grow-only per-thread buffers for the transposed copies (the arenas are the Winograd passes' own): a call
// after the first allocates and clears nothing.
template <typename T>
T* nhwc_copy_buffer(int which, int64_t n) {
    thread_local std::vector<T> buffers[4];
    std::vector<T>& v = buffers[which];
    if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
    return v.data();
}

template <typename T>
void forward_impl(const ConvGeo& g, const T* x, const T* w, const T* b, T* out);
template <typename T>
void backward_impl(const ConvGeo& g, const T* go, const T* x, const T* w, T* gx, T* gw, T* gb);

ConvGeo as_nchw(const ConvGeo& g) {
    ConvGeo gc = g;
    gc.nhwc = false;
    return gc;
}

template <typename T>
void nhwc_via_nchw_forward(const ConvGeo& gc, const T* x, const T* w, const T* b, T* out, int nt) {
    const int64_t HW = gc.H * gc.W, PQ = gc.P * gc.Q, RS = gc.R * gc.S;
    T* xc = nhwc_copy_buffer<T>(0, gc.N * gc.C * HW);
    T* wc = nhwc_copy_buffer<T>(1, gc.K * gc.Cg * RS);
    T* oc = nhwc_copy_buffer<T>(2, gc.N * gc.K * PQ);
    swap_inner_axes(x, gc.N, HW, gc.C, xc, nt);    // (N, HW, C) -> (N, C, HW)
    swap_inner_axes(w, gc.K, RS, gc.Cg, wc, nt);   // (K, RS, Cg) -> (K, Cg, RS)
    forward_impl<T>(gc, xc, wc, b, oc);
    swap_inner_axes(oc, gc.N, gc.K, PQ, out, nt);  // (N, K, PQ) -> (N, PQ, K)
}

template <typename T>
void nhwc_via_nchw_backward(const ConvGeo& gc, const T* go, const T* x, const T* w, T* gx, T* gw, int nt) {
    const int64_t HW = gc.H * gc.W, PQ = gc.P * gc.Q, RS = gc.R * gc.S;
    T* goc = nhwc_copy_buffer<T>(0, gc.N * gc.K * PQ);
    T* xc = nhwc_copy_buffer<T>(1, gc.N * gc.C * HW);
    T* wc = nhwc_copy_buffer<T>(2, gc.K * gc.Cg * RS);
    T* gc_buf = nhwc_copy_buffer<T>(3, (gx ? gc.N * gc.C * HW : 0) + (gw ? gc.K * gc.Cg * RS : 0));
    T* gxc = gx ? gc_buf : nullptr;
    T* gwc = gw ? gc_buf + (gx ? gc.N * gc.C * HW : 0) : nullptr;
    swap_inner_axes(go, gc.N, PQ, gc.K, goc, nt);
    swap_inner_axes(w, gc.K, RS, gc.Cg, wc, nt);
    swap_inner_axes(x, gc.N, HW, gc.C, xc, nt);
    backward_impl<T>(gc, goc, xc, wc, gxc, gwc, nullptr);
    if (gx) swap_inner_axes(gxc, gc.N, gc.C, HW, gx, nt);
    if (gw) swap_inner_axes(gwc, gc.K, gc.Cg, RS, gw, nt);
}

template <typename T>
void forward_impl(const ConvGeo& g, const T* x, const T* w, const T* b, T* out) {
    const int nt = get_num_threads();
    Algo algo = choose(g, std::is_same_v<T, float>);
    if (g.nhwc && (algo == Algo::winograd || algo == Algo::winograd4)) {
        nhwc_via_nchw_forward<T>(as_nchw(g), x, w, b, out, nt);
        return;
    }
    if (algo == Algo::winograd || algo == Algo::winograd4) {
        const bool nan = algo == Algo::winograd4 ? winograd_conv<4, T>(g, x, w, b, out, false, nt)
                                                 : winograd_conv<2, T>(g, x, w, b, out, false, nt);
        if (!nan) return;
        algo = Algo::im2col;  // see winograd_fallback
    }
    if constexpr (std::is_same_v<T, float>) {
        if (algo == Algo::blocked) {
            blocked_conv(g, x, w, b, out, false, nt);
            return;
        }
    }
    const int64_t PQ = g.P * g.Q, HW = g.H * g.W, CRS = g.Cg * g.R * g.S;
    if (algo == Algo::direct) {
        const T* wt = g.nhwc ? transpose_weight_rsk<T>(g, w) : nullptr;
        T* scratch = g.nhwc ? nullptr
                            : detail::thread_arena(detail::ArenaSlot::k2)
                                  .get_as<T>(static_cast<size_t>(nt * detail::direct_scratch_size(g)));
        LF_DISPATCH(conv_direct_fwd<T>, g, x, w, wt, b, out, scratch, nt);
        return;
    }
    if (algo == Algo::gemm_1x1) {
        if (!g.nhwc) {
            conv1x1_nchw_batch<T>(g, x, w, b, out, false, nt);
            return;
        }
        // NHWC: the whole batch is one (N*H*W x C) matrix
        const int64_t M = g.N * HW;
        for (int64_t gi = 0; gi < g.G; ++gi) {
            T* C0 = out + gi * g.Kg;
            T beta = T(0);
            if (b) {
                for (int64_t m = 0; m < M; ++m)
                    for (int64_t k = 0; k < g.Kg; ++k) C0[m * g.K + k] = b[gi * g.Kg + k];
                beta = T(1);
            }
            gemm_strided<T>(M, g.Kg, g.Cg, T(1), x + gi * g.Cg, g.C, 1, w + gi * g.Kg * CRS, 1, CRS, beta, C0,
                            g.K, 1, nt);
        }
        return;
    }
    const int chunks = image_chunks(g, nt);
    const int64_t NJ = tile_cols(g);
    for_chunks(chunks, nt, [&](int t, int gt) {
        const int64_t n0 = g.N * t / chunks, n1 = g.N * (t + 1) / chunks;
        T* col = detail::thread_arena(detail::ArenaSlot::k0).get_as<T>(static_cast<size_t>(CRS * NJ));
        for (int64_t n = n0; n < n1; ++n) {
            for (int64_t gi = 0; gi < g.G; ++gi) {
                const T* wg = w + gi * g.Kg * CRS;
                T beta = T(0);
                if (!g.nhwc) {
                    const T* xg = x + (n * g.C + gi * g.Cg) * HW;
                    T* Cp = out + (n * g.K + gi * g.Kg) * PQ;
                    if (b) {
                        for (int64_t k = 0; k < g.Kg; ++k) std::fill(Cp + k * PQ, Cp + (k + 1) * PQ, b[gi * g.Kg + k]);
                        beta = T(1);
                    }
                    for (int64_t j0 = 0; j0 < PQ; j0 += NJ) {  // (CRS x nj) tiles of the column matrix
                        const int64_t j1 = std::min(PQ, j0 + NJ), nj = j1 - j0;
                        im2col_nchw<T>(g, xg, col, j0, j1);
                        gemm_strided<T>(g.Kg, nj, CRS, T(1), wg, CRS, 1, col, nj, 1, beta, Cp + j0, PQ, 1, gt);
                    }
                } else {
                    const T* xg = x + n * HW * g.C + gi * g.Cg;
                    T* Cp = out + n * PQ * g.K + gi * g.Kg;
                    if (b) {
                        for (int64_t m = 0; m < PQ; ++m)
                            for (int64_t k = 0; k < g.Kg; ++k) Cp[m * g.K + k] = b[gi * g.Kg + k];
                        beta = T(1);
                    }
                    for (int64_t j0 = 0; j0 < PQ; j0 += NJ) {
                        const int64_t j1 = std::min(PQ, j0 + NJ), nj = j1 - j0;
                        im2col_nhwc<T>(g, xg, col, j0, j1);  // (nj x CRS)
                        gemm_strided<T>(nj, g.Kg, CRS, T(1), col, CRS, 1, wg, 1, CRS, beta, Cp + j0 * g.K, g.K, 1, gt);
                    }
                }
            }
        }
    });
}

template <typename T>
void grad_bias(const ConvGeo& g, const T* go, T* gb) {
    const int64_t PQ = g.P * g.Q;
    if (!g.nhwc) {
        const int nt = get_num_threads();
#pragma omp parallel for num_threads(nt) schedule(static) if (nt > 1 && g.N * g.K * PQ > 100000)
        for (int64_t k = 0; k < g.K; ++k) {
            T acc[16] = {};
            for (int64_t n = 0; n < g.N; ++n) {
                const T* r = go + (n * g.K + k) * PQ;
                int64_t i = 0;
                for (; i + 16 <= PQ; i += 16)
                    for (int j = 0; j < 16; ++j) acc[j] += r[i + j];
                for (; i < PQ; ++i) acc[i % 16] += r[i];
            }
            T s = T(0);
            for (int j = 0; j < 16; ++j) s += acc[j];
            gb[k] = s;
        }
    } else {
        std::fill(gb, gb + g.K, T(0));
        const int64_t M = g.N * PQ;
        for (int64_t m = 0; m < M; ++m)
            for (int64_t k = 0; k < g.K; ++k) gb[k] += go[m * g.K + k];
    }
}

template <typename T>
void backward_impl(const ConvGeo& g, const T* go, const T* x, const T* w, T* gx, T* gw, T* gb) {
    const int nt = get_num_threads();
    Algo algo = choose(g, std::is_same_v<T, float>);
    if (g.nhwc && (gx || gw) && (algo == Algo::winograd || algo == Algo::winograd4)) {
        nhwc_via_nchw_backward<T>(as_nchw(g), go, x, w, gx, gw, nt);
        if (gb) grad_bias<T>(g, go, gb);
        return;
    }
    if (algo == Algo::winograd || algo == Algo::winograd4 || algo == Algo::blocked || algo == Algo::im2col) {
        // grad_weight by Winograd where the forward's shape takes it; grad_x by Winograd or the blocked kernel
        // where that wins on grad_x's own shape (forced: the forward's choice); the rest by im2col below
        constexpr bool f32 = std::is_same_v<T, float>;
        const bool forced = forced_algo() != nullptr;
        // (a NaN out of Winograd leaves that gradient to im2col: see winograd_fallback)
        // grad_x from the forward's tiles (winograd_backward) where the forward's shape takes Winograd and the
        // batch fills the threads, else by its own rule as a convolution of grad_out (winograd_conv)
        if (const int m = (gw || gx) && !g.nhwc ? winograd_wins(g, f32, g.P, g.Q) : 0) {
            T* gx_here = gx && g.N >= nt ? gx : nullptr;
            const bool nan = m == 4 ? winograd_backward<4, T>(g, go, x, w, gx_here, gw, nt)
                                    : winograd_backward<2, T>(g, go, x, w, gx_here, gw, nt);
            if (!nan) {
                gw = nullptr;
                if (gx_here) gx = nullptr;
            }
        }
        if (const int m = gx && !g.nhwc ? winograd_wins(g, f32, g.H, g.W) : 0) {
            const bool nan = m == 4 ? winograd_conv<4, T>(g, go, w, nullptr, gx, true, nt)
                                    : winograd_conv<2, T>(g, go, w, nullptr, gx, true, nt);
            if (!nan) gx = nullptr;
        } else if constexpr (f32) {
            if (gx && !g.nhwc && (forced ? algo == Algo::blocked : blocked_wins(g, f32, true))) {
                blocked_conv(g, go, w, nullptr, gx, true, nt);
                gx = nullptr;
            }
        }
        algo = Algo::im2col;
    }
    const int64_t PQ = g.P * g.Q, HW = g.H * g.W, CRS = g.Cg * g.R * g.S, wsz = g.K * CRS;
    if (algo == Algo::direct && (gx || gw)) {  // the depthwise pass may compute the bias gradient too
        const T* wt = g.nhwc ? transpose_weight_rsk<T>(g, w) : nullptr;
        T* part = detail::thread_arena(detail::ArenaSlot::k2)
                      .get_as<T>(static_cast<size_t>(detail::direct_bwd_scratch_size(g, nt)));
        const bool bias_done = LF_DISPATCH(conv_direct_bwd<T>, g, go, x, w, wt, gx, gw, gb, part, nt);
        if (gb && !bias_done) grad_bias<T>(g, go, gb);
        return;
    }
    if (gb) grad_bias<T>(g, go, gb);
    if (!gx && !gw) return;
    if (g.nhwc && algo == Algo::gemm_1x1) {
        const int64_t M = g.N * HW;
        for (int64_t gi = 0; gi < g.G; ++gi) {
            const T* gog = go + gi * g.Kg;
            if (gw)  // gw_g (Kg x Cg) = go_g^T (Kg x M) @ x_g (M x Cg)
                gemm_strided<T>(g.Kg, g.Cg, M, T(1), gog, 1, g.K, x + gi * g.Cg, g.C, 1, T(0), gw + gi * g.Kg * CRS,
                                CRS, 1, nt);
            if (gx)  // gx_g (M x Cg) = go_g (M x Kg) @ w_g (Kg x Cg)
                gemm_strided<T>(M, g.Cg, g.Kg, T(1), gog, g.K, 1, w + gi * g.Kg * CRS, CRS, 1, T(0), gx + gi * g.Cg,
                                g.C, 1, nt);
        }
        return;
    }
    if (gx && algo == Algo::gemm_1x1) {  // NCHW grad_x: the batch as one GEMM (W^T packed once)
        conv1x1_nchw_batch<T>(g, go, w, nullptr, gx, true, nt);
        gx = nullptr;
        if (!gw) return;
    }
    const int chunks = image_chunks(g, nt);
    const int64_t NJ = tile_cols(g);
    T* partial = nullptr;  // chunks x (K x CRS); chunk 0 writes straight into gw when there is one chunk
    if (gw && chunks > 1)
        partial = detail::thread_arena(detail::ArenaSlot::k2).get_as<T>(static_cast<size_t>(chunks * wsz));
    for_chunks(chunks, nt, [&](int t, int gt) {
        const int64_t n0 = g.N * t / chunks, n1 = g.N * (t + 1) / chunks;
        T* gwt = gw ? (chunks > 1 ? partial + t * wsz : gw) : nullptr;
        if (gwt) std::fill(gwt, gwt + wsz, T(0));
        T* col = (algo == Algo::im2col && gw)
                     ? detail::thread_arena(detail::ArenaSlot::k0).get_as<T>(static_cast<size_t>(CRS * NJ))
                     : nullptr;
        T* gcol = (algo == Algo::im2col && gx)
                      ? detail::thread_arena(detail::ArenaSlot::k1).get_as<T>(static_cast<size_t>(CRS * NJ))
                      : nullptr;
        for (int64_t n = n0; n < n1; ++n) {
            if (gx) std::fill(gx + n * g.C * HW, gx + (n + 1) * g.C * HW, T(0));
            for (int64_t gi = 0; gi < g.G; ++gi) {
                const T* wg = w + gi * g.Kg * CRS;
                T* gwg = gwt ? gwt + gi * g.Kg * CRS : nullptr;
                for (int64_t j0 = 0; j0 < PQ; j0 += NJ) {
                    const int64_t j1 = std::min(PQ, j0 + NJ), nj = j1 - j0;
                    if (!g.nhwc) {
                        const T* xg = x + (n * g.C + gi * g.Cg) * HW;
                        const T* gog = go + (n * g.K + gi * g.Kg) * PQ + j0;  // (Kg x nj), ld PQ
                        T* gxg = gx ? gx + (n * g.C + gi * g.Cg) * HW : nullptr;
                        if (algo == Algo::gemm_1x1) {
                            if (gw)  // gw_g += go_g (Kg x nj) @ x_g^T (nj x Cg)
                                gemm_strided<T>(g.Kg, CRS, nj, T(1), gog, PQ, 1, xg + j0, 1, PQ, T(1), gwg, CRS, 1, gt);
                        } else {
                            if (gw) {
                                im2col_nchw<T>(g, xg, col, j0, j1);
                                gemm_strided<T>(g.Kg, CRS, nj, T(1), gog, PQ, 1, col, 1, nj, T(1), gwg, CRS, 1, gt);
                            }
                            if (gx) {
                                gemm_strided<T>(CRS, nj, g.Kg, T(1), wg, 1, CRS, gog, PQ, 1, T(0), gcol, nj, 1, gt);
                                col2im_nchw<T>(g, gcol, gxg, j0, j1);
                            }
                        }
                    } else {
                        const T* xg = x + n * HW * g.C + gi * g.Cg;
                        const T* gog = go + (n * PQ + j0) * g.K + gi * g.Kg;  // (nj x Kg), ld K
                        if (gw) {
                            im2col_nhwc<T>(g, xg, col, j0, j1);  // (nj x CRS)
                            gemm_strided<T>(g.Kg, CRS, nj, T(1), gog, 1, g.K, col, CRS, 1, T(1), gwg, CRS, 1, gt);
                        }
                        if (gx) {
                            gemm_strided<T>(nj, CRS, g.Kg, T(1), gog, g.K, 1, wg, CRS, 1, T(0), gcol, CRS, 1, gt);
                            col2im_nhwc<T>(g, gcol, gx + n * HW * g.C + gi * g.Cg, j0, j1);
                        }
                    }
                }
            }
        }
    });
    if (gw && chunks > 1) {  // fixed-order sum of the per-chunk partials
        const int64_t per = (wsz + nt - 1) / nt;
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int t = 0; t < nt; ++t) {
            const int64_t i0 = std::min(wsz, t * per), i1 = std::min(wsz, (t + 1) * per);
            for (int64_t i = i0; i < i1; ++i) {
                T v = partial[i];
                for (int c = 1; c < chunks; ++c) v += partial[c * wsz + i];
                gw[i] = v;
            }
        }
    }
}

}  // namespace

std::string conv2d_algorithm(const View& x, const View& weight, const Conv2dParams& p) {
    return algo_name(choose(detail::conv_geometry(x, weight, p, "conv2d"), x.dtype == DType::f32));
}

void conv2d_forward(const View& x, const View& w, const View* bias, const View& out, const Conv2dParams& p) {
    const ConvGeo g = detail::check_conv2d_forward(x, w, bias, out, p);
    if (g.N == 0) return;
    if (x.dtype == DType::f32)
        forward_impl<float>(g, x.ptr<float>(), w.ptr<float>(), bias ? bias->ptr<float>() : nullptr, out.ptr<float>());
    else
        forward_impl<double>(g, x.ptr<double>(), w.ptr<double>(), bias ? bias->ptr<double>() : nullptr,
                             out.ptr<double>());
}

void conv2d_backward(const View& grad_out, const View& x, const View& w, const View* grad_x,
                     const View* grad_weight, const View* grad_bias, const Conv2dParams& p) {
    const ConvGeo g = detail::check_conv2d_backward(grad_out, x, w, grad_x, grad_weight, grad_bias, p);
    if (x.dtype == DType::f32)
        backward_impl<float>(g, grad_out.ptr<float>(), x.ptr<float>(), w.ptr<float>(),
                             grad_x ? grad_x->ptr<float>() : nullptr, grad_weight ? grad_weight->ptr<float>() : nullptr,
                             grad_bias ? grad_bias->ptr<float>() : nullptr);
    else
        backward_impl<double>(g, grad_out.ptr<double>(), x.ptr<double>(), w.ptr<double>(),
                              grad_x ? grad_x->ptr<double>() : nullptr,
                              grad_weight ? grad_weight->ptr<double>() : nullptr,
                              grad_bias ? grad_bias->ptr<double>() : nullptr);
}

}  // namespace layerforge
