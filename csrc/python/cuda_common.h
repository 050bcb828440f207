// Shared helpers of the CUDA bindings: an object with __cuda_array_interface__ -> layerforge::View (device
// pointer, dtype, shape, element strides), the stream handle, and the registry through which each
// cuda_<family>.cpp binds itself (so adding a family never edits cuda_module.cpp).
//
// The Python layer (ops/_common.py) converts arrays once, checks that operands share a device, and
// passes cupy's current stream as an integer; the bindings only check, convert, release the GIL and call
// the plain C++ launchers declared in csrc/include/layerforge/*.h (namespace layerforge::cuda).
#pragma once
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "layerforge/cuda.h"
#include "layerforge/view.h"

namespace layerforge {
namespace py_cuda {

namespace py = pybind11;

// ------------------------------------------------------------------ registry
using Binder = void (*)(py::module_&);
inline std::vector<Binder>& binders() {
    static std::vector<Binder> all;  // function-local: safe against static-initialisation order
    return all;
}
inline int register_binder(Binder b) {
    binders().push_back(b);
    return 0;
}
// Usage in a cuda_<family>.cpp:   LAYERFORGE_CUDA_BINDINGS(gemm) { m.def(...); }
#define LAYERFORGE_CUDA_BINDINGS(family)                                                        \
    static void layerforge_bind_cuda_##family(pybind11::module_& m);                           \
    static const int layerforge_bind_cuda_##family##_registered =                              \
        ::layerforge::py_cuda::register_binder(&layerforge_bind_cuda_##family);                \
    static void layerforge_bind_cuda_##family(pybind11::module_& m)

// ------------------------------------------------------------------ arrays
// typestr of __cuda_array_interface__ -> DType. bfloat16 has no standard typestr (cupy has no bfloat16;
// ml_dtypes writes "<V2"), so bf16 arrays arrive as uint16 ("<u2") with `as_bf16` set by the caller.
inline DType dtype_from_typestr(const std::string& ts, const char* name, bool as_bf16) {
    if (ts.size() >= 3 && (ts[0] == '<' || ts[0] == '|' || ts[0] == '=')) {
        const std::string k = ts.substr(1);
        if (k == "f4") return DType::f32;
        if (k == "f8") return DType::f64;
        if (k == "f2") return DType::f16;
        if (k == "i8") return DType::i64;
        if ((k == "u2" || k == "V2") && as_bf16) return DType::bf16;
    }
    throw DTypeError(std::string(name) + ": unsupported GPU array dtype '" + ts +
                     "' (float32, float64, float16, and bfloat16 passed as uint16 are supported)");
}

// A view of a GPU array given by __cuda_array_interface__ (version 2 or 3). Byte strides become element
// strides; a pointer that is not device memory (e.g. a host pointer) is rejected with ValueError naming
// the argument, before any kernel can read it.
inline View cuda_view(const py::handle& obj, const char* name, bool writeable = false, bool as_bf16 = false) {
    if (!py::hasattr(obj, "__cuda_array_interface__"))
        throw DTypeError(std::string(name) + ": expected a GPU array (an object with __cuda_array_interface__), got " +
                         std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
    const py::dict cai = obj.attr("__cuda_array_interface__");
    View v;
    v.dtype = dtype_from_typestr(py::str(cai["typestr"]), name, as_bf16);
    const py::tuple data = cai["data"];
    const uintptr_t ptr = data[0].cast<uintptr_t>();
    const bool readonly = data[1].cast<bool>();
    if (writeable && readonly) throw ValueError(std::string(name) + ": GPU array is read-only");
    const py::tuple shape = cai["shape"];
    if (shape.size() > static_cast<size_t>(kMaxDims))
        throw ValueError(std::string(name) + ": at most " + std::to_string(kMaxDims) + " dimensions");
    v.ndim = static_cast<int>(shape.size());
    for (int d = 0; d < v.ndim; ++d) v.shape[d] = shape[d].cast<int64_t>();
    const int64_t item = dtype_size(v.dtype);
    py::object strides = cai.contains("strides") ? py::object(cai["strides"]) : py::object(py::none());
    if (strides.is_none()) {
        int64_t st = 1;
        for (int d = v.ndim - 1; d >= 0; --d) {
            v.strides[d] = st;
            st *= v.shape[d];
        }
    } else {
        const py::tuple s = strides;
        for (int d = 0; d < v.ndim; ++d) {
            const int64_t sb = s[d].cast<int64_t>();
            if (sb % item != 0)
                throw ValueError(std::string(name) + ": byte strides must be multiples of the item size");
            v.strides[d] = sb / item;
        }
    }
    v.data = reinterpret_cast<void*>(ptr);
    if (ptr % static_cast<uintptr_t>(item) != 0)
        throw ValueError(std::string(name) + ": data is not aligned to its item size");
    if (v.numel() > 0) cuda::check_device_pointer(v.data, name);
    return v;
}

// cupy's current stream arrives as an integer handle (0 = the legacy default stream).
inline void* stream_from(uintptr_t handle) { return reinterpret_cast<void*>(handle); }

}  // namespace py_cuda
}  // namespace layerforge
