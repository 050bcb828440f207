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

}  // namespace layerforge
