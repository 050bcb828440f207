// CUDA bindings of the attention family (layerforge::cuda::sdpa_forward / sdpa_backward in attention.h).
// Arrays arrive 4-d (B1, B2, rows, features) from python/layerforge/ops/attention.py as objects with
// __cuda_array_interface__; bfloat16 arrays are uint16 arrays with bf16=True.
#include <string>

#include "layerforge/attention.h"
#include "attention_args.h"
#include "cuda_common.h"

namespace layerforge {
namespace py_cuda {

namespace {

// None, a bool GPU array (|b1, one byte per element) or a float GPU array of the accumulation dtype
// (float32, or float64 for float64 q), 4-d, broadcast by zero strides.
AttentionMask cuda_mask(const py::object& o, DType qdt) {
    AttentionMask m;
    if (o.is_none()) return m;
    if (!py::hasattr(o, "__cuda_array_interface__"))
        throw DTypeError("attn_mask: expected a GPU array (an object with __cuda_array_interface__)");
    const py::dict cai = o.attr("__cuda_array_interface__");
    const std::string ts = py::str(cai["typestr"]);
    if (ts == "|b1") {
        const py::tuple shape = cai["shape"];
        if (shape.size() != 4) throw ValueError("attn_mask must be passed 4-d to the kernel");
        int64_t numel = 1, st = 1;
        int64_t dims[4];
        for (int d = 0; d < 4; ++d) numel *= (dims[d] = shape[d].cast<int64_t>());
        py::object strides = cai.contains("strides") ? py::object(cai["strides"]) : py::object(py::none());
        for (int d = 3; d >= 0; --d) {
            m.strides[d] = strides.is_none() ? st : py::tuple(strides)[d].cast<int64_t>();  // bytes = elements
            st *= dims[d];
        }
        m.is_bool = true;
        m.data = reinterpret_cast<const void*>(py::tuple(cai["data"])[0].cast<uintptr_t>());
        if (numel > 0) cuda::check_device_pointer(m.data, "attn_mask");
        return m;
    }
    const View vm = cuda_view(o, "attn_mask");
    const DType want = qdt == DType::f64 ? DType::f64 : DType::f32;
    if (vm.dtype != want)
        throw DTypeError(std::string("attn_mask: a float mask must be ") + dtype_name(want) + " on the GPU");
    if (vm.ndim != 4) throw ValueError("attn_mask must be passed 4-d to the kernel");
    for (int d = 0; d < 4; ++d) m.strides[d] = vm.strides[d];
    m.data = vm.data;
    return m;
}

}  // namespace

LAYERFORGE_CUDA_BINDINGS(attention) {
    m.def(
        "sdpa_forward",
        [](const py::object& q, const py::object& k, const py::object& v, const py::object& mask, double dropout_p,
           bool is_causal, const py::object& scale, uint64_t seed, const py::object& out, const py::object& lse,
           bool bf16, uintptr_t stream) {
            const View vq = cuda_view(q, "q", false, bf16), vk = cuda_view(k, "k", false, bf16),
                       vv = cuda_view(v, "v", false, bf16);
            const View vo = cuda_view(out, "out", true, bf16), vl = cuda_view(lse, "lse", true);
            const AttentionMask am = cuda_mask(mask, vq.dtype);
            const AttentionParams p = py_args::attention_params(dropout_p, is_causal, scale, seed);
            py::gil_scoped_release release;
            cuda::sdpa_forward(vq, vk, vv, am, p, vo, vl, stream_from(stream));
        },
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("attn_mask"), py::arg("dropout_p"), py::arg("is_causal"),
        py::arg("scale"), py::arg("seed"), py::arg("out"), py::arg("lse"), py::arg("bf16"), py::arg("stream"),
        "out, lse = softmax(q k^T scale + mask) v on the GPU (layerforge/attention.h); bf16: uint16 arrays "
        "hold bfloat16 bits.");

    m.def(
        "sdpa_backward",
        [](const py::object& q, const py::object& k, const py::object& v, const py::object& mask, double dropout_p,
           bool is_causal, const py::object& scale, uint64_t seed, const py::object& out, const py::object& lse,
           const py::object& grad_out, const py::object& grad_q, const py::object& grad_k, const py::object& grad_v,
           bool bf16, uintptr_t stream) {
            const View vq = cuda_view(q, "q", false, bf16), vk = cuda_view(k, "k", false, bf16),
                       vv = cuda_view(v, "v", false, bf16);
            const View vo = cuda_view(out, "out", false, bf16), vl = cuda_view(lse, "lse"),
                       vg = cuda_view(grad_out, "grad_out", false, bf16);
            const View gq = cuda_view(grad_q, "grad_q", true, bf16), gk = cuda_view(grad_k, "grad_k", true, bf16),
                       gv = cuda_view(grad_v, "grad_v", true, bf16);
            const AttentionMask am = cuda_mask(mask, vq.dtype);
            const AttentionParams p = py_args::attention_params(dropout_p, is_causal, scale, seed);
            py::gil_scoped_release release;
            cuda::sdpa_backward(vq, vk, vv, am, p, vo, vl, vg, gq, gk, gv, stream_from(stream));
        },
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("attn_mask"), py::arg("dropout_p"), py::arg("is_causal"),
        py::arg("scale"), py::arg("seed"), py::arg("out"), py::arg("lse"), py::arg("grad_out"), py::arg("grad_q"),
        py::arg("grad_k"), py::arg("grad_v"), py::arg("bf16"), py::arg("stream"),
        "grad_q, grad_k, grad_v (written) of sdpa_forward on the GPU, from grad_out and the saved out, lse.");
}

}  // namespace py_cuda
}  // namespace layerforge
