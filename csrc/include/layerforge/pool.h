// layerforge/pool.h — 2-d pooling, forward and backward (torch.nn.functional semantics), on the CPU and
// (namespace layerforge::cuda, at the end) on CUDA devices.
//
// Shapes: x (N, C, H, W) for NCHW or (N, H, W, C) for NHWC; out (N, C, P, Q) / (N, P, Q, C).
// Output sizes, padding rules and the tie-breaking of max follow PyTorch exactly:
//   P = floor_or_ceil((H + 2*pad_h - dil_h*(kh-1) - 1) / stride_h) + 1, and with ceil_mode the last
//   window is dropped when it would start in the right padding; padding <= kernel/2.
//   max: the first maximum in scan order (row-major over the window) wins; a NaN wins and propagates.
//   indices are flat positions h*W + w within the (n, c) plane, int64, for both layouts.
//   avg: divisor = divisor_override, else the window size clipped to the padded input
//   (count_include_pad) or to the input.
//   adaptive avg: window of output o along a dim of size I -> O is [floor(o*I/O), ceil((o+1)*I/O)).
// Every view must be C-contiguous (the Python layer copies other strides). One pass over the input,
// vectorised along the contiguous axis (W for NCHW, channels for NHWC), OpenMP over planes / rows.
// Outputs are written (=); backward writes grad_x (=).
#pragma once
#include <cstdint>

#include "layerforge/view.h"

namespace layerforge {

struct Pool2dParams {
    int64_t kernel_h = 1, kernel_w = 1;
    int64_t stride_h = 1, stride_w = 1;
    int64_t pad_h = 0, pad_w = 0;
    int64_t dil_h = 1, dil_w = 1;        // max pooling only
    bool ceil_mode = false;
    bool count_include_pad = true;       // avg pooling only
    int64_t divisor_override = 0;        // avg pooling only; 0 = none
    Layout layout = Layout::NCHW;
};

// PyTorch's pooling output size along one dim (throws ValueError when it is < 1).
int64_t pool2d_output_size(int64_t in, int64_t kernel, int64_t pad, int64_t stride, int64_t dil,
                           bool ceil_mode);

// indices may be nullptr (not returned); it is int64 with the shape of out.
void max_pool2d_forward(const View& x, const View& out, const View* indices, const Pool2dParams& p);
// grad_x (shape of x) from grad_out and the indices of the forward pass. An index outside [0, H*W) throws
// ValueError, except that of a window lying wholly in the padding (the forward gives it -inf and an index
// past the plane, as PyTorch): its gradient goes nowhere.
void max_pool2d_backward(const View& grad_out, const View& indices, const View& grad_x,
                         const Pool2dParams& p);

void avg_pool2d_forward(const View& x, const View& out, const Pool2dParams& p);
void avg_pool2d_backward(const View& grad_out, const View& grad_x, const Pool2dParams& p);

// Output size taken from out's shape.
void adaptive_avg_pool2d_forward(const View& x, const View& out, Layout layout);
void adaptive_avg_pool2d_backward(const View& grad_out, const View& grad_x, Layout layout);

// ------------------------------------------------------------------------------------------------ CUDA
// The same operations on device memory (csrc/cuda/pool.cu): same views, params, checks and results (max
// values, indices and tie-breaking exactly as above), launched asynchronously on `stream` (a cudaStream_t).
// Forward: one thread per output element. Backward: one thread per input element gathering from the
// output windows that contain it, in the CPU's accumulation order; no atomics, so results are identical
// from run to run. max_pool2d_backward adds grad_out of window o to an input element only when indices[o]
// names that element: indices that were not produced by max_pool2d_forward (out of range, or outside
// window o) are ignored rather than reported (as PyTorch's CUDA kernel; the CPU raises ValueError).
namespace cuda {

void max_pool2d_forward(const View& x, const View& out, const View* indices, const Pool2dParams& p, void* stream);
void max_pool2d_backward(const View& grad_out, const View& indices, const View& grad_x, const Pool2dParams& p,
                         void* stream);
void avg_pool2d_forward(const View& x, const View& out, const Pool2dParams& p, void* stream);
void avg_pool2d_backward(const View& grad_out, const View& grad_x, const Pool2dParams& p, void* stream);
void adaptive_avg_pool2d_forward(const View& x, const View& out, Layout layout, void* stream);
void adaptive_avg_pool2d_backward(const View& grad_out, const View& grad_x, Layout layout, void* stream);

}  // namespace cuda

}  // namespace layerforge
