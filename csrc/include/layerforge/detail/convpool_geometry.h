// layerforge/detail/convpool_geometry.h — INTERNAL: the geometry of a convolution / pooling call, shared by
// the CPU kernels (csrc/cpu) and the CUDA kernels (csrc/cuda). Plain structs, no std:: (the CPU's
// AVX2-compiled loop file includes this; see csrc/cpu/convpool_internal.h). Filled and validated by
// convpool_checks.h.
#pragma once
#include <cstdint>

namespace layerforge {
namespace detail {

// conv2d: x (N, C, H, W) / (N, H, W, C), weight (K, Cg, R, S) / (K, R, S, Cg), out (N, K, P, Q) / (N, P, Q, K);
// G groups, Cg = C / G input and Kg = K / G output channels per group; stride (sh, sw), top/left padding
// (pt, pl) (bottom/right padding only shows in P, Q), dilation (dh, dw).
struct ConvGeo {
    int64_t N, C, H, W, K, R, S, P, Q, G, Cg, Kg;
    int64_t sh, sw, pt, pl, dh, dw;
    bool nhwc;
};

// pooling: x (N, C, H, W) / (N, H, W, C) -> out (N, C, P, Q) / (N, P, Q, C); kernel (kh, kw), stride, symmetric
// padding (ph, pw), dilation (max only; 1 for avg); divisor: avg's divisor_override (0: none).
struct PoolGeo {
    int64_t N, C, H, W, P, Q;
    int64_t kh, kw, sh, sw, ph, pw, dh, dw;
    bool nhwc;
    bool count_include_pad;
    int64_t divisor;  // 0: none
};

}  // namespace detail
}  // namespace layerforge
