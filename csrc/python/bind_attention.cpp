// Bindings of the attention family: scaled-dot-product attention forward and backward
// (layerforge/attention.h). Views arrive 4-d (B1, B2, rows, features) from python/layerforge/ops.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "layerforge/attention.h"
#include "attention_args.h"
#include "common.h"

namespace layerforge {
namespace py_bind {

namespace {
// The mask: None, a bool array or a float array of q's dtype, 4-d (broadcast by zero strides).
AttentionMask to_mask(const py::object& o, DType qdt) {
    AttentionMask m;
    if (o.is_none()) return m;
    const py::array a = py::cast<py::array>(o);
    if (a.ndim() != 4) throw ValueError("attn_mask must be passed 4-d to the kernel");
    const py::dtype dt = a.dtype();
    int64_t item;
    if (dt.kind() == 'b') {
        m.is_bool = true;
        item = 1;
    } else {
        const View vm = to_view(a, "attn_mask");
        if (vm.dtype != qdt) throw DTypeError("attn_mask: a float mask must have the dtype of q");
        item = dtype_size(qdt);
    }
    for (int d = 0; d < 4; ++d) {
        if (a.strides(d) % item != 0) throw ValueError("attn_mask: byte strides must be multiples of the item size");
        m.strides[d] = a.strides(d) / item;
    }
    m.data = a.data();
    return m;
}
}  // namespace

void bind_attention(py::module_& m) {
    m.def(
        "sdpa_forward",
        [](const py::array& q, const py::array& k, const py::array& v, const py::object& mask, double dropout_p,
           bool is_causal, const py::object& scale, uint64_t seed, const py::array& out, const py::array& lse) {
            const View vq = to_view(q, "q"), vk = to_view(k, "k"), vv = to_view(v, "v");
            const View vo = to_view(out, "out", true), vl = to_view(lse, "lse", true);
            const AttentionMask am = to_mask(mask, vq.dtype);
            const AttentionParams p = py_args::attention_params(dropout_p, is_causal, scale, seed);
            py::gil_scoped_release release;
            sdpa_forward(vq, vk, vv, am, p, vo, vl);
        },
        py::arg("q").noconvert(), py::arg("k").noconvert(), py::arg("v").noconvert(), py::arg("attn_mask"),
        py::arg("dropout_p"), py::arg("is_causal"), py::arg("scale"), py::arg("seed"), py::arg("out").noconvert(),
        py::arg("lse").noconvert());

    m.def(
        "sdpa_backward",
        [](const py::array& q, const py::array& k, const py::array& v, const py::object& mask, double dropout_p,
           bool is_causal, const py::object& scale, uint64_t seed, const py::array& out, const py::array& lse,
           const py::array& grad_out, const py::array& grad_q, const py::array& grad_k, const py::array& grad_v) {
            const View vq = to_view(q, "q"), vk = to_view(k, "k"), vv = to_view(v, "v");
            const View vo = to_view(out, "out"), vl = to_view(lse, "lse"), vg = to_view(grad_out, "grad_out");
            const View gq = to_view(grad_q, "grad_q", true), gk = to_view(grad_k, "grad_k", true),
                       gv = to_view(grad_v, "grad_v", true);
            const AttentionMask am = to_mask(mask, vq.dtype);
            const AttentionParams p = py_args::attention_params(dropout_p, is_causal, scale, seed);
            py::gil_scoped_release release;
            sdpa_backward(vq, vk, vv, am, p, vo, vl, vg, gq, gk, gv);
        },
        py::arg("q").noconvert(), py::arg("k").noconvert(), py::arg("v").noconvert(), py::arg("attn_mask"),
        py::arg("dropout_p"), py::arg("is_causal"), py::arg("scale"), py::arg("seed"), py::arg("out").noconvert(),
        py::arg("lse").noconvert(), py::arg("grad_out").noconvert(), py::arg("grad_q").noconvert(),
        py::arg("grad_k").noconvert(), py::arg("grad_v").noconvert());
}

}  // namespace py_bind
}  // namespace layerforge
