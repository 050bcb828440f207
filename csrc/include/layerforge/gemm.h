// layerforge/gemm.h — general matrix multiplication on the CPU (BLIS-style packed GEMM).
//
// C (M x N) = alpha * op(A) (M x K) @ op(B) (K x N) + beta * C
//
// Two entry points:
//  * gemm_strided: every operand given by a pointer and a (row, column) stride pair in elements, so any
//    2-d view — transposed, sliced, negative-stride — is read by the packing step without a copy.
//  * gemm: the BLAS-style form (row-major, transpose flags, leading dimensions) for kernels that multiply
//    their own panels (convolution, LSTM, attention).
// beta == 0 means C is write-only (its old contents, NaN included, are ignored), as in BLAS.
// With K == 0 the result is beta * C (so zeros when beta == 0).
// nthreads <= 0 uses get_num_threads(); kernels that already run inside their own parallel region pass 1.
#pragma once
#include <cstdint>

#include "layerforge/view.h"

namespace layerforge {

template <typename T>
void gemm_strided(int64_t M, int64_t N, int64_t K, T alpha,
                  const T* A, int64_t rs_a, int64_t cs_a,
                  const T* B, int64_t rs_b, int64_t cs_b,
                  T beta, T* C, int64_t rs_c, int64_t cs_c, int nthreads = 0);

enum class Trans : int { N = 0, T = 1 };

// Row-major BLAS-style GEMM: op(A) is A (M x K, lda) or A^T (A stored K x M, lda), likewise B.
template <typename T>
void gemm(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, T alpha,
          const T* A, int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc,
          int nthreads = 0) {
    const int64_t rs_a = trans_a == Trans::N ? lda : 1, cs_a = trans_a == Trans::N ? 1 : lda;
    const int64_t rs_b = trans_b == Trans::N ? ldb : 1, cs_b = trans_b == Trans::N ? 1 : ldb;
    gemm_strided<T>(M, N, K, alpha, A, rs_a, cs_a, B, rs_b, cs_b, beta, C, ldc, 1, nthreads);
}

extern template void gemm_strided<float>(int64_t, int64_t, int64_t, float, const float*, int64_t,
                                         int64_t, const float*, int64_t, int64_t, float, float*,
                                         int64_t, int64_t, int);
extern template void gemm_strided<double>(int64_t, int64_t, int64_t, double, const double*, int64_t,
                                          int64_t, const double*, int64_t, int64_t, double, double*,
                                          int64_t, int64_t, int);

// numpy `@` for operands of >= 2 dims: a (..., M, K), b (..., K, N) -> out (batch..., M, N), where the
// leading (batch) dims of a and b broadcast as in numpy (aligned from the right, size 1 stretches) and
// out has the broadcast batch shape. Any strides (zero and negative included). Validates shapes and
// dtypes (ValueError / DTypeError); float32 and float64. The caller promotes 1-d operands.
void matmul(const View& a, const View& b, const View& out);

// ---------------------------------------------------------------- CUDA (csrc/cuda/gemm.cu)
// Built only with the CUDA module; declared here (no CUDA types) so other CUDA families and C++ users can
// call them. Pointers are device memory; `stream` is a cudaStream_t (nullptr = the legacy default
// stream). Work is queued on `stream` and not waited for. Launch errors throw std::runtime_error naming
// the kernel; bad arguments throw ValueError / DTypeError.
namespace cuda {

// C[b] = alpha * A[b] @ B[b] + beta * C[b] for b < batch, with
//   A[b] (M x K): element (m, k) at A + b * bs_a + m * rs_a + k * cs_a
//   B[b] (K x N): element (k, n) at B + b * bs_b + k * rs_b + n * cs_b
//   C[b] (M x N): element (m, n) at C + b * bs_c + m * rs_c + n * cs_c
// Strides are in elements, any sign; bs_a / bs_b may be 0 (one A or B for every b), and so may any stride
// of an operand that is broadcast. C must not overlap A or B, and distinct (b, m, n) must address
// distinct C elements. dtype (all three operands):
//   f32  — float32 FMA kernel (exact float32 arithmetic), or TF32 tensor cores (float32 accumulation,
//          inputs rounded to 10-bit mantissas) when allow_tf32 and the problem fills the device;
//   f16 / bf16 — tensor cores with float32 accumulation, C rounded to the same dtype;
//   f64  — a plain tiled float64 kernel (correct, not fast).
// alpha / beta are float32 (applied in float32, float64 for f64). beta == 0 never reads C (NaN in C is
// overwritten, as in BLAS). K == 0 gives C = beta * C. Deterministic: no atomics, no run-to-run changes.
void gemm_strided_batched(DType dtype, int64_t batch, int64_t M, int64_t N, int64_t K, float alpha,
                          const void* A, int64_t bs_a, int64_t rs_a, int64_t cs_a,
                          const void* B, int64_t bs_b, int64_t rs_b, int64_t cs_b,
                          float beta, void* C, int64_t bs_c, int64_t rs_c, int64_t cs_c,
                          bool allow_tf32, void* stream);

// numpy `@` on device arrays: a (..., M, K), b (..., K, N) -> out (batch..., M, N) written (=), batch dims
// broadcast as the CPU matmul above (the same validation, layerforge/matmul_batch.h). dtypes float32
// (TF32 when allow_tf32), float64, float16, bfloat16; all three views share it. Any strides.
void matmul(const View& a, const View& b, const View& out, bool allow_tf32, void* stream);

}  // namespace cuda

}  // namespace layerforge
