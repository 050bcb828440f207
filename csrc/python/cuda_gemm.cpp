// CUDA bindings of the GEMM family: numpy-style matmul and the strided-batched GEMM of the C++ API, on
// objects with __cuda_array_interface__ (cupy arrays). bfloat16 operands arrive as uint16 arrays holding
// the bf16 bits, with bf16=True (cupy has no bfloat16 dtype).
#include <pybind11/pybind11.h>

#include <cstdint>

#include "layerforge/gemm.h"
#include "cuda_common.h"

namespace layerforge {
namespace py_cuda {

LAYERFORGE_CUDA_BINDINGS(gemm) {
    // a (..., M, K), b (..., K, N), out (..., M, N): out written; batch dims broadcast (checked in C++).
    m.def(
        "matmul",
        [](const py::object& a, const py::object& b, const py::object& out, bool allow_tf32, uintptr_t stream,
           bool bf16) {
            const View va = cuda_view(a, "a", false, bf16), vb = cuda_view(b, "b", false, bf16);
            const View vo = cuda_view(out, "out", true, bf16);
            py::gil_scoped_release release;
            cuda::matmul(va, vb, vo, allow_tf32, stream_from(stream));
        },
        py::arg("a"), py::arg("b"), py::arg("out"), py::arg("allow_tf32"), py::arg("stream"),
        py::arg("bf16") = false);

    // c[i] = alpha * a[i] @ b[i] + beta * c[i] on 3-d arrays (batch, rows, cols) of any strides (a zero
    // batch stride broadcasts a or b): gemm_strided_batched as other CUDA kernels call it.
    m.def(
        "gemm_strided_batched",
        [](const py::object& a, const py::object& b, const py::object& c, double alpha, double beta,
           bool allow_tf32, uintptr_t stream, bool bf16) {
            const View va = cuda_view(a, "a", false, bf16), vb = cuda_view(b, "b", false, bf16);
            const View vc = cuda_view(c, "c", true, bf16);
            if (va.ndim != 3 || vb.ndim != 3 || vc.ndim != 3)
                throw ValueError("gemm_strided_batched: a, b and c must be 3-d (batch, rows, cols), got a" +
                                 va.shape_str() + " b" + vb.shape_str() + " c" + vc.shape_str());
            if (va.dtype != vb.dtype || va.dtype != vc.dtype)
                throw DTypeError("gemm_strided_batched: a, b and c must have the same dtype");
            const int64_t batch = vc.shape[0], M = vc.shape[1], N = vc.shape[2], K = va.shape[2];
            if (va.shape[0] != batch || vb.shape[0] != batch || va.shape[1] != M || vb.shape[1] != K ||
                vb.shape[2] != N)
                throw ValueError("gemm_strided_batched: shapes do not agree: a" + va.shape_str() + " b" +
                                 vb.shape_str() + " c" + vc.shape_str());
            py::gil_scoped_release release;
            cuda::gemm_strided_batched(va.dtype, batch, M, N, K, static_cast<float>(alpha), va.data,
                                       va.strides[0], va.strides[1], va.strides[2], vb.data, vb.strides[0],
                                       vb.strides[1], vb.strides[2], static_cast<float>(beta), vc.data,
                                       vc.strides[0], vc.strides[1], vc.strides[2], allow_tf32,
                                       stream_from(stream));
        },
        py::arg("a"), py::arg("b"), py::arg("c"), py::arg("alpha") = 1.0, py::arg("beta") = 0.0,
        py::arg("allow_tf32") = false, py::arg("stream") = 0, py::arg("bf16") = false);
}

}  // namespace py_cuda
}  // namespace layerforge
