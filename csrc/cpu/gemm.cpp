// CPU GEMM in the BLIS/GotoBLAS style, and numpy-style batched matmul on top of it.
//
// Loop nest (one thread's view):
//   for jc in N by NC:                B block  K x NC
//     for pc in K by KC:              pack B[pc:pc+KC, jc:jc+NC] -> Bp   (shared by all threads, in L3)
//       for ic in M by MC:            pack A[ic:ic+MC, pc:pc+KC] -> Ap   (per thread, in L2)
//         for jr in NC by NR:         Bp micro-panel (KC x NR, in L1)
//           for ir in MC by MR:       micro-kernel: MR x NR tile of C in registers
// Threads: every thread packs a share of the B panels, then the (M, NC) area is split into a tm x tn grid
// of thread tiles (tm * tn = threads). Large M splits M (each thread packs only its own A rows); small M
// (e.g. a batch of 32 rows) splits the NR panels so both cores stay busy, each thread packing the few A
// rows itself. Edge tiles are computed into a small local tile and copied out, so only the last tile in
// each direction takes the (cheap) edge path.
#include "layerforge/gemm.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "layerforge/matmul_batch.h"
#include "layerforge/runtime.h"
#include "cpu_internal.h"
#include "gemm_pack.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace layerforge {
namespace detail {

Arena& thread_arena(ArenaSlot slot) {
    thread_local Arena arenas[static_cast<int>(ArenaSlot::count)];
    return arenas[static_cast<int>(slot)];
}

// ---- portable micro-kernel: plain loops the compiler vectorises for the baseline ISA --------------
template <typename T, int MR, int NR>
static void ukernel_generic(int64_t k, const T* a, const T* b, int64_t rs_b, T* c, int64_t rs_c,
                            int64_t cs_c, T alpha, T beta) {
    T acc[MR][NR] = {};
    for (int64_t p = 0; p < k; ++p) {
        for (int i = 0; i < MR; ++i) {
            const T ai = a[p * MR + i];
            for (int j = 0; j < NR; ++j) acc[i][j] += ai * b[p * rs_b + j];
        }
    }
    for (int i = 0; i < MR; ++i) {
        for (int j = 0; j < NR; ++j) {
            T& cij = c[i * rs_c + j * cs_c];
            cij = beta == T(0) ? alpha * acc[i][j] : alpha * acc[i][j] + beta * cij;
        }
    }
}

template <>
const GemmKernelInfo<float>& gemm_kernel_generic<float>() {
    static const GemmKernelInfo<float> info{4, 8, 128, 256, 2048, &ukernel_generic<float, 4, 8>,
                                            &pack_a_tiles<float, 4>, &pack_b_tiles<float, 8>};
    return info;
}
template <>
const GemmKernelInfo<double>& gemm_kernel_generic<double>() {
    static const GemmKernelInfo<double> info{4, 4, 96, 256, 1024, &ukernel_generic<double, 4, 4>,
                                             &pack_a_tiles<double, 4>, &pack_b_tiles<double, 4>};
    return info;
}

template <typename T>
const GemmKernelInfo<T>& gemm_kernel_current() {
#if LAYERFORGE_HAVE_AVX2_BUILD
    if (cpu_path() == CpuPath::avx2) return gemm_kernel_avx2<T>();
#endif
    return gemm_kernel_generic<T>();
}
template const GemmKernelInfo<float>& gemm_kernel_current<float>();
template const GemmKernelInfo<double>& gemm_kernel_current<double>();

double fma_probe_generic(int64_t iters) {
    float acc[32];
    for (int i = 0; i < 32; ++i) acc[i] = 1.0f + 1e-7f * static_cast<float>(i);
    const float m = 0.9999999f, add = 1e-8f;
    for (int64_t it = 0; it < iters; ++it)
        for (int i = 0; i < 32; ++i) acc[i] = acc[i] * m + add;
    volatile float sink = 0;
    for (int i = 0; i < 32; ++i) sink = sink + acc[i];
    (void)sink;
    return 2.0 * 32.0 * static_cast<double>(iters);
}

}  // namespace detail

namespace {

using detail::GemmKernelInfo;

// C = beta * C for the K == 0 case (and beta == 0 writes zeros without reading C).
template <typename T>
void scale_c(int64_t M, int64_t N, T beta, T* C, int64_t rs_c, int64_t cs_c) {
    for (int64_t i = 0; i < M; ++i)
        for (int64_t j = 0; j < N; ++j) {
            T& c = C[i * rs_c + j * cs_c];
            c = beta == T(0) ? T(0) : beta * c;
        }
}

// One MR x NR tile, full or edge (m <= MR, n <= NR).
template <typename T>
inline void run_tile(const GemmKernelInfo<T>& ki, int64_t kc, const T* ap, const T* bp, int64_t rs_bp,
                     T* c, int64_t rs_c, int64_t cs_c, int m, int n, T alpha, T beta) {
    if (m == ki.mr && n == ki.nr) {
        ki.ukernel(kc, ap, bp, rs_bp, c, rs_c, cs_c, alpha, beta);
        return;
    }
    if (n == ki.nr && cs_c == 1 && ki.ukernel_rows) {  // a partial row panel (a batch of 32: 2 rows)
        ki.ukernel_rows(m, kc, ap, bp, rs_bp, c, rs_c, alpha, beta);
        return;
    }
    alignas(64) T tile[16 * 32];  // MR x NR <= 16 x 32 on every path
    ki.ukernel(kc, ap, bp, rs_bp, tile, ki.nr, 1, T(1), T(0));
    for (int i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j) {
            T& cij = c[i * rs_c + j * cs_c];
            const T v = alpha * tile[i * ki.nr + j];
            cij = beta == T(0) ? v : v + beta * cij;
        }
}

// A panels at most for which B is read in place instead of packed (see gemm_impl).
constexpr int64_t kDirectBMaxPanels = 8;

// Split a range of `units` work units into `parts` nearly equal contiguous pieces; piece `idx`.
inline void split_range(int64_t units, int parts, int idx, int64_t& begin, int64_t& end) {
    const int64_t base = units / parts, rem = units % parts;
    begin = idx * base + std::min<int64_t>(idx, rem);
    end = begin + base + (idx < rem ? 1 : 0);
}

// Choose a tm x tn thread grid for an M x N problem: least padded tiles on the busiest thread. Ties go
// to the larger tm (each thread then packs fewer A rows), or, when B is read in place (prefer_n), to the
// larger tn (each thread then streams only its share of B).
inline void choose_grid(int64_t m_panels, int64_t n_panels, int nthreads, bool prefer_n, int& tm, int& tn) {
    int64_t best = INT64_MAX;
    tm = 1;
    tn = nthreads;
    for (int cand_tm = 1; cand_tm <= nthreads; ++cand_tm) {
        if (nthreads % cand_tm) continue;
        const int cand_tn = nthreads / cand_tm;
        const int64_t load = ((m_panels + cand_tm - 1) / cand_tm) * ((n_panels + cand_tn - 1) / cand_tn);
        if (load < best || (load == best && !prefer_n)) {
            best = load;
            tm = cand_tm;
            tn = cand_tn;
        }
    }
}

template <typename T>
void gemm_impl(int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t rs_a, int64_t cs_a,
               const T* B, int64_t rs_b, int64_t cs_b, T beta, T* C, int64_t rs_c, int64_t cs_c,
               int nthreads) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == T(0)) {
        scale_c(M, N, beta, C, rs_c, cs_c);
        return;
    }
    const GemmKernelInfo<T>& ki = detail::gemm_kernel_current<T>();
    const int mr = ki.mr, nr = ki.nr;
    // Depth blocks of equal size (784 -> 4 x 196, not 3 x 256 + 16): a thin last block would pay a full
    // C read/write per tile for little work.
    const int64_t k_blocks = (K + ki.kc - 1) / ki.kc;
    const int64_t KC = (K + k_blocks - 1) / k_blocks, MC = ki.mc, NC = ki.nc;

    if (nthreads <= 0) nthreads = get_num_threads();
    // Below ~2 MFLOP the fork/join costs more than a second thread gains.
    if (2.0 * static_cast<double>(M) * N * K < 2.0e6) nthreads = 1;
    const int64_t m_panels_total = (M + mr - 1) / mr;
    const int64_t n_panels_max = (std::min(N, NC) + nr - 1) / nr;
    nthreads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nthreads, m_panels_total * n_panels_max)));

    // Few rows of A (a batch of 32, say) and rows of B contiguous: the micro-kernel reads full B panels
    // in place. Each B panel then serves only a few A panels, so a packing pass over all of K x N would
    // cost about as much memory traffic as the multiply itself.
    const bool direct_b = cs_b == 1 && M <= kDirectBMaxPanels * mr;
    const int64_t kc_max = std::min(K, KC);
    T* Bp = nullptr;
    if (!direct_b)
        Bp = detail::thread_arena(detail::ArenaSlot::gemm_b)
                 .get_as<T>(static_cast<size_t>(n_panels_max * nr * kc_max));

    auto body = [&](int tid, int nt) {
        T* Ap = detail::thread_arena(detail::ArenaSlot::gemm_a)
                    .get_as<T>(static_cast<size_t>(((std::min(M, MC) + mr - 1) / mr) * mr * kc_max +
                                                detail::kGemmPackSlack));
        // direct_b: this thread's packed copy of a partial last B panel.
        T* Bedge = direct_b ? detail::thread_arena(detail::ArenaSlot::gemm_b)
                                  .get_as<T>(static_cast<size_t>(nr * kc_max))
                            : nullptr;
        for (int64_t jc = 0; jc < N; jc += NC) {
            const int64_t nc = std::min(NC, N - jc);
            const int64_t n_panels = (nc + nr - 1) / nr;
            int tm, tn;
            choose_grid(m_panels_total, n_panels, nt, direct_b, tm, tn);
            const int ti = tid / tn, tj = tid % tn;
            int64_t mp0, mp1, np0, np1;
            split_range(m_panels_total, tm, ti, mp0, mp1);
            split_range(n_panels, tn, tj, np0, np1);
            const int64_t m_begin = mp0 * mr, m_end = std::min(M, mp1 * mr);
            const bool owns_edge = direct_b && np1 == n_panels && nc % nr != 0;

            for (int64_t pc = 0; pc < K; pc += KC) {
                const int64_t kc = std::min(KC, K - pc);
                const T beta_eff = pc == 0 ? beta : T(1);
                const T* Bblock = B + pc * rs_b + jc * cs_b;
                if (!direct_b) {  // every thread packs a share of the B panels
                    int64_t b0, b1;
                    split_range(n_panels, nt, tid, b0, b1);
                    ki.pack_b(kc, nc, Bblock, rs_b, cs_b, Bp, b0, b1);
#ifdef _OPENMP
                    if (nt > 1) {
#pragma omp barrier
                    }
#endif
                } else if (owns_edge) {
                    ki.pack_b(kc, nc - (n_panels - 1) * nr, Bblock + (n_panels - 1) * nr, rs_b, 1, Bedge, 0, 1);
                }
                for (int64_t ic = m_begin; ic < m_end; ic += MC) {
                    const int64_t mc = std::min(MC, m_end - ic);
                    ki.pack_a(mc, kc, A + ic * rs_a + pc * cs_a, rs_a, cs_a, Ap);
                    for (int64_t jp = np0; jp < np1; ++jp) {
                        const int64_t j0 = jp * nr;
                        const int n = static_cast<int>(std::min<int64_t>(nr, nc - j0));
                        const T* bp;
                        int64_t rs_bp;
                        if (!direct_b) {
                            bp = Bp + j0 * kc;
                            rs_bp = nr;
                        } else if (n == nr) {
                            bp = Bblock + j0;
                            rs_bp = rs_b;
                        } else {
                            bp = Bedge;
                            rs_bp = nr;
                        }
                        for (int64_t i0 = 0; i0 < mc; i0 += mr) {
                            const int m = static_cast<int>(std::min<int64_t>(mr, mc - i0));
                            T* c = C + (ic + i0) * rs_c + (jc + j0) * cs_c;
                            run_tile(ki, kc, Ap + i0 * kc, bp, rs_bp, c, rs_c, cs_c, m, n, alpha, beta_eff);
                        }
                    }
                }
#ifdef _OPENMP
                if (!direct_b && nt > 1) {
#pragma omp barrier
                }
#endif
            }
        }
    };

#ifdef _OPENMP
    if (nthreads > 1) {
#pragma omp parallel num_threads(nthreads)
        body(omp_get_thread_num(), omp_get_num_threads());
        return;
    }
#endif
    body(0, 1);
}

}  // namespace

template <typename T>
void gemm_strided(int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t rs_a, int64_t cs_a,
                  const T* B, int64_t rs_b, int64_t cs_b, T beta, T* C, int64_t rs_c, int64_t cs_c,
                  int nthreads) {
    if (M < 0 || N < 0 || K < 0)
        throw ValueError("gemm: negative size M=" + std::to_string(M) + " N=" + std::to_string(N) +
                         " K=" + std::to_string(K));
    gemm_impl<T>(M, N, K, alpha, A, rs_a, cs_a, B, rs_b, cs_b, beta, C, rs_c, cs_c, nthreads);
}

template void gemm_strided<float>(int64_t, int64_t, int64_t, float, const float*, int64_t, int64_t,
                                  const float*, int64_t, int64_t, float, float*, int64_t, int64_t, int);
template void gemm_strided<double>(int64_t, int64_t, int64_t, double, const double*, int64_t, int64_t,
                                   const double*, int64_t, int64_t, double, double*, int64_t, int64_t,
                                   int);

// ---- numpy-style batched matmul -------------------------------------------------------------------
namespace {

template <typename T>
void matmul_typed(const MatmulBatch& mb, const View& a, const View& b, const View& out) {
    const int64_t M = mb.M, N = mb.N, K = mb.K;
    const int64_t batch = mb.count();
    if (batch == 0 || M == 0 || N == 0) return;

    const T* pa = a.ptr<T>();
    const T* pb = b.ptr<T>();
    T* pc = out.ptr<T>();
    const int64_t rsa = a.stride(-2), csa = a.stride(-1), rsb = b.stride(-2), csb = b.stride(-1);
    const int64_t rsc = out.stride(-2), csc = out.stride(-1);

    const int threads = get_num_threads();
    const double flops_each = 2.0 * static_cast<double>(M) * N * K;
    // Many small products: one product per thread (each single-threaded) keeps every core busy without
    // a fork/join per product. Large products: threads inside each GEMM.
    const bool per_item = threads > 1 && batch >= threads && flops_each < 8.0e6;
    if (per_item) {
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static)
#endif
        for (int64_t i = 0; i < batch; ++i) {
            int64_t oa, ob, oc;
            mb.offsets(i, oa, ob, oc);
            gemm_impl<T>(M, N, K, T(1), pa + oa, rsa, csa, pb + ob, rsb, csb, T(0), pc + oc, rsc, csc, 1);
        }
        return;
    }
    for (int64_t i = 0; i < batch; ++i) {
        int64_t oa, ob, oc;
        mb.offsets(i, oa, ob, oc);
        gemm_impl<T>(M, N, K, T(1), pa + oa, rsa, csa, pb + ob, rsb, csb, T(0), pc + oc, rsc, csc, threads);
    }
}

}  // namespace

void matmul(const View& a, const View& b, const View& out) {
    MatmulBatch mb = matmul_batch(a, b, out);  // validates shapes and dtypes (shared with CUDA)
    mb.collapse();  // fewer dims to walk per product; the same offsets
    switch (a.dtype) {
        case DType::f32: matmul_typed<float>(mb, a, b, out); break;
        case DType::f64: matmul_typed<double>(mb, a, b, out); break;
        default:
            throw DTypeError(std::string("matmul: unsupported dtype ") + dtype_name(a.dtype) +
                             " (float32 and float64 are supported)");
    }
}

}  // namespace layerforge
