// CUDA bindings of the multi-tensor optimizer steps: lists of GPU arrays (one entry per parameter; None for
// an absent state) and per-parameter hyperparameter lists -> one launch of csrc/cuda/optim.cu, GIL released.
// Param and state arrays are updated in place, so they are taken as they are (no conversion) and checked
// writeable; shapes, dtypes and contiguity are checked by the launcher with the CPU's checks.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "layerforge/optim.h"
#include "cuda_common.h"

namespace py = pybind11;

namespace {
using layerforge::View;
using layerforge::py_cuda::cuda_view;

// The lists of one call: every list has one entry per parameter.
struct Lists {
    std::vector<py::list> arrays;
    size_t count = 0;

    Lists(std::initializer_list<py::list> ls) : arrays(ls) {
        count = arrays.front().size();
        for (const py::list& l : arrays)
            if (l.size() != count)
                throw layerforge::ValueError("optimizer step: the per-parameter lists have different lengths");
    }
    // Entry i of list k as a device view ("name[i]" in errors); a None entry gives an absent view (data
    // null), which params and grads (k < 2) may not be.
    View view(size_t k, size_t i, const char* name, bool writeable) const {
        const py::object o = arrays[k][i];
        const std::string label = std::string(name) + "[" + std::to_string(i) + "]";
        if (o.is_none()) {
            if (k < 2) throw layerforge::ValueError("optimizer step: " + label + " is None");
            return View{};
        }
        return cuda_view(o, label.c_str(), writeable);
    }
};

template <typename T>
void check_len(const std::vector<T>& v, size_t n, const char* name) {
    if (v.size() != n)
        throw layerforge::ValueError(std::string("optimizer step: ") + name + " has " + std::to_string(v.size()) +
                                     " entries for " + std::to_string(n) + " parameters");
}
}  // namespace

LAYERFORGE_CUDA_BINDINGS(optim) {
    namespace lc = layerforge::cuda;
    m.def(
        "sgd_step_multi",
        [](const py::list& params, const py::list& grads, const py::list& bufs, const std::vector<double>& lr,
           const std::vector<double>& momentum, const std::vector<double>& dampening,
           const std::vector<double>& weight_decay, const std::vector<bool>& nesterov,
           const std::vector<bool>& maximize, const std::vector<bool>& first_step, uintptr_t stream) {
            const Lists ls{params, grads, bufs};
            const size_t n = ls.count;
            check_len(lr, n, "lr"), check_len(momentum, n, "momentum"), check_len(dampening, n, "dampening");
            check_len(weight_decay, n, "weight_decay"), check_len(nesterov, n, "nesterov");
            check_len(maximize, n, "maximize"), check_len(first_step, n, "first_step");
            std::vector<lc::SgdTensor> ts(n);
            for (size_t i = 0; i < n; ++i) {
                lc::SgdTensor& t = ts[i];
                t.param = ls.view(0, i, "params", true);
                t.grad = ls.view(1, i, "grads", false);
                t.momentum_buffer = ls.view(2, i, "momentum_buffers", true);
                t.p.lr = lr[i]; t.p.momentum = momentum[i]; t.p.dampening = dampening[i];
                t.p.weight_decay = weight_decay[i]; t.p.nesterov = nesterov[i]; t.p.maximize = maximize[i];
                t.p.first_step = first_step[i];
            }
            py::gil_scoped_release release;
            lc::sgd_step(ts.data(), static_cast<int64_t>(n), layerforge::py_cuda::stream_from(stream));
        },
        py::arg("params"), py::arg("grads"), py::arg("momentum_buffers"), py::arg("lr"), py::arg("momentum"),
        py::arg("dampening"), py::arg("weight_decay"), py::arg("nesterov"), py::arg("maximize"),
        py::arg("first_step"), py::arg("stream"));
    m.def(
        "adam_step_multi",
        [](const py::list& params, const py::list& grads, const py::list& exp_avgs, const py::list& exp_avg_sqs,
           const py::list& max_exp_avg_sqs, const std::vector<int64_t>& step, const std::vector<double>& lr,
           const std::vector<double>& beta1, const std::vector<double>& beta2, const std::vector<double>& eps,
           const std::vector<double>& weight_decay, const std::vector<bool>& amsgrad,
           const std::vector<bool>& maximize, bool decoupled, uintptr_t stream) {
            const Lists ls{params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs};
            const size_t n = ls.count;
            check_len(step, n, "step"), check_len(lr, n, "lr"), check_len(beta1, n, "beta1");
            check_len(beta2, n, "beta2"), check_len(eps, n, "eps"), check_len(weight_decay, n, "weight_decay");
            check_len(amsgrad, n, "amsgrad"), check_len(maximize, n, "maximize");
            std::vector<lc::AdamTensor> ts(n);
            for (size_t i = 0; i < n; ++i) {
                lc::AdamTensor& t = ts[i];
                t.param = ls.view(0, i, "params", true);
                t.grad = ls.view(1, i, "grads", false);
                t.exp_avg = ls.view(2, i, "exp_avgs", true);
                t.exp_avg_sq = ls.view(3, i, "exp_avg_sqs", true);
                t.max_exp_avg_sq = ls.view(4, i, "max_exp_avg_sqs", true);
                t.p.step = step[i]; t.p.lr = lr[i]; t.p.beta1 = beta1[i]; t.p.beta2 = beta2[i]; t.p.eps = eps[i];
                t.p.weight_decay = weight_decay[i]; t.p.amsgrad = amsgrad[i]; t.p.maximize = maximize[i];
                t.p.decoupled = decoupled;
            }
            py::gil_scoped_release release;
            lc::adam_step(ts.data(), static_cast<int64_t>(n), layerforge::py_cuda::stream_from(stream));
        },
        py::arg("params"), py::arg("grads"), py::arg("exp_avgs"), py::arg("exp_avg_sqs"),
        py::arg("max_exp_avg_sqs"), py::arg("step"), py::arg("lr"), py::arg("beta1"), py::arg("beta2"),
        py::arg("eps"), py::arg("weight_decay"), py::arg("amsgrad"), py::arg("maximize"), py::arg("decoupled"),
        py::arg("stream"));
    m.def(
        "rmsprop_step_multi",
        [](const py::list& params, const py::list& grads, const py::list& square_avgs, const py::list& grad_avgs,
           const py::list& bufs, const std::vector<double>& lr, const std::vector<double>& alpha,
           const std::vector<double>& eps, const std::vector<double>& weight_decay,
           const std::vector<double>& momentum, const std::vector<bool>& centered,
           const std::vector<bool>& maximize, uintptr_t stream) {
            const Lists ls{params, grads, square_avgs, grad_avgs, bufs};
            const size_t n = ls.count;
            check_len(lr, n, "lr"), check_len(alpha, n, "alpha"), check_len(eps, n, "eps");
            check_len(weight_decay, n, "weight_decay"), check_len(momentum, n, "momentum");
            check_len(centered, n, "centered"), check_len(maximize, n, "maximize");
            std::vector<lc::RmspropTensor> ts(n);
            for (size_t i = 0; i < n; ++i) {
                lc::RmspropTensor& t = ts[i];
                t.param = ls.view(0, i, "params", true);
                t.grad = ls.view(1, i, "grads", false);
                t.square_avg = ls.view(2, i, "square_avgs", true);
                t.grad_avg = ls.view(3, i, "grad_avgs", true);
                t.momentum_buffer = ls.view(4, i, "momentum_buffers", true);
                t.p.lr = lr[i]; t.p.alpha = alpha[i]; t.p.eps = eps[i]; t.p.weight_decay = weight_decay[i];
                t.p.momentum = momentum[i]; t.p.centered = centered[i]; t.p.maximize = maximize[i];
            }
            py::gil_scoped_release release;
            lc::rmsprop_step(ts.data(), static_cast<int64_t>(n), layerforge::py_cuda::stream_from(stream));
        },
        py::arg("params"), py::arg("grads"), py::arg("square_avgs"), py::arg("grad_avgs"),
        py::arg("momentum_buffers"), py::arg("lr"), py::arg("alpha"), py::arg("eps"), py::arg("weight_decay"),
        py::arg("momentum"), py::arg("centered"), py::arg("maximize"), py::arg("stream"));
}
