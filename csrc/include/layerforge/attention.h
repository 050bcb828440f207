// layerforge/attention.h — scaled-dot-product attention (FlashAttention-style), forward and backward, on
// the CPU (namespace layerforge) and the GPU (namespace layerforge::cuda, csrc/cuda/attention.cu).
//
//   out = dropout(softmax(q k^T * scale + mask)) v        per batch index, as torch's SDPA
//
// Views are 4-d, two batch dims (e.g. batch and heads) then rows then features:
//   q (B1, B2, L, D), k (B1, B2, S, D), v (B1, B2, S, Dv), out (B1, B2, L, Dv), lse (B1, B2, L).
// Any strides in the first three dims (so q may be a transposed view of (B, L, H, D)); the last dim
// must have stride 1. lse is the per-row log-sum-exp of the (undropped, masked, scaled) scores, saved by
// the forward for the backward; it is -inf for a fully masked row, whose output (and gradients) are 0.
// Memory: tiles of queries against tiles of keys with an online softmax; the L x S matrix is never
// materialised (forward and backward scratch is O(threads x tile) plus O(B1 B2 L)).
#pragma once
#include <cstdint>
#include <limits>

#include "layerforge/view.h"

namespace layerforge {

// An optional mask broadcast to (B1, B2, L, S) by strides (zero strides broadcast, any strides).
// Boolean masks (1 byte per element, nonzero = attend) or additive float masks of the q dtype.
struct AttentionMask {
    const void* data = nullptr;  // null: no mask
    bool is_bool = false;
    int64_t strides[4] = {};  // in elements
};

struct AttentionParams {
    double scale = std::numeric_limits<double>::quiet_NaN();  // NaN: 1/sqrt(D)
    bool is_causal = false;  // query i attends keys j <= i (top-left aligned, as torch)
    double dropout_p = 0.0;  // probability of dropping an attention weight
    uint64_t seed = 0;       // dropout mask = a counter-based hash of (seed, batch, row, column)
};

// Writes out and lse.
void sdpa_forward(const View& q, const View& k, const View& v, const AttentionMask& mask,
                  const AttentionParams& p, const View& out, const View& lse);

// From grad_out (B1, B2, L, Dv) and the forward's out and lse: writes (=) grad_q, grad_k, grad_v
// (shapes of q, k, v; grad_q/grad_k/grad_v must be C-contiguous).
void sdpa_backward(const View& q, const View& k, const View& v, const AttentionMask& mask,
                   const AttentionParams& p, const View& out, const View& lse, const View& grad_out,
                   const View& grad_q, const View& grad_k, const View& grad_v);

// ---------------------------------------------------------------- GPU (csrc/cuda/attention.cu)
// The same semantics on device memory, launched on `stream` (a cudaStream_t; nullptr = the legacy default
// stream). Differences from the CPU functions:
//  * dtypes: float32, float64, float16 and bfloat16 (q, k, v, out, grad_* all of one dtype);
//  * lse is float32 (float64 when q is float64): the half types keep their statistics in float32;
//  * an additive float mask is float32 (float64 when q is float64), not q's dtype; bool masks as on the CPU;
//  * D and Dv at most 256. float16/bfloat16 with D == Dv in {64, 128} (and 16-byte aligned rows) run on the
//    tensor cores (mma.sync m16n8k16, sm_80+); every other case on a plain SIMT path with float (float64 for
//    float64) arithmetic;
//  * the dropout mask is the CPU's: the same counter-based hash of (seed, batch, row, column), so the same
//    seed drops the same weights on both devices.
// Scratch (the backward's per-row statistics) is allocated stream-ordered (cudaMallocAsync) and freed on
// the stream. The backward is deterministic: grad_k/grad_v come from one pass over query tiles per key
// tile, grad_q from a second pass over key tiles per query tile (no atomics).
namespace cuda {

void sdpa_forward(const View& q, const View& k, const View& v, const AttentionMask& mask,
                  const AttentionParams& p, const View& out, const View& lse, void* stream);

void sdpa_backward(const View& q, const View& k, const View& v, const AttentionMask& mask,
                   const AttentionParams& p, const View& out, const View& lse, const View& grad_out,
                   const View& grad_q, const View& grad_k, const View& grad_v, void* stream);

}  // namespace cuda

}  // namespace layerforge
