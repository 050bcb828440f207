// Shared helpers of the bindings: numpy array -> layerforge::View, and argument checks.
// The bindings stay thin: check, convert, release the GIL, call the C++ API.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "layerforge/view.h"

namespace layerforge {
namespace py_bind {

namespace py = pybind11;

inline DType dtype_of(const py::array& arr, const char* name) {
    const py::dtype dt = arr.dtype();
    if (dt.kind() == 'f' && dt.itemsize() == 4) return DType::f32;
    if (dt.kind() == 'f' && dt.itemsize() == 8) return DType::f64;
    throw DTypeError(std::string(name) + ": unsupported dtype " + std::string(py::str(dt)) +
                     " (float32 and float64 are supported)");
}

// A view of a numpy array. Strides are converted from bytes to elements; an array whose byte strides
// are not multiples of its item size, or whose data is not aligned to it, is rejected (the Python layer
// copies such arrays before calling, so this is a guard, not a path users hit).
inline View to_view(const py::array& arr, const char* name, bool writeable = false) {
    View v;
    v.dtype = dtype_of(arr, name);
    if (arr.ndim() > kMaxDims)
        throw ValueError(std::string(name) + ": at most " + std::to_string(kMaxDims) + " dimensions");
    if (writeable && !arr.writeable()) throw ValueError(std::string(name) + ": array is read-only");
    v.ndim = static_cast<int>(arr.ndim());
    const int64_t item = dtype_size(v.dtype);
    for (int d = 0; d < v.ndim; ++d) {
        v.shape[d] = arr.shape(d);
        const int64_t sb = arr.strides(d);
        if (sb % item != 0)
            throw ValueError(std::string(name) + ": byte strides must be multiples of the item size");
        v.strides[d] = sb / item;
    }
    v.data = const_cast<void*>(arr.data());
    if (reinterpret_cast<uintptr_t>(v.data) % item != 0)
        throw ValueError(std::string(name) + ": data is not aligned to its item size");
    return v;
}

}  // namespace py_bind
}  // namespace layerforge
