// CUDA bindings of convolution and pooling (layerforge/conv.h, pool.h, namespace layerforge::cuda): GPU
// arrays -> views (cuda_view checks dtype, alignment and that the memory is on the device), release the
// GIL, launch on the caller's stream. Same argument lists as the CPU bindings (bind_conv.cpp) plus the
// stream handle; the flat params are unpacked by the shared convpool_args.h; the C++ launchers run the
// same checks as the CPU (layerforge/detail/convpool_checks.h).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "convpool_args.h"
#include "cuda_common.h"
#include "layerforge/conv.h"
#include "layerforge/pool.h"

namespace {

namespace py = pybind11;
using layerforge::Conv2dParams;
using layerforge::Layout;
using layerforge::Pool2dParams;
using layerforge::View;
using layerforge::py_args::conv_params;
using layerforge::py_args::parse_layout;
using layerforge::py_args::pool_params;
using layerforge::py_cuda::cuda_view;
using layerforge::py_cuda::stream_from;

// An optional GPU array: `v` filled and a pointer to it returned, or nullptr for None.
const View* optional_view(const std::optional<py::object>& obj, View& v, const char* name, bool writeable) {
    if (!obj || obj->is_none()) return nullptr;
    v = cuda_view(*obj, name, writeable);
    return &v;
}

}  // namespace

LAYERFORGE_CUDA_BINDINGS(conv) {
    namespace lcu = layerforge::cuda;

    m.def(
        "conv2d_forward",
        [](const py::object& x, const py::object& w, const std::optional<py::object>& bias, const py::object& out,
           const std::vector<int64_t>& params, const std::string& layout, uintptr_t stream) {
            const Conv2dParams p = conv_params(params, layout);
            const View vx = cuda_view(x, "x"), vw = cuda_view(w, "weight"), vo = cuda_view(out, "out", true);
            View vb;
            const View* pb = optional_view(bias, vb, "bias", false);
            py::gil_scoped_release release;
            lcu::conv2d_forward(vx, vw, pb, vo, p, stream_from(stream));
        },
        py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("out"), py::arg("params"), py::arg("layout"),
        py::arg("stream"));

    m.def(
        "conv2d_backward_workspace_size",
        [](const py::object& x, const py::object& w, const std::vector<int64_t>& params, const std::string& layout,
           bool grad_weight, bool grad_bias) {
            return lcu::conv2d_backward_workspace_size(cuda_view(x, "x"), cuda_view(w, "weight"),
                                                       conv_params(params, layout), grad_weight, grad_bias);
        },
        py::arg("x"), py::arg("weight"), py::arg("params"), py::arg("layout"), py::arg("grad_weight"),
        py::arg("grad_bias"),
        "Elements of x's dtype conv2d_backward needs as workspace (split partial sums); 0 when none.");

    m.def(
        "conv2d_backward",
        [](const py::object& go, const py::object& x, const py::object& w, const std::optional<py::object>& gx,
           const std::optional<py::object>& gw, const std::optional<py::object>& gb,
           const std::optional<py::object>& workspace, const std::vector<int64_t>& params, const std::string& layout,
           uintptr_t stream) {
            const Conv2dParams p = conv_params(params, layout);
            const View vgo = cuda_view(go, "grad_out"), vx = cuda_view(x, "x"), vw = cuda_view(w, "weight");
            View vgx, vgw, vgb, vws;
            const View* pgx = optional_view(gx, vgx, "grad_x", true);
            const View* pgw = optional_view(gw, vgw, "grad_weight", true);
            const View* pgb = optional_view(gb, vgb, "grad_bias", true);
            const View* pws = optional_view(workspace, vws, "workspace", true);
            py::gil_scoped_release release;
            lcu::conv2d_backward(vgo, vx, vw, pgx, pgw, pgb, p, pws, stream_from(stream));
        },
        py::arg("grad_out"), py::arg("x"), py::arg("weight"), py::arg("grad_x"), py::arg("grad_weight"),
        py::arg("grad_bias"), py::arg("workspace"), py::arg("params"), py::arg("layout"), py::arg("stream"));

    m.def(
        "conv2d_algorithm",
        [](const py::object& x, const py::object& w, const std::vector<int64_t>& params, const std::string& layout) {
            return lcu::conv2d_algorithm(cuda_view(x, "x"), cuda_view(w, "weight"), conv_params(params, layout));
        },
        py::arg("x"), py::arg("weight"), py::arg("params"), py::arg("layout"));

    m.def(
        "max_pool2d_forward",
        [](const py::object& x, const py::object& out, const std::optional<py::object>& indices,
           const std::vector<int64_t>& params, const std::string& layout, uintptr_t stream) {
            const Pool2dParams p = pool_params(params, layout);
            const View vx = cuda_view(x, "x"), vo = cuda_view(out, "out", true);
            View vi;
            const View* pi = optional_view(indices, vi, "indices", true);
            py::gil_scoped_release release;
            lcu::max_pool2d_forward(vx, vo, pi, p, stream_from(stream));
        },
        py::arg("x"), py::arg("out"), py::arg("indices"), py::arg("params"), py::arg("layout"), py::arg("stream"));

    m.def(
        "max_pool2d_backward",
        [](const py::object& go, const py::object& indices, const py::object& gx, const std::vector<int64_t>& params,
           const std::string& layout, uintptr_t stream) {
            const Pool2dParams p = pool_params(params, layout);
            const View vgo = cuda_view(go, "grad_out"), vi = cuda_view(indices, "indices"),
                       vgx = cuda_view(gx, "grad_x", true);
            py::gil_scoped_release release;
            lcu::max_pool2d_backward(vgo, vi, vgx, p, stream_from(stream));
        },
        py::arg("grad_out"), py::arg("indices"), py::arg("grad_x"), py::arg("params"), py::arg("layout"),
        py::arg("stream"));

    m.def(
        "avg_pool2d_forward",
        [](const py::object& x, const py::object& out, const std::vector<int64_t>& params, const std::string& layout,
           uintptr_t stream) {
            const Pool2dParams p = pool_params(params, layout);
            const View vx = cuda_view(x, "x"), vo = cuda_view(out, "out", true);
            py::gil_scoped_release release;
            lcu::avg_pool2d_forward(vx, vo, p, stream_from(stream));
        },
        py::arg("x"), py::arg("out"), py::arg("params"), py::arg("layout"), py::arg("stream"));

    m.def(
        "avg_pool2d_backward",
        [](const py::object& go, const py::object& gx, const std::vector<int64_t>& params, const std::string& layout,
           uintptr_t stream) {
            const Pool2dParams p = pool_params(params, layout);
            const View vgo = cuda_view(go, "grad_out"), vgx = cuda_view(gx, "grad_x", true);
            py::gil_scoped_release release;
            lcu::avg_pool2d_backward(vgo, vgx, p, stream_from(stream));
        },
        py::arg("grad_out"), py::arg("grad_x"), py::arg("params"), py::arg("layout"), py::arg("stream"));

    m.def(
        "adaptive_avg_pool2d_forward",
        [](const py::object& x, const py::object& out, const std::string& layout, uintptr_t stream) {
            const Layout l = parse_layout(layout);
            const View vx = cuda_view(x, "x"), vo = cuda_view(out, "out", true);
            py::gil_scoped_release release;
            lcu::adaptive_avg_pool2d_forward(vx, vo, l, stream_from(stream));
        },
        py::arg("x"), py::arg("out"), py::arg("layout"), py::arg("stream"));

    m.def(
        "adaptive_avg_pool2d_backward",
        [](const py::object& go, const py::object& gx, const std::string& layout, uintptr_t stream) {
            const Layout l = parse_layout(layout);
            const View vgo = cuda_view(go, "grad_out"), vgx = cuda_view(gx, "grad_x", true);
            py::gil_scoped_release release;
            lcu::adaptive_avg_pool2d_backward(vgo, vgx, l, stream_from(stream));
        },
        py::arg("grad_out"), py::arg("grad_x"), py::arg("layout"), py::arg("stream"));
}
