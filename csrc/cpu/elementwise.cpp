// Activations, softmax / log_softmax, fused softmax-cross-entropy and layer norm: validation and
// dispatch to the kernels of the current CPU path (bodies in elementwise_impl.h).
#include "layerforge/elementwise.h"

#include <string>

#include "layerforge/runtime.h"

#define LF_EW_NS ew_generic
#define LF_EW_TABLE ew_kernels_generic
#include "elementwise_impl.h"

namespace layerforge {
namespace detail {

template <typename T>
const EwKernels<T>& ew_kernels_current() {
#if LAYERFORGE_HAVE_AVX2_BUILD
    if (cpu_path() == CpuPath::avx2) return ew_kernels_avx2<T>();
#endif
    return ew_kernels_generic<T>();
}
template const EwKernels<float>& ew_kernels_current<float>();
template const EwKernels<double>& ew_kernels_current<double>();

void check_like(const View& v, const View& ref, const char* op, const char* name, bool same_shape) {
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

static void check_vec(const View* v, const View& ref, int64_t n, const char* op, const char* name) {
    if (!v) return;
    check_like(*v, ref, op, name, false);
    if (v->numel() != n)
        throw ValueError(std::string(op) + ": " + name + " has shape " + v->shape_str() + ", expected (" +
                         std::to_string(n) + ",)");
}

static int64_t last_dim(const View& v) { return v.ndim == 0 ? 1 : v.shape[v.ndim - 1]; }

}  // namespace detail

using detail::check_like;
using detail::ew_kernels_current;

void activation_forward(Activation act, const View& x, const View& y, double alpha) {
    check_like(x, x, "activation", "x", false);
    check_like(y, x, "activation", "y", true);
    const int nt = get_num_threads();
    if (x.dtype == DType::f32)
        ew_kernels_current<float>().act_fwd(int(act), x.ptr<float>(), y.ptr<float>(), x.numel(), float(alpha), nt);
    else if (x.dtype == DType::f64)
        ew_kernels_current<double>().act_fwd(int(act), x.ptr<double>(), y.ptr<double>(), x.numel(), alpha, nt);
    else
        throw DTypeError("activation: unsupported dtype");
}

void activation_backward(Activation act, const View& gy, const View& s, const View& gx, double alpha) {
    check_like(gy, gy, "activation_backward", "grad_y", false);
    check_like(s, gy, "activation_backward", "saved", true);
    check_like(gx, gy, "activation_backward", "grad_x", true);
    const int nt = get_num_threads();
    if (gy.dtype == DType::f32)
        ew_kernels_current<float>().act_bwd(int(act), gy.ptr<float>(), s.ptr<float>(), gx.ptr<float>(),
                                            gy.numel(), float(alpha), nt);
    else if (gy.dtype == DType::f64)
        ew_kernels_current<double>().act_bwd(int(act), gy.ptr<double>(), s.ptr<double>(), gx.ptr<double>(),
                                             gy.numel(), alpha, nt);
    else
        throw DTypeError("activation_backward: unsupported dtype");
}

void softmax_forward(const View& x, const View& y, bool log) {
    const char* op = log ? "log_softmax" : "softmax";
    check_like(x, x, op, "x", false);
    check_like(y, x, op, "y", true);
    const int64_t C = detail::last_dim(x), n = x.numel(), rows = C ? n / C : 0;
    if (n == 0) return;
    const int nt = get_num_threads();
    if (x.dtype == DType::f32)
        ew_kernels_current<float>().softmax_fwd(x.ptr<float>(), y.ptr<float>(), rows, C, log, nt);
    else if (x.dtype == DType::f64)
        ew_kernels_current<double>().softmax_fwd(x.ptr<double>(), y.ptr<double>(), rows, C, log, nt);
    else
        throw DTypeError(std::string(op) + ": unsupported dtype");
}

void softmax_backward(const View& gy, const View& y, const View& gx, bool log) {
    const char* op = log ? "log_softmax_backward" : "softmax_backward";
    check_like(gy, gy, op, "grad_y", false);
    check_like(y, gy, op, "y", true);
    check_like(gx, gy, op, "grad_x", true);
    const int64_t C = detail::last_dim(gy), n = gy.numel(), rows = C ? n / C : 0;
    if (n == 0) return;
    const int nt = get_num_threads();
    if (gy.dtype == DType::f32)
        ew_kernels_current<float>().softmax_bwd(gy.ptr<float>(), y.ptr<float>(), gx.ptr<float>(), rows, C, log, nt);
    else if (gy.dtype == DType::f64)
        ew_kernels_current<double>().softmax_bwd(gy.ptr<double>(), y.ptr<double>(), gx.ptr<double>(), rows, C,
                                                 log, nt);
    else
        throw DTypeError(std::string(op) + ": unsupported dtype");
}

void cross_entropy_forward(const View& x, const int64_t* targets, const View* weight, int64_t ignore_index,
                           const View& nll, const View* smooth, const View* grad, double a, double b) {
    const char* op = "cross_entropy";
    check_like(x, x, op, "logits", false);
    if (x.ndim != 2) throw ValueError(std::string(op) + ": logits must be (N, C), got " + x.shape_str());
    const int64_t N = x.shape[0], C = x.shape[1];
    detail::check_vec(weight, x, C, op, "weight");
    detail::check_vec(&nll, x, N, op, "nll");
    detail::check_vec(smooth, x, N, op, "smooth");
    if (grad) check_like(*grad, x, op, "grad", true);
    if (N == 0) return;
    if (!targets) throw ValueError("cross_entropy: targets is null");
    const int nt = get_num_threads();
    int64_t bad;
    if (x.dtype == DType::f32)
        bad = ew_kernels_current<float>().xent(x.ptr<float>(), targets, weight ? weight->ptr<float>() : nullptr,
                                               nll.ptr<float>(), smooth ? smooth->ptr<float>() : nullptr,
                                               grad ? grad->ptr<float>() : nullptr, N, C, ignore_index, a, b, nt);
    else if (x.dtype == DType::f64)
        bad = ew_kernels_current<double>().xent(x.ptr<double>(), targets,
                                                weight ? weight->ptr<double>() : nullptr, nll.ptr<double>(),
                                                smooth ? smooth->ptr<double>() : nullptr,
                                                grad ? grad->ptr<double>() : nullptr, N, C, ignore_index, a, b, nt);
    else
        throw DTypeError("cross_entropy: unsupported dtype");
    if (bad >= 0)
        throw ValueError("cross_entropy: target " + std::to_string(targets[bad]) + " at row " +
                         std::to_string(bad) + " is out of bounds for " + std::to_string(C) + " classes");
}

void layer_norm_forward(const View& x, const View* w, const View* b, double eps, const View& y,
                        const View& mean, const View& rstd) {
    const char* op = "layer_norm";
    check_like(x, x, op, "x", false);
    check_like(y, x, op, "y", true);
    const int64_t D = detail::last_dim(x), n = x.numel(), R = D ? n / D : 0;
    detail::check_vec(w, x, D, op, "weight");
    detail::check_vec(b, x, D, op, "bias");
    detail::check_vec(&mean, x, R, op, "mean");
    detail::check_vec(&rstd, x, R, op, "rstd");
    if (n == 0) return;
    const int nt = get_num_threads();
    if (x.dtype == DType::f32)
        ew_kernels_current<float>().ln_fwd(x.ptr<float>(), w ? w->ptr<float>() : nullptr,
                                           b ? b->ptr<float>() : nullptr, y.ptr<float>(), mean.ptr<float>(),
                                           rstd.ptr<float>(), R, D, eps, nt);
    else if (x.dtype == DType::f64)
        ew_kernels_current<double>().ln_fwd(x.ptr<double>(), w ? w->ptr<double>() : nullptr,
                                            b ? b->ptr<double>() : nullptr, y.ptr<double>(), mean.ptr<double>(),
                                            rstd.ptr<double>(), R, D, eps, nt);
    else
        throw DTypeError("layer_norm: unsupported dtype");
}

void layer_norm_backward(const View& gy, const View& x, const View& mean, const View& rstd, const View* w,
                         const View& gx, const View* gw, const View* gb) {
    const char* op = "layer_norm_backward";
    check_like(x, x, op, "x", false);
    check_like(gy, x, op, "grad_y", true);
    check_like(gx, x, op, "grad_x", true);
    const int64_t D = detail::last_dim(x), n = x.numel(), R = D ? n / D : 0;
    detail::check_vec(w, x, D, op, "weight");
    detail::check_vec(gw, x, D, op, "grad_weight");
    detail::check_vec(gb, x, D, op, "grad_bias");
    detail::check_vec(&mean, x, R, op, "mean");
    detail::check_vec(&rstd, x, R, op, "rstd");
    const int nt = get_num_threads();
    if (x.dtype == DType::f32)
        ew_kernels_current<float>().ln_bwd(gy.ptr<float>(), x.ptr<float>(), mean.ptr<float>(), rstd.ptr<float>(),
                                           w ? w->ptr<float>() : nullptr, gx.ptr<float>(),
                                           gw ? gw->ptr<float>() : nullptr, gb ? gb->ptr<float>() : nullptr, R, D,
                                           nt);
    else if (x.dtype == DType::f64)
        ew_kernels_current<double>().ln_bwd(gy.ptr<double>(), x.ptr<double>(), mean.ptr<double>(),
                                            rstd.ptr<double>(), w ? w->ptr<double>() : nullptr, gx.ptr<double>(),
                                            gw ? gw->ptr<double>() : nullptr, gb ? gb->ptr<double>() : nullptr,
                                            R, D, nt);
    else
        throw DTypeError("layer_norm_backward: unsupported dtype");
}

}  // namespace layerforge
