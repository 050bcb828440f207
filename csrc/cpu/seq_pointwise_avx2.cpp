// AVX2+FMA pointwise kernels of the LSTM and attention families (float): a vectorised exp (Cephes-style
// range reduction + degree-5 polynomial, ~1 ulp over the float range) with the LSTM's sigmoid built on it,
// a rational tanh (~5 ulp at worst), and a base-2 exponential for attention's softmax (scores in base-2
// units: no multiply, ~1 ulp) with the softmax row/column kernels.
// Compiled with -mavx2 -mfma; entered only when cpu_path() == CpuPath::avx2.
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "seq_pointwise.h"

namespace layerforge {
namespace detail {

namespace {

// exp(x) for 8 floats (the LSTM's sigmoid); exactly 0 below -87.3 (so -inf gives 0), +inf-clamped above 88.3.
// x = n ln2 + r, |r| <= ln2/2: n comes from one FMA against 1.5 * 2^23 + 127 (the float's low mantissa
// bits then hold n + 127, already the biased exponent of 2^n), exp(r) = 1 + r + r^2 p(r) with p of degree
// 5 evaluated in Estrin form (a shorter dependency chain than Horner). On this project's 2-core VM these
// kernels are bound by their count of vector operations.
inline __m256 exp8(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.3f);
    const __m256 keep = _mm256_cmp_ps(x, lo, _CMP_GE_OQ);
    x = _mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f));
    x = _mm256_max_ps(x, lo);
    const __m256 shifter = _mm256_set1_ps(12582912.0f + 127.0f);
    const __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), shifter);
    const __m256 fx = _mm256_sub_ps(t, shifter);  // n - 0 (exact)
    __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
    const __m256 r2 = _mm256_mul_ps(r, r);
    const __m256 p01 = _mm256_fmadd_ps(_mm256_set1_ps(1.6666665459E-1f), r, _mm256_set1_ps(5.0000001201E-1f));
    const __m256 p23 = _mm256_fmadd_ps(_mm256_set1_ps(8.3334519073E-3f), r, _mm256_set1_ps(4.1665795894E-2f));
    const __m256 p45 = _mm256_fmadd_ps(_mm256_set1_ps(1.9875691500E-4f), r, _mm256_set1_ps(1.3981999507E-3f));
    const __m256 r4 = _mm256_mul_ps(r2, r2);
    const __m256 p03 = _mm256_fmadd_ps(p23, r2, p01);
    const __m256 p = _mm256_fmadd_ps(p45, r4, p03);
    const __m256 y = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(_mm256_castps_si256(t), 23);  // (n + 127) << 23 = 2^n
    return _mm256_and_ps(_mm256_mul_ps(y, _mm256_castsi256_ps(e)), keep);
}

// 2^x for 8 floats with x <= 0 or NaN (softmax in base 2: attention folds log2(e) into the scale of its
// score GEMM, so the exp of every score needs no multiply and no two-part ln2 reduction).
// x = n + f, n = round(x) from the float shifter 1.5 * 2^23 (the low mantissa bits of t hold n), f in
// [-0.5, 0.5]; 2^f by a degree-6 polynomial (fitted on the relative error for this file: 2e-9 in exact
// arithmetic, <= 1e-7 evaluated in float); 2^n by adding n << 23 to the result's exponent bits. Below
// -125 (e^-86.6) the result would leave the normal range: exactly 0 there, as for -inf and NaN (`keep`).
// 14 vector operations against 18 for exp8 without its clamps.
inline __m256 exp2_8_nonpos(__m256 x) {
    const __m256 keep = _mm256_cmp_ps(x, _mm256_set1_ps(-125.0f), _CMP_GE_OQ);
    const __m256 shifter = _mm256_set1_ps(12582912.0f);
    const __m256 t = _mm256_add_ps(x, shifter);
    const __m256 f = _mm256_sub_ps(x, _mm256_sub_ps(t, shifter));
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(1.5353361959569156e-4f), f, _mm256_set1_ps(1.3398875016719103e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.61843691766262e-3f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.5503323674201965e-2f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.4022647738456726e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.931471824645996e-1f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
    const __m256i n = _mm256_slli_epi32(_mm256_castps_si256(t), 23);  // n << 23 (mod 2^32)
    return _mm256_and_ps(_mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), n)), keep);
}

inline __m256 sigmoid8(__m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
    return _mm256_div_ps(one, _mm256_add_ps(one, e));
}

// tanh(x) = x P(x^2) / Q(x^2) for |x| <= 9, P and Q of degree 4 with positive coefficients (fitted for this
// file by least squares on the relative error, Sanathanan-Koerner iterations over [1e-6, 9]: 6e-8 in exact
// arithmetic, <= 3.2e-7 evaluated in float), clamped to [-1, 1]; |x| > 9 gives +-1 (tanh(9) rounds to 1 in
// float). No exp and no cancellation near 0: 15 vector operations against ~33 for (1 - e) / (1 + e) with a
// small-|x| branch, and the LSTM's gates are bound by their operation count. The min/max operand order lets
// NaN through.
inline __m256 tanh8(__m256 x) {
    const __m256 lim = _mm256_set1_ps(9.0f), one = _mm256_set1_ps(1.0f);
    x = _mm256_max_ps(_mm256_set1_ps(-9.0f), _mm256_min_ps(lim, x));
    const __m256 z = _mm256_mul_ps(x, x);
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(1.365683458e-08f), z, _mm256_set1_ps(2.082745858e-05f));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(3.508876229e-03f));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(1.339222188e-01f));
    p = _mm256_fmadd_ps(p, z, _mm256_set1_ps(9.999999861e-01f));
    __m256 q = _mm256_fmadd_ps(_mm256_set1_ps(7.900315461e-07f), z, _mm256_set1_ps(3.307352671e-04f));
    q = _mm256_fmadd_ps(q, z, _mm256_set1_ps(2.592755791e-02f));
    q = _mm256_fmadd_ps(q, z, _mm256_set1_ps(4.672554111e-01f));
    q = _mm256_fmadd_ps(q, z, one);
    const __m256 t = _mm256_div_ps(_mm256_mul_ps(x, p), q);
    return _mm256_max_ps(_mm256_set1_ps(-1.0f), _mm256_min_ps(one, t));
}

inline float hsum8(__m256 v) {
    __m128 m = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_add_ps(m, _mm_movehl_ps(m, m));
    m = _mm_add_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}

}  // namespace

void lstm_fwd_row_avx2(int64_t n, int64_t H, const float* a, int64_t a_gs, const float* xp, const float* bias,
                       const float* c_prev, float* gates, float* c, float* h) {
    auto pre = [&](int q, int64_t u) {
        return _mm256_add_ps(_mm256_loadu_ps(a + q * a_gs + u),
                             _mm256_add_ps(_mm256_loadu_ps(xp + q * H + u), _mm256_loadu_ps(bias + q * H + u)));
    };
    int64_t u = 0;
    for (; u + 8 <= n; u += 8) {
        const __m256 i = sigmoid8(pre(0, u));
        const __m256 f = sigmoid8(pre(1, u));
        const __m256 g = tanh8(pre(2, u));
        const __m256 o = sigmoid8(pre(3, u));
        __m256 cn = _mm256_mul_ps(i, g);
        if (c_prev) cn = _mm256_fmadd_ps(f, _mm256_loadu_ps(c_prev + u), cn);
        _mm256_storeu_ps(gates + u, i);
        _mm256_storeu_ps(gates + H + u, f);
        _mm256_storeu_ps(gates + 2 * H + u, g);
        _mm256_storeu_ps(gates + 3 * H + u, o);
        _mm256_storeu_ps(c + u, cn);
        _mm256_storeu_ps(h + u, _mm256_mul_ps(o, tanh8(cn)));
    }
    if (u < n) {
        // tail: the same vector math on a padded copy (identical rounding to the full vectors)
        alignas(32) float buf[6][8] = {};
        const int64_t r = n - u;
        for (int64_t q = 0; q < 4; ++q)
            for (int64_t j = 0; j < r; ++j) buf[q][j] = a[q * a_gs + u + j] + (xp[q * H + u + j] + bias[q * H + u + j]);
        for (int64_t j = 0; j < r; ++j) buf[4][j] = c_prev ? c_prev[u + j] : 0.0f;
        const __m256 i = sigmoid8(_mm256_load_ps(buf[0])), f = sigmoid8(_mm256_load_ps(buf[1]));
        const __m256 g = tanh8(_mm256_load_ps(buf[2])), o = sigmoid8(_mm256_load_ps(buf[3]));
        const __m256 cn = _mm256_fmadd_ps(f, _mm256_load_ps(buf[4]), _mm256_mul_ps(i, g));
        const __m256 hn = _mm256_mul_ps(o, tanh8(cn));
        _mm256_store_ps(buf[0], i);
        _mm256_store_ps(buf[1], f);
        _mm256_store_ps(buf[2], g);
        _mm256_store_ps(buf[3], o);
        _mm256_store_ps(buf[4], cn);
        _mm256_store_ps(buf[5], hn);
        for (int64_t j = 0; j < r; ++j) {
            for (int64_t q = 0; q < 4; ++q) gates[q * H + u + j] = buf[q][j];
            c[u + j] = buf[4][j];
            h[u + j] = buf[5][j];
        }
    }
}

void lstm_bwd_row_avx2(int64_t n, int64_t H, const float* gates, const float* c, const float* c_prev,
                       const float* gy, const float* dh_rec, float* dc, float* dg) {
    const __m256 one = _mm256_set1_ps(1.0f);
    int64_t u = 0;
    for (; u + 8 <= n; u += 8) {
        const __m256 i = _mm256_loadu_ps(gates + u), f = _mm256_loadu_ps(gates + H + u);
        const __m256 g = _mm256_loadu_ps(gates + 2 * H + u), o = _mm256_loadu_ps(gates + 3 * H + u);
        __m256 dh = _mm256_loadu_ps(dh_rec + u);
        if (gy) dh = _mm256_add_ps(dh, _mm256_loadu_ps(gy + u));
        const __m256 tc = tanh8(_mm256_loadu_ps(c + u));
        const __m256 dct = _mm256_fmadd_ps(_mm256_mul_ps(dh, o), _mm256_fnmadd_ps(tc, tc, one),
                                           _mm256_loadu_ps(dc + u));
        const __m256 cp = c_prev ? _mm256_loadu_ps(c_prev + u) : _mm256_setzero_ps();
        _mm256_storeu_ps(dg + u, _mm256_mul_ps(_mm256_mul_ps(dct, g), _mm256_mul_ps(i, _mm256_sub_ps(one, i))));
        _mm256_storeu_ps(dg + H + u,
                         _mm256_mul_ps(_mm256_mul_ps(dct, cp), _mm256_mul_ps(f, _mm256_sub_ps(one, f))));
        _mm256_storeu_ps(dg + 2 * H + u, _mm256_mul_ps(_mm256_mul_ps(dct, i), _mm256_fnmadd_ps(g, g, one)));
        _mm256_storeu_ps(dg + 3 * H + u,
                         _mm256_mul_ps(_mm256_mul_ps(dh, tc), _mm256_mul_ps(o, _mm256_sub_ps(one, o))));
        _mm256_storeu_ps(dc + u, _mm256_mul_ps(dct, f));
    }
    if (u < n)
        lstm_bwd_row_generic<float>(n - u, H, gates + u, c + u, c_prev ? c_prev + u : nullptr,
                                    gy ? gy + u : nullptr, dh_rec + u, dc + u, dg + u);
}

// softmax_cols_generic's contract (seq_pointwise.h), 8 query columns at a time: a pass down the tile for the
// column maxima, a second for the exponentials and column sums (two rows per step: independent chains). The
// c x 8 column block (8 KB at c = 256) stays in L1 between the passes.
void softmax_cols_avx2(int64_t c, int64_t w, float* s, int64_t ld, float* m, float* l, float* alpha) {
    const __m256 ninf = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
    int64_t q = 0;
    for (; q + 8 <= w; q += 8) {
        float* col = s + q;
        const __m256 mo = _mm256_loadu_ps(m + q);
        __m256 mx0 = mo, mx1 = mo;
        int64_t k = 0;
        for (; k + 2 <= c; k += 2) {
            mx0 = _mm256_max_ps(mx0, _mm256_loadu_ps(col + k * ld));
            mx1 = _mm256_max_ps(mx1, _mm256_loadu_ps(col + (k + 1) * ld));
        }
        if (k < c) mx0 = _mm256_max_ps(mx0, _mm256_loadu_ps(col + k * ld));
        const __m256 mx = _mm256_max_ps(mx0, mx1);
        const __m256 ms = _mm256_andnot_ps(_mm256_cmp_ps(mx, ninf, _CMP_EQ_OQ), mx);  // -inf -> 0
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        for (k = 0; k + 2 <= c; k += 2) {
            const __m256 e0 = exp2_8_nonpos(_mm256_sub_ps(_mm256_loadu_ps(col + k * ld), ms));
            const __m256 e1 = exp2_8_nonpos(_mm256_sub_ps(_mm256_loadu_ps(col + (k + 1) * ld), ms));
            _mm256_storeu_ps(col + k * ld, e0);
            _mm256_storeu_ps(col + (k + 1) * ld, e1);
            a0 = _mm256_add_ps(a0, e0);
            a1 = _mm256_add_ps(a1, e1);
        }
        if (k < c) {
            const __m256 e0 = exp2_8_nonpos(_mm256_sub_ps(_mm256_loadu_ps(col + k * ld), ms));
            _mm256_storeu_ps(col + k * ld, e0);
            a0 = _mm256_add_ps(a0, e0);
        }
        const __m256 al = exp2_8_nonpos(_mm256_sub_ps(mo, ms));
        _mm256_storeu_ps(alpha + q, al);
        _mm256_storeu_ps(l + q, _mm256_fmadd_ps(_mm256_loadu_ps(l + q), al, _mm256_add_ps(a0, a1)));
        _mm256_storeu_ps(m + q, mx);
    }
    if (q < w) softmax_cols_generic<float>(c, w - q, s + q, ld, m + q, l + q, alpha + q);
}

float exp2_sub_sum_avx2(float* s, int64_t n, float m) {
    const __m256 vm = _mm256_set1_ps(m);
    __m256 acc = _mm256_setzero_ps();
    __m256 acc1 = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {  // two independent chains per iteration
        const __m256 e0 = exp2_8_nonpos(_mm256_sub_ps(_mm256_loadu_ps(s + j), vm));
        const __m256 e1 = exp2_8_nonpos(_mm256_sub_ps(_mm256_loadu_ps(s + j + 8), vm));
        _mm256_storeu_ps(s + j, e0);
        _mm256_storeu_ps(s + j + 8, e1);
        acc = _mm256_add_ps(acc, e0);
        acc1 = _mm256_add_ps(acc1, e1);
    }
    acc = _mm256_add_ps(acc, acc1);
    for (; j + 8 <= n; j += 8) {
        const __m256 e = exp2_8_nonpos(_mm256_sub_ps(_mm256_loadu_ps(s + j), vm));
        _mm256_storeu_ps(s + j, e);
        acc = _mm256_add_ps(acc, e);
    }
    if (j < n) {
        alignas(32) float buf[8];
        const int64_t r = n - j;
        for (int64_t t = 0; t < 8; ++t) buf[t] = t < r ? s[j + t] : -std::numeric_limits<float>::infinity();
        const __m256 e = exp2_8_nonpos(_mm256_sub_ps(_mm256_load_ps(buf), vm));
        _mm256_store_ps(buf, e);
        acc = _mm256_add_ps(acc, e);
        for (int64_t t = 0; t < r; ++t) s[j + t] = buf[t];
    }
    return hsum8(acc);
}

}  // namespace detail
}  // namespace layerforge
