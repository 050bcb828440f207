// Bindings of the elementwise family: activations, softmax, fused cross-entropy, layer norm. Outputs are
// caller-allocated numpy arrays taken with .noconvert() and checked writeable (pitfall 8); contiguity,
// shapes and dtypes are checked by the C++ API.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <optional>

#include "layerforge/elementwise.h"
#include "common.h"

namespace layerforge {
namespace py_bind {

namespace {
std::optional<View> opt_view(const py::object& o, const char* name, bool writeable = false) {
    if (o.is_none()) return std::nullopt;
    if (!py::isinstance<py::array>(o)) throw DTypeError(std::string(name) + ": expected a numpy array or None");
    return to_view(py::reinterpret_borrow<py::array>(o), name, writeable);
}
const View* ptr(const std::optional<View>& v) { return v ? &*v : nullptr; }

Activation act_of(int a) {
    if (a < 0 || a > 5) throw ValueError("activation: unknown activation code " + std::to_string(a));
    return static_cast<Activation>(a);
}
}  // namespace

void bind_elementwise(py::module_& m) {
    m.def(
        "activation_forward",
        [](int act, const py::array& x, const py::array& y, double alpha) {
            const Activation a = act_of(act);
            const View vx = to_view(x, "x"), vy = to_view(y, "y", true);
            py::gil_scoped_release release;
            activation_forward(a, vx, vy, alpha);
        },
        py::arg("act"), py::arg("x").noconvert(), py::arg("y").noconvert(), py::arg("alpha") = 0.01);
    m.def(
        "activation_backward",
        [](int act, const py::array& gy, const py::array& saved, const py::array& gx, double alpha) {
            const Activation a = act_of(act);
            const View vg = to_view(gy, "grad_y"), vs = to_view(saved, "saved"), vx = to_view(gx, "grad_x", true);
            py::gil_scoped_release release;
            activation_backward(a, vg, vs, vx, alpha);
        },
        py::arg("act"), py::arg("grad_y").noconvert(), py::arg("saved").noconvert(),
        py::arg("grad_x").noconvert(), py::arg("alpha") = 0.01);
    m.def(
        "softmax_forward",
        [](const py::array& x, const py::array& y, bool log) {
            const View vx = to_view(x, "x"), vy = to_view(y, "y", true);
            py::gil_scoped_release release;
            softmax_forward(vx, vy, log);
        },
        py::arg("x").noconvert(), py::arg("y").noconvert(), py::arg("log") = false);
    m.def(
        "softmax_backward",
        [](const py::array& gy, const py::array& y, const py::array& gx, bool log) {
            const View vg = to_view(gy, "grad_y"), vy = to_view(y, "y"), vx = to_view(gx, "grad_x", true);
            py::gil_scoped_release release;
            softmax_backward(vg, vy, vx, log);
        },
        py::arg("grad_y").noconvert(), py::arg("y").noconvert(), py::arg("grad_x").noconvert(),
        py::arg("log") = false);
    m.def(
        "cross_entropy_forward",
        [](const py::array& logits, const py::array& targets, const py::object& weight, int64_t ignore_index,
           const py::array& nll, const py::object& smooth, const py::object& grad, double a, double b) {
            const View vx = to_view(logits, "logits");
            const py::dtype dt = targets.dtype();
            if (dt.kind() != 'i' || dt.itemsize() != 8)
                throw DTypeError("cross_entropy: targets must be int64, got " + std::string(py::str(dt)));
            if (targets.ndim() != 1 || (targets.shape(0) > 1 && targets.strides(0) != 8))
                throw ValueError("cross_entropy: targets must be a contiguous 1-d array");
            if (vx.ndim == 2 && targets.shape(0) != vx.shape[0])
                throw ValueError("cross_entropy: targets has " + std::to_string(targets.shape(0)) +
                                 " entries for logits " + vx.shape_str());
            const auto vw = opt_view(weight, "weight");
            const View vn = to_view(nll, "nll", true);
            const auto vs = opt_view(smooth, "smooth", true);
            const auto vg = opt_view(grad, "grad", true);
            const int64_t* t = static_cast<const int64_t*>(targets.data());
            py::gil_scoped_release release;
            cross_entropy_forward(vx, t, ptr(vw), ignore_index, vn, ptr(vs), ptr(vg), a, b);
        },
        py::arg("logits").noconvert(), py::arg("targets").noconvert(), py::arg("weight"),
        py::arg("ignore_index"), py::arg("nll").noconvert(), py::arg("smooth"), py::arg("grad"), py::arg("a"),
        py::arg("b"));
    m.def(
        "layer_norm_forward",
        [](const py::array& x, const py::object& w, const py::object& b, double eps, const py::array& y,
           const py::array& mean, const py::array& rstd) {
            const View vx = to_view(x, "x"), vy = to_view(y, "y", true);
            const View vm = to_view(mean, "mean", true), vr = to_view(rstd, "rstd", true);
            const auto vw = opt_view(w, "weight"), vb = opt_view(b, "bias");
            py::gil_scoped_release release;
            layer_norm_forward(vx, ptr(vw), ptr(vb), eps, vy, vm, vr);
        },
        py::arg("x").noconvert(), py::arg("weight"), py::arg("bias"), py::arg("eps"), py::arg("y").noconvert(),
        py::arg("mean").noconvert(), py::arg("rstd").noconvert());
    m.def(
        "layer_norm_backward",
        [](const py::array& gy, const py::array& x, const py::array& mean, const py::array& rstd,
           const py::object& w, const py::array& gx, const py::object& gw, const py::object& gb) {
            const View vg = to_view(gy, "grad_y"), vx = to_view(x, "x"), vm = to_view(mean, "mean"),
                       vr = to_view(rstd, "rstd"), vgx = to_view(gx, "grad_x", true);
            const auto vw = opt_view(w, "weight"), vgw = opt_view(gw, "grad_weight", true),
                       vgb = opt_view(gb, "grad_bias", true);
            py::gil_scoped_release release;
            layer_norm_backward(vg, vx, vm, vr, ptr(vw), vgx, ptr(vgw), ptr(vgb));
        },
        py::arg("grad_y").noconvert(), py::arg("x").noconvert(), py::arg("mean").noconvert(),
        py::arg("rstd").noconvert(), py::arg("weight"), py::arg("grad_x").noconvert(), py::arg("grad_weight"),
        py::arg("grad_bias"));
}

}  // namespace py_bind
}  // namespace layerforge
