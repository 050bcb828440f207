// Bindings of the GEMM family: numpy-style matmul and the BLAS-style gemm of the C++ API.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include "layerforge/gemm.h"
#include "common.h"

namespace layerforge {
namespace py_bind {

void bind_gemm(py::module_& m) {
    // a (..., M, K), b (..., K, N), out (..., M, N): same rank, batch dims already broadcast by Python.
    m.def(
        "matmul",
        [](const py::array& a, const py::array& b, const py::array& out) {
            const View va = to_view(a, "a"), vb = to_view(b, "b"), vo = to_view(out, "out", true);
            py::gil_scoped_release release;
            matmul(va, vb, vo);
        },
        py::arg("a").noconvert(), py::arg("b").noconvert(), py::arg("out").noconvert());

    // C = alpha * op(A) @ op(B) + beta * C on 2-d arrays of any strides; trans_a/trans_b transpose the
    // given arrays (op(A) = A.T), exercising the C++ API's transpose handling.
    m.def(
        "gemm",
        [](const py::array& a, const py::array& b, const py::array& c, double alpha, double beta,
           bool trans_a, bool trans_b, int nthreads) {
            View va = to_view(a, "a"), vb = to_view(b, "b"), vc = to_view(c, "c", true);
            if (va.ndim != 2 || vb.ndim != 2 || vc.ndim != 2)
                throw ValueError("gemm: a, b and c must be 2-d");
            if (va.dtype != vb.dtype || va.dtype != vc.dtype)
                throw DTypeError("gemm: a, b and c must have the same dtype");
            auto op = [](View& v, bool t) {
                if (t) {
                    std::swap(v.shape[0], v.shape[1]);
                    std::swap(v.strides[0], v.strides[1]);
                }
            };
            op(va, trans_a);
            op(vb, trans_b);
            const int64_t M = va.shape[0], K = va.shape[1], N = vb.shape[1];
            if (vb.shape[0] != K || vc.shape[0] != M || vc.shape[1] != N)
                throw ValueError("gemm: shapes do not agree: op(a)" + va.shape_str() + " op(b)" +
                                 vb.shape_str() + " c" + vc.shape_str());
            py::gil_scoped_release release;
            if (va.dtype == DType::f32)
                gemm_strided<float>(M, N, K, static_cast<float>(alpha), va.ptr<float>(), va.strides[0],
                                    va.strides[1], vb.ptr<float>(), vb.strides[0], vb.strides[1],
                                    static_cast<float>(beta), vc.ptr<float>(), vc.strides[0],
                                    vc.strides[1], nthreads);
            else
                gemm_strided<double>(M, N, K, alpha, va.ptr<double>(), va.strides[0], va.strides[1],
                                     vb.ptr<double>(), vb.strides[0], vb.strides[1], beta,
                                     vc.ptr<double>(), vc.strides[0], vc.strides[1], nthreads);
        },
        py::arg("a").noconvert(), py::arg("b").noconvert(), py::arg("c").noconvert(),
        py::arg("alpha") = 1.0, py::arg("beta") = 0.0, py::arg("trans_a") = false,
        py::arg("trans_b") = false, py::arg("nthreads") = 0);
}

}  // namespace py_bind
}  // namespace layerforge
