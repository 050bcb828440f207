// Fused optimizer steps: validation and dispatch (bodies in elementwise_impl.h, per CPU path).
#include "layerforge/optim.h"

#include <string>

#include "layerforge/detail/elementwise_checks.h"
#include "layerforge/runtime.h"
#include "elementwise_kernels.h"

namespace layerforge {
namespace detail {
template <typename T>
const EwKernels<T>& ew_kernels_current();
}  // namespace detail

namespace {
template <typename T>
T* ptr_or_null(const View* v) { return v ? v->ptr<T>() : nullptr; }
}  // namespace

void sgd_step(const View& p, const View& g, const View* buf, const SgdParams& prm) {
    const View* b = detail::check_sgd(p, g, buf, prm);
    const int nt = get_num_threads();
    if (p.dtype == DType::f32)
        detail::ew_kernels_current<float>().sgd(p.ptr<float>(), g.ptr<float>(), ptr_or_null<float>(b), p.numel(),
                                                prm, nt);
    else if (p.dtype == DType::f64)
        detail::ew_kernels_current<double>().sgd(p.ptr<double>(), g.ptr<double>(), ptr_or_null<double>(b),
                                                 p.numel(), prm, nt);
    else
        throw DTypeError("sgd_step: unsupported dtype");
}

void adam_step(const View& p, const View& g, const View& m, const View& v, const View* vmax,
               const AdamParams& prm) {
    const char* op = prm.decoupled ? "adamw_step" : "adam_step";
    const View* vm = detail::check_adam(p, g, m, v, vmax, prm);
    const int nt = get_num_threads();
    if (p.dtype == DType::f32)
        detail::ew_kernels_current<float>().adam(p.ptr<float>(), g.ptr<float>(), m.ptr<float>(), v.ptr<float>(),
                                                 ptr_or_null<float>(vm), p.numel(), prm, nt);
    else if (p.dtype == DType::f64)
        detail::ew_kernels_current<double>().adam(p.ptr<double>(), g.ptr<double>(), m.ptr<double>(),
                                                  v.ptr<double>(), ptr_or_null<double>(vm), p.numel(), prm, nt);
    else
        throw DTypeError(std::string(op) + ": unsupported dtype");
}

void rmsprop_step(const View& p, const View& g, const View& sq, const View* ga, const View* buf,
                  const RmspropParams& prm) {
    const detail::RmspropState st = detail::check_rmsprop(p, g, sq, ga, buf, prm);
    const View* gav = st.grad_avg;
    const View* b = st.momentum_buffer;
    const int nt = get_num_threads();
    if (p.dtype == DType::f32)
        detail::ew_kernels_current<float>().rmsprop(p.ptr<float>(), g.ptr<float>(), sq.ptr<float>(),
                                                    ptr_or_null<float>(gav), ptr_or_null<float>(b), p.numel(),
                                                    prm, nt);
    else if (p.dtype == DType::f64)
        detail::ew_kernels_current<double>().rmsprop(p.ptr<double>(), g.ptr<double>(), sq.ptr<double>(),
                                                     ptr_or_null<double>(gav), ptr_or_null<double>(b),
                                                     p.numel(), prm, nt);
    else
        throw DTypeError("rmsprop_step: unsupported dtype");
}

}  // namespace layerforge
