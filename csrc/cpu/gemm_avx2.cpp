// AVX2+FMA GEMM micro-kernels (this file alone is compiled with -mavx2 -mfma; it runs only when the
// CPU reports both, see runtime.cpp).
//
// float:  6 x 16 tile — 12 ymm accumulators, 2 ymm of B and 1 broadcast of A per depth step
//         (12 FMAs per 8 loads: the two FMA pipes stay fed).
// double: 6 x 8 tile — the same register plan with 4-wide vectors.
#include <immintrin.h>

#include <cstdint>

#include "cpu_internal.h"
#include "gemm_pack.h"

namespace layerforge {
namespace detail {

namespace {

inline void store_row_ps(float* c, __m256 v, __m256 valpha, __m256 vbeta, bool beta_zero) {
    v = _mm256_mul_ps(v, valpha);
    if (!beta_zero) v = _mm256_fmadd_ps(vbeta, _mm256_loadu_ps(c), v);
    _mm256_storeu_ps(c, v);
}

void sgemm_6x16(int64_t k, const float* a, const float* b, int64_t rs_b, float* c, int64_t rs_c,
                int64_t cs_c, float alpha, float beta) {
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();

#define LF_STEP(P)                                                              \
    {                                                                           \
        const __m256 b0 = _mm256_loadu_ps(b + (P) * rs_b);                     \
        const __m256 b1 = _mm256_loadu_ps(b + (P) * rs_b + 8);                 \
        __m256 av = _mm256_broadcast_ss(a + (P) * 6 + 0);                      \
        c00 = _mm256_fmadd_ps(av, b0, c00); c01 = _mm256_fmadd_ps(av, b1, c01); \
        av = _mm256_broadcast_ss(a + (P) * 6 + 1);                             \
        c10 = _mm256_fmadd_ps(av, b0, c10); c11 = _mm256_fmadd_ps(av, b1, c11); \
        av = _mm256_broadcast_ss(a + (P) * 6 + 2);                             \
        c20 = _mm256_fmadd_ps(av, b0, c20); c21 = _mm256_fmadd_ps(av, b1, c21); \
        av = _mm256_broadcast_ss(a + (P) * 6 + 3);                             \
        c30 = _mm256_fmadd_ps(av, b0, c30); c31 = _mm256_fmadd_ps(av, b1, c31); \
        av = _mm256_broadcast_ss(a + (P) * 6 + 4);                             \
        c40 = _mm256_fmadd_ps(av, b0, c40); c41 = _mm256_fmadd_ps(av, b1, c41); \
        av = _mm256_broadcast_ss(a + (P) * 6 + 5);                             \
        c50 = _mm256_fmadd_ps(av, b0, c50); c51 = _mm256_fmadd_ps(av, b1, c51); \
    }

    int64_t p = 0;
    for (; p + 4 <= k; p += 4) {
        _mm_prefetch(reinterpret_cast<const char*>(a + 6 * 16), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(b + 8 * rs_b), _MM_HINT_T0);
        LF_STEP(0) LF_STEP(1) LF_STEP(2) LF_STEP(3)
        a += 24;
        b += 4 * rs_b;
    }
    for (; p < k; ++p) {
        LF_STEP(0)
        a += 6;
        b += rs_b;
    }
#undef LF_STEP

    const __m256 valpha = _mm256_set1_ps(alpha), vbeta = _mm256_set1_ps(beta);
    const bool bz = beta == 0.0f;
    if (cs_c == 1) {
        store_row_ps(c + 0 * rs_c, c00, valpha, vbeta, bz); store_row_ps(c + 0 * rs_c + 8, c01, valpha, vbeta, bz);
        store_row_ps(c + 1 * rs_c, c10, valpha, vbeta, bz); store_row_ps(c + 1 * rs_c + 8, c11, valpha, vbeta, bz);
        store_row_ps(c + 2 * rs_c, c20, valpha, vbeta, bz); store_row_ps(c + 2 * rs_c + 8, c21, valpha, vbeta, bz);
        store_row_ps(c + 3 * rs_c, c30, valpha, vbeta, bz); store_row_ps(c + 3 * rs_c + 8, c31, valpha, vbeta, bz);
        store_row_ps(c + 4 * rs_c, c40, valpha, vbeta, bz); store_row_ps(c + 4 * rs_c + 8, c41, valpha, vbeta, bz);
        store_row_ps(c + 5 * rs_c, c50, valpha, vbeta, bz); store_row_ps(c + 5 * rs_c + 8, c51, valpha, vbeta, bz);
        return;
    }
    alignas(32) float t[6][16];
    _mm256_store_ps(t[0], c00); _mm256_store_ps(t[0] + 8, c01);
    _mm256_store_ps(t[1], c10); _mm256_store_ps(t[1] + 8, c11);
    _mm256_store_ps(t[2], c20); _mm256_store_ps(t[2] + 8, c21);
    _mm256_store_ps(t[3], c30); _mm256_store_ps(t[3] + 8, c31);
    _mm256_store_ps(t[4], c40); _mm256_store_ps(t[4] + 8, c41);
    _mm256_store_ps(t[5], c50); _mm256_store_ps(t[5] + 8, c51);
    for (int i = 0; i < 6; ++i)
        for (int j = 0; j < 16; ++j) {
            float& cij = c[i * rs_c + j * cs_c];
            cij = bz ? alpha * t[i][j] : alpha * t[i][j] + beta * cij;
        }
}

inline void store_row_pd(double* c, __m256d v, __m256d valpha, __m256d vbeta, bool beta_zero) {
    v = _mm256_mul_pd(v, valpha);
    if (!beta_zero) v = _mm256_fmadd_pd(vbeta, _mm256_loadu_pd(c), v);
    _mm256_storeu_pd(c, v);
}

void dgemm_6x8(int64_t k, const double* a, const double* b, int64_t rs_b, double* c, int64_t rs_c,
               int64_t cs_c, double alpha, double beta) {
    __m256d acc[6][2];
    for (int i = 0; i < 6; ++i) acc[i][0] = acc[i][1] = _mm256_setzero_pd();
    for (int64_t p = 0; p < k; ++p) {
        const __m256d b0 = _mm256_loadu_pd(b), b1 = _mm256_loadu_pd(b + 4);
        for (int i = 0; i < 6; ++i) {
            const __m256d av = _mm256_broadcast_sd(a + i);
            acc[i][0] = _mm256_fmadd_pd(av, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_pd(av, b1, acc[i][1]);
        }
        a += 6;
        b += rs_b;
    }
    const __m256d valpha = _mm256_set1_pd(alpha), vbeta = _mm256_set1_pd(beta);
    const bool bz = beta == 0.0;
    if (cs_c == 1) {
        for (int i = 0; i < 6; ++i) {
            store_row_pd(c + i * rs_c, acc[i][0], valpha, vbeta, bz);
            store_row_pd(c + i * rs_c + 4, acc[i][1], valpha, vbeta, bz);
        }
        return;
    }
    alignas(32) double t[6][8];
    for (int i = 0; i < 6; ++i) {
        _mm256_store_pd(t[i], acc[i][0]);
        _mm256_store_pd(t[i] + 4, acc[i][1]);
    }
    for (int i = 0; i < 6; ++i)
        for (int j = 0; j < 8; ++j) {
            double& cij = c[i * rs_c + j * cs_c];
            cij = bz ? alpha * t[i][j] : alpha * t[i][j] + beta * cij;
        }
}

}  // namespace

template <>
const GemmKernelInfo<float>& gemm_kernel_avx2<float>() {
    // MC x KC floats of A (144 x 256 = 147 KB) sit in L2; a KC x NR panel of B (16 KB) in L1.
    static const GemmKernelInfo<float> info = blocking_from_env(GemmKernelInfo<float>{
        6, 16, 144, 256, 3072, &sgemm_6x16, &pack_a_tiles<float, 6>, &pack_b_tiles<float, 16>});
    return info;
}
template <>
const GemmKernelInfo<double>& gemm_kernel_avx2<double>() {
    static const GemmKernelInfo<double> info{6, 8, 72, 256, 2048, &dgemm_6x8,
                                             &pack_a_tiles<double, 6>, &pack_b_tiles<double, 8>};
    return info;
}

double fma_probe_avx2(int64_t iters) {
    // 10 independent chains hide the FMA latency on two pipes.
    __m256 acc[10];
    for (int i = 0; i < 10; ++i) acc[i] = _mm256_set1_ps(1.0f + 1e-7f * static_cast<float>(i));
    const __m256 m = _mm256_set1_ps(0.9999999f), add = _mm256_set1_ps(1e-8f);
    for (int64_t it = 0; it < iters; ++it)
        for (int i = 0; i < 10; ++i) acc[i] = _mm256_fmadd_ps(acc[i], m, add);
    __m256 s = acc[0];
    for (int i = 1; i < 10; ++i) s = _mm256_add_ps(s, acc[i]);
    alignas(32) float out[8];
    _mm256_store_ps(out, s);
    volatile float sink = out[0];
    (void)sink;
    return 2.0 * 8.0 * 10.0 * static_cast<double>(iters);
}

}  // namespace detail
}  // namespace layerforge
