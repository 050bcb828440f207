// layerforge/detail/attention_checks.h — argument checks shared by the CPU (csrc/cpu/attention.cpp) and
// GPU (csrc/cuda/attention.cu) attention entry points, so both devices reject the same inputs with the same
// words. Which dtypes a device supports, and the dtype of lse, are the caller's to say.
#pragma once
#include <string>

#include "layerforge/attention.h"
#include "layerforge/error.h"
#include "layerforge/view.h"

namespace layerforge {
namespace detail {

[[noreturn]] inline void sdpa_fail(const std::string& what) {
    throw ValueError("scaled_dot_product_attention: " + what);
}

// 4-d (B1, B2, rows, features) with a unit stride in the last dim.
inline void sdpa_expect4(const View& v, const char* name) {
    if (v.ndim != 4) sdpa_fail(std::string(name) + " must be 4-d (B1, B2, rows, features), got " + v.shape_str());
    if (v.shape[3] > 1 && v.strides[3] != 1) sdpa_fail(std::string(name) + " must have unit stride in its last dim");
}

inline void sdpa_expect_shape(const View& v, const char* name, int64_t a, int64_t b, int64_t c, int64_t d,
                              int nd = 4) {
    const int64_t s[4] = {a, b, c, d};
    bool ok = v.ndim == nd;
    for (int i = 0; ok && i < nd; ++i) ok = v.shape[i] == s[i];
    if (!ok) sdpa_fail(std::string(name) + " has shape " + v.shape_str() + ", which does not fit q, k and v");
}

// q (B1, B2, L, D), k (B1, B2, S, D), v (B1, B2, S, Dv) of one dtype; mask and causal exclusive; dropout_p
// in [0, 1).
inline void sdpa_check_inputs(const View& q, const View& k, const View& v, const AttentionMask& mask,
                              const AttentionParams& p) {
    sdpa_expect4(q, "q");
    sdpa_expect4(k, "k");
    sdpa_expect4(v, "v");
    if (k.dtype != q.dtype || v.dtype != q.dtype)
        throw DTypeError("scaled_dot_product_attention: q, k and v must have the same dtype");
    for (int d = 0; d < 2; ++d)
        if (k.shape[d] != q.shape[d] || v.shape[d] != q.shape[d])
            sdpa_fail("batch dims of q " + q.shape_str() + ", k " + k.shape_str() + " and v " + v.shape_str() +
                      " must match");
    if (k.shape[3] != q.shape[3])
        sdpa_fail("q " + q.shape_str() + " and k " + k.shape_str() + " must have the same feature size D");
    if (v.shape[2] != k.shape[2])
        sdpa_fail("k " + k.shape_str() + " and v " + v.shape_str() + " must have the same number of keys S");
    if (mask.data && p.is_causal) sdpa_fail("attn_mask and is_causal cannot both be given");
    if (!(p.dropout_p >= 0.0 && p.dropout_p < 1.0)) sdpa_fail("dropout_p must be in [0, 1)");
}

// out (B1, B2, L, Dv) of q's dtype, lse (B1, B2, L) of lse_dtype.
inline void sdpa_check_outputs(const View& q, const View& v, const View& out, const View& lse, DType lse_dtype) {
    sdpa_expect4(out, "out");
    sdpa_expect_shape(out, "out", q.shape[0], q.shape[1], q.shape[2], v.shape[3]);
    sdpa_expect_shape(lse, "lse", q.shape[0], q.shape[1], q.shape[2], 0, 3);
    if (out.dtype != q.dtype || lse.dtype != lse_dtype)
        throw DTypeError(std::string("scaled_dot_product_attention: out must have q's dtype and lse dtype ") +
                         dtype_name(lse_dtype));
}

// The backward's arrays: out and lse as above, grad_out like out, grad_q/grad_k/grad_v C-contiguous with
// the shapes and dtype of q, k, v.
inline void sdpa_check_backward(const View& q, const View& k, const View& v, const View& out, const View& lse,
                                const View& grad_out, const View& grad_q, const View& grad_k, const View& grad_v,
                                DType lse_dtype) {
    sdpa_check_outputs(q, v, out, lse, lse_dtype);
    sdpa_expect4(grad_out, "grad_out");
    sdpa_expect_shape(grad_out, "grad_out", q.shape[0], q.shape[1], q.shape[2], v.shape[3]);
    sdpa_expect_shape(grad_q, "grad_q", q.shape[0], q.shape[1], q.shape[2], q.shape[3]);
    sdpa_expect_shape(grad_k, "grad_k", k.shape[0], k.shape[1], k.shape[2], k.shape[3]);
    sdpa_expect_shape(grad_v, "grad_v", v.shape[0], v.shape[1], v.shape[2], v.shape[3]);
    for (const View* w : {&grad_out, &grad_q, &grad_k, &grad_v})
        if (w->dtype != q.dtype) throw DTypeError("scaled_dot_product_attention: all arrays must have q's dtype");
    if (!grad_q.is_contiguous() || !grad_k.is_contiguous() || !grad_v.is_contiguous())
        sdpa_fail("grad_q, grad_k and grad_v must be C-contiguous");
}

}  // namespace detail
}  // namespace layerforge
