// layerforge/detail/elementwise_checks.h — argument validation of the elementwise and optimizer entry
// points, shared by the CPU (csrc/cpu/elementwise.cpp, optim.cpp) and CUDA (csrc/cuda/elementwise.cu,
// optim.cu) launchers, so that both devices reject the same inputs with the same messages.
//
// Every validator throws layerforge::ValueError (shape, contiguity, missing state) or DTypeError (dtype)
// and returns the dimensions the kernels need. Header-only and free of CUDA types: nvcc and the host
// compiler both include it.
#pragma once
#include <cstdint>
#include <string>

#include "layerforge/error.h"
#include "layerforge/optim.h"
#include "layerforge/view.h"

namespace layerforge {
namespace detail {

// v: same dtype as ref, C-contiguous, and (same_shape) ref's shape.
inline void check_like(const View& v, const View& ref, const char* op, const char* name, bool same_shape) {
    if (v.dtype != ref.dtype)
        throw DTypeError(std::string(op) + ": " + name + " has dtype " + dtype_name(v.dtype) + ", expected " +
                         dtype_name(ref.dtype));
    if (!v.is_contiguous()) throw ValueError(std::string(op) + ": " + name + " must be C-contiguous");
    if (same_shape) {
        bool ok = v.ndim == ref.ndim;
        for (int d = 0; ok && d < v.ndim; ++d) ok = v.shape[d] == ref.shape[d];
        if (!ok)
            throw ValueError(std::string(op) + ": " + name + " has shape " + v.shape_str() + ", expected " +
                             ref.shape_str());
    }
}

// An optional vector of n elements (weight, bias, mean, ...): ref's dtype, contiguous.
inline void check_vec(const View* v, const View& ref, int64_t n, const char* op, const char* name) {
    if (!v) return;
    check_like(*v, ref, op, name, false);
    if (v->numel() != n)
        throw ValueError(std::string(op) + ": " + name + " has shape " + v->shape_str() + ", expected (" +
                         std::to_string(n) + ",)");
}

inline void check_float(const View& v, const char* op) {
    if (v.dtype != DType::f32 && v.dtype != DType::f64)
        throw DTypeError(std::string(op) + ": unsupported dtype " + dtype_name(v.dtype) +
                         " (float32 and float64 are supported)");
}

inline int64_t last_dim(const View& v) { return v.ndim == 0 ? 1 : v.shape[v.ndim - 1]; }

// Rows (leading dims flattened) and columns (the last dim) of a reduction along the last dim.
struct RowsCols {
    int64_t rows = 0, cols = 0;
};
inline RowsCols rows_cols(const View& v) {
    const int64_t C = last_dim(v), n = v.numel();
    return {C ? n / C : 0, C};
}

// ---- elementwise ------------------------------------------------------------------------------------
inline int64_t check_activation(const View& x, const View& y) {
    check_like(x, x, "activation", "x", false);
    check_like(y, x, "activation", "y", true);
    check_float(x, "activation");
    return x.numel();
}

inline int64_t check_activation_backward(const View& gy, const View& s, const View& gx) {
    check_like(gy, gy, "activation_backward", "grad_y", false);
    check_like(s, gy, "activation_backward", "saved", true);
    check_like(gx, gy, "activation_backward", "grad_x", true);
    check_float(gy, "activation_backward");
    return gy.numel();
}

inline RowsCols check_softmax(const View& x, const View& y, bool log) {
    const char* op = log ? "log_softmax" : "softmax";
    check_like(x, x, op, "x", false);
    check_like(y, x, op, "y", true);
    check_float(x, op);
    return rows_cols(x);
}

inline RowsCols check_softmax_backward(const View& gy, const View& y, const View& gx, bool log) {
    const char* op = log ? "log_softmax_backward" : "softmax_backward";
    check_like(gy, gy, op, "grad_y", false);
    check_like(y, gy, op, "y", true);
    check_like(gx, gy, op, "grad_x", true);
    check_float(gy, op);
    return rows_cols(gy);
}

// logits (N, C); weight (C) / nll, smooth (N) / grad (N, C).
inline RowsCols check_cross_entropy(const View& x, const View* weight, const View& nll, const View* smooth,
                                    const View* grad) {
    const char* op = "cross_entropy";
    check_like(x, x, op, "logits", false);
    if (x.ndim != 2) throw ValueError(std::string(op) + ": logits must be (N, C), got " + x.shape_str());
    check_float(x, op);
    const int64_t N = x.shape[0], C = x.shape[1];
    check_vec(weight, x, C, op, "weight");
    check_vec(&nll, x, N, op, "nll");
    check_vec(smooth, x, N, op, "smooth");
    if (grad) check_like(*grad, x, op, "grad", true);
    return {N, C};
}

// x (R, D) rows flattened; weight, bias (D); y like x; mean, rstd (R).
inline RowsCols check_layer_norm(const View& x, const View* w, const View* b, const View& y, const View& mean,
                                 const View& rstd) {
    const char* op = "layer_norm";
    check_like(x, x, op, "x", false);
    check_like(y, x, op, "y", true);
    check_float(x, op);
    const RowsCols rc = rows_cols(x);
    check_vec(w, x, rc.cols, op, "weight");
    check_vec(b, x, rc.cols, op, "bias");
    check_vec(&mean, x, rc.rows, op, "mean");
    check_vec(&rstd, x, rc.rows, op, "rstd");
    return rc;
}

inline RowsCols check_layer_norm_backward(const View& gy, const View& x, const View& mean, const View& rstd,
                                          const View* w, const View& gx, const View* gw, const View* gb) {
    const char* op = "layer_norm_backward";
    check_like(x, x, op, "x", false);
    check_like(gy, x, op, "grad_y", true);
    check_like(gx, x, op, "grad_x", true);
    check_float(x, op);
    const RowsCols rc = rows_cols(x);
    check_vec(w, x, rc.cols, op, "weight");
    check_vec(gw, x, rc.cols, op, "grad_weight");
    check_vec(gb, x, rc.cols, op, "grad_bias");
    check_vec(&mean, x, rc.rows, op, "mean");
    check_vec(&rstd, x, rc.rows, op, "rstd");
    return rc;
}

// ---- optimizers ---------------------------------------------------------------------------------------
// A state view: param's dtype and shape, contiguous; `required` says whether it may be absent (null).
inline void check_state(const View* v, const View& p, const char* op, const char* name, bool required) {
    if (!v) {
        if (required) throw ValueError(std::string(op) + ": " + name + " is required");
        return;
    }
    check_like(*v, p, op, name, true);
}

// Each returns the state views the update reads (null where the hyperparameters need none).
inline const View* check_sgd(const View& p, const View& g, const View* buf, const SgdParams& prm) {
    check_like(p, p, "sgd_step", "param", false);
    check_float(p, "sgd_step");
    check_state(&g, p, "sgd_step", "grad", true);
    check_state(buf, p, "sgd_step", "momentum_buffer", prm.momentum != 0);
    return prm.momentum != 0 ? buf : nullptr;
}

inline const View* check_adam(const View& p, const View& g, const View& m, const View& v, const View* vmax,
                              const AdamParams& prm) {
    const char* op = prm.decoupled ? "adamw_step" : "adam_step";
    check_like(p, p, op, "param", false);
    check_float(p, op);
    check_state(&g, p, op, "grad", true);
    check_state(&m, p, op, "exp_avg", true);
    check_state(&v, p, op, "exp_avg_sq", true);
    check_state(vmax, p, op, "max_exp_avg_sq", prm.amsgrad);
    if (prm.step < 1) throw ValueError(std::string(op) + ": step must be >= 1");
    return prm.amsgrad ? vmax : nullptr;
}

struct RmspropState {
    const View* grad_avg;
    const View* momentum_buffer;
};
inline RmspropState check_rmsprop(const View& p, const View& g, const View& sq, const View* ga, const View* buf,
                                  const RmspropParams& prm) {
    const char* op = "rmsprop_step";
    check_like(p, p, op, "param", false);
    check_float(p, op);
    check_state(&g, p, op, "grad", true);
    check_state(&sq, p, op, "square_avg", true);
    check_state(ga, p, op, "grad_avg", prm.centered);
    check_state(buf, p, op, "momentum_buffer", prm.momentum > 0);
    return {prm.centered ? ga : nullptr, prm.momentum > 0 ? buf : nullptr};
}

}  // namespace detail
}  // namespace layerforge
