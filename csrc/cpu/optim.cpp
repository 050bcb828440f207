// Fused optimizer steps: validation and dispatch (bodies in elementwise_impl.h, per CPU path).
#include "layerforge/optim.h"

#include <string>

#include "layerforge/runtime.h"
#include "elementwise_kernels.h"

namespace layerforge {
namespace detail {
template <typename T>
const EwKernels<T>& ew_kernels_current();
void check_like(const View& v, const View& ref, const char* op, const char* name, bool same_shape);
}  // namespace detail

namespace {
void check_state(const View* v, const View& p, const char* op, const char* name, bool required) {
    if (!v) {
        if (required) throw ValueError(std::string(op) + ": " + name + " is required");
        return;
    }
    detail::check_like(*v, p, op, name, true);
}
template <typename T>
T* ptr_or_null(const View* v) { return v ? v->ptr<T>() : nullptr; }
}  // namespace

void sgd_step(const View& p, const View& g, const View* buf, const SgdParams& prm) {
    detail::check_like(p, p, "sgd_step", "param", false);
    check_state(&g, p, "sgd_step", "grad", true);
    check_state(buf, p, "sgd_step", "momentum_buffer", prm.momentum != 0);
    const View* b = prm.momentum != 0 ? buf : nullptr;
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
    detail::check_like(p, p, op, "param", false);
    check_state(&g, p, op, "grad", true);
    check_state(&m, p, op, "exp_avg", true);
    check_state(&v, p, op, "exp_avg_sq", true);
    check_state(vmax, p, op, "max_exp_avg_sq", prm.amsgrad);
    if (prm.step < 1) throw ValueError(std::string(op) + ": step must be >= 1");
    const View* vm = prm.amsgrad ? vmax : nullptr;
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
    const char* op = "rmsprop_step";
    detail::check_like(p, p, op, "param", false);
    check_state(&g, p, op, "grad", true);
    check_state(&sq, p, op, "square_avg", true);
    check_state(ga, p, op, "grad_avg", prm.centered);
    check_state(buf, p, op, "momentum_buffer", prm.momentum > 0);
    const View* gav = prm.centered ? ga : nullptr;
    const View* b = prm.momentum > 0 ? buf : nullptr;
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
