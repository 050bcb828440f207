// Activations, softmax / log_softmax, fused softmax-cross-entropy and layer norm: validation and
// dispatch to the kernels of the current CPU path (bodies in elementwise_impl.h).
#include "layerforge/elementwise.h"

#include <string>

#include "layerforge/detail/elementwise_checks.h"
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

}  // namespace detail

using detail::ew_kernels_current;

void activation_forward(Activation act, const View& x, const View& y, double alpha) {
    detail::check_activation(x, y);
    const int nt = get_num_threads();
    if (x.dtype == DType::f32)
        ew_kernels_current<float>().act_fwd(int(act), x.ptr<float>(), y.ptr<float>(), x.numel(), float(alpha), nt);
    else if (x.dtype == DType::f64)
        ew_kernels_current<double>().act_fwd(int(act), x.ptr<double>(), y.ptr<double>(), x.numel(), alpha, nt);
    else
        throw DTypeError("activation: unsupported dtype");
}

void activation_backward(Activation act, const View& gy, const View& s, const View& gx, double alpha) {
    detail::check_activation_backward(gy, s, gx);
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
    const detail::RowsCols rc = detail::check_softmax(x, y, log);
    const int64_t C = rc.cols, rows = rc.rows;
    if (x.numel() == 0) return;
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
    const detail::RowsCols rc = detail::check_softmax_backward(gy, y, gx, log);
    const int64_t C = rc.cols, rows = rc.rows;
    if (gy.numel() == 0) return;
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
    const detail::RowsCols rc = detail::check_cross_entropy(x, weight, nll, smooth, grad);
    const int64_t N = rc.rows, C = rc.cols;
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
    const detail::RowsCols rc = detail::check_layer_norm(x, w, b, y, mean, rstd);
    const int64_t D = rc.cols, R = rc.rows;
    if (x.numel() == 0) return;
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
    const detail::RowsCols rc = detail::check_layer_norm_backward(gy, x, mean, rstd, w, gx, gw, gb);
    const int64_t D = rc.cols, R = rc.rows;
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
