// Bindings of the LSTM family: forward over a sequence and backward through time (layerforge/lstm.h).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <optional>

#include "layerforge/lstm.h"
#include "common.h"

namespace layerforge {
namespace py_bind {

namespace {
// None -> no view; an array -> its view in `slot`.
const View* opt_view(const py::object& o, const char* name, View& slot, bool writeable = false) {
    if (o.is_none()) return nullptr;
    slot = to_view(py::cast<py::array>(o), name, writeable);
    return &slot;
}
}  // namespace

void bind_lstm(py::module_& m) {
    m.def(
        "lstm_forward",
        [](const py::array& x, const py::object& h0, const py::object& c0, const py::array& w_ih,
           const py::array& w_hh, const py::object& b_ih, const py::object& b_hh, const py::array& y,
           const py::array& h_T, const py::array& c_T, const py::array& gates, const py::array& cells) {
            View s_h0, s_c0, s_bi, s_bh;
            const View vx = to_view(x, "x"), vwi = to_view(w_ih, "w_ih"), vwh = to_view(w_hh, "w_hh");
            const View* ph0 = opt_view(h0, "h0", s_h0);
            const View* pc0 = opt_view(c0, "c0", s_c0);
            const View* pbi = opt_view(b_ih, "b_ih", s_bi);
            const View* pbh = opt_view(b_hh, "b_hh", s_bh);
            const View vy = to_view(y, "y", true), vh = to_view(h_T, "h_T", true), vc = to_view(c_T, "c_T", true);
            const View vg = to_view(gates, "gates", true), vcl = to_view(cells, "cells", true);
            py::gil_scoped_release release;
            lstm_forward(vx, ph0, pc0, vwi, vwh, pbi, pbh, vy, vh, vc, vg, vcl);
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
            View s[12];
            const View vx = to_view(x, "x"), vwi = to_view(w_ih, "w_ih"), vwh = to_view(w_hh, "w_hh");
            const View vy = to_view(y, "y"), vg = to_view(gates, "gates"), vcl = to_view(cells, "cells");
            const View* ph0 = opt_view(h0, "h0", s[0]);
            const View* pc0 = opt_view(c0, "c0", s[1]);
            const View* pgy = opt_view(grad_y, "grad_y", s[2]);
            const View* pgh = opt_view(grad_h_T, "grad_h_T", s[3]);
            const View* pgc = opt_view(grad_c_T, "grad_c_T", s[4]);
            const View* pgx = opt_view(grad_x, "grad_x", s[5], true);
            const View* pgh0 = opt_view(grad_h0, "grad_h0", s[6], true);
            const View* pgc0 = opt_view(grad_c0, "grad_c0", s[7], true);
            const View* pgwi = opt_view(grad_w_ih, "grad_w_ih", s[8], true);
            const View* pgwh = opt_view(grad_w_hh, "grad_w_hh", s[9], true);
            const View* pgbi = opt_view(grad_b_ih, "grad_b_ih", s[10], true);
            const View* pgbh = opt_view(grad_b_hh, "grad_b_hh", s[11], true);
            py::gil_scoped_release release;
            lstm_backward(vx, ph0, pc0, vwi, vwh, vy, vg, vcl, pgy, pgh, pgc, pgx, pgh0, pgc0, pgwi, pgwh, pgbi,
                          pgbh, accumulate);
        },
        py::arg("x").noconvert(), py::arg("h0"), py::arg("c0"), py::arg("w_ih").noconvert(),
        py::arg("w_hh").noconvert(), py::arg("y").noconvert(), py::arg("gates").noconvert(),
        py::arg("cells").noconvert(), py::arg("grad_y"), py::arg("grad_h_T"), py::arg("grad_c_T"),
        py::arg("grad_x"), py::arg("grad_h0"), py::arg("grad_c0"), py::arg("grad_w_ih"), py::arg("grad_w_hh"),
        py::arg("grad_b_ih"), py::arg("grad_b_hh"), py::arg("accumulate") = false);
}

}  // namespace py_bind
}  // namespace layerforge
