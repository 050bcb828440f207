// Internal: the elementwise / softmax / layer-norm / optimizer kernels on raw contiguous pointers, as
// tables of function pointers per CPU path. The bodies live in elementwise_impl.h, compiled twice: in
// elementwise.cpp (baseline ISA) and elementwise_avx2.cpp (-mavx2 -mfma), each in its own namespace.
#pragma once
#include <cstdint>

#include "layerforge/optim.h"

namespace layerforge {
namespace detail {

template <typename T>
struct EwKernels {
    void (*act_fwd)(int act, const T* x, T* y, int64_t n, T alpha, int nt);
    void (*act_bwd)(int act, const T* gy, const T* s, T* gx, int64_t n, T alpha, int nt);
    void (*softmax_fwd)(const T* x, T* y, int64_t rows, int64_t C, bool log, int nt);
    void (*softmax_bwd)(const T* gy, const T* y, T* gx, int64_t rows, int64_t C, bool log, int nt);
    // returns the first bad row (or -1)
    int64_t (*xent)(const T* x, const int64_t* t, const T* w, T* nll, T* smooth, T* grad, int64_t N,
                    int64_t C, int64_t ignore, double a, double b, int nt);
    void (*ln_fwd)(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t R, int64_t D,
                   double eps, int nt);
    void (*ln_bwd)(const T* gy, const T* x, const T* mean, const T* rstd, const T* w, T* gx, T* gw, T* gb,
                   int64_t R, int64_t D, int nt);
    void (*sgd)(T* p, const T* g, T* buf, int64_t n, const SgdParams& prm, int nt);
    void (*adam)(T* p, const T* g, T* m, T* v, T* vmax, int64_t n, const AdamParams& prm, int nt);
    void (*rmsprop)(T* p, const T* g, T* sq, T* ga, T* buf, int64_t n, const RmspropParams& prm, int nt);
};

template <typename T>
const EwKernels<T>& ew_kernels_generic();
#if LAYERFORGE_HAVE_AVX2_BUILD
template <typename T>
const EwKernels<T>& ew_kernels_avx2();
#endif

}  // namespace detail
}  // namespace layerforge
