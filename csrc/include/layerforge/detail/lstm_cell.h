// layerforge/detail/lstm_cell.h — the LSTM cell's pointwise math (PyTorch's gates i, f, g, o), one
// definition for the CPU row kernels (csrc/cpu/seq_pointwise.h) and the CUDA kernels (csrc/cuda/lstm.cu).
#pragma once
#include <cmath>

#include "layerforge/detail/host_device.h"

namespace layerforge {
namespace detail {

template <typename T>
LAYERFORGE_HOST_DEVICE T lstm_sigmoid(T x) {
    using std::exp;
    return T(1) / (T(1) + exp(-x));
}

// Forward from the pre-activations a_i, a_f, a_g, a_o and c_{t-1} (0 for a zero state): the activated gates
// (i, f, g, o), c_t and h_t.
template <typename T>
LAYERFORGE_HOST_DEVICE void lstm_cell_forward(T ai, T af, T ag, T ao, T c_prev, T* gate4, T& c, T& h) {
    using std::tanh;
    const T i = lstm_sigmoid(ai), f = lstm_sigmoid(af), g = tanh(ag), o = lstm_sigmoid(ao);
    c = f * c_prev + i * g;
    h = o * tanh(c);
    gate4[0] = i;
    gate4[1] = f;
    gate4[2] = g;
    gate4[3] = o;
}

// Backward of one unit: activated gates (i, f, g, o), c_t, c_{t-1}, dh = dL/dh_t (the output's gradient
// plus the recurrent one), dc = dL/dc_t from step t+1 (in) -> dL/dc_{t-1} (out). Writes the gradients of
// the four pre-activations.
template <typename T>
LAYERFORGE_HOST_DEVICE void lstm_cell_backward(T i, T f, T g, T o, T c, T c_prev, T dh, T& dc, T* dgate4) {
    using std::tanh;
    const T tc = tanh(c);
    const T dct = dc + dh * o * (T(1) - tc * tc);
    dgate4[0] = dct * g * i * (T(1) - i);
    dgate4[1] = dct * c_prev * f * (T(1) - f);
    dgate4[2] = dct * i * (T(1) - g * g);
    dgate4[3] = dh * tc * o * (T(1) - o);
    dc = dct * f;
}

}  // namespace detail
}  // namespace layerforge
