// 2-d pooling on CUDA (layerforge/pool.h, namespace layerforge::cuda): max (values, indices and tie-breaking
// as the CPU / PyTorch), average (count_include_pad, divisor_override, ceil_mode) and adaptive average,
// forward and backward, NCHW and NHWC.
//
// Forward: one thread per output element, scanning its window row-major (first maximum wins, a NaN wins).
// Backward: one thread per input element, gathering over the output windows that contain it, in ascending
// output order: the same additions in the same order as the CPU's scatter, so float results match it
// bit for bit, and no atomics (identical from run to run).
// Grid: x over the elements of one plane in 32-bit indices (NCHW: an (n, c) plane; NHWC: one image with
// channels fastest, so a warp reads consecutive channels), y (grid-stride) over planes / images.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>

#include "layerforge/detail/convpool_checks.h"
#include "layerforge/pool.h"
#include "launch.cuh"

namespace layerforge {
namespace cuda {

namespace {

using detail::PoolGeo;

constexpr int kThreads = 256;

struct PoolArgs {
    int64_t outer;  // NCHW: N*C planes; NHWC: N images
    int inner;      // elements per plane / image of the array the threads run over
    int C, H, W, P, Q;
    int kh, kw, sh, sw, ph, pw, dh, dw;
    bool nhwc, count_include_pad;
    int divisor;  // 0: none
};

// Thread element i of plane/image o: its (channel, pixel) and the bases and element stride of the input
// (H x W) and output (P x Q) arrays, so that x(h, w) = x[in_base + (h*W + w) * step] in both layouts.
struct Site {
    int pix;
    int64_t in_base, out_base;
    int step;
};

__device__ __forceinline__ Site site(const PoolArgs& a, int64_t o, int i) {
    Site st;
    const int64_t HW = static_cast<int64_t>(a.H) * a.W, PQ = static_cast<int64_t>(a.P) * a.Q;
    if (a.nhwc) {
        const int c = i % a.C;
        st.pix = i / a.C;
        st.in_base = o * HW * a.C + c;
        st.out_base = o * PQ * a.C + c;
        st.step = a.C;
    } else {
        st.pix = i;
        st.in_base = o * HW;
        st.out_base = o * PQ;
        st.step = 1;
    }
    return st;
}

// ------------------------------------------------------------------------------------------------ max
template <typename T>
__global__ void __launch_bounds__(kThreads) max_pool_forward_kernel(const PoolArgs a, const T* x, T* out,
                                                                    int64_t* idx) {
    const int i = blockIdx.x * kThreads + threadIdx.x;
    if (i >= a.inner) return;
    for (int64_t o = blockIdx.y; o < a.outer; o += gridDim.y) {
        const Site st = site(a, o, i);
        const int p = st.pix / a.Q, q = st.pix - p * a.Q;
        // The window's first in-bounds tap (the CPU's hs/ws) and its ends.
        int hs = p * a.sh - a.ph;
        const int he = std::min(hs + (a.kh - 1) * a.dh + 1, a.H);
        while (hs < 0) hs += a.dh;
        int ws = q * a.sw - a.pw;
        const int we = std::min(ws + (a.kw - 1) * a.dw + 1, a.W);
        while (ws < 0) ws += a.dw;
        T best = -std::numeric_limits<T>::infinity();
        int64_t bi = static_cast<int64_t>(hs) * a.W + ws;
        for (int h = hs; h < he; h += a.dh)
            for (int w = ws; w < we; w += a.dw) {
                const int64_t pos = static_cast<int64_t>(h) * a.W + w;
                const T v = x[st.in_base + pos * st.step];
                if (v > best || v != v) {  // first maximum wins; NaN wins (the last NaN, as PyTorch)
                    best = v;
                    bi = pos;
                }
            }
        const int64_t oo = st.out_base + static_cast<int64_t>(st.pix) * st.step;
        out[oo] = best;
        if (idx) idx[oo] = bi;
    }
}

// Output windows [lo, hi) along one dim whose extent [o*stride - pad, o*stride - pad + (k-1)*dil] covers
// input position v (PyTorch's range; windows whose dilated taps skip v are filtered by the caller).
__device__ __forceinline__ void covering(int v, int k, int stride, int pad, int dil, int n_out, int& lo, int& hi) {
    const int ext = (k - 1) * dil + 1;
    lo = (v + pad < ext) ? 0 : (v + pad - ext) / stride + 1;
    hi = std::min((v + pad) / stride + 1, n_out);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) max_pool_backward_kernel(const PoolArgs a, const T* go,
                                                                     const int64_t* idx, T* gx) {
    const int i = blockIdx.x * kThreads + threadIdx.x;
    if (i >= a.inner) return;
    for (int64_t o = blockIdx.y; o < a.outer; o += gridDim.y) {
        const Site st = site(a, o, i);  // here the threads run over input elements: pix = h*W + w
        const int h = st.pix / a.W, w = st.pix - h * a.W;
        int p0, p1, q0, q1;
        covering(h, a.kh, a.sh, a.ph, a.dh, a.P, p0, p1);
        covering(w, a.kw, a.sw, a.pw, a.dw, a.Q, q0, q1);
        T acc = T(0);
        for (int p = p0; p < p1; ++p)
            for (int q = q0; q < q1; ++q) {
                const int64_t oo = st.out_base + (static_cast<int64_t>(p) * a.Q + q) * st.step;
                if (idx[oo] == st.pix) acc += go[oo];
            }
        gx[st.in_base + static_cast<int64_t>(st.pix) * st.step] = acc;
    }
}

// ------------------------------------------------------------------------------------------------ avg
struct Window {
    int start, end, pool;  // clipped [start, end), and the size clipped to the padded input (CPU's AvgWin)
};

__device__ __forceinline__ Window avg_window(int o, int stride, int pad, int k, int in) {
    int s = o * stride - pad;
    int e = std::min(s + k, in + pad);
    const int pool = e - s;
    s = std::max(s, 0);
    e = std::min(e, in);
    return {s, e, pool};
}

__device__ __forceinline__ int64_t avg_divisor(const PoolArgs& a, const Window& wh, const Window& ww) {
    if (a.divisor) return a.divisor;
    return a.count_include_pad ? static_cast<int64_t>(wh.pool) * ww.pool
                               : static_cast<int64_t>(wh.end - wh.start) * (ww.end - ww.start);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) avg_pool_forward_kernel(const PoolArgs a, const T* x, T* out) {
    const int i = blockIdx.x * kThreads + threadIdx.x;
    if (i >= a.inner) return;
    for (int64_t o = blockIdx.y; o < a.outer; o += gridDim.y) {
        const Site st = site(a, o, i);
        const int p = st.pix / a.Q, q = st.pix - p * a.Q;
        const Window wh = avg_window(p, a.sh, a.ph, a.kh, a.H), ww = avg_window(q, a.sw, a.pw, a.kw, a.W);
        T v = T(0);
        if (wh.start < wh.end && ww.start < ww.end) {
            for (int h = wh.start; h < wh.end; ++h)
                for (int w = ww.start; w < ww.end; ++w) v += x[st.in_base + (static_cast<int64_t>(h) * a.W + w) * st.step];
            v /= static_cast<T>(avg_divisor(a, wh, ww));
        }
        out[st.out_base + static_cast<int64_t>(st.pix) * st.step] = v;
    }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) avg_pool_backward_kernel(const PoolArgs a, const T* go, T* gx) {
    const int i = blockIdx.x * kThreads + threadIdx.x;
    if (i >= a.inner) return;
    for (int64_t o = blockIdx.y; o < a.outer; o += gridDim.y) {
        const Site st = site(a, o, i);
        const int h = st.pix / a.W, w = st.pix - h * a.W;
        int p0, p1, q0, q1;
        covering(h, a.kh, a.sh, a.ph, 1, a.P, p0, p1);
        covering(w, a.kw, a.sw, a.pw, 1, a.Q, q0, q1);
        T acc = T(0);
        for (int p = p0; p < p1; ++p) {
            const Window wh = avg_window(p, a.sh, a.ph, a.kh, a.H);
            if (h < wh.start || h >= wh.end) continue;
            for (int q = q0; q < q1; ++q) {
                const Window ww = avg_window(q, a.sw, a.pw, a.kw, a.W);
                if (w < ww.start || w >= ww.end) continue;
                acc += go[st.out_base + (static_cast<int64_t>(p) * a.Q + q) * st.step] /
                       static_cast<T>(avg_divisor(a, wh, ww));
            }
        }
        gx[st.in_base + static_cast<int64_t>(st.pix) * st.step] = acc;
    }
}

// ------------------------------------------------------------------------------------------------ adaptive
// Window of output o along a dim of size I -> O: [floor(o*I/O), ceil((o+1)*I/O)).
__device__ __forceinline__ int ad_start(int o, int in, int out) {
    return static_cast<int>((static_cast<int64_t>(o) * in) / out);
}
__device__ __forceinline__ int ad_end(int o, int in, int out) {
    return static_cast<int>(((static_cast<int64_t>(o) + 1) * in + out - 1) / out);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) adaptive_avg_forward_kernel(const PoolArgs a, const T* x, T* out) {
    const int i = blockIdx.x * kThreads + threadIdx.x;
    if (i >= a.inner) return;
    for (int64_t o = blockIdx.y; o < a.outer; o += gridDim.y) {
        const Site st = site(a, o, i);
        const int p = st.pix / a.Q, q = st.pix - p * a.Q;
        const int h0 = ad_start(p, a.H, a.P), h1 = ad_end(p, a.H, a.P);
        const int w0 = ad_start(q, a.W, a.Q), w1 = ad_end(q, a.W, a.Q);
        T v = T(0);
        for (int h = h0; h < h1; ++h)
            for (int w = w0; w < w1; ++w) v += x[st.in_base + (static_cast<int64_t>(h) * a.W + w) * st.step];
        out[st.out_base + static_cast<int64_t>(st.pix) * st.step] =
            v / static_cast<T>(static_cast<int64_t>(h1 - h0) * (w1 - w0));
    }
}

// Outputs o whose window contains v: o in [floor(v*O/I), ceil((v+1)*O/I) - 1], checked against the window.
__device__ __forceinline__ void ad_covering(int v, int in, int out, int& lo, int& hi) {
    lo = static_cast<int>((static_cast<int64_t>(v) * out) / in);
    hi = std::min(static_cast<int>(((static_cast<int64_t>(v) + 1) * out + in - 1) / in), out);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) adaptive_avg_backward_kernel(const PoolArgs a, const T* go, T* gx) {
    const int i = blockIdx.x * kThreads + threadIdx.x;
    if (i >= a.inner) return;
    for (int64_t o = blockIdx.y; o < a.outer; o += gridDim.y) {
        const Site st = site(a, o, i);
        const int h = st.pix / a.W, w = st.pix - h * a.W;
        int p0, p1, q0, q1;
        ad_covering(h, a.H, a.P, p0, p1);
        ad_covering(w, a.W, a.Q, q0, q1);
        T acc = T(0);
        for (int p = p0; p < p1; ++p) {
            const int h0 = ad_start(p, a.H, a.P), h1 = ad_end(p, a.H, a.P);
            if (h < h0 || h >= h1) continue;
            for (int q = q0; q < q1; ++q) {
                const int w0 = ad_start(q, a.W, a.Q), w1 = ad_end(q, a.W, a.Q);
                if (w < w0 || w >= w1) continue;
                acc += go[st.out_base + (static_cast<int64_t>(p) * a.Q + q) * st.step] /
                       static_cast<T>(static_cast<int64_t>(h1 - h0) * (w1 - w0));
            }
        }
        gx[st.in_base + static_cast<int64_t>(st.pix) * st.step] = acc;
    }
}

// ------------------------------------------------------------------------------------------------ host

// Arguments for threads over the output (over_input = false) or the input elements.
PoolArgs pool_args(const PoolGeo& g, bool over_input, const char* op) {
    const int64_t lim = int64_t(1) << 30;
    const int64_t plane = over_input ? g.H * g.W : g.P * g.Q;
    const int64_t inner = g.nhwc ? plane * g.C : plane;
    if (inner >= (int64_t(1) << 31) || g.H * g.W >= lim || g.P * g.Q >= lim || g.C >= lim || g.kh >= lim ||
        g.kw >= lim || g.sh >= lim || g.sw >= lim || g.dh >= lim || g.dw >= lim || g.divisor >= lim ||
        g.H + g.kh * g.dh >= lim || g.W + g.kw * g.dw >= lim || g.P * g.sh >= lim || g.Q * g.sw >= lim)
        throw ValueError(std::string(op) + ": sizes too large for the CUDA kernels (a plane, image or window of "
                                           "2^30 or more elements)");
    PoolArgs a{};
    a.outer = g.nhwc ? g.N : g.N * g.C;
    a.inner = static_cast<int>(inner);
    a.C = static_cast<int>(g.C);
    a.H = static_cast<int>(g.H);
    a.W = static_cast<int>(g.W);
    a.P = static_cast<int>(g.P);
    a.Q = static_cast<int>(g.Q);
    a.kh = static_cast<int>(g.kh);
    a.kw = static_cast<int>(g.kw);
    a.sh = static_cast<int>(g.sh);
    a.sw = static_cast<int>(g.sw);
    a.ph = static_cast<int>(g.ph);
    a.pw = static_cast<int>(g.pw);
    a.dh = static_cast<int>(g.dh);
    a.dw = static_cast<int>(g.dw);
    a.nhwc = g.nhwc;
    a.count_include_pad = g.count_include_pad;
    a.divisor = static_cast<int>(g.divisor);
    return a;
}

dim3 grid_of(const PoolArgs& a) {
    return dim3(blocks_for(a.inner, kThreads), static_cast<unsigned>(std::min<int64_t>(a.outer, kMaxGridYZ)));
}

// Calls f(T()) with T = float or double by dtype (the views were checked to be one of the two).
template <typename F>
void with_dtype(DType dt, F&& f) {
    if (dt == DType::f32)
        f(float(0));
    else
        f(double(0));
}

}  // namespace

void max_pool2d_forward(const View& x, const View& out, const View* indices, const Pool2dParams& p, void* stream) {
    const PoolGeo g = detail::check_max_pool2d_forward(x, out, indices, p);
    const PoolArgs a = pool_args(g, false, "max_pool2d");
    if (a.outer == 0 || a.inner == 0) return;
    int64_t* idx = indices ? indices->ptr<int64_t>() : nullptr;
    with_dtype(x.dtype, [&](auto zero) {
        using T = decltype(zero);
        launch("max_pool_forward_kernel", max_pool_forward_kernel<T>, grid_of(a), dim3(kThreads), stream, a,
               x.ptr<T>(), out.ptr<T>(), idx);
    });
}

void max_pool2d_backward(const View& grad_out, const View& indices, const View& grad_x, const Pool2dParams& p,
                         void* stream) {
    const PoolGeo g = detail::check_max_pool2d_backward(grad_out, indices, grad_x, p);
    const PoolArgs a = pool_args(g, true, "max_pool2d_backward");
    if (a.outer == 0 || a.inner == 0) return;
    with_dtype(grad_x.dtype, [&](auto zero) {
        using T = decltype(zero);
        launch("max_pool_backward_kernel", max_pool_backward_kernel<T>, grid_of(a), dim3(kThreads), stream, a,
               grad_out.ptr<T>(), indices.ptr<int64_t>(), grad_x.ptr<T>());
    });
}

void avg_pool2d_forward(const View& x, const View& out, const Pool2dParams& p, void* stream) {
    const PoolGeo g = detail::check_avg_pool2d_forward(x, out, p);
    const PoolArgs a = pool_args(g, false, "avg_pool2d");
    if (a.outer == 0 || a.inner == 0) return;
    with_dtype(x.dtype, [&](auto zero) {
        using T = decltype(zero);
        launch("avg_pool_forward_kernel", avg_pool_forward_kernel<T>, grid_of(a), dim3(kThreads), stream, a,
               x.ptr<T>(), out.ptr<T>());
    });
}

void avg_pool2d_backward(const View& grad_out, const View& grad_x, const Pool2dParams& p, void* stream) {
    const PoolGeo g = detail::check_avg_pool2d_backward(grad_out, grad_x, p);
    const PoolArgs a = pool_args(g, true, "avg_pool2d_backward");
    if (a.outer == 0 || a.inner == 0) return;
    with_dtype(grad_x.dtype, [&](auto zero) {
        using T = decltype(zero);
        launch("avg_pool_backward_kernel", avg_pool_backward_kernel<T>, grid_of(a), dim3(kThreads), stream, a,
               grad_out.ptr<T>(), grad_x.ptr<T>());
    });
}

void adaptive_avg_pool2d_forward(const View& x, const View& out, Layout layout, void* stream) {
    const PoolGeo g = detail::check_adaptive_avg_pool2d(x, out, layout, "adaptive_avg_pool2d", "out");
    const PoolArgs a = pool_args(g, false, "adaptive_avg_pool2d");
    if (a.outer == 0 || a.inner == 0) return;
    with_dtype(x.dtype, [&](auto zero) {
        using T = decltype(zero);
        launch("adaptive_avg_forward_kernel", adaptive_avg_forward_kernel<T>, grid_of(a), dim3(kThreads), stream, a,
               x.ptr<T>(), out.ptr<T>());
    });
}

void adaptive_avg_pool2d_backward(const View& grad_out, const View& grad_x, Layout layout, void* stream) {
    const PoolGeo g =
        detail::check_adaptive_avg_pool2d(grad_x, grad_out, layout, "adaptive_avg_pool2d_backward", "grad_out");
    const PoolArgs a = pool_args(g, true, "adaptive_avg_pool2d_backward");
    if (a.outer == 0 || a.inner == 0) return;
    with_dtype(grad_x.dtype, [&](auto zero) {
        using T = decltype(zero);
        launch("adaptive_avg_backward_kernel", adaptive_avg_backward_kernel<T>, grid_of(a), dim3(kThreads), stream,
               a, grad_out.ptr<T>(), grad_x.ptr<T>());
    });
}

}  // namespace cuda
}  // namespace layerforge
