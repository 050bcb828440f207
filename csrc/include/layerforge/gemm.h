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

}  // namespace layerforge
