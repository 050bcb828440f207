// layerforge/detail/lstm_checks.h — argument checks shared by the CPU (csrc/cpu/lstm.cpp) and GPU
// (csrc/cuda/lstm.cu) LSTM entry points: the same inputs are rejected with the same words on both devices.
#pragma once
#include <initializer_list>
#include <string>

#include "layerforge/error.h"
#include "layerforge/view.h"

namespace layerforge {
namespace detail {

struct LstmDims {
    int64_t T, B, I, H;
    DType dt;
};

[[noreturn]] inline void lstm_fail(const std::string& what) { throw ValueError("lstm: " + what); }

inline void lstm_expect_shape(const View& v, const char* name, std::initializer_list<int64_t> shape) {
    bool ok = v.ndim == static_cast<int>(shape.size());
    int d = 0;
    if (ok)
        for (int64_t s : shape) ok = ok && v.shape[d++] == s;
    if (!ok) {
        std::string s = "(";
        d = 0;
        for (int64_t x : shape) s += (d++ ? ", " : "") + std::to_string(x);
        lstm_fail(std::string(name) + " has shape " + v.shape_str() + ", expected " + s + ")");
    }
}

inline void lstm_expect_contiguous(const View& v, const char* name) {
    if (!v.is_contiguous()) lstm_fail(std::string(name) + " must be C-contiguous");
}

inline void lstm_expect_rows(const View& v, const char* name) {  // 2-d with unit column stride
    if (v.shape[1] > 1 && v.strides[1] != 1) lstm_fail(std::string(name) + " must have unit stride in its last dim");
}

// x (T, B, I) contiguous, w_hh (4H, H), w_ih (4H, I), h0/c0 (B, H) with unit column stride, one dtype
// (float32 or float64).
inline LstmDims lstm_check_common(const View& x, const View* h0, const View* c0, const View& w_ih, const View& w_hh) {
    if (x.ndim != 3) lstm_fail("x must be 3-d (T, B, I), got shape " + x.shape_str());
    LstmDims d{x.shape[0], x.shape[1], x.shape[2], 0, x.dtype};
    if (d.dt != DType::f32 && d.dt != DType::f64)
        throw DTypeError(std::string("lstm: unsupported dtype ") + dtype_name(d.dt));
    if (w_hh.ndim != 2 || w_hh.shape[0] % 4 != 0 || w_hh.shape[0] != 4 * w_hh.shape[1])
        lstm_fail("w_hh must have shape (4H, H), got " + w_hh.shape_str());
    d.H = w_hh.shape[1];
    lstm_expect_shape(w_ih, "w_ih", {4 * d.H, d.I});
    if (h0) lstm_expect_shape(*h0, "h0", {d.B, d.H}), lstm_expect_rows(*h0, "h0");
    if (c0) lstm_expect_shape(*c0, "c0", {d.B, d.H}), lstm_expect_rows(*c0, "c0");
    for (const View* v : {&w_ih, &w_hh, h0, c0})
        if (v && v->dtype != d.dt) throw DTypeError("lstm: all arrays must have the dtype of x");
    lstm_expect_contiguous(x, "x");
    return d;
}

// The forward's arrays (see lstm.h).
inline LstmDims lstm_check_forward(const View& x, const View* h0, const View* c0, const View& w_ih, const View& w_hh,
                                   const View* b_ih, const View* b_hh, const View& y, const View& h_T,
                                   const View& c_T, const View& gates, const View& cells) {
    const LstmDims d = lstm_check_common(x, h0, c0, w_ih, w_hh);
    if (b_ih) lstm_expect_shape(*b_ih, "b_ih", {4 * d.H});
    if (b_hh) lstm_expect_shape(*b_hh, "b_hh", {4 * d.H});
    lstm_expect_shape(y, "y", {d.T, d.B, d.H});
    lstm_expect_shape(gates, "gates", {d.T, d.B, 4 * d.H});
    lstm_expect_shape(cells, "cells", {d.T, d.B, d.H});
    lstm_expect_shape(h_T, "h_T", {d.B, d.H});
    lstm_expect_shape(c_T, "c_T", {d.B, d.H});
    for (const View* v : {b_ih, b_hh, &y, &gates, &cells, &h_T, &c_T})
        if (v && v->dtype != d.dt) throw DTypeError("lstm: all arrays must have the dtype of x");
    lstm_expect_contiguous(y, "y");
    lstm_expect_contiguous(gates, "gates");
    lstm_expect_contiguous(cells, "cells");
    return d;
}

// The backward's arrays (see lstm.h).
inline LstmDims lstm_check_backward(const View& x, const View* h0, const View* c0, const View& w_ih,
                                    const View& w_hh, const View& y, const View& gates, const View& cells,
                                    const View* grad_y, const View* grad_h_T, const View* grad_c_T,
                                    const View* grad_x, const View* grad_h0, const View* grad_c0,
                                    const View* grad_w_ih, const View* grad_w_hh, const View* grad_b_ih,
                                    const View* grad_b_hh) {
    const LstmDims d = lstm_check_common(x, h0, c0, w_ih, w_hh);
    lstm_expect_shape(y, "y", {d.T, d.B, d.H});
    lstm_expect_shape(gates, "gates", {d.T, d.B, 4 * d.H});
    lstm_expect_shape(cells, "cells", {d.T, d.B, d.H});
    lstm_expect_contiguous(y, "y");
    lstm_expect_contiguous(gates, "gates");
    lstm_expect_contiguous(cells, "cells");
    if (grad_y) lstm_expect_shape(*grad_y, "grad_y", {d.T, d.B, d.H}), lstm_expect_contiguous(*grad_y, "grad_y");
    if (grad_h_T) lstm_expect_shape(*grad_h_T, "grad_h_T", {d.B, d.H});
    if (grad_c_T) lstm_expect_shape(*grad_c_T, "grad_c_T", {d.B, d.H});
    if (grad_x) lstm_expect_shape(*grad_x, "grad_x", {d.T, d.B, d.I}), lstm_expect_contiguous(*grad_x, "grad_x");
    if (grad_h0) lstm_expect_shape(*grad_h0, "grad_h0", {d.B, d.H});
    if (grad_c0) lstm_expect_shape(*grad_c0, "grad_c0", {d.B, d.H});
    if (grad_w_ih) lstm_expect_shape(*grad_w_ih, "grad_w_ih", {4 * d.H, d.I});
    if (grad_w_hh) lstm_expect_shape(*grad_w_hh, "grad_w_hh", {4 * d.H, d.H});
    if (grad_b_ih) lstm_expect_shape(*grad_b_ih, "grad_b_ih", {4 * d.H});
    if (grad_b_hh) lstm_expect_shape(*grad_b_hh, "grad_b_hh", {4 * d.H});
    for (const View* v : {&y, &gates, &cells, grad_y, grad_h_T, grad_c_T, grad_x, grad_h0, grad_c0, grad_w_ih,
                          grad_w_hh, grad_b_ih, grad_b_hh})
        if (v && v->dtype != d.dt) throw DTypeError("lstm: all arrays must have the dtype of x");
    return d;
}

}  // namespace detail
}  // namespace layerforge
