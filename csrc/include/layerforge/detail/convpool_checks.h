// layerforge/detail/convpool_checks.h — INTERNAL: the argument checks of every conv2d / pooling entry point,
// written once and called by both implementations (csrc/cpu/conv.cpp, pool.cpp and csrc/cuda/conv.cu,
// pool.cu), so the CPU and the GPU accept and reject exactly the same calls with the same messages.
// Header-only: the CUDA library does not link the CPU one. Not for AVX2-compiled files (std::string).
//
// Errors: ValueError for shapes/values, DTypeError for dtypes (error.h). Every view must be C-contiguous.
#pragma once
#include <cstdint>
#include <string>

#include "layerforge/conv.h"
#include "layerforge/detail/convpool_geometry.h"
#include "layerforge/pool.h"
#include "layerforge/view.h"

namespace layerforge {
namespace detail {

inline std::string num(int64_t v) { return std::to_string(v); }

inline void require_contiguous(const View& v, const char* op, const char* name) {
    if (!v.is_contiguous())
        throw ValueError(std::string(op) + ": " + name + " must be C-contiguous (the Python layer copies)");
}

// ------------------------------------------------------------------------------------------------ conv2d

// Geometry of conv2d(x, w) with params p; checks ranks, dtypes (float32/float64, equal), params, groups,
// channel counts, that the dilated kernel fits the padded input, and contiguity.
inline ConvGeo conv_geometry(const View& x, const View& w, const Conv2dParams& p, const char* op) {
    const std::string o(op);
    if (x.ndim != 4) throw ValueError(o + ": x must be 4-d, got shape " + x.shape_str());
    if (w.ndim != 4) throw ValueError(o + ": weight must be 4-d, got shape " + w.shape_str());
    if (x.dtype != DType::f32 && x.dtype != DType::f64)
        throw DTypeError(o + ": x has unsupported dtype " + dtype_name(x.dtype));
    if (w.dtype != x.dtype)
        throw DTypeError(o + ": weight dtype " + dtype_name(w.dtype) + " differs from x dtype " + dtype_name(x.dtype));
    if (p.stride_h < 1 || p.stride_w < 1) throw ValueError(o + ": stride must be positive");
    if (p.dil_h < 1 || p.dil_w < 1) throw ValueError(o + ": dilation must be positive");
    if (p.pad_top < 0 || p.pad_bottom < 0 || p.pad_left < 0 || p.pad_right < 0)
        throw ValueError(o + ": padding must be non-negative");
    if (p.groups < 1) throw ValueError(o + ": groups must be positive");
    ConvGeo g{};
    g.nhwc = p.layout == Layout::NHWC;
    g.N = x.shape[0];
    g.C = g.nhwc ? x.shape[3] : x.shape[1];
    g.H = g.nhwc ? x.shape[1] : x.shape[2];
    g.W = g.nhwc ? x.shape[2] : x.shape[3];
    g.K = w.shape[0];
    g.Cg = g.nhwc ? w.shape[3] : w.shape[1];
    g.R = g.nhwc ? w.shape[1] : w.shape[2];
    g.S = g.nhwc ? w.shape[2] : w.shape[3];
    g.G = p.groups;
    if (g.C < 1 || g.H < 1 || g.W < 1 || g.K < 1 || g.R < 1 || g.S < 1 || g.Cg < 1)
        throw ValueError(o + ": empty dimension in x " + x.shape_str() + " or weight " + w.shape_str());
    if (g.C % g.G || g.K % g.G)
        throw ValueError(o + ": groups=" + num(g.G) + " must divide the input channels (" + num(g.C) +
                         ") and output channels (" + num(g.K) + ")");
    if (g.Cg * g.G != g.C)
        throw ValueError(o + ": weight " + w.shape_str() + " expects " + num(g.Cg * g.G) +
                         " input channels (C/groups * groups), x " + x.shape_str() + " has " + num(g.C));
    g.Kg = g.K / g.G;
    g.sh = p.stride_h;
    g.sw = p.stride_w;
    g.pt = p.pad_top;
    g.pl = p.pad_left;
    g.dh = p.dil_h;
    g.dw = p.dil_w;
    const int64_t eh = g.dh * (g.R - 1) + 1, ew = g.dw * (g.S - 1) + 1;
    const int64_t Hp = g.H + p.pad_top + p.pad_bottom, Wp = g.W + p.pad_left + p.pad_right;
    if (eh > Hp || ew > Wp)
        throw ValueError(o + ": kernel (" + num(eh) + ", " + num(ew) + ") with dilation is larger than the padded input (" +
                         num(Hp) + ", " + num(Wp) + ")");
    g.P = (Hp - eh) / g.sh + 1;
    g.Q = (Wp - ew) / g.sw + 1;
    require_contiguous(x, op, "x");
    require_contiguous(w, op, "weight");
    return g;
}

// v must have shape (a, b, c, d), dtype dt and be contiguous.
inline void conv_check_4d(const View& v, int64_t a, int64_t b, int64_t c, int64_t d, DType dt, const char* op,
                          const char* name) {
    if (v.ndim != 4 || v.shape[0] != a || v.shape[1] != b || v.shape[2] != c || v.shape[3] != d)
        throw ValueError(std::string(op) + ": " + name + " has shape " + v.shape_str() + ", expected (" + num(a) +
                         ", " + num(b) + ", " + num(c) + ", " + num(d) + ")");
    if (v.dtype != dt) throw DTypeError(std::string(op) + ": " + name + " dtype differs from x dtype");
    require_contiguous(v, op, name);
}

inline void conv_check_out(const View& out, const ConvGeo& g, DType dt, const char* op, const char* name) {
    if (g.nhwc)
        conv_check_4d(out, g.N, g.P, g.Q, g.K, dt, op, name);
    else
        conv_check_4d(out, g.N, g.K, g.P, g.Q, dt, op, name);
}

inline void conv_check_vec(const View& b, int64_t K, DType dt, const char* op, const char* name) {
    if (b.ndim != 1 || b.shape[0] != K)
        throw ValueError(std::string(op) + ": " + name + " has shape " + b.shape_str() + ", expected (" + num(K) + ",)");
    if (b.dtype != dt) throw DTypeError(std::string(op) + ": " + name + " dtype differs from x dtype");
    if (b.shape[0] > 1 && b.strides[0] != 1) throw ValueError(std::string(op) + ": " + name + " must be contiguous");
}

// Everything conv2d_forward checks (out (N, K, P, Q) / (N, P, Q, K); bias (K,) or nullptr).
inline ConvGeo check_conv2d_forward(const View& x, const View& w, const View* bias, const View& out,
                                    const Conv2dParams& p) {
    const ConvGeo g = conv_geometry(x, w, p, "conv2d");
    conv_check_out(out, g, x.dtype, "conv2d", "out");
    if (bias) conv_check_vec(*bias, g.K, x.dtype, "conv2d", "bias");
    return g;
}

// Everything conv2d_backward checks (each gradient may be nullptr).
inline ConvGeo check_conv2d_backward(const View& grad_out, const View& x, const View& w, const View* grad_x,
                                     const View* grad_weight, const View* grad_bias, const Conv2dParams& p) {
    const char* op = "conv2d_backward";
    const ConvGeo g = conv_geometry(x, w, p, op);
    conv_check_out(grad_out, g, x.dtype, op, "grad_out");
    if (grad_x) conv_check_4d(*grad_x, x.shape[0], x.shape[1], x.shape[2], x.shape[3], x.dtype, op, "grad_x");
    if (grad_weight)
        conv_check_4d(*grad_weight, w.shape[0], w.shape[1], w.shape[2], w.shape[3], x.dtype, op, "grad_weight");
    if (grad_bias) conv_check_vec(*grad_bias, g.K, x.dtype, op, "grad_bias");
    return g;
}

// ------------------------------------------------------------------------------------------------ pooling

// PyTorch's pooling_output_shape (ValueError when the result is < 1).
inline int64_t pool_output_size(int64_t in, int64_t kernel, int64_t pad, int64_t stride, int64_t dil,
                                bool ceil_mode) {
    const int64_t n = in + 2 * pad - dil * (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0);
    int64_t out = (n >= 0 ? n / stride : -((-n + stride - 1) / stride)) + 1;
    if (ceil_mode && (out - 1) * stride >= in + pad) --out;
    if (out < 1)
        throw ValueError("pooling: input size " + num(in) + " with kernel_size " + num(kernel) + ", padding " +
                         num(pad) + ", stride " + num(stride) + ", dilation " + num(dil) + " gives output size " +
                         num(out) + " (too small)");
    return out;
}

inline void pool_check_4d(const View& v, const char* op, const char* name) {
    if (v.ndim != 4)
        throw ValueError(std::string(op) + ": " + name + " must be 4-d, got shape " + v.shape_str());
    require_contiguous(v, op, name);
}

inline void pool_check_float(const View& v, const char* op, const char* name) {
    if (v.dtype != DType::f32 && v.dtype != DType::f64)
        throw DTypeError(std::string(op) + ": " + name + " has unsupported dtype " + dtype_name(v.dtype));
}

// N, C, H, W of a 4-d view in the given layout.
inline void pool_dims(const View& v, Layout l, int64_t& N, int64_t& C, int64_t& H, int64_t& W) {
    N = v.shape[0];
    C = l == Layout::NHWC ? v.shape[3] : v.shape[1];
    H = l == Layout::NHWC ? v.shape[1] : v.shape[2];
    W = l == Layout::NHWC ? v.shape[2] : v.shape[3];
}

inline void pool_check_shape(const View& v, Layout l, int64_t N, int64_t C, int64_t H, int64_t W, const char* op,
                             const char* name) {
    int64_t a, b, c, d;
    pool_dims(v, l, a, b, c, d);
    if (a != N || b != C || c != H || d != W)
        throw ValueError(std::string(op) + ": " + name + " has shape " + v.shape_str() + ", expected N=" + num(N) +
                         " C=" + num(C) + " H=" + num(H) + " W=" + num(W) + " in layout " +
                         (l == Layout::NHWC ? "NHWC" : "NCHW"));
}

// Geometry of a windowed pool from the input (x or grad_x) view and the params; checks everything.
inline PoolGeo pool_geometry(const View& in, const Pool2dParams& p, const char* op, bool avg) {
    const std::string o(op);
    pool_check_4d(in, op, "x");
    if (p.kernel_h < 1 || p.kernel_w < 1) throw ValueError(o + ": kernel_size must be positive");
    if (p.stride_h < 1 || p.stride_w < 1) throw ValueError(o + ": stride must be positive");
    if (p.dil_h < 1 || p.dil_w < 1) throw ValueError(o + ": dilation must be positive");
    if (p.pad_h < 0 || p.pad_w < 0) throw ValueError(o + ": padding must be non-negative");
    if (p.pad_h > p.kernel_h / 2 || p.pad_w > p.kernel_w / 2)
        throw ValueError(o + ": padding (" + num(p.pad_h) + ", " + num(p.pad_w) + ") must be at most half of kernel_size (" +
                         num(p.kernel_h) + ", " + num(p.kernel_w) + ")");
    if (avg && p.divisor_override < 0) throw ValueError(o + ": divisor_override must be positive");
    PoolGeo g{};
    g.nhwc = p.layout == Layout::NHWC;
    pool_dims(in, p.layout, g.N, g.C, g.H, g.W);
    g.kh = p.kernel_h;
    g.kw = p.kernel_w;
    g.sh = p.stride_h;
    g.sw = p.stride_w;
    g.ph = p.pad_h;
    g.pw = p.pad_w;
    g.dh = avg ? 1 : p.dil_h;
    g.dw = avg ? 1 : p.dil_w;
    g.count_include_pad = p.count_include_pad;
    g.divisor = avg ? p.divisor_override : 0;
    g.P = pool_output_size(g.H, g.kh, g.ph, g.sh, g.dh, p.ceil_mode);
    g.Q = pool_output_size(g.W, g.kw, g.pw, g.sw, g.dw, p.ceil_mode);
    return g;
}

inline void pool_check_out(const View& out, const PoolGeo& g, Layout l, DType dt, const char* op, const char* name) {
    pool_check_4d(out, op, name);
    pool_check_shape(out, l, g.N, g.C, g.P, g.Q, op, name);
    if (out.dtype != dt)
        throw DTypeError(std::string(op) + ": " + name + " has dtype " + dtype_name(out.dtype) + ", expected " +
                         dtype_name(dt));
}

inline void pool_check_indices(const View& idx, const PoolGeo& g, Layout l, const char* op) {
    pool_check_4d(idx, op, "indices");
    pool_check_shape(idx, l, g.N, g.C, g.P, g.Q, op, "indices");
    if (idx.dtype != DType::i64) throw DTypeError(std::string(op) + ": indices must be int64");
}

inline PoolGeo check_max_pool2d_forward(const View& x, const View& out, const View* indices, const Pool2dParams& p) {
    const char* op = "max_pool2d";
    pool_check_float(x, op, "x");
    const PoolGeo g = pool_geometry(x, p, op, false);
    pool_check_out(out, g, p.layout, x.dtype, op, "out");
    if (indices) pool_check_indices(*indices, g, p.layout, op);
    return g;
}

inline PoolGeo check_max_pool2d_backward(const View& grad_out, const View& indices, const View& grad_x,
                                         const Pool2dParams& p) {
    const char* op = "max_pool2d_backward";
    pool_check_float(grad_x, op, "grad_x");
    const PoolGeo g = pool_geometry(grad_x, p, op, false);
    pool_check_out(grad_out, g, p.layout, grad_x.dtype, op, "grad_out");
    pool_check_indices(indices, g, p.layout, op);
    return g;
}

inline PoolGeo check_avg_pool2d_forward(const View& x, const View& out, const Pool2dParams& p) {
    const char* op = "avg_pool2d";
    pool_check_float(x, op, "x");
    const PoolGeo g = pool_geometry(x, p, op, true);
    pool_check_out(out, g, p.layout, x.dtype, op, "out");
    return g;
}

inline PoolGeo check_avg_pool2d_backward(const View& grad_out, const View& grad_x, const Pool2dParams& p) {
    const char* op = "avg_pool2d_backward";
    pool_check_float(grad_x, op, "grad_x");
    const PoolGeo g = pool_geometry(grad_x, p, op, true);
    pool_check_out(grad_out, g, p.layout, grad_x.dtype, op, "grad_out");
    return g;
}

// Adaptive average pooling: `in` is x (forward) or grad_x (backward), `out` the pooled array (out or
// grad_out, named out_name); the output size is out's.
inline PoolGeo check_adaptive_avg_pool2d(const View& in, const View& out, Layout l, const char* op,
                                         const char* out_name) {
    pool_check_float(in, op, "x");
    pool_check_4d(in, op, "x");
    pool_check_4d(out, op, out_name);
    if (out.dtype != in.dtype) throw DTypeError(std::string(op) + ": " + out_name + " dtype differs from x");
    PoolGeo g{};
    g.nhwc = l == Layout::NHWC;
    pool_dims(in, l, g.N, g.C, g.H, g.W);
    int64_t n, c;
    pool_dims(out, l, n, c, g.P, g.Q);
    if (n != g.N || c != g.C || g.P < 1 || g.Q < 1)
        throw ValueError(std::string(op) + ": " + out_name + " shape " + out.shape_str() + " does not match x " +
                         in.shape_str());
    if (g.H < 1 || g.W < 1) throw ValueError(std::string(op) + ": x has an empty spatial dim " + in.shape_str());
    return g;
}

}  // namespace detail
}  // namespace layerforge
