// Scaled-dot-product attention on the GPU (see layerforge/attention.h, namespace layerforge::cuda).
//
// Two paths, chosen per call (choose_path):
//  * Tensor cores (float16/bfloat16, D == Dv in {64, 128}, sm_80+, 16-byte aligned rows): FlashAttention-2.
//    Forward: one block of 4 warps per (batch index, tile of 64 query rows); each warp owns 16 rows, holds
//    its Q fragments in registers, and streams K/V tiles of 64 keys through shared memory with cp.async
//    (K_{j+1} is fetched while P V_j runs, V_j while Q K_j^T runs). S = Q K^T and O += P V on
//    mma.sync.m16n8k16 (f32 accumulation); the online softmax (running max m and sum l per row) stays in
//    registers, in log2 units (scale * log2(e) folded into the scores, exp2). Causal: key tiles past the
//    diagonal are never loaded; a warp whose rows all precede a tile skips it.
//    Backward (deterministic, no atomics): delta_i = rowsum(dO * O) and the guarded lse (prep kernel), then
//    (1) one block per key tile of 64 keys walks the query tiles (Q, dO, lse, delta double-buffered with
//    cp.async), recomputes P^T = exp2(K Q^T - lse) and dP^T = V dO^T, and accumulates dV += P^T dO and
//    dK += dS^T Q in registers; (2) one block per query tile walks the key tiles (double-buffered) and
//    accumulates dQ += dS K in registers. (2) repeats two of (1)'s products: 7 matrix products instead of
//    FlashAttention-2's 5, the price of a deterministic dQ without an L x S buffer.
//  * SIMT (everything else: float32, float64, other head dims, unaligned views, pre-sm_80): the same
//    algorithm with plain FMAs. A warp handles 4 query rows (forward, dQ) or 2-4 keys (dK/dV); lanes take
//    keys for the dot products (K rows padded by one element: no bank conflicts) and features for the
//    accumulations (values broadcast by warp shuffles). float (double for float64) arithmetic, exp/log,
//    not exp2: close to the CPU's results. Key tiles shrink when a large D would exceed shared memory.
// Shared by both: masks (bool or additive, any strides, zero strides broadcast) read per element, causal
// top-left aligned, fully masked rows give zeros (lse = -inf), and dropout decided by the CPU's
// counter-based hash of (seed, batch, row, column) (detail/dropout_hash.h), the same in every kernel.
#include "layerforge/attention.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>

#include "layerforge/detail/attention_checks.h"
#include "layerforge/detail/dropout_hash.h"
#include "check.cuh"
#include "launch_util.cuh"

namespace layerforge {
namespace cuda {

namespace {

constexpr double kLog2e = 1.4426950408889634074;
constexpr double kLn2 = 0.69314718055994530942;

// ------------------------------------------------------------------ arguments (passed by value)
struct Strides3 {
    int64_t b1, b2, row;  // elements; the feature stride is 1
};

struct SdpaArgs {
    const void *q, *k, *v;
    void* out;             // forward: written; backward: read
    void* lse;             // (N, L) with strides lse_s (float, or double for float64)
    const void* dout;      // backward: grad_out, strides gs
    void *dq, *dk, *dv;    // backward: C-contiguous (N, L, D), (N, S, D), (N, S, Dv)
    Strides3 qs, ks, vs, os, gs, lse_s;  // lse_s.row: stride of L (lse is 3-d)
    int64_t B2, N, L, S, D, Dv;
    const void* mask;      // null, bytes (nonzero = attend) or the accumulation type (float/double)
    int mask_is_bool;
    int64_t ms[4];
    double scale;          // natural units
    int causal;
    int dropout;
    uint64_t drop_key, drop_thresh;
    double inv_keep;
    // backward scratch, (N, Lpad): lse per row with fully masked rows (and padding rows) as +inf, in log2
    // units for the tensor-core kernels; delta_i = rowsum(dO o O)
    const void* stat_lse;
    const void* stat_delta;
    int64_t Lpad;
};

__device__ __forceinline__ int64_t batch_offset(const Strides3& s, int64_t n, int64_t B2) {
    return (n / B2) * s.b1 + (n % B2) * s.b2;
}

// ------------------------------------------------------------------ element types
template <typename T> struct AccOf { using type = float; };
template <> struct AccOf<double> { using type = double; };

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

// Store an accumulator value into an element (rounding to nearest for the 16-bit types).
__device__ __forceinline__ void put(float* p, float x) { *p = x; }
__device__ __forceinline__ void put(double* p, double x) { *p = x; }
__device__ __forceinline__ void put(__half* p, float x) { *p = __float2half_rn(x); }
__device__ __forceinline__ void put(__nv_bfloat16* p, float x) { *p = __float2bfloat16_rn(x); }

__device__ __forceinline__ int64_t lf_min(int64_t a, int64_t b) { return a < b ? a : b; }

// The one dynamic shared-memory array of every kernel here (one declaration: they must agree).
__device__ __forceinline__ unsigned char* dyn_smem() {
    extern __shared__ __align__(128) unsigned char lf_attention_smem[];
    return lf_attention_smem;
}

template <typename A> __device__ __forceinline__ A neg_inf() { return -std::numeric_limits<A>::infinity(); }
template <typename A> __device__ __forceinline__ A pos_inf() { return std::numeric_limits<A>::infinity(); }
__device__ __forceinline__ float acc_exp(float x) { return expf(x); }
__device__ __forceinline__ double acc_exp(double x) { return exp(x); }
__device__ __forceinline__ float acc_log(float x) { return logf(x); }
__device__ __forceinline__ double acc_log(double x) { return log(x); }

template <typename A> __device__ __forceinline__ A warp_max(A x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x = fmax(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}
template <typename A> __device__ __forceinline__ A warp_sum(A x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}

// The mask's additive term for (row i, column j) in natural units: 0 or -inf for a bool mask, the value
// of a float mask (of the accumulation type). mbase: the batch index's offset into the mask.
template <typename A>
__device__ __forceinline__ A mask_term(const SdpaArgs& a, int64_t mbase, int64_t i, int64_t j) {
    const int64_t o = mbase + i * a.ms[2] + j * a.ms[3];
    if (a.mask_is_bool) return static_cast<const uint8_t*>(a.mask)[o] ? A(0) : neg_inf<A>();
    return static_cast<const A*>(a.mask)[o];
}

// Offset of batch index n (= b1 * B2 + b2) into the mask; 0 without a mask.
__device__ __forceinline__ int64_t mask_batch_base(const SdpaArgs& a, int64_t n) {
    return a.mask ? (n / a.B2) * a.ms[0] + (n % a.B2) * a.ms[1] : 0;
}

// The logit of query row i, key j from the score s = q.k: s scale + mask, -inf where !valid (a padding
// row or key of the tile) or hidden by causality (j > i).
template <typename A>
__device__ __forceinline__ A masked_logit(const SdpaArgs& a, A s, A scale, int64_t mbase, int64_t i, int64_t j,
                                          bool valid) {
    if (!valid) return neg_inf<A>();
    A x = s * scale;
    if (a.mask) x += mask_term<A>(a, mbase, i, j);
    if (a.causal && j > i) x = neg_inf<A>();
    return x;
}

__device__ __forceinline__ bool dropout_kept(const SdpaArgs& a, int64_t n, int64_t i, int64_t j) {
    const uint64_t idx = (static_cast<uint64_t>(n) * static_cast<uint64_t>(a.L) + static_cast<uint64_t>(i)) *
                             static_cast<uint64_t>(a.S) + static_cast<uint64_t>(j);
    return detail::dropout_bits53(a.drop_key, idx) >= a.drop_thresh;
}

// ================================================================== SIMT path
constexpr int kSimtWarps = 4;
constexpr int kSimtThreads = kSimtWarps * 32;
constexpr int kSimtRowsPerWarp = 4;                            // forward and dQ: query rows per warp
constexpr int kSimtRows = kSimtWarps * kSimtRowsPerWarp;       // 16 query rows per block
constexpr int kMaxChunks = 8;                                  // features per lane: D, Dv <= 8 * 32
template <typename A> constexpr int simt_keys_per_warp() { return sizeof(A) == 8 ? 2 : 4; }  // dK/dV

// Copy rows [r0, r0 + rows) of a (rows x cols, row stride rs, unit column stride) matrix into shared memory
// with row pitch `pitch`, zero rows past `valid` rows (row index relative to r0).
// acc[r] += sum_{d < len} rows[r * pitch + d] * lane_row[d], r < R: the dot products of the warp's R rows
// (shared memory, broadcast reads) with this lane's row (the lane's key).
template <int R, typename T, typename A>
__device__ __forceinline__ void simt_rows_dot(A (&acc)[R], const T* rows, int64_t pitch, const T* lane_row,
                                              int64_t len) {
    for (int64_t d = 0; d < len; ++d) {
        const A kv = to_acc(lane_row[d]);
#pragma unroll
        for (int r = 0; r < R; ++r) acc[r] += to_acc(rows[r * pitch + d]) * kv;
    }
}

// acc[r][t] += sum_{jj < count} coef[r] of lane jj * mat[jj * pitch + f], f = lane + 32 t < width, t < nchunks:
// (R x count coefficients, one column per lane) @ (count x width matrix in shared memory), lane = feature.
template <int R, typename T, typename A>
__device__ __forceinline__ void simt_accumulate_products(A (&acc)[R][kMaxChunks], const A (&coef)[R], const T* mat,
                                                         int64_t pitch, int64_t width, int nchunks, int count,
                                                         int lane) {
    for (int jj = 0; jj < count; ++jj) {
        A cj[R];
#pragma unroll
        for (int r = 0; r < R; ++r) cj[r] = __shfl_sync(0xffffffffu, coef[r], jj);
        const T* row = mat + jj * pitch;
#pragma unroll
        for (int t = 0; t < kMaxChunks; ++t) {
            if (t < nchunks) {
                const int64_t f = lane + 32 * t;
                const A v = f < width ? to_acc(row[f]) : A(0);
#pragma unroll
                for (int r = 0; r < R; ++r) acc[r][t] += cj[r] * v;
            }
        }
    }
}

template <typename T>
__device__ __forceinline__ void simt_load_rows(T* dst, int pitch, const T* src, int64_t rs, int rows, int64_t valid,
                                               int64_t cols) {
    const int64_t total = static_cast<int64_t>(rows) * cols;
    for (int64_t e = threadIdx.x; e < total; e += blockDim.x) {
        const int r = static_cast<int>(e / cols);
        const int64_t c = e - static_cast<int64_t>(r) * cols;
        T* d = dst + static_cast<int64_t>(r) * pitch + c;
        if (r < valid) *d = src[r * rs + c];
        else put(d, typename AccOf<T>::type(0));
    }
}

// Forward. Block: (batch index n, 16 query rows); warp w: rows 4w..4w+3 of the tile. Per key tile of KT
// keys (KT <= 32, lane = key): s = scale q.k + mask, online softmax per row, then O += P V with lane =
// feature (f = lane + 32 t). Shared: Q (16 x D), K (KT x (D+1)), V (KT x Dv).
template <typename T>
__global__ void __launch_bounds__(kSimtThreads) sdpa_fwd_simt(SdpaArgs a, int KT) {
    using A = typename AccOf<T>::type;
    constexpr int R = kSimtRowsPerWarp;
    const int64_t D = a.D, Dv = a.Dv, L = a.L, S = a.S;
    const int64_t nqt = (L + kSimtRows - 1) / kSimtRows;
    const int64_t n = blockIdx.x / nqt;
    const int64_t i0 = (blockIdx.x % nqt) * kSimtRows;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    T* Qs = reinterpret_cast<T*>(dyn_smem());
    T* Ks = Qs + kSimtRows * D;
    T* Vs = Ks + KT * (D + 1);
    const T* Q = static_cast<const T*>(a.q) + batch_offset(a.qs, n, a.B2);
    const T* K = static_cast<const T*>(a.k) + batch_offset(a.ks, n, a.B2);
    const T* V = static_cast<const T*>(a.v) + batch_offset(a.vs, n, a.B2);
    const int64_t mbase = mask_batch_base(a, n);
    simt_load_rows(Qs, static_cast<int>(D), Q + i0 * a.qs.row, a.qs.row, kSimtRows, L - i0, D);

    const int nf = static_cast<int>((Dv + 31) / 32);
    A o[R][kMaxChunks], m[R], l[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        m[r] = neg_inf<A>();
        l[r] = A(0);
#pragma unroll
        for (int t = 0; t < kMaxChunks; ++t) o[r][t] = A(0);
    }
    const A scale = static_cast<A>(a.scale);
    const int64_t j_end = a.causal ? lf_min(S, i0 + kSimtRows) : S;
    for (int64_t j0 = 0; j0 < j_end; j0 += KT) {
        const int kc = static_cast<int>(lf_min(KT, j_end - j0));
        __syncthreads();  // Q stored (first tile); every warp done with the previous K, V
        simt_load_rows(Ks, static_cast<int>(D + 1), K + j0 * a.ks.row, a.ks.row, KT, kc, D);
        simt_load_rows(Vs, static_cast<int>(Dv), V + j0 * a.vs.row, a.vs.row, KT, kc, Dv);
        __syncthreads();
        A s[R];
#pragma unroll
        for (int r = 0; r < R; ++r) s[r] = A(0);
        if (lane < kc) simt_rows_dot(s, Qs + warp * R * D, D, Ks + lane * (D + 1), D);
        const int64_t j = j0 + lane;
        A p[R];
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const int64_t i = i0 + warp * R + r;
            const A x = masked_logit(a, s[r], scale, mbase, i, j, lane < kc && i < L);
            const A mn = fmax(m[r], warp_max(x));
            const A mu = mn == neg_inf<A>() ? A(0) : mn;  // everything masked so far: p = 0, alpha = 0
            A pr = acc_exp(x - mu);
            const A alpha = acc_exp(m[r] - mu);
            l[r] = l[r] * alpha + warp_sum(pr);
            m[r] = mn;
#pragma unroll
            for (int t = 0; t < kMaxChunks; ++t) o[r][t] *= alpha;
            if (a.dropout && lane < kc && i < L) pr = dropout_kept(a, n, i, j) ? pr * static_cast<A>(a.inv_keep) : A(0);
            p[r] = pr;
        }
        simt_accumulate_products(o, p, Vs, Dv, Dv, nf, kc, lane);  // O += P V
    }
    T* O = static_cast<T*>(a.out) + batch_offset(a.os, n, a.B2);
    A* LSE = static_cast<A*>(a.lse) + batch_offset(a.lse_s, n, a.B2);
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const int64_t i = i0 + warp * R + r;
        if (i >= L) continue;
        const A inv = l[r] > A(0) ? A(1) / l[r] : A(0);
        T* orow = O + i * a.os.row;
#pragma unroll
        for (int t = 0; t < kMaxChunks; ++t) {
            const int64_t f = lane + 32 * t;
            if (t < nf && f < Dv) put(orow + f, o[r][t] * inv);
        }
        if (lane == 0) LSE[i * a.lse_s.row] = l[r] > A(0) ? m[r] + acc_log(l[r]) : neg_inf<A>();
    }
}

// Backward prep: per row (n, i < Lpad), delta = rowsum(dO o O) and the guarded lse (+inf where the row is
// fully masked or past L, so that exp(s - lse) = 0 there), times log2(e) for the tensor-core kernels.
// One warp per row.
template <typename T>
__global__ void sdpa_bwd_prep(SdpaArgs a, int log2_units) {
    using A = typename AccOf<T>::type;
    const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= a.N * a.Lpad) return;
    const int64_t n = row / a.Lpad, i = row % a.Lpad;
    A* st_lse = static_cast<A*>(const_cast<void*>(a.stat_lse));
    A* st_delta = static_cast<A*>(const_cast<void*>(a.stat_delta));
    if (i >= a.L) {
        if (lane == 0) {
            st_lse[row] = pos_inf<A>();
            st_delta[row] = A(0);
        }
        return;
    }
    const T* O = static_cast<const T*>(a.out) + batch_offset(a.os, n, a.B2) + i * a.os.row;
    const T* G = static_cast<const T*>(a.dout) + batch_offset(a.gs, n, a.B2) + i * a.gs.row;
    A acc = A(0);
    for (int64_t f = lane; f < a.Dv; f += 32) acc += to_acc(O[f]) * to_acc(G[f]);
    acc = warp_sum(acc);
    if (lane == 0) {
        const A lse = static_cast<const A*>(a.lse)[batch_offset(a.lse_s, n, a.B2) + i * a.lse_s.row];
        st_delta[row] = acc;
        st_lse[row] = lse == neg_inf<A>() ? pos_inf<A>() : (log2_units ? lse * static_cast<A>(kLog2e) : lse);
    }
}

// Backward, dQ. Block: (n, 16 query rows), warp w: rows 4w..4w+3. Per key tile (lane = key): s and
// dp = dO.v, P = exp(s - lse), dS = P o (dropout(dP) - delta), then dQ += dS K with lane = feature.
// Shared: Q (16 x D), dO (16 x Dv), K (KT x (D+1)), V (KT x (Dv+1)).
template <typename T>
__global__ void __launch_bounds__(kSimtThreads) sdpa_bwd_dq_simt(SdpaArgs a, int KT) {
    using A = typename AccOf<T>::type;
    constexpr int R = kSimtRowsPerWarp;
    const int64_t D = a.D, Dv = a.Dv, L = a.L, S = a.S;
    const int64_t nqt = (L + kSimtRows - 1) / kSimtRows;
    const int64_t n = blockIdx.x / nqt;
    const int64_t i0 = (blockIdx.x % nqt) * kSimtRows;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    T* Qs = reinterpret_cast<T*>(dyn_smem());
    T* Gs = Qs + kSimtRows * D;
    T* Ks = Gs + kSimtRows * Dv;
    T* Vs = Ks + KT * (D + 1);
    const T* Q = static_cast<const T*>(a.q) + batch_offset(a.qs, n, a.B2);
    const T* G = static_cast<const T*>(a.dout) + batch_offset(a.gs, n, a.B2);
    const T* K = static_cast<const T*>(a.k) + batch_offset(a.ks, n, a.B2);
    const T* V = static_cast<const T*>(a.v) + batch_offset(a.vs, n, a.B2);
    const int64_t mbase = mask_batch_base(a, n);
    simt_load_rows(Qs, static_cast<int>(D), Q + i0 * a.qs.row, a.qs.row, kSimtRows, L - i0, D);
    simt_load_rows(Gs, static_cast<int>(Dv), G + i0 * a.gs.row, a.gs.row, kSimtRows, L - i0, Dv);
    const A* st_lse = static_cast<const A*>(a.stat_lse) + n * a.Lpad;
    const A* st_delta = static_cast<const A*>(a.stat_delta) + n * a.Lpad;

    const int nfq = static_cast<int>((D + 31) / 32);
    A dq[R][kMaxChunks], lse_r[R], del_r[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const int64_t i = i0 + warp * R + r;  // < Lpad: the stats are padded to a multiple of 64 >= 16
        lse_r[r] = st_lse[i];
        del_r[r] = st_delta[i];
#pragma unroll
        for (int t = 0; t < kMaxChunks; ++t) dq[r][t] = A(0);
    }
    const A scale = static_cast<A>(a.scale);
    const int64_t j_end = a.causal ? lf_min(S, i0 + kSimtRows) : S;
    for (int64_t j0 = 0; j0 < j_end; j0 += KT) {
        const int kc = static_cast<int>(lf_min(KT, j_end - j0));
        __syncthreads();
        simt_load_rows(Ks, static_cast<int>(D + 1), K + j0 * a.ks.row, a.ks.row, KT, kc, D);
        simt_load_rows(Vs, static_cast<int>(Dv + 1), V + j0 * a.vs.row, a.vs.row, KT, kc, Dv);
        __syncthreads();
        A s[R], dp[R];
#pragma unroll
        for (int r = 0; r < R; ++r) s[r] = dp[r] = A(0);
        if (lane < kc) {
            simt_rows_dot(s, Qs + warp * R * D, D, Ks + lane * (D + 1), D);
            simt_rows_dot(dp, Gs + warp * R * Dv, Dv, Vs + lane * (Dv + 1), Dv);
        }
        const int64_t j = j0 + lane;
        A ds[R];
#pragma unroll
        for (int r = 0; r < R; ++r) {
            const int64_t i = i0 + warp * R + r;
            const A x = masked_logit(a, s[r], scale, mbase, i, j, lane < kc && i < L);
            const A pr = acc_exp(x - lse_r[r]);  // 0 for masked entries and rows (lse = +inf)
            A dpr = dp[r];
            if (a.dropout && lane < kc && i < L) dpr = dropout_kept(a, n, i, j) ? dpr * static_cast<A>(a.inv_keep) : A(0);
            ds[r] = pr * (dpr - del_r[r]);
        }
        simt_accumulate_products(dq, ds, Ks, D + 1, D, nfq, kc, lane);  // dQ += dS K
    }
    T* DQ = static_cast<T*>(a.dq) + n * L * D;
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const int64_t i = i0 + warp * R + r;
        if (i >= L) continue;
#pragma unroll
        for (int t = 0; t < kMaxChunks; ++t) {
            const int64_t f = lane + 32 * t;
            if (t < nfq && f < D) put(DQ + i * D + f, dq[r][t] * scale);
        }
    }
}

// Backward, dK and dV. Block: (n, 4 warps x KPW keys); per query tile of QT rows (lane = query row):
// s, dp, P, dS for each of the warp's keys, then dV += P^T dO and dK += dS^T Q with lane = feature.
// Shared: K (BK x D), V (BK x Dv), Q (QT x (D+1)), dO (QT x (Dv+1)).
template <typename T>
__global__ void __launch_bounds__(kSimtThreads) sdpa_bwd_dkdv_simt(SdpaArgs a, int QT) {
    using A = typename AccOf<T>::type;
    constexpr int KPW = simt_keys_per_warp<A>();
    constexpr int BK = kSimtWarps * KPW;
    const int64_t D = a.D, Dv = a.Dv, L = a.L, S = a.S;
    const int64_t nkt = (S + BK - 1) / BK;
    const int64_t n = blockIdx.x / nkt;
    const int64_t j0 = (blockIdx.x % nkt) * BK;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    T* Ks = reinterpret_cast<T*>(dyn_smem());
    T* Vs = Ks + BK * D;
    T* Qs = Vs + BK * Dv;
    T* Gs = Qs + QT * (D + 1);
    const T* Q = static_cast<const T*>(a.q) + batch_offset(a.qs, n, a.B2);
    const T* G = static_cast<const T*>(a.dout) + batch_offset(a.gs, n, a.B2);
    const T* K = static_cast<const T*>(a.k) + batch_offset(a.ks, n, a.B2);
    const T* V = static_cast<const T*>(a.v) + batch_offset(a.vs, n, a.B2);
    const int64_t mbase = mask_batch_base(a, n);
    simt_load_rows(Ks, static_cast<int>(D), K + j0 * a.ks.row, a.ks.row, BK, S - j0, D);
    simt_load_rows(Vs, static_cast<int>(Dv), V + j0 * a.vs.row, a.vs.row, BK, S - j0, Dv);
    const A* st_lse = static_cast<const A*>(a.stat_lse) + n * a.Lpad;
    const A* st_delta = static_cast<const A*>(a.stat_delta) + n * a.Lpad;

    const int nfk = static_cast<int>((D + 31) / 32), nfv = static_cast<int>((Dv + 31) / 32);
    A dk[KPW][kMaxChunks], dv[KPW][kMaxChunks];
#pragma unroll
    for (int kk = 0; kk < KPW; ++kk)
#pragma unroll
        for (int t = 0; t < kMaxChunks; ++t) dk[kk][t] = dv[kk][t] = A(0);
    const A scale = static_cast<A>(a.scale);
    const A inv_keep = static_cast<A>(a.inv_keep);
    // causal: rows i < j0 see none of this block's keys
    for (int64_t i0 = a.causal ? j0 : 0; i0 < L; i0 += QT) {
        const int qc = static_cast<int>(lf_min(QT, L - i0));
        __syncthreads();  // K, V stored (first tile); every warp done with the previous Q, dO
        simt_load_rows(Qs, static_cast<int>(D + 1), Q + i0 * a.qs.row, a.qs.row, QT, qc, D);
        simt_load_rows(Gs, static_cast<int>(Dv + 1), G + i0 * a.gs.row, a.gs.row, QT, qc, Dv);
        __syncthreads();
        const int64_t i = i0 + lane;
        const bool row_ok = lane < qc;
        const A lse_i = row_ok ? st_lse[i] : pos_inf<A>();
        const A del_i = row_ok ? st_delta[i] : A(0);
        A pd[KPW], ds[KPW];
#pragma unroll
        for (int kk = 0; kk < KPW; ++kk) {
            const int jl = warp * KPW + kk;
            const int64_t j = j0 + jl;
            A s = A(0), dp = A(0);
            if (row_ok) {
                const T* qr = Qs + lane * (D + 1);
                const T* kr = Ks + jl * D;
                for (int64_t d = 0; d < D; ++d) s += to_acc(qr[d]) * to_acc(kr[d]);
                const T* gr = Gs + lane * (Dv + 1);
                const T* vr = Vs + jl * Dv;
                for (int64_t d = 0; d < Dv; ++d) dp += to_acc(gr[d]) * to_acc(vr[d]);
            }
            const A x = masked_logit(a, s, scale, mbase, i, j, row_ok && j < S);
            const A p = acc_exp(x - lse_i);
            A pk = p, dpk = dp;
            if (a.dropout && row_ok && j < S) {
                const bool keep = dropout_kept(a, n, i, j);
                pk = keep ? p * inv_keep : A(0);
                dpk = keep ? dp * inv_keep : A(0);
            }
            pd[kk] = pk;
            ds[kk] = p * (dpk - del_i);
        }
        for (int ii = 0; ii < qc; ++ii) {
            A pj[KPW], dj[KPW];
#pragma unroll
            for (int kk = 0; kk < KPW; ++kk) {
                pj[kk] = __shfl_sync(0xffffffffu, pd[kk], ii);
                dj[kk] = __shfl_sync(0xffffffffu, ds[kk], ii);
            }
            const T* gr = Gs + ii * (Dv + 1);
            const T* qr = Qs + ii * (D + 1);
#pragma unroll
            for (int t = 0; t < kMaxChunks; ++t) {
                const int64_t f = lane + 32 * t;
                if (t < nfv) {
                    const A gv = f < Dv ? to_acc(gr[f]) : A(0);
#pragma unroll
                    for (int kk = 0; kk < KPW; ++kk) dv[kk][t] += pj[kk] * gv;
                }
                if (t < nfk) {
                    const A qv = f < D ? to_acc(qr[f]) : A(0);
#pragma unroll
                    for (int kk = 0; kk < KPW; ++kk) dk[kk][t] += dj[kk] * qv;
                }
            }
        }
    }
    T* DK = static_cast<T*>(a.dk) + n * S * D;
    T* DV = static_cast<T*>(a.dv) + n * S * Dv;
#pragma unroll
    for (int kk = 0; kk < KPW; ++kk) {
        const int64_t j = j0 + warp * KPW + kk;
        if (j >= S) continue;
#pragma unroll
        for (int t = 0; t < kMaxChunks; ++t) {
            const int64_t f = lane + 32 * t;
            if (t < nfk && f < D) put(DK + j * D + f, dk[kk][t] * scale);
            if (t < nfv && f < Dv) put(DV + j * Dv + f, dv[kk][t]);
        }
    }
}

// ================================================================== tensor-core path (sm_80+)
constexpr int kTcWarps = 4;
constexpr int kTcThreads = kTcWarps * 32;
constexpr int kTcRows = 64;  // query rows per block (16 per warp): forward and dQ
constexpr int kTcKeys = 64;  // keys per tile; the dK/dV kernel: keys per block (16 per warp)
// dK/dV: query rows per streamed tile. 64 for D = 64; 32 for D = 128, where two 16 x 128 f32
// accumulators (dK, dV) already take 128 registers per thread.
template <int D> constexpr int tc_bwd_query_tile() { return D <= 64 ? 64 : 32; }

// Shared-memory tiles of 16-bit elements, rows of D elements = D/8 chunks of 16 bytes. Chunk c of row r is
// stored at chunk c ^ (r & 7): the 8 rows an ldmatrix phase reads (same logical chunk) fall in 8
// different bank groups, and so do the 16-byte cp.async writes.
template <int D> __device__ __forceinline__ int swz(int row, int chunk) { return row * D + ((chunk ^ (row & 7)) << 3); }

__device__ __forceinline__ uint32_t smem_u32(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const int bytes = valid ? 16 : 0;  // 0: zero-fill (src is not read)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes));
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}
// Wait until at most N of this thread's committed groups are still in flight.
template <int N> __device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
#endif
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], uint32_t addr) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
#endif
}

// c (16x8, f32) += a (16x16) b (16x8). Fragments (lane = 4 g + t): a = {(g, 2t..2t+1), (g+8, 2t..),
// (g, 2t+8..), (g+8, 2t+8..)}, b = {(k 2t..2t+1, n g), (k 2t+8.., n g)}, c = {(g, 2t), (g, 2t+1),
// (g+8, 2t), (g+8, 2t+1)}.
template <typename T> __device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma16816<__half>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// Two floats as one register of two 16-bit values, `lo` in the low half (the lower column index).
template <typename T> __device__ __forceinline__ uint32_t pack2(float lo, float hi);
template <> __device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
    const __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
}
template <> __device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const uint32_t*>(&h);
}

// Asynchronously copy rows [r0, r0 + ROWS) of a (rows x D, row stride rs) matrix into a swizzled tile;
// rows at or past `rows` are zero-filled (their source address is the matrix's first row, never read).
// Thread t copies chunk t % CH of rows t / CH + it * (128 / CH): since 128 / CH is a multiple of 8, the
// swizzle of its chunk is the same in every row it copies, and both addresses step by constants.
template <int D, int ROWS, typename T>
__device__ __forceinline__ void tc_load_tile(T* tile, const T* base, int64_t rs, int64_t r0, int64_t rows) {
    constexpr int CH = D / 8, STEP = kTcThreads / CH;
    static_assert(ROWS % STEP == 0 && STEP % 8 == 0, "tile rows must divide over the threads");
    const int r = threadIdx.x / CH, c = threadIdx.x % CH;
    const uint32_t dst = smem_u32(tile + swz<D>(r, c));
    const T* src = base + (r0 + r) * rs + c * 8;
#pragma unroll
    for (int it = 0; it < ROWS / STEP; ++it) {
        const bool ok = r0 + r + it * STEP < rows;
        cp_async16(dst + it * STEP * D * static_cast<uint32_t>(sizeof(T)), ok ? src + it * STEP * rs : base, ok);
    }
}

// ldmatrix addressing. A thread's row address in an x4 load: lanes 8m..8m+7 address matrix m, row lane & 7.
// For A fragments and transposed B loads the four matrices are (rows +0/+8) x (chunks +0/+1) in the order
// (0,0), (8,0), (0,1), (8,1); for non-transposed B loads (0,0), (0,1), (8,0), (8,1). A row's swizzle is
// chunk ^ (row & 7) with row & 7 = lane & 7, so the byte offset of chunk 2 kk + c0 is the offset of chunk
// c0 XOR (kk << 5): per thread, one offset per layout, computed once.
struct FragOffsets {
    uint32_t a;       // A fragments, and B fragments loaded transposed (tile rows = k)
    uint32_t b_rows;  // B fragments whose tile rows are the n index
};
template <int D, typename T>
__device__ __forceinline__ FragOffsets frag_offsets() {
    const int lane = threadIdx.x & 31, mi = lane >> 3, x = lane & 7;
    constexpr uint32_t row_bytes = D * sizeof(T);
    FragOffsets f;
    f.a = (((mi & 1) << 3) + x) * row_bytes + ((((mi >> 1)) ^ x) << 4);
    f.b_rows = (((mi >> 1) << 3) + x) * row_bytes + (((mi & 1) ^ x) << 4);
    return f;
}

// A fragment (16 rows x 16 columns, columns 16 kk..) of a swizzled tile, rows r0..r0+15.
template <int D, typename T>
__device__ __forceinline__ void ld_frag_a(uint32_t (&a)[4], const T* tile, const FragOffsets& fo, int r0, int kk) {
    ldsm_x4(a, smem_u32(tile) + r0 * D * static_cast<uint32_t>(sizeof(T)) + (fo.a ^ (kk << 5)));
}
// B fragments of two n-tiles where B[k][n] = tile[n][k] (tile rows are the n index): rows n0..n0+15,
// columns 16 kk..; b[0], b[1] for n-tile n0, b[2], b[3] for n0 + 8.
template <int D, typename T>
__device__ __forceinline__ void ld_frag_b_rows(uint32_t (&b)[4], const T* tile, const FragOffsets& fo, int n0, int kk) {
    ldsm_x4(b, smem_u32(tile) + n0 * D * static_cast<uint32_t>(sizeof(T)) + (fo.b_rows ^ (kk << 5)));
}
// B fragments of two n-tiles where B[k][n] = tile[k][n] (tile rows are the k index): rows k0..k0+15,
// columns 16 np..16 np+15; b[0], b[1] for columns 16 np.., b[2], b[3] for 16 np + 8...
template <int D, typename T>
__device__ __forceinline__ void ld_frag_b_cols(uint32_t (&b)[4], const T* tile, const FragOffsets& fo, int k0, int np) {
    ldsm_x4_trans(b, smem_u32(tile) + k0 * D * static_cast<uint32_t>(sizeof(T)) + (fo.a ^ (np << 5)));
}

// acc (16 x 8 NT) += A-stripe (16 x D, rows r0.. of tile `a_tile`) times rows n0.. (NT*8 of them) of
// `b_tile` transposed: the score-like products Q K^T, dO V^T, K Q^T, V dO^T.
template <int D, int NT, typename T>
__device__ __forceinline__ void tc_mm_abt(float (&acc)[NT][4], const T* a_tile, int r0, const T* b_tile,
                                          const FragOffsets& fo) {
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
        uint32_t af[4];
        ld_frag_a<D>(af, a_tile, fo, r0, kk);
#pragma unroll
        for (int np = 0; np < NT / 2; ++np) {
            uint32_t bf[4];
            ld_frag_b_rows<D>(bf, b_tile, fo, np * 16, kk);
            mma16816<T>(acc[2 * np], af, bf[0], bf[1]);
            mma16816<T>(acc[2 * np + 1], af, bf[2], bf[3]);
        }
    }
}

// acc (16 x D) += P (16 x 16 KT, A fragments in registers) times rows 0..16 KT of `b_tile` (D wide):
// the products P V, dS K, P^T dO, dS^T Q.
template <int D, int KT, typename T>
__device__ __forceinline__ void tc_mm_pb(float (&acc)[D / 8][4], const uint32_t (&pf)[KT][4], const T* b_tile,
                                         const FragOffsets& fo) {
#pragma unroll
    for (int kk = 0; kk < KT; ++kk)
#pragma unroll
        for (int np = 0; np < D / 16; ++np) {
            uint32_t bf[4];
            ld_frag_b_cols<D>(bf, b_tile, fo, kk * 16, np);
            mma16816<T>(acc[2 * np], pf[kk], bf[0], bf[1]);
            mma16816<T>(acc[2 * np + 1], pf[kk], bf[2], bf[3]);
        }
}

// Accumulator tiles (16 x 8 NT, f32) as A fragments of 16-bit values (16 x 16 per k step).
template <int NT, typename T>
__device__ __forceinline__ void acc_to_frag_a(uint32_t (&f)[NT / 2][4], const float (&c)[NT][4]) {
#pragma unroll
    for (int kk = 0; kk < NT / 2; ++kk) {
        f[kk][0] = pack2<T>(c[2 * kk][0], c[2 * kk][1]);
        f[kk][1] = pack2<T>(c[2 * kk][2], c[2 * kk][3]);
        f[kk][2] = pack2<T>(c[2 * kk + 1][0], c[2 * kk + 1][1]);
        f[kk][3] = pack2<T>(c[2 * kk + 1][2], c[2 * kk + 1][3]);
    }
}

// Row r (0..15 within a warp's stripe) and column c (within a tile of 8 NT) of accumulator element e of
// n-tile nt, for lane (g, t).
__device__ __forceinline__ int acc_row(int e) { return ((threadIdx.x & 31) >> 2) + ((e >> 1) << 3); }
__device__ __forceinline__ int acc_col(int nt, int e) { return nt * 8 + ((threadIdx.x & 3) << 1) + (e & 1); }

// Where a warp's accumulator stripe sits in the (query, key) plane, precomputed once per tile so that the
// per-element work is 32-bit: an element at local query offset ql and key offset kl (from q0, k0) exists
// when ql < qlim and kl < klim, is causally masked when kl - ql > diag, and has mask offset mask0 + ql ms2 +
// kl ms3 and dropout index drop0 + ql S + kl.
struct TcTile {
    int qlim, klim, diag;
    int64_t mask0;
    uint64_t drop0;
};

__device__ __forceinline__ int clamp_int(int64_t x) {
    return static_cast<int>(x < -(1LL << 30) ? -(1LL << 30) : (x > (1LL << 30) ? (1LL << 30) : x));
}

__device__ __forceinline__ TcTile tc_tile(const SdpaArgs& a, int64_t n, int64_t mbase, int64_t q0, int64_t k0) {
    TcTile t;
    t.qlim = clamp_int(a.L - q0);
    t.klim = clamp_int(a.S - k0);
    t.diag = clamp_int(q0 - k0);
    t.mask0 = mbase + q0 * a.ms[2] + k0 * a.ms[3];
    t.drop0 = (static_cast<uint64_t>(n) * static_cast<uint64_t>(a.L) + static_cast<uint64_t>(q0)) *
                  static_cast<uint64_t>(a.S) + static_cast<uint64_t>(k0);
    return t;
}

// Local (query, key) offsets of accumulator element e of n-tile nt. Not transposed: stripe rows are
// queries and columns keys (forward, dQ); transposed: rows are keys, columns queries (dK/dV).
template <bool kTransposed> __device__ __forceinline__ int tc_ql(int nt, int e) {
    return kTransposed ? acc_col(nt, e) : acc_row(e);
}
template <bool kTransposed> __device__ __forceinline__ int tc_kl(int nt, int e) {
    return kTransposed ? acc_row(e) : acc_col(nt, e);
}

// Scores in place: times scale * log2(e), plus the mask (log2 units), -inf where masked, causal or past S.
// Queries past L keep their (finite, unused) values and read no mask. Tiles with nothing to mask (no mask,
// all keys inside, causal diagonal not crossed) take the plain path.
template <int NT, bool kTransposed>
__device__ __forceinline__ void tc_scale_mask(const SdpaArgs& a, float (&sc)[NT][4], const TcTile& t) {
    const float sl2 = static_cast<float>(a.scale * kLog2e);
    constexpr int kw = kTransposed ? 16 : NT * 8;  // keys the stripe spans
    const bool plain = !a.mask && t.klim >= kw && (!a.causal || kw - 1 <= t.diag);
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            float x = sc[nt][e] * sl2;
            if (!plain) {
                const int ql = tc_ql<kTransposed>(nt, e), kl = tc_kl<kTransposed>(nt, e);
                if (kl >= t.klim) {
                    x = neg_inf<float>();
                } else if (ql < t.qlim) {
                    if (a.mask) {
                        const int64_t o = t.mask0 + ql * a.ms[2] + kl * a.ms[3];
                        x = a.mask_is_bool ? (static_cast<const uint8_t*>(a.mask)[o] ? x : neg_inf<float>())
                                           : x + static_cast<const float*>(a.mask)[o] * static_cast<float>(kLog2e);
                    }
                    if (a.causal && kl - ql > t.diag) x = neg_inf<float>();
                }
            }
            sc[nt][e] = x;
        }
}

__device__ __forceinline__ bool tc_kept(const SdpaArgs& a, const TcTile& t, int ql, int kl) {
    const uint64_t idx = t.drop0 + static_cast<uint64_t>(ql) * static_cast<uint64_t>(a.S) + static_cast<uint64_t>(kl);
    return detail::dropout_bits53(a.drop_key, idx) >= a.drop_thresh;
}

// Rows r0 + g, r0 + g + 8 (those < rows_valid) of a warp's 16 x D accumulator, times mul0 / mul1, into a
// row-major matrix (row stride rs, 4-byte aligned rows) as 32-bit pairs.
template <int D, typename T>
__device__ __forceinline__ void tc_store_rows(T* base, int64_t rs, int64_t r0, int64_t rows_valid,
                                              const float (&acc)[D / 8][4], float mul0, float mul1) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int64_t r = r0 + ((threadIdx.x & 31) >> 2) + 8 * h;
        if (r >= rows_valid) continue;
        const float mul = h ? mul1 : mul0;
        T* row = base + r * rs;
#pragma unroll
        for (int nt = 0; nt < D / 8; ++nt) {
            const int c = nt * 8 + ((threadIdx.x & 3) << 1);
            *reinterpret_cast<uint32_t*>(row + c) = pack2<T>(acc[nt][2 * h] * mul, acc[nt][2 * h + 1] * mul);
        }
    }
}

// Forward (FlashAttention-2). Shared: Q (64 x D), K (64 x D), V (64 x D), swizzled.
template <typename T, int D>
__global__ void __launch_bounds__(kTcThreads) sdpa_fwd_tc(SdpaArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    constexpr int NT = kTcKeys / 8;  // n-tiles of S per warp
    T* Qs = reinterpret_cast<T*>(dyn_smem());
    T* Ks = Qs + kTcRows * D;
    T* Vs = Ks + kTcKeys * D;
    const int warp = threadIdx.x >> 5;
    const FragOffsets fo = frag_offsets<D, T>();
    const int64_t L = a.L, S = a.S;
    const int64_t nqt = (L + kTcRows - 1) / kTcRows;
    const int64_t n = blockIdx.x / nqt;
    // causal: the last query tiles see the most keys; start them first
    const int64_t qt = a.causal ? nqt - 1 - blockIdx.x % nqt : blockIdx.x % nqt;
    const int64_t i0 = qt * kTcRows;
    const T* Q = static_cast<const T*>(a.q) + batch_offset(a.qs, n, a.B2);
    const T* K = static_cast<const T*>(a.k) + batch_offset(a.ks, n, a.B2);
    const T* V = static_cast<const T*>(a.v) + batch_offset(a.vs, n, a.B2);
    const int64_t mbase = mask_batch_base(a, n);
    const int64_t kend = a.causal ? lf_min(S, i0 + kTcRows) : S;
    const int64_t ntiles = (kend + kTcKeys - 1) / kTcKeys;

    tc_load_tile<D, kTcRows>(Qs, Q, a.qs.row, i0, L);
    cp_async_commit();
    if (ntiles > 0) tc_load_tile<D, kTcKeys>(Ks, K, a.ks.row, 0, S);
    cp_async_commit();
    cp_async_wait<1>();  // Q has landed (K_0 may still be in flight)
    __syncthreads();
    uint32_t qf[D / 16][4];
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) ld_frag_a<D>(qf[kk], Qs, fo, warp * 16, kk);

    float of[D / 8][4];
#pragma unroll
    for (int nt = 0; nt < D / 8; ++nt) of[nt][0] = of[nt][1] = of[nt][2] = of[nt][3] = 0.f;
    float m_r[2] = {neg_inf<float>(), neg_inf<float>()}, l_r[2] = {0.f, 0.f};  // rows g, g + 8
    const float inv_keep = static_cast<float>(a.inv_keep);
    const int64_t warp_row0 = i0 + warp * 16;

    for (int64_t jt = 0; jt < ntiles; ++jt) {
        const int64_t j0 = jt * kTcKeys;
        tc_load_tile<D, kTcKeys>(Vs, V, a.vs.row, j0, S);
        cp_async_commit();
        cp_async_wait<1>();  // K_jt has landed (V_jt may be in flight)
        __syncthreads();
        // a warp whose 16 rows all precede the tile's first key sees nothing of it (causal)
        const bool active = !(a.causal && j0 > warp_row0 + 15);
        float sc[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.f;
        if (active) {
#pragma unroll
            for (int kk = 0; kk < D / 16; ++kk)
#pragma unroll
                for (int np = 0; np < NT / 2; ++np) {
                    uint32_t bf[4];
                    ld_frag_b_rows<D>(bf, Ks, fo, np * 16, kk);
                    mma16816<T>(sc[2 * np], qf[kk], bf[0], bf[1]);
                    mma16816<T>(sc[2 * np + 1], qf[kk], bf[2], bf[3]);
                }
        }
        __syncthreads();  // every warp is done with K_jt
        if (jt + 1 < ntiles) tc_load_tile<D, kTcKeys>(Ks, K, a.ks.row, j0 + kTcKeys, S);
        cp_async_commit();  // (possibly empty: keeps the group count uniform)

        uint32_t pf[NT / 2][4];
        if (active) {
            const TcTile tile = tc_tile(a, n, mbase, warp_row0, j0);
            tc_scale_mask<NT, false>(a, sc, tile);
            float mx[2] = {neg_inf<float>(), neg_inf<float>()};
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) mx[e >> 1] = fmaxf(mx[e >> 1], sc[nt][e]);
            float mu[2], alpha[2];
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
                mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
                const float mn = fmaxf(m_r[h], mx[h]);
                mu[h] = mn == neg_inf<float>() ? 0.f : mn;  // all masked so far: p = 0 and alpha = 0
                alpha[h] = exp2f(m_r[h] - mu[h]);
                m_r[h] = mn;
            }
            float rs[2] = {0.f, 0.f};
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const float p = exp2f(sc[nt][e] - mu[e >> 1]);
                    rs[e >> 1] += p;
                    sc[nt][e] = p;
                }
            // per-thread partial sums: alpha is the same for the 4 threads of a row, so the quad's partials
            // are summed once at the end
            l_r[0] = l_r[0] * alpha[0] + rs[0];
            l_r[1] = l_r[1] * alpha[1] + rs[1];
#pragma unroll
            for (int nt = 0; nt < D / 8; ++nt) {
                of[nt][0] *= alpha[0];
                of[nt][1] *= alpha[0];
                of[nt][2] *= alpha[1];
                of[nt][3] *= alpha[1];
            }
            if (a.dropout) {
#pragma unroll
                for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                    for (int e = 0; e < 4; ++e) {
                        const int ql = acc_row(e), kl = acc_col(nt, e);
                        if (ql < tile.qlim && kl < tile.klim) sc[nt][e] = tc_kept(a, tile, ql, kl) ? sc[nt][e] * inv_keep : 0.f;
                    }
            }
            acc_to_frag_a<NT, T>(pf, sc);
        }
        cp_async_wait<1>();  // V_jt has landed (K_jt+1 may be in flight)
        __syncthreads();
        if (active) tc_mm_pb<D, NT / 2, T>(of, pf, Vs, fo);
        __syncthreads();  // every warp is done with V_jt before the next one is fetched
    }
    cp_async_wait<0>();

#pragma unroll
    for (int h = 0; h < 2; ++h) {
        l_r[h] += __shfl_xor_sync(0xffffffffu, l_r[h], 1);
        l_r[h] += __shfl_xor_sync(0xffffffffu, l_r[h], 2);
    }
    T* O = static_cast<T*>(a.out) + batch_offset(a.os, n, a.B2);
    tc_store_rows<D, T>(O, a.os.row, warp_row0, L, of, l_r[0] > 0.f ? 1.f / l_r[0] : 0.f,
                                 l_r[1] > 0.f ? 1.f / l_r[1] : 0.f);
    if ((threadIdx.x & 3) == 0) {
        float* LSE = static_cast<float*>(a.lse) + batch_offset(a.lse_s, n, a.B2);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int64_t i = warp_row0 + acc_row(2 * h);
            if (i < L)
                LSE[i * a.lse_s.row] =
                    l_r[h] > 0.f ? m_r[h] * static_cast<float>(kLn2) + logf(l_r[h]) : neg_inf<float>();
        }
    }
#endif
}

// dS from the raw scores (sc) and dP (dp) of a warp's stripe: P = exp2(x - lse), dS = P o (dropout(dP) -
// delta); on return sc holds dS and dp the dropped P (for dV). Not transposed (dQ kernel): stripe rows are
// queries row0 + acc_row(e), columns keys col0 + acc_col(nt, e), the stats of the thread's two rows in
// row_lse/row_delta [h]. Transposed (dK/dV kernel): rows are keys, columns queries, the stats of the tile's
// queries in shared memory (col_lse/col_delta [column]).
template <int NT, bool kTransposed>
__device__ __forceinline__ void tc_grad_scores(const SdpaArgs& a, float (&sc)[NT][4], float (&dp)[NT][4],
                                               const TcTile& t, const float (&row_lse)[2],
                                               const float (&row_delta)[2], const float* col_lse,
                                               const float* col_delta) {
    const float inv_keep = static_cast<float>(a.inv_keep);
    tc_scale_mask<NT, kTransposed>(a, sc, t);
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            float lse, delta;
            if constexpr (kTransposed) {
                lse = col_lse[acc_col(nt, e)];
                delta = col_delta[acc_col(nt, e)];
            } else {
                lse = row_lse[e >> 1];
                delta = row_delta[e >> 1];
            }
            const float p = exp2f(sc[nt][e] - lse);  // lse = +inf for fully masked rows and rows past L
            float pk = p, dpk = dp[nt][e];
            if (a.dropout) {
                const int ql = tc_ql<kTransposed>(nt, e), kl = tc_kl<kTransposed>(nt, e);
                if (ql < t.qlim && kl < t.klim) {
                    const bool keep = tc_kept(a, t, ql, kl);
                    pk = keep ? p * inv_keep : 0.f;
                    dpk = keep ? dpk * inv_keep : 0.f;
                }
            }
            sc[nt][e] = p * (dpk - delta);
            dp[nt][e] = pk;
        }
}

// Backward, dQ: block (n, 64 query rows), warp w: rows 16w..; key tiles double-buffered.
// Shared: Q, dO (64 x D), K[2], V[2] (64 x D), swizzled.
template <typename T, int D>
__global__ void __launch_bounds__(kTcThreads) sdpa_bwd_dq_tc(SdpaArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    constexpr int NT = kTcKeys / 8;
    constexpr int TILE = kTcKeys * D;
    T* Qs = reinterpret_cast<T*>(dyn_smem());
    T* Gs = Qs + kTcRows * D;
    T* Ks = Gs + kTcRows * D;  // two stages
    T* Vs = Ks + 2 * TILE;     // two stages
    const int warp = threadIdx.x >> 5;
    const FragOffsets fo = frag_offsets<D, T>();
    const int64_t L = a.L, S = a.S;
    const int64_t nqt = (L + kTcRows - 1) / kTcRows;
    const int64_t n = blockIdx.x / nqt;
    const int64_t qt = a.causal ? nqt - 1 - blockIdx.x % nqt : blockIdx.x % nqt;
    const int64_t i0 = qt * kTcRows;
    const T* Q = static_cast<const T*>(a.q) + batch_offset(a.qs, n, a.B2);
    const T* G = static_cast<const T*>(a.dout) + batch_offset(a.gs, n, a.B2);
    const T* K = static_cast<const T*>(a.k) + batch_offset(a.ks, n, a.B2);
    const T* V = static_cast<const T*>(a.v) + batch_offset(a.vs, n, a.B2);
    const int64_t mbase = mask_batch_base(a, n);
    const int64_t kend = a.causal ? lf_min(S, i0 + kTcRows) : S;
    const int64_t ntiles = (kend + kTcKeys - 1) / kTcKeys;
    const int64_t warp_row0 = i0 + warp * 16;
    // lse / delta of this thread's two rows (the stats are padded to a multiple of 64 rows)
    const float* st_lse = static_cast<const float*>(a.stat_lse) + n * a.Lpad;
    const float* st_delta = static_cast<const float*>(a.stat_delta) + n * a.Lpad;
    const int64_t my_row = warp_row0 + ((threadIdx.x & 31) >> 2);  // and my_row + 8
    const float row_lse[2] = {st_lse[my_row], st_lse[my_row + 8]};
    const float row_delta[2] = {st_delta[my_row], st_delta[my_row + 8]};

    tc_load_tile<D, kTcRows>(Qs, Q, a.qs.row, i0, L);
    tc_load_tile<D, kTcRows>(Gs, G, a.gs.row, i0, L);
    if (ntiles > 0) {
        tc_load_tile<D, kTcKeys>(Ks, K, a.ks.row, 0, S);
        tc_load_tile<D, kTcKeys>(Vs, V, a.vs.row, 0, S);
    }
    cp_async_commit();

    float dq[D / 8][4];
#pragma unroll
    for (int nt = 0; nt < D / 8; ++nt) dq[nt][0] = dq[nt][1] = dq[nt][2] = dq[nt][3] = 0.f;
    for (int64_t jt = 0; jt < ntiles; ++jt) {
        const int64_t j0 = jt * kTcKeys;
        const int stage = static_cast<int>(jt & 1);
        if (jt + 1 < ntiles) {
            tc_load_tile<D, kTcKeys>(Ks + (stage ^ 1) * TILE, K, a.ks.row, j0 + kTcKeys, S);
            tc_load_tile<D, kTcKeys>(Vs + (stage ^ 1) * TILE, V, a.vs.row, j0 + kTcKeys, S);
        }
        cp_async_commit();
        cp_async_wait<1>();  // this stage (and Q, dO) has landed
        __syncthreads();
        const T* Kt = Ks + stage * TILE;
        const T* Vt = Vs + stage * TILE;
        if (!(a.causal && j0 > warp_row0 + 15)) {
            float sc[NT][4], dp[NT][4];
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) sc[nt][e] = dp[nt][e] = 0.f;
            tc_mm_abt<D, NT, T>(sc, Qs, warp * 16, Kt, fo);
            tc_mm_abt<D, NT, T>(dp, Gs, warp * 16, Vt, fo);
            tc_grad_scores<NT, false>(a, sc, dp, tc_tile(a, n, mbase, warp_row0, j0), row_lse, row_delta, nullptr,
                                      nullptr);
            uint32_t dsf[NT / 2][4];
            acc_to_frag_a<NT, T>(dsf, sc);
            tc_mm_pb<D, NT / 2, T>(dq, dsf, Kt, fo);
        }
        __syncthreads();  // every warp is done with this stage before it is refilled
    }
    cp_async_wait<0>();
    const float scale = static_cast<float>(a.scale);
    tc_store_rows<D, T>(static_cast<T*>(a.dq) + n * L * D, D, warp_row0, L, dq, scale, scale);
#endif
}

// Backward, dK and dV: block (n, 64 keys), warp w: keys 16w..; query tiles of QB rows (with their lse and
// delta) double-buffered. Per tile: S^T = K Q^T, dP^T = V dO^T, then dV += P^T dO, dK += dS^T Q.
// Shared: K, V (64 x D), Q[2], dO[2] (QB x D), lse[2], delta[2] (QB floats).
template <typename T, int D>
__global__ void __launch_bounds__(kTcThreads) sdpa_bwd_dkdv_tc(SdpaArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    constexpr int QB = tc_bwd_query_tile<D>();
    constexpr int NT = QB / 8;
    constexpr int QTILE = QB * D;
    T* Ks = reinterpret_cast<T*>(dyn_smem());
    T* Vs = Ks + kTcKeys * D;
    T* Qs = Vs + kTcKeys * D;   // two stages
    T* Gs = Qs + 2 * QTILE;     // two stages
    float* Ls = reinterpret_cast<float*>(Gs + 2 * QTILE);  // two stages of QB
    float* Ds = Ls + 2 * QB;                               // two stages of QB
    const int warp = threadIdx.x >> 5;
    const FragOffsets fo = frag_offsets<D, T>();
    const int64_t L = a.L, S = a.S;
    const int64_t nkt = (S + kTcKeys - 1) / kTcKeys;
    const int64_t n = blockIdx.x / nkt;
    const int64_t j0 = (blockIdx.x % nkt) * kTcKeys;
    const T* Q = static_cast<const T*>(a.q) + batch_offset(a.qs, n, a.B2);
    const T* G = static_cast<const T*>(a.dout) + batch_offset(a.gs, n, a.B2);
    const T* K = static_cast<const T*>(a.k) + batch_offset(a.ks, n, a.B2);
    const T* V = static_cast<const T*>(a.v) + batch_offset(a.vs, n, a.B2);
    const int64_t mbase = mask_batch_base(a, n);
    const float* st_lse = static_cast<const float*>(a.stat_lse) + n * a.Lpad;
    const float* st_delta = static_cast<const float*>(a.stat_delta) + n * a.Lpad;
    const int64_t warp_key0 = j0 + warp * 16;
    // causal: query rows before j0 see none of these keys
    const int64_t qt0 = a.causal ? j0 / QB : 0;
    const int64_t nqt = (L + QB - 1) / QB;

    // stage s <- query tile qt: Q, dO rows and their stats (QB floats = QB/4 chunks each)
    auto load_query_tile = [&](int s, int64_t qt) {
        const int64_t r0 = qt * QB;
        tc_load_tile<D, QB>(Qs + s * QTILE, Q, a.qs.row, r0, L);
        tc_load_tile<D, QB>(Gs + s * QTILE, G, a.gs.row, r0, L);
        const int t = threadIdx.x;
        if (t < QB / 4) cp_async16(smem_u32(Ls + s * QB + 4 * t), st_lse + r0 + 4 * t, true);
        else if (t < QB / 2) cp_async16(smem_u32(Ds + s * QB + 4 * (t - QB / 4)), st_delta + r0 + 4 * (t - QB / 4), true);
    };
    tc_load_tile<D, kTcKeys>(Ks, K, a.ks.row, j0, S);
    tc_load_tile<D, kTcKeys>(Vs, V, a.vs.row, j0, S);
    if (qt0 < nqt) load_query_tile(0, qt0);
    cp_async_commit();

    float dk[D / 8][4], dv[D / 8][4];
#pragma unroll
    for (int nt = 0; nt < D / 8; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) dk[nt][e] = dv[nt][e] = 0.f;
    for (int64_t qt = qt0; qt < nqt; ++qt) {
        const int stage = static_cast<int>((qt - qt0) & 1);
        if (qt + 1 < nqt) load_query_tile(stage ^ 1, qt + 1);
        cp_async_commit();
        cp_async_wait<1>();  // this stage (and K, V) has landed
        __syncthreads();
        const int64_t q0 = qt * QB;
        const T* Qt = Qs + stage * QTILE;
        const T* Gt = Gs + stage * QTILE;
        // a warp whose keys all follow every query of the tile sees nothing of it (causal)
        if (!(a.causal && q0 + QB - 1 < warp_key0)) {
            float st[NT][4], dpt[NT][4];
#pragma unroll
            for (int nt = 0; nt < NT; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) st[nt][e] = dpt[nt][e] = 0.f;
            tc_mm_abt<D, NT, T>(st, Ks, warp * 16, Qt, fo);   // S^T (16 keys x QB queries)
            tc_mm_abt<D, NT, T>(dpt, Vs, warp * 16, Gt, fo);  // dP^T
            const float unused[2] = {0.f, 0.f};
            tc_grad_scores<NT, true>(a, st, dpt, tc_tile(a, n, mbase, q0, warp_key0), unused, unused,
                                     Ls + stage * QB, Ds + stage * QB);
            uint32_t pf[NT / 2][4], dsf[NT / 2][4];
            acc_to_frag_a<NT, T>(pf, dpt);  // dropped P^T
            acc_to_frag_a<NT, T>(dsf, st);  // dS^T
            tc_mm_pb<D, NT / 2, T>(dv, pf, Gt, fo);
            tc_mm_pb<D, NT / 2, T>(dk, dsf, Qt, fo);
        }
        __syncthreads();  // every warp is done with this stage before it is refilled
    }
    cp_async_wait<0>();
    const float scale = static_cast<float>(a.scale);
    tc_store_rows<D, T>(static_cast<T*>(a.dk) + n * S * D, D, warp_key0, S, dk, scale, scale);
    tc_store_rows<D, T>(static_cast<T*>(a.dv) + n * S * D, D, warp_key0, S, dv, 1.f, 1.f);
#endif
}

// ================================================================== host side
[[noreturn]] void fail(const std::string& what) { detail::sdpa_fail(what); }

Strides3 strides3(const View& v) { return Strides3{v.strides[0], v.strides[1], v.strides[2]}; }

SdpaArgs make_args(const View& q, const View& k, const View& v, const AttentionMask& mask, const AttentionParams& p,
                   const View& out, const View& lse) {
    SdpaArgs a;
    std::memset(&a, 0, sizeof(a));
    a.q = q.data;
    a.k = k.data;
    a.v = v.data;
    a.out = out.data;
    a.lse = lse.data;
    a.qs = strides3(q);
    a.ks = strides3(k);
    a.vs = strides3(v);
    a.os = strides3(out);
    a.lse_s = Strides3{lse.strides[0], lse.strides[1], lse.strides[2]};
    a.B2 = q.shape[1];
    a.N = q.shape[0] * q.shape[1];
    a.L = q.shape[2];
    a.S = k.shape[2];
    a.D = q.shape[3];
    a.Dv = v.shape[3];
    a.mask = mask.data;
    a.mask_is_bool = mask.is_bool ? 1 : 0;
    for (int d = 0; d < 4; ++d) a.ms[d] = mask.strides[d];
    a.scale = std::isnan(p.scale) ? 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(1, a.D))) : p.scale;
    a.causal = p.is_causal ? 1 : 0;
    a.dropout = p.dropout_p > 0.0 ? 1 : 0;
    a.drop_key = detail::dropout_key(p.seed);
    a.drop_thresh = detail::dropout_threshold(p.dropout_p);
    a.inv_keep = a.dropout ? 1.0 / (1.0 - p.dropout_p) : 1.0;
    if (a.dropout) {
        // float32: the CPU rounds 1/(1-p) to float before use; so do we (the f32 kernels take it as float)
        if (q.dtype != DType::f64) a.inv_keep = static_cast<double>(static_cast<float>(a.inv_keep));
    }
    return a;
}

void check_dtypes(const View& q) {
    if (q.dtype != DType::f32 && q.dtype != DType::f64 && q.dtype != DType::f16 && q.dtype != DType::bf16)
        throw DTypeError(std::string("scaled_dot_product_attention: unsupported dtype ") + dtype_name(q.dtype) +
                         " on the GPU (float32, float64, float16, bfloat16)");
}

DType acc_dtype(DType t) { return t == DType::f64 ? DType::f64 : DType::f32; }

bool aligned16(const View& v) {
    if (reinterpret_cast<uintptr_t>(v.data) % 16 != 0) return false;
    for (int d = 0; d < 3; ++d)
        if (v.shape[d] > 1 && v.strides[d] % 8 != 0) return false;
    return true;
}

// The tensor-core kernels need 16-bit types, D == Dv in {64, 128}, sm_80+, rows that start on 16 bytes
// (cp.async, 32-bit stores), and something to do. LAYERFORGE_SDPA_CUDA_PATH=simt forces the SIMT path
// (tests compare the two).
bool use_tensor_cores(const View& q, const View& k, const View& v, std::initializer_list<const View*> others) {
    if (q.dtype != DType::f16 && q.dtype != DType::bf16) return false;
    const int64_t D = q.shape[3];
    if (v.shape[3] != D || (D != 64 && D != 128)) return false;
    if (q.shape[2] == 0 || k.shape[2] == 0) return false;
    const char* env = std::getenv("LAYERFORGE_SDPA_CUDA_PATH");
    if (env && std::strcmp(env, "simt") == 0) return false;
    if (device_attribute(cudaDevAttrComputeCapabilityMajor) < 8) return false;
    if (!aligned16(q) || !aligned16(k) || !aligned16(v)) return false;
    for (const View* o : others)
        if (!aligned16(*o)) return false;
    return true;
}

// The largest key tile (lanes per warp used for keys/queries) <= 32 whose shared memory fits the device.
int simt_tile(int64_t fixed_elems, int64_t per_row_elems, size_t elem_size, size_t* bytes) {
    const size_t limit = static_cast<size_t>(device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin));
    for (int t = 32; t >= 1; t /= 2) {
        *bytes = static_cast<size_t>(fixed_elems + t * per_row_elems) * elem_size;
        if (*bytes <= limit) return t;
    }
    fail("the head dims do not fit the GPU's shared memory");
}

template <typename F>
void with_type(DType dt, F&& f) {
    switch (dt) {
        case DType::f32: f(float{}); break;
        case DType::f64: f(double{}); break;
        case DType::f16: f(__half{}); break;
        case DType::bf16: f(__nv_bfloat16{}); break;
        default: throw DTypeError("scaled_dot_product_attention: unsupported dtype");
    }
}

template <typename T, int D>
void launch_fwd_tc(const SdpaArgs& a, cudaStream_t st) {
    const size_t smem = static_cast<size_t>(kTcRows + 2 * kTcKeys) * D * sizeof(T);
    allow_dynamic_smem(sdpa_fwd_tc<T, D>, smem, "sdpa_fwd_tc");
    const unsigned grid = grid_blocks(a.N * ((a.L + kTcRows - 1) / kTcRows), "sdpa_fwd_tc");
    sdpa_fwd_tc<T, D><<<grid, kTcThreads, smem, st>>>(a);
    check_launch("sdpa_fwd_tc");
}

template <typename T, int D>
void launch_bwd_tc(const SdpaArgs& a, cudaStream_t st) {
    constexpr int QB = tc_bwd_query_tile<D>();
    const size_t smem_kv = static_cast<size_t>(2 * kTcKeys + 4 * QB) * D * sizeof(T) + 4 * QB * sizeof(float);
    allow_dynamic_smem(sdpa_bwd_dkdv_tc<T, D>, smem_kv, "sdpa_bwd_dkdv_tc");
    sdpa_bwd_dkdv_tc<T, D><<<grid_blocks(a.N * ((a.S + kTcKeys - 1) / kTcKeys), "sdpa_bwd_dkdv_tc"), kTcThreads, smem_kv,
                             st>>>(a);
    check_launch("sdpa_bwd_dkdv_tc");
    const size_t smem_q = static_cast<size_t>(2 * kTcRows + 4 * kTcKeys) * D * sizeof(T);
    allow_dynamic_smem(sdpa_bwd_dq_tc<T, D>, smem_q, "sdpa_bwd_dq_tc");
    sdpa_bwd_dq_tc<T, D><<<grid_blocks(a.N * ((a.L + kTcRows - 1) / kTcRows), "sdpa_bwd_dq_tc"), kTcThreads, smem_q, st>>>(a);
    check_launch("sdpa_bwd_dq_tc");
}

void check_head_dims(const View& q, const View& v) {
    if (q.shape[3] > 32 * kMaxChunks || v.shape[3] > 32 * kMaxChunks)
        fail("q " + q.shape_str() + " and v " + v.shape_str() + ": the GPU kernels support head dims D, Dv up to " +
             std::to_string(32 * kMaxChunks));
}

}  // namespace

void sdpa_forward(const View& q, const View& k, const View& v, const AttentionMask& mask, const AttentionParams& p,
                  const View& out, const View& lse, void* stream) {
    detail::sdpa_check_inputs(q, k, v, mask, p);
    check_dtypes(q);
    detail::sdpa_check_outputs(q, v, out, lse, acc_dtype(q.dtype));
    check_head_dims(q, v);
    const SdpaArgs a = make_args(q, k, v, mask, p, out, lse);
    if (a.N == 0 || a.L == 0) return;
    cudaStream_t st = static_cast<cudaStream_t>(stream);
    if (use_tensor_cores(q, k, v, {&out})) {
        if (q.dtype == DType::f16)
            a.D == 64 ? launch_fwd_tc<__half, 64>(a, st) : launch_fwd_tc<__half, 128>(a, st);
        else
            a.D == 64 ? launch_fwd_tc<__nv_bfloat16, 64>(a, st) : launch_fwd_tc<__nv_bfloat16, 128>(a, st);
        return;
    }
    with_type(q.dtype, [&](auto tag) {
        using T = decltype(tag);
        size_t smem = 0;
        const int KT = simt_tile(kSimtRows * a.D, a.D + 1 + a.Dv, sizeof(T), &smem);
        allow_dynamic_smem(sdpa_fwd_simt<T>, smem, "sdpa_fwd_simt");
        sdpa_fwd_simt<T><<<grid_blocks(a.N * ((a.L + kSimtRows - 1) / kSimtRows), "sdpa_fwd_simt"), kSimtThreads, smem, st>>>(
            a, KT);
        check_launch("sdpa_fwd_simt");
    });
}

void sdpa_backward(const View& q, const View& k, const View& v, const AttentionMask& mask, const AttentionParams& p,
                   const View& out, const View& lse, const View& grad_out, const View& grad_q, const View& grad_k,
                   const View& grad_v, void* stream) {
    detail::sdpa_check_inputs(q, k, v, mask, p);
    check_dtypes(q);
    detail::sdpa_check_backward(q, k, v, out, lse, grad_out, grad_q, grad_k, grad_v, acc_dtype(q.dtype));
    check_head_dims(q, v);
    SdpaArgs a = make_args(q, k, v, mask, p, out, lse);
    a.dout = grad_out.data;
    a.gs = strides3(grad_out);
    a.dq = grad_q.data;
    a.dk = grad_k.data;
    a.dv = grad_v.data;
    if (a.N == 0) return;
    cudaStream_t st = static_cast<cudaStream_t>(stream);
    const bool tc = use_tensor_cores(q, k, v, {&out, &grad_out, &grad_q, &grad_k, &grad_v});
    // per-row stats, padded to whole tiles of 64 rows (the tensor-core kernels copy them 16 bytes at a time)
    a.Lpad = (a.L + 63) / 64 * 64;
    const size_t acc_size = q.dtype == DType::f64 ? sizeof(double) : sizeof(float);
    StreamScratch scratch(static_cast<size_t>(2 * a.N * a.Lpad) * acc_size, st, "cudaMallocAsync (attention stats)");
    a.stat_lse = scratch.get();
    a.stat_delta = static_cast<char*>(scratch.get()) + static_cast<size_t>(a.N * a.Lpad) * acc_size;
    with_type(q.dtype, [&](auto tag) {
        using T = decltype(tag);
        if (a.N * a.Lpad > 0) {
            const int warps = 8;
            sdpa_bwd_prep<T><<<grid_blocks((a.N * a.Lpad + warps - 1) / warps, "sdpa_bwd_prep"), warps * 32, 0, st>>>(a, tc ? 1 : 0);
            check_launch("sdpa_bwd_prep");
        }
    });
    if (tc) {
        if (q.dtype == DType::f16)
            a.D == 64 ? launch_bwd_tc<__half, 64>(a, st) : launch_bwd_tc<__half, 128>(a, st);
        else
            a.D == 64 ? launch_bwd_tc<__nv_bfloat16, 64>(a, st) : launch_bwd_tc<__nv_bfloat16, 128>(a, st);
        return;
    }
    with_type(q.dtype, [&](auto tag) {
        using T = decltype(tag);
        using A = typename AccOf<T>::type;
        if (a.S > 0) {  // dK, dV (with L == 0 the blocks write zeros)
            constexpr int BK = kSimtWarps * simt_keys_per_warp<A>();
            size_t smem = 0;
            const int QT = simt_tile(BK * (a.D + a.Dv), a.D + 1 + a.Dv + 1, sizeof(T), &smem);
            allow_dynamic_smem(sdpa_bwd_dkdv_simt<T>, smem, "sdpa_bwd_dkdv_simt");
            sdpa_bwd_dkdv_simt<T><<<grid_blocks(a.N * ((a.S + BK - 1) / BK), "sdpa_bwd_dkdv_simt"), kSimtThreads, smem, st>>>(
                a, QT);
            check_launch("sdpa_bwd_dkdv_simt");
        }
        if (a.L > 0) {  // dQ (with S == 0 the blocks write zeros)
            size_t smem = 0;
            const int KT = simt_tile(kSimtRows * (a.D + a.Dv), a.D + 1 + a.Dv + 1, sizeof(T), &smem);
            allow_dynamic_smem(sdpa_bwd_dq_simt<T>, smem, "sdpa_bwd_dq_simt");
            sdpa_bwd_dq_simt<T><<<grid_blocks(a.N * ((a.L + kSimtRows - 1) / kSimtRows), "sdpa_bwd_dq_simt"), kSimtThreads,
                                  smem, st>>>(a, KT);
            check_launch("sdpa_bwd_dq_simt");
        }
    });
}

}  // namespace cuda
}  // namespace layerforge
