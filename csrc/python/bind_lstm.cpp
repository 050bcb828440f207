// Bindings of the LSTM family: forward over a sequence and backward through time (layerforge/lstm.h).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <optional>

#include "layerforge/lstm.h"
#include "common.h"
#include "lstm_args.h"

namespace layerforge {
namespace py_bind {

namespace {
// numpy array -> View, the converter of lstm_args.h.
View host_view(const py::object& o, const char* name, bool writeable) {
    return to_view(py::cast<py::array>(o), name, writeable);
}
}  // namespace

void bind_lstm(py::module_& m) {
    m.def(
        "lstm_forward",
        [](const py::array& x, const py::object& h0, const py::object& c0, const py::array& w_ih,
           const py::array& w_hh, const py::object& b_ih, const py::object& b_hh, const py::array& y,
           const py::array& h_T, const py::array& c_T, const py::array& gates, const py::array& cells) {
            py_args::with_lstm_forward_views(host_view, x, h0, c0, w_ih, w_hh, b_ih, b_hh, y, h_T, c_T, gates, cells,
                                             [](const auto&... v) { lstm_forward(v...); });
        },
        py::arg("x").noconvert(), py::arg("h0"), py::arg("c0"), py::arg("w_ih").noconvert(),
        py::arg("w_hh").noconvert(), py::arg("b_ih"), py::arg("b_hh"), py::arg("y").noconvert(),
        py::arg("h_T").noconvert(), py::arg("c_T").noconvert(), py::arg("gates").noconvert(),
        py::arg("cells").noconvert());

    m.def(
        "lstm_backward",
        [](const py::array& x, const py::object& h0, const py::object& c0, const py::array& w_ih,
           const py::array& w_hh, const py::array& y, const py::array& gates, const py::array& cells,
           const py::object& grad_y, const py::object& grad_h_T, const py::object& grad_c_T,
           const py::object& grad_x, const py::object& grad_h0, const py::object& grad_c0,
           const py::object& grad_w_ih, const py::object& grad_w_hh, const py::object& grad_b_ih,
           const py::object& grad_b_hh, bool accumulate) {
            py_args::with_lstm_backward_views(host_view, x, h0, c0, w_ih, w_hh, y, gates, cells, grad_y, grad_h_T,
                                              grad_c_T, grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b_ih,
                                              grad_b_hh, [&](const auto&... v) { lstm_backward(v..., accumulate); });
        },
        py::arg("x").noconvert(), py::arg("h0"), py::arg("c0"), py::arg("w_ih").noconvert(),
        py::arg("w_hh").noconvert(), py::arg("y").noconvert(), py::arg("gates").noconvert(),
        py::arg("cells").noconvert(), py::arg("grad_y"), py::arg("grad_h_T"), py::arg("grad_c_T"),
        py::arg("grad_x"), py::arg("grad_h0"), py::arg("grad_c0"), py::arg("grad_w_ih"), py::arg("grad_w_hh"),
        py::arg("grad_b_ih"), py::arg("grad_b_hh"), py::arg("accumulate") = false);
}

}  // namespace py_bind
}  // namespace layerforge
