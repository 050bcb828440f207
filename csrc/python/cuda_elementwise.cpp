// CUDA bindings of the elementwise family (activations, softmax, fused cross-entropy, layer norm): GPU
// arrays (__cuda_array_interface__) -> device views, then the launchers of csrc/cuda/elementwise.cu with
// the GIL released. Outputs are caller-allocated (cupy) and checked writeable; shapes, dtypes and
// contiguity are checked by the launchers (the CPU's checks). Every function takes cupy's current stream
// as its last argument.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <optional>
#include <string>

#include "layerforge/elementwise.h"
#include "cuda_common.h"

namespace py = pybind11;

namespace {
using layerforge::Activation;
using layerforge::View;
using layerforge::py_cuda::cuda_view;
using layerforge::py_cuda::stream_from;

std::optional<View> opt_view(const py::object& o, const char* name, bool writeable = false) {
    if (o.is_none()) return std::nullopt;
    return cuda_view(o, name, writeable);
}
const View* ptr(const std::optional<View>& v) { return v ? &*v : nullptr; }

Activation act_of(int a) {
    if (a < 0 || a > 5) throw layerforge::ValueError("activation: unknown activation code " + std::to_string(a));
    return static_cast<Activation>(a);
}
}  // namespace

LAYERFORGE_CUDA_BINDINGS(elementwise) {
    namespace lc = layerforge::cuda;
    m.def(
        "activation_forward",
        [](int act, const py::object& x, const py::object& y, double alpha, uintptr_t stream) {
            const Activation a = act_of(act);
            const View vx = cuda_view(x, "x"), vy = cuda_view(y, "y", true);
            py::gil_scoped_release release;
            lc::activation_forward(a, vx, vy, alpha, stream_from(stream));
        },
        py::arg("act"), py::arg("x"), py::arg("y"), py::arg("alpha"), py::arg("stream"));
    m.def(
        "activation_backward",
        [](int act, const py::object& gy, const py::object& saved, const py::object& gx, double alpha,
           uintptr_t stream) {
            const Activation a = act_of(act);
            const View vg = cuda_view(gy, "grad_y"), vs = cuda_view(saved, "saved"),
                       vx = cuda_view(gx, "grad_x", true);
            py::gil_scoped_release release;
            lc::activation_backward(a, vg, vs, vx, alpha, stream_from(stream));
        },
        py::arg("act"), py::arg("grad_y"), py::arg("saved"), py::arg("grad_x"), py::arg("alpha"), py::arg("stream"));
    m.def(
        "softmax_forward",
        [](const py::object& x, const py::object& y, bool log, uintptr_t stream) {
            const View vx = cuda_view(x, "x"), vy = cuda_view(y, "y", true);
            py::gil_scoped_release release;
            lc::softmax_forward(vx, vy, log, stream_from(stream));
        },
        py::arg("x"), py::arg("y"), py::arg("log"), py::arg("stream"));
    m.def(
        "softmax_backward",
        [](const py::object& gy, const py::object& y, const py::object& gx, bool log, uintptr_t stream) {
            const View vg = cuda_view(gy, "grad_y"), vy = cuda_view(y, "y"), vx = cuda_view(gx, "grad_x", true);
            py::gil_scoped_release release;
            lc::softmax_backward(vg, vy, vx, log, stream_from(stream));
        },
        py::arg("grad_y"), py::arg("y"), py::arg("grad_x"), py::arg("log"), py::arg("stream"));
    m.def(
        "cross_entropy_target_stats",
        [](const py::object& targets, const py::object& weight, int64_t ignore_index, int64_t num_classes,
           const py::object& stats, uintptr_t stream) {
            const View vt = cuda_view(targets, "targets");
            const auto vw = opt_view(weight, "weight");
            const View vs = cuda_view(stats, "stats", true);
            py::gil_scoped_release release;
            lc::cross_entropy_target_stats(vt, ptr(vw), ignore_index, num_classes, vs, stream_from(stream));
        },
        py::arg("targets"), py::arg("weight"), py::arg("ignore_index"), py::arg("num_classes"), py::arg("stats"),
        py::arg("stream"),
        "stats (4,) float64 <- [first bad target row or -1, valid rows, sum of weight[t] over them, sum of weight]");
    m.def(
        "cross_entropy_forward",
        [](const py::object& logits, const py::object& targets, const py::object& weight, int64_t ignore_index,
           const py::object& nll, const py::object& smooth, const py::object& grad, double a, double b,
           double weight_sum, uintptr_t stream) {
            const View vx = cuda_view(logits, "logits"), vt = cuda_view(targets, "targets");
            const auto vw = opt_view(weight, "weight");
            const View vn = cuda_view(nll, "nll", true);
            const auto vs = opt_view(smooth, "smooth", true);
            const auto vg = opt_view(grad, "grad", true);
            py::gil_scoped_release release;
            lc::cross_entropy_forward(vx, vt, ptr(vw), ignore_index, vn, ptr(vs), ptr(vg), a, b, weight_sum,
                                      stream_from(stream));
        },
        py::arg("logits"), py::arg("targets"), py::arg("weight"), py::arg("ignore_index"), py::arg("nll"),
        py::arg("smooth"), py::arg("grad"), py::arg("a"), py::arg("b"), py::arg("weight_sum"), py::arg("stream"));
    m.def(
        "layer_norm_forward",
        [](const py::object& x, const py::object& w, const py::object& b, double eps, const py::object& y,
           const py::object& mean, const py::object& rstd, uintptr_t stream) {
            const View vx = cuda_view(x, "x"), vy = cuda_view(y, "y", true);
            const View vm = cuda_view(mean, "mean", true), vr = cuda_view(rstd, "rstd", true);
            const auto vw = opt_view(w, "weight"), vb = opt_view(b, "bias");
            py::gil_scoped_release release;
            lc::layer_norm_forward(vx, ptr(vw), ptr(vb), eps, vy, vm, vr, stream_from(stream));
        },
        py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("eps"), py::arg("y"), py::arg("mean"),
        py::arg("rstd"), py::arg("stream"));
    m.def("layer_norm_backward_workspace", &lc::layer_norm_backward_workspace, py::arg("rows"), py::arg("cols"),
          "Elements (of x's dtype) of the workspace layer_norm_backward needs for grad_weight / grad_bias.");
    m.def(
        "layer_norm_backward",
        [](const py::object& gy, const py::object& x, const py::object& mean, const py::object& rstd,
           const py::object& w, const py::object& gx, const py::object& gw, const py::object& gb,
           const py::object& workspace, uintptr_t stream) {
            const View vg = cuda_view(gy, "grad_y"), vx = cuda_view(x, "x"), vm = cuda_view(mean, "mean"),
                       vr = cuda_view(rstd, "rstd"), vgx = cuda_view(gx, "grad_x", true);
            const auto vw = opt_view(w, "weight"), vgw = opt_view(gw, "grad_weight", true),
                       vgb = opt_view(gb, "grad_bias", true), vws = opt_view(workspace, "workspace", true);
            py::gil_scoped_release release;
            lc::layer_norm_backward(vg, vx, vm, vr, ptr(vw), vgx, ptr(vgw), ptr(vgb), ptr(vws), stream_from(stream));
        },
        py::arg("grad_y"), py::arg("x"), py::arg("mean"), py::arg("rstd"), py::arg("weight"), py::arg("grad_x"),
        py::arg("grad_weight"), py::arg("grad_bias"), py::arg("workspace"), py::arg("stream"));
}
