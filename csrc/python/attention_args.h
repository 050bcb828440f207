// Argument handling shared by the CPU (bind_attention.cpp) and CUDA (cuda_attention.cpp) bindings of the
// attention family.
#pragma once
#include <pybind11/pybind11.h>

#include <cstdint>

#include "layerforge/attention.h"

namespace layerforge {
namespace py_args {

// The scalar arguments of sdpa_forward / sdpa_backward; scale None -> 1/sqrt(D) (AttentionParams' default).
inline AttentionParams attention_params(double dropout_p, bool is_causal, const pybind11::object& scale,
                                        uint64_t seed) {
    AttentionParams p;
    p.dropout_p = dropout_p;
    p.is_causal = is_causal;
    if (!scale.is_none()) p.scale = pybind11::cast<double>(scale);
    p.seed = seed;
    return p;
}

}  // namespace py_args
}  // namespace layerforge
