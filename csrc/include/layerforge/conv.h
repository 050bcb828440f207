// layerforge/conv.h — 2-d convolution on the CPU, forward and backward (torch.nn.functional.conv2d).
//
// Shapes (layout NCHW):  x (N, C, H, W), weight (K, C/groups, R, S), bias (K,), out (N, K, P, Q)
//        (layout NHWC):  x (N, H, W, C), weight (K, R, S, C/groups), bias (K,), out (N, P, Q, K)
// with P = (H + pad_top + pad_bottom - dil_h*(R-1) - 1) / stride_h + 1 (likewise Q). Padding may be
// asymmetric (padding="same" with an even kernel). Every view must be C-contiguous: the Python layer
// copies other strides once, visibly, before calling (ops/conv.py, `_contiguous`).
//
// Algorithm, chosen per shape (conv2d_algorithm() names it):
//  * "direct"      C/groups == 1 with groups > 1 (depthwise, channel multipliers): loops over the kernel
//                  taps, vectorised along the contiguous axis (W for NCHW, channels for NHWC); an AVX2
//                  build of the same loops runs on the avx2 path. (The first layer, C == 1, measured
//                  ~5x faster on im2col + GEMM with depth R*S than on these loops, so it goes there.)
//  * "gemm_1x1"    1x1 kernel, stride 1, no padding: the image *is* the GEMM operand (no copy); NHWC
//                  runs the whole batch as one GEMM.
//  * "im2col_gemm" everything else: per image and group, im2col into a per-thread arena buffer, then the
//                  packed GEMM (gemm.h). Images are spread over threads (GEMM single-threaded) when the
//                  batch divides evenly, else the GEMM is threaded.
// Backward: grad_x = transposed convolution (GEMM W^T @ grad_out, then col2im); grad_weight = GEMM
// grad_out @ col^T with the batch reduction split into one fixed chunk of images per thread, each into
// its own partial buffer, summed in thread order (deterministic for a given thread count).
//
// Outputs are written (=), never accumulated: out, grad_x, grad_weight, grad_bias.
#pragma once
#include <cstdint>
#include <string>

#include "layerforge/view.h"

namespace layerforge {

struct Conv2dParams {
    int64_t stride_h = 1, stride_w = 1;
    int64_t pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
    int64_t dil_h = 1, dil_w = 1;
    int64_t groups = 1;
    Layout layout = Layout::NCHW;
};

// out = conv2d(x, weight) + bias. bias may be nullptr.
void conv2d_forward(const View& x, const View& weight, const View* bias, const View& out,
                    const Conv2dParams& p);

// Gradients of conv2d_forward. Any of grad_x (shape of x), grad_weight (shape of weight) and grad_bias
// (K,) may be nullptr (not computed).
void conv2d_backward(const View& grad_out, const View& x, const View& weight, const View* grad_x,
                     const View* grad_weight, const View* grad_bias, const Conv2dParams& p);

// The algorithm conv2d_forward/backward use for these shapes: "direct", "gemm_1x1" or "im2col_gemm".
std::string conv2d_algorithm(const View& x, const View& weight, const Conv2dParams& p);

}  // namespace layerforge
