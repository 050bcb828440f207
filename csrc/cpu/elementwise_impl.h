// Internal: bodies of the elementwise, softmax, cross-entropy, layer-norm and optimizer kernels.
// Included by exactly two files, each defining LF_EW_NS (a distinct namespace, so the two ISA builds of
// these inline functions never merge at link time) and LF_EW_TABLE (the table getter to define).
// Written as plain loops the compiler vectorises for the ISA of the including file; exp for float is a
// branch-free Cephes-style polynomial so that softmax, sigmoid and tanh vectorise too.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "cpu_internal.h"
#include "elementwise_kernels.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace layerforge {
namespace detail {
namespace LF_EW_NS {

// ---- exp ----------------------------------------------------------------------------------------
inline float exp_impl(float x) {
    // Range: clamp so the result stays finite and normal; NaN passes through (comparisons are false).
    x = x > 88.3762626647949f ? 88.3762626647949f : x;
    x = x < -87.3365447505531f ? -87.3365447505531f : x;
    // round to nearest with the 1.5 * 2^23 trick (|x * log2e| <= 128 here); std::floor would block
    // vectorisation
    const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500E-4f;
    p = p * r + 1.3981999507E-3f;
    p = p * r + 8.3334519073E-3f;
    p = p * r + 4.1665795894E-2f;
    p = p * r + 1.6666665459E-1f;
    p = p * r + 5.0000001201E-1f;
    p = p * r * r + r + 1.0f;
    const int32_t e = (static_cast<int32_t>(n) + 127) << 23;
    float s;
    std::memcpy(&s, &e, 4);
    return p * s;
}
inline double exp_impl(double x) { return std::exp(x); }

inline float tanh_impl(float x) {
    const float ax = std::fabs(x);
    // |x| < 0.625: odd polynomial (Cephes tanhf); else 1 - 2 / (exp(2|x|) + 1) with the sign of x.
    const float z = x * x;
    float p = -5.70498872745E-3f;
    p = p * z + 2.06390887954E-2f;
    p = p * z - 5.37397155531E-2f;
    p = p * z + 1.33314422036E-1f;
    p = p * z - 3.33332819422E-1f;
    const float small = p * z * x + x;
    const float big = 1.0f - 2.0f / (exp_impl(2.0f * ax) + 1.0f);
    const float bigs = x < 0 ? -big : big;
    return ax < 0.625f ? small : bigs;
}
inline double tanh_impl(double x) { return std::tanh(x); }

template <typename T>
inline T sigmoid_impl(T x) { return T(1) / (T(1) + exp_impl(-x)); }

inline bool big(int64_t n) { return n >= 32768; }

// Row reductions with 8 independent lanes: the compiler vectorises these without reassociating a
// single running sum (no -ffast-math), and the result is the same at any thread count.
template <typename T>
inline T lane_sum(const T* a, int64_t n) {
    T acc[8] = {};
    int64_t c = 0;
    for (; c + 8 <= n; c += 8)
        for (int j = 0; j < 8; ++j) acc[j] += a[c + j];
    T s = 0;
    for (; c < n; ++c) s += a[c];
    return s + ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}
template <typename T>
inline T lane_dot(const T* a, const T* b, int64_t n) {
    T acc[8] = {};
    int64_t c = 0;
    for (; c + 8 <= n; c += 8)
        for (int j = 0; j < 8; ++j) acc[j] += a[c + j] * b[c + j];
    T s = 0;
    for (; c < n; ++c) s += a[c] * b[c];
    return s + ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}
// Max of a row; NaN anywhere gives NaN (as torch).
template <typename T>
inline T lane_max(const T* a, int64_t n) {
    T acc[8];
    for (int j = 0; j < 8; ++j) acc[j] = -INFINITY;
    int64_t c = 0;
    for (; c + 8 <= n; c += 8)
        for (int j = 0; j < 8; ++j) {
            const T v = a[c + j];
            acc[j] = (v > acc[j] || v != v) ? v : acc[j];
        }
    T m = -INFINITY;
    for (; c < n; ++c) m = (a[c] > m || a[c] != a[c]) ? a[c] : m;
    for (int j = 0; j < 8; ++j) m = (acc[j] > m || acc[j] != acc[j]) ? acc[j] : m;
    return m;
}
// out[c] = exp(x[c] - m); returns the sum.
template <typename T>
inline T exp_shift(const T* x, T m, T* out, int64_t n) {
    for (int64_t c = 0; c < n; ++c) out[c] = exp_impl(x[c] - m);
    return lane_sum(out, n);
}
template <typename T>
inline T* row_scratch(int64_t n) { return thread_arena(ArenaSlot::k3).get_as<T>(static_cast<size_t>(n)); }

// ---- activations ----------------------------------------------------------------------------------
template <typename T>
void act_fwd(int act, const T* x, T* y, int64_t n, T alpha, int nt) {
    const T kInvSqrt2 = T(0.70710678118654752440), kC = T(0.79788456080286535588);
#pragma omp parallel for num_threads(nt) schedule(static) if (big(n))
    for (int64_t i = 0; i < n; ++i) {
        const T v = x[i];
        T r;
        switch (act) {
            case 0: r = v > T(0) ? v : (v == v ? T(0) : v); break;
            case 1: r = sigmoid_impl(v); break;
            case 2: r = tanh_impl(v); break;
            case 3: r = T(0.5) * v * std::erfc(-v * kInvSqrt2); break;  // erfc: no cancellation for v << 0
            case 4: r = v * sigmoid_impl(T(2) * kC * (v + T(0.044715) * v * v * v)); break;  // 0.5(1+tanh u) = sigmoid(2u)
            default: r = v > T(0) ? v : v * alpha; break;
        }
        y[i] = r;
    }
}

// Separate loops per activation so the simple ones vectorise.
template <typename T>
void act_fwd_dispatch(int act, const T* x, T* y, int64_t n, T alpha, int nt) {
    if (act == 0) {
#pragma omp parallel for num_threads(nt) schedule(static) if (big(n))
        for (int64_t i = 0; i < n; ++i) y[i] = x[i] > T(0) ? x[i] : (x[i] != x[i] ? x[i] : T(0));
    } else if (act == 1) {
#pragma omp parallel for num_threads(nt) schedule(static) if (big(n))
        for (int64_t i = 0; i < n; ++i) y[i] = sigmoid_impl(x[i]);
    } else if (act == 2) {
#pragma omp parallel for num_threads(nt) schedule(static) if (big(n))
        for (int64_t i = 0; i < n; ++i) y[i] = tanh_impl(x[i]);
    } else {
        act_fwd(act, x, y, n, alpha, nt);
    }
}

template <typename T>
void act_bwd(int act, const T* gy, const T* s, T* gx, int64_t n, T alpha, int nt) {
    const T kInvSqrt2 = T(0.70710678118654752440), kInvSqrt2Pi = T(0.39894228040143267794),
            kC = T(0.79788456080286535588);
    if (act == 0) {
#pragma omp parallel for num_threads(nt) schedule(static) if (big(n))
        for (int64_t i = 0; i < n; ++i) gx[i] = s[i] > T(0) ? gy[i] : T(0);
    } else if (act == 1) {
#pragma omp parallel for num_threads(nt) schedule(static) if (big(n))
        for (int64_t i = 0; i < n; ++i) gx[i] = gy[i] * s[i] * (T(1) - s[i]);
    } else if (act == 2) {
#pragma omp parallel for num_threads(nt) schedule(static) if (big(n))
        for (int64_t i = 0; i < n; ++i) gx[i] = gy[i] * (T(1) - s[i] * s[i]);
    } else if (act == 5) {
#pragma omp parallel for num_threads(nt) schedule(static) if (big(n))
        for (int64_t i = 0; i < n; ++i) gx[i] = s[i] > T(0) ? gy[i] : gy[i] * alpha;
    } else if (act == 3) {
#pragma omp parallel for num_threads(nt) schedule(static) if (big(n))
        for (int64_t i = 0; i < n; ++i) {
            const T v = s[i];
            const T cdf = T(0.5) * std::erfc(-v * kInvSqrt2);
            const T pdf = kInvSqrt2Pi * exp_impl(T(-0.5) * v * v);
            gx[i] = gy[i] * (cdf + v * pdf);
        }
    } else {
#pragma omp parallel for num_threads(nt) schedule(static) if (big(n))
        for (int64_t i = 0; i < n; ++i) {
            const T v = s[i];
            const T inner = kC * (v + T(0.044715) * v * v * v);
            const T sg = sigmoid_impl(T(2) * inner);  // = 0.5 * (1 + tanh(inner))
            const T dinner = kC * (T(1) + T(3) * T(0.044715) * v * v);
            gx[i] = gy[i] * (sg + T(2) * v * sg * (T(1) - sg) * dinner);
        }
    }
}

// ---- softmax ---------------------------------------------------------------------------------------
template <typename T>
void softmax_fwd(const T* x, T* y, int64_t rows, int64_t C, bool log, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static) if (big(rows * C))
    for (int64_t r = 0; r < rows; ++r) {
        const T* xr = x + r * C;
        T* yr = y + r * C;
        T m = lane_max(xr, C);
        if (m == T(-INFINITY)) m = T(0);  // an all -inf row gives NaN as torch, not an exception
        if (log) {
            // exp into y as scratch, then overwrite y with x - lse
            const T lse = m + std::log(exp_shift(xr, m, yr, C));
            for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] - lse;
        } else {
            const T inv = T(1) / exp_shift(xr, m, yr, C);
            for (int64_t c = 0; c < C; ++c) yr[c] *= inv;
        }
    }
}

template <typename T>
void softmax_bwd(const T* gy, const T* y, T* gx, int64_t rows, int64_t C, bool log, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static) if (big(rows * C))
    for (int64_t r = 0; r < rows; ++r) {
        const T* g = gy + r * C;
        const T* yr = y + r * C;
        T* o = gx + r * C;
        if (log) {
            const T s = lane_sum(g, C);
            for (int64_t c = 0; c < C; ++c) o[c] = g[c] - exp_impl(yr[c]) * s;
        } else {
            const T s = lane_dot(g, yr, C);
            for (int64_t c = 0; c < C; ++c) o[c] = yr[c] * (g[c] - s);
        }
    }
}

// ---- fused softmax + cross-entropy -------------------------------------------------------------------
template <typename T>
int64_t xent(const T* x, const int64_t* t, const T* w, T* nll, T* smooth, T* grad, int64_t N, int64_t C,
             int64_t ignore, double a, double b, int nt) {
    int64_t bad = -1;
    for (int64_t i = 0; i < N; ++i)
        if (t[i] != ignore && (t[i] < 0 || t[i] >= C)) return i;
    T W = T(C);
    if (w) {
        W = 0;
        for (int64_t c = 0; c < C; ++c) W += w[c];
    }
    const T ta = T(a), tb = T(b);
#pragma omp parallel for num_threads(nt) schedule(static) if (big(N * C))
    for (int64_t i = 0; i < N; ++i) {
        const T* xr = x + i * C;
        const int64_t ti = t[i];
        if (ti == ignore) {
            nll[i] = 0;
            if (smooth) smooth[i] = 0;
            if (grad) std::fill(grad + i * C, grad + (i + 1) * C, T(0));
            continue;
        }
        T m = lane_max(xr, C);
        if (m == T(-INFINITY)) m = T(0);
        T* e = grad ? grad + i * C : row_scratch<T>(C);  // exp(x - m), reused for the gradient
        const T sum = exp_shift(xr, m, e, C);
        const T lse = m + std::log(sum);
        const T wt = w ? w[ti] : T(1);
        nll[i] = wt * (lse - xr[ti]);
        if (smooth) {
            // sum_c w_c (lse - x_c) = lse * W - sum_c w_c x_c
            smooth[i] = w ? lse * W - lane_dot(w, xr, C) : lse * T(C) - lane_sum(xr, C);
        }
        if (grad) {
            T* gr = grad + i * C;
            const T coef = (ta * wt + tb * W) / sum;  // p_c = e_c / sum
            if (w) {
                for (int64_t c = 0; c < C; ++c) gr[c] = coef * gr[c] - tb * w[c];
            } else {
                for (int64_t c = 0; c < C; ++c) gr[c] = coef * gr[c] - tb;
            }
            gr[ti] -= ta * wt;
        }
    }
    return bad;
}

// ---- layer norm --------------------------------------------------------------------------------------
template <typename T>
void ln_fwd(const T* x, const T* w, const T* b, T* y, T* mean, T* rstd, int64_t R, int64_t D, double eps,
            int nt) {
#pragma omp parallel for num_threads(nt) schedule(static) if (big(R * D))
    for (int64_t r = 0; r < R; ++r) {
        const T* xr = x + r * D;
        T* yr = y + r * D;
        const T mu = lane_sum(xr, D) / T(D);
        T* xc = row_scratch<T>(D);
        for (int64_t d = 0; d < D; ++d) xc[d] = xr[d] - mu;
        const T v = lane_dot(xc, xc, D);
        const T rs = T(1) / std::sqrt(v / T(D) + T(eps));
        mean[r] = mu;
        rstd[r] = rs;
        if (w && b)
            for (int64_t d = 0; d < D; ++d) yr[d] = (xr[d] - mu) * rs * w[d] + b[d];
        else if (w)
            for (int64_t d = 0; d < D; ++d) yr[d] = (xr[d] - mu) * rs * w[d];
        else if (b)
            for (int64_t d = 0; d < D; ++d) yr[d] = (xr[d] - mu) * rs + b[d];
        else
            for (int64_t d = 0; d < D; ++d) yr[d] = (xr[d] - mu) * rs;
    }
}

template <typename T>
void ln_bwd(const T* gy, const T* x, const T* mean, const T* rstd, const T* w, T* gx, T* gw, T* gb,
            int64_t R, int64_t D, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static) if (big(R * D))
    for (int64_t r = 0; r < R; ++r) {
        const T* g = gy + r * D;
        const T* xr = x + r * D;
        T* o = gx + r * D;
        const T mu = mean[r], rs = rstd[r];
        // o holds gxhat = g * w, xh (scratch) holds xhat; s1 = sum(gxhat), s2 = sum(gxhat * xhat)
        T* xh = row_scratch<T>(D);
        for (int64_t d = 0; d < D; ++d) xh[d] = (xr[d] - mu) * rs;
        if (w)
            for (int64_t d = 0; d < D; ++d) o[d] = g[d] * w[d];
        else
            for (int64_t d = 0; d < D; ++d) o[d] = g[d];
        const T m1 = lane_sum(o, D) / T(D), m2 = lane_dot(o, xh, D) / T(D);
        for (int64_t d = 0; d < D; ++d) o[d] = rs * (o[d] - m1 - xh[d] * m2);
    }
    if (gw || gb) {
        // Split the columns over threads; each thread walks all rows over its own column block, so the
        // sums do not depend on the thread count.
        const int64_t blk = 64;
        const int64_t nb = (D + blk - 1) / blk;
#pragma omp parallel for num_threads(nt) schedule(static) if (big(R * D))
        for (int64_t jb = 0; jb < nb; ++jb) {
            const int64_t d0 = jb * blk, d1 = std::min(D, d0 + blk);
            T aw[64], ab[64];
            for (int64_t d = 0; d < d1 - d0; ++d) aw[d] = ab[d] = 0;
            for (int64_t r = 0; r < R; ++r) {
                const T* g = gy + r * D;
                const T* xr = x + r * D;
                const T mu = mean[r], rs = rstd[r];
                for (int64_t d = d0; d < d1; ++d) {
                    aw[d - d0] += g[d] * (xr[d] - mu) * rs;
                    ab[d - d0] += g[d];
                }
            }
            for (int64_t d = d0; d < d1; ++d) {
                if (gw) gw[d] = aw[d - d0];
                if (gb) gb[d] = ab[d - d0];
            }
        }
    }
}

// ---- optimizers -------------------------------------------------------------------------------------
template <typename T>
void sgd(T* p, const T* g, T* buf, int64_t n, const SgdParams& prm, int nt) {
    const T lr = T(prm.lr), wd = T(prm.weight_decay), mom = T(prm.momentum), damp = T(1 - prm.dampening);
    const T sign = prm.maximize ? T(-1) : T(1);
    const bool first = prm.first_step, nest = prm.nesterov;
    if (!buf) {
#pragma omp parallel for num_threads(nt) schedule(static) if (big(n))
        for (int64_t i = 0; i < n; ++i) {
            const T d = sign * g[i] + wd * p[i];
            p[i] = p[i] - lr * d;
        }
        return;
    }
#pragma omp parallel for num_threads(nt) schedule(static) if (big(n))
    for (int64_t i = 0; i < n; ++i) {
        T d = sign * g[i] + wd * p[i];
        const T bnew = first ? d : mom * buf[i] + damp * d;
        buf[i] = bnew;
        d = nest ? d + mom * bnew : bnew;
        p[i] = p[i] - lr * d;
    }
}

template <typename T>
void adam(T* p, const T* g, T* m, T* v, T* vmax, int64_t n, const AdamParams& prm, int nt) {
    const double bc1 = 1 - std::pow(prm.beta1, double(prm.step));
    const double bc2 = 1 - std::pow(prm.beta2, double(prm.step));
    const T step_size = T(prm.lr / bc1), bc2_sqrt = T(std::sqrt(bc2));
    const T b1 = T(1 - prm.beta1), b2 = T(prm.beta2), omb2 = T(1 - prm.beta2), eps = T(prm.eps);
    const T wd = prm.decoupled ? T(0) : T(prm.weight_decay);
    const T decay = prm.decoupled ? T(1 - prm.lr * prm.weight_decay) : T(1);
    const T sign = prm.maximize ? T(-1) : T(1);
    if (vmax) {
#pragma omp parallel for num_threads(nt) schedule(static) if (big(n))
        for (int64_t i = 0; i < n; ++i) {
            const T pi = p[i] * decay;
            const T gi = sign * g[i] + wd * pi;
            const T mi = m[i] + b1 * (gi - m[i]);
            const T vi = b2 * v[i] + omb2 * gi * gi;
            const T vm = vmax[i] > vi ? vmax[i] : vi;
            m[i] = mi;
            v[i] = vi;
            vmax[i] = vm;
            p[i] = pi - step_size * (mi / (std::sqrt(vm) / bc2_sqrt + eps));
        }
    } else {
#pragma omp parallel for num_threads(nt) schedule(static) if (big(n))
        for (int64_t i = 0; i < n; ++i) {
            const T pi = p[i] * decay;
            const T gi = sign * g[i] + wd * pi;
            const T mi = m[i] + b1 * (gi - m[i]);
            const T vi = b2 * v[i] + omb2 * gi * gi;
            m[i] = mi;
            v[i] = vi;
            p[i] = pi - step_size * (mi / (std::sqrt(vi) / bc2_sqrt + eps));
        }
    }
}

template <typename T>
void rmsprop(T* p, const T* g, T* sq, T* ga, T* buf, int64_t n, const RmspropParams& prm, int nt) {
    const T lr = T(prm.lr), a = T(prm.alpha), oma = T(1 - prm.alpha), eps = T(prm.eps);
    const T wd = T(prm.weight_decay), mom = T(prm.momentum);
    const T sign = prm.maximize ? T(-1) : T(1);
#pragma omp parallel for num_threads(nt) schedule(static) if (big(n))
    for (int64_t i = 0; i < n; ++i) {
        const T gi = sign * g[i] + wd * p[i];
        const T s = a * sq[i] + oma * gi * gi;
        sq[i] = s;
        T avg;
        if (ga) {
            const T gm = ga[i] + oma * (gi - ga[i]);
            ga[i] = gm;
            avg = std::sqrt(s - gm * gm) + eps;
        } else {
            avg = std::sqrt(s) + eps;
        }
        if (buf) {
            const T bn = mom * buf[i] + gi / avg;
            buf[i] = bn;
            p[i] = p[i] - lr * bn;
        } else {
            p[i] = p[i] - lr * (gi / avg);
        }
    }
}

template <typename T>
const EwKernels<T>& table() {
    static const EwKernels<T> k{&act_fwd_dispatch<T>, &act_bwd<T>, &softmax_fwd<T>, &softmax_bwd<T>,
                                &xent<T>, &ln_fwd<T>, &ln_bwd<T>, &sgd<T>, &adam<T>, &rmsprop<T>};
    return k;
}

}  // namespace LF_EW_NS

template <>
const EwKernels<float>& LF_EW_TABLE<float>() { return LF_EW_NS::table<float>(); }
template <>
const EwKernels<double>& LF_EW_TABLE<double>() { return LF_EW_NS::table<double>(); }

}  // namespace detail
}  // namespace layerforge
