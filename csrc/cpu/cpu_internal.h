// Internal helpers shared by the CPU kernel files (not part of the public C++ API).
#pragma once
#include <cstddef>
#include <cstdint>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <new>

#ifndef LAYERFORGE_HAVE_AVX2_BUILD
#define LAYERFORGE_HAVE_AVX2_BUILD 0
#endif

namespace layerforge {
namespace detail {

// ---- GEMM micro-kernels -------------------------------------------------------------------------
// A micro-kernel multiplies a packed MR x k panel of A (layout [k][MR]) by a k x NR panel of B whose
// row p is the NR contiguous values at b + p * rs_b (rs_b == NR for a packed panel; the row stride of B
// itself when B is read in place), and writes the full MR x NR tile: C = alpha * (A B) + beta * C, where
// C(i, j) is at c[i * rs_c + j * cs_c]; beta == 0 never reads C.
template <typename T>
using GemmMicroKernel = void (*)(int64_t k, const T* a, const T* b, int64_t rs_b, T* c, int64_t rs_c,
                                 int64_t cs_c, T alpha, T beta);
// The first m < MR rows of a tile, row-major C (cs_c == 1), all NR columns: a batch of 32 rows leaves a last
// panel of 2 rows, where the full kernel would spend 3x the multiplies on the packed A's zero rows.
template <typename T>
using GemmRowsKernel = void (*)(int m, int64_t k, const T* a, const T* b, int64_t rs_b, T* c, int64_t rs_c,
                                T alpha, T beta);
// The micro-kernel with A read in place: A(i, p) at a[p * lda + i] (the packed panel is lda == MR).
template <typename T>
using GemmStridedAKernel = void (*)(int64_t k, const T* a, int64_t lda, const T* b, int64_t rs_b, T* c, int64_t rs_c,
                                    int64_t cs_c, T alpha, T beta);
// Elements of slack a packed-A buffer needs past its end (vector stores of the packing may spill).
constexpr int64_t kGemmPackSlack = 16;
// Packing of A blocks (mc x kc -> MR-row panels) and of B panels [begin, end) (kc x nc -> NR-column
// panels); see gemm_pack.h.
template <typename T>
using GemmPackA = void (*)(int64_t mc, int64_t kc, const T* A, int64_t rs, int64_t cs, T* Ap);
template <typename T>
using GemmPackB = void (*)(int64_t kc, int64_t nc, const T* B, int64_t rs, int64_t cs, T* Bp,
                           int64_t panel_begin, int64_t panel_end);

// One code path: register tile MR x NR; cache blocks MC (rows of A in L2), KC (depth), NC (columns of
// B in L3); its micro-kernel and packing routines.
template <typename T>
struct GemmKernelInfo {
    int mr, nr;
    int64_t mc, kc, nc;
    GemmMicroKernel<T> ukernel;
    GemmPackA<T> pack_a;
    GemmPackB<T> pack_b;
    GemmRowsKernel<T> ukernel_rows = nullptr;  // null: partial row panels run the full kernel
    GemmStridedAKernel<T> ukernel_strided_a = nullptr;  // null: callers pack A
};

// C = alpha A B + beta C for the first `rows` (<= MR) rows of a packed A panel and NR columns of B, C
// row-major: the rows kernel where the path has one, else the full kernel, which writes all MR rows (so
// c must have room for MR rows).
template <typename T>
inline void gemm_tile_rows(const GemmKernelInfo<T>& ki, int rows, int64_t k, const T* a, const T* b, int64_t rs_b,
                           T* c, int64_t rs_c, T alpha, T beta) {
    if (rows < ki.mr && ki.ukernel_rows)
        ki.ukernel_rows(rows, k, a, b, rs_b, c, rs_c, alpha, beta);
    else
        ki.ukernel(k, a, b, rs_b, c, rs_c, 1, alpha, beta);
}

// LAYERFORGE_GEMM_BLOCKING="MC,KC,NC" overrides a path's cache blocking (a tuning knob for other CPUs;
// MC is rounded to a multiple of MR and NC to a multiple of NR).
// (static: used by ISA-specific files; see the note on linkage in gemm_pack.h.)
template <typename T>
static GemmKernelInfo<T> blocking_from_env(GemmKernelInfo<T> info) {
    const char* env = std::getenv("LAYERFORGE_GEMM_BLOCKING");
    long long mc = 0, kc = 0, nc = 0;
    if (env && std::sscanf(env, "%lld,%lld,%lld", &mc, &kc, &nc) == 3 && mc > 0 && kc > 0 && nc > 0) {
        info.mc = std::max<int64_t>(info.mr, mc / info.mr * info.mr);
        info.kc = kc;
        info.nc = std::max<int64_t>(info.nr, nc / info.nr * info.nr);
    }
    return info;
}

template <typename T>
const GemmKernelInfo<T>& gemm_kernel_generic();
template <>
const GemmKernelInfo<float>& gemm_kernel_generic<float>();
template <>
const GemmKernelInfo<double>& gemm_kernel_generic<double>();
#if LAYERFORGE_HAVE_AVX2_BUILD
template <typename T>
const GemmKernelInfo<T>& gemm_kernel_avx2();
template <>
const GemmKernelInfo<float>& gemm_kernel_avx2<float>();
template <>
const GemmKernelInfo<double>& gemm_kernel_avx2<double>();
#endif
// The kernel of the current CPU path.
template <typename T>
const GemmKernelInfo<T>& gemm_kernel_current();

// ---- peak-FLOP probes: run `iters` rounds of independent FMAs, return the FLOPs done ----------------
double fma_probe_generic(int64_t iters);
#if LAYERFORGE_HAVE_AVX2_BUILD
double fma_probe_avx2(int64_t iters);
#else
inline double fma_probe_avx2(int64_t iters) { return fma_probe_generic(iters); }
#endif

// ---- workspace ------------------------------------------------------------------------------------
// A growable, 64-byte aligned scratch buffer that is kept between calls (per thread where it is
// thread_local), so hot kernels do not malloc/free multi-MB buffers on every call.
class Arena {
public:
    Arena() = default;
    Arena(const Arena&) = delete;
    Arena& operator=(const Arena&) = delete;
    ~Arena() { std::free(ptr_); }
    void* get(size_t bytes) {
        if (bytes > cap_) {
            std::free(ptr_);
            cap_ = (bytes + 63) / 64 * 64;
            ptr_ = std::aligned_alloc(64, cap_);
            if (!ptr_) {
                cap_ = 0;
                throw std::bad_alloc();
            }
        }
        return ptr_;
    }
    template <typename T>
    T* get_as(size_t count) { return static_cast<T*>(get(count * sizeof(T))); }

private:
    void* ptr_ = nullptr;
    size_t cap_ = 0;
};

// Named per-thread arenas; different users on one thread use different slots so they never alias.
enum class ArenaSlot : int { gemm_a = 0, gemm_b = 1, k0 = 2, k1 = 3, k2 = 4, k3 = 5, count = 6 };
Arena& thread_arena(ArenaSlot slot);

}  // namespace detail
}  // namespace layerforge
