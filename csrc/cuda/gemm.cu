// CUDA GEMM: C[b] = alpha * A[b] @ B[b] + beta * C[b] on operands of any element strides, and numpy-style
// batched matmul on top of it (declared in layerforge/gemm.h, namespace layerforge::cuda).
//
// Three kernels, chosen per dtype and shape in dispatch() below:
//  * sgemm_kernel<BM, BN> — float32 on the FMA units (exact float32 products). Block tile BM x BN x 8,
//    256 threads, each owning a (BM/16) x (BN/16) tile of C in registers (8x8 for 128x128) made of 4x4
//    sub-tiles spread 16 rows / 32 columns apart, so a warp's shared-memory fragment reads are
//    conflict-free float4s. Shared memory is double-buffered: the next k-tile is fetched into registers
//    while the current one is multiplied, then stored to the other buffer (one barrier per k-tile).
//    64x64 tiles (4x4 per thread) and split-K (partial products into a workspace, then summed in a fixed
//    order: deterministic) keep small problems from leaving most SMs idle.
//  * tc_gemm_kernel<T, A_KMAJOR, B_KMAJOR> — tensor cores (sm_80+: mma.sync), T = half / bfloat16
//    (m16n8k16) or float as TF32 (m16n8k8), float32 accumulators. Block tile 128x128, 4 warps of 64x64,
//    64 bytes of K per stage, 4 stages of cp.async (global -> shared without registers). Each operand
//    sits in shared memory with its unit-stride axis contiguous: K-major ([rows][k]) is read by ldmatrix,
//    MN-major ([k][rows]) by ldmatrix.trans (16-bit) or by scalar loads (TF32: ldmatrix.trans moves
//    16-bit elements only). Row paddings of 16 bytes make every ldmatrix phase and cp.async conflict-free.
//  * dgemm_kernel — float64: a plain 64x64x16 tiled kernel (correctness, not speed: float64 is the
//    gradient-check dtype here, and consumer GPUs / tensor cores are not about it).
// Any stride works in every kernel: an operand whose unit-stride axis is not aligned for vector loads
// (or has none: transposed-and-sliced, negative, broadcast) is gathered element by element into the same
// shared-memory layout, bounds-checked; edge tiles are zero-filled on load and masked on store.
// Offsets are 64-bit everywhere; grid.x enumerates tiles (grouped order for L2 reuse), grid.z the batch
// (looping past 65535).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>
#include <string>

#include "check.cuh"
#include "layerforge/error.h"
#include "layerforge/gemm.h"
#include "layerforge/matmul_batch.h"

namespace layerforge {
namespace cuda {

namespace {

// One GEMM problem as a kernel sees it (passed by value). Element (m, k) of A[b] is at
// A + b*bs_a + m*rs_a + k*cs_a, likewise B (k, n) and C (m, n).
struct GemmParams {
    int64_t M, N, K, batch;
    const void* A;
    int64_t bs_a, rs_a, cs_a;
    const void* B;
    int64_t bs_b, rs_b, cs_b;
    void* C;
    int64_t bs_c, rs_c, cs_c;
    float alpha, beta;
    int64_t tiles_m, tiles_n;
    // Split-K (FMA kernel only; 1 elsewhere): grid z-index zb = b * splits + s multiplies k in
    // [s * k_split, min(K, (s + 1) * k_split)) and writes C + zb * bs_c (the workspace when splits > 1).
    int64_t splits, k_split;
};

constexpr int64_t kMaxGridZ = 65535;

// Tile `tile` of a tiles_m x tiles_n grid, in groups of kGroup tile-rows walked column by column: blocks
// resident together share A rows and B columns, so L2 serves most of their loads (Triton's ordering).
__device__ __forceinline__ void tile_coords(int64_t tile, int64_t tiles_m, int64_t tiles_n, int64_t& tm,
                                            int64_t& tn) {
    constexpr int64_t kGroup = 8;
    const int64_t per_group = kGroup * tiles_n;
    const int64_t g = tile / per_group;
    const int64_t first_m = g * kGroup;
    const int64_t rows_in_group = min(tiles_m - first_m, kGroup);
    const int64_t r = tile - g * per_group;  // < rows_in_group * tiles_n
    tm = first_m + r % rows_in_group;
    tn = r / rows_in_group;
}

template <typename T>
__device__ __forceinline__ const T* offset_ptr(const void* p, int64_t elems) {
    return static_cast<const T*>(p) + elems;
}

// ====================================================================== float32 FMA kernel
namespace simt {

constexpr int kThreads = 256;
constexpr int kBK = 8;
constexpr int kPad = 4;  // floats: keeps rows 16-byte aligned and spreads transposed stores over banks

// How one operand tile is read from global memory: in runs of VW elements along the axis with the
// smaller stride (run_along_k or along M / N), as one VW-wide vector load when that axis has unit stride
// and every run start is aligned (vec), else element by element.
struct LoadMode {
    bool run_along_k;
    bool vec;
};

template <int VW> struct VecT;
template <> struct VecT<4> { using type = float4; };
template <> struct VecT<2> { using type = float2; };

template <int VW>
__device__ __forceinline__ void vload(float (&r)[VW], const float* src) {
    const typename VecT<VW>::type v = __ldg(reinterpret_cast<const typename VecT<VW>::type*>(src));
    const float* f = reinterpret_cast<const float*>(&v);
#pragma unroll
    for (int i = 0; i < VW; ++i) r[i] = f[i];
}

template <int VW>
__device__ __forceinline__ void vstore_shared(float* dst, const float (&r)[VW]) {
    typename VecT<VW>::type v;
    float* f = reinterpret_cast<float*>(&v);
#pragma unroll
    for (int i = 0; i < VW; ++i) f[i] = r[i];
    *reinterpret_cast<typename VecT<VW>::type*>(dst) = v;
}

// One thread's share of an operand tile: a run of VW elements, `es` apart, starting at `ptr` (which
// moves by k_step = BK * stride_k per k-tile). Along K the run has K - kidx elements left (none when the
// thread's row / column is outside the matrix); along M / N it has `fixed_left` while its k (kidx) is
// inside. Pointers, not indices, are carried between k-tiles: fewer 64-bit multiplies and registers.
template <int VW>
struct RunLoader {
    const float* ptr;
    int64_t es, k_step, kidx, fixed_left;
    bool along_k, vec;

    // base: the operand (other x K: element (o, k) at base + o*s_other + k*s_k); other0: the tile's first
    // row (M) or column (N); line / start: the thread's run inside the tile (see sgemm_kernel).
    __device__ __forceinline__ void init(const float* base, LoadMode mode, int64_t other0, int line, int start,
                                         int64_t n_other, int64_t s_other, int64_t s_k) {
        along_k = mode.run_along_k;
        vec = mode.vec;
        k_step = kBK * s_k;
        if (along_k) {
            const int64_t o = other0 + line;
            const bool inside = o < n_other;
            ptr = base + (inside ? o * s_other + start * s_k : 0);
            es = s_k;
            kidx = start;
            fixed_left = inside ? INT64_MAX : 0;
        } else {
            const int64_t o = other0 + start;
            ptr = base + line * s_k + (o < n_other ? o * s_other : 0);
            es = s_other;
            kidx = line;
            fixed_left = n_other - o;
        }
    }
    // Loads the run of the next k-tile (zeros outside the matrix) and advances.
    __device__ __forceinline__ void load(float (&r)[VW], int64_t K) {
        const int64_t n = along_k ? min(fixed_left, K - kidx) : (kidx < K ? fixed_left : 0);
        if (vec && n >= VW) {
            vload<VW>(r, ptr);  // es == 1 and ptr aligned to VW floats: checked on the host
        } else {
#pragma unroll
            for (int v = 0; v < VW; ++v) r[v] = v < n ? __ldg(ptr + v * es) : 0.0f;
        }
        ptr += k_step;
        kidx += kBK;
    }
};

// BM x BN block tile; thread tile TM x TN = (BM/16) x (BN/16); 8 warps as 4 (M) x 2 (N) of warp tiles
// (4*TM) x (8*TN); a warp's lanes as 4 (ty, M) x 8 (tx, N), each lane owning rows
// {sm*16 + ty*4 + i} and columns {sn*32 + tx*4 + j} of its warp tile.
template <int BM, int BN>
__global__ void __launch_bounds__(kThreads, 2)
    sgemm_kernel(GemmParams p, LoadMode ma, LoadMode mb, bool c_vec) {
    constexpr int BK = kBK;
    constexpr int TM = BM / 16, TN = BN / 16;
    constexpr int WTM = 4 * TM, WTN = 8 * TN;
    constexpr int VWA = BM / 32, VWB = BN / 32;  // elements each thread loads per operand tile
    static_assert(TM % 4 == 0 && TN % 4 == 0, "thread tiles are made of 4x4 sub-tiles");
    static_assert(VWA * kThreads == BM * BK && VWB * kThreads == BN * BK, "one run per thread and tile");

    __shared__ __align__(16) float As[2][BK][BM + kPad];  // A tile transposed: [k][m]
    __shared__ __align__(16) float Bs[2][BK][BN + kPad];  // [k][n]

    const int tid = threadIdx.x;
    const int warp = tid >> 5, lane = tid & 31;
    const int wm = warp >> 1, wn = warp & 1;
    const int ty = lane >> 3, tx = lane & 7;

    // Load-run coordinates inside the tile (fixed per thread).
    constexpr int RA_K = BK / VWA;  // runs per A row when running along k
    const int a_line = ma.run_along_k ? tid / RA_K : tid / 32;               // m (along k) or k (along m)
    const int a_start = ma.run_along_k ? (tid % RA_K) * VWA : (tid % 32) * VWA;
    constexpr int RB_K = BK / VWB;
    const int b_line = mb.run_along_k ? tid / RB_K : tid / 32;               // n (along k) or k (along n)
    const int b_start = mb.run_along_k ? (tid % RB_K) * VWB : (tid % 32) * VWB;

    const int64_t n_tiles = p.tiles_m * p.tiles_n;
    for (int64_t zb = blockIdx.z; zb < p.batch * p.splits; zb += gridDim.z) {
        const int64_t b = zb / p.splits, s = zb % p.splits;
        const int64_t k_begin = s * p.k_split;
        const int64_t K = min(p.K - k_begin, p.k_split);  // this split's depth (>= 1 when splitting)
        const float* A = offset_ptr<float>(p.A, b * p.bs_a + k_begin * p.cs_a);
        const float* B = offset_ptr<float>(p.B, b * p.bs_b + k_begin * p.rs_b);
        float* C = static_cast<float*>(p.C) + zb * p.bs_c;

        for (int64_t tile = blockIdx.x; tile < n_tiles; tile += gridDim.x) {
            int64_t tm, tn;
            tile_coords(tile, p.tiles_m, p.tiles_n, tm, tn);
            const int64_t m0 = tm * BM, n0 = tn * BN;

            float ra[VWA], rb[VWB];
            RunLoader<VWA> la;
            RunLoader<VWB> lb;
            la.init(A, ma, m0, a_line, a_start, p.M, p.rs_a, p.cs_a);
            lb.init(B, mb, n0, b_line, b_start, p.N, p.cs_b, p.rs_b);
            auto load_global = [&]() {
                la.load(ra, K);
                lb.load(rb, K);
            };
            auto store_shared = [&](int buf) {
                if (ma.run_along_k) {
#pragma unroll
                    for (int v = 0; v < VWA; ++v) As[buf][a_start + v][a_line] = ra[v];
                } else {
                    vstore_shared<VWA>(&As[buf][a_line][a_start], ra);
                }
                if (mb.run_along_k) {
#pragma unroll
                    for (int v = 0; v < VWB; ++v) Bs[buf][b_start + v][b_line] = rb[v];
                } else {
                    vstore_shared<VWB>(&Bs[buf][b_line][b_start], rb);
                }
            };

            float acc[TM][TN];
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] = 0.0f;

            const int64_t k_tiles = (K + BK - 1) / BK;
            if (k_tiles > 0) {
                load_global();
                store_shared(0);
                __syncthreads();
            }
            for (int64_t kt = 0; kt < k_tiles; ++kt) {
                const int buf = static_cast<int>(kt & 1);
                const bool more = kt + 1 < k_tiles;
                if (more) load_global();  // k-tile kt + 1: in flight while this tile is multiplied
#pragma unroll
                for (int kk = 0; kk < BK; ++kk) {
                    float af[TM], bf[TN];
#pragma unroll
                    for (int sm = 0; sm < TM / 4; ++sm) {
                        const float4 v = *reinterpret_cast<const float4*>(&As[buf][kk][wm * WTM + sm * 16 + ty * 4]);
                        af[sm * 4 + 0] = v.x; af[sm * 4 + 1] = v.y; af[sm * 4 + 2] = v.z; af[sm * 4 + 3] = v.w;
                    }
#pragma unroll
                    for (int sn = 0; sn < TN / 4; ++sn) {
                        const float4 v = *reinterpret_cast<const float4*>(&Bs[buf][kk][wn * WTN + sn * 32 + tx * 4]);
                        bf[sn * 4 + 0] = v.x; bf[sn * 4 + 1] = v.y; bf[sn * 4 + 2] = v.z; bf[sn * 4 + 3] = v.w;
                    }
#pragma unroll
                    for (int i = 0; i < TM; ++i)
#pragma unroll
                        for (int j = 0; j < TN; ++j) acc[i][j] = fmaf(af[i], bf[j], acc[i][j]);
                }
                // The other buffer was last read in iteration kt - 1, before the barrier that ended it.
                if (more) store_shared(buf ^ 1);
                __syncthreads();
            }

            // Epilogue: C = alpha * acc (+ beta * C), float4 stores where C rows allow.
#pragma unroll
            for (int sm = 0; sm < TM / 4; ++sm) {
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    const int64_t row = m0 + wm * WTM + sm * 16 + ty * 4 + i;
                    if (row >= p.M) continue;
                    float* crow = C + row * p.rs_c;
#pragma unroll
                    for (int sn = 0; sn < TN / 4; ++sn) {
                        const int64_t col = n0 + wn * WTN + sn * 32 + tx * 4;
                        const float* v = &acc[sm * 4 + i][sn * 4];
                        if (c_vec && col + 4 <= p.N) {
                            float4* dst = reinterpret_cast<float4*>(crow + col);
                            float4 o = make_float4(p.alpha * v[0], p.alpha * v[1], p.alpha * v[2], p.alpha * v[3]);
                            if (p.beta != 0.0f) {
                                const float4 c = *dst;
                                o.x += p.beta * c.x; o.y += p.beta * c.y; o.z += p.beta * c.z; o.w += p.beta * c.w;
                            }
                            *dst = o;
                        } else {
#pragma unroll
                            for (int j = 0; j < 4; ++j) {
                                if (col + j >= p.N) break;
                                float* d = crow + (col + j) * p.cs_c;
                                *d = p.beta == 0.0f ? p.alpha * v[j] : p.alpha * v[j] + p.beta * *d;
                            }
                        }
                    }
                }
            }
        }
    }
}

// Split-K second pass: C = alpha * sum_s ws[b * splits + s] (+ beta * C), summed in s order so results do
// not change from run to run. ws is [batch * splits][M][N] contiguous float.
__global__ void splitk_reduce_kernel(const float* ws, int64_t splits, int64_t batch, int64_t M, int64_t N,
                                     float* C, int64_t bs_c, int64_t rs_c, int64_t cs_c, float alpha,
                                     float beta) {
    const int64_t mn = M * N, total = batch * mn;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
        const int64_t b = i / mn, rem = i - b * mn;
        const int64_t m = rem / N, n = rem - m * N;
        const float* src = ws + b * splits * mn + rem;
        float sum = 0.0f;
        for (int64_t s = 0; s < splits; ++s) sum += src[s * mn];
        float* d = C + b * bs_c + m * rs_c + n * cs_c;
        *d = beta == 0.0f ? alpha * sum : alpha * sum + beta * *d;
    }
}

}  // namespace simt

// ====================================================================== float64 kernel
namespace dsimple {

constexpr int kBM = 64, kBN = 64, kBK = 16, kThreads = 256;

// 64x64 tile, 256 threads, 4x4 outputs each (rows ty + 16 i, columns tx + 16 j); a_k_fast / b_n_fast pick
// which axis consecutive threads walk on load (the one with the smaller stride, for coalescing).
__global__ void __launch_bounds__(kThreads) dgemm_kernel(GemmParams p, bool a_k_fast, bool b_n_fast) {
    __shared__ double As[kBK][kBM + 1];
    __shared__ double Bs[kBK][kBN + 1];
    const int tid = threadIdx.x, ty = tid / 16, tx = tid % 16;
    const double alpha = p.alpha, beta = p.beta;
    const int64_t n_tiles = p.tiles_m * p.tiles_n;
    for (int64_t b = blockIdx.z; b < p.batch; b += gridDim.z) {
        const double* A = offset_ptr<double>(p.A, b * p.bs_a);
        const double* B = offset_ptr<double>(p.B, b * p.bs_b);
        double* C = static_cast<double*>(p.C) + b * p.bs_c;
        for (int64_t tile = blockIdx.x; tile < n_tiles; tile += gridDim.x) {
            int64_t tm, tn;
            tile_coords(tile, p.tiles_m, p.tiles_n, tm, tn);
            const int64_t m0 = tm * kBM, n0 = tn * kBN;
            double acc[4][4] = {};
            for (int64_t k0 = 0; k0 < p.K; k0 += kBK) {
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    const int e = tid + i * kThreads;  // 0 .. 1023 over the 64 x 16 tiles
                    const int am = a_k_fast ? e / kBK : e % kBM, ak = a_k_fast ? e % kBK : e / kBM;
                    const int64_t gm = m0 + am, gk = k0 + ak;
                    As[ak][am] = (gm < p.M && gk < p.K) ? A[gm * p.rs_a + gk * p.cs_a] : 0.0;
                    const int bn = b_n_fast ? e % kBN : e / kBK, bk = b_n_fast ? e / kBN : e % kBK;
                    const int64_t gn = n0 + bn, gk2 = k0 + bk;
                    Bs[bk][bn] = (gn < p.N && gk2 < p.K) ? B[gk2 * p.rs_b + gn * p.cs_b] : 0.0;
                }
                __syncthreads();
#pragma unroll
                for (int kk = 0; kk < kBK; ++kk) {
                    double af[4], bf[4];
#pragma unroll
                    for (int i = 0; i < 4; ++i) af[i] = As[kk][ty + 16 * i];
#pragma unroll
                    for (int j = 0; j < 4; ++j) bf[j] = Bs[kk][tx + 16 * j];
#pragma unroll
                    for (int i = 0; i < 4; ++i)
#pragma unroll
                        for (int j = 0; j < 4; ++j) acc[i][j] = fma(af[i], bf[j], acc[i][j]);
                }
                __syncthreads();  // the tiles are overwritten next iteration
            }
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int64_t row = m0 + ty + 16 * i;
                if (row >= p.M) continue;
#pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const int64_t col = n0 + tx + 16 * j;
                    if (col >= p.N) continue;
                    double* d = C + row * p.rs_c + col * p.cs_c;
                    *d = beta == 0.0 ? alpha * acc[i][j] : alpha * acc[i][j] + beta * *d;
                }
            }
        }
    }
}

}  // namespace dsimple

// ====================================================================== tensor-core kernel (sm_80+)
namespace tc {

constexpr int kThreads = 128;  // 4 warps, 2 (M) x 2 (N), 64x64 each
constexpr int kBM = 128, kBN = 128, kStages = 4;
constexpr int kLdC = kBN + 4;  // epilogue tile row (floats): 16-byte rows, fewer bank conflicts

// Geometry per element type (E bytes): a stage holds 64 bytes of K per row; an mma consumes 32 bytes.
template <typename T>
struct Geom {
    static constexpr int E = sizeof(T);
    static constexpr int CH = 16 / E;     // elements per 16-byte cp.async chunk
    static constexpr int BK = 64 / E;     // k per stage (32 for 16-bit, 16 for TF32)
    static constexpr int KSTEP = 32 / E;  // k per mma (16 / 8)
    static constexpr int LDK = BK + CH;   // K-major row: 80 bytes (8 rows hit 8 distinct 16-byte bank groups)
    static constexpr int LDMN = kBM + 8;  // MN-major row: 128 + 8 elements (272 / 544 bytes, same property)
    static constexpr int TILE_BYTES = (kBM * LDK > BK * LDMN ? kBM * LDK : BK * LDMN) * E;  // 10240
    static constexpr int STAGE_BYTES = 2 * TILE_BYTES;
    static constexpr int SMEM_BYTES = kStages * STAGE_BYTES;  // 81920
    static_assert(kBM * kLdC * 4 <= SMEM_BYTES, "the epilogue tile reuses the pipeline buffers");
};

template <typename T> struct Raw;  // the bits moved by the element-wise (gather) loader
template <> struct Raw<__half> { using type = unsigned short; };
template <> struct Raw<__nv_bfloat16> { using type = unsigned short; };
template <> struct Raw<float> { using type = unsigned int; };

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, int src_bytes) {
    // Copies src_bytes (0..16) and zero-fills the rest of the 16-byte chunk.
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ uint32_t to_tf32(uint32_t f32_bits) {
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(__uint_as_float(f32_bits)));
    return r;
}

// D (16x8, f32) += A (16xKSTEP, row) * B (KSTEP x 8, col).
template <typename T>
__device__ __forceinline__ void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);
template <>
__device__ __forceinline__ void mma<__half>(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <>
__device__ __forceinline__ void mma<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <>
__device__ __forceinline__ void mma<float>(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif  // __CUDA_ARCH__ >= 800

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_float(float x);
template <> __device__ __forceinline__ float from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Stores (v0, v1) to d[0] and d[cs] (alpha / beta applied; C read only when beta != 0), as one 2-element
// store when cs == 1 and d is aligned for it; `two` false stores v0 only (the last column).
template <typename T>
__device__ __forceinline__ void store_pair(T* d, int64_t cs, bool two, float v0, float v1, float alpha, float beta) {
    v0 *= alpha;
    v1 *= alpha;
    if (two && cs == 1 && (reinterpret_cast<uintptr_t>(d) % (2 * sizeof(T))) == 0) {
        struct alignas(2 * sizeof(T)) Pair { T x, y; };
        Pair* dp = reinterpret_cast<Pair*>(d);
        if (beta != 0.0f) {
            const Pair old = *dp;
            v0 += beta * to_float(old.x);
            v1 += beta * to_float(old.y);
        }
        Pair out;
        out.x = from_float<T>(v0);
        out.y = from_float<T>(v1);
        *dp = out;
        return;
    }
    if (beta != 0.0f) v0 += beta * to_float(d[0]);
    d[0] = from_float<T>(v0);
    if (two) {
        if (beta != 0.0f) v1 += beta * to_float(d[cs]);
        d[cs] = from_float<T>(v1);
    }
}

// Copies one BK-deep tile of an operand (n_rows x n_k; element (r, k) at base + r*s_row + k*s_k) for rows
// [row0, row0 + 128) and k [k0, k0 + BK) into shared memory, K-major ([128][LDK]) or MN-major
// ([BK][LDMN]). `async`: 16-byte cp.async chunks (the inner axis has unit stride and every chunk start is
// 16-byte aligned; chunks past the edge are zero-filled by the copy). Otherwise elements are gathered
// one by one (any strides) and stored as 16-byte chunks. 512 chunks per tile, 4 per thread.
template <typename T, bool KMAJOR>
__device__ __forceinline__ void load_tile(T* smem, const T* base, int64_t row0, int64_t n_rows, int64_t s_row,
                                          int64_t k0, int64_t n_k, int64_t s_k, bool async) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    using G = Geom<T>;
    constexpr int INNER = KMAJOR ? G::BK : kBM;  // extent of the contiguous shared-memory axis
    constexpr int CPL = INNER / G::CH;           // chunks per line
    constexpr int LD = KMAJOR ? G::LDK : G::LDMN;
    static_assert((KMAJOR ? kBM : G::BK) * CPL == 4 * kThreads, "4 chunks per thread");
    const int64_t line0 = KMAJOR ? row0 : k0, n_line = KMAJOR ? n_rows : n_k, s_line = KMAJOR ? s_row : s_k;
    const int64_t in0 = KMAJOR ? k0 : row0, n_in = KMAJOR ? n_k : n_rows, s_in = KMAJOR ? s_k : s_row;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int c = threadIdx.x + i * kThreads;
        const int line = c / CPL, in = (c % CPL) * G::CH;
        const int64_t gl = line0 + line, gi = in0 + in;
        T* dst = smem + line * LD + in;
        if (async) {
            const int64_t left = gl < n_line ? n_in - gi : 0;
            const int valid = static_cast<int>(left <= 0 ? 0 : (left < G::CH ? left : G::CH));
            const T* src = valid > 0 ? base + gl * s_line + gi : base;  // not read when valid == 0
            cp_async_16(smem_u32(dst), src, valid * G::E);
        } else {
            using R = typename Raw<T>::type;
            union {
                uint4 v;
                R e[G::CH];
            } chunk;
            const R* rb = reinterpret_cast<const R*>(base);
#pragma unroll
            for (int e = 0; e < G::CH; ++e)
                chunk.e[e] = (gl < n_line && gi + e < n_in) ? rb[gl * s_line + (gi + e) * s_in] : R(0);
            *reinterpret_cast<uint4*>(dst) = chunk.v;
        }
    }
#endif
}

// A_KMAJOR: A's tile is stored [m][k] (k unit-stride in global memory, or the smaller stride), else [k][m];
// B_KMAJOR: B's tile is stored [n][k], else [k][n]. a_async / b_async: cp.async allowed (see load_tile).
template <typename T, bool A_KMAJOR, bool B_KMAJOR>
__global__ void __launch_bounds__(kThreads) tc_gemm_kernel(GemmParams p, bool a_async, bool b_async) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    using G = Geom<T>;
    constexpr bool TF32 = sizeof(T) == 4;
    extern __shared__ __align__(128) unsigned char smem[];
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int wm = warp >> 1, wn = warp & 1;            // warp tile origin (wm * 64, wn * 64)
    const int g = lane >> 2, t = lane & 3;              // mma fragment coordinates
    const int lj = lane >> 3, lr = lane & 7;            // ldmatrix: matrix index, row within it
    const int64_t n_tiles = p.tiles_m * p.tiles_n;
    const int64_t k_tiles = (p.K + G::BK - 1) / G::BK;

    for (int64_t b = blockIdx.z; b < p.batch; b += gridDim.z) {
        const T* A = offset_ptr<T>(p.A, b * p.bs_a);
        const T* B = offset_ptr<T>(p.B, b * p.bs_b);
        T* C = static_cast<T*>(p.C) + b * p.bs_c;
        for (int64_t tile = blockIdx.x; tile < n_tiles; tile += gridDim.x) {
            int64_t tm, tn;
            tile_coords(tile, p.tiles_m, p.tiles_n, tm, tn);
            const int64_t m0 = tm * kBM, n0 = tn * kBN;
            auto stage_a = [&](int s) { return reinterpret_cast<T*>(smem + s * G::STAGE_BYTES); };
            auto stage_b = [&](int s) { return reinterpret_cast<T*>(smem + s * G::STAGE_BYTES + G::TILE_BYTES); };
            auto load_stage = [&](int s, int64_t kt) {
                const int64_t k0 = kt * G::BK;
                load_tile<T, A_KMAJOR>(stage_a(s), A, m0, p.M, p.rs_a, k0, p.K, p.cs_a, a_async);
                load_tile<T, B_KMAJOR>(stage_b(s), B, n0, p.N, p.cs_b, k0, p.K, p.rs_b, b_async);
            };

            float acc[4][8][4];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 8; ++j)
#pragma unroll
                    for (int v = 0; v < 4; ++v) acc[i][j][v] = 0.0f;

            // Prologue: stages 0 .. kStages-2 in flight. Every thread commits one group per stage slot
            // (empty past the last k-tile) so wait_group counts line up.
#pragma unroll
            for (int s = 0; s < kStages - 1; ++s) {
                if (s < k_tiles) load_stage(s, s);
                cp_async_commit();
            }
            for (int64_t kt = 0; kt < k_tiles; ++kt) {
                // Groups committed so far: kStages-1 + kt; allowing kStages-2 pending means k-tile kt has
                // landed for this thread; the barrier makes every thread's copies visible, and also says
                // every warp is done with the stage refilled below (it was read in iteration kt - 1).
                cp_async_wait<kStages - 2>();
                __syncthreads();
                const int64_t next = kt + kStages - 1;
                if (next < k_tiles) load_stage(static_cast<int>(next % kStages), next);
                cp_async_commit();

                const int s = static_cast<int>(kt % kStages);
                const T* As = stage_a(s);
                const T* Bs = stage_b(s);
                const uint32_t as_u32 = smem_u32(As), bs_u32 = smem_u32(Bs);
#pragma unroll
                for (int ks = 0; ks < G::BK / G::KSTEP; ++ks) {
                    uint32_t af[4][4], bfr[8][2];
#pragma unroll
                    for (int mt = 0; mt < 4; ++mt) {
                        const int mb = wm * 64 + mt * 16;
                        if constexpr (A_KMAJOR) {
                            // matrix lj: rows mb + (lj & 1) * 8 + lr, 16 bytes at k byte (lj >> 1) * 16
                            const uint32_t addr = as_u32 + (mb + (lj & 1) * 8 + lr) * (G::LDK * G::E) +
                                                  ks * 32 + (lj >> 1) * 16;
                            ldmatrix_x4(af[mt], addr);
                            if constexpr (TF32) {
#pragma unroll
                                for (int v = 0; v < 4; ++v) af[mt][v] = to_tf32(af[mt][v]);
                            }
                        } else if constexpr (!TF32) {
                            // stored [k][m]: matrix lj = k rows ks*16 + (lj >> 1) * 8 + lr, m cols mb + (lj & 1) * 8
                            const uint32_t addr = as_u32 + (ks * G::KSTEP + (lj >> 1) * 8 + lr) * (G::LDMN * G::E) +
                                                  (mb + (lj & 1) * 8) * G::E;
                            ldmatrix_x4_trans(af[mt], addr);
                        } else {
                            // TF32 [k][m]: a0 (m g, k t), a1 (m g+8, k t), a2 (m g, k t+4), a3 (m g+8, k t+4)
                            const uint32_t* f = reinterpret_cast<const uint32_t*>(As);
                            const int k = ks * G::KSTEP + t;
                            af[mt][0] = to_tf32(f[k * G::LDMN + mb + g]);
                            af[mt][1] = to_tf32(f[k * G::LDMN + mb + g + 8]);
                            af[mt][2] = to_tf32(f[(k + 4) * G::LDMN + mb + g]);
                            af[mt][3] = to_tf32(f[(k + 4) * G::LDMN + mb + g + 8]);
                        }
                    }
#pragma unroll
                    for (int np = 0; np < 4; ++np) {
                        const int nb = wn * 64 + np * 16;  // two n8 tiles: 2*np and 2*np + 1
                        uint32_t r[4];
                        if constexpr (B_KMAJOR) {
                            // stored [n][k]: matrix lj = n rows nb + (lj >> 1) * 8 + lr, k byte (lj & 1) * 16
                            const uint32_t addr = bs_u32 + (nb + (lj >> 1) * 8 + lr) * (G::LDK * G::E) +
                                                  ks * 32 + (lj & 1) * 16;
                            ldmatrix_x4(r, addr);
                            if constexpr (TF32) {
#pragma unroll
                                for (int v = 0; v < 4; ++v) r[v] = to_tf32(r[v]);
                            }
                        } else if constexpr (!TF32) {
                            // stored [k][n]: matrix lj = k rows ks*16 + (lj & 1) * 8 + lr, n cols nb + (lj >> 1) * 8
                            const uint32_t addr = bs_u32 + (ks * G::KSTEP + (lj & 1) * 8 + lr) * (G::LDMN * G::E) +
                                                  (nb + (lj >> 1) * 8) * G::E;
                            ldmatrix_x4_trans(r, addr);
                        } else {
                            // TF32 [k][n]: b0 (k t, n g), b1 (k t+4, n g)
                            const uint32_t* f = reinterpret_cast<const uint32_t*>(Bs);
                            const int k = ks * G::KSTEP + t;
                            r[0] = to_tf32(f[k * G::LDMN + nb + g]);
                            r[1] = to_tf32(f[(k + 4) * G::LDMN + nb + g]);
                            r[2] = to_tf32(f[k * G::LDMN + nb + 8 + g]);
                            r[3] = to_tf32(f[(k + 4) * G::LDMN + nb + 8 + g]);
                        }
                        bfr[2 * np][0] = r[0];
                        bfr[2 * np][1] = r[1];
                        bfr[2 * np + 1][0] = r[2];
                        bfr[2 * np + 1][1] = r[3];
                    }
#pragma unroll
                    for (int mt = 0; mt < 4; ++mt)
#pragma unroll
                        for (int nt = 0; nt < 8; ++nt) mma<T>(acc[mt][nt], af[mt], bfr[nt]);
                }
            }
            // Epilogue through shared memory (the pipeline buffers are free now): fragments are written
            // to a 128 x 128 float tile, then stored row by row, two columns per thread, so a warp writes
            // 64 consecutive elements of a row (and the store code is one short loop, not 64 copies).
            cp_async_wait<0>();
            __syncthreads();  // every warp is done reading the stages
            float* ctile = reinterpret_cast<float*>(smem);  // [128][kLdC]
#pragma unroll
            for (int mt = 0; mt < 4; ++mt)
#pragma unroll
                for (int nt = 0; nt < 8; ++nt)
#pragma unroll
                    for (int h = 0; h < 2; ++h) {
                        // accumulator (mt, nt): c0, c1 at (row g, cols 2t, 2t+1), c2, c3 at row g + 8
                        float2* d = reinterpret_cast<float2*>(
                            &ctile[(wm * 64 + mt * 16 + g + h * 8) * kLdC + wn * 64 + nt * 8 + 2 * t]);
                        *d = make_float2(acc[mt][nt][2 * h], acc[mt][nt][2 * h + 1]);
                    }
            __syncthreads();
            const int64_t rows_here = min(static_cast<int64_t>(kBM), p.M - m0);
            const int64_t cols_here = min(static_cast<int64_t>(kBN), p.N - n0);
#pragma unroll 4
            for (int e = tid; e < kBM * kBN / 2; e += kThreads) {
                const int r = e / (kBN / 2), c = (e % (kBN / 2)) * 2;
                if (r >= rows_here || c >= cols_here) continue;
                const float* v = &ctile[r * kLdC + c];
                store_pair<T>(C + (m0 + r) * p.rs_c + (n0 + c) * p.cs_c, p.cs_c, c + 1 < cols_here, v[0], v[1],
                              p.alpha, p.beta);
            }
            __syncthreads();  // the next tile / batch element refills the buffers
        }
    }
#else
    __trap();  // not built for this architecture: the host only picks this kernel on sm_80+
#endif
}

}  // namespace tc

// ====================================================================== host side
struct Device {
    int index = 0;
    int sms = 0;
    int cc_major = 0;
};

Device current_device() {
    static std::atomic<int> sms_cache[64];
    static std::atomic<int> cc_cache[64];
    Device d;
    check(cudaGetDevice(&d.index), "cudaGetDevice");
    const bool cached = d.index >= 0 && d.index < 64;
    if (cached && sms_cache[d.index].load(std::memory_order_relaxed) > 0) {
        d.sms = sms_cache[d.index].load(std::memory_order_relaxed);
        d.cc_major = cc_cache[d.index].load(std::memory_order_relaxed);
        return d;
    }
    check(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, d.index), "cudaDeviceGetAttribute");
    check(cudaDeviceGetAttribute(&d.cc_major, cudaDevAttrComputeCapabilityMajor, d.index), "cudaDeviceGetAttribute");
    if (cached) {
        cc_cache[d.index].store(d.cc_major, std::memory_order_relaxed);
        sms_cache[d.index].store(d.sms, std::memory_order_relaxed);
    }
    return d;
}

bool aligned(const void* p, int bytes) { return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes) == 0; }

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Whether the loader should run along K (rather than M or N) for an operand with `n_other` x `n_k`
// elements at strides s_other / s_k: along a unit stride if there is one, else along the smaller one.
// Size-1 axes have had their strides zeroed (normalize()) and are never chosen.
bool run_along_k(int64_t n_other, int64_t s_other, int64_t n_k, int64_t s_k) {
    if (n_k > 1 && s_k == 1) return true;
    if (n_other > 1 && s_other == 1) return false;
    if (n_k <= 1) return false;
    if (n_other <= 1) return true;
    const int64_t ak = s_k < 0 ? -s_k : s_k, ao = s_other < 0 ? -s_other : s_other;
    return ak <= ao;
}

// Whether runs of `vw` elements along the run axis can be vector loads: unit stride there, and every run
// start aligned (base pointer, the other strides multiples of vw).
bool vec_ok(const void* base, int64_t elem_bytes, int vw, int64_t s_run, int64_t s_other, int64_t s_batch) {
    return s_run == 1 && s_other % vw == 0 && s_batch % vw == 0 && aligned(base, static_cast<int>(vw * elem_bytes));
}

dim3 grid_for(int64_t n_tiles, int64_t z) {
    if (n_tiles > INT_MAX) throw ValueError("gemm: too many output tiles for one launch");
    return dim3(static_cast<unsigned>(n_tiles), 1, static_cast<unsigned>(std::min(z, kMaxGridZ)));
}

void launch_simt(GemmParams p, int tile, const Device& dev, cudaStream_t stream) {
    const int64_t tiles_m = ceil_div(p.M, tile), tiles_n = ceil_div(p.N, tile);
    p.tiles_m = tiles_m;
    p.tiles_n = tiles_n;
    p.splits = 1;
    p.k_split = p.K > 0 ? p.K : 1;
    // Split K when the 64x64 tiles still leave most SMs idle and K is deep (each split >= 128).
    const int64_t blocks = tiles_m * tiles_n * p.batch;
    if (tile == 64 && blocks * 2 < dev.sms && p.K >= 256) {
        const int64_t want = std::min<int64_t>({ceil_div(dev.sms, blocks), p.K / 128, 16});
        if (want > 1) {
            p.k_split = ceil_div(ceil_div(p.K, want), simt::kBK) * simt::kBK;  // whole k-tiles per split
            p.splits = ceil_div(p.K, p.k_split);
        }
    }
    const int vw = tile / 32;
    simt::LoadMode ma, mb;
    ma.run_along_k = run_along_k(p.M, p.rs_a, p.K, p.cs_a);
    ma.vec = ma.run_along_k ? vec_ok(p.A, 4, vw, p.cs_a, p.rs_a, p.bs_a) : vec_ok(p.A, 4, vw, p.rs_a, p.cs_a, p.bs_a);
    mb.run_along_k = run_along_k(p.N, p.cs_b, p.K, p.rs_b);
    mb.vec = mb.run_along_k ? vec_ok(p.B, 4, vw, p.rs_b, p.cs_b, p.bs_b) : vec_ok(p.B, 4, vw, p.cs_b, p.rs_b, p.bs_b);
    // (A split starting at k_split * s keeps vector alignment: k_split is a multiple of 8 and the stride
    // along K is 1 (runs along K) or a multiple of vw (runs along M / N).)

    float* ws = nullptr;
    GemmParams kp = p;
    if (p.splits > 1) {
        const size_t bytes = static_cast<size_t>(p.batch * p.splits * p.M * p.N) * sizeof(float);
        check(cudaMallocAsync(reinterpret_cast<void**>(&ws), bytes, stream), "cudaMallocAsync (split-K workspace)");
        kp.C = ws;
        kp.bs_c = p.M * p.N;
        kp.rs_c = p.N;
        kp.cs_c = 1;
        kp.alpha = 1.0f;
        kp.beta = 0.0f;
    }
    const bool c_vec = kp.cs_c == 1 && kp.rs_c % 4 == 0 && kp.bs_c % 4 == 0 && aligned(kp.C, 16);
    const dim3 grid = grid_for(tiles_m * tiles_n, p.batch * p.splits);
    if (tile == 128) {
        simt::sgemm_kernel<128, 128><<<grid, simt::kThreads, 0, stream>>>(kp, ma, mb, c_vec);
        check_launch("sgemm_kernel<128, 128>");
    } else {
        simt::sgemm_kernel<64, 64><<<grid, simt::kThreads, 0, stream>>>(kp, ma, mb, c_vec);
        check_launch("sgemm_kernel<64, 64>");
    }
    if (p.splits > 1) {
        const int64_t total = p.batch * p.M * p.N;
        const unsigned blocks_r = static_cast<unsigned>(std::min<int64_t>(ceil_div(total, 256), 8 * dev.sms));
        simt::splitk_reduce_kernel<<<blocks_r, 256, 0, stream>>>(ws, p.splits, p.batch, p.M, p.N,
                                                                 static_cast<float*>(p.C), p.bs_c, p.rs_c,
                                                                 p.cs_c, p.alpha, p.beta);
        const cudaError_t launch_err = cudaGetLastError();
        check(cudaFreeAsync(ws, stream), "cudaFreeAsync (split-K workspace)");
        check(launch_err, "splitk_reduce_kernel");
    }
}

void launch_f64(GemmParams p, cudaStream_t stream) {
    p.tiles_m = ceil_div(p.M, dsimple::kBM);
    p.tiles_n = ceil_div(p.N, dsimple::kBN);
    p.splits = 1;
    p.k_split = p.K;
    const bool a_k_fast = run_along_k(p.M, p.rs_a, p.K, p.cs_a);
    const bool b_n_fast = !run_along_k(p.N, p.cs_b, p.K, p.rs_b);
    dsimple::dgemm_kernel<<<grid_for(p.tiles_m * p.tiles_n, p.batch), dsimple::kThreads, 0, stream>>>(p, a_k_fast, b_n_fast);
    check_launch("dgemm_kernel");
}

template <typename T, bool AK, bool BK>
void launch_tc_typed(const GemmParams& p, bool a_async, bool b_async, const Device& dev, cudaStream_t stream,
                     const char* name) {
    constexpr int smem = tc::Geom<T>::SMEM_BYTES;
    // Over 48 KiB of dynamic shared memory needs an opt-in per kernel and device (once each).
    static std::atomic<uint64_t> opted_in{0};
    const uint64_t bit = uint64_t(1) << (dev.index & 63);
    if (!(opted_in.load(std::memory_order_relaxed) & bit)) {
        check(cudaFuncSetAttribute(tc::tc_gemm_kernel<T, AK, BK>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem),
              "cudaFuncSetAttribute (tc_gemm_kernel shared memory)");
        opted_in.fetch_or(bit, std::memory_order_relaxed);
    }
    tc::tc_gemm_kernel<T, AK, BK><<<grid_for(p.tiles_m * p.tiles_n, p.batch), tc::kThreads, smem, stream>>>(p, a_async, b_async);
    check_launch(name);
}

template <typename T>
void launch_tc(GemmParams p, const Device& dev, cudaStream_t stream) {
    using G = tc::Geom<T>;
    // Each operand's tile goes to shared memory with its unit-stride (else smaller-stride) axis
    // contiguous. A K-major / B MN-major pair is instantiated; the mirrored pair (A MN-major, B K-major)
    // is the same product transposed, C^T = B^T A^T, so it swaps the operands instead of adding kernels.
    bool a_k = run_along_k(p.M, p.rs_a, p.K, p.cs_a);
    bool b_k = run_along_k(p.N, p.cs_b, p.K, p.rs_b);
    if (!a_k && b_k) {
        std::swap(p.M, p.N);
        std::swap(p.A, p.B);
        std::swap(p.bs_a, p.bs_b);
        const int64_t old_rs_a = p.rs_a, old_cs_a = p.cs_a;
        p.rs_a = p.cs_b;  // new A = old B^T: (n, k) at n * cs_b + k * rs_b
        p.cs_a = p.rs_b;
        p.rs_b = old_cs_a;  // new B = old A^T: (k, m) at k * cs_a + m * rs_a
        p.cs_b = old_rs_a;
        std::swap(p.rs_c, p.cs_c);  // new C = old C^T
        std::swap(a_k, b_k);
    }
    p.tiles_m = ceil_div(p.M, tc::kBM);
    p.tiles_n = ceil_div(p.N, tc::kBN);
    p.splits = 1;
    p.k_split = p.K;
    // cp.async moves 16-byte chunks: unit stride on the contiguous axis, chunk starts 16-byte aligned.
    const bool a_async = a_k ? vec_ok(p.A, G::E, G::CH, p.cs_a, p.rs_a, p.bs_a) : vec_ok(p.A, G::E, G::CH, p.rs_a, p.cs_a, p.bs_a);
    const bool b_async = b_k ? vec_ok(p.B, G::E, G::CH, p.rs_b, p.cs_b, p.bs_b) : vec_ok(p.B, G::E, G::CH, p.cs_b, p.rs_b, p.bs_b);
    if (a_k && b_k)
        launch_tc_typed<T, true, true>(p, a_async, b_async, dev, stream, "tc_gemm_kernel<K-major A, K-major B>");
    else if (a_k)
        launch_tc_typed<T, true, false>(p, a_async, b_async, dev, stream, "tc_gemm_kernel<K-major A, MN-major B>");
    else
        launch_tc_typed<T, false, false>(p, a_async, b_async, dev, stream, "tc_gemm_kernel<MN-major A, MN-major B>");
}

// Strides of size-1 axes (and the batch stride of a single product) never move the pointer; zeroing them
// lets the alignment and layout tests above ignore whatever value the caller's array library put there.
void normalize(GemmParams& p) {
    if (p.batch <= 1) p.bs_a = p.bs_b = p.bs_c = 0;
    if (p.M <= 1) p.rs_a = p.rs_c = 0;
    if (p.N <= 1) p.cs_b = p.cs_c = 0;
    if (p.K <= 1) p.cs_a = p.rs_b = 0;
}

}  // namespace

void gemm_strided_batched(DType dtype, int64_t batch, int64_t M, int64_t N, int64_t K, float alpha,
                          const void* A, int64_t bs_a, int64_t rs_a, int64_t cs_a,
                          const void* B, int64_t bs_b, int64_t rs_b, int64_t cs_b,
                          float beta, void* C, int64_t bs_c, int64_t rs_c, int64_t cs_c,
                          bool allow_tf32, void* stream) {
    if (batch < 0 || M < 0 || N < 0 || K < 0)
        throw ValueError("gemm_strided_batched: negative size (batch " + std::to_string(batch) + ", M " +
                         std::to_string(M) + ", N " + std::to_string(N) + ", K " + std::to_string(K) + ")");
    if (dtype != DType::f32 && dtype != DType::f64 && dtype != DType::f16 && dtype != DType::bf16)
        throw DTypeError(std::string("gemm_strided_batched: unsupported dtype ") + dtype_name(dtype) +
                         " (float32, float64, float16, bfloat16 are supported)");
    if (batch == 0 || M == 0 || N == 0) return;
    if (C == nullptr || (K > 0 && (A == nullptr || B == nullptr)))
        throw ValueError("gemm_strided_batched: null operand pointer");

    GemmParams p{};
    p.M = M; p.N = N; p.K = K; p.batch = batch;
    p.A = A; p.bs_a = bs_a; p.rs_a = rs_a; p.cs_a = cs_a;
    p.B = B; p.bs_b = bs_b; p.rs_b = rs_b; p.cs_b = cs_b;
    p.C = C; p.bs_c = bs_c; p.rs_c = rs_c; p.cs_c = cs_c;
    p.alpha = alpha; p.beta = beta;
    p.splits = 1; p.k_split = K;
    normalize(p);
    const cudaStream_t s = static_cast<cudaStream_t>(stream);
    const Device dev = current_device();

    // Kernel choice:
    //  * f16 / bf16: tensor cores, the only 16-bit kernel (needs sm_80).
    //  * f32 with allow_tf32: TF32 tensor cores when 128x128 tiles give at least half a wave of blocks;
    //    smaller problems are latency-bound, and the exact float32 kernel (with split-K) is as fast there.
    //  * f32: the FMA kernel with 128x128 tiles when they fill the SMs at least once (and the product is
    //    not thin: a 128-wide tile over 64 rows or columns would be mostly padding), else 64x64 tiles
    //    (4x the blocks) plus split-K when even those leave most SMs idle.
    //  * f64: the simple tiled kernel.
    switch (dtype) {
        case DType::f64: launch_f64(p, s); return;
        case DType::f16:
        case DType::bf16:
            if (dev.cc_major < 8)
                throw ValueError(std::string("gemm_strided_batched: ") + dtype_name(dtype) +
                                 " needs tensor cores of compute capability 8.0 or newer");
            if (dtype == DType::f16) launch_tc<__half>(p, dev, s);
            else launch_tc<__nv_bfloat16>(p, dev, s);
            return;
        default: break;
    }
    const int64_t big_blocks = ceil_div(M, 128) * ceil_div(N, 128) * batch;
    if (allow_tf32 && dev.cc_major >= 8 && big_blocks * 2 >= dev.sms) {
        launch_tc<float>(p, dev, s);
        return;
    }
    launch_simt(p, (big_blocks >= dev.sms && M > 64 && N > 64) ? 128 : 64, dev, s);
}

void matmul(const View& a, const View& b, const View& out, bool allow_tf32, void* stream) {
    MatmulBatch mb = matmul_batch(a, b, out);  // the CPU matmul's validation and batch walk
    const DType dt = a.dtype;
    if (dt != DType::f32 && dt != DType::f64 && dt != DType::f16 && dt != DType::bf16)
        throw DTypeError(std::string("matmul: unsupported dtype ") + dtype_name(dt) +
                         " on the GPU (float32, float64, float16, bfloat16 are supported)");
    if (mb.count() == 0 || mb.M == 0 || mb.N == 0) return;
    // The innermost batch dim left after collapsing is one batched launch; any outer dims that one
    // stride cannot walk (broadcasts in different dims of a and b) become a host loop of launches.
    mb.collapse();
    const int64_t inner = mb.nb > 0 ? mb.shape[mb.nb - 1] : 1;
    const int64_t bs_a = mb.nb > 0 ? mb.sa[mb.nb - 1] : 0, bs_b = mb.nb > 0 ? mb.sb[mb.nb - 1] : 0,
                  bs_c = mb.nb > 0 ? mb.sc[mb.nb - 1] : 0;
    const int outer_dims = mb.nb > 0 ? mb.nb - 1 : 0;
    int64_t outer = 1;
    for (int d = 0; d < outer_dims; ++d) outer *= mb.shape[d];
    const int64_t es = dtype_size(dt);
    for (int64_t o = 0; o < outer; ++o) {
        int64_t oa, ob, oc;
        mb.offsets(o, oa, ob, oc, outer_dims);
        gemm_strided_batched(dt, inner, mb.M, mb.N, mb.K, 1.0f,
                             static_cast<const char*>(a.data) + oa * es, bs_a, a.stride(-2), a.stride(-1),
                             static_cast<const char*>(b.data) + ob * es, bs_b, b.stride(-2), b.stride(-1),
                             0.0f, static_cast<char*>(out.data) + oc * es, bs_c, out.stride(-2), out.stride(-1),
                             allow_tf32, stream);
    }
}

}  // namespace cuda
}  // namespace layerforge
