// LSTM forward and backward through time (see layerforge/lstm.h).
//
// Forward: one GEMM projects the inputs of all T steps (x (T*B, I) @ W_ih^T) into a (T*B, 4H) buffer
// whose columns are in a *blocked* order: the hidden units are split into one contiguous range per
// thread, and each range keeps its four gates side by side ([i|f|g|o] of its units). Then, per step,
// each thread runs one GEMM h_{t-1} (B, H) @ W_hh^T restricted to its own columns (accumulated onto the
// projection: beta = 1) and, while that (B, 4n) block is hot in cache, applies the bias, the gate
// nonlinearities and the cell update for its units, writing the gates (PyTorch's order), c_t and h_t.
// One barrier per step (every thread needs the whole h_{t-1}).
// Backward: steps in reverse; each thread computes the pre-activation gradients of its units for all B
// rows (pointwise), then — after one barrier — dh_{t-1}[:, its units] = dG_t (B, 4H) @ W_hh[:, its
// units], which only it reads in the next step. The dG of all steps are kept (T*B, 4H) and the weight,
// bias and input gradients are large GEMMs / reductions over all steps at the end.
#include "layerforge/lstm.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "layerforge/detail/lstm_checks.h"
#include "layerforge/gemm.h"
#include "layerforge/runtime.h"
#include "cpu_internal.h"
#include "seq_pointwise.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace layerforge {
namespace detail {

SeqKernels<float> seq_kernels_f32() {
    SeqKernels<float> k;
#if LAYERFORGE_HAVE_AVX2_BUILD
    if (cpu_path() == CpuPath::avx2) {
        k.lstm_fwd = &lstm_fwd_row_avx2;
        k.lstm_bwd = &lstm_bwd_row_avx2;
        k.softmax_cols = &softmax_cols_avx2;
        k.exp2_sub_sum = &exp2_sub_sum_avx2;
    }
#endif
    return k;
}

}  // namespace detail

namespace {

using detail::ArenaSlot;
using detail::thread_arena;

using Dims = detail::LstmDims;

int choose_threads(const Dims& d) {
    int nt = get_num_threads();
    if (nt < 1) nt = 1;
    // per-step work per thread must pay for a barrier (~1-2 us)
    const double step_flops = 8.0 * d.B * d.H * d.H;
    nt = static_cast<int>(std::min<int64_t>(nt, std::max<int64_t>(1, d.H / 8)));
    if (step_flops < 1.0e5) nt = 1;
    return std::max(1, nt);
}


// How the threads share a step. Hidden-unit groups (every thread multiplies all B rows by its columns of
// W_hh; a barrier per step, as a step needs all of h_{t-1}) or batch rows (every thread runs the recurrence
// of its own rows with all of W_hh: rows are independent, so no barrier at all). Rows when each thread has
// at least one full register tile of rows and W_hh (4H x H) fits in L2 twice over (H <= 128 in float), since
// each thread then reads all of it every step. At I=28, H=128, B=32 (sequential MNIST) the barriers and
// their waits were ~11% of forward+backward (perf).
template <typename T>
bool split_rows(const Dims& d, int nt, int mr) {
    return nt > 1 && d.B >= int64_t(nt) * mr && 4 * d.H * d.H * int64_t(sizeof(T)) <= (256 << 10);
}

// Runs `steps` steps of nt ranges on a team of threads: phase(s, k, r) for every phase k < phases and range
// r < nt, with a barrier after each phase. Range r always runs on the same thread (r mod team), so data a
// thread writes for its own range in one step is read back by the same thread in the next.
// barrier_mask bit k set: a barrier after phase k (default: after every phase).
template <class F>
void run_ranges(int nt, int64_t steps, int phases, F&& phase, unsigned barrier_mask = ~0u) {
#ifdef _OPENMP
    if (nt > 1 && !omp_in_parallel()) {
#pragma omp parallel num_threads(nt)
        {
            const int tid = omp_get_thread_num(), team = omp_get_num_threads();
            for (int64_t s = 0; s < steps; ++s)
                for (int k = 0; k < phases; ++k) {
                    for (int r = tid; r < nt; r += team) phase(s, k, r);
                    if (barrier_mask & (1u << k)) {
#pragma omp barrier
                    }
                }
        }
        return;
    }
#endif
    for (int64_t s = 0; s < steps; ++s)
        for (int k = 0; k < phases; ++k)
            for (int r = 0; r < nt; ++r) phase(s, k, r);
}

template <typename T>
void copy_2d(int64_t rows, int64_t cols, const T* src, int64_t rs_s, int64_t cs_s, T* dst, int64_t rs_d,
             int64_t cs_d) {
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) dst[r * rs_d + c * cs_d] = src[r * rs_s + c * cs_s];
}

template <typename T>
void forward_impl(const Dims& d, const View& x, const View* h0, const View* c0, const View& w_ih,
                  const View& w_hh, const View* b_ih, const View* b_hh, const View& y, const View& h_T,
                  const View& c_T, const View& gates, const View& cells) {
    const int64_t T_ = d.T, B = d.B, I = d.I, H = d.H, G = 4 * H;
    if (T_ == 0 || B == 0 || H == 0) {
        for (int64_t b = 0; b < B; ++b)
            for (int64_t u = 0; u < H; ++u) {
                h_T.ptr<T>()[b * h_T.strides[0] + u * h_T.strides[1]] =
                    h0 ? h0->ptr<T>()[b * h0->strides[0] + u * h0->strides[1]] : T(0);
                c_T.ptr<T>()[b * c_T.strides[0] + u * c_T.strides[1]] =
                    c0 ? c0->ptr<T>()[b * c0->strides[0] + u * c0->strides[1]] : T(0);
            }
        return;
    }
    const detail::GemmKernelInfo<T>& ki = detail::gemm_kernel_current<T>();
    const int mr = ki.mr, nr = ki.nr;
    const int64_t ng = (H + nr - 1) / nr;  // groups of nr hidden units
    // W_hh packed once: for group g and gate q, the micro-kernel's B panel [H][nr] of rows q*H + g*nr + j
    // (zero past H); then the summed bias (slot k1)
    T* wp = thread_arena(ArenaSlot::k1).get_as<T>(static_cast<size_t>(ng * 4 * H * nr + G));
    T* bias = wp + ng * 4 * H * nr;
    const T* whh = w_hh.ptr<T>();
    for (int64_t g = 0; g < ng; ++g)
        for (int q = 0; q < 4; ++q) {
            T* panel = wp + (g * 4 + q) * H * nr;
            for (int64_t k = 0; k < H; ++k)
                for (int j = 0; j < nr; ++j) {
                    const int64_t u = g * nr + j;
                    panel[k * nr + j] = u < H ? whh[(q * H + u) * w_hh.strides[0] + k * w_hh.strides[1]] : T(0);
                }
        }
    for (int64_t col = 0; col < G; ++col)
        bias[col] = (b_ih ? b_ih->ptr<T>()[col * b_ih->strides[0]] : T(0)) +
                    (b_hh ? b_hh->ptr<T>()[col * b_hh->strides[0]] : T(0));
    // input projection of all steps: one GEMM (threads inside), PyTorch's gate layout (slot k0)
    T* xp = thread_arena(ArenaSlot::k0).get_as<T>(static_cast<size_t>(T_ * B * G));
    gemm_strided<T>(T_ * B, G, I, T(1), x.ptr<T>(), I, 1, w_ih.ptr<T>(), w_ih.strides[1], w_ih.strides[0], T(0),
                    xp, G, 1, 0);

    T* Y = y.ptr<T>();
    T* GT = gates.ptr<T>();
    T* CL = cells.ptr<T>();
    const detail::SeqKernels<T> kern = detail::seq_kernels<T>();
    const bool rows = split_rows<T>(d, choose_threads(d), mr);
    const int nt = rows ? choose_threads(d) : static_cast<int>(std::min<int64_t>(choose_threads(d), ng));
    // per step and range: pack h_{t-1} (the range's rows); for each unit group of the range, for each row
    // tile: four micro-kernel tiles (i, f, g, o of nr units) into a local buffer, then the gates and cell
    // update straight from it
    run_ranges(nt, T_, 1, [&](int64_t t, int, int r) {
        const int64_t g0 = rows ? 0 : ng * r / nt, g1 = rows ? ng : ng * (r + 1) / nt;
        const int64_t b0 = rows ? B * r / nt : 0, b1 = rows ? B * (r + 1) / nt : B;
        const int64_t mtr = (b1 - b0 + mr - 1) / mr;  // row tiles of the range
        if (g0 == g1 || b0 == b1) return;
        const T* hprev = nullptr;
        int64_t rs_h = H;
        if (t > 0) {
            hprev = Y + (t - 1) * B * H;
        } else if (h0) {
            hprev = h0->ptr<T>();
            rs_h = h0->strides[0];
        }
        // scratch: packed h_{t-1} (mtr*mr x H), then the gate tiles of one unit group for all rows
        // ([4][mtr*mr][nr], gate stride mtr*mr*nr): small enough for L1/L2, so the fusion stays in cache
        const int64_t tgs = mtr * mr * nr;
        // (the A packing may write kGemmPackSlack elements past its panels: into `tile`, written after)
        T* ap = thread_arena(ArenaSlot::k2).get_as<T>(
            static_cast<size_t>(mtr * mr * H + 4 * tgs + detail::kGemmPackSlack));
        T* tile = ap + mtr * mr * H;
        if (hprev)
            ki.pack_a(b1 - b0, H, hprev + b0 * rs_h, rs_h, 1, ap);
        else
            std::fill(tile, tile + 4 * tgs, T(0));
        for (int64_t g = g0; g < g1; ++g) {
            const int64_t u0 = g * nr, n = std::min<int64_t>(nr, H - u0);
            // one B panel (H x nr) stays in L1 while every row tile passes (BLIS order)
            if (hprev)
                for (int q = 0; q < 4; ++q)
                    for (int64_t it = 0; it < mtr; ++it)
                        detail::gemm_tile_rows(ki, static_cast<int>(std::min<int64_t>(mr, b1 - b0 - it * mr)), H,
                                               ap + it * mr * H, wp + (g * 4 + q) * H * nr, ki.nr,
                                               tile + q * tgs + it * mr * nr, nr, T(1), T(0));
            for (int64_t b = b0; b < b1; ++b) {
                const int64_t row = t * B + b;
                const T* cprev = nullptr;
                if (t > 0)
                    cprev = CL + (row - B) * H + u0;
                else if (c0)
                    cprev = c0->ptr<T>() + b * c0->strides[0] + u0;
                kern.lstm_fwd(n, H, tile + (b - b0) * nr, tgs, xp + row * G + u0, bias + u0, cprev, GT + row * G + u0,
                              CL + row * H + u0, Y + row * H + u0);
            }
        }
    }, rows ? 0u : ~0u);  // rows: each thread reads back only what it wrote (its rows of h and c)
    copy_2d<T>(B, H, Y + (T_ - 1) * B * H, H, 1, h_T.ptr<T>(), h_T.strides[0], h_T.strides[1]);
    copy_2d<T>(B, H, CL + (T_ - 1) * B * H, H, 1, c_T.ptr<T>(), c_T.strides[0], c_T.strides[1]);
}

template <typename T>
void backward_impl(const Dims& d, const View& x, const View* h0, const View* c0, const View& w_ih,
                   const View& w_hh, const View& y, const View& gates, const View& cells,
                   const View* grad_y, const View* grad_h_T, const View* grad_c_T, const View* grad_x,
                   const View* grad_h0, const View* grad_c0, const View* grad_w_ih, const View* grad_w_hh,
                   const View* grad_b_ih, const View* grad_b_hh, bool accumulate) {
    const int64_t T_ = d.T, B = d.B, I = d.I, H = d.H, G = 4 * H;
    const T beta = accumulate ? T(1) : T(0);
    // dG (T*B, 4H) in slot k0; dh_rec and dc (B, H) each in slot k2
    T* dG = thread_arena(ArenaSlot::k0).get_as<T>(static_cast<size_t>(std::max<int64_t>(1, T_ * B * G)));
    T* st = thread_arena(ArenaSlot::k2).get_as<T>(static_cast<size_t>(std::max<int64_t>(1, 2 * B * H)));
    T* dh = st;
    T* dc = st + B * H;
    for (int64_t b = 0; b < B; ++b)
        for (int64_t u = 0; u < H; ++u) {
            dh[b * H + u] = grad_h_T ? grad_h_T->ptr<T>()[b * grad_h_T->strides[0] + u * grad_h_T->strides[1]] : T(0);
            dc[b * H + u] = grad_c_T ? grad_c_T->ptr<T>()[b * grad_c_T->strides[0] + u * grad_c_T->strides[1]] : T(0);
        }
    const T* GT = gates.ptr<T>();
    const T* CL = cells.ptr<T>();
    const T* Y = y.ptr<T>();
    const T* GY = grad_y ? grad_y->ptr<T>() : nullptr;
    const T* whh = w_hh.ptr<T>();
    const detail::SeqKernels<T> kern = detail::seq_kernels<T>();
    const detail::GemmKernelInfo<T>& ki = detail::gemm_kernel_current<T>();
    const int mr = ki.mr, nr = ki.nr;
    const int64_t ng = (H + nr - 1) / nr;
    const bool live = T_ > 0 && B > 0 && H > 0;
    const bool rows = live && split_rows<T>(d, choose_threads(d), mr);
    const int nt = !live ? 1 : rows ? choose_threads(d) : static_cast<int>(std::min<int64_t>(choose_threads(d), ng));
    // W_hh packed once as the micro-kernel's B panels: group g = columns g*nr.. of W_hh (4H x H), [4H][nr]
    T* wb = thread_arena(ArenaSlot::k1).get_as<T>(static_cast<size_t>(std::max<int64_t>(1, ng * G * nr)));
    for (int64_t g = 0; g < ng; ++g)
        for (int64_t k = 0; k < G; ++k)
            for (int j = 0; j < nr; ++j) {
                const int64_t u = g * nr + j;
                wb[(g * G + k) * nr + j] = u < H ? whh[k * w_hh.strides[0] + u * w_hh.strides[1]] : T(0);
            }
    run_ranges(nt, T_, 2, [&](int64_t s, int k, int r) {
        const int64_t t = T_ - 1 - s;
        const int64_t g0 = rows ? 0 : ng * r / nt, g1 = rows ? ng : ng * (r + 1) / nt;
        const int64_t b0 = rows ? B * r / nt : 0, b1 = rows ? B * (r + 1) / nt : B;
        const int64_t u0 = g0 * nr, u1 = std::min(H, g1 * nr), n = u1 - u0;
        if (n <= 0 || b0 == b1) return;
        if (k == 0) {  // pointwise: dG_t of this range's rows and units, dc carried
            for (int64_t b = b0; b < b1; ++b) {
                const T* cprev = nullptr;
                if (t > 0)
                    cprev = CL + ((t - 1) * B + b) * H + u0;
                else if (c0)
                    cprev = c0->ptr<T>() + b * c0->strides[0] + u0;
                kern.lstm_bwd(n, H, GT + (t * B + b) * G + u0, CL + (t * B + b) * H + u0, cprev,
                              GY ? GY + (t * B + b) * H + u0 : nullptr, dh + b * H + u0, dc + b * H + u0,
                              dG + (t * B + b) * G + u0);
            }
        } else if (t > 0 || grad_h0) {  // dh_{t-1}[rows, units] = dG_t[rows] (rows x 4H) @ W_hh[:, units]
            const int64_t mtr = (b1 - b0 + mr - 1) / mr;
            T* ap = thread_arena(ArenaSlot::k3).get_as<T>(static_cast<size_t>(mtr * mr * G + detail::kGemmPackSlack));
            ki.pack_a(b1 - b0, G, dG + (t * B + b0) * G, G, 1, ap);
            alignas(64) T tile[8 * 16];
            for (int64_t g = g0; g < g1; ++g) {
                const int64_t ua = g * nr, nn = std::min<int64_t>(nr, H - ua);
                for (int64_t it = 0; it < mtr; ++it) {
                    const int64_t m = std::min<int64_t>(mr, b1 - b0 - it * mr);
                    detail::gemm_tile_rows(ki, static_cast<int>(m), G, ap + it * mr * G, wb + g * G * nr, ki.nr, tile, nr,
                                           T(1), T(0));
                    for (int64_t i = 0; i < m; ++i)
                        std::memcpy(dh + (b0 + it * mr + i) * H + ua, tile + i * nr, sizeof(T) * nn);
                }
            }
        }
    }, /*barrier_mask=*/rows ? 0u : 1u);
    // Units: no barrier after the GEMM phase: its output (dh of this range) is read by the same thread next
    // step, and the next pointwise phase writes dG_{t-1}, not the dG_t other threads may still be reading.
    // Rows: no barrier at all; a thread reads only the dG, dh and dc of its own rows.

    if (grad_h0) copy_2d<T>(B, H, dh, H, 1, grad_h0->ptr<T>(), grad_h0->strides[0], grad_h0->strides[1]);
    if (grad_c0) copy_2d<T>(B, H, dc, H, 1, grad_c0->ptr<T>(), grad_c0->strides[0], grad_c0->strides[1]);
    const int64_t TB = T_ * B;
    if (grad_x)  // (T*B, I) = dG (T*B, 4H) @ W_ih (4H, I)
        gemm_strided<T>(TB, I, G, T(1), dG, G, 1, w_ih.ptr<T>(), w_ih.strides[0], w_ih.strides[1], T(0),
                        grad_x->ptr<T>(), I, 1, 0);
    if (grad_w_ih)  // (4H, I) (+)= dG^T @ x
        gemm_strided<T>(G, I, TB, T(1), dG, 1, G, x.ptr<T>(), I, 1, beta, grad_w_ih->ptr<T>(),
                        grad_w_ih->strides[0], grad_w_ih->strides[1], 0);
    if (grad_w_hh) {  // (4H, H) (+)= dG[1:]^T @ y[:-1] + dG[0]^T @ h0
        gemm_strided<T>(G, H, (T_ - 1) * B > 0 ? (T_ - 1) * B : 0, T(1), dG + B * G, 1, G, Y, H, 1, beta,
                        grad_w_hh->ptr<T>(), grad_w_hh->strides[0], grad_w_hh->strides[1], 0);
        if (h0 && B > 0 && T_ > 0)
            gemm_strided<T>(G, H, B, T(1), dG, 1, G, h0->ptr<T>(), h0->strides[0], h0->strides[1], T(1),
                            grad_w_hh->ptr<T>(), grad_w_hh->strides[0], grad_w_hh->strides[1], 0);
    }
    if (grad_b_ih || grad_b_hh) {
        T* db = thread_arena(ArenaSlot::k3).get_as<T>(static_cast<size_t>(std::max<int64_t>(1, G)));
        const int nb = static_cast<int>(std::min<int64_t>(get_num_threads(), std::max<int64_t>(1, G / 64)));
#pragma omp parallel for num_threads(nb) schedule(static)
        for (int r = 0; r < nb; ++r) {
            const int64_t c0_ = G * r / nb, c1_ = G * (r + 1) / nb;
            for (int64_t c = c0_; c < c1_; ++c) db[c] = 0;
            for (int64_t row = 0; row < TB; ++row) {
                const T* src = dG + row * G;
                for (int64_t c = c0_; c < c1_; ++c) db[c] += src[c];
            }
        }
        for (const View* gb : {grad_b_ih, grad_b_hh}) {
            if (!gb) continue;
            T* p = gb->ptr<T>();
            for (int64_t c = 0; c < G; ++c) p[c * gb->strides[0]] = (accumulate ? p[c * gb->strides[0]] : T(0)) + db[c];
        }
    }
}

}  // namespace

void lstm_forward(const View& x, const View* h0, const View* c0, const View& w_ih, const View& w_hh,
                  const View* b_ih, const View* b_hh, const View& y, const View& h_T, const View& c_T,
                  const View& gates, const View& cells) {
    const Dims d = detail::lstm_check_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, y, h_T, c_T, gates, cells);
    if (d.dt == DType::f32)
        forward_impl<float>(d, x, h0, c0, w_ih, w_hh, b_ih, b_hh, y, h_T, c_T, gates, cells);
    else
        forward_impl<double>(d, x, h0, c0, w_ih, w_hh, b_ih, b_hh, y, h_T, c_T, gates, cells);
}

void lstm_backward(const View& x, const View* h0, const View* c0, const View& w_ih, const View& w_hh,
                   const View& y, const View& gates, const View& cells, const View* grad_y,
                   const View* grad_h_T, const View* grad_c_T, const View* grad_x, const View* grad_h0,
                   const View* grad_c0, const View* grad_w_ih, const View* grad_w_hh,
                   const View* grad_b_ih, const View* grad_b_hh, bool accumulate) {
    const Dims d = detail::lstm_check_backward(x, h0, c0, w_ih, w_hh, y, gates, cells, grad_y, grad_h_T, grad_c_T,
                                               grad_x, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh);
    if (d.dt == DType::f32)
        backward_impl<float>(d, x, h0, c0, w_ih, w_hh, y, gates, cells, grad_y, grad_h_T, grad_c_T, grad_x,
                             grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, accumulate);
    else
        backward_impl<double>(d, x, h0, c0, w_ih, w_hh, y, gates, cells, grad_y, grad_h_T, grad_c_T, grad_x,
                              grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_b_ih, grad_b_hh, accumulate);
}

}  // namespace layerforge
