// layerforge._C — the CPU module. Runtime queries here; each kernel family binds itself in its own
// bind_<family>.cpp.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "layerforge/error.h"
#include "layerforge/runtime.h"
#include "common.h"

namespace py = pybind11;

namespace layerforge {
namespace py_bind {
void bind_gemm(py::module_& m);
void bind_conv(py::module_& m);  // conv2d and pooling
void bind_lstm(py::module_& m);
void bind_attention(py::module_& m);
void bind_elementwise(py::module_& m);
void bind_optim(py::module_& m);
}  // namespace py_bind
}  // namespace layerforge

#ifndef LAYERFORGE_BUILD_INFO
#define LAYERFORGE_BUILD_INFO "unknown"
#endif

PYBIND11_MODULE(LAYERFORGE_CPU_MODULE_NAME, m) {
    using namespace layerforge;
    m.doc() = "layerforge CPU kernels";

    // C++ exceptions -> Python exceptions (anything else becomes RuntimeError via pybind11).
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const DTypeError& e) {
            PyErr_SetString(PyExc_TypeError, e.what());
        } catch (const ValueError& e) {
            PyErr_SetString(PyExc_ValueError, e.what());
        }
    });

    m.def("get_num_threads", &get_num_threads, "Threads used by the CPU kernels.");
    m.def("set_num_threads", &set_num_threads, py::arg("n"), "Set the threads used by the CPU kernels.");
    m.def("openmp_enabled", &openmp_enabled);
    m.def("cpu_features", &cpu_feature_names);
    m.def("cpu_model_name", &cpu_model_name);
    m.def("cpu_path", [] { return std::string(cpu_path_name(cpu_path())); });
    m.def("set_cpu_path", &set_cpu_path, py::arg("name"),
          "Force the CPU code path ('generic' or 'avx2'); for tests and comparisons.");
    m.def(
        "measure_fp32_peak_gflops_one_core",
        [](double seconds) {
            py::gil_scoped_release release;
            return measure_fp32_peak_gflops_one_core(seconds);
        },
        py::arg("seconds") = 0.2);
    m.attr("build_info") = LAYERFORGE_BUILD_INFO;

    py_bind::bind_gemm(m);
    py_bind::bind_conv(m);
    py_bind::bind_lstm(m);
    py_bind::bind_attention(m);
    py_bind::bind_elementwise(m);
    py_bind::bind_optim(m);
}
