// AVX2+FMA GEMM micro-kernels (this file alone is compiled with -mavx2 -mfma; it runs only when the
// CPU reports both, see runtime.cpp).
//
// float:  6 x 16 tile — 12 ymm accumulators, 2 ymm of B and 1 broadcast of A per depth step
//         (12 FMAs per 8 loads: the two FMA pipes stay fed).
// double: 6 x 8 tile — the same register plan with 4-wide vectors.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "cpu_internal.h"
#include "gemm_pack.h"

namespace layerforge {
namespace detail {

namespace {

// A(i, p) at a[p * lda + i]: lda == 6 for a packed panel; larger for A read in place (attention's P^T and
// dS^T, rows of P and dS read as columns, so they need no transposing copy).
void sgemm_6x16_strided_a(int64_t k, const float* a, int64_t lda, const float* b, int64_t rs_b, float* c,
                          int64_t rs_c, int64_t cs_c, float alpha, float beta) {
    // The depth loop is written in assembly: with intrinsics GCC spilled an accumulator to the stack
    // inside the loop (12 accumulators + 2 B vectors + broadcasts use all 16 ymm registers).
    // Registers: ymm4..ymm15 accumulate C rows 0..5 (two 8-wide halves each), ymm0/ymm1 hold the B row,
    // ymm2/ymm3 the broadcast A values.
    // For row-major C (cs_c == 1) the epilogue (C = alpha acc + beta C) is in the assembly too, straight
    // from the accumulators: attention and the LSTM call this kernel with k = 64..128, where a round trip
    // of the 12 accumulators through the stack cost ~10% of a call.
#define LF_SGEMM_6x16_LOOP                                      \
    "vxorps %%ymm4, %%ymm4, %%ymm4\n\t"                          \
    "vxorps %%ymm5, %%ymm5, %%ymm5\n\t"                          \
    "vxorps %%ymm6, %%ymm6, %%ymm6\n\t"                          \
    "vxorps %%ymm7, %%ymm7, %%ymm7\n\t"                          \
    "vxorps %%ymm8, %%ymm8, %%ymm8\n\t"                          \
    "vxorps %%ymm9, %%ymm9, %%ymm9\n\t"                          \
    "vxorps %%ymm10, %%ymm10, %%ymm10\n\t"                       \
    "vxorps %%ymm11, %%ymm11, %%ymm11\n\t"                       \
    "vxorps %%ymm12, %%ymm12, %%ymm12\n\t"                       \
    "vxorps %%ymm13, %%ymm13, %%ymm13\n\t"                       \
    "vxorps %%ymm14, %%ymm14, %%ymm14\n\t"                       \
    "vxorps %%ymm15, %%ymm15, %%ymm15\n\t"                       \
    "test %[k], %[k]\n\t"                                        \
    "jle 2f\n\t"                                                 \
    ".p2align 4\n"                                               \
    "1:\n\t"                                                     \
    "prefetcht0 384(%[a])\n\t"                                   \
    "vmovups (%[b]), %%ymm0\n\t"                                 \
    "vmovups 32(%[b]), %%ymm1\n\t"                               \
    "vbroadcastss 0(%[a]), %%ymm2\n\t"                           \
    "vbroadcastss 4(%[a]), %%ymm3\n\t"                           \
    "vfmadd231ps %%ymm0, %%ymm2, %%ymm4\n\t"                     \
    "vfmadd231ps %%ymm1, %%ymm2, %%ymm5\n\t"                     \
    "vfmadd231ps %%ymm0, %%ymm3, %%ymm6\n\t"                     \
    "vfmadd231ps %%ymm1, %%ymm3, %%ymm7\n\t"                     \
    "vbroadcastss 8(%[a]), %%ymm2\n\t"                           \
    "vbroadcastss 12(%[a]), %%ymm3\n\t"                          \
    "vfmadd231ps %%ymm0, %%ymm2, %%ymm8\n\t"                     \
    "vfmadd231ps %%ymm1, %%ymm2, %%ymm9\n\t"                     \
    "vfmadd231ps %%ymm0, %%ymm3, %%ymm10\n\t"                    \
    "vfmadd231ps %%ymm1, %%ymm3, %%ymm11\n\t"                    \
    "vbroadcastss 16(%[a]), %%ymm2\n\t"                          \
    "vbroadcastss 20(%[a]), %%ymm3\n\t"                          \
    "vfmadd231ps %%ymm0, %%ymm2, %%ymm12\n\t"                    \
    "vfmadd231ps %%ymm1, %%ymm2, %%ymm13\n\t"                    \
    "vfmadd231ps %%ymm0, %%ymm3, %%ymm14\n\t"                    \
    "vfmadd231ps %%ymm1, %%ymm3, %%ymm15\n\t"                    \
    "add %[lda], %[a]\n\t"                                       \
    "add %[rsb], %[b]\n\t"                                       \
    "dec %[k]\n\t"                                               \
    "jnz 1b\n"                                                   \
    "2:\n\t"
    const int64_t rs_b_bytes = rs_b * static_cast<int64_t>(sizeof(float));
    const int64_t lda_bytes = lda * static_cast<int64_t>(sizeof(float));
    int64_t kk = k;
    if (cs_c == 1) {
        // Rows 0..2 at c + {0, 1, 2} rs_c, rows 3..5 at c3 + {0, 1, 2} rs_c (x86 scales stop at 8 bytes).
        const int64_t rs_c_bytes = rs_c * static_cast<int64_t>(sizeof(float));
        float* c3 = c + 3 * rs_c;
        const int64_t scale_acc = alpha != 1.0f, read_c = beta != 0.0f;
        __asm__ volatile(
            LF_SGEMM_6x16_LOOP
            "test %[sa], %[sa]\n\t"
            "jz 3f\n\t"
            "vbroadcastss %[alpha], %%ymm0\n\t"
            "vmulps %%ymm0, %%ymm4, %%ymm4\n\t"
            "vmulps %%ymm0, %%ymm5, %%ymm5\n\t"
            "vmulps %%ymm0, %%ymm6, %%ymm6\n\t"
            "vmulps %%ymm0, %%ymm7, %%ymm7\n\t"
            "vmulps %%ymm0, %%ymm8, %%ymm8\n\t"
            "vmulps %%ymm0, %%ymm9, %%ymm9\n\t"
            "vmulps %%ymm0, %%ymm10, %%ymm10\n\t"
            "vmulps %%ymm0, %%ymm11, %%ymm11\n\t"
            "vmulps %%ymm0, %%ymm12, %%ymm12\n\t"
            "vmulps %%ymm0, %%ymm13, %%ymm13\n\t"
            "vmulps %%ymm0, %%ymm14, %%ymm14\n\t"
            "vmulps %%ymm0, %%ymm15, %%ymm15\n"
            "3:\n\t"
            "test %[rc], %[rc]\n\t"
            "jz 4f\n\t"
            "vbroadcastss %[beta], %%ymm1\n\t"
            "vfmadd231ps (%[c]), %%ymm1, %%ymm4\n\t"
            "vfmadd231ps 32(%[c]), %%ymm1, %%ymm5\n\t"
            "vfmadd231ps (%[c],%[rsc]), %%ymm1, %%ymm6\n\t"
            "vfmadd231ps 32(%[c],%[rsc]), %%ymm1, %%ymm7\n\t"
            "vfmadd231ps (%[c],%[rsc],2), %%ymm1, %%ymm8\n\t"
            "vfmadd231ps 32(%[c],%[rsc],2), %%ymm1, %%ymm9\n\t"
            "vfmadd231ps (%[c3]), %%ymm1, %%ymm10\n\t"
            "vfmadd231ps 32(%[c3]), %%ymm1, %%ymm11\n\t"
            "vfmadd231ps (%[c3],%[rsc]), %%ymm1, %%ymm12\n\t"
            "vfmadd231ps 32(%[c3],%[rsc]), %%ymm1, %%ymm13\n\t"
            "vfmadd231ps (%[c3],%[rsc],2), %%ymm1, %%ymm14\n\t"
            "vfmadd231ps 32(%[c3],%[rsc],2), %%ymm1, %%ymm15\n"
            "4:\n\t"
            "vmovups %%ymm4, (%[c])\n\t"
            "vmovups %%ymm5, 32(%[c])\n\t"
            "vmovups %%ymm6, (%[c],%[rsc])\n\t"
            "vmovups %%ymm7, 32(%[c],%[rsc])\n\t"
            "vmovups %%ymm8, (%[c],%[rsc],2)\n\t"
            "vmovups %%ymm9, 32(%[c],%[rsc],2)\n\t"
            "vmovups %%ymm10, (%[c3])\n\t"
            "vmovups %%ymm11, 32(%[c3])\n\t"
            "vmovups %%ymm12, (%[c3],%[rsc])\n\t"
            "vmovups %%ymm13, 32(%[c3],%[rsc])\n\t"
            "vmovups %%ymm14, (%[c3],%[rsc],2)\n\t"
            "vmovups %%ymm15, 32(%[c3],%[rsc],2)\n\t"
            : [a] "+r"(a), [b] "+r"(b), [k] "+r"(kk)
            : [rsb] "r"(rs_b_bytes), [lda] "r"(lda_bytes), [c] "r"(c), [c3] "r"(c3), [rsc] "r"(rs_c_bytes),
              [sa] "r"(scale_acc), [rc] "r"(read_c), [alpha] "m"(alpha), [beta] "m"(beta)
            : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
              "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "memory", "cc");
        return;
    }

    // General C strides: the accumulators go through the stack.
    alignas(32) float acc[6][16];
    __asm__ volatile(
        LF_SGEMM_6x16_LOOP
        "vmovaps %%ymm4, 0(%[acc])\n\t"
        "vmovaps %%ymm5, 32(%[acc])\n\t"
        "vmovaps %%ymm6, 64(%[acc])\n\t"
        "vmovaps %%ymm7, 96(%[acc])\n\t"
        "vmovaps %%ymm8, 128(%[acc])\n\t"
        "vmovaps %%ymm9, 160(%[acc])\n\t"
        "vmovaps %%ymm10, 192(%[acc])\n\t"
        "vmovaps %%ymm11, 224(%[acc])\n\t"
        "vmovaps %%ymm12, 256(%[acc])\n\t"
        "vmovaps %%ymm13, 288(%[acc])\n\t"
        "vmovaps %%ymm14, 320(%[acc])\n\t"
        "vmovaps %%ymm15, 352(%[acc])\n\t"
        : [a] "+r"(a), [b] "+r"(b), [k] "+r"(kk)
        : [rsb] "r"(rs_b_bytes), [lda] "r"(lda_bytes), [acc] "r"(&acc[0][0])
        : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",
          "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "memory", "cc");
#undef LF_SGEMM_6x16_LOOP
    const bool bz = beta == 0.0f;
    for (int i = 0; i < 6; ++i)
        for (int j = 0; j < 16; ++j) {
            float& cij = c[i * rs_c + j * cs_c];
            cij = bz ? alpha * acc[i][j] : alpha * acc[i][j] + beta * cij;
        }
}

void sgemm_6x16(int64_t k, const float* a, const float* b, int64_t rs_b, float* c, int64_t rs_c, int64_t cs_c,
                float alpha, float beta) {
    sgemm_6x16_strided_a(k, a, 6, b, rs_b, c, rs_c, cs_c, alpha, beta);
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

// Pack A (float, MR = 6) with AVX2 when its rows are contiguous (the usual activations-times-weights
// case): 8 depth steps at a time, 6 row loads and an 8x8 transpose (rows 6 and 7 are don't-care) instead
// of 48 scalar gathers. Each transposed column is stored as 8 floats at dst + 6p in increasing p, so
// its 2 don't-care lanes are overwritten by the next column; the last store of a panel spills 2 floats
// into the next panel (written afterwards) or into the arena's slack (kGemmPackSlack).
void pack_a_f32_6_avx2(int64_t mc, int64_t kc, const float* A, int64_t rs, int64_t cs, float* Ap) {
    if (cs != 1) {
        pack_a_tiles<float, 6>(mc, kc, A, rs, cs, Ap);
        return;
    }
    for (int64_t i0 = 0; i0 < mc; i0 += 6) {
        const int64_t rows = std::min<int64_t>(6, mc - i0);
        float* dst = Ap + i0 * kc;
        if (rows < 6) {
            pack_a_tiles<float, 6>(rows, kc, A + i0 * rs, rs, cs, dst);
            continue;
        }
        const float* r0 = A + (i0 + 0) * rs;
        const float* r1 = A + (i0 + 1) * rs;
        const float* r2 = A + (i0 + 2) * rs;
        const float* r3 = A + (i0 + 3) * rs;
        const float* r4 = A + (i0 + 4) * rs;
        const float* r5 = A + (i0 + 5) * rs;
        int64_t p = 0;
        for (; p + 8 <= kc; p += 8) {
            const __m256 x0 = _mm256_loadu_ps(r0 + p), x1 = _mm256_loadu_ps(r1 + p);
            const __m256 x2 = _mm256_loadu_ps(r2 + p), x3 = _mm256_loadu_ps(r3 + p);
            const __m256 x4 = _mm256_loadu_ps(r4 + p), x5 = _mm256_loadu_ps(r5 + p);
            const __m256 x6 = _mm256_setzero_ps(), x7 = _mm256_setzero_ps();
            const __m256 t0 = _mm256_unpacklo_ps(x0, x1), t1 = _mm256_unpackhi_ps(x0, x1);
            const __m256 t2 = _mm256_unpacklo_ps(x2, x3), t3 = _mm256_unpackhi_ps(x2, x3);
            const __m256 t4 = _mm256_unpacklo_ps(x4, x5), t5 = _mm256_unpackhi_ps(x4, x5);
            const __m256 t6 = _mm256_unpacklo_ps(x6, x7), t7 = _mm256_unpackhi_ps(x6, x7);
            const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
            const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
            const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
            const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
            float* d = dst + p * 6;
            // column p+j = [rows 0..3 of u_j (low/high half), rows 4..7 of u_{j+4}]
            _mm256_storeu_ps(d + 0, _mm256_permute2f128_ps(u0, u4, 0x20));
            _mm256_storeu_ps(d + 6, _mm256_permute2f128_ps(u1, u5, 0x20));
            _mm256_storeu_ps(d + 12, _mm256_permute2f128_ps(u2, u6, 0x20));
            _mm256_storeu_ps(d + 18, _mm256_permute2f128_ps(u3, u7, 0x20));
            _mm256_storeu_ps(d + 24, _mm256_permute2f128_ps(u0, u4, 0x31));
            _mm256_storeu_ps(d + 30, _mm256_permute2f128_ps(u1, u5, 0x31));
            _mm256_storeu_ps(d + 36, _mm256_permute2f128_ps(u2, u6, 0x31));
            _mm256_storeu_ps(d + 42, _mm256_permute2f128_ps(u3, u7, 0x31));
        }
        for (; p < kc; ++p) {
            float* d = dst + p * 6;
            d[0] = r0[p]; d[1] = r1[p]; d[2] = r2[p]; d[3] = r3[p]; d[4] = r4[p]; d[5] = r5[p];
        }
    }
}

namespace {

// The first M < 6 rows of a 6x16 tile (GemmRowsKernel); A is the packed [k][6] panel. Named accumulators
// (if constexpr drops the unused ones): kept in an array, g++ stored them after every FMA.
template <int M>
void sgemm_rows_16(int64_t k, const float* a, const float* b, int64_t rs_b, float* c, int64_t rs_c, float alpha,
                   float beta) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00,
           c31 = c00, c40 = c00, c41 = c00;
    for (int64_t p = 0; p < k; ++p, a += 6, b += rs_b) {
        const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
        __m256 av = _mm256_broadcast_ss(a);
        c00 = _mm256_fmadd_ps(av, b0, c00), c01 = _mm256_fmadd_ps(av, b1, c01);
        if constexpr (M > 1) {
            av = _mm256_broadcast_ss(a + 1);
            c10 = _mm256_fmadd_ps(av, b0, c10), c11 = _mm256_fmadd_ps(av, b1, c11);
        }
        if constexpr (M > 2) {
            av = _mm256_broadcast_ss(a + 2);
            c20 = _mm256_fmadd_ps(av, b0, c20), c21 = _mm256_fmadd_ps(av, b1, c21);
        }
        if constexpr (M > 3) {
            av = _mm256_broadcast_ss(a + 3);
            c30 = _mm256_fmadd_ps(av, b0, c30), c31 = _mm256_fmadd_ps(av, b1, c31);
        }
        if constexpr (M > 4) {
            av = _mm256_broadcast_ss(a + 4);
            c40 = _mm256_fmadd_ps(av, b0, c40), c41 = _mm256_fmadd_ps(av, b1, c41);
        }
    }
    const __m256 acc[5][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}};
    const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    for (int i = 0; i < M; ++i) {
        float* ci = c + i * rs_c;
        __m256 v0 = acc[i][0], v1 = acc[i][1];
        if (alpha != 1.0f) {
            v0 = _mm256_mul_ps(v0, va);
            v1 = _mm256_mul_ps(v1, va);
        }
        if (beta != 0.0f) {
            v0 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci), v0);
            v1 = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci + 8), v1);
        }
        _mm256_storeu_ps(ci, v0);
        _mm256_storeu_ps(ci + 8, v1);
    }
}

}  // namespace

void sgemm_rows_6x16(int m, int64_t k, const float* a, const float* b, int64_t rs_b, float* c, int64_t rs_c,
                     float alpha, float beta) {
    switch (m) {
        case 1: sgemm_rows_16<1>(k, a, b, rs_b, c, rs_c, alpha, beta); return;
        case 2: sgemm_rows_16<2>(k, a, b, rs_b, c, rs_c, alpha, beta); return;
        case 3: sgemm_rows_16<3>(k, a, b, rs_b, c, rs_c, alpha, beta); return;
        case 4: sgemm_rows_16<4>(k, a, b, rs_b, c, rs_c, alpha, beta); return;
        default: sgemm_rows_16<5>(k, a, b, rs_b, c, rs_c, alpha, beta); return;
    }
}

namespace {

// 8x8 transpose of float rows r[0..7] in place: r[i][j] <- r[j][i].
inline void transpose8_ps(__m256* r) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
    r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
    r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

}  // namespace

// B panels of 16 columns. When B's columns are contiguous (rs == 1: B is a transposed row-major matrix,
// e.g. K^T in attention, the column matrix in conv grad_weight, a @ b.T) each full panel is 16 source
// rows read 8 depth steps at a time and turned by two 8x8 transposes, instead of 16 scalar gathers per
// depth step. Everything else goes to the portable packing.
void pack_b_f32_16_avx2(int64_t kc, int64_t nc, const float* B, int64_t rs, int64_t cs, float* Bp,
                        int64_t panel_begin, int64_t panel_end) {
    if (rs != 1) {
        pack_b_tiles<float, 16>(kc, nc, B, rs, cs, Bp, panel_begin, panel_end);
        return;
    }
    for (int64_t jp = panel_begin; jp < panel_end; ++jp) {
        const int64_t j0 = jp * 16;
        if (nc - j0 < 16) {
            pack_b_tiles<float, 16>(kc, nc, B, rs, cs, Bp, jp, jp + 1);
            continue;
        }
        float* dst = Bp + j0 * kc;
        const float* src = B + j0 * cs;  // column j0 + c at src + c * cs
        int64_t p = 0;
        for (; p + 8 <= kc; p += 8)
            for (int h = 0; h < 2; ++h) {
                __m256 r[8];
                for (int c = 0; c < 8; ++c) r[c] = _mm256_loadu_ps(src + (h * 8 + c) * cs + p);
                transpose8_ps(r);
                for (int i = 0; i < 8; ++i) _mm256_storeu_ps(dst + (p + i) * 16 + h * 8, r[i]);
            }
        for (; p < kc; ++p)
            for (int c = 0; c < 16; ++c) dst[p * 16 + c] = src[c * cs + p];
    }
}

template <>
const GemmKernelInfo<float>& gemm_kernel_avx2<float>() {
    // MC x KC floats of A (144 x 256 = 147 KB) sit in L2; a KC x NR panel of B (16 KB) in L1.
    static const GemmKernelInfo<float> info = blocking_from_env(GemmKernelInfo<float>{
        6, 16, 144, 256, 3072, &sgemm_6x16, &pack_a_f32_6_avx2, &pack_b_f32_16_avx2, &sgemm_rows_6x16,
        &sgemm_6x16_strided_a});
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
