// 2-d pooling on the CPU: dispatch; the argument checks are shared with the CUDA side
// (layerforge/detail/convpool_checks.h), the loops are in convpool_kernels.inc.
#include "layerforge/pool.h"

#include <string>

#include "convpool_internal.h"
#include "layerforge/detail/convpool_checks.h"
#include "layerforge/runtime.h"

namespace layerforge {

namespace {

using detail::PoolGeo;

#if LAYERFORGE_HAVE_AVX2_BUILD
#define LF_DISPATCH(fn, ...) \
    (cpu_path() == CpuPath::avx2 ? detail::avx2::fn(__VA_ARGS__) : detail::generic::fn(__VA_ARGS__))
#else
#define LF_DISPATCH(fn, ...) detail::generic::fn(__VA_ARGS__)
#endif

}  // namespace

int64_t pool2d_output_size(int64_t in, int64_t kernel, int64_t pad, int64_t stride, int64_t dil, bool ceil_mode) {
    return detail::pool_output_size(in, kernel, pad, stride, dil, ceil_mode);
}

void max_pool2d_forward(const View& x, const View& out, const View* indices, const Pool2dParams& p) {
    const PoolGeo g = detail::check_max_pool2d_forward(x, out, indices, p);
    const int nt = get_num_threads();
    int64_t* idx = indices ? indices->ptr<int64_t>() : nullptr;
    if (x.dtype == DType::f32)
        LF_DISPATCH(maxpool_fwd<float>, g, x.ptr<float>(), out.ptr<float>(), idx, nt);
    else
        LF_DISPATCH(maxpool_fwd<double>, g, x.ptr<double>(), out.ptr<double>(), idx, nt);
}

void max_pool2d_backward(const View& grad_out, const View& indices, const View& grad_x, const Pool2dParams& p) {
    const PoolGeo g = detail::check_max_pool2d_backward(grad_out, indices, grad_x, p);
    const int nt = get_num_threads();
    bool ok;
    if (grad_x.dtype == DType::f32)
        ok = LF_DISPATCH(maxpool_bwd<float>, g, grad_out.ptr<float>(), indices.ptr<int64_t>(), grad_x.ptr<float>(), nt);
    else
        ok = LF_DISPATCH(maxpool_bwd<double>, g, grad_out.ptr<double>(), indices.ptr<int64_t>(), grad_x.ptr<double>(),
                         nt);
    if (!ok)
        throw ValueError(std::string("max_pool2d_backward: indices out of range [0, H*W) = [0, ") +
                         std::to_string(g.H * g.W) + "); grad_x is incomplete");
}

void avg_pool2d_forward(const View& x, const View& out, const Pool2dParams& p) {
    const PoolGeo g = detail::check_avg_pool2d_forward(x, out, p);
    const int nt = get_num_threads();
    if (x.dtype == DType::f32)
        LF_DISPATCH(avgpool_fwd<float>, g, x.ptr<float>(), out.ptr<float>(), nt);
    else
        LF_DISPATCH(avgpool_fwd<double>, g, x.ptr<double>(), out.ptr<double>(), nt);
}

void avg_pool2d_backward(const View& grad_out, const View& grad_x, const Pool2dParams& p) {
    const PoolGeo g = detail::check_avg_pool2d_backward(grad_out, grad_x, p);
    const int nt = get_num_threads();
    if (grad_x.dtype == DType::f32)
        LF_DISPATCH(avgpool_bwd<float>, g, grad_out.ptr<float>(), grad_x.ptr<float>(), nt);
    else
        LF_DISPATCH(avgpool_bwd<double>, g, grad_out.ptr<double>(), grad_x.ptr<double>(), nt);
}

void adaptive_avg_pool2d_forward(const View& x, const View& out, Layout layout) {
    const PoolGeo g = detail::check_adaptive_avg_pool2d(x, out, layout, "adaptive_avg_pool2d", "out");
    const int nt = get_num_threads();
    if (x.dtype == DType::f32)
        LF_DISPATCH(adaptive_avg_fwd<float>, g, x.ptr<float>(), out.ptr<float>(), nt);
    else
        LF_DISPATCH(adaptive_avg_fwd<double>, g, x.ptr<double>(), out.ptr<double>(), nt);
}

void adaptive_avg_pool2d_backward(const View& grad_out, const View& grad_x, Layout layout) {
    const PoolGeo g =
        detail::check_adaptive_avg_pool2d(grad_x, grad_out, layout, "adaptive_avg_pool2d_backward", "grad_out");
    const int nt = get_num_threads();
    if (grad_x.dtype == DType::f32)
        LF_DISPATCH(adaptive_avg_bwd<float>, g, grad_out.ptr<float>(), grad_x.ptr<float>(), nt);
    else
        LF_DISPATCH(adaptive_avg_bwd<double>, g, grad_out.ptr<double>(), grad_x.ptr<double>(), nt);
}

}  // namespace layerforge
