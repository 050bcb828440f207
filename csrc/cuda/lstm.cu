// LSTM forward and backward through time on the GPU (see layerforge/lstm.h, namespace layerforge::cuda).
//
// Forward: bias = b_ih + b_hh; xp = x (T*B, I) @ W_ih^T (one GEMM for all steps, PyTorch's gate layout);
// then the recurrence, in one of two ways:
//  * persistent (when W_hh fits on chip): one cooperative kernel runs every step. Block k owns hidden units
//    [k U, k U + U) and keeps the 4U rows of W_hh that feed them (all four gates) in shared memory for the
//    whole sequence. Per step it multiplies h_{t-1} (B x H, read from y[t-1] through L2, staged in chunks)
//    by its slice (block_gemm_nt: 4x4 register tiles, k split over adjacent lanes, shuffle-reduced in a fixed
//    order), applies the bias, the gate nonlinearities and the cell update for its units, writes the gates,
//    c_t and h_t, and then all blocks meet at a grid-wide barrier (cooperative_groups grid.sync) before
//    anyone reads h_t. The launch is cooperative (cudaLaunchCooperativeKernel), which fails rather than
//    starts a grid whose blocks cannot all be resident at once, and the grid is sized from the occupancy
//    calculator: every block is running while the others wait at the barrier, so it cannot deadlock.
//  * stepwise (W_hh too large, huge batches, no cooperative launch, or LAYERFORGE_LSTM_CUDA_ALGO=stepwise):
//    per step a GEMM adds h_{t-1} W_hh^T onto xp[t], then a pointwise kernel applies the cell.
// Backward: steps in reverse. Per step the pointwise part (dh = grad_y[t] + dh_rec, dc carried) writes the
// pre-activation gradients dG_t of the block's units; after the grid barrier each block computes
// dh_rec[:, its units] = dG_t (B x 4H) @ W_hh[:, its units] from its column slice of W_hh (kept in shared
// memory, transposed). Only the block itself reads those units next step, and the next step writes
// dG_{t-1}, not dG_t: one barrier per step. The stepwise fallback runs a pointwise kernel and a GEMM per
// step. dG of every step is kept (T*B x 4H); grad_x = dG W_ih, grad_W_ih = dG^T x, grad_W_hh = dG[1:]^T
// y[:-1] + dG[0]^T h0 are GEMMs at the end and the bias gradients are column sums in two fixed-order
// passes: deterministic.
// GEMMs: the shared launcher gemm_strided_batched (gemm.h; float32 without TF32, float64), through lstm_gemm.
#include "layerforge/lstm.h"

#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>

#include "layerforge/detail/lstm_cell.h"
#include "layerforge/detail/lstm_checks.h"
#include "layerforge/gemm.h"
#include "check.cuh"
#include "ew_util.cuh"
#include "launch_util.cuh"

namespace layerforge {
namespace cuda {

namespace {

namespace cg = cooperative_groups;

constexpr int kLstmThreads = 256;

__device__ __forceinline__ int round4(int x) { return (x + 3) & ~3; }

// ------------------------------------------------------------------ parameters (by value)
template <typename T>
struct LstmParams {
    int64_t steps, B, H;  // T, B, H
    const T* xp;    // (T*B, 4H) input projections (the stepwise forward adds the recurrent term in place)
    const T* bias;  // (4H): b_ih + b_hh
    const T* w_hh;  // (4H, H), strides w_rs, w_cs
    int64_t w_rs, w_cs;
    const T* h0;  // (B, H) or null (zeros)
    int64_t h0_rs, h0_cs;
    const T* c0;
    int64_t c0_rs, c0_cs;
    T* y;      // (T, B, H)
    T* gates;  // (T, B, 4H)
    T* cells;  // (T, B, H)
    // backward
    const T* gy;  // (T, B, H) or null
    const T* gh_T;
    int64_t ghT_rs, ghT_cs;
    const T* gc_T;
    int64_t gcT_rs, gcT_cs;
    T* dG;      // (T*B, 4H)
    T* dh_rec;  // stepwise: (B, H), the recurrent part of dL/dh of the next step
    T* dc;      // stepwise: (B, H), dL/dc carried
    T* gh0;
    int64_t gh0_rs, gh0_cs;
    T* gc0;
    int64_t gc0_rs, gc0_cs;
    // persistent kernels
    int U;   // hidden units per block
    int KC;  // columns of the block GEMM's A operand staged in shared memory at a time (multiple of 4)
    int KS;  // lanes that split each 4x4 tile's k range (power of 2, <= 32)
};

// ------------------------------------------------------------------ pointwise cell (both recurrences)
// Forward of unit u, batch row b, step t: pre-activations rec[q * rstride] (the recurrent product, or
// null when it is already in xp) + xp + bias -> gates, c_t, h_t.
template <typename T>
__device__ __forceinline__ void lstm_fwd_unit(const LstmParams<T>& p, int64_t t, int64_t b, int64_t u, const T* rec,
                                              int rstride) {
    const int64_t H = p.H, G = 4 * H, row = t * p.B + b;
    const T* xr = p.xp + row * G + u;
    T pre[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) pre[q] = (rec ? rec[q * rstride] : T(0)) + xr[q * H] + p.bias[q * H + u];
    T c_prev = T(0);
    if (t > 0) c_prev = p.cells[(row - p.B) * H + u];
    else if (p.c0) c_prev = p.c0[b * p.c0_rs + u * p.c0_cs];
    T g4[4], c, h;
    detail::lstm_cell_forward(pre[0], pre[1], pre[2], pre[3], c_prev, g4, c, h);
    T* gr = p.gates + row * G + u;
#pragma unroll
    for (int q = 0; q < 4; ++q) gr[q * H] = g4[q];
    p.cells[row * H + u] = c;
    p.y[row * H + u] = h;
}

// Backward of unit u, row b, step t: dh = grad_y[t] + dh_rec, dc (in: step t, out: step t-1) -> dG_t.
template <typename T>
__device__ __forceinline__ void lstm_bwd_unit(const LstmParams<T>& p, int64_t t, int64_t b, int64_t u, T dh_rec,
                                              T& dc) {
    const int64_t H = p.H, G = 4 * H, row = t * p.B + b;
    const T* gr = p.gates + row * G + u;
    T c_prev = T(0);
    if (t > 0) c_prev = p.cells[(row - p.B) * H + u];
    else if (p.c0) c_prev = p.c0[b * p.c0_rs + u * p.c0_cs];
    const T dh = (p.gy ? p.gy[row * H + u] : T(0)) + dh_rec;
    T d4[4];
    detail::lstm_cell_backward(gr[0], gr[H], gr[2 * H], gr[3 * H], p.cells[row * H + u], c_prev, dh, dc, d4);
    T* dr = p.dG + row * G + u;
#pragma unroll
    for (int q = 0; q < 4; ++q) dr[q * H] = d4[q];
}

// ------------------------------------------------------------------ block GEMM (persistent kernels)
__device__ __forceinline__ void load4(const float* p, float (&v)[4]) { ew::ld(p, v); }  // one float4
__device__ __forceinline__ void load4(const double* p, double (&v)[4]) {
    const double2 x = *reinterpret_cast<const double2*>(p);
    const double2 y = *reinterpret_cast<const double2*>(p + 2);
    v[0] = x.x;
    v[1] = x.y;
    v[2] = y.x;
    v[3] = y.y;
}

// C (B x NC, shared, row pitch NCp) = A (B x K) W^T, with A in global memory (element (b, k) at
// A[b * lda + k * acs], written by other blocks of this grid: read through L2 with __ldcg) and W (NC x K)
// in shared memory (row pitch Kp, zero past K and past NC up to NCp). A is staged in chunks of KC columns
// through As (Bp x (KC + 4); the padding staggers rows over the banks). Threads own 4x4 tiles of C; KS
// adjacent lanes split a tile's k range in interleaved groups of 4 and their partial sums are combined by
// xor-shuffles (a fixed order: deterministic). Ends with a barrier: C is complete for every thread.
template <typename T>
__device__ void block_gemm_nt(const T* A, int64_t lda, int64_t acs, int B, int K, const T* Ws, int Kp, int NC, int NCp,
                              T* As, int KC, int KS, T* C) {
    const int Bp = round4(B), Kr = round4(K);
    const int ct = NCp / 4, tiles = (Bp / 4) * ct;
    const int per_iter = blockDim.x / KS;  // tiles in flight at once
    const int ks = threadIdx.x % KS;
    const int pitch = KC + 4;
    for (int base = 0; base < tiles; base += per_iter) {
        const int tile = base + threadIdx.x / KS;
        const bool valid = tile < tiles;
        const int tb = valid ? tile / ct : 0, tc = valid ? tile % ct : 0;
        T acc[4][4];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[i][j] = T(0);
        for (int k0 = 0; k0 < Kr; k0 += KC) {
            const int kc = min(KC, Kr - k0);
            __syncthreads();  // the previous chunk's (or phase's) readers of As and C are done
            for (int e = threadIdx.x; e < Bp * kc; e += blockDim.x) {
                const int b = e / kc, kk = e - b * kc, k = k0 + kk;
                As[b * pitch + kk] = (b < B && k < K) ? __ldcg(A + b * lda + k * acs) : T(0);
            }
            __syncthreads();
            if (valid) {
                const T* arow = As + tb * 4 * pitch;
                const T* wrow = Ws + static_cast<int64_t>(tc) * 4 * Kp + k0;
                for (int kk = ks * 4; kk < kc; kk += KS * 4) {
                    T a[4][4], w[4][4];
#pragma unroll
                    for (int i = 0; i < 4; ++i) load4(arow + i * pitch + kk, a[i]);
#pragma unroll
                    for (int j = 0; j < 4; ++j) load4(wrow + static_cast<int64_t>(j) * Kp + kk, w[j]);
#pragma unroll
                    for (int i = 0; i < 4; ++i)
#pragma unroll
                        for (int j = 0; j < 4; ++j)
                            acc[i][j] += a[i][0] * w[j][0] + a[i][1] * w[j][1] + a[i][2] * w[j][2] + a[i][3] * w[j][3];
                }
            }
        }
        for (int off = KS / 2; off >= 1; off >>= 1)
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] += __shfl_xor_sync(0xffffffffu, acc[i][j], off);
        if (valid && ks == 0)
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const int b = tb * 4 + i, c = tc * 4 + j;
                    if (b < B && c < NC) C[b * NCp + c] = acc[i][j];
                }
    }
    __syncthreads();
}

// Shared-memory layout of the persistent kernels (elements of T, every region a multiple of 4 long):
// Ws (NCp x Kp), As (Bp x (KC + 4)), then `extra` regions of Bp x NCp.
struct PersistentLayout {
    int NC, NCp, K, Kp, Bp, KC, extra;
    __host__ __device__ int64_t ws() const { return 0; }
    __host__ __device__ int64_t as() const { return static_cast<int64_t>(NCp) * Kp; }
    __host__ __device__ int64_t region(int r) const { return as() + static_cast<int64_t>(Bp) * (KC + 4) + r * Bp * NCp; }
    __host__ __device__ int64_t total() const { return region(extra); }
};
// Forward: NC = 4U rows of W_hh (unit-major, gate-minor: row uu * 4 + q is W_hh row q H + u0 + uu), K = H,
// one extra region (the recurrent pre-activations). Backward: NC = U columns of W_hh (row uu is W_hh[:, u0 +
// uu]), K = 4H, two extra regions (dh_rec and dc of the block's units).
__host__ __device__ inline PersistentLayout persistent_layout(bool backward, int64_t B, int64_t H, int U, int KC) {
    PersistentLayout l;
    l.NC = backward ? U : 4 * U;
    l.NCp = (l.NC + 3) & ~3;
    l.K = static_cast<int>(backward ? 4 * H : H);
    l.Kp = ((l.K + 3) & ~3) + 4;
    l.Bp = static_cast<int>((B + 3) & ~3);
    l.KC = KC;
    l.extra = backward ? 2 : 1;
    return l;
}

__device__ __forceinline__ unsigned char* lstm_smem() {
    extern __shared__ __align__(16) unsigned char lf_lstm_smem[];
    return lf_lstm_smem;
}

template <typename T>
__global__ void __launch_bounds__(kLstmThreads) lstm_fwd_persistent(LstmParams<T> p) {
    cg::grid_group grid = cg::this_grid();
    const int B = static_cast<int>(p.B), U = p.U;
    const int64_t H = p.H, u0 = static_cast<int64_t>(blockIdx.x) * U;
    const PersistentLayout ly = persistent_layout(false, p.B, H, U, p.KC);
    T* sm = reinterpret_cast<T*>(lstm_smem());
    T* Ws = sm + ly.ws();
    T* As = sm + ly.as();
    T* Cs = sm + ly.region(0);
    for (int64_t e = threadIdx.x; e < static_cast<int64_t>(ly.NCp) * ly.Kp; e += blockDim.x) {
        const int c = static_cast<int>(e / ly.Kp);
        const int64_t k = e - static_cast<int64_t>(c) * ly.Kp;
        const int uu = c >> 2, q = c & 3;
        const int64_t u = u0 + uu;
        Ws[e] = (uu < U && u < H && k < H) ? p.w_hh[(q * H + u) * p.w_rs + k * p.w_cs] : T(0);
    }
    // (block_gemm_nt starts with a barrier: Ws is complete before it is read)
    for (int64_t t = 0; t < p.steps; ++t) {
        const T* hprev = t > 0 ? p.y + (t - 1) * p.B * H : p.h0;
        const int64_t lda = t > 0 ? H : p.h0_rs, acs = t > 0 ? 1 : p.h0_cs;
        if (hprev) block_gemm_nt(hprev, lda, acs, B, static_cast<int>(H), Ws, ly.Kp, ly.NC, ly.NCp, As, p.KC, p.KS, Cs);
        for (int e = threadIdx.x; e < B * U; e += blockDim.x) {
            const int b = e / U, uu = e - b * U;
            const int64_t u = u0 + uu;
            if (u < H) lstm_fwd_unit(p, t, b, u, hprev ? Cs + b * ly.NCp + uu * 4 : nullptr, 1);
        }
        if (t + 1 < p.steps) grid.sync();  // h_t of every unit is written before any block reads it
    }
}

template <typename T>
__global__ void __launch_bounds__(kLstmThreads) lstm_bwd_persistent(LstmParams<T> p) {
    cg::grid_group grid = cg::this_grid();
    const int B = static_cast<int>(p.B), U = p.U;
    const int64_t H = p.H, G = 4 * H, u0 = static_cast<int64_t>(blockIdx.x) * U;
    const PersistentLayout ly = persistent_layout(true, p.B, H, U, p.KC);
    T* sm = reinterpret_cast<T*>(lstm_smem());
    T* Ws = sm + ly.ws();
    T* As = sm + ly.as();
    T* DH = sm + ly.region(0);  // (Bp x NCp): dh_rec of the block's units
    T* DC = sm + ly.region(1);  // (Bp x NCp): dc of the block's units
    for (int64_t e = threadIdx.x; e < static_cast<int64_t>(ly.NCp) * ly.Kp; e += blockDim.x) {
        const int uu = static_cast<int>(e / ly.Kp);
        const int64_t r = e - static_cast<int64_t>(uu) * ly.Kp, u = u0 + uu;
        Ws[e] = (uu < U && u < H && r < G) ? p.w_hh[r * p.w_rs + u * p.w_cs] : T(0);
    }
    for (int e = threadIdx.x; e < B * U; e += blockDim.x) {
        const int b = e / U, uu = e - b * U;
        const int64_t u = u0 + uu;
        if (u >= H) continue;
        DH[b * ly.NCp + uu] = p.gh_T ? p.gh_T[b * p.ghT_rs + u * p.ghT_cs] : T(0);
        DC[b * ly.NCp + uu] = p.gc_T ? p.gc_T[b * p.gcT_rs + u * p.gcT_cs] : T(0);
    }
    __syncthreads();
    for (int64_t t = p.steps - 1; t >= 0; --t) {
        for (int e = threadIdx.x; e < B * U; e += blockDim.x) {
            const int b = e / U, uu = e - b * U;
            const int64_t u = u0 + uu;
            if (u < H) lstm_bwd_unit(p, t, b, u, DH[b * ly.NCp + uu], DC[b * ly.NCp + uu]);
        }
        if (t == 0 && !p.gh0) break;
        grid.sync();  // dG_t of every unit is written before any block reads it
        block_gemm_nt<T>(p.dG + t * p.B * G, G, 1, B, static_cast<int>(G), Ws, ly.Kp, ly.NC, ly.NCp, As, p.KC, p.KS, DH);
    }
    __syncthreads();
    for (int e = threadIdx.x; e < B * U; e += blockDim.x) {
        const int b = e / U, uu = e - b * U;
        const int64_t u = u0 + uu;
        if (u >= H) continue;
        if (p.gh0) p.gh0[b * p.gh0_rs + u * p.gh0_cs] = DH[b * ly.NCp + uu];
        if (p.gc0) p.gc0[b * p.gc0_rs + u * p.gc0_cs] = DC[b * ly.NCp + uu];
    }
}

// ------------------------------------------------------------------ stepwise kernels
template <typename T>
__global__ void lstm_fwd_step(LstmParams<T> p, int64_t t) {
    const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (e >= p.B * p.H) return;
    lstm_fwd_unit(p, t, e / p.H, e % p.H, static_cast<const T*>(nullptr), 0);
}

template <typename T>
__global__ void lstm_bwd_step(LstmParams<T> p, int64_t t) {
    const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (e >= p.B * p.H) return;
    T dc = p.dc[e];
    lstm_bwd_unit(p, t, e / p.H, e % p.H, p.dh_rec[e], dc);
    p.dc[e] = dc;
}

// ------------------------------------------------------------------ small kernels
// dst (rows x cols, any strides) = src, or zeros when src is null.
template <typename T>
__global__ void copy_2d(int64_t rows, int64_t cols, const T* src, int64_t srs, int64_t scs, T* dst, int64_t drs,
                        int64_t dcs) {
    const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (e >= rows * cols) return;
    const int64_t r = e / cols, c = e % cols;
    dst[r * drs + c * dcs] = src ? src[r * srs + c * scs] : T(0);
}

template <typename T>
__global__ void bias_sum(int64_t n, const T* a, int64_t sa, const T* b, int64_t sb, T* out) {
    const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (e >= n) return;
    out[e] = (a ? a[e * sa] : T(0)) + (b ? b[e * sb] : T(0));
}

// Column sums of m (rows x cols, contiguous), pass 1: partial[chunk][c] over rows [chunk R, chunk R + R).
template <typename T>
__global__ void column_sums_partial(const T* m, int64_t rows, int64_t cols, int64_t R, T* partial) {
    const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    const int64_t r0 = static_cast<int64_t>(blockIdx.y) * R, r1 = min(rows, r0 + R);
    T s = T(0);
    for (int64_t r = r0; r < r1; ++r) s += m[r * cols + c];
    partial[blockIdx.y * cols + c] = s;
}

// Pass 2: the chunks summed in order, written (or added) to one or two strided outputs.
template <typename T>
__global__ void column_sums_final(const T* partial, int64_t chunks, int64_t cols, T* out1, int64_t s1, T* out2,
                                  int64_t s2, int accumulate) {
    const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    T s = T(0);
    for (int64_t k = 0; k < chunks; ++k) s += partial[k * cols + c];
    if (out1) out1[c * s1] = (accumulate ? out1[c * s1] : T(0)) + s;
    if (out2) out2[c * s2] = (accumulate ? out2[c * s2] : T(0)) + s;
}

// ================================================================== host side
// The one place that multiplies matrices for the LSTM: C = alpha A B + beta C (any strides; beta == 0
// never reads C; K == 0 gives beta C), on the shared GEMM launcher (gemm.h), float32 without TF32 so that
// results match the CPU's float32 arithmetic; deterministic.
template <typename T>
void lstm_gemm(int64_t M, int64_t N, int64_t K, float alpha, const T* A, int64_t rs_a, int64_t cs_a, const T* B,
               int64_t rs_b, int64_t cs_b, float beta, T* C, int64_t rs_c, int64_t cs_c, cudaStream_t st) {
    if (M <= 0 || N <= 0) return;
    gemm_strided_batched(std::is_same<T, float>::value ? DType::f32 : DType::f64, 1, M, N, K, alpha, A, 0, rs_a, cs_a,
                         B, 0, rs_b, cs_b, beta, C, 0, rs_c, cs_c, /*allow_tf32=*/false, st);
}

template <typename T>
void launch_copy_2d(int64_t rows, int64_t cols, const T* src, int64_t srs, int64_t scs, T* dst, int64_t drs,
                    int64_t dcs, cudaStream_t st) {
    if (rows * cols == 0 || !dst) return;
    copy_2d<T><<<grid_blocks((rows * cols + 255) / 256, "lstm copy_2d"), 256, 0, st>>>(rows, cols, src, srs, scs, dst,
                                                                                        drs, dcs);
    check_launch("lstm copy_2d");
}

struct Plan {
    bool persistent = false;
    int U = 0, KC = 0, KS = 1, blocks = 0;
    size_t smem = 0;
};

bool stepwise_forced() {
    const char* env = std::getenv("LAYERFORGE_LSTM_CUDA_ALGO");
    return env && std::strcmp(env, "stepwise") == 0;
}

// The persistent recurrence's shape for (B, H): the fewest units per block U (most blocks, at most one
// per multiprocessor to start with) whose shared memory fits and whose grid the device can hold resident
// at once; KC as large as fits (<= 256). Not persistent when nothing fits.
template <typename T>
Plan compute_plan(int64_t B, int64_t H, bool backward) {
    Plan plan;
    if (!device_attribute(cudaDevAttrCooperativeLaunch)) return plan;
    const int sms = device_attribute(cudaDevAttrMultiProcessorCount);
    const size_t optin = static_cast<size_t>(device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin));
    const void* kernel = backward ? reinterpret_cast<const void*>(&lstm_bwd_persistent<T>)
                                  : reinterpret_cast<const void*>(&lstm_fwd_persistent<T>);
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(optin)),
          "cudaFuncSetAttribute (lstm persistent)");
    for (int64_t U = std::max<int64_t>(1, (H + sms - 1) / sms); U <= H; ++U) {
        const int64_t blocks = (H + U - 1) / U;
        // KC: the whole (rounded) k range up to 256, else halved (a multiple of 4, >= 16) until it fits
        const int64_t Kr = ((backward ? 4 * H : H) + 3) / 4 * 4;
        PersistentLayout ly{};
        int KC = static_cast<int>(std::min<int64_t>(256, Kr));
        for (;;) {
            ly = persistent_layout(backward, B, H, static_cast<int>(U), KC);
            if (static_cast<size_t>(ly.total()) * sizeof(T) <= optin || KC <= 16) break;
            KC = KC > 128 ? 128 : std::max(16, KC / 2 / 4 * 4);  // multiples of 4 (16-byte loads)
        }
        const size_t smem = static_cast<size_t>(ly.total()) * sizeof(T);
        if (smem > optin) return plan;  // a larger U only needs more
        int per_sm = 0;
        check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kLstmThreads, smem),
              "cudaOccupancyMaxActiveBlocksPerMultiprocessor (lstm)");
        if (blocks > static_cast<int64_t>(per_sm) * sms) continue;
        const int tiles = (ly.Bp / 4) * (ly.NCp / 4);
        int KS = 1;
        while (KS < 32 && tiles * KS * 2 <= kLstmThreads) KS *= 2;
        plan.persistent = true;
        plan.U = static_cast<int>(U);
        plan.KC = KC;
        plan.KS = KS;
        plan.blocks = static_cast<int>(blocks);
        plan.smem = smem;
        return plan;
    }
    return plan;
}

// compute_plan's answer per (device, B, H, direction, dtype), computed once (it asks the driver several
// questions); LAYERFORGE_LSTM_CUDA_ALGO=stepwise is read on every call.
template <typename T>
Plan plan_persistent(int64_t B, int64_t H, bool backward) {
    if (stepwise_forced() || B <= 0 || H <= 0) return Plan{};
    int dev = 0;
    check(cudaGetDevice(&dev), "cudaGetDevice");
    static std::mutex mutex;
    static std::map<std::tuple<int, int64_t, int64_t, bool>, Plan> cache;
    const auto key = std::make_tuple(dev, B, H, backward);
    {
        std::lock_guard<std::mutex> lock(mutex);
        const auto it = cache.find(key);
        if (it != cache.end()) return it->second;
    }
    const Plan plan = compute_plan<T>(B, H, backward);
    std::lock_guard<std::mutex> lock(mutex);
    cache.emplace(key, plan);
    return plan;
}

template <typename T>
void launch_persistent(bool backward, const Plan& plan, LstmParams<T> p, cudaStream_t st) {
    p.U = plan.U;
    p.KC = plan.KC;
    p.KS = plan.KS;
    void* args[] = {&p};
    const void* kernel = backward ? reinterpret_cast<const void*>(&lstm_bwd_persistent<T>)
                                  : reinterpret_cast<const void*>(&lstm_fwd_persistent<T>);
    check(cudaLaunchCooperativeKernel(kernel, dim3(plan.blocks), dim3(kLstmThreads), args, plan.smem, st),
          backward ? "lstm_bwd_persistent" : "lstm_fwd_persistent");
    check_launch(backward ? "lstm_bwd_persistent" : "lstm_fwd_persistent");
}

template <typename T>
LstmParams<T> base_params(const detail::LstmDims& d, const View* h0, const View* c0, const View& w_hh, const View& y,
                          const View& gates, const View& cells) {
    LstmParams<T> p;
    std::memset(&p, 0, sizeof(p));
    p.steps = d.T;
    p.B = d.B;
    p.H = d.H;
    p.w_hh = w_hh.ptr<T>();
    p.w_rs = w_hh.strides[0];
    p.w_cs = w_hh.strides[1];
    if (h0) p.h0 = h0->ptr<T>(), p.h0_rs = h0->strides[0], p.h0_cs = h0->strides[1];
    if (c0) p.c0 = c0->ptr<T>(), p.c0_rs = c0->strides[0], p.c0_cs = c0->strides[1];
    p.y = y.ptr<T>();
    p.gates = gates.ptr<T>();
    p.cells = cells.ptr<T>();
    return p;
}

template <typename T>
void forward_impl(const detail::LstmDims& d, const View& x, const View* h0, const View* c0, const View& w_ih,
                  const View& w_hh, const View* b_ih, const View* b_hh, const View& y, const View& h_T,
                  const View& c_T, const View& gates, const View& cells, cudaStream_t st) {
    const int64_t T_ = d.T, B = d.B, I = d.I, H = d.H, G = 4 * H;
    if (T_ == 0 || B == 0 || H == 0) {
        launch_copy_2d<T>(B, H, h0 ? h0->ptr<T>() : nullptr, h0 ? h0->strides[0] : 0, h0 ? h0->strides[1] : 0,
                          h_T.ptr<T>(), h_T.strides[0], h_T.strides[1], st);
        launch_copy_2d<T>(B, H, c0 ? c0->ptr<T>() : nullptr, c0 ? c0->strides[0] : 0, c0 ? c0->strides[1] : 0,
                          c_T.ptr<T>(), c_T.strides[0], c_T.strides[1], st);
        return;
    }
    StreamScratch scratch(static_cast<size_t>(T_ * B * G + G) * sizeof(T), st, "cudaMallocAsync (lstm forward)");
    T* xp = scratch.as<T>();
    T* bias = xp + T_ * B * G;
    bias_sum<T><<<grid_blocks((G + 255) / 256, "lstm bias_sum"), 256, 0, st>>>(
        G, b_ih ? b_ih->ptr<T>() : nullptr, b_ih ? b_ih->strides[0] : 0, b_hh ? b_hh->ptr<T>() : nullptr,
        b_hh ? b_hh->strides[0] : 0, bias);
    check_launch("lstm bias_sum");
    // xp (T*B, 4H) = x (T*B, I) @ W_ih^T (with I == 0: zeros)
    lstm_gemm<T>(T_ * B, G, I, 1.f, x.ptr<T>(), I, 1, w_ih.ptr<T>(), w_ih.strides[1], w_ih.strides[0], 0.f, xp, G, 1,
                 st);
    LstmParams<T> p = base_params<T>(d, h0, c0, w_hh, y, gates, cells);
    p.xp = xp;
    p.bias = bias;
    const Plan plan = plan_persistent<T>(B, H, false);
    if (plan.persistent) {
        launch_persistent<T>(false, plan, p, st);
    } else {
        for (int64_t t = 0; t < T_; ++t) {
            const T* hprev = t > 0 ? y.ptr<T>() + (t - 1) * B * H : (h0 ? h0->ptr<T>() : nullptr);
            if (hprev)  // xp[t] (B, 4H) += h_{t-1} (B, H) @ W_hh^T
                lstm_gemm<T>(B, G, H, 1.f, hprev, t > 0 ? H : h0->strides[0], t > 0 ? 1 : h0->strides[1],
                             w_hh.ptr<T>(), w_hh.strides[1], w_hh.strides[0], 1.f, xp + t * B * G, G, 1, st);
            lstm_fwd_step<T><<<grid_blocks((B * H + 255) / 256, "lstm_fwd_step"), 256, 0, st>>>(p, t);
            check_launch("lstm_fwd_step");
        }
    }
    launch_copy_2d<T>(B, H, y.ptr<T>() + (T_ - 1) * B * H, H, 1, h_T.ptr<T>(), h_T.strides[0], h_T.strides[1], st);
    launch_copy_2d<T>(B, H, cells.ptr<T>() + (T_ - 1) * B * H, H, 1, c_T.ptr<T>(), c_T.strides[0], c_T.strides[1], st);
}

template <typename T>
void backward_impl(const detail::LstmDims& d, const View& x, const View* h0, const View* c0, const View& w_ih,
                   const View& w_hh, const View& y, const View& gates, const View& cells, const View* grad_y,
                   const View* grad_h_T, const View* grad_c_T, const View* grad_x, const View* grad_h0,
                   const View* grad_c0, const View* grad_w_ih, const View* grad_w_hh, const View* grad_b_ih,
                   const View* grad_b_hh, bool accumulate, cudaStream_t st) {
    const int64_t T_ = d.T, B = d.B, I = d.I, H = d.H, G = 4 * H, TB = T_ * B;
    const float beta = accumulate ? 1.f : 0.f;
    // scratch: dG (T*B, 4H), the stepwise state dh_rec and dc (B, H) each, the bias partial sums
    const int64_t R = std::max<int64_t>(64, (TB + 1023) / 1024);  // rows per partial sum: at most 1024 chunks
    const int64_t chunks = (TB + R - 1) / R;
    const bool want_bias = grad_b_ih || grad_b_hh;
    const int64_t n_dG = TB * G, n_state = 2 * B * H, n_partial = want_bias ? chunks * G : 0;
    StreamScratch scratch(static_cast<size_t>(n_dG + n_state + n_partial) * sizeof(T), st,
                          "cudaMallocAsync (lstm backward)");
    T* dG = scratch.as<T>();
    T* dh_rec = dG + n_dG;
    T* dcs = dh_rec + B * H;
    T* partial = dcs + B * H;

    LstmParams<T> p = base_params<T>(d, h0, c0, w_hh, y, gates, cells);
    p.gy = grad_y ? grad_y->ptr<T>() : nullptr;
    if (grad_h_T) p.gh_T = grad_h_T->ptr<T>(), p.ghT_rs = grad_h_T->strides[0], p.ghT_cs = grad_h_T->strides[1];
    if (grad_c_T) p.gc_T = grad_c_T->ptr<T>(), p.gcT_rs = grad_c_T->strides[0], p.gcT_cs = grad_c_T->strides[1];
    p.dG = dG;
    p.dh_rec = dh_rec;
    p.dc = dcs;
    if (grad_h0) p.gh0 = grad_h0->ptr<T>(), p.gh0_rs = grad_h0->strides[0], p.gh0_cs = grad_h0->strides[1];
    if (grad_c0) p.gc0 = grad_c0->ptr<T>(), p.gc0_rs = grad_c0->strides[0], p.gc0_cs = grad_c0->strides[1];

    const Plan plan = (T_ > 0 && B > 0 && H > 0) ? plan_persistent<T>(B, H, true) : Plan{};
    if (plan.persistent) {
        launch_persistent<T>(true, plan, p, st);
    } else {
        // state: dh_rec = grad_h_T, dc = grad_c_T (zeros where absent)
        launch_copy_2d<T>(B, H, p.gh_T, p.ghT_rs, p.ghT_cs, dh_rec, H, 1, st);
        launch_copy_2d<T>(B, H, p.gc_T, p.gcT_rs, p.gcT_cs, dcs, H, 1, st);
        if (B > 0 && H > 0)
            for (int64_t t = T_ - 1; t >= 0; --t) {
                lstm_bwd_step<T><<<grid_blocks((B * H + 255) / 256, "lstm_bwd_step"), 256, 0, st>>>(p, t);
                check_launch("lstm_bwd_step");
                if (t > 0 || grad_h0)  // dh_rec (B, H) = dG_t (B, 4H) @ W_hh (4H, H)
                    lstm_gemm<T>(B, H, G, 1.f, dG + t * B * G, G, 1, w_hh.ptr<T>(), w_hh.strides[0], w_hh.strides[1],
                                 0.f, dh_rec, H, 1, st);
            }
        if (grad_h0)
            launch_copy_2d<T>(B, H, dh_rec, H, 1, grad_h0->ptr<T>(), grad_h0->strides[0], grad_h0->strides[1], st);
        if (grad_c0)
            launch_copy_2d<T>(B, H, dcs, H, 1, grad_c0->ptr<T>(), grad_c0->strides[0], grad_c0->strides[1], st);
    }
    if (grad_x)  // (T*B, I) = dG (T*B, 4H) @ W_ih (4H, I)
        lstm_gemm<T>(TB, I, G, 1.f, dG, G, 1, w_ih.ptr<T>(), w_ih.strides[0], w_ih.strides[1], 0.f, grad_x->ptr<T>(), I,
                     1, st);
    if (grad_w_ih)  // (4H, I) (+)= dG^T @ x
        lstm_gemm<T>(G, I, TB, 1.f, dG, 1, G, x.ptr<T>(), I, 1, beta, grad_w_ih->ptr<T>(), grad_w_ih->strides[0],
                     grad_w_ih->strides[1], st);
    if (grad_w_hh) {  // (4H, H) (+)= dG[1:]^T @ y[:-1] + dG[0]^T @ h0
        lstm_gemm<T>(G, H, T_ > 0 ? (T_ - 1) * B : 0, 1.f, dG + B * G, 1, G, y.ptr<T>(), H, 1, beta,
                     grad_w_hh->ptr<T>(), grad_w_hh->strides[0], grad_w_hh->strides[1], st);
        if (h0 && T_ > 0)
            lstm_gemm<T>(G, H, B, 1.f, dG, 1, G, h0->ptr<T>(), h0->strides[0], h0->strides[1], 1.f,
                         grad_w_hh->ptr<T>(), grad_w_hh->strides[0], grad_w_hh->strides[1], st);
    }
    if (want_bias && G > 0) {
        if (chunks > 0) {
            column_sums_partial<T><<<dim3(grid_blocks((G + 255) / 256, "lstm column_sums"), static_cast<unsigned>(chunks)),
                                     256, 0, st>>>(dG, TB, G, R, partial);
            check_launch("lstm column_sums_partial");
        }
        column_sums_final<T><<<grid_blocks((G + 255) / 256, "lstm column_sums"), 256, 0, st>>>(
            partial, chunks, G, grad_b_ih ? grad_b_ih->ptr<T>() : nullptr, grad_b_ih ? grad_b_ih->strides[0] : 0,
            grad_b_hh ? grad_b_hh->ptr<T>() : nullptr, grad_b_hh ? grad_b_hh->strides[0] : 0, accumulate ? 1 : 0);
        check_launch("lstm column_sums_final");
    }
}

}  // namespace

void lstm_forward(const View& x, const View* h0, const View* c0, const View& w_ih, const View& w_hh,
                  const View* b_ih, const View* b_hh, const View& y, const View& h_T, const View& c_T,
                  const View& gates, const View& cells, void* stream) {
    const detail::LstmDims d = detail::lstm_check_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, y, h_T, c_T, gates, cells);
    cudaStream_t st = static_cast<cudaStream_t>(stream);
    if (d.dt == DType::f32)
        forward_impl<float>(d, x, h0, c0, w_ih, w_hh, b_ih, b_hh, y, h_T, c_T, gates, cells, st);
    else
        forward_impl<double>(d, x, h0, c0, w_ih, w_hh, b_ih, b_hh, y, h_T, c_T, gates, cells, st);
}

void lstm_backward(const View& x, const View* h0, const View* c0, const View& w_ih, const View& w_hh,
                   const View& y, const View& gates, const View& cells, const View* grad_y,
                   const View* grad_h_T, const View* grad_c_T, const View* grad_x, const View* grad_h0,
                   const View* grad_c0, const View* grad_w_ih, const View* grad_w_hh,
                   const View* grad_b_ih, const View* grad_b_hh, bool accumulate, void* stream) {
    const detail::LstmDims d =
        detail::lstm_check_backward(x, h0, c0, w_ih, w_hh, y, gates, cells, grad_y, grad_h_T, grad_c_T, grad_x,
                                    grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh);
    cudaStream_t st = static_cast<cudaStream_t>(stream);
    if (d.dt == DType::f32)
        backward_impl<float>(d, x, h0, c0, w_ih, w_hh, y, gates, cells, grad_y, grad_h_T, grad_c_T, grad_x, grad_h0,
                             grad_c0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, accumulate, st);
    else
        backward_impl<double>(d, x, h0, c0, w_ih, w_hh, y, gates, cells, grad_y, grad_h_T, grad_c_T, grad_x, grad_h0,
                              grad_c0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, accumulate, st);
}

const char* lstm_recurrence(int64_t B, int64_t H, DType dtype, bool backward) {
    if (dtype != DType::f32 && dtype != DType::f64) throw DTypeError(std::string("lstm: unsupported dtype ") + dtype_name(dtype));
    const bool persistent = dtype == DType::f32 ? plan_persistent<float>(B, H, backward).persistent
                                                : plan_persistent<double>(B, H, backward).persistent;
    return persistent ? "persistent" : "stepwise";
}

}  // namespace cuda
}  // namespace layerforge
