// Bindings of the fused optimizer steps. Param and state are updated in place: taken with .noconvert()
// and checked writeable here, contiguous and of the param's dtype and shape by the C++ API (pitfall 8:
// a converted temporary would silently lose the update).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <optional>

#include "layerforge/optim.h"
#include "common.h"

namespace layerforge {
namespace py_bind {

namespace {
std::optional<View> opt_state(const py::object& o, const char* name) {
    if (o.is_none()) return std::nullopt;
    if (!py::isinstance<py::array>(o)) throw DTypeError(std::string(name) + ": expected a numpy array or None");
    return to_view(py::reinterpret_borrow<py::array>(o), name, true);
}
const View* ptr(const std::optional<View>& v) { return v ? &*v : nullptr; }
}  // namespace

void bind_optim(py::module_& m) {
    m.def(
        "sgd_step",
        [](const py::array& p, const py::array& g, const py::object& buf, double lr, double momentum,
           double dampening, double weight_decay, bool nesterov, bool maximize, bool first_step) {
            const View vp = to_view(p, "param", true), vg = to_view(g, "grad");
            const auto vb = opt_state(buf, "momentum_buffer");
            SgdParams prm;
            prm.lr = lr; prm.momentum = momentum; prm.dampening = dampening; prm.weight_decay = weight_decay;
            prm.nesterov = nesterov; prm.maximize = maximize; prm.first_step = first_step;
            py::gil_scoped_release release;
            sgd_step(vp, vg, ptr(vb), prm);
        },
        py::arg("param").noconvert(), py::arg("grad").noconvert(), py::arg("momentum_buffer"), py::arg("lr"),
        py::arg("momentum") = 0.0, py::arg("dampening") = 0.0, py::arg("weight_decay") = 0.0,
        py::arg("nesterov") = false, py::arg("maximize") = false, py::arg("first_step") = false);
    m.def(
        "adam_step",
        [](const py::array& p, const py::array& g, const py::array& m1, const py::array& m2,
           const py::object& vmax, int64_t step, double lr, double beta1, double beta2, double eps,
           double weight_decay, bool amsgrad, bool maximize, bool decoupled) {
            const View vp = to_view(p, "param", true), vg = to_view(g, "grad"),
                       vm = to_view(m1, "exp_avg", true), vv = to_view(m2, "exp_avg_sq", true);
            const auto vx = opt_state(vmax, "max_exp_avg_sq");
            AdamParams prm;
            prm.lr = lr; prm.beta1 = beta1; prm.beta2 = beta2; prm.eps = eps; prm.weight_decay = weight_decay;
            prm.amsgrad = amsgrad; prm.maximize = maximize; prm.decoupled = decoupled; prm.step = step;
            py::gil_scoped_release release;
            adam_step(vp, vg, vm, vv, ptr(vx), prm);
        },
        py::arg("param").noconvert(), py::arg("grad").noconvert(), py::arg("exp_avg").noconvert(),
        py::arg("exp_avg_sq").noconvert(), py::arg("max_exp_avg_sq"), py::arg("step"), py::arg("lr"),
        py::arg("beta1") = 0.9, py::arg("beta2") = 0.999, py::arg("eps") = 1e-8, py::arg("weight_decay") = 0.0,
        py::arg("amsgrad") = false, py::arg("maximize") = false, py::arg("decoupled") = false);
    m.def(
        "rmsprop_step",
        [](const py::array& p, const py::array& g, const py::array& sq, const py::object& ga,
           const py::object& buf, double lr, double alpha, double eps, double weight_decay, double momentum,
           bool centered, bool maximize) {
            const View vp = to_view(p, "param", true), vg = to_view(g, "grad"),
                       vs = to_view(sq, "square_avg", true);
            const auto va = opt_state(ga, "grad_avg"), vb = opt_state(buf, "momentum_buffer");
            RmspropParams prm;
            prm.lr = lr; prm.alpha = alpha; prm.eps = eps; prm.weight_decay = weight_decay;
            prm.momentum = momentum; prm.centered = centered; prm.maximize = maximize;
            py::gil_scoped_release release;
            rmsprop_step(vp, vg, vs, ptr(va), ptr(vb), prm);
        },
        py::arg("param").noconvert(), py::arg("grad").noconvert(), py::arg("square_avg").noconvert(),
        py::arg("grad_avg"), py::arg("momentum_buffer"), py::arg("lr"), py::arg("alpha") = 0.99,
        py::arg("eps") = 1e-8, py::arg("weight_decay") = 0.0, py::arg("momentum") = 0.0,
        py::arg("centered") = false, py::arg("maximize") = false);
}

}  // namespace py_bind
}  // namespace layerforge
