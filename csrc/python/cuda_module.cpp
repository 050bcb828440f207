// layerforge._cuda — the CUDA module (built when nvcc is found). Pure host C++: it includes only
// layerforge/cuda.h, never CUDA or pybind11-incompatible headers in the .cu files (pitfall 5).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "layerforge/cuda.h"
#include "layerforge/error.h"
#include "cuda_common.h"

namespace py = pybind11;

PYBIND11_MODULE(LAYERFORGE_CUDA_MODULE_NAME, m) {
    using namespace layerforge::cuda;
    m.doc() = "layerforge CUDA kernels";

    // C++ exceptions -> Python exceptions, as in the CPU module (CUDA errors stay RuntimeError).
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const layerforge::DTypeError& e) {
            PyErr_SetString(PyExc_TypeError, e.what());
        } catch (const layerforge::ValueError& e) {
            PyErr_SetString(PyExc_ValueError, e.what());
        }
    });
    m.def("device_count", [] {
        std::string why;
        const int n = device_count(&why);
        return py::make_tuple(n, why);
    }, "(count, reason) — reason says why no device is usable when count is 0.");
    m.def("devices", [] {
        py::list out;
        for (const DeviceInfo& d : devices()) {
            py::dict e;
            e["index"] = d.index;
            e["name"] = d.name;
            e["compute_capability"] = py::make_tuple(d.major, d.minor);
            e["total_memory"] = d.total_memory;
            e["multiprocessors"] = d.multiprocessors;
            out.append(e);
        }
        return out;
    });
    m.def("compiled_architectures", &compiled_architectures);
    m.def("runtime_version", &runtime_version);
    m.def("driver_version", &driver_version);
    m.def("self_test", [](int device) {
        py::gil_scoped_release release;
        self_test(device);
    }, py::arg("device") = 0);
    m.def("check_device_pointer", [](uintptr_t ptr, const std::string& name) {
        check_device_pointer(reinterpret_cast<const void*>(ptr), name.c_str());
    }, py::arg("ptr"), py::arg("name") = "array",
       "Raise ValueError unless ptr is device (or managed) memory the current device can read.");

    // Each kernel family registered itself from its cuda_<family>.cpp (LAYERFORGE_CUDA_BINDINGS).
    for (layerforge::py_cuda::Binder bind : layerforge::py_cuda::binders()) bind(m);
}
