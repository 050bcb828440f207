// CUDA bindings of the LSTM family (layerforge::cuda::lstm_forward / lstm_backward in lstm.h). Arrays are
// objects with __cuda_array_interface__ (cupy), already checked and laid out by python/layerforge/ops/lstm.py.
#include <string>

#include "layerforge/lstm.h"
#include "cuda_common.h"

namespace layerforge {
namespace py_cuda {

namespace {
// None -> no view; a GPU array -> its view in `slot`.
const View* opt_view(const py::object& o, const char* name, View& slot, bool writeable = false) {
    if (o.is_none()) return nullptr;
    slot = cuda_view(o, name, writeable);
    return &slot;
}
}  // namespace

LAYERFORGE_CUDA_BINDINGS(lstm) {
    m.def(
        "lstm_forward",
        [](const py::object& x, const py::object& h0, const py::object& c0, const py::object& w_ih,
           const py::object& w_hh, const py::object& b_ih, const py::object& b_hh, const py::object& y,
           const py::object& h_T, const py::object& c_T, const py::object& gates, const py::object& cells,
           uintptr_t stream) {
            View s[4];
            const View vx = cuda_view(x, "x"), vwi = cuda_view(w_ih, "w_ih"), vwh = cuda_view(w_hh, "w_hh");
            const View* ph0 = opt_view(h0, "h0", s[0]);
            const View* pc0 = opt_view(c0, "c0", s[1]);
            const View* pbi = opt_view(b_ih, "b_ih", s[2]);
            const View* pbh = opt_view(b_hh, "b_hh", s[3]);
            const View vy = cuda_view(y, "y", true), vh = cuda_view(h_T, "h_T", true), vc = cuda_view(c_T, "c_T", true);
            const View vg = cuda_view(gates, "gates", true), vcl = cuda_view(cells, "cells", true);
            py::gil_scoped_release release;
            cuda::lstm_forward(vx, ph0, pc0, vwi, vwh, pbi, pbh, vy, vh, vc, vg, vcl, stream_from(stream));
        },
        py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("w_ih"), py::arg("w_hh"), py::arg("b_ih"), py::arg("b_hh"),
        py::arg("y"), py::arg("h_T"), py::arg("c_T"), py::arg("gates"), py::arg("cells"), py::arg("stream"),
        "LSTM forward over a sequence on the GPU (layerforge/lstm.h): writes y, h_T, c_T, gates, cells.");

    m.def(
        "lstm_backward",
        [](const py::object& x, const py::object& h0, const py::object& c0, const py::object& w_ih,
           const py::object& w_hh, const py::object& y, const py::object& gates, const py::object& cells,
           const py::object& grad_y, const py::object& grad_h_T, const py::object& grad_c_T,
           const py::object& grad_x, const py::object& grad_h0, const py::object& grad_c0,
           const py::object& grad_w_ih, const py::object& grad_w_hh, const py::object& grad_b_ih,
           const py::object& grad_b_hh, bool accumulate, uintptr_t stream) {
            View s[12];
            const View vx = cuda_view(x, "x"), vwi = cuda_view(w_ih, "w_ih"), vwh = cuda_view(w_hh, "w_hh");
            const View vy = cuda_view(y, "y"), vg = cuda_view(gates, "gates"), vcl = cuda_view(cells, "cells");
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
            cuda::lstm_backward(vx, ph0, pc0, vwi, vwh, vy, vg, vcl, pgy, pgh, pgc, pgx, pgh0, pgc0, pgwi, pgwh, pgbi,
                                pgbh, accumulate, stream_from(stream));
        },
        py::arg("x"), py::arg("h0"), py::arg("c0"), py::arg("w_ih"), py::arg("w_hh"), py::arg("y"), py::arg("gates"),
        py::arg("cells"), py::arg("grad_y"), py::arg("grad_h_T"), py::arg("grad_c_T"), py::arg("grad_x"),
        py::arg("grad_h0"), py::arg("grad_c0"), py::arg("grad_w_ih"), py::arg("grad_w_hh"), py::arg("grad_b_ih"),
        py::arg("grad_b_hh"), py::arg("accumulate"), py::arg("stream"),
        "LSTM backward through time on the GPU: writes the activation gradients, writes (or with accumulate "
        "adds to) the parameter gradients.");

    m.def(
        "lstm_recurrence",
        [](int64_t B, int64_t H, const std::string& dtype, bool backward) {
            DType dt;
            if (dtype == "float32") dt = DType::f32;
            else if (dtype == "float64") dt = DType::f64;
            else throw DTypeError("lstm_recurrence: dtype must be 'float32' or 'float64', got '" + dtype + "'");
            return std::string(cuda::lstm_recurrence(B, H, dt, backward));
        },
        py::arg("B"), py::arg("H"), py::arg("dtype"), py::arg("backward") = false,
        "'persistent' or 'stepwise': the recurrence the LSTM kernels run for batch B, hidden size H on the "
        "current device.");
}

}  // namespace py_cuda
}  // namespace layerforge
