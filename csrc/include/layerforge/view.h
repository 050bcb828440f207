// layerforge/view.h — a non-owning view of an n-d array: pointer, dtype, shape, strides.
//
// Strides are in ELEMENTS (not bytes; numpy's byte strides are divided by the item size at the binding)
// and may be zero (broadcast) or negative (reversed views). Memory is always owned by the caller.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <string>

#include "layerforge/error.h"

namespace layerforge {

enum class DType : int { f32 = 0, f64 = 1, f16 = 2, bf16 = 3, i64 = 4 };  // i64: indices

inline const char* dtype_name(DType d) {
    switch (d) {
        case DType::f32: return "float32";
        case DType::f64: return "float64";
        case DType::f16: return "float16";
        case DType::bf16: return "bfloat16";
        case DType::i64: return "int64";
    }
    return "unknown";
}

inline int64_t dtype_size(DType d) {
    switch (d) {
        case DType::f32: return 4;
        case DType::f64: return 8;
        case DType::f16:
        case DType::bf16: return 2;
        case DType::i64: return 8;
    }
    return 0;
}

constexpr int kMaxDims = 8;

// Memory layout of 4-d image tensors: NCHW (PyTorch's default) or NHWC (channels-last).
enum class Layout : int { NCHW = 0, NHWC = 1 };

struct View {
    void* data = nullptr;
    DType dtype = DType::f32;
    int ndim = 0;
    int64_t shape[kMaxDims] = {};
    int64_t strides[kMaxDims] = {};  // in elements

    int64_t numel() const {
        int64_t n = 1;
        for (int i = 0; i < ndim; ++i) n *= shape[i];
        return n;
    }
    // Dimension i counted from the back for i < 0 (as Python indexing).
    int64_t dim(int i) const { return shape[i < 0 ? ndim + i : i]; }
    int64_t stride(int i) const { return strides[i < 0 ? ndim + i : i]; }
    template <typename T>
    T* ptr() const { return static_cast<T*>(data); }
    // Row-major contiguous (size-1 dims may have any stride; an empty view counts as contiguous).
    bool is_contiguous() const {
        if (numel() == 0) return true;
        int64_t st = 1;
        for (int d = ndim - 1; d >= 0; --d) {
            if (shape[d] != 1 && strides[d] != st) return false;
            st *= shape[d];
        }
        return true;
    }

    std::string shape_str() const {
        std::string s = "(";
        for (int i = 0; i < ndim; ++i) {
            s += std::to_string(shape[i]);
            if (ndim == 1 || i + 1 < ndim) s += (i + 1 < ndim ? ", " : ",");
        }
        return s + ")";
    }
};

// Build a contiguous row-major view (used by C++ callers on their own buffers).
inline View make_view(void* data, DType dtype, std::initializer_list<int64_t> shape) {
    View v;
    v.data = data;
    v.dtype = dtype;
    v.ndim = static_cast<int>(shape.size());
    if (v.ndim > kMaxDims) throw ValueError("make_view: too many dimensions");
    int i = 0;
    for (int64_t s : shape) v.shape[i++] = s;
    int64_t st = 1;
    for (int d = v.ndim - 1; d >= 0; --d) {
        v.strides[d] = st;
        st *= v.shape[d];
    }
    return v;
}

}  // namespace layerforge
