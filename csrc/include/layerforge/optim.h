// layerforge/optim.h — fused optimizer steps on the CPU: one pass per parameter that reads param, grad
// and the state once and writes param and state once. The update rules are PyTorch's (torch.optim,
// single-tensor implementations); scalar coefficients are computed in double, the element math in the
// param's dtype. Every view: C-contiguous, same shape and dtype as param; param and state are updated in
// place (`=`), grad is read only. Elementwise, so results do not depend on the thread count.
#pragma once
#include <cstdint>

#include "layerforge/view.h"

namespace layerforge {

struct SgdParams {
    double lr = 1e-3, momentum = 0, dampening = 0, weight_decay = 0;
    bool nesterov = false, maximize = false;
    // True on the first step with momentum: the buffer is initialised to the (decayed) gradient, as torch.
    bool first_step = false;
};
// momentum_buf may be null when momentum == 0.
void sgd_step(const View& param, const View& grad, const View* momentum_buf, const SgdParams& p);

struct AdamParams {
    double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0;
    bool amsgrad = false, maximize = false;
    bool decoupled = false;  // AdamW: param *= 1 - lr * weight_decay before the update
    int64_t step = 1;        // the step count AFTER this step's increment (1 on the first step)
};
// max_exp_avg_sq is required when amsgrad.
void adam_step(const View& param, const View& grad, const View& exp_avg, const View& exp_avg_sq,
               const View* max_exp_avg_sq, const AdamParams& p);

struct RmspropParams {
    double lr = 1e-2, alpha = 0.99, eps = 1e-8, weight_decay = 0, momentum = 0;
    bool centered = false, maximize = false;
};
// grad_avg required when centered, momentum_buf when momentum > 0.
void rmsprop_step(const View& param, const View& grad, const View& square_avg, const View* grad_avg,
                  const View* momentum_buf, const RmspropParams& p);

namespace cuda {

// Multi-tensor steps on the GPU (csrc/cuda/optim.cu): every parameter of `tensors` updated in ONE kernel
// launch on `stream`, with the CPU update rules above (coefficients computed in double on the host exactly
// as the CPU kernel does, element math in the param's dtype). Each entry carries its own hyperparameters
// (param groups differ in lr, parameters in step). A state view with data == nullptr is absent; the views
// must satisfy the same checks as the CPU functions (param's shape and dtype, C-contiguous, device memory),
// and all tensors share one dtype (float32 or float64). Each tensor is split into chunks of 32768 elements
// that blocks take in turn; a tensor whose pointers are all 16-byte aligned is read with 16-byte vector
// loads. Elementwise, so the result does not depend on the launch configuration.
struct SgdTensor {
    View param, grad, momentum_buffer;
    SgdParams p;
};
struct AdamTensor {
    View param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq;
    AdamParams p;
};
struct RmspropTensor {
    View param, grad, square_avg, grad_avg, momentum_buffer;
    RmspropParams p;
};
void sgd_step(const SgdTensor* tensors, int64_t count, void* stream);
void adam_step(const AdamTensor* tensors, int64_t count, void* stream);
void rmsprop_step(const RmspropTensor* tensors, int64_t count, void* stream);

}  // namespace cuda

}  // namespace layerforge
