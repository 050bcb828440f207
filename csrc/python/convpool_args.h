// The argument unpacking of the conv/pool bindings, shared by the CPU (bind_conv.cpp) and CUDA
// (cuda_conv.cpp) modules: the Python layer (ops/conv.py, ops/pool.py) normalises the user's arguments
// once and passes them as a flat int list plus a layout string, the same for both devices.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "layerforge/conv.h"
#include "layerforge/error.h"
#include "layerforge/pool.h"

namespace layerforge {
namespace py_args {

inline Layout parse_layout(const std::string& s) {
    if (s == "NCHW") return Layout::NCHW;
    if (s == "NHWC") return Layout::NHWC;
    throw ValueError("layout must be 'NCHW' or 'NHWC', got '" + s + "'");
}

// params: (stride_h, stride_w, pad_top, pad_bottom, pad_left, pad_right, dil_h, dil_w, groups)
inline Conv2dParams conv_params(const std::vector<int64_t>& a, const std::string& layout) {
    if (a.size() != 9) throw ValueError("conv2d: internal: params must have 9 entries");
    Conv2dParams p;
    p.stride_h = a[0];
    p.stride_w = a[1];
    p.pad_top = a[2];
    p.pad_bottom = a[3];
    p.pad_left = a[4];
    p.pad_right = a[5];
    p.dil_h = a[6];
    p.dil_w = a[7];
    p.groups = a[8];
    p.layout = parse_layout(layout);
    return p;
}

// params: (kh, kw, sh, sw, ph, pw, dh, dw, ceil_mode, count_include_pad, divisor_override)
inline Pool2dParams pool_params(const std::vector<int64_t>& a, const std::string& layout) {
    if (a.size() != 11) throw ValueError("pooling: internal: params must have 11 entries");
    Pool2dParams p;
    p.kernel_h = a[0];
    p.kernel_w = a[1];
    p.stride_h = a[2];
    p.stride_w = a[3];
    p.pad_h = a[4];
    p.pad_w = a[5];
    p.dil_h = a[6];
    p.dil_w = a[7];
    p.ceil_mode = a[8] != 0;
    p.count_include_pad = a[9] != 0;
    p.divisor_override = a[10];
    p.layout = parse_layout(layout);
    return p;
}

}  // namespace py_args
}  // namespace layerforge
