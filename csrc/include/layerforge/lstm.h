// layerforge/lstm.h — LSTM over a sequence, forward and backward through time, on the CPU (namespace
// layerforge) and the GPU (namespace layerforge::cuda, csrc/cuda/lstm.cu).
//
// PyTorch's layout and semantics: gates in the order i, f, g, o;
//   a_t = x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh      (B, 4H)
//   i = sigmoid(a_i), f = sigmoid(a_f), g = tanh(a_g), o = sigmoid(a_o)
//   c_t = f * c_{t-1} + i * g,  h_t = o * tanh(c_t)
// A single cell is the sequence with T = 1.
//
// Shapes (all views of one dtype, float32 or float64):
//   x (T, B, I), h0 (B, H), c0 (B, H), w_ih (4H, I), w_hh (4H, H), b_ih (4H) / b_hh (4H) or null.
// Saved state (written by the forward, read by the backward; the caller owns it, so stacks of layers
// and both directions of a bidirectional layer each keep their own):
//   y (T, B, H)      every h_t (the output)
//   gates (T, B, 4H) the activated gates i, f, g, o of every step (PyTorch's order)
//   cells (T, B, H)  every c_t
// Contiguity: x, y, gates, cells and the gradients of x and y must be C-contiguous (the Python layer
// copies other strides in one place); h0, c0, the weights and biases and their gradients may have any
// strides.
#pragma once
#include "layerforge/view.h"

namespace layerforge {

// Writes y, h_T (B, H), c_T (B, H), gates, cells. h0/c0 may be null (zeros).
void lstm_forward(const View& x, const View* h0, const View* c0, const View& w_ih, const View& w_hh,
                  const View* b_ih, const View* b_hh, const View& y, const View& h_T, const View& c_T,
                  const View& gates, const View& cells);

// Backward through time. Inputs: the forward's x, h0, c0 (null = zeros), w_ih, w_hh, and its saved
// y, gates, cells; grad_y (T, B, H), grad_h_T (B, H), grad_c_T (B, H), each may be null (zeros).
// Activation gradients are written (=): grad_x (T, B, I), grad_h0 (B, H), grad_c0 (B, H) (each may be
// null: not computed). Parameter gradients grad_w_ih (4H, I), grad_w_hh (4H, H), grad_b_ih (4H),
// grad_b_hh (4H) (each may be null) are written, or accumulated (+=) when accumulate is true.
void lstm_backward(const View& x, const View* h0, const View* c0, const View& w_ih, const View& w_hh,
                   const View& y, const View& gates, const View& cells, const View* grad_y,
                   const View* grad_h_T, const View* grad_c_T, const View* grad_x, const View* grad_h0,
                   const View* grad_c0, const View* grad_w_ih, const View* grad_w_hh,
                   const View* grad_b_ih, const View* grad_b_hh, bool accumulate);

// ---------------------------------------------------------------- GPU (csrc/cuda/lstm.cu)
// The same API, semantics and saved state on device memory (float32 and float64), launched on `stream`
// (a cudaStream_t; nullptr = the legacy default stream). The input projection of all steps (and, in the
// backward, grad_x and the weight gradients) are GEMMs; per step, the recurrent product is fused with the
// gate nonlinearities and the cell update. When w_hh fits on chip across the grid's co-resident blocks, one
// persistent cooperative kernel runs all steps, each block keeping its slice of w_hh in shared memory
// (one grid-wide barrier per step); otherwise a GEMM and a pointwise kernel run per step. Scratch is
// allocated stream-ordered (cudaMallocAsync). Deterministic: no atomics, fixed reduction orders.
// LAYERFORGE_LSTM_CUDA_ALGO=persistent|stepwise forces one recurrence (tests run both).
namespace cuda {

void lstm_forward(const View& x, const View* h0, const View* c0, const View& w_ih, const View& w_hh,
                  const View* b_ih, const View* b_hh, const View& y, const View& h_T, const View& c_T,
                  const View& gates, const View& cells, void* stream);

void lstm_backward(const View& x, const View* h0, const View* c0, const View& w_ih, const View& w_hh,
                   const View& y, const View& gates, const View& cells, const View* grad_y,
                   const View* grad_h_T, const View* grad_c_T, const View* grad_x, const View* grad_h0,
                   const View* grad_c0, const View* grad_w_ih, const View* grad_w_hh,
                   const View* grad_b_ih, const View* grad_b_hh, bool accumulate, void* stream);

// Which recurrence lstm_forward / lstm_backward would run for hidden size H, batch B and dtype on the
// current device: "persistent" or "stepwise" (for tests and the benchmark notes).
const char* lstm_recurrence(int64_t B, int64_t H, DType dtype, bool backward);

}  // namespace cuda

}  // namespace layerforge
