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
template <typename T>
using RowMaxFn = T (*)(const T* s, int64_t n);
// s[j] = exp(s[j] - m) (exactly 0 where s[j] = -inf); returns the sum.
template <typename T>
using ExpSubSumFn = T (*)(T* s, int64_t n, T m);

template <typename T>
T row_max_generic(const T* s, int64_t n) {
    T m = -std::numeric_limits<T>::infinity();
    for (int64_t j = 0; j < n; ++j) m = s[j] > m ? s[j] : m;
    return m;
}

template <typename T>
T exp_sub_sum_generic(T* s, int64_t n, T m) {
    T sum = 0;
    for (int64_t j = 0; j < n; ++j) {
        const T e = std::exp(s[j] - m);
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
float row_max_avx2(const float* s, int64_t n);
float exp_sub_sum_avx2(float* s, int64_t n, float m);
#endif

// The kernels of the current CPU path (float: AVX2 where chosen; double: portable).
template <typename T>
struct SeqKernels {
    LstmFwdRowFn<T> lstm_fwd = &lstm_fwd_row_generic<T>;
    LstmBwdRowFn<T> lstm_bwd = &lstm_bwd_row_generic<T>;
    RowMaxFn<T> row_max = &row_max_generic<T>;
    ExpSubSumFn<T> exp_sub_sum = &exp_sub_sum_generic<T>;
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
