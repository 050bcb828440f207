// Bindings of the convolution and pooling families (layerforge/conv.h, pool.h). Thin: arrays -> views,
// release the GIL, call. Arguments are normalised (pairs, padding modes, output shapes) in Python and
// unpacked by convpool_args.h (shared with the CUDA bindings, cuda_conv.cpp).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "layerforge/conv.h"
#include "layerforge/pool.h"
#include "common.h"
#include "convpool_args.h"

namespace layerforge {
namespace py_bind {

using py_args::conv_params;
using py_args::parse_layout;
using py_args::pool_params;

namespace {

View index_view(const py::array& arr, const char* name, bool writeable) {
    const py::dtype dt = arr.dtype();
    if (dt.kind() != 'i' || dt.itemsize() != 8) throw DTypeError(std::string(name) + ": must be int64");
    if (writeable && !arr.writeable()) throw ValueError(std::string(name) + ": array is read-only");
    if (arr.ndim() > kMaxDims) throw ValueError(std::string(name) + ": too many dimensions");
    View v;
    v.dtype = DType::i64;
    v.ndim = static_cast<int>(arr.ndim());
    for (int d = 0; d < v.ndim; ++d) {
        v.shape[d] = arr.shape(d);
        if (arr.strides(d) % 8) throw ValueError(std::string(name) + ": strides must be multiples of 8 bytes");
        v.strides[d] = arr.strides(d) / 8;
    }
    v.data = const_cast<void*>(arr.data());
    if (reinterpret_cast<uintptr_t>(v.data) % 8) throw ValueError(std::string(name) + ": data is not aligned");
    return v;
}

}  // namespace

void bind_conv(py::module_& m) {
    m.def(
        "conv2d_forward",
        [](const py::array& x, const py::array& w, std::optional<py::array> bias, const py::array& out,
           const std::vector<int64_t>& params, const std::string& layout) {
            const Conv2dParams p = conv_params(params, layout);
            const View vx = to_view(x, "x"), vw = to_view(w, "weight"), vo = to_view(out, "out", true);
            View vb;
            if (bias) vb = to_view(*bias, "bias");
            py::gil_scoped_release release;
            conv2d_forward(vx, vw, bias ? &vb : nullptr, vo, p);
        },
        py::arg("x").noconvert(), py::arg("weight").noconvert(), py::arg("bias").noconvert(),
        py::arg("out").noconvert(), py::arg("params"), py::arg("layout"));

    m.def(
        "conv2d_backward",
        [](const py::array& go, const py::array& x, const py::array& w, std::optional<py::array> gx,
           std::optional<py::array> gw, std::optional<py::array> gb, const std::vector<int64_t>& params,
           const std::string& layout) {
            const Conv2dParams p = conv_params(params, layout);
            const View vgo = to_view(go, "grad_out"), vx = to_view(x, "x"), vw = to_view(w, "weight");
            View vgx, vgw, vgb;
            if (gx) vgx = to_view(*gx, "grad_x", true);
            if (gw) vgw = to_view(*gw, "grad_weight", true);
            if (gb) vgb = to_view(*gb, "grad_bias", true);
            py::gil_scoped_release release;
            conv2d_backward(vgo, vx, vw, gx ? &vgx : nullptr, gw ? &vgw : nullptr, gb ? &vgb : nullptr, p);
        },
        py::arg("grad_out").noconvert(), py::arg("x").noconvert(), py::arg("weight").noconvert(),
        py::arg("grad_x").noconvert(), py::arg("grad_weight").noconvert(), py::arg("grad_bias").noconvert(),
        py::arg("params"), py::arg("layout"));

    m.def(
        "conv2d_algorithm",
        [](const py::array& x, const py::array& w, const std::vector<int64_t>& params, const std::string& layout) {
            return conv2d_algorithm(to_view(x, "x"), to_view(w, "weight"), conv_params(params, layout));
        },
        py::arg("x").noconvert(), py::arg("weight").noconvert(), py::arg("params"), py::arg("layout"));

    m.def("pool2d_output_size", &pool2d_output_size, py::arg("size"), py::arg("kernel"), py::arg("pad"),
          py::arg("stride"), py::arg("dilation"), py::arg("ceil_mode"));

    m.def(
        "max_pool2d_forward",
        [](const py::array& x, const py::array& out, std::optional<py::array> indices,
           const std::vector<int64_t>& params, const std::string& layout) {
            const Pool2dParams p = pool_params(params, layout);
            const View vx = to_view(x, "x"), vo = to_view(out, "out", true);
            View vi;
            if (indices) vi = index_view(*indices, "indices", true);
            py::gil_scoped_release release;
            max_pool2d_forward(vx, vo, indices ? &vi : nullptr, p);
        },
        py::arg("x").noconvert(), py::arg("out").noconvert(), py::arg("indices").noconvert(), py::arg("params"),
        py::arg("layout"));

    m.def(
        "max_pool2d_backward",
        [](const py::array& go, const py::array& indices, const py::array& gx, const std::vector<int64_t>& params,
           const std::string& layout) {
            const Pool2dParams p = pool_params(params, layout);
            const View vgo = to_view(go, "grad_out"), vi = index_view(indices, "indices", false),
                       vgx = to_view(gx, "grad_x", true);
            py::gil_scoped_release release;
            max_pool2d_backward(vgo, vi, vgx, p);
        },
        py::arg("grad_out").noconvert(), py::arg("indices").noconvert(), py::arg("grad_x").noconvert(),
        py::arg("params"), py::arg("layout"));

    m.def(
        "avg_pool2d_forward",
        [](const py::array& x, const py::array& out, const std::vector<int64_t>& params, const std::string& layout) {
            const Pool2dParams p = pool_params(params, layout);
            const View vx = to_view(x, "x"), vo = to_view(out, "out", true);
            py::gil_scoped_release release;
            avg_pool2d_forward(vx, vo, p);
        },
        py::arg("x").noconvert(), py::arg("out").noconvert(), py::arg("params"), py::arg("layout"));

    m.def(
        "avg_pool2d_backward",
        [](const py::array& go, const py::array& gx, const std::vector<int64_t>& params, const std::string& layout) {
            const Pool2dParams p = pool_params(params, layout);
            const View vgo = to_view(go, "grad_out"), vgx = to_view(gx, "grad_x", true);
            py::gil_scoped_release release;
            avg_pool2d_backward(vgo, vgx, p);
        },
        py::arg("grad_out").noconvert(), py::arg("grad_x").noconvert(), py::arg("params"), py::arg("layout"));

    m.def(
        "adaptive_avg_pool2d_forward",
        [](const py::array& x, const py::array& out, const std::string& layout) {
            const Layout l = parse_layout(layout);
            const View vx = to_view(x, "x"), vo = to_view(out, "out", true);
            py::gil_scoped_release release;
            adaptive_avg_pool2d_forward(vx, vo, l);
        },
        py::arg("x").noconvert(), py::arg("out").noconvert(), py::arg("layout"));

    m.def(
        "adaptive_avg_pool2d_backward",
        [](const py::array& go, const py::array& gx, const std::string& layout) {
            const Layout l = parse_layout(layout);
            const View vgo = to_view(go, "grad_out"), vgx = to_view(gx, "grad_x", true);
            py::gil_scoped_release release;
            adaptive_avg_pool2d_backward(vgo, vgx, l);
        },
        py::arg("grad_out").noconvert(), py::arg("grad_x").noconvert(), py::arg("layout"));
}

}  // namespace py_bind
}  // namespace layerforge
