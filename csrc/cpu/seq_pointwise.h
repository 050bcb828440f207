// Internal: the pointwise row kernels of the LSTM and attention families (gate nonlinearities and cell
// update, softmax pieces), portable templates plus AVX2 float versions (seq_pointwise_avx2.cpp, entered
// only when cpu_path() == CpuPath::avx2). Not part of the public C++ API.
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>

#include "layerforge/detail/lstm_cell.h"

#ifndef LAYERFORGE_HAVE_AVX2_BUILD
#define LAYERFORGE_HAVE_AVX2_BUILD 0
#endif

namespace layerforge {
namespace detail {

// ---- LSTM ------------------------------------------------------------------------------------------
// Forward, one batch row, n hidden units (one register tile's worth).
//  Pre-activation of gate q, unit u: a[q * a_gs + u] (the recurrent GEMM tile) + xp[q * H + u] (the input
//  projection, PyTorch's gate layout) + bias[q * H + u] (b_ih + b_hh); c_prev (n) or null (zeros).
//  Writes the activated gates in PyTorch's layout (gates[q * H + u]), c (n), h (n).
template <typename T>
using LstmFwdRowFn = void (*)(int64_t n, int64_t H, const T* a, int64_t a_gs, const T* xp, const T* bias,
                              const T* c_prev, T* gates, T* c, T* h);
// Backward, one batch row: gates/c/c_prev of step t (c_prev null = zeros), dh = gy + dh_rec (gy null =
// zeros), dc in/out (dc of step t in, dc of step t-1 out). Writes the pre-activation gradients dgates
// (PyTorch's layout, as gates).
template <typename T>
using LstmBwdRowFn = void (*)(int64_t n, int64_t H, const T* gates, const T* c, const T* c_prev,
                              const T* gy, const T* dh_rec, T* dc, T* dgates);

template <typename T>
void lstm_fwd_row_generic(int64_t n, int64_t H, const T* a, int64_t a_gs, const T* xp, const T* bias,
                          const T* c_prev, T* gates, T* c, T* h) {
    for (int64_t u = 0; u < n; ++u) {
        T g4[4];
        lstm_cell_forward<T>(a[u] + xp[u] + bias[u], a[a_gs + u] + xp[H + u] + bias[H + u],
                             a[2 * a_gs + u] + xp[2 * H + u] + bias[2 * H + u],
                             a[3 * a_gs + u] + xp[3 * H + u] + bias[3 * H + u], c_prev ? c_prev[u] : T(0), g4, c[u],
                             h[u]);
        for (int q = 0; q < 4; ++q) gates[q * H + u] = g4[q];
    }
}

template <typename T>
void lstm_bwd_row_generic(int64_t n, int64_t H, const T* gates, const T* c, const T* c_prev, const T* gy,
                          const T* dh_rec, T* dc, T* dg) {
    for (int64_t u = 0; u < n; ++u) {
        T d4[4];
        lstm_cell_backward<T>(gates[u], gates[H + u], gates[2 * H + u], gates[3 * H + u], c[u],
                              c_prev ? c_prev[u] : T(0), (gy ? gy[u] : T(0)) + dh_rec[u], dc[u], d4);
        for (int q = 0; q < 4; ++q) dg[q * H + u] = d4[q];
    }
}

// ---- attention -------------------------------------------------------------------------------------
// One key tile of the forward's online softmax, on a transposed score tile in base-2 units: s is c x w (key
// rows, query columns, row stride ld). Per column q: m' = max(m[q], max_k s[k][q]); s[k][q] = 2^(s[k][q] - m')
// (0 where s = -inf); alpha[q] = 2^(m[q] - m') (the factor for what was accumulated: 0 when m[q] = -inf);
// l[q] = l[q] alpha[q] + sum_k s[k][q]; m[q] = m'. A column masked so far keeps m = -inf, l = 0.
template <typename T>
using SoftmaxColsFn = void (*)(int64_t c, int64_t w, T* s, int64_t ld, T* m, T* l, T* alpha);
// s[j] = 2^(s[j] - m) (exactly 0 where s[j] = -inf); returns the sum (the backward's P from the saved lse).
template <typename T>
using Exp2SubSumFn = T (*)(T* s, int64_t n, T m);

template <typename T>
void softmax_cols_generic(int64_t c, int64_t w, T* s, int64_t ld, T* m, T* l, T* alpha) {
    const T ninf = -std::numeric_limits<T>::infinity();
    for (int64_t q = 0; q < w; ++q) {
        T mx = m[q];
        for (int64_t k = 0; k < c; ++k) mx = s[k * ld + q] > mx ? s[k * ld + q] : mx;
        const T ms = mx == ninf ? T(0) : mx;  // all -inf so far: every 2^(s - ms) is 0
        T sum = 0;
        for (int64_t k = 0; k < c; ++k) {
            const T e = std::exp2(s[k * ld + q] - ms);
            s[k * ld + q] = e;
            sum += e;
        }
        alpha[q] = std::exp2(m[q] - ms);
        l[q] = l[q] * alpha[q] + sum;
        m[q] = mx;
    }
}

template <typename T>
T exp2_sub_sum_generic(T* s, int64_t n, T m) {
    T sum = 0;
    for (int64_t j = 0; j < n; ++j) {
        const T e = std::exp2(s[j] - m);
        s[j] = e;
        sum += e;
    }
    return sum;
}

#if LAYERFORGE_HAVE_AVX2_BUILD
void lstm_fwd_row_avx2(int64_t n, int64_t H, const float* a, int64_t a_gs, const float* xp, const float* bias,
                       const float* c_prev, float* gates, float* c, float* h);
void lstm_bwd_row_avx2(int64_t n, int64_t H, const float* gates, const float* c, const float* c_prev,
                       const float* gy, const float* dh_rec, float* dc, float* dg);
void softmax_cols_avx2(int64_t c, int64_t w, float* s, int64_t ld, float* m, float* l, float* alpha);
float exp2_sub_sum_avx2(float* s, int64_t n, float m);
#endif

// The kernels of the current CPU path (float: AVX2 where chosen; double: portable).
template <typename T>
struct SeqKernels {
    LstmFwdRowFn<T> lstm_fwd = &lstm_fwd_row_generic<T>;
    LstmBwdRowFn<T> lstm_bwd = &lstm_bwd_row_generic<T>;
    SoftmaxColsFn<T> softmax_cols = &softmax_cols_generic<T>;
    Exp2SubSumFn<T> exp2_sub_sum = &exp2_sub_sum_generic<T>;
};
SeqKernels<float> seq_kernels_f32();  // defined in lstm.cpp (reads cpu_path())
inline SeqKernels<double> seq_kernels_f64() { return SeqKernels<double>{}; }
template <typename T>
inline SeqKernels<T> seq_kernels();
template <>
inline SeqKernels<float> seq_kernels<float>() { return seq_kernels_f32(); }
template <>
inline SeqKernels<double> seq_kernels<double>() { return seq_kernels_f64(); }

}  // namespace detail
}  // namespace layerforge
