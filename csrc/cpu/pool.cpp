// 2-d pooling on the CPU: validation and dispatch; the loops are in convpool_kernels.inc.
#include "layerforge/pool.h"

#include <string>

#include "convpool_internal.h"
#include "layerforge/runtime.h"

namespace layerforge {

namespace {

using detail::PoolGeo;

#if LAYERFORGE_HAVE_AVX2_BUILD
#define LF_DISPATCH(fn, ...) \
    (cpu_path() == CpuPath::avx2 ? detail::avx2::fn(__VA_ARGS__) : detail::generic::fn(__VA_ARGS__))
#else
#define LF_DISPATCH(fn, ...) detail::generic::fn(__VA_ARGS__)
#endif

std::string s(int64_t v) { return std::to_string(v); }

void check_4d(const View& v, const char* op, const char* name) {
    if (v.ndim != 4) throw ValueError(std::string(op) + ": " + name + " must be 4-d, got shape " + v.shape_str());
    detail::require_contiguous(v, op, name);
}

void check_float(const View& v, const char* op, const char* name) {
    if (v.dtype != DType::f32 && v.dtype != DType::f64)
        throw DTypeError(std::string(op) + ": " + name + " has unsupported dtype " + dtype_name(v.dtype));
}

// N, C, H, W of a 4-d view in the given layout.
void dims(const View& v, Layout l, int64_t& N, int64_t& C, int64_t& H, int64_t& W) {
    N = v.shape[0];
    C = l == Layout::NHWC ? v.shape[3] : v.shape[1];
    H = l == Layout::NHWC ? v.shape[1] : v.shape[2];
    W = l == Layout::NHWC ? v.shape[2] : v.shape[3];
}

void check_shape(const View& v, Layout l, int64_t N, int64_t C, int64_t H, int64_t W, const char* op,
                 const char* name) {
    int64_t a, b, c, d;
    dims(v, l, a, b, c, d);
    if (a != N || b != C || c != H || d != W)
        throw ValueError(std::string(op) + ": " + name + " has shape " + v.shape_str() + ", expected N=" + s(N) +
                         " C=" + s(C) + " H=" + s(H) + " W=" + s(W) + " in layout " +
                         (l == Layout::NHWC ? "NHWC" : "NCHW"));
}

// Geometry of a windowed pool from the input (x or grad_x) view and the params; checks everything.
PoolGeo make_geo(const View& in, const Pool2dParams& p, const char* op, bool avg) {
    check_4d(in, op, avg ? "x" : "x");
    if (p.kernel_h < 1 || p.kernel_w < 1) throw ValueError(std::string(op) + ": kernel_size must be positive");
    if (p.stride_h < 1 || p.stride_w < 1) throw ValueError(std::string(op) + ": stride must be positive");
    if (p.dil_h < 1 || p.dil_w < 1) throw ValueError(std::string(op) + ": dilation must be positive");
    if (p.pad_h < 0 || p.pad_w < 0) throw ValueError(std::string(op) + ": padding must be non-negative");
    if (p.pad_h > p.kernel_h / 2 || p.pad_w > p.kernel_w / 2)
        throw ValueError(std::string(op) + ": padding (" + s(p.pad_h) + ", " + s(p.pad_w) +
                         ") must be at most half of kernel_size (" + s(p.kernel_h) + ", " + s(p.kernel_w) + ")");
    if (avg && p.divisor_override < 0) throw ValueError(std::string(op) + ": divisor_override must be positive");
    PoolGeo g{};
    g.nhwc = p.layout == Layout::NHWC;
    dims(in, p.layout, g.N, g.C, g.H, g.W);
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
    g.P = pool2d_output_size(g.H, g.kh, g.ph, g.sh, g.dh, p.ceil_mode);
    g.Q = pool2d_output_size(g.W, g.kw, g.pw, g.sw, g.dw, p.ceil_mode);
    return g;
}

void check_out(const View& out, const PoolGeo& g, Layout l, DType dt, const char* op, const char* name) {
    check_4d(out, op, name);
    check_shape(out, l, g.N, g.C, g.P, g.Q, op, name);
    if (out.dtype != dt) throw DTypeError(std::string(op) + ": " + name + " has dtype " + dtype_name(out.dtype) +
                                          ", expected " + dtype_name(dt));
}

}  // namespace

int64_t pool2d_output_size(int64_t in, int64_t kernel, int64_t pad, int64_t stride, int64_t dil, bool ceil_mode) {
    // PyTorch's pooling_output_shape
    const int64_t num = in + 2 * pad - dil * (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0);
    int64_t out = (num >= 0 ? num / stride : -((-num + stride - 1) / stride)) + 1;
    if (ceil_mode && (out - 1) * stride >= in + pad) --out;
    if (out < 1)
        throw ValueError("pooling: input size " + s(in) + " with kernel_size " + s(kernel) + ", padding " + s(pad) +
                         ", stride " + s(stride) + ", dilation " + s(dil) + " gives output size " + s(out) +
                         " (too small)");
    return out;
}

void max_pool2d_forward(const View& x, const View& out, const View* indices, const Pool2dParams& p) {
    const char* op = "max_pool2d";
    check_float(x, op, "x");
    const PoolGeo g = make_geo(x, p, op, false);
    check_out(out, g, p.layout, x.dtype, op, "out");
    if (indices) {
        check_4d(*indices, op, "indices");
        check_shape(*indices, p.layout, g.N, g.C, g.P, g.Q, op, "indices");
        if (indices->dtype != DType::i64) throw DTypeError(std::string(op) + ": indices must be int64");
    }
    const int nt = get_num_threads();
    int64_t* idx = indices ? indices->ptr<int64_t>() : nullptr;
    if (x.dtype == DType::f32)
        LF_DISPATCH(maxpool_fwd<float>, g, x.ptr<float>(), out.ptr<float>(), idx, nt);
    else
        LF_DISPATCH(maxpool_fwd<double>, g, x.ptr<double>(), out.ptr<double>(), idx, nt);
}

void max_pool2d_backward(const View& grad_out, const View& indices, const View& grad_x, const Pool2dParams& p) {
    const char* op = "max_pool2d_backward";
    check_float(grad_x, op, "grad_x");
    const PoolGeo g = make_geo(grad_x, p, op, false);
    check_out(grad_out, g, p.layout, grad_x.dtype, op, "grad_out");
    check_4d(indices, op, "indices");
    check_shape(indices, p.layout, g.N, g.C, g.P, g.Q, op, "indices");
    if (indices.dtype != DType::i64) throw DTypeError(std::string(op) + ": indices must be int64");
    const int nt = get_num_threads();
    bool ok;
    if (grad_x.dtype == DType::f32)
        ok = LF_DISPATCH(maxpool_bwd<float>, g, grad_out.ptr<float>(), indices.ptr<int64_t>(), grad_x.ptr<float>(), nt);
    else
        ok = LF_DISPATCH(maxpool_bwd<double>, g, grad_out.ptr<double>(), indices.ptr<int64_t>(), grad_x.ptr<double>(),
                         nt);
    if (!ok)
        throw ValueError(std::string(op) + ": indices out of range [0, H*W) = [0, " + s(g.H * g.W) +
                         "); grad_x is incomplete");
}

void avg_pool2d_forward(const View& x, const View& out, const Pool2dParams& p) {
    const char* op = "avg_pool2d";
    check_float(x, op, "x");
    const PoolGeo g = make_geo(x, p, op, true);
    check_out(out, g, p.layout, x.dtype, op, "out");
    const int nt = get_num_threads();
    if (x.dtype == DType::f32)
        LF_DISPATCH(avgpool_fwd<float>, g, x.ptr<float>(), out.ptr<float>(), nt);
    else
        LF_DISPATCH(avgpool_fwd<double>, g, x.ptr<double>(), out.ptr<double>(), nt);
}

void avg_pool2d_backward(const View& grad_out, const View& grad_x, const Pool2dParams& p) {
    const char* op = "avg_pool2d_backward";
    check_float(grad_x, op, "grad_x");
    const PoolGeo g = make_geo(grad_x, p, op, true);
    check_out(grad_out, g, p.layout, grad_x.dtype, op, "grad_out");
    const int nt = get_num_threads();
    if (grad_x.dtype == DType::f32)
        LF_DISPATCH(avgpool_bwd<float>, g, grad_out.ptr<float>(), grad_x.ptr<float>(), nt);
    else
        LF_DISPATCH(avgpool_bwd<double>, g, grad_out.ptr<double>(), grad_x.ptr<double>(), nt);
}

namespace {
PoolGeo adaptive_geo(const View& in, const View& out, Layout l, const char* op, const char* out_name) {
    check_float(in, op, "x");
    check_4d(in, op, "x");
    check_4d(out, op, out_name);
    if (out.dtype != in.dtype) throw DTypeError(std::string(op) + ": " + out_name + " dtype differs from x");
    PoolGeo g{};
    g.nhwc = l == Layout::NHWC;
    dims(in, l, g.N, g.C, g.H, g.W);
    int64_t n, c;
    dims(out, l, n, c, g.P, g.Q);
    if (n != g.N || c != g.C || g.P < 1 || g.Q < 1)
        throw ValueError(std::string(op) + ": " + out_name + " shape " + out.shape_str() + " does not match x " +
                         in.shape_str());
    if (g.H < 1 || g.W < 1) throw ValueError(std::string(op) + ": x has an empty spatial dim " + in.shape_str());
    return g;
}
}  // namespace

void adaptive_avg_pool2d_forward(const View& x, const View& out, Layout layout) {
    const PoolGeo g = adaptive_geo(x, out, layout, "adaptive_avg_pool2d", "out");
    const int nt = get_num_threads();
    if (x.dtype == DType::f32)
        LF_DISPATCH(adaptive_avg_fwd<float>, g, x.ptr<float>(), out.ptr<float>(), nt);
    else
        LF_DISPATCH(adaptive_avg_fwd<double>, g, x.ptr<double>(), out.ptr<double>(), nt);
}

void adaptive_avg_pool2d_backward(const View& grad_out, const View& grad_x, Layout layout) {
    const PoolGeo g = adaptive_geo(grad_x, grad_out, layout, "adaptive_avg_pool2d_backward", "grad_out");
    const int nt = get_num_threads();
    if (grad_x.dtype == DType::f32)
        LF_DISPATCH(adaptive_avg_bwd<float>, g, grad_out.ptr<float>(), grad_x.ptr<float>(), nt);
    else
        LF_DISPATCH(adaptive_avg_bwd<double>, g, grad_out.ptr<double>(), grad_x.ptr<double>(), nt);
}

}  // namespace layerforge
