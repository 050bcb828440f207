// layerforge/matmul_batch.h — the shape logic of numpy-style batched matmul, shared by the CPU
// (csrc/cpu/gemm.cpp) and CUDA (csrc/cuda/gemm.cu) implementations of `matmul`, so both validate and
// walk the batch identically. Header-only and free of CUDA types.
//
// a (..., M, K) @ b (..., K, N) -> out (batch..., M, N): the leading (batch) dims of a and b are aligned
// from the right and broadcast as in numpy (a missing or size-1 dim stretches); out has the broadcast
// batch shape and exactly max(a.ndim, b.ndim) dims (the caller promotes 1-d operands).
#pragma once
#include <algorithm>
#include <cstdint>
#include <string>

#include "layerforge/error.h"
#include "layerforge/view.h"

namespace layerforge {

struct MatmulBatch {
    int64_t M = 0, N = 0, K = 0;
    int nb = 0;                  // batch dims (after collapse(): fewer, same walk)
    int64_t shape[kMaxDims] = {};  // batch shape of out
    // Element strides per batch dim of a, b and out; 0 where a or b is broadcast along that dim.
    int64_t sa[kMaxDims] = {}, sb[kMaxDims] = {}, sc[kMaxDims] = {};

    // Number of products: the product of the batch shape (1 with no batch dims).
    int64_t count() const {
        int64_t n = 1;
        for (int d = 0; d < nb; ++d) n *= shape[d];
        return n;
    }

    // Element offsets in a, b and out of batch element `idx` of the first `ndims` batch dims (row-major
    // walk; ndims = nb walks them all).
    void offsets(int64_t idx, int64_t& oa, int64_t& ob, int64_t& oc, int ndims) const {
        oa = ob = oc = 0;
        for (int d = ndims - 1; d >= 0; --d) {
            const int64_t i = idx % shape[d];
            idx /= shape[d];
            oa += i * sa[d];
            ob += i * sb[d];
            oc += i * sc[d];
        }
    }
    void offsets(int64_t idx, int64_t& oa, int64_t& ob, int64_t& oc) const { offsets(idx, oa, ob, oc, nb); }

    // Drops size-1 batch dims and merges neighbours that one stride per operand can walk (outer stride ==
    // inner stride * inner size for a, b and out alike). The walk order, hence every offset, is unchanged;
    // a contiguous batch of any rank becomes one dim, which a batched kernel takes in one launch.
    void collapse() {
        int n = 0;
        for (int d = 0; d < nb; ++d) {
            if (shape[d] == 1) continue;
            if (n > 0 && sa[n - 1] == sa[d] * shape[d] && sb[n - 1] == sb[d] * shape[d] &&
                sc[n - 1] == sc[d] * shape[d]) {
                shape[n - 1] *= shape[d];
                sa[n - 1] = sa[d];
                sb[n - 1] = sb[d];
                sc[n - 1] = sc[d];
                continue;
            }
            shape[n] = shape[d];
            sa[n] = sa[d];
            sb[n] = sb[d];
            sc[n] = sc[d];
            ++n;
        }
        nb = n;
    }
};

// Validates ranks, the inner dimension, out's shape, batch broadcasting and that the three dtypes agree
// (ValueError / DTypeError naming the shapes); which dtypes are supported is each backend's business.
inline MatmulBatch matmul_batch(const View& a, const View& b, const View& out) {
    if (a.ndim < 2 || b.ndim < 2 || out.ndim != std::max(a.ndim, b.ndim))
        throw ValueError("matmul: a and b need >= 2 dims and out max(a.ndim, b.ndim) dims, got a" +
                         a.shape_str() + " b" + b.shape_str() + " out" + out.shape_str());
    if (a.dtype != b.dtype || a.dtype != out.dtype)
        throw DTypeError(std::string("matmul: dtypes differ: a ") + dtype_name(a.dtype) + ", b " +
                         dtype_name(b.dtype) + ", out " + dtype_name(out.dtype));
    if (a.dim(-1) != b.dim(-2))
        throw ValueError("matmul: inner dimensions differ: a" + a.shape_str() + " and b" + b.shape_str());
    if (out.dim(-2) != a.dim(-2) || out.dim(-1) != b.dim(-1))
        throw ValueError("matmul: out" + out.shape_str() + " does not match a" + a.shape_str() + " @ b" +
                         b.shape_str());
    MatmulBatch mb;
    mb.M = out.dim(-2);
    mb.N = out.dim(-1);
    mb.K = a.dim(-1);
    mb.nb = out.ndim - 2;
    for (int d = 0; d < mb.nb; ++d) {
        // Batch dim d of out is dim da of a and db of b (aligned from the right; < 0: missing).
        const int da = d - (mb.nb - (a.ndim - 2)), db = d - (mb.nb - (b.ndim - 2));
        const int64_t ea = da >= 0 ? a.shape[da] : 1, eb = db >= 0 ? b.shape[db] : 1;
        const int64_t want = ea == 1 ? eb : ea;
        if ((eb != 1 && eb != want) || out.shape[d] != want)
            throw ValueError("matmul: batch dimensions do not broadcast: a" + a.shape_str() + " b" +
                             b.shape_str() + " out" + out.shape_str());
        mb.shape[d] = out.shape[d];
        mb.sa[d] = (da >= 0 && a.shape[da] != 1) ? a.strides[da] : 0;
        mb.sb[d] = (db >= 0 && b.shape[db] != 1) ? b.strides[db] : 0;
        mb.sc[d] = out.strides[d];
    }
    return mb;
}

}  // namespace layerforge
