// layerforge._cuda — the CUDA module (built when nvcc is found). Pure host C++: it includes only
// layerforge/cuda.h, never CUDA or pybind11-incompatible headers in the .cu files (pitfall 5).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "layerforge/cuda.h"

namespace py = pybind11;

PYBIND11_MODULE(LAYERFORGE_CUDA_MODULE_NAME, m) {
    using namespace layerforge::cuda;
    m.doc() = "layerforge CUDA kernels";
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
}
