// Scaled-dot-product attention, FlashAttention-style (see layerforge/attention.h).
//
// Forward: work items are (batch index, tile of BR query rows), scheduled dynamically over the threads
// (causal tiles differ in work). Each item walks the key tiles of BC keys: S = scale log2(e) Q_i K_j^T
// (BR x BC, the packed GEMM on one thread; scores in base-2 units, so every exponential is a multiply-free
// exp2), mask, then the online softmax per row (running max m and sum l; the output rows, accumulated in a
// per-thread tile, are rescaled by 2^(m_old - m_new)), then out_i += P V_j.
// Under causal masking the key tiles right of the diagonal are never visited. At the end out /= l and
// lse = m ln 2 + log l (natural units, as torch's). Scratch: one BR x BC tile per thread.
// Backward (FlashAttention-2): Di = rowsum(dO o O) first, and Q and dO of every batch index packed once
// in the micro-kernel's A and B layouts (O(L) memory). Work items are (batch index, chunk of key tiles);
// per key tile, K_j and V_j are packed once, and for each query tile that can see it, P = 2^(S - lse log2 e) is
// recomputed from the saved lse, dP = dO_i V_j^T, dS = P o (dP - Di), and the micro-kernel accumulates
// dV_j += P^T dO_i, dK_j += scale dS^T Q_i (in per-tile accumulators) and dQ_i += scale dS K_j (in a
// per-item accumulator). A batch index belongs to one thread when there are at least as many batch
// indices as threads; otherwise its key tiles are split into chunks whose dQ accumulators are summed in a
// fixed order afterwards (deterministic: no atomics).
#include "layerforge/attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "layerforge/detail/attention_checks.h"
#include "layerforge/detail/dropout_hash.h"
#include "layerforge/gemm.h"
#include "layerforge/runtime.h"
#include "cpu_internal.h"
#include "seq_pointwise.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace layerforge {

namespace {

using detail::ArenaSlot;
using detail::thread_arena;

constexpr double kLog2e = 1.4426950408889634074, kLn2 = 0.69314718055994530942;
constexpr int64_t kBrF = 48, kBcF = 256;  // forward tiles (query columns; keys, at most ~kBcF)
constexpr int64_t kBrB = 96, kBcB = 96;   // backward tiles (query rows rounded down to MR; keys)


// Dropout keep decision for element (n, i, j): the counter-based hash shared with the GPU kernels
// (detail/dropout_hash.h), identical in forward and backward.
inline bool keep_elem(uint64_t seed, uint64_t idx, double p) {
    return detail::dropout_keep(detail::dropout_key(seed), idx, p);
}

template <typename T>
struct Ctx {
    int64_t B1, B2, L, S, D, Dv;
    const T *q, *k, *v;
    int64_t qs[3], ks[3], vs[3];  // strides of b1, b2, row (last dim stride 1)
    const AttentionMask* mask;
    T scale;
    T scale2;  // scale * log2(e): the score GEMMs produce scores in base-2 units, so the softmax's exponentials
               // are exp2 without a multiply (float masks are multiplied by log2(e) as they are added)
    bool causal;
    double p;
    uint64_t seed;
    int64_t N() const { return B1 * B2; }
    int64_t off(const int64_t* s, int64_t n) const { return (n / B2) * s[0] + (n % B2) * s[1]; }
    // Keys [lo, hi) of batch index n that can take part: a boolean mask that is the same for every query
    // (a key padding mask, (B, 1, 1, S)) excludes the keys before its first and after its last True, so
    // their tiles are never computed; otherwise [0, S).
    void key_span(int64_t n, int64_t& lo, int64_t& hi) const {
        lo = 0;
        hi = S;
        if (!mask->data || !mask->is_bool || mask->strides[2] != 0) return;
        const uint8_t* m = static_cast<const uint8_t*>(mask->data) + (n / B2) * mask->strides[0] +
                           (n % B2) * mask->strides[1];
        const int64_t st = mask->strides[3];
        while (hi > 0 && !m[(hi - 1) * st]) --hi;
        while (lo < hi && !m[lo * st]) ++lo;
    }
};

// Adds the mask / causal -inf to the scores of queries [i0, i0+r) x keys [j0, j0+c); the score of (query ii,
// key jj) is at s[ii * sq + jj * sk] (the forward's tile is transposed: sq = 1; the backward's is not). Float
// masks are multiplied by log2(e), as the scores are in base-2 units. A mask row shared by every query
// (strides[2] == 0: a key padding mask) is read once per tile and applied to all r queries of each key.
template <typename T>
void apply_mask(const Ctx<T>& cx, int64_t n, int64_t i0, int64_t r, int64_t j0, int64_t c, T* s, int64_t sq,
                int64_t sk) {
    const T ninf = -std::numeric_limits<T>::infinity();
    const AttentionMask& m = *cx.mask;
    if (m.data) {
        const int64_t base = (n / cx.B2) * m.strides[0] + (n % cx.B2) * m.strides[1];
        const int64_t st = m.strides[3];
        const bool shared = m.strides[2] == 0;
        const T l2e = T(kLog2e);
        for (int64_t ii = 0; ii < (shared ? 1 : r); ++ii) {
            const int64_t o = base + (i0 + ii) * m.strides[2] + j0 * st;
            const int64_t q0 = ii, q1 = shared ? r : ii + 1;  // the queries this mask row applies to
            if (m.is_bool) {
                const uint8_t* mp = static_cast<const uint8_t*>(m.data) + o;
                if (st == 1 && !std::memchr(mp, 0, static_cast<size_t>(c))) continue;  // all attend
                for (int64_t jj = 0; jj < c; ++jj)
                    if (!mp[jj * st])
                        for (int64_t q = q0; q < q1; ++q) s[q * sq + jj * sk] = ninf;
            } else {
                const T* mp = static_cast<const T*>(m.data) + o;
                for (int64_t jj = 0; jj < c; ++jj) {
                    const T add = mp[jj * st] * l2e;
                    for (int64_t q = q0; q < q1; ++q) s[q * sq + jj * sk] += add;
                }
            }
        }
    }
    if (cx.causal && j0 + c - 1 > i0)
        for (int64_t jj = 0; jj < c; ++jj) {  // key j0 + jj is masked for the queries before it
            const int64_t q_end = std::min(r, std::max<int64_t>(0, j0 + jj - i0));
            for (int64_t q = 0; q < q_end; ++q) s[q * sq + jj * sk] = ninf;
        }
}

// C (mr x nr, row stride ldc) = alpha A B + beta C for A with element (i, p) at a[p * lda + i] (lda == mr: a
// packed panel) and a packed B panel of depth k.
template <typename T>
inline void gemm_a(const detail::GemmKernelInfo<T>& ki, int64_t k, const T* a, int64_t lda, const T* b, T* c,
                   int64_t ldc, T alpha, T beta) {
    if (lda == ki.mr)
        ki.ukernel(k, a, b, ki.nr, c, ldc, 1, alpha, beta);
    else
        ki.ukernel_strided_a(k, a, lda, b, ki.nr, c, ldc, 1, alpha, beta);
}

template <typename T>
void forward_impl(const Ctx<T>& cx, const View& out, const View& lse) {
    const int64_t N = cx.N(), L = cx.L, S = cx.S, D = cx.D, Dv = cx.Dv;
    const detail::GemmKernelInfo<T>& ki = detail::gemm_kernel_current<T>();
    const int64_t mr = ki.mr, nr = ki.nr;
    // BR (48) is a multiple of mr and nr of every path (query columns of S^T in nr panels, PV in mr strips);
    // BC a multiple of mr (key rows of S^T in mr strips): S split into ceil(S / 256) even tiles (S = 256 is
    // one tile of 258, not 252 + a tile of 4 keys that pays a whole tile's overheads).
    const int64_t BR = kBrF;
    const int64_t nkt0 = std::max<int64_t>(1, (S + kBcF - 1) / kBcF);
    const int64_t BC = ((S + nkt0 - 1) / nkt0 + mr - 1) / mr * mr;
    const int64_t nkt = (S + BC - 1) / BC;  // (<= nkt0: rounding BC up may leave fewer tiles, none empty)
    const int64_t nqt = (L + BR - 1) / BR;
    const int64_t nvp = (Dv + nr - 1) / nr;  // value panels of nr features
    const int64_t DvP = nvp * nr;
    const int threads = std::max(1, get_num_threads());
    const detail::SeqKernels<T> kern = detail::seq_kernels<T>();
    const T ninf = -std::numeric_limits<T>::infinity();
    const T inv_keep = cx.p > 0 ? T(1.0 / (1.0 - cx.p)) : T(1);
    const bool in_place = ki.ukernel_strided_a != nullptr;  // PV reads P^T in place (else packs it)
    T* O = out.ptr<T>();
    T* LSE = lse.ptr<T>();
    const int64_t os[3] = {out.strides[0], out.strides[1], out.strides[2]};
    const int64_t ls[3] = {lse.strides[0], lse.strides[1], lse.strides[2]};

    // K and V of every batch index packed once per key tile jt (master's slot k1):
    //   Kp[n][jt]: the tile's keys as A panels [D][mr] (zero rows past S), then kGemmPackSlack of gap (the A
    //   packing may spill past its end; tiles are packed in parallel);  Vp[n][jt][vp]: [BC][nr] of the
    //   tile's keys and features vp*nr.. (zero past Dv). O(N (S D + S Dv)): grows with S, not L x S.
    const int64_t kt_size = BC * D + detail::kGemmPackSlack;
    const int64_t k_per = nkt * kt_size, v_per = nkt * nvp * BC * nr;
    T* Kp = thread_arena(ArenaSlot::k1).get_as<T>(static_cast<size_t>(N * (k_per + v_per) + 1));
    T* Vp = Kp + N * k_per;
    const int npk = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, N * nkt)));
#pragma omp parallel for num_threads(npk) schedule(static)
    for (int64_t w = 0; w < N * nkt; ++w) {
        const int64_t n = w / nkt, jt = w % nkt, j0 = jt * BC, c = std::min(BC, S - j0);
        ki.pack_a(c, D, cx.k + cx.off(cx.ks, n) + j0 * cx.ks[2], cx.ks[2], 1, Kp + n * k_per + jt * kt_size);
        const T* V = cx.v + cx.off(cx.vs, n) + j0 * cx.vs[2];
        T* dst = Vp + n * v_per + jt * nvp * BC * nr;
        for (int64_t vp = 0; vp < nvp; ++vp)  // panel vp at dst + vp * BC * nr, depth c
            ki.pack_b(c, Dv, V, cx.vs[2], 1, dst + vp * BC * nr - vp * c * nr, vp, vp + 1);
    }

    const int64_t items = N * nqt;
    const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, items)));
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t itm = 0; itm < items; ++itm) {
        const int64_t n = itm / nqt, i0 = (itm % nqt) * BR, r = std::min(BR, L - i0);
        // Per-thread scratch: S^T tile (BC x BR: key rows, query columns), Q_i^T as B panels (D x BR), P packed
        // as A panels where the micro-kernel cannot read P^T in place (BR x BC + slack), O (BR x DvP), m, l and
        // the rescale factors (BR each).
        T* sb = thread_arena(ArenaSlot::k0).get_as<T>(static_cast<size_t>(
            BC * BR + D * BR + (in_place ? 0 : BR * BC + detail::kGemmPackSlack) + BR * DvP + 3 * BR));
        T* qb = sb + BC * BR;
        T* pp = qb + D * BR;
        T* oa = pp + (in_place ? 0 : BR * BC + detail::kGemmPackSlack);
        T* m = oa + BR * DvP;
        T* l = m + BR;
        T* alpha = l + BR;
        // Only the query panels holding real queries are computed (a last tile of 16 queries: 1 of 3); the
        // softmax runs over their w columns, and P V's last strip may read up to mt_used*mr columns: those
        // past w are zeroed per key tile.
        const int64_t nqp = (r + nr - 1) / nr, w = nqp * nr;
        ki.pack_b(D, r, cx.q + cx.off(cx.qs, n) + i0 * cx.qs[2], 1, cx.qs[2], qb, 0, nqp);
        std::fill(m, m + BR, ninf);
        std::fill(l, l + BR, T(0));
        const int64_t mt_used = (r + mr - 1) / mr;
        int64_t k_lo, k_hi;
        cx.key_span(n, k_lo, k_hi);
        const int64_t j_end = cx.causal ? std::min(k_hi, i0 + r) : k_hi;
        bool first = true;  // the first key tile writes O (beta = 0) instead of rescaling and adding
        for (int64_t j0 = k_lo / BC * BC; j0 < j_end; j0 += BC) {  // (packed K and V are tile-aligned)
            const int64_t c = std::min(BC, j_end - j0), ckt = (c + mr - 1) / mr;
            const T* kp = Kp + n * k_per + (j0 / BC) * kt_size;
            // S^T = scale log2(e) K_j Q_i^T (c x w); one query panel (D x nr, in L1) against every key strip.
            // Transposed, the softmax runs down columns (vertical max and sums, no per-row reductions) and P^T
            // is the A operand of P V as it stands.
            for (int64_t b = 0; b < nqp; ++b)
                for (int64_t a = 0; a < ckt; ++a)
                    ki.ukernel(D, kp + a * mr * D, qb + b * D * nr, nr, sb + a * mr * BR + b * nr, BR, 1, cx.scale2,
                               T(0));
            apply_mask(cx, n, i0, r, j0, c, sb, 1, BR);
            kern.softmax_cols(c, w, sb, BR, m, l, alpha);
            if (mt_used * mr > w)
                for (int64_t jj = 0; jj < c; ++jj) std::fill(sb + jj * BR + w, sb + jj * BR + mt_used * mr, T(0));
            if (!first)
                for (int64_t ii = 0; ii < r; ++ii)
                    if (alpha[ii] != T(1)) {
                        T* o = oa + ii * DvP;
                        for (int64_t d = 0; d < DvP; ++d) o[d] *= alpha[ii];
                    }
            if (cx.p > 0)
                for (int64_t jj = 0; jj < c; ++jj) {
                    T* srow = sb + jj * BR;
                    for (int64_t ii = 0; ii < r; ++ii) {
                        const uint64_t idx = static_cast<uint64_t>((n * L + i0 + ii) * S + j0 + jj);
                        srow[ii] = keep_elem(cx.seed, idx, cx.p) ? srow[ii] * inv_keep : T(0);
                    }
                }
            // O += P V_j: A(query, key) = P^T[key][query]; one V panel (c x nr) stays in L1 while the P strips
            // stream (a strip is 24 bytes per step of the micro-kernel, a panel row 64)
            const T* pa = sb;
            int64_t lda = BR, sa = mr;  // A's stride per key, offset per strip
            if (!in_place) {
                ki.pack_a(mt_used * mr, c, sb, 1, BR, pp);
                pa = pp;
                lda = mr;
                sa = mr * c;
            }
            const T* vp = Vp + n * v_per + (j0 / BC) * nvp * BC * nr;
            for (int64_t p = 0; p < nvp; ++p)
                for (int64_t it = 0; it < mt_used; ++it)
                    gemm_a(ki, c, pa + it * sa, lda, vp + p * BC * nr, oa + it * mr * DvP + p * nr, DvP, T(1),
                           first ? T(0) : T(1));
            first = false;
        }
        if (first) std::fill(oa, oa + BR * DvP, T(0));  // no key visible (S == 0)
        T* Ob = O + cx.off(os, n) + i0 * os[2];
        T* lrow = LSE + cx.off(ls, n) + i0 * ls[2];
        for (int64_t ii = 0; ii < r; ++ii) {
            T* o = Ob + ii * os[2];
            const T* a = oa + ii * DvP;
            if (l[ii] > 0) {
                const T inv = T(1) / l[ii];
                for (int64_t d = 0; d < Dv; ++d) o[d] = a[d] * inv;
                // lse in natural units (m is in base 2)
                lrow[ii * ls[2]] =
                    static_cast<T>(static_cast<double>(m[ii]) * kLn2 + std::log(static_cast<double>(l[ii])));
            } else {
                for (int64_t d = 0; d < Dv; ++d) o[d] = 0;
                lrow[ii * ls[2]] = ninf;
            }
        }
    }
}

// Packing helpers for the backward (the micro-kernel's operand layouts; zero padding past the edges).
// A panels: rows [r0, r0 + mr) of a (rows x K, row stride rs, unit column stride) as [K][mr].
template <typename T>
void pack_a_rows(const T* a, int64_t rs, int64_t rows, int64_t K, int64_t mr, T* dst) {
    for (int64_t r0 = 0; r0 < rows; r0 += mr) {
        T* d = dst + r0 * K;
        for (int64_t i = 0; i < mr; ++i) {
            if (r0 + i < rows) {
                const T* src = a + (r0 + i) * rs;
                for (int64_t k = 0; k < K; ++k) d[k * mr + i] = src[k];
            } else {
                for (int64_t k = 0; k < K; ++k) d[k * mr + i] = T(0);
            }
        }
    }
}
// B panels of a: a is (K x cols) (row stride rs), panels of nr columns as [K][nr]; K rows, cols columns.
template <typename T>
void pack_b_rows(const T* a, int64_t rs, int64_t K, int64_t cols, int64_t nr, T* dst) {
    const int64_t np = (cols + nr - 1) / nr;
    for (int64_t p = 0; p < np; ++p) {
        T* d = dst + p * K * nr;
        const int64_t w = std::min(nr, cols - p * nr);
        for (int64_t k = 0; k < K; ++k) {
            const T* src = a + k * rs + p * nr;
            int64_t j = 0;
            for (; j < w; ++j) d[k * nr + j] = src[j];
            for (; j < nr; ++j) d[k * nr + j] = T(0);
        }
    }
}

template <typename T>
void backward_impl(const Ctx<T>& cx, const View& out, const View& lse, const View& gout, const View& gq,
                   const View& gk, const View& gv) {
    const int64_t N = cx.N(), L = cx.L, S = cx.S, D = cx.D, Dv = cx.Dv;
    const detail::GemmKernelInfo<T>& ki = detail::gemm_kernel_current<T>();
    const int64_t mr = ki.mr, nr = ki.nr;
    const int64_t BR = kBrB / mr * mr, BC = kBcB;  // BC (96) a multiple of every mr and nr
    const int64_t nqt = (L + BR - 1) / BR, Lp = nqt * BR;
    const int64_t Dp = (D + nr - 1) / nr * nr, Dvp = (Dv + nr - 1) / nr * nr;
    const int threads = std::max(1, get_num_threads());
    const detail::SeqKernels<T> kern = detail::seq_kernels<T>();
    const T ninf = -std::numeric_limits<T>::infinity();
    const T inv_keep = cx.p > 0 ? T(1.0 / (1.0 - cx.p)) : T(1);
    const int64_t nkt = (S + BC - 1) / BC;
    const int64_t chunks = (N >= threads || nkt <= 1) ? 1 : std::min<int64_t>(threads, nkt);
    const int64_t items = N * chunks;
    const T* O = out.ptr<T>();
    const T* GO = gout.ptr<T>();
    const T* LSE = lse.ptr<T>();
    const int64_t os[3] = {out.strides[0], out.strides[1], out.strides[2]};
    const int64_t gs[3] = {gout.strides[0], gout.strides[1], gout.strides[2]};
    const int64_t ls[3] = {lse.strides[0], lse.strides[1], lse.strides[2]};
    T* GQ = gq.ptr<T>();
    T* GK = gk.ptr<T>();
    T* GV = gv.ptr<T>();
    // Shared scratch (master's slot k1), all O(L) per batch index:
    //   Di (N x Lp); per n: Q and dO as A panels (Lp x D, Lp x Dv) and, per query tile, as B panels
    //   ([BR][nr] per feature panel: BR x Dp, BR x Dvp); dQ accumulators (items x Lp x Dp).
    const int64_t per_n = Lp * D + Lp * Dv + Lp * Dp + Lp * Dvp;
    T* Di = thread_arena(ArenaSlot::k1).get_as<T>(static_cast<size_t>(N * Lp + N * per_n + items * Lp * Dp + 1));
    T* QS = Di + N * Lp;
    T* dQacc = QS + N * per_n;
    const int64_t work0 = N * nqt;
    const int np0 = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, work0)));
#pragma omp parallel for num_threads(np0) schedule(static)
    for (int64_t w = 0; w < work0; ++w) {
        const int64_t n = w / nqt, i0 = (w % nqt) * BR, r = std::min(BR, L - i0);
        const T* Q = cx.q + cx.off(cx.qs, n) + i0 * cx.qs[2];
        const T* G = GO + cx.off(gs, n) + i0 * gs[2];
        const T* Ov = O + cx.off(os, n) + i0 * os[2];
        T* base = QS + n * per_n;
        pack_a_rows(Q, cx.qs[2], r, D, mr, base + i0 * D);
        pack_a_rows(G, gs[2], r, Dv, mr, base + Lp * D + i0 * Dv);
        pack_b_rows(Q, cx.qs[2], r, D, nr, base + Lp * (D + Dv) + i0 * Dp);
        pack_b_rows(G, gs[2], r, Dv, nr, base + Lp * (D + Dv + Dp) + i0 * Dvp);
        if (r < BR) {  // zero rows of the B panels past L (pack_b_rows wrote K = r rows per panel)
            // re-pack with BR rows: rows past r are zero
            T* qb = base + Lp * (D + Dv) + i0 * Dp;
            T* gb = base + Lp * (D + Dv + Dp) + i0 * Dvp;
            for (int64_t p = (Dp / nr) - 1; p >= 0; --p) {
                std::memmove(qb + p * BR * nr, qb + p * r * nr, sizeof(T) * r * nr);
                std::fill(qb + p * BR * nr + r * nr, qb + (p + 1) * BR * nr, T(0));
            }
            for (int64_t p = (Dvp / nr) - 1; p >= 0; --p) {
                std::memmove(gb + p * BR * nr, gb + p * r * nr, sizeof(T) * r * nr);
                std::fill(gb + p * BR * nr + r * nr, gb + (p + 1) * BR * nr, T(0));
            }
        }
        for (int64_t i = 0; i < BR; ++i) {
            T acc = 0;
            if (i < r)
                for (int64_t d = 0; d < Dv; ++d) acc += Ov[i * os[2] + d] * G[i * gs[2] + d];
            Di[n * Lp + i0 + i] = acc;
        }
    }

    const int nt = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, items)));
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t it_ = 0; it_ < items; ++it_) {
        const int64_t n = it_ / chunks, chunk = it_ % chunks;
        const size_t tile = static_cast<size_t>(BR * BC);
        T* buf = thread_arena(ArenaSlot::k0).get_as<T>(
            6 * tile + static_cast<size_t>(detail::kGemmPackSlack + D * BC + Dv * BC + BC * Dp + BC * Dp + BC * Dvp));
        T* sb = buf;             // S, then P (BR x BC)
        T* dp = sb + tile;       // dP, then dS (BR x BC)
        T* pd = dp + tile;       // dropped P (dropout only)
        T* ptA = pd + tile;      // P^T (or dropped) as A panels: [r][mr] per mr keys
        T* dstA = ptA + tile;    // dS^T as A panels
        T* dsA = dstA + tile;    // dS as A panels: [c][mr] per mr queries
        T* kbt = dsA + tile + detail::kGemmPackSlack;  // K_j^T as B panels [D][nr keys]
        T* vbt = kbt + D * BC;   // V_j^T as B panels [Dv][nr keys]
        T* kb = vbt + Dv * BC;   // K_j as B panels [c][nr features]
        T* dka = kb + BC * Dp;   // dK_j accumulator (BC x Dp)
        T* dva = dka + BC * Dp;  // dV_j accumulator (BC x Dvp)
        const T* K = cx.k + cx.off(cx.ks, n);
        const T* V = cx.v + cx.off(cx.vs, n);
        const T* Ln = LSE + cx.off(ls, n);
        const T* Dn = Di + n * Lp;
        const T* base = QS + n * per_n;
        const T* Qa = base;
        const T* Ga = base + Lp * D;
        const T* Qb = base + Lp * (D + Dv);
        const T* Gb = base + Lp * (D + Dv + Dp);
        T* dQ = dQacc + it_ * Lp * Dp;
        std::fill(dQ, dQ + Lp * Dp, T(0));
        int64_t k_lo, k_hi;
        cx.key_span(n, k_lo, k_hi);
        for (int64_t jt = chunk; jt < nkt; jt += chunks) {
            const int64_t j0 = jt * BC, c = std::min(BC, k_hi - j0);
            if (c <= 0 || j0 + BC <= k_lo) {  // no key of this tile takes part: zero gradients
                const int64_t cz = std::min(BC, S - j0);
                std::fill(GK + n * S * D + j0 * D, GK + n * S * D + (j0 + cz) * D, T(0));
                std::fill(GV + n * S * Dv + j0 * Dv, GV + n * S * Dv + (j0 + cz) * Dv, T(0));
                continue;
            }
            if (c < std::min(BC, S - j0)) {  // the tile's keys past k_hi
                std::fill(GK + n * S * D + (j0 + c) * D, GK + n * S * D + std::min(S, j0 + BC) * D, T(0));
                std::fill(GV + n * S * Dv + (j0 + c) * Dv, GV + n * S * Dv + std::min(S, j0 + BC) * Dv, T(0));
            }
            const int64_t cp = (c + nr - 1) / nr * nr;  // keys padded to nr
            const int64_t ckt = (c + mr - 1) / mr;      // key row tiles
            const T* Kj = K + j0 * cx.ks[2];
            const T* Vj = V + j0 * cx.vs[2];
            ki.pack_b(D, c, Kj, 1, cx.ks[2], kbt, 0, cp / nr);    // K_j^T: [D][nr keys] panels
            ki.pack_b(Dv, c, Vj, 1, cx.vs[2], vbt, 0, cp / nr);   // V_j^T
            ki.pack_b(c, D, Kj, cx.ks[2], 1, kb, 0, Dp / nr);     // K_j: [c][nr features] panels
            std::fill(dka, dka + BC * Dp, T(0));
            std::fill(dva, dva + BC * Dvp, T(0));
            const int64_t i_start = cx.causal ? (j0 / BR) * BR : 0;
            for (int64_t i0 = i_start; i0 < L; i0 += BR) {
                const int64_t r = std::min(BR, L - i0), rt = (r + mr - 1) / mr, qt = i0 / BR;
                // S = scale log2(e) Q_i K_j^T, dP = dO_i V_j^T (r rounded up to mr, c up to nr). Every GEMM here
                // runs B-panel-outer: the panel stays in L1 while the A strips stream (5% of the backward at L = 2048)
                for (int64_t b = 0; b < cp / nr; ++b)
                    for (int64_t a = 0; a < rt; ++a)
                        ki.ukernel(D, Qa + (i0 + a * mr) * D, kbt + b * D * nr, ki.nr, sb + a * mr * BC + b * nr, BC, 1,
                                   cx.scale2, T(0));
                for (int64_t b = 0; b < cp / nr; ++b)
                    for (int64_t a = 0; a < rt; ++a)
                        ki.ukernel(Dv, Ga + (i0 + a * mr) * Dv, vbt + b * Dv * nr, ki.nr, dp + a * mr * BC + b * nr, BC, 1,
                                   T(1), T(0));
                apply_mask(cx, n, i0, r, j0, c, sb, BC, 1);
                for (int64_t ii = 0; ii < r; ++ii) {
                    const T lv = Ln[(i0 + ii) * ls[2]];
                    T* s_ = sb + ii * BC;
                    if (lv == ninf) std::fill(s_, s_ + c, T(0));
                    else  // P = 2^(S - lse log2 e)
                        kern.exp2_sub_sum(s_, c, static_cast<T>(static_cast<double>(lv) * kLog2e));
                    std::fill(s_ + c, s_ + cp, T(0));
                }
                const T* pv = sb;
                if (cx.p > 0) {
                    for (int64_t ii = 0; ii < r; ++ii) {
                        const uint64_t bidx = static_cast<uint64_t>((n * L + i0 + ii) * S + j0);
                        for (int64_t jj = 0; jj < c; ++jj) {
                            const bool kp = keep_elem(cx.seed, bidx + jj, cx.p);
                            pd[ii * BC + jj] = kp ? sb[ii * BC + jj] * inv_keep : T(0);
                            dp[ii * BC + jj] = kp ? dp[ii * BC + jj] * inv_keep : T(0);
                        }
                    }
                    pv = pd;
                }
                // dS = P o (dP - Di) (rows < r, keys < c; the rest 0)
                for (int64_t ii = 0; ii < r; ++ii) {
                    const T di = Dn[i0 + ii];
                    const T* prow = sb + ii * BC;
                    T* drow = dp + ii * BC;
                    for (int64_t jj = 0; jj < c; ++jj) drow[jj] = prow[jj] * (drow[jj] - di);
                }
                // A panels: P^T and dS^T ([r][mr] per mr keys; not needed where the micro-kernel reads A in place:
                // a strip of mr keys of P^T is mr contiguous values of each row of P), dS ([c][mr] per mr queries)
                const bool in_place = ki.ukernel_strided_a != nullptr;
                for (int64_t kt = 0; kt < (in_place ? 0 : ckt); ++kt) {
                    const int64_t w = std::min(mr, c - kt * mr);
                    T* pa = ptA + kt * mr * r;
                    T* da = dstA + kt * mr * r;
                    for (int64_t ii = 0; ii < r; ++ii) {
                        const T* prow = pv + ii * BC + kt * mr;
                        const T* drow = dp + ii * BC + kt * mr;
                        int64_t j = 0;
                        for (; j < w; ++j) {
                            pa[ii * mr + j] = prow[j];
                            da[ii * mr + j] = drow[j];
                        }
                        for (; j < mr; ++j) pa[ii * mr + j] = da[ii * mr + j] = T(0);
                    }
                }
                ki.pack_a(r, c, dp, BC, 1, dsA);  // (may write kGemmPackSlack past its end: kbt follows after a gap)
                // dV_j += P^T dO_i ; dK_j += scale dS^T Q_i  (k = r query rows)
                // (In place, a last partial strip reads keys past c: their rows of dV_j / dK_j are never copied out.)
                const T* pta = in_place ? pv : ptA;
                const T* dsta = in_place ? dp : dstA;
                const int64_t lda = in_place ? BC : mr, sa = in_place ? mr : mr * r;  // A stride, strip offset
                for (int64_t b = 0; b < Dvp / nr; ++b)
                    for (int64_t kt = 0; kt < ckt; ++kt)
                        gemm_a(ki, r, pta + kt * sa, lda, Gb + qt * BR * Dvp + b * BR * nr, dva + kt * mr * Dvp + b * nr,
                               Dvp, T(1), T(1));
                for (int64_t b = 0; b < Dp / nr; ++b)
                    for (int64_t kt = 0; kt < ckt; ++kt)
                        gemm_a(ki, r, dsta + kt * sa, lda, Qb + qt * BR * Dp + b * BR * nr, dka + kt * mr * Dp + b * nr,
                               Dp, cx.scale, T(1));
                // dQ_i += scale dS K_j  (k = c keys)
                for (int64_t b = 0; b < Dp / nr; ++b)
                    for (int64_t a = 0; a < rt; ++a)
                        ki.ukernel(c, dsA + a * mr * c, kb + b * c * nr, ki.nr, dQ + (i0 + a * mr) * Dp + b * nr, Dp, 1, cx.scale,
                                   T(1));
            }
            T* dK = GK + n * S * D + j0 * D;
            T* dV = GV + n * S * Dv + j0 * Dv;
            for (int64_t kk = 0; kk < c; ++kk) {
                std::memcpy(dK + kk * D, dka + kk * Dp, sizeof(T) * D);
                std::memcpy(dV + kk * Dv, dva + kk * Dvp, sizeof(T) * Dv);
            }
        }
    }
    // dQ: the sum of the chunks' accumulators in a fixed order (deterministic)
    const int ntr = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(threads, N * L / 64)));
#pragma omp parallel for num_threads(ntr) schedule(static)
    for (int64_t nl = 0; nl < N * L; ++nl) {
        const int64_t n = nl / L, i = nl % L;
        T* dst = GQ + nl * D;
        const T* src = dQacc + (n * chunks) * Lp * Dp + i * Dp;
        for (int64_t d = 0; d < D; ++d) dst[d] = src[d];
        for (int64_t ch = 1; ch < chunks; ++ch) {
            const T* s2 = dQacc + (n * chunks + ch) * Lp * Dp + i * Dp;
            for (int64_t d = 0; d < D; ++d) dst[d] += s2[d];
        }
    }
}

template <typename T>
Ctx<T> make_ctx(const View& q, const View& k, const View& v, const AttentionMask& mask, const AttentionParams& p) {
    Ctx<T> cx;
    cx.B1 = q.shape[0];
    cx.B2 = q.shape[1];
    cx.L = q.shape[2];
    cx.D = q.shape[3];
    cx.S = k.shape[2];
    cx.Dv = v.shape[3];
    cx.q = q.ptr<T>();
    cx.k = k.ptr<T>();
    cx.v = v.ptr<T>();
    for (int d = 0; d < 3; ++d) {
        cx.qs[d] = q.strides[d];
        cx.ks[d] = k.strides[d];
        cx.vs[d] = v.strides[d];
    }
    cx.mask = &mask;
    cx.scale = std::isnan(p.scale) ? T(1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(1, cx.D))))
                                   : static_cast<T>(p.scale);
    cx.scale2 = static_cast<T>(static_cast<double>(cx.scale) * kLog2e);
    cx.causal = p.is_causal;
    cx.p = p.dropout_p;
    cx.seed = p.seed;
    return cx;
}

void check_inputs(const View& q, const View& k, const View& v, const AttentionMask& mask, const AttentionParams& p) {
    detail::sdpa_check_inputs(q, k, v, mask, p);
    if (q.dtype != DType::f32 && q.dtype != DType::f64)
        throw DTypeError(std::string("scaled_dot_product_attention: unsupported dtype ") + dtype_name(q.dtype));
}

}  // namespace

void sdpa_forward(const View& q, const View& k, const View& v, const AttentionMask& mask, const AttentionParams& p,
                  const View& out, const View& lse) {
    check_inputs(q, k, v, mask, p);
    detail::sdpa_check_outputs(q, v, out, lse, q.dtype);
    if (q.dtype == DType::f32)
        forward_impl<float>(make_ctx<float>(q, k, v, mask, p), out, lse);
    else
        forward_impl<double>(make_ctx<double>(q, k, v, mask, p), out, lse);
}

void sdpa_backward(const View& q, const View& k, const View& v, const AttentionMask& mask, const AttentionParams& p,
                   const View& out, const View& lse, const View& grad_out, const View& grad_q, const View& grad_k,
                   const View& grad_v) {
    check_inputs(q, k, v, mask, p);
    detail::sdpa_check_backward(q, k, v, out, lse, grad_out, grad_q, grad_k, grad_v, q.dtype);
    if (q.dtype == DType::f32)
        backward_impl<float>(make_ctx<float>(q, k, v, mask, p), out, lse, grad_out, grad_q, grad_k, grad_v);
    else
        backward_impl<double>(make_ctx<double>(q, k, v, mask, p), out, lse, grad_out, grad_q, grad_k, grad_v);
}

}  // namespace layerforge
