// layerforge/conv.h — 2-d convolution, forward and backward (torch.nn.functional.conv2d), on the CPU and
// (namespace layerforge::cuda, at the end) on CUDA devices.
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
//  * "gemm_1x1"    1x1 kernel, stride 1, no padding: the image *is* the GEMM operand (no im2col); the
//                  whole batch runs as one GEMM (NCHW: the images' pixels back to back as its columns).
//  * "winograd_f4x4_3x3" / "winograd_f2x2_3x3" float32, 3x3, stride 1, undilated, >= 16 channels in and
//                  out per group (NHWC: the NCHW passes on transposed copies): Winograd — blocks of m x m-output tiles, input transform B^T d B,
//                  (m+2)^2 GEMMs of depth C/groups, output transform A^T m A. F(4x4) (4x fewer multiplies
//                  than direct) where its tiles need <= 0.75x F(2x2)'s multiplies and the output is >= 8
//                  on both sides (11x11 .. 56x56 outputs); else F(2x2) (2.25x fewer) for output rows >= 16.
//                  float32 error: F(4x4) ~1e-6 of max|y|, F(2x2) ~2e-7 (im2col ~1e-7). A pass that writes
//                  a NaN (an inf input: inf - inf in the transforms) is redone by im2col.
//  * "direct_blocked" float32, stride 1, undilated, one group, >= 8 input channels (NHWC forward: any), where whole
//                  micro-tiles of 6 output columns x 16 output channels waste at most 30% of the work and
//                  the batch fills the threads: register-blocked direct loops (12 AVX2 accumulators, 6
//                  broadcast pixels x 2 weight vectors per tap) over a zero-padded copy of each image,
//                  no im2col or packing (small planes that Winograd skips, e.g. 8x8 -> 6x6).
//  * "im2col_gemm" everything else: per image and group, im2col into a per-thread arena buffer, then the
//                  packed GEMM (gemm.h). Images are spread over threads (GEMM single-threaded) when the
//                  batch divides evenly, else the GEMM is threaded.
// Backward: where the Winograd rule holds for the forward's output, both gradients come from the forward's
// tiles in one pass: grad_weight = G^T [sum over tiles of (A dY A^T) o (B^T d B)] G ((m+2)^2 GEMMs reducing
// over the tiles, per-thread accumulators summed in thread order) and grad_x = the sum over tiles of
// B [U^T (A dY A^T)] B^T added into overlapping patches (threads own whole images; with fewer images than
// threads grad_x goes as below). Otherwise grad_x = transposed convolution (GEMM W^T @ grad_out, then
// col2im; or, where the Winograd or blocked rule holds for grad_x's own shape, that kernel run as a
// convolution of grad_out with the flipped, transposed weights); grad_weight = GEMM grad_out @ col^T with
// the batch reduction split into one fixed chunk of images per thread, each into its own partial buffer,
// summed in thread order (deterministic for a given thread count).
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

// The algorithm conv2d_forward uses for these shapes: "direct", "gemm_1x1", "winograd_f4x4_3x3",
// "winograd_f2x2_3x3", "direct_blocked" or "im2col_gemm".
std::string conv2d_algorithm(const View& x, const View& weight, const Conv2dParams& p);

// ------------------------------------------------------------------------------------------------ CUDA
// The same operations on device memory (csrc/cuda/conv.cu; built when nvcc is found): same views, params,
// shapes, checks (layerforge/detail/convpool_checks.h) and written outputs, launched asynchronously on
// `stream` (a cudaStream_t; nullptr = the legacy default stream). float32 and float64.
//
// Algorithm per shape (conv2d_algorithm() names it):
//  * "direct"        C/groups == 1 with groups > 1 (depthwise, channel multipliers): one thread per output
//                    (forward) / input (grad_x) element summing its taps; grad_weight and grad_bias as
//                    split reductions. A GEMM per group would have Kg (1-2) columns against a 64-128 wide tile.
//  * "implicit_gemm" everything else: output pixels x output channels, depth C/groups*R*S, tiles of the
//                    virtual im2col matrix gathered from the image straight into shared memory (never
//                    materialised). grad_x is the same kernel on grad_out with the flipped, transposed
//                    weight (the transposed convolution; strides become divisibility tests); grad_weight
//                    an implicit GEMM whose long N*P*Q reduction is split over blocks into partial buffers.
// Determinism: no atomics anywhere; split partials are summed in a fixed order, so results are identical
// from run to run on a given device (the split count depends on its multiprocessor count).
namespace cuda {

void conv2d_forward(const View& x, const View& weight, const View* bias, const View& out, const Conv2dParams& p,
                    void* stream);

// Workspace conv2d_backward needs, in elements of x's dtype (0 when none): the split partial sums of
// grad_weight (when `grad_weight`) and grad_bias (when `grad_bias`).
int64_t conv2d_backward_workspace_size(const View& x, const View& weight, const Conv2dParams& p, bool grad_weight,
                                       bool grad_bias);

// As layerforge::conv2d_backward; `workspace` is a contiguous 1-d device array of x's dtype with at least
// conv2d_backward_workspace_size(...) elements (may be nullptr when that is 0).
void conv2d_backward(const View& grad_out, const View& x, const View& weight, const View* grad_x,
                     const View* grad_weight, const View* grad_bias, const Conv2dParams& p, const View* workspace,
                     void* stream);

// "direct" or "implicit_gemm" (see above).
std::string conv2d_algorithm(const View& x, const View& weight, const Conv2dParams& p);

}  // namespace cuda

}  // namespace layerforge
