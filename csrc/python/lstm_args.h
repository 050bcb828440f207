// Argument conversion shared by the CPU (bind_lstm.cpp) and CUDA (cuda_lstm.cpp) bindings of the LSTM
// family: the same named arguments, optional ones None or an array, turned into Views by the binding's own
// converter (numpy arrays -> to_view, GPU arrays -> cuda_view), then passed on with the GIL released.
#pragma once
#include <pybind11/pybind11.h>

#include "layerforge/view.h"

namespace layerforge {
namespace py_args {

// to_view(obj, name, writeable) -> View; None -> no view, else the view kept in `slot`.
template <class ToView>
const View* optional_view(const ToView& to_view, const pybind11::object& o, const char* name, View& slot,
                          bool writeable = false) {
    if (o.is_none()) return nullptr;
    slot = to_view(o, name, writeable);
    return &slot;
}

// run(x, h0*, c0*, w_ih, w_hh, b_ih*, b_hh*, y, h_T, c_T, gates, cells): the views of lstm_forward's arguments
// (* = nullable pointer), with the GIL released.
template <class ToView, class Run>
void with_lstm_forward_views(const ToView& to_view, const pybind11::object& x, const pybind11::object& h0,
                             const pybind11::object& c0, const pybind11::object& w_ih, const pybind11::object& w_hh,
                             const pybind11::object& b_ih, const pybind11::object& b_hh, const pybind11::object& y,
                             const pybind11::object& h_T, const pybind11::object& c_T,
                             const pybind11::object& gates, const pybind11::object& cells, const Run& run) {
    View s[4];
    const View vx = to_view(x, "x", false), vwi = to_view(w_ih, "w_ih", false), vwh = to_view(w_hh, "w_hh", false);
    const View* ph0 = optional_view(to_view, h0, "h0", s[0]);
    const View* pc0 = optional_view(to_view, c0, "c0", s[1]);
    const View* pbi = optional_view(to_view, b_ih, "b_ih", s[2]);
    const View* pbh = optional_view(to_view, b_hh, "b_hh", s[3]);
    const View vy = to_view(y, "y", true), vh = to_view(h_T, "h_T", true), vc = to_view(c_T, "c_T", true);
    const View vg = to_view(gates, "gates", true), vcl = to_view(cells, "cells", true);
    pybind11::gil_scoped_release release;
    run(vx, ph0, pc0, vwi, vwh, pbi, pbh, vy, vh, vc, vg, vcl);
}

// run(x, h0*, c0*, w_ih, w_hh, y, gates, cells, grad_y*, grad_h_T*, grad_c_T*, grad_x*, grad_h0*, grad_c0*,
// grad_w_ih*, grad_w_hh*, grad_b_ih*, grad_b_hh*): the views of lstm_backward's arguments (* = nullable
// pointer; the grad_x... ones writeable), with the GIL released.
template <class ToView, class Run>
void with_lstm_backward_views(const ToView& to_view, const pybind11::object& x, const pybind11::object& h0,
                              const pybind11::object& c0, const pybind11::object& w_ih, const pybind11::object& w_hh,
                              const pybind11::object& y, const pybind11::object& gates,
                              const pybind11::object& cells, const pybind11::object& grad_y,
                              const pybind11::object& grad_h_T, const pybind11::object& grad_c_T,
                              const pybind11::object& grad_x, const pybind11::object& grad_h0,
                              const pybind11::object& grad_c0, const pybind11::object& grad_w_ih,
                              const pybind11::object& grad_w_hh, const pybind11::object& grad_b_ih,
                              const pybind11::object& grad_b_hh, const Run& run) {
    View s[12];
    const View vx = to_view(x, "x", false), vwi = to_view(w_ih, "w_ih", false), vwh = to_view(w_hh, "w_hh", false);
    const View vy = to_view(y, "y", false), vg = to_view(gates, "gates", false),
               vcl = to_view(cells, "cells", false);
    const View* ph0 = optional_view(to_view, h0, "h0", s[0]);
    const View* pc0 = optional_view(to_view, c0, "c0", s[1]);
    const View* pgy = optional_view(to_view, grad_y, "grad_y", s[2]);
    const View* pgh = optional_view(to_view, grad_h_T, "grad_h_T", s[3]);
    const View* pgc = optional_view(to_view, grad_c_T, "grad_c_T", s[4]);
    const View* pgx = optional_view(to_view, grad_x, "grad_x", s[5], true);
    const View* pgh0 = optional_view(to_view, grad_h0, "grad_h0", s[6], true);
    const View* pgc0 = optional_view(to_view, grad_c0, "grad_c0", s[7], true);
    const View* pgwi = optional_view(to_view, grad_w_ih, "grad_w_ih", s[8], true);
    const View* pgwh = optional_view(to_view, grad_w_hh, "grad_w_hh", s[9], true);
    const View* pgbi = optional_view(to_view, grad_b_ih, "grad_b_ih", s[10], true);
    const View* pgbh = optional_view(to_view, grad_b_hh, "grad_b_hh", s[11], true);
    pybind11::gil_scoped_release release;
    run(vx, ph0, pc0, vwi, vwh, vy, vg, vcl, pgy, pgh, pgc, pgx, pgh0, pgc0, pgwi, pgwh, pgbi, pgbh);
}

}  // namespace py_args
}  // namespace layerforge
