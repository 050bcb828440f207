// layerforge/elementwise.h — activations, softmax / log_softmax, fused softmax-cross-entropy and layer
// norm on the CPU, forward and backward.
//
// Every view must be C-contiguous (the Python layer makes the one visible copy when it is not) and all
// float views of one call share one dtype (float32: fast path, float64: correct path). Rows are the
// leading dims flattened; the reductions (softmax, cross-entropy, layer norm) run along the LAST dim.
// Outputs are written (`=`), never accumulated. Results do not depend on the thread count.
#pragma once
#include <cstdint>

#include "layerforge/view.h"

namespace layerforge {

enum class Activation : int { relu = 0, sigmoid = 1, tanh = 2, gelu = 3, gelu_tanh = 4, leaky_relu = 5 };

// y = f(x), same shape. alpha is the negative slope of leaky_relu (ignored otherwise).
void activation_forward(Activation act, const View& x, const View& y, double alpha = 0.01);
// grad_x = grad_y * f'(.). `saved` is the forward INPUT x for relu, leaky_relu, gelu, gelu_tanh and the
// forward OUTPUT y for sigmoid and tanh (their derivatives are cheapest from y). grad_x may alias grad_y.
void activation_backward(Activation act, const View& grad_y, const View& saved, const View& grad_x,
                         double alpha = 0.01);

// y = softmax(x) (log=false) or log_softmax(x) (log=true) along the last dim; x, y (..., C).
void softmax_forward(const View& x, const View& y, bool log);
// grad_x from grad_y and the forward OUTPUT y: softmax y*(g - sum(g*y)); log_softmax g - exp(y)*sum(g).
void softmax_backward(const View& grad_y, const View& y, const View& grad_x, bool log);

// Fused softmax + cross-entropy (+ its gradient) in one pass over logits (N, C), class-index targets
// (N int64 values). For row i with target t (w = class weights, all 1 when weight == nullptr, W = sum w):
//   nll[i]    = w[t] * (lse_i - x[i, t])                      (written; 0 when t == ignore_index)
//   smooth[i] = sum_c w[c] * (lse_i - x[i, c])               (written when smooth != nullptr; 0 ignored)
//   grad[i,c] = a * w[t] * (p[i,c] - [c == t]) + b * (W * p[i,c] - w[c])   (written when grad != nullptr;
//               0 for ignored rows)
// a and b carry the caller's reduction scale and label smoothing, e.g. a = (1 - eps) / count,
// b = eps / C / N for reduction='mean'. Throws ValueError for a target outside [0, C) that is not
// ignore_index.
void cross_entropy_forward(const View& logits, const int64_t* targets, const View* weight,
                           int64_t ignore_index, const View& nll, const View* smooth, const View* grad,
                           double a, double b);

// Layer norm over the last dim D of x (R, D) (rows flattened): y = (x - mean) * rstd * weight + bias,
// rstd = 1 / sqrt(var + eps) (biased var). weight/bias (D) may be null. mean, rstd (R) are written.
void layer_norm_forward(const View& x, const View* weight, const View* bias, double eps, const View& y,
                        const View& mean, const View& rstd);
// grad_x written; grad_weight/grad_bias (D) written (not accumulated) when not null. Column sums are
// split by columns over threads, so they do not depend on the thread count.
void layer_norm_backward(const View& grad_y, const View& x, const View& mean, const View& rstd,
                         const View* weight, const View& grad_x, const View* grad_weight,
                         const View* grad_bias);

namespace cuda {

// The same operations on the GPU (csrc/cuda/elementwise.cu): the same semantics, validation and errors as
// the CPU functions above; every view is device memory on the current device, C-contiguous; kernels run
// on `stream` (a cudaStream_t; nullptr = the legacy default stream) and nothing synchronizes the host.
// Reductions along the last dim run one warp per row (C <= 1024) or one block per row, with an online
// max/sum for softmax and cross-entropy; no atomics anywhere, so results repeat bit for bit.
void activation_forward(Activation act, const View& x, const View& y, double alpha, void* stream);
void activation_backward(Activation act, const View& grad_y, const View& saved, const View& grad_x, double alpha,
                         void* stream);
void softmax_forward(const View& x, const View& y, bool log, void* stream);
void softmax_backward(const View& grad_y, const View& y, const View& grad_x, bool log, void* stream);

// Cross-entropy in two steps, because its scale factors depend on the targets and a bad target must
// raise an exception, which needs the host:
// 1. stats (4,) float64 written: [index of the first target outside [0, C) that is not ignore_index, or
//    -1; number of rows whose target is not ignore_index; sum of weight[t] over those rows (= their count
//    without weight); sum of weight (= C without weight)]. The caller reads these 32 bytes back.
void cross_entropy_target_stats(const View& targets, const View* weight, int64_t ignore_index,
                                int64_t num_classes, const View& stats, void* stream);
// 2. As the CPU cross_entropy_forward, with targets (N,) int64 on the device and weight_sum = stats[3].
//    A target outside [0, C) that is not ignore_index is never dereferenced: its row gets NaN.
void cross_entropy_forward(const View& logits, const View& targets, const View* weight, int64_t ignore_index,
                           const View& nll, const View* smooth, const View* grad, double a, double b,
                           double weight_sum, void* stream);

void layer_norm_forward(const View& x, const View* weight, const View* bias, double eps, const View& y,
                        const View& mean, const View& rstd, void* stream);
// grad_weight / grad_bias are reduced over rows without atomics: per-chunk partial column sums into
// `workspace` (x's dtype, at least layer_norm_backward_workspace(R, D) elements; may be null when both
// are null), then a second pass sums the chunks in a fixed order. Chunks depend only on (R, D).
int64_t layer_norm_backward_workspace(int64_t rows, int64_t cols);
void layer_norm_backward(const View& grad_y, const View& x, const View& mean, const View& rstd,
                         const View* weight, const View& grad_x, const View* grad_weight, const View* grad_bias,
                         const View* workspace, void* stream);

}  // namespace cuda

}  // namespace layerforge
