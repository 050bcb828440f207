// Packing routines of the GEMM, templated on the register tile so each code path gets copies compiled
// for its own ISA (included by gemm.cpp for the generic path and gemm_avx2.cpp for AVX2).
#pragma once
#include <algorithm>
#include <cstdint>

namespace layerforge {
namespace detail {
// Internal linkage on purpose: these templates are compiled into both the generic and the AVX2 files; a
// shared (COMDAT) instantiation could let the linker hand the generic path an AVX2-compiled copy.
namespace {

// Pack rows [0, mc) x depth [0, kc) of A (A(i, p) = A[i * rs + p * cs]) into MR-row micro-panels,
// layout Ap[panel][p][MR]; rows past mc are zero so the micro-kernel needs no edge case.
template <typename T, int MR>
void pack_a_tiles(int64_t mc, int64_t kc, const T* A, int64_t rs, int64_t cs, T* Ap) {
    for (int64_t i0 = 0; i0 < mc; i0 += MR) {
        const int rows = static_cast<int>(std::min<int64_t>(MR, mc - i0));
        T* dst = Ap + i0 * kc;
        if (rs == 1 && rows == MR) {  // columns of A contiguous (A transposed in memory)
            for (int64_t p = 0; p < kc; ++p) {
                const T* src = A + i0 + p * cs;
                for (int r = 0; r < MR; ++r) dst[p * MR + r] = src[r];
            }
        } else if (cs == 1 && rows == MR) {  // rows of A contiguous: MR row streams, interleaved
            const T* src[MR];
            for (int r = 0; r < MR; ++r) src[r] = A + (i0 + r) * rs;
            for (int64_t p = 0; p < kc; ++p)
                for (int r = 0; r < MR; ++r) dst[p * MR + r] = src[r][p];
        } else {
            for (int64_t p = 0; p < kc; ++p) {
                for (int r = 0; r < rows; ++r) dst[p * MR + r] = A[(i0 + r) * rs + p * cs];
                for (int r = rows; r < MR; ++r) dst[p * MR + r] = T(0);
            }
        }
    }
}

// Pack NR-column micro-panels [panel_begin, panel_end) of B (depth kc, width nc; B(p, j) = B[p * rs +
// j * cs]) into Bp[panel][p][NR]; columns past nc are zero.
template <typename T, int NR>
void pack_b_tiles(int64_t kc, int64_t nc, const T* B, int64_t rs, int64_t cs, T* Bp,
                  int64_t panel_begin, int64_t panel_end) {
    for (int64_t jp = panel_begin; jp < panel_end; ++jp) {
        const int64_t j0 = jp * NR;
        const int cols = static_cast<int>(std::min<int64_t>(NR, nc - j0));
        T* dst = Bp + j0 * kc;
        if (cs == 1 && cols == NR) {  // rows of B contiguous: copy NR values per depth step
            for (int64_t p = 0; p < kc; ++p) {
                const T* src = B + p * rs + j0;
                for (int c = 0; c < NR; ++c) dst[p * NR + c] = src[c];
            }
        } else if (rs == 1 && cols == NR) {  // columns of B contiguous (B transposed in memory)
            const T* src[NR];
            for (int c = 0; c < NR; ++c) src[c] = B + (j0 + c) * cs;
            for (int64_t p = 0; p < kc; ++p)
                for (int c = 0; c < NR; ++c) dst[p * NR + c] = src[c][p];
        } else {
            for (int64_t p = 0; p < kc; ++p) {
                for (int c = 0; c < cols; ++c) dst[p * NR + c] = B[p * rs + (j0 + c) * cs];
                for (int c = cols; c < NR; ++c) dst[p * NR + c] = T(0);
            }
        }
    }
}

}  // namespace
}  // namespace detail
}  // namespace layerforge
