// CUDA bindings of the LSTM family (layerforge::cuda::lstm_forward / lstm_backward in lstm.h). Arrays are
// objects with __cuda_array_interface__ (cupy), already checked and laid out by python/layerforge/ops/lstm.py.
#include <string>

#include "layerforge/lstm.h"
#include "cuda_common.h"
#include "lstm_args.h"

namespace layerforge {
namespace py_cuda {

namespace {
// GPU array -> View, the converter of lstm_args.h.
View gpu_view(const py::object& o, const char* name, bool writeable) { return cuda_view(o, name, writeable); }
}  // namespace

LAYERFORGE_CUDA_BINDINGS(lstm) {
    m.def(
        "lstm_forward",
        [](const py::object& x, const py::object& h0, const py::object& c0, const py::object& w_ih,
           const py::object& w_hh, const py::object& b_ih, const py::object& b_hh, const py::object& y,
           const py::object& h_T, const py::object& c_T, const py::object& gates, const py::object& cells,
           uintptr_t stream) {
            py_args::with_lstm_forward_views(gpu_view, x, h0, c0, w_ih, w_hh, b_ih, b_hh, y, h_T, c_T, gates, cells,
                                             [&](const auto&... v) { cuda::lstm_forward(v..., stream_from(stream)); });
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
            py_args::with_lstm_backward_views(
                gpu_view, x, h0, c0, w_ih, w_hh, y, gates, cells, grad_y, grad_h_T, grad_c_T, grad_x, grad_h0,
                grad_c0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh,
                [&](const auto&... v) { cuda::lstm_backward(v..., accumulate, stream_from(stream)); });
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
