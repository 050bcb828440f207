// Device helpers shared by elementwise.cu and optim.cu: 16-byte packs (float4 / double2), math overloads
// that pick the float or double function explicitly, deterministic warp/block all-reductions, and grid
// sizing. Internal to csrc/cuda.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <limits>

namespace layerforge {
namespace cuda {
namespace ew {

// ---- 16-byte packs -------------------------------------------------------------------------------------
template <typename T>
struct Pack;
template <>
struct Pack<float> {
    static constexpr int N = 4;
};
template <>
struct Pack<double> {
    static constexpr int N = 2;
};

// p must be 16-byte aligned (the callers check the base pointers on the host and only ever offset them
// by multiples of N elements).
__device__ __forceinline__ void ld(const float* p, float (&v)[4]) {
    const float4 u = *reinterpret_cast<const float4*>(p);
    v[0] = u.x;
    v[1] = u.y;
    v[2] = u.z;
    v[3] = u.w;
}
__device__ __forceinline__ void ld(const double* p, double (&v)[2]) {
    const double2 u = *reinterpret_cast<const double2*>(p);
    v[0] = u.x;
    v[1] = u.y;
}
__device__ __forceinline__ void st(float* p, const float (&v)[4]) {
    *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
}
__device__ __forceinline__ void st(double* p, const double (&v)[2]) {
    *reinterpret_cast<double2*>(p) = make_double2(v[0], v[1]);
}

inline bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// ---- math: explicit float / double versions (accurate ones: the build does not use --use_fast_math) --------
__device__ __forceinline__ float dexp(float x) { return expf(x); }
__device__ __forceinline__ double dexp(double x) { return exp(x); }
__device__ __forceinline__ float dlog(float x) { return logf(x); }
__device__ __forceinline__ double dlog(double x) { return log(x); }
__device__ __forceinline__ float dsqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double dsqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float dtanh(float x) { return tanhf(x); }
__device__ __forceinline__ double dtanh(double x) { return tanh(x); }
__device__ __forceinline__ float derfc(float x) { return erfcf(x); }
__device__ __forceinline__ double derfc(double x) { return erfc(x); }

template <typename T>
__device__ __forceinline__ T inf() {
    return std::numeric_limits<T>::infinity();
}
template <typename T>
__device__ __forceinline__ T nan() {
    return std::numeric_limits<T>::quiet_NaN();
}

// ---- deterministic all-reductions ------------------------------------------------------------------------
// Butterfly (xor) shuffles: every lane ends with the same value, since each lane combines the same pairs,
// only with operands swapped, and every combine used here is commutative. The combine order is fixed, so
// results repeat bit for bit from run to run.
__device__ __forceinline__ float shfl_xor(float v, int m) { return __shfl_xor_sync(0xffffffffu, v, m); }
__device__ __forceinline__ double shfl_xor(double v, int m) { return __shfl_xor_sync(0xffffffffu, v, m); }

template <typename V, typename Op>
__device__ __forceinline__ V warp_allreduce(V v, Op op) {
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) v = op(v, shfl_xor(v, m));
    return v;
}

// Reduce v over the kRowThreads threads that share a row: one warp (kRowThreads == 32: shuffles only), or
// the whole block (kRowThreads == blockDim.x, a multiple of 32 up to 1024: warps reduce, lane 0 of each
// writes smem[warp], and every warp reduces the per-warp values, so all threads get the same result).
// The leading __syncthreads protects smem from the previous reduction's readers; every thread of the block
// must call it (the row loops are uniform over the block when kRowThreads == blockDim.x).
template <int kRowThreads, typename V, typename Op>
__device__ __forceinline__ V row_allreduce(V v, Op op, V identity, V* smem) {
    v = warp_allreduce(v, op);
    if constexpr (kRowThreads > 32) {
        const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
        __syncthreads();
        if (lane == 0) smem[warp] = v;
        __syncthreads();
        v = lane < kRowThreads / 32 ? smem[lane] : identity;
        v = warp_allreduce(v, op);
    }
    return v;
}

// ---- launch configuration ------------------------------------------------------------------------------------
// Blocks for `items` work items of `per_block` each, capped: kernels loop grid-stride over the rest, so any
// 64-bit count works with a legal grid.
inline unsigned grid_for(int64_t items, int64_t per_block) {
    const int64_t kMaxBlocks = int64_t(1) << 20;
    int64_t b = (items + per_block - 1) / per_block;
    if (b < 1) b = 1;
    if (b > kMaxBlocks) b = kMaxBlocks;
    return static_cast<unsigned>(b);
}

inline cudaStream_t as_stream(void* s) { return static_cast<cudaStream_t>(s); }

}  // namespace ew
}  // namespace cuda
}  // namespace layerforge
