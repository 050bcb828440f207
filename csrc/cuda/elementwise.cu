// CUDA kernels of the elementwise family: activations, softmax / log_softmax, fused softmax-cross-entropy
// and layer norm, forward and backward, float32 and float64. The element math follows the CPU kernels
// (csrc/cpu/elementwise_impl.h) operation for operation; the differences are rounding-level (FMA
// contraction, the order of a row's partial sums), so results agree with the CPU to a few ulps per op.
//
// Layouts: every view C-contiguous (the Python layer copies other strides once), rows = leading dims
// flattened, reductions along the last dim. Row kernels: one warp per row when C <= 1024 (blocks of
// 8 rows), else one block of 512 threads per row; rows loop grid-stride, so any 64-bit row count works.
// Rows whose start is 16-byte aligned (base aligned, C a multiple of the pack) use float4/double2 loads.
// No atomics: every reduction has a fixed tree, so results repeat bit for bit.
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <string>

#include "layerforge/detail/elementwise_checks.h"
#include "layerforge/elementwise.h"
#include "check.cuh"
#include "ew_util.cuh"

namespace layerforge {
namespace cuda {
namespace ew {
namespace {

constexpr int kWarpRowsBlock = 256;  // warp-per-row kernels: 8 rows per block
constexpr int kBlockRowThreads = 512;  // block-per-row kernels
constexpr int64_t kWarpRowMaxCols = 1024;
// Register caps of the row kernels (64 per thread): 4 blocks of 256 or 2 blocks of 512 per SM, so each SM
// keeps 32 warps of loads in flight (these kernels are bandwidth-bound).
constexpr int row_block_threads(int row_threads) { return row_threads == 32 ? kWarpRowsBlock : kBlockRowThreads; }
constexpr int row_min_blocks(int row_threads) { return row_threads == 32 ? 4 : 2; }
#define LF_ROW_BOUNDS __launch_bounds__(row_block_threads(kRowThreads), row_min_blocks(kRowThreads))

// ---- activations --------------------------------------------------------------------------------------
template <typename T>
__device__ __forceinline__ T sigmoid(T x) {
    return T(1) / (T(1) + dexp(-x));
}

// Codes as layerforge::Activation: relu 0, sigmoid 1, tanh 2, gelu 3, gelu_tanh 4, leaky_relu 5.
template <typename T>
__device__ __forceinline__ T act_forward_one(int act, T v, T alpha) {
    const T kInvSqrt2 = T(0.70710678118654752440), kC = T(0.79788456080286535588);
    switch (act) {
        case 0: return v > T(0) ? v : (v != v ? v : T(0));  // NaN stays NaN
        case 1: return sigmoid(v);
        case 2: return dtanh(v);
        case 3: return T(0.5) * v * derfc(-v * kInvSqrt2);  // erfc: no cancellation for v << 0
        case 4: return v * sigmoid(T(2) * kC * (v + T(0.044715) * v * v * v));  // 0.5(1 + tanh u) = sigmoid(2u)
        default: return v > T(0) ? v : v * alpha;
    }
}

// s = the forward input x (relu, leaky_relu, gelu, gelu_tanh) or output y (sigmoid, tanh).
template <typename T>
__device__ __forceinline__ T act_backward_one(int act, T gy, T s, T alpha) {
    const T kInvSqrt2 = T(0.70710678118654752440), kInvSqrt2Pi = T(0.39894228040143267794),
            kC = T(0.79788456080286535588);
    switch (act) {
        case 0: return s > T(0) ? gy : T(0);
        case 1: return gy * s * (T(1) - s);
        case 2: return gy * (T(1) - s * s);
        case 3: {
            const T cdf = T(0.5) * derfc(-s * kInvSqrt2);
            const T pdf = kInvSqrt2Pi * dexp(T(-0.5) * s * s);
            return gy * (cdf + s * pdf);
        }
        case 4: {
            const T inner = kC * (s + T(0.044715) * s * s * s);
            const T sg = sigmoid(T(2) * inner);
            const T dinner = kC * (T(1) + T(3) * T(0.044715) * s * s);
            return gy * (sg + T(2) * s * sg * (T(1) - sg) * dinner);
        }
        default: return s > T(0) ? gy : gy * alpha;
    }
}

// out[i] = f(a[i]) (forward) or f'(a[i], s[i]) (backward: a = grad_y, s = saved), i < n. Each thread takes
// packs of N consecutive elements grid-stride; `vec` (all pointers 16-byte aligned) loads full packs as
// one vector, the ragged last pack element by element. out may alias a (same thread reads, then writes).
template <typename T>
__global__ void activation_kernel(int act, bool backward, const T* a, const T* s, T* out, int64_t n, T alpha,
                                  bool vec) {
    constexpr int N = Pack<T>::N;
    const int64_t packs = (n + N - 1) / N;
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    for (int64_t p = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; p < packs; p += stride) {
        const int64_t i = p * N;
        const bool full = vec && i + N <= n;
        T av[N], sv[N], ov[N];
        if (full) {
            ld(a + i, av);
            if (backward) ld(s + i, sv);
        } else {
#pragma unroll
            for (int j = 0; j < N; ++j) {
                av[j] = i + j < n ? a[i + j] : T(0);
                sv[j] = backward && i + j < n ? s[i + j] : T(0);
            }
        }
#pragma unroll
        for (int j = 0; j < N; ++j)
            ov[j] = backward ? act_backward_one(act, av[j], sv[j], alpha) : act_forward_one(act, av[j], alpha);
        if (full) {
            st(out + i, ov);
        } else {
#pragma unroll
            for (int j = 0; j < N; ++j)
                if (i + j < n) out[i + j] = ov[j];
        }
    }
}

// ---- row helpers ------------------------------------------------------------------------------------------
// f(c, a[c], b[c]) for the columns c of one row owned by thread `tid` of the `nthr` sharing it (b may be
// null: 0 is passed). vec: packs of N (row starts 16-byte aligned and C % N == 0), else single elements;
// either way consecutive threads read consecutive memory.
// av = a[c, c + N), bv = b[c, c + N) or zeros without b (one 16-byte pack each).
template <typename T, int N>
__device__ __forceinline__ void ld_pair(const T* a, const T* b, int64_t c, T (&av)[N], T (&bv)[N]) {
    ld(a + c, av);
    if (b) {
        ld(b + c, bv);
    } else {
#pragma unroll
        for (int j = 0; j < N; ++j) bv[j] = T(0);
    }
}

template <typename T, typename F>
__device__ __forceinline__ void for_row(const T* a, const T* b, int64_t C, bool vec, int tid, int nthr, F&& f) {
    constexpr int N = Pack<T>::N;
    if (vec) {
        for (int64_t c = static_cast<int64_t>(tid) * N; c < C; c += static_cast<int64_t>(nthr) * N) {
            T av[N], bv[N];
            ld_pair(a, b, c, av, bv);
#pragma unroll
            for (int j = 0; j < N; ++j) f(c + j, av[j], bv[j]);
        }
    } else {
        for (int64_t c = tid; c < C; c += nthr) f(c, a[c], b ? b[c] : T(0));
    }
}

// out[c] = f(c, a[c], b[c]) over one row, distributed as for_row (vector stores when vec).
template <typename T, typename F>
__device__ __forceinline__ void map_row(const T* a, const T* b, T* out, int64_t C, bool vec, int tid, int nthr,
                                        F&& f) {
    constexpr int N = Pack<T>::N;
    if (vec) {
        for (int64_t c = static_cast<int64_t>(tid) * N; c < C; c += static_cast<int64_t>(nthr) * N) {
            T av[N], bv[N], ov[N];
            ld_pair(a, b, c, av, bv);
#pragma unroll
            for (int j = 0; j < N; ++j) ov[j] = f(c + j, av[j], bv[j]);
            st(out + c, ov);
        }
    } else {
        for (int64_t c = tid; c < C; c += nthr) out[c] = f(c, a[c], b ? b[c] : T(0));
    }
}

// out[c] = value over one row.
template <typename T>
__device__ __forceinline__ void fill_row(T* out, int64_t C, T value, int tid, int nthr) {
    for (int64_t c = tid; c < C; c += nthr) out[c] = value;
}

// Rows of a row kernel: kRowThreads threads per row (32: a warp, rows_per_block = blockDim.x / 32; else the
// whole block, one row at a time), grid-stride. Calls body(r, tid) with tid the thread's index in its row.
template <int kRowThreads, typename F>
__device__ __forceinline__ void for_each_row(int64_t rows, F&& body) {
    const int rows_per_block = blockDim.x / kRowThreads;
    const int tid = threadIdx.x % kRowThreads;
    const int64_t step = static_cast<int64_t>(gridDim.x) * rows_per_block;
    for (int64_t r = static_cast<int64_t>(blockIdx.x) * rows_per_block + threadIdx.x / kRowThreads; r < rows;
         r += step)
        body(r, tid);
}

// ---- reduction values ----------------------------------------------------------------------------------------
template <typename T>
struct Sum {
    __device__ T operator()(T a, T b) const { return a + b; }
};

// Online softmax state of a set of values: max m and s = sum exp(x - m). The empty / all -inf state is
// (-inf, 0) and contributes nothing; a NaN makes s NaN; a +inf makes s NaN (exp(inf - inf)), as the
// two-pass CPU kernel, whose max would be inf. m itself is never NaN.
template <typename T>
struct MaxSum {
    T m, s;
    __device__ void add(T x) {
        if (x > m) {
            s = s * dexp(m - x) + (x == inf<T>() ? nan<T>() : T(1));
            m = x;
        } else if (x != -inf<T>()) {
            s += dexp(x - m);  // NaN x: s becomes NaN
        }
    }
};
template <typename T>
__device__ __forceinline__ MaxSum<T> combine(MaxSum<T> a, MaxSum<T> b) {
    const T m = a.m > b.m ? a.m : b.m;
    const T sa = a.m == -inf<T>() ? T(0) : a.s * dexp(a.m - m);
    const T sb = b.m == -inf<T>() ? T(0) : b.s * dexp(b.m - m);
    return {m, sa + sb};
}
template <typename T>
__device__ __forceinline__ MaxSum<T> shfl_xor(MaxSum<T> v, int mask) {
    return {ew::shfl_xor(v.m, mask), ew::shfl_xor(v.s, mask)};
}
template <typename T>
struct CombineMaxSum {
    __device__ MaxSum<T> operator()(MaxSum<T> a, MaxSum<T> b) const { return combine(a, b); }
};

// Cross-entropy: the online softmax state plus d = sum_c w_c x_c (sum_c x_c without weight).
template <typename T>
struct MaxSumDot {
    MaxSum<T> ms;
    T d;
};
template <typename T>
__device__ __forceinline__ MaxSumDot<T> shfl_xor(MaxSumDot<T> v, int mask) {
    return {shfl_xor(v.ms, mask), ew::shfl_xor(v.d, mask)};
}
template <typename T>
struct CombineMaxSumDot {
    __device__ MaxSumDot<T> operator()(MaxSumDot<T> a, MaxSumDot<T> b) const { return {combine(a.ms, b.ms), a.d + b.d}; }
};

// Two sums at once (layer-norm backward).
template <typename T>
struct Sum2 {
    T a, b;
};
template <typename T>
__device__ __forceinline__ Sum2<T> shfl_xor(Sum2<T> v, int mask) {
    return {ew::shfl_xor(v.a, mask), ew::shfl_xor(v.b, mask)};
}
template <typename T>
struct AddSum2 {
    __device__ Sum2<T> operator()(Sum2<T> x, Sum2<T> y) const { return {x.a + y.a, x.b + y.b}; }
};

// ---- softmax ----------------------------------------------------------------------------------------------------
// x, y (rows, C). Pass 1: online max/sum over the row; pass 2: y = exp(x - m) / s, or x - (m + log s).
template <typename T, int kRowThreads>
__global__ void LF_ROW_BOUNDS softmax_forward_kernel(const T* x, T* y, int64_t rows, int64_t C, bool log, bool vec) {
    __shared__ MaxSum<T> smem[32];
    for_each_row<kRowThreads>(rows, [&](int64_t r, int tid) {
        const T* xr = x + r * C;
        T* yr = y + r * C;
        MaxSum<T> acc{-inf<T>(), T(0)};
        for_row(xr, static_cast<const T*>(nullptr), C, vec, tid, kRowThreads, [&](int64_t, T v, T) { acc.add(v); });
        acc = row_allreduce<kRowThreads>(acc, CombineMaxSum<T>(), MaxSum<T>{-inf<T>(), T(0)}, smem);
        if (log) {
            const T lse = acc.m + dlog(acc.s);
            map_row(xr, static_cast<const T*>(nullptr), yr, C, vec, tid, kRowThreads,
                    [&](int64_t, T v, T) { return v - lse; });
        } else {
            const T inv = T(1) / acc.s;
            const T m = acc.m;
            map_row(xr, static_cast<const T*>(nullptr), yr, C, vec, tid, kRowThreads,
                    [&](int64_t, T v, T) { return dexp(v - m) * inv; });
        }
    });
}

// grad_x from grad_y g and the forward output y: softmax y (g - sum g y); log_softmax g - exp(y) sum g.
template <typename T, int kRowThreads>
__global__ void LF_ROW_BOUNDS softmax_backward_kernel(const T* gy, const T* y, T* gx, int64_t rows, int64_t C, bool log,
                                        bool vec) {
    __shared__ T smem[32];
    for_each_row<kRowThreads>(rows, [&](int64_t r, int tid) {
        const T* g = gy + r * C;
        const T* yr = y + r * C;
        T acc = T(0);
        for_row(g, log ? nullptr : yr, C, vec, tid, kRowThreads, [&](int64_t, T gv, T yv) { acc += log ? gv : gv * yv; });
        const T s = row_allreduce<kRowThreads>(acc, Sum<T>(), T(0), smem);
        if (log)
            map_row(g, yr, gx + r * C, C, vec, tid, kRowThreads, [&](int64_t, T gv, T yv) { return gv - dexp(yv) * s; });
        else
            map_row(g, yr, gx + r * C, C, vec, tid, kRowThreads, [&](int64_t, T gv, T yv) { return yv * (gv - s); });
    });
}

// ---- cross-entropy -------------------------------------------------------------------------------------------------
// One block: stats (4,) float64 = [first bad row or -1, valid rows, sum of w[t] over them, sum of w].
// Per-thread partials in a fixed order, then a fixed tree: deterministic.
constexpr int kStatsThreads = 1024;
__global__ void xent_stats_kernel(const int64_t* t, const void* weight, bool w64, int64_t N, int64_t C,
                                  int64_t ignore, double* stats) {
    __shared__ double smem_d[32];
    __shared__ double smem_w[32];
    __shared__ double smem_bad[32];
    double count = 0, wsum = 0, wtotal = 0;
    double bad = static_cast<double>(N);  // min over bad rows; N = none
    auto wt = [&](int64_t c) -> double {
        return w64 ? static_cast<const double*>(weight)[c] : double(static_cast<const float*>(weight)[c]);
    };
    for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
        const int64_t ti = t[i];
        if (ti == ignore) continue;
        if (ti < 0 || ti >= C) {
            bad = fmin(bad, double(i));
            continue;
        }
        count += 1;
        wsum += weight ? wt(ti) : 1.0;
    }
    for (int64_t c = threadIdx.x; c < C; c += blockDim.x) wtotal += weight ? wt(c) : 1.0;
    count = row_allreduce<kStatsThreads>(count, Sum<double>(), 0.0, smem_d);
    wsum = row_allreduce<kStatsThreads>(wsum, Sum<double>(), 0.0, smem_w);
    wtotal = row_allreduce<kStatsThreads>(wtotal, Sum<double>(), 0.0, smem_d);
    struct Min {
        __device__ double operator()(double a, double b) const { return fmin(a, b); }
    };
    bad = row_allreduce<kStatsThreads>(bad, Min(), double(N), smem_bad);
    if (threadIdx.x == 0) {
        stats[0] = bad < double(N) ? bad : -1.0;
        stats[1] = count;
        stats[2] = wsum;
        stats[3] = wtotal;
    }
}

// logits x (N, C), targets t (N), weight w (C) or null. Per row: nll = w_t (lse - x_t), smooth =
// sum_c w_c (lse - x_c), grad = a w_t (p - onehot_t) + b (W p - w) (see elementwise.h); ignored rows 0,
// rows with a bad target NaN (never read out of bounds).
template <typename T, int kRowThreads>
__global__ void LF_ROW_BOUNDS xent_kernel(const T* x, const int64_t* t, const T* w, T* nll, T* smooth, T* grad, int64_t N,
                            int64_t C, int64_t ignore, T ta, T tb, T W, bool vec) {
    __shared__ MaxSumDot<T> smem[32];
    for_each_row<kRowThreads>(N, [&](int64_t r, int tid) {
        const T* xr = x + r * C;
        T* gr = grad ? grad + r * C : nullptr;
        const int64_t ti = t[r];
        if (ti == ignore || ti < 0 || ti >= C) {  // uniform over the threads of the row
            const T fill = ti == ignore ? T(0) : nan<T>();
            if (tid == 0) {
                nll[r] = fill;
                if (smooth) smooth[r] = fill;
            }
            if (gr) fill_row(gr, C, fill, tid, kRowThreads);
            return;
        }
        MaxSumDot<T> acc{{-inf<T>(), T(0)}, T(0)};
        for_row(xr, static_cast<const T*>(nullptr), C, vec, tid, kRowThreads, [&](int64_t c, T v, T) {
            acc.ms.add(v);
            acc.d += w ? w[c] * v : v;
        });
        acc = row_allreduce<kRowThreads>(acc, CombineMaxSumDot<T>(), MaxSumDot<T>{{-inf<T>(), T(0)}, T(0)}, smem);
        const T m = acc.ms.m, sum = acc.ms.s;
        const T lse = m + dlog(sum);
        const T wt = w ? w[ti] : T(1);
        if (tid == 0) {
            nll[r] = wt * (lse - xr[ti]);
            if (smooth) smooth[r] = lse * W - acc.d;  // W = C without weight
        }
        if (gr) {
            const T coef = (ta * wt + tb * W) / sum;  // p_c = exp(x_c - m) / sum
            const T at = ta * wt;
            map_row(xr, static_cast<const T*>(nullptr), gr, C, vec, tid, kRowThreads, [&](int64_t c, T v, T) {
                const T g = coef * dexp(v - m) - tb * (w ? w[c] : T(1));
                return c == ti ? g - at : g;
            });
        }
    });
}

// ---- layer norm ------------------------------------------------------------------------------------------------------
// x, y (R, D); w, b (D) or null; mean, rstd (R). Two-pass statistics (mean, then the centred sum of squares,
// as the CPU kernel), then y; the row is re-read from cache.
template <typename T, int kRowThreads>
__global__ void LF_ROW_BOUNDS layer_norm_forward_kernel(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t R,
                                          int64_t D, T eps, bool vec) {
    __shared__ T smem[32];
    for_each_row<kRowThreads>(R, [&](int64_t r, int tid) {
        const T* xr = x + r * D;
        T s = T(0);
        for_row(xr, static_cast<const T*>(nullptr), D, vec, tid, kRowThreads, [&](int64_t, T v, T) { s += v; });
        const T mu = row_allreduce<kRowThreads>(s, Sum<T>(), T(0), smem) / T(D);
        T q = T(0);
        for_row(xr, static_cast<const T*>(nullptr), D, vec, tid, kRowThreads, [&](int64_t, T v, T) {
            const T d = v - mu;
            q += d * d;
        });
        const T rs = T(1) / dsqrt(row_allreduce<kRowThreads>(q, Sum<T>(), T(0), smem) / T(D) + eps);
        if (tid == 0) {
            mean[r] = mu;
            rstd[r] = rs;
        }
        map_row(xr, static_cast<const T*>(nullptr), y + r * D, D, vec, tid, kRowThreads, [&](int64_t c, T v, T) {
            T o = (v - mu) * rs;
            if (w) o *= w[c];
            if (b) o += b[c];
            return o;
        });
    });
}

// grad_x per row: xh = (x - mean) rstd, gxh = g w; gx = rstd (gxh - mean(gxh) - xh mean(gxh xh)).
template <typename T, int kRowThreads>
__global__ void LF_ROW_BOUNDS layer_norm_backward_kernel(const T* gy, const T* x, const T* mean, const T* rstd, const T* w,
                                           T* gx, int64_t R, int64_t D, bool vec) {
    __shared__ Sum2<T> smem[32];
    for_each_row<kRowThreads>(R, [&](int64_t r, int tid) {
        const T* g = gy + r * D;
        const T* xr = x + r * D;
        const T mu = mean[r], rs = rstd[r];
        Sum2<T> acc{T(0), T(0)};
        for_row(g, xr, D, vec, tid, kRowThreads, [&](int64_t c, T gv, T xv) {
            const T gxh = w ? gv * w[c] : gv;
            acc.a += gxh;
            acc.b += gxh * ((xv - mu) * rs);
        });
        acc = row_allreduce<kRowThreads>(acc, AddSum2<T>(), Sum2<T>{T(0), T(0)}, smem);
        const T m1 = acc.a / T(D), m2 = acc.b / T(D);
        map_row(g, xr, gx + r * D, D, vec, tid, kRowThreads, [&](int64_t c, T gv, T xv) {
            const T gxh = w ? gv * w[c] : gv;
            return rs * (gxh - m1 - ((xv - mu) * rs) * m2);
        });
    });
}

// Column partial sums of grad_weight (g xh) and grad_bias (g) over one chunk of rows: block (32, 8) covers 32
// adjacent columns (coalesced) and the chunk's rows in steps of 8; the 8 row lanes are summed in order.
// pw / pb (nchunks, D), either may be null.
constexpr int kColTile = 32, kRowLanes = 8;
template <typename T>
__global__ void layer_norm_param_partials_kernel(const T* gy, const T* x, const T* mean, const T* rstd,
                                                 int64_t R, int64_t D, int64_t rows_per_chunk, T* pw, T* pb) {
    __shared__ T sw[kRowLanes][kColTile + 1];
    __shared__ T sb[kRowLanes][kColTile + 1];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int64_t c = static_cast<int64_t>(blockIdx.x) * kColTile + tx;
    const int64_t chunk = blockIdx.y;
    const int64_t r0 = chunk * rows_per_chunk;
    const int64_t r1 = r0 + rows_per_chunk < R ? r0 + rows_per_chunk : R;
    T aw = T(0), ab = T(0);
    if (c < D) {
        for (int64_t r = r0 + ty; r < r1; r += kRowLanes) {
            const T g = gy[r * D + c];
            aw += g * (x[r * D + c] - mean[r]) * rstd[r];
            ab += g;
        }
    }
    sw[ty][tx] = aw;
    sb[ty][tx] = ab;
    __syncthreads();
    if (ty == 0 && c < D) {
        T a = T(0), bsum = T(0);
#pragma unroll
        for (int k = 0; k < kRowLanes; ++k) {
            a += sw[k][tx];
            bsum += sb[k][tx];
        }
        if (pw) pw[chunk * D + c] = a;
        if (pb) pb[chunk * D + c] = bsum;
    }
}

// gw[c] = sum over chunks of pw[k, c] in chunk order (likewise gb); one thread per column.
template <typename T>
__global__ void layer_norm_param_final_kernel(const T* pw, const T* pb, int64_t nchunks, int64_t D, T* gw, T* gb) {
    const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
    for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < D; c += stride) {
        T a = T(0), bsum = T(0);
        for (int64_t k = 0; k < nchunks; ++k) {
            if (gw) a += pw[k * D + c];
            if (gb) bsum += pb[k * D + c];
        }
        if (gw) gw[c] = a;
        if (gb) gb[c] = bsum;
    }
}

// Row chunks of the parameter-gradient reduction: at least 64 rows each, at most 256 chunks; a function of
// R only, so the summation order (and the result) never depends on the device.
int64_t ln_rows_per_chunk(int64_t R) {
    const int64_t kMaxChunks = 256, kMinRows = 64;
    const int64_t per = (R + kMaxChunks - 1) / kMaxChunks;
    return per > kMinRows ? per : kMinRows;
}
int64_t ln_chunks(int64_t R) {
    const int64_t n = (R + ln_rows_per_chunk(R) - 1) / ln_rows_per_chunk(R);
    return n > 0 ? n : 1;
}

// ---- host side --------------------------------------------------------------------------------------------------
// Rows of C elements at base pointers `ptrs` start 16-byte aligned when every base is and C is a multiple
// of the pack.
template <typename T>
bool rows_vectorizable(int64_t C, std::initializer_list<const void*> ptrs) {
    if (C % Pack<T>::N != 0) return false;
    for (const void* p : ptrs)
        if (p && !aligned16(p)) return false;
    return true;
}

// Launches a row kernel in the warp-per-row configuration (C <= 1024: blocks of 256 threads = 8 rows) or
// the block-per-row one (512 threads per row) for rows of C columns.
template <typename Warp, typename Block, typename... Args>
void launch_rows(const char* name, Warp warp_kernel, Block block_kernel, int64_t rows, int64_t C, void* stream,
                 Args... args) {
    if (C <= kWarpRowMaxCols) {
        const int64_t rows_per_block = kWarpRowsBlock / 32;
        warp_kernel<<<grid_for(rows, rows_per_block), kWarpRowsBlock, 0, as_stream(stream)>>>(args...);
    } else {
        block_kernel<<<grid_for(rows, 1), kBlockRowThreads, 0, as_stream(stream)>>>(args...);
    }
    check_launch(name);
}

template <typename T>
void activation_impl(int act, bool backward, const View& a, const View* s, const View& out, double alpha,
                     void* stream) {
    const int64_t n = a.numel();
    if (n == 0) return;
    const T* sp = s ? s->ptr<T>() : nullptr;
    const bool vec = aligned16(a.data) && aligned16(out.data) && (!sp || aligned16(sp));
    activation_kernel<T><<<grid_for((n + Pack<T>::N - 1) / Pack<T>::N, 256), 256, 0, as_stream(stream)>>>(
        act, backward, a.ptr<T>(), sp, out.ptr<T>(), n, T(alpha), vec);
    check_launch(backward ? "activation_backward_kernel" : "activation_forward_kernel");
}

template <typename T>
void softmax_forward_impl(const View& x, const View& y, int64_t rows, int64_t C, bool log, void* stream) {
    const bool vec = rows_vectorizable<T>(C, {x.data, y.data});
    launch_rows("softmax_forward_kernel", softmax_forward_kernel<T, 32>, softmax_forward_kernel<T, kBlockRowThreads>,
                rows, C, stream, x.ptr<T>(), y.ptr<T>(), rows, C, log, vec);
}

template <typename T>
void softmax_backward_impl(const View& gy, const View& y, const View& gx, int64_t rows, int64_t C, bool log,
                           void* stream) {
    const bool vec = rows_vectorizable<T>(C, {gy.data, y.data, gx.data});
    launch_rows("softmax_backward_kernel", softmax_backward_kernel<T, 32>,
                softmax_backward_kernel<T, kBlockRowThreads>, rows, C, stream, gy.ptr<T>(), y.ptr<T>(), gx.ptr<T>(),
                rows, C, log, vec);
}

template <typename T>
T* opt_ptr(const View* v) {
    return v ? v->ptr<T>() : nullptr;
}

template <typename T>
void xent_impl(const View& x, const int64_t* t, const View* w, int64_t ignore, const View& nll, const View* smooth,
               const View* grad, double a, double b, double W, int64_t N, int64_t C, void* stream) {
    const bool vec = rows_vectorizable<T>(C, {x.data, grad ? grad->data : nullptr});
    launch_rows("cross_entropy_kernel", xent_kernel<T, 32>, xent_kernel<T, kBlockRowThreads>, N, C, stream,
                x.ptr<T>(), t, opt_ptr<T>(w), nll.ptr<T>(), opt_ptr<T>(smooth), opt_ptr<T>(grad), N, C, ignore,
                T(a), T(b), T(W), vec);
}

template <typename T>
void layer_norm_forward_impl(const View& x, const View* w, const View* b, double eps, const View& y,
                             const View& mean, const View& rstd, int64_t R, int64_t D, void* stream) {
    const bool vec = rows_vectorizable<T>(D, {x.data, y.data});
    launch_rows("layer_norm_forward_kernel", layer_norm_forward_kernel<T, 32>,
                layer_norm_forward_kernel<T, kBlockRowThreads>, R, D, stream, x.ptr<T>(), opt_ptr<T>(w),
                opt_ptr<T>(b), y.ptr<T>(), mean.ptr<T>(), rstd.ptr<T>(), R, D, T(eps), vec);
}

template <typename T>
void layer_norm_backward_impl(const View& gy, const View& x, const View& mean, const View& rstd, const View* w,
                              const View& gx, const View* gw, const View* gb, const View* ws, int64_t R,
                              int64_t D, void* stream) {
    if (R > 0 && D > 0) {
        const bool vec = rows_vectorizable<T>(D, {gy.data, x.data, gx.data});
        launch_rows("layer_norm_backward_kernel", layer_norm_backward_kernel<T, 32>,
                    layer_norm_backward_kernel<T, kBlockRowThreads>, R, D, stream, gy.ptr<T>(), x.ptr<T>(),
                    mean.ptr<T>(), rstd.ptr<T>(), opt_ptr<T>(w), gx.ptr<T>(), R, D, vec);
    }
    if ((!gw && !gb) || D == 0) return;
    const int64_t nchunks = ln_chunks(R), per = ln_rows_per_chunk(R);
    T* pw = gw ? ws->ptr<T>() : nullptr;
    T* pb = gb ? ws->ptr<T>() + nchunks * D : nullptr;
    const dim3 grid(static_cast<unsigned>((D + kColTile - 1) / kColTile), static_cast<unsigned>(nchunks));
    layer_norm_param_partials_kernel<T><<<grid, dim3(kColTile, kRowLanes), 0, as_stream(stream)>>>(
        gy.ptr<T>(), x.ptr<T>(), mean.ptr<T>(), rstd.ptr<T>(), R, D, per, pw, pb);
    check_launch("layer_norm_param_partials_kernel");
    layer_norm_param_final_kernel<T><<<grid_for(D, 256), 256, 0, as_stream(stream)>>>(pw, pb, nchunks, D,
                                                                                      opt_ptr<T>(gw), opt_ptr<T>(gb));
    check_launch("layer_norm_param_final_kernel");
}

}  // namespace
}  // namespace ew

// ---- entry points: validate, then dispatch on the dtype ------------------------------------------------------------
// The checks are the CPU's (layerforge/detail/elementwise_checks.h); only float32 / float64 pass them.
#define LF_EW_DISPATCH(dtype, ...)            \
    do {                                      \
        if ((dtype) == DType::f32) {          \
            using T = float;                  \
            __VA_ARGS__;                      \
        } else {                              \
            using T = double;                 \
            __VA_ARGS__;                      \
        }                                     \
    } while (0)

void activation_forward(Activation act, const View& x, const View& y, double alpha, void* stream) {
    detail::check_activation(x, y);
    LF_EW_DISPATCH(x.dtype, ew::activation_impl<T>(int(act), false, x, nullptr, y, alpha, stream));
}

void activation_backward(Activation act, const View& gy, const View& s, const View& gx, double alpha,
                         void* stream) {
    detail::check_activation_backward(gy, s, gx);
    LF_EW_DISPATCH(gy.dtype, ew::activation_impl<T>(int(act), true, gy, &s, gx, alpha, stream));
}

void softmax_forward(const View& x, const View& y, bool log, void* stream) {
    const detail::RowsCols rc = detail::check_softmax(x, y, log);
    if (x.numel() == 0) return;
    LF_EW_DISPATCH(x.dtype, ew::softmax_forward_impl<T>(x, y, rc.rows, rc.cols, log, stream));
}

void softmax_backward(const View& gy, const View& y, const View& gx, bool log, void* stream) {
    const detail::RowsCols rc = detail::check_softmax_backward(gy, y, gx, log);
    if (gy.numel() == 0) return;
    LF_EW_DISPATCH(gy.dtype, ew::softmax_backward_impl<T>(gy, y, gx, rc.rows, rc.cols, log, stream));
}

namespace {
void check_targets(const View& t, int64_t N, const char* op) {
    if (t.dtype != DType::i64)
        throw DTypeError(std::string(op) + ": targets must be int64, got " + dtype_name(t.dtype));
    if (t.ndim != 1 || !t.is_contiguous())
        throw ValueError(std::string(op) + ": targets must be a contiguous 1-d array, got shape " + t.shape_str());
    if (N >= 0 && t.shape[0] != N)
        throw ValueError(std::string(op) + ": targets has " + std::to_string(t.shape[0]) + " entries for " +
                         std::to_string(N) + " rows of logits");
}
}  // namespace

void cross_entropy_target_stats(const View& targets, const View* weight, int64_t ignore_index, int64_t num_classes,
                                const View& stats, void* stream) {
    const char* op = "cross_entropy";
    check_targets(targets, -1, op);
    if (weight) {
        detail::check_float(*weight, op);
        detail::check_like(*weight, *weight, op, "weight", false);
        if (weight->numel() != num_classes)
            throw ValueError(std::string(op) + ": weight has shape " + weight->shape_str() + ", expected (" +
                             std::to_string(num_classes) + ",)");
    }
    if (stats.dtype != DType::f64 || stats.numel() != 4 || !stats.is_contiguous())
        throw ValueError(std::string(op) + ": stats must be a contiguous float64 array of 4 elements");
    ew::xent_stats_kernel<<<1, ew::kStatsThreads, 0, ew::as_stream(stream)>>>(
        targets.ptr<int64_t>(), weight ? weight->data : nullptr, weight && weight->dtype == DType::f64,
        targets.shape[0], num_classes, ignore_index, stats.ptr<double>());
    check_launch("cross_entropy_stats_kernel");
}

void cross_entropy_forward(const View& x, const View& targets, const View* weight, int64_t ignore_index,
                           const View& nll, const View* smooth, const View* grad, double a, double b,
                           double weight_sum, void* stream) {
    const detail::RowsCols rc = detail::check_cross_entropy(x, weight, nll, smooth, grad);
    check_targets(targets, rc.rows, "cross_entropy");
    if (rc.rows == 0) return;
    // C == 0: every row's target is bad or ignored; the kernel then never reads logits.
    LF_EW_DISPATCH(x.dtype, ew::xent_impl<T>(x, targets.ptr<int64_t>(), weight, ignore_index, nll, smooth, grad, a,
                                             b, weight ? weight_sum : double(rc.cols), rc.rows, rc.cols, stream));
}

void layer_norm_forward(const View& x, const View* w, const View* b, double eps, const View& y, const View& mean,
                        const View& rstd, void* stream) {
    const detail::RowsCols rc = detail::check_layer_norm(x, w, b, y, mean, rstd);
    if (x.numel() == 0) return;
    LF_EW_DISPATCH(x.dtype, ew::layer_norm_forward_impl<T>(x, w, b, eps, y, mean, rstd, rc.rows, rc.cols, stream));
}

int64_t layer_norm_backward_workspace(int64_t rows, int64_t cols) {
    if (rows < 0 || cols < 0) throw ValueError("layer_norm_backward_workspace: negative size");
    return 2 * ew::ln_chunks(rows) * cols;
}

void layer_norm_backward(const View& gy, const View& x, const View& mean, const View& rstd, const View* w,
                         const View& gx, const View* gw, const View* gb, const View* workspace, void* stream) {
    const char* op = "layer_norm_backward";
    const detail::RowsCols rc = detail::check_layer_norm_backward(gy, x, mean, rstd, w, gx, gw, gb);
    if (gw || gb) {
        const int64_t need = layer_norm_backward_workspace(rc.rows, rc.cols);
        if (!workspace)
            throw ValueError(std::string(op) + ": a workspace of " + std::to_string(need) +
                             " elements is required for grad_weight / grad_bias");
        detail::check_like(*workspace, x, op, "workspace", false);
        if (workspace->numel() < need)
            throw ValueError(std::string(op) + ": workspace has " + std::to_string(workspace->numel()) +
                             " elements, needs " + std::to_string(need));
    }
    LF_EW_DISPATCH(x.dtype, ew::layer_norm_backward_impl<T>(gy, x, mean, rstd, w, gx, gw, gb, workspace, rc.rows,
                                                            rc.cols, stream));
}

}  // namespace cuda
}  // namespace layerforge
