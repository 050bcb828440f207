// 2-d convolution on CUDA (layerforge/conv.h, namespace layerforge::cuda): implicit GEMM for the forward
// pass, grad_x and grad_weight, direct kernels for depthwise convolution, deterministic split reductions.
//
// The implicit GEMM (one kernel body, `gemm_mainloop`, three operand gatherers):
//   forward   C (N*P*Q x Kg)   = A (N*P*Q x Cg*R*S) @ B (Cg*R*S x Kg)   A gathered from x, B = weight^T
//   grad_x    C (N*H*W x Cg)   = A (N*H*W x Kg*R*S) @ B (Kg*R*S x Cg)   A gathered from grad_out (the
//             transposed convolution: taps flipped, stride turned into a divisibility test), B = weight
//   grad_w    C (Cg*R*S x Kg)  = A (Cg*R*S x N*P*Q) @ B (N*P*Q x Kg)    A gathered from x, B = grad_out;
//             the N*P*Q reduction is split over blockIdx.z into partial buffers summed in a fixed order.
// Reduction index (forward / grad_x) and grad_w rows: kk = (r*S + s)*ch_per_group + ch, tap-major in both
// layouts, so that runs of channels share one tap (one bounds test per run; one vector load in NHWC).
// Tiles: 256 threads as 16 x 16, each owning a TM x TN register tile in two halves (rows ty*HM + [0, HM)
// and BM/2 + ty*HM + [0, HM), likewise columns) so that the shared-memory fragment reads of a warp are
// broadcast / conflict-free 16-byte loads. Configurations: float 128x128 (8x8 per thread) or 256x64
// (16x4, when the GEMM has <= 64 columns: ResNet's 64-channel layers would leave half of a 128-wide tile
// idle); double 64x64 (4x4). Depth kBK = 8 per stage; two shared-memory stages: the next tile is read from
// global memory into registers while the current one is multiplied (one __syncthreads per stage).
// Each thread gathers A_PER (B_PER) consecutive reduction indices of one tile row (column) per stage; the
// thread-to-element mapping (`tile_slot`) puts consecutive threads along whichever tile axis is contiguous
// in memory (pixels for NCHW, channels for NHWC), so the gathers coalesce.
#include <algorithm>
#include <cstdint>
#include <string>

#include "layerforge/conv.h"
#include "layerforge/detail/convpool_checks.h"
#include "launch.cuh"

namespace layerforge {
namespace cuda {

namespace {

using detail::ConvGeo;

constexpr int kThreads = 256;  // every kernel in this file
constexpr int kBK = 8;         // reduction depth of one shared-memory stage
constexpr int kPad = 4;        // row padding of the shared tiles (keeps rows 16-byte aligned; see the stores)
// Two GEMM blocks per multiprocessor (<= 128 registers per thread): 16 warps to hide the global-load latency.
constexpr int kGemmBlocksPerSM = 2;

template <typename T, int BM_, int BN_>
struct Tile {
    static constexpr int BM = BM_, BN = BN_;
    static constexpr int TM = BM / 16, TN = BN / 16;   // register tile of one thread
    static constexpr int HM = TM / 2, HN = TN / 2;     // its two halves
    static constexpr int A_PER = BM * kBK / kThreads;  // A elements each thread gathers per stage
    static constexpr int B_PER = BN * kBK / kThreads;
    static_assert(BM % 32 == 0 && BN % 32 == 0 && A_PER >= 1 && B_PER >= 1, "tile shape");
};

__device__ __forceinline__ float fmadd(float a, float b, float c) { return fmaf(a, b, c); }
__device__ __forceinline__ double fmadd(double a, double b, double c) { return fma(a, b, c); }

// N consecutive values as vector accesses of at most 16 bytes each; p must be aligned to the chunk size
// (min(16 bytes, N * sizeof(T))).
template <typename T, int N>
__device__ __forceinline__ void vload(T* dst, const T* src) {
    constexpr int V = (N * sizeof(T) > 16) ? 16 / sizeof(T) : N;
#pragma unroll
    for (int c = 0; c < N; c += V) {
        LF_CHECK_ALIGNED(src + c, sizeof(Vec<T, V>));
        const Vec<T, V> t = *reinterpret_cast<const Vec<T, V>*>(src + c);
#pragma unroll
        for (int i = 0; i < V; ++i) dst[c + i] = t.v[i];
    }
}
template <typename T, int N>
__device__ __forceinline__ void vstore(T* dst, const T* src) {
    constexpr int V = (N * sizeof(T) > 16) ? 16 / sizeof(T) : N;
#pragma unroll
    for (int c = 0; c < N; c += V) {
        Vec<T, V> t;
#pragma unroll
        for (int i = 0; i < V; ++i) t.v[i] = src[c + i];
        LF_CHECK_ALIGNED(dst + c, sizeof(Vec<T, V>));
        *reinterpret_cast<Vec<T, V>*>(dst + c) = t;
    }
}

// A thread's share of an operand tile (LINES tile rows or columns x kBK reduction indices): PER
// consecutive reduction indices [kofs, kofs + PER) of line `line`. kfast: consecutive threads take the
// consecutive index groups of one line (memory contiguous along the reduction); else consecutive threads
// take consecutive lines (memory contiguous across lines). Either way 256 threads cover the tile once.
template <int LINES, int PER>
__device__ __forceinline__ void tile_slot(bool kfast, int tid, int& line, int& kofs) {
    constexpr int kGroups = kBK / PER;
    static_assert(LINES * kGroups == kThreads, "tile slots must cover the tile");
    if (kfast) {
        line = tid / kGroups;
        kofs = (tid % kGroups) * PER;
    } else {
        line = tid % LINES;
        kofs = (tid / LINES) * PER;
    }
}

// ------------------------------------------------------------------------------------------------
// Epilogue: C[row][col] goes to dst[base + row_offset(row) + col * col_stride] (+ bias[group * cols + col]),
// row_offset(row) = row * row_lo when row_div == 0, else (row / row_div) * row_hi + (row % row_div) * row_lo.
//   forward/grad_x NCHW: rows = pixels (n, pix): row_div = pixels per image, row_hi = channels * row_div,
//                        row_lo = 1, col_stride = pixels per image;  NHWC: row_lo = channels, col_stride = 1
//   grad_w: rows = (rs, c): NCHW row_div = Cg, row_hi = 1, row_lo = R*S;  NHWC row_lo = 1; col_stride = C/g*R*S
// vec_rows: the HM rows of a half are contiguous and aligned (one vector store per column);
// vec_cols: the HN columns of a half are (one vector store per row). Set by the host (set_vector_flags).
struct Epilogue {
    void* dst;
    const void* bias;  // nullptr: none
    int64_t rows;
    int cols;
    int64_t row_div, row_hi, row_lo, col_stride, group_stride;
    bool vec_rows, vec_cols;
};

__device__ __forceinline__ int64_t row_offset(const Epilogue& e, int64_t row) {
    if (e.row_div == 0) return row * e.row_lo;
    const int64_t hi = row / e.row_div;
    return hi * e.row_hi + (row - hi * e.row_div) * e.row_lo;
}

template <typename T, int BM, int BN>
__device__ __forceinline__ void store_tile(const Epilogue& e, const T (&acc)[BM / 16][BN / 16], int64_t row0, int col0,
                                           int64_t base, int group) {
    using Cfg = Tile<T, BM, BN>;
    constexpr int HM = Cfg::HM, HN = Cfg::HN, TM = Cfg::TM, TN = Cfg::TN;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    T* dst = static_cast<T*>(e.dst) + base;
    const T* bias = e.bias ? static_cast<const T*>(e.bias) + static_cast<int64_t>(group) * e.cols : nullptr;
    if (e.vec_rows) {
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int64_t r0 = row0 + h * (BM / 2) + ty * HM;
            if (r0 >= e.rows) continue;  // rows % HM == 0: the whole run is in or out
            const int64_t ro = row_offset(e, r0);
#pragma unroll
            for (int j = 0; j < TN; ++j) {
                const int col = col0 + (j < HN ? tx * HN + j : BN / 2 + tx * HN + (j - HN));
                if (col >= e.cols) continue;
                const T b = bias ? bias[col] : T(0);
                T v[HM];
#pragma unroll
                for (int i = 0; i < HM; ++i) v[i] = acc[h * HM + i][j] + b;
                vstore<T, HM>(dst + ro + col * e.col_stride, v);
            }
        }
        return;
    }
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int64_t row = row0 + (i < HM ? ty * HM + i : BM / 2 + ty * HM + (i - HM));
        if (row >= e.rows) continue;
        T* out = dst + row_offset(e, row);
        if (e.vec_cols) {  // cols % HN == 0: each half-run of columns is wholly in or out
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int c0 = col0 + h * (BN / 2) + tx * HN;
                if (c0 >= e.cols) continue;
                T v[HN];
#pragma unroll
                for (int j = 0; j < HN; ++j) v[j] = acc[i][h * HN + j] + (bias ? bias[c0 + j] : T(0));
                vstore<T, HN>(out + c0, v);
            }
        } else {
#pragma unroll
            for (int j = 0; j < TN; ++j) {
                const int col = col0 + (j < HN ? tx * HN + j : BN / 2 + tx * HN + (j - HN));
                if (col >= e.cols) continue;
                out[col * e.col_stride] = acc[i][j] + (bias ? bias[col] : T(0));
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// The main loop shared by all implicit GEMMs: acc (this thread's TM x TN tile of C) += A_tile @ B_tile over
// `ktiles` stages of kBK. LoadA / LoadB gather a thread's elements of the next stage into registers
// (fetch), step one stage (advance), and say where their elements go (line, kofs).
template <typename T, int BM, int BN, class Args, class LoadA, class LoadB>
__device__ __forceinline__ void gemm_mainloop(const Args& a, LoadA& la, LoadB& lb, int ktiles,
                                              T (&acc)[BM / 16][BN / 16]) {
    using Cfg = Tile<T, BM, BN>;
    constexpr int HM = Cfg::HM, HN = Cfg::HN, TM = Cfg::TM, TN = Cfg::TN;
    // [stage][k][row]: k-major so that a thread's fragment of one k is contiguous (16-byte reads); rows of
    // BM + kPad elements stay 16-byte aligned, and the padding spreads the transposing stores of kfast
    // gathers (threads t, t+1 writing rows k, k + PER of one column) over different banks.
    struct alignas(16) Stages {
        T a[2][kBK][BM + kPad];
        T b[2][kBK][BN + kPad];
    };
    __shared__ Stages sm;
    auto& As = sm.a;
    auto& Bs = sm.b;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    if (ktiles <= 0) return;  // uniform over the block: no barrier is skipped by some threads only
    T ra[Cfg::A_PER], rb[Cfg::B_PER];
    la.fetch(a, ra);
    lb.fetch(a, rb);
#pragma unroll
    for (int i = 0; i < Cfg::A_PER; ++i) As[0][la.kofs + i][la.line] = ra[i];
#pragma unroll
    for (int i = 0; i < Cfg::B_PER; ++i) Bs[0][lb.kofs + i][lb.line] = rb[i];
    __syncthreads();
    for (int t = 0; t < ktiles; ++t) {  // 32-bit counter: fewer registers (no spills under 128 on sm_90)
        const int cur = t & 1;
        const bool more = t + 1 < ktiles;
        if (more) {  // global loads of the next stage are in flight during the FMAs below
            la.advance(a);
            lb.advance(a);
            la.fetch(a, ra);
            lb.fetch(a, rb);
        }
#pragma unroll
        for (int k = 0; k < kBK; ++k) {
            T av[TM], bv[TN];
            vload<T, HM>(av, &As[cur][k][ty * HM]);
            vload<T, HM>(av + HM, &As[cur][k][BM / 2 + ty * HM]);
            vload<T, HN>(bv, &Bs[cur][k][tx * HN]);
            vload<T, HN>(bv + HN, &Bs[cur][k][BN / 2 + tx * HN]);
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] = fmadd(av[i], bv[j], acc[i][j]);
        }
        if (more) {
            // Stage cur^1 was last read in iteration t-1, before the barrier that ended it: safe to overwrite.
#pragma unroll
            for (int i = 0; i < Cfg::A_PER; ++i) As[cur ^ 1][la.kofs + i][la.line] = ra[i];
#pragma unroll
            for (int i = 0; i < Cfg::B_PER; ++i) Bs[cur ^ 1][lb.kofs + i][lb.line] = rb[i];
        }
        __syncthreads();
    }
}

// ------------------------------------------------------------------------------------------------
// Forward and grad_x: one implicit GEMM per group (blockIdx.z).
// Rows m = (n, oh, ow) over an N x Ho x Wo pixel grid; reduction kk = (r*S + s)*chg + ch over chg*R*S.
// A[m][kk] = src[n, group*chg + ch, ih, iw] where, per dim, v = o*ostr - pad + tap*dil and the source
//   index is v / ld when ld divides v (0 outside the source or when ld does not divide v).
//   forward: src = x, ostr = stride, ld = 1.  grad_x: src = grad_out, ostr = 1, ld = stride,
//   pad = dil*(R-1) - pad_top (may be negative), taps flipped through B.
// B[kk][j] = w[group*w_group + j*js + ch*cs + tap*rss], tap = flip ? R*S-1-rs : rs.
struct GemmArgs {
    int64_t M;
    int Ho, Wo;
    const void* src;
    int CH, Hin, Win, chg, R, S, RS, Kred;
    int ostr_h, ostr_w, pad_h, pad_w, dil_h, dil_w, ld_h, ld_w;
    int adv_ch, adv_s, adv_r, adv_rs;  // kBK as steps of (ch, s, r) and of rs, for advance()
    bool a_vec;                        // NHWC: the A_PER channels of a tap are one aligned vector load
    const void* w;
    int64_t w_group, js, cs, rss;
    bool flip, b_kfast, b_vec;  // b_vec: B contiguous along kk, B_PER-aligned (NHWC forward)
    int Ncols;
    Epilogue epi;
};

// Row or column of the source that tap `tap` of output coordinate v0 = o*ostr - pad reads, or -1.
__device__ __forceinline__ int src_coord(int v0, int tap, int dil, int ld, int size) {
    int v = v0 + tap * dil;
    if (ld != 1) {
        if (v < 0) return -1;
        const int q = v / ld;
        if (q * ld != v) return -1;
        v = q;
    }
    return (v >= 0 && v < size) ? v : -1;
}

template <typename T, bool NHWC, int LINES, int PER>
struct PixelGather {
    const T* img;       // image n of src at the group's first channel
    int64_t ch_stride;  // NCHW: Hin*Win; NHWC: 1
    int vh0, vw0;       // o*ostr - pad of this row's pixel
    bool row_ok;
    int line, kofs;
    int kk, ch, r, s;  // this thread's first reduction index of the stage and its (ch, r, s)

    __device__ __forceinline__ void init(const GemmArgs& a, int64_t row0, int group, int tid) {
        tile_slot<LINES, PER>(NHWC, tid, line, kofs);  // NHWC: a tap's channels are contiguous
        const int64_t m = row0 + line;
        row_ok = m < a.M;
        const int64_t plane_o = static_cast<int64_t>(a.Ho) * a.Wo;
        const int64_t n = row_ok ? m / plane_o : 0;
        const int pix = row_ok ? static_cast<int>(m - n * plane_o) : 0;
        const int oh = pix / a.Wo, ow = pix - oh * a.Wo;
        vh0 = oh * a.ostr_h - a.pad_h;
        vw0 = ow * a.ostr_w - a.pad_w;
        const int64_t plane = static_cast<int64_t>(a.Hin) * a.Win;
        const int64_t gch = static_cast<int64_t>(group) * a.chg;
        img = static_cast<const T*>(a.src) + (NHWC ? n * plane * a.CH + gch : (n * a.CH + gch) * plane);
        ch_stride = NHWC ? 1 : plane;
        kk = kofs;
        ch = kk % a.chg;
        const int rs = kk / a.chg;
        r = rs / a.S;
        s = rs - r * a.S;
    }

    __device__ __forceinline__ int64_t pixel_offset(const GemmArgs& a, int ih, int iw) const {
        const int64_t p = static_cast<int64_t>(ih) * a.Win + iw;
        return NHWC ? p * a.CH : p;
    }

    __device__ __forceinline__ void fetch(const GemmArgs& a, T (&reg)[PER]) const {
        if (a.chg % PER == 0) {  // kk is a multiple of PER: the PER indices share one tap
            const int ih = src_coord(vh0, r, a.dil_h, a.ld_h, a.Hin);
            const int iw = src_coord(vw0, s, a.dil_w, a.ld_w, a.Win);
            if (!(row_ok && kk < a.Kred && ih >= 0 && iw >= 0)) {
#pragma unroll
                for (int i = 0; i < PER; ++i) reg[i] = T(0);
                return;
            }
            const T* p = img + pixel_offset(a, ih, iw) + ch * ch_stride;
            if (NHWC && a.a_vec) {
                vload<T, PER>(reg, p);
            } else {
#pragma unroll
                for (int i = 0; i < PER; ++i) reg[i] = p[i * ch_stride];
            }
            return;
        }
        // Few channels per group (e.g. the first layer): a tap per element. The loop stays rolled (one copy
        // of the coordinate arithmetic: no spills under the 128-register cap) and each value enters reg by
        // a shift, so reg is only ever indexed by constants and stays in registers.
        int c = ch, rr = r, ss = s;
#pragma unroll 1
        for (int i = 0; i < PER; ++i) {
            const int ih = src_coord(vh0, rr, a.dil_h, a.ld_h, a.Hin);
            const int iw = src_coord(vw0, ss, a.dil_w, a.ld_w, a.Win);
            const bool ok = row_ok && kk + i < a.Kred && ih >= 0 && iw >= 0;
            const T v = ok ? img[pixel_offset(a, ih, iw) + c * ch_stride] : T(0);
#pragma unroll
            for (int j = 0; j + 1 < PER; ++j) reg[j] = reg[j + 1];
            reg[PER - 1] = v;
            if (++c == a.chg) {
                c = 0;
                if (++ss == a.S) {
                    ss = 0;
                    ++rr;
                }
            }
        }
    }

    __device__ __forceinline__ void advance(const GemmArgs& a) {  // kk += kBK
        kk += kBK;
        ch += a.adv_ch;
        const int c1 = ch >= a.chg;
        ch -= c1 * a.chg;
        s += a.adv_s + c1;
        const int c2 = s >= a.S;
        s -= c2 * a.S;
        r += a.adv_r + c2;
    }
};

template <typename T, int LINES, int PER>
struct WeightGather {
    const T* col;  // the weights of GEMM column j of this group
    bool col_ok;
    int line, kofs;
    int kk, ch, rs;

    __device__ __forceinline__ void init(const GemmArgs& a, int col0, int group, int tid) {
        tile_slot<LINES, PER>(a.b_kfast, tid, line, kofs);
        const int j = col0 + line;
        col_ok = j < a.Ncols;
        col = static_cast<const T*>(a.w) + group * a.w_group + (col_ok ? j : 0) * a.js;
        kk = kofs;
        ch = kk % a.chg;
        rs = kk / a.chg;
    }

    __device__ __forceinline__ void fetch(const GemmArgs& a, T (&reg)[PER]) const {
        if (a.b_vec) {  // offset == kk, Kred % PER == 0: the PER indices are one aligned vector
            if (col_ok && kk < a.Kred) {
                vload<T, PER>(reg, col + kk);
            } else {
#pragma unroll
                for (int i = 0; i < PER; ++i) reg[i] = T(0);
            }
            return;
        }
        int c = ch, t = rs;
        int64_t off = c * a.cs + (a.flip ? a.RS - 1 - t : t) * a.rss;  // of (c, tap(t)), kept incrementally
#pragma unroll
        for (int i = 0; i < PER; ++i) {
            reg[i] = (col_ok && kk + i < a.Kred) ? col[off] : T(0);
            off += a.cs;
            if (++c == a.chg) {
                c = 0;
                ++t;
                off = (a.flip ? a.RS - 1 - t : t) * a.rss;
            }
        }
    }

    __device__ __forceinline__ void advance(const GemmArgs& a) {
        kk += kBK;
        ch += a.adv_ch;
        const int c1 = ch >= a.chg;
        ch -= c1 * a.chg;
        rs += a.adv_rs + c1;
    }
};

template <typename T, int BM, int BN, bool NHWC>
__global__ void __launch_bounds__(kThreads, kGemmBlocksPerSM) conv_igemm_kernel(const GemmArgs a) {
    using Cfg = Tile<T, BM, BN>;
    const int group = blockIdx.z;
    const int64_t row0 = static_cast<int64_t>(blockIdx.x) * BM;
    const int col0 = blockIdx.y * BN;
    PixelGather<T, NHWC, BM, Cfg::A_PER> la;
    WeightGather<T, BN, Cfg::B_PER> lb;
    la.init(a, row0, group, threadIdx.x);
    lb.init(a, col0, group, threadIdx.x);
    T acc[Cfg::TM][Cfg::TN];
#pragma unroll
    for (int i = 0; i < Cfg::TM; ++i)
#pragma unroll
        for (int j = 0; j < Cfg::TN; ++j) acc[i][j] = T(0);
    gemm_mainloop<T, BM, BN>(a, la, lb, (a.Kred + kBK - 1) / kBK, acc);
    store_tile<T, BM, BN>(a.epi, acc, row0, col0, group * a.epi.group_stride, group);
}

// ------------------------------------------------------------------------------------------------
// grad_weight: per group and split (blockIdx.z = group * splits + split), C (Cg*R*S x Kg) over the pixels
// [split*chunk, min(N*P*Q, (split+1)*chunk)). Rows (rs, c) = rs*Cg + c; reduction m = (n, p, q).
// A[row][m] = x[n, group*Cg + c, p*sh - pt + r*dh, q*sw - pl + s*dw] (0 in the padding);
// B[m][j]   = grad_out[n, group*Kg + j, p, q].
// The result goes to the split's partial buffer (dst + split*split_stride), or to grad_weight itself.
struct WgradArgs {
    const void* x;
    const void* go;
    int C, H, W, K, Cg, Kg, S, P, Q, CRS;
    int64_t PQ, NPQ;
    int sh, sw, pt, pl, dh, dw;
    int64_t chunk;       // pixels per split, a multiple of kBK
    int splits;
    int adv_q, adv_p;    // kBK pixels as steps of (q, p, n)
    int64_t adv_n;
    int64_t adv_pq, adv_npq;  // kBK pixels as steps of (pq, n)
    bool b_vec;          // NCHW, PQ % B_PER == 0, aligned: a thread's B_PER pixels are one vector
    int64_t split_stride;
    Epilogue epi;
};

template <typename T, bool NHWC, int LINES, int PER>
struct WgradImage {
    const T* chan;  // x at channel group*Cg + c of image 0
    bool row_ok;
    int h0, w0;     // r*dh - pt, s*dw - pl
    int line, kofs;
    int64_t m, kend;  // this thread's first pixel of the stage, end of the split
    int64_t n;
    int p, q;

    __device__ __forceinline__ void init(const WgradArgs& a, int64_t row0, int group, int64_t kbegin, int64_t kend_,
                                         int tid) {
        tile_slot<LINES, PER>(!NHWC, tid, line, kofs);  // NCHW: consecutive pixels are (mostly) adjacent
        const int64_t row = row0 + line;
        row_ok = row < a.CRS;
        const int rr = row_ok ? static_cast<int>(row) : 0;
        const int c = rr % a.Cg, rs = rr / a.Cg, r = rs / a.S, s = rs - r * a.S;
        h0 = r * a.dh - a.pt;
        w0 = s * a.dw - a.pl;
        const int64_t cg = static_cast<int64_t>(group) * a.Cg + c;
        chan = static_cast<const T*>(a.x) + (NHWC ? cg : cg * a.H * a.W);
        kend = kend_;
        m = kbegin + kofs;
        n = m / a.PQ;
        const int pq = static_cast<int>(m - n * a.PQ);
        p = pq / a.Q;
        q = pq - p * a.Q;
    }

    __device__ __forceinline__ void fetch(const WgradArgs& a, T (&reg)[PER]) const {
        int64_t nn = n;
        int pp = p, qq = q;
#pragma unroll
        for (int i = 0; i < PER; ++i) {
            const int ih = pp * a.sh + h0, iw = qq * a.sw + w0;
            const bool ok = row_ok && m + i < kend && ih >= 0 && ih < a.H && iw >= 0 && iw < a.W;
            const int64_t pix = static_cast<int64_t>(ih) * a.W + iw;
            const int64_t off = NHWC ? (nn * a.H * a.W + pix) * a.C : nn * a.C * a.H * a.W + pix;
            reg[i] = ok ? chan[off] : T(0);
            if (++qq == a.Q) {
                qq = 0;
                if (++pp == a.P) {
                    pp = 0;
                    ++nn;
                }
            }
        }
    }

    __device__ __forceinline__ void advance(const WgradArgs& a) {
        m += kBK;
        q += a.adv_q;
        const int c1 = q >= a.Q;
        q -= c1 * a.Q;
        p += a.adv_p + c1;
        const int c2 = p >= a.P;
        p -= c2 * a.P;
        n += a.adv_n + c2;
    }
};

template <typename T, bool NHWC, int LINES, int PER>
struct WgradGradOut {
    const T* chan;  // grad_out at channel group*Kg + j of image 0
    bool col_ok;
    int line, kofs;
    int64_t m, kend, n, pq;

    __device__ __forceinline__ void init(const WgradArgs& a, int col0, int group, int64_t kbegin, int64_t kend_,
                                         int tid) {
        tile_slot<LINES, PER>(!NHWC, tid, line, kofs);  // NCHW: pixels contiguous; NHWC: channels
        const int j = col0 + line;
        col_ok = j < a.Kg;
        const int64_t k = static_cast<int64_t>(group) * a.Kg + (col_ok ? j : 0);
        chan = static_cast<const T*>(a.go) + (NHWC ? k : k * a.PQ);
        kend = kend_;
        m = kbegin + kofs;
        n = m / a.PQ;
        pq = m - n * a.PQ;
    }

    __device__ __forceinline__ void fetch(const WgradArgs& a, T (&reg)[PER]) const {
        if (!NHWC && a.b_vec) {  // PQ % PER == 0 and m % PER == 0: the PER pixels share image n
            if (col_ok && m < kend) {
                vload<T, PER>(reg, chan + n * a.K * a.PQ + pq);
            } else {
#pragma unroll
                for (int i = 0; i < PER; ++i) reg[i] = T(0);
            }
            return;
        }
        int64_t nn = n, pp = pq;
#pragma unroll
        for (int i = 0; i < PER; ++i) {
            const int64_t off = NHWC ? (m + i) * a.K : nn * a.K * a.PQ + pp;
            reg[i] = (col_ok && m + i < kend) ? chan[off] : T(0);
            if (++pp == a.PQ) {
                pp = 0;
                ++nn;
            }
        }
    }

    __device__ __forceinline__ void advance(const WgradArgs& a) {
        m += kBK;
        pq += a.adv_pq;
        const int64_t c1 = pq >= a.PQ;
        pq -= c1 * a.PQ;
        n += a.adv_npq + c1;
    }
};

template <typename T, int BM, int BN, bool NHWC>
__global__ void __launch_bounds__(kThreads, kGemmBlocksPerSM) conv_wgrad_kernel(const WgradArgs a) {
    using Cfg = Tile<T, BM, BN>;
    const int group = blockIdx.z / a.splits, split = blockIdx.z % a.splits;
    const int64_t kbegin = split * a.chunk;
    const int64_t kend = kbegin + a.chunk < a.NPQ ? kbegin + a.chunk : a.NPQ;
    const int ktiles = kend > kbegin ? static_cast<int>((kend - kbegin + kBK - 1) / kBK) : 0;  // chunk < 2^31 kBK
    const int64_t row0 = static_cast<int64_t>(blockIdx.x) * BM;
    const int col0 = blockIdx.y * BN;
    WgradImage<T, NHWC, BM, Cfg::A_PER> la;
    WgradGradOut<T, NHWC, BN, Cfg::B_PER> lb;
    la.init(a, row0, group, kbegin, kend, threadIdx.x);
    lb.init(a, col0, group, kbegin, kend, threadIdx.x);
    T acc[Cfg::TM][Cfg::TN];
#pragma unroll
    for (int i = 0; i < Cfg::TM; ++i)
#pragma unroll
        for (int j = 0; j < Cfg::TN; ++j) acc[i][j] = T(0);
    gemm_mainloop<T, BM, BN>(a, la, lb, ktiles, acc);  // an empty split writes zeros (its partial is read)
    store_tile<T, BM, BN>(a.epi, acc, row0, col0, group * a.epi.group_stride + split * a.split_stride, group);
}

// ------------------------------------------------------------------------------------------------
// Depthwise (C/groups == 1): output channel k reads input channel k / Kg. Grids are (inner, outer): x over
// the elements of one plane (NCHW: one (n, channel) plane; NHWC: one image, channels fastest) in 32-bit
// indices, y (grid-stride) over planes/images.
struct DwArgs {
    const void* a;  // forward: x; grad_x: grad_out
    const void* w;  // weight, (K, 1, R, S) or (K, R, S, 1): k*R*S + r*S + s either way
    const void* bias;
    void* out;      // forward: out; grad_x: grad_x
    int64_t outer;
    int inner;
    int C, H, W, K, Kg, R, S, P, Q, sh, sw, pt, pl, dh, dw;
};

template <typename T, bool NHWC>
__global__ void __launch_bounds__(kThreads) dw_forward_kernel(const DwArgs a) {
    const int i = blockIdx.x * kThreads + threadIdx.x;
    if (i >= a.inner) return;
    int k, pix;
    if (NHWC) {
        k = i % a.K;
        pix = i / a.K;
    } else {
        k = 0;
        pix = i;
    }
    const int p = pix / a.Q, q = pix - p * a.Q;
    const int64_t HW = static_cast<int64_t>(a.H) * a.W;
    const T* wk0 = static_cast<const T*>(a.w);
    for (int64_t o = blockIdx.y; o < a.outer; o += gridDim.y) {
        // NCHW: o = n*K + k; NHWC: o = n
        const int kk = NHWC ? k : static_cast<int>(o % a.K);
        const int64_t n = NHWC ? o : o / a.K;
        const int c = kk / a.Kg;
        const T* xc = static_cast<const T*>(a.a) + (NHWC ? n * HW * a.C + c : (n * a.C + c) * HW);
        const int64_t xs = NHWC ? a.C : 1;
        const T* wk = wk0 + static_cast<int64_t>(kk) * a.R * a.S;
        T acc = T(0);
        for (int r = 0; r < a.R; ++r) {
            const int ih = p * a.sh - a.pt + r * a.dh;
            if (ih < 0 || ih >= a.H) continue;
            for (int s = 0; s < a.S; ++s) {
                const int iw = q * a.sw - a.pl + s * a.dw;
                if (iw < 0 || iw >= a.W) continue;
                acc = fmadd(xc[(static_cast<int64_t>(ih) * a.W + iw) * xs], wk[r * a.S + s], acc);
            }
        }
        if (a.bias) acc += static_cast<const T*>(a.bias)[kk];
        const int64_t PQ = static_cast<int64_t>(a.P) * a.Q;
        static_cast<T*>(a.out)[NHWC ? o * PQ * a.K + i : o * PQ + i] = acc;
    }
}

// grad_x[n, c, h, w] = sum over j < Kg, taps (r, s) with p*sh = h + pt - r*dh, q*sw = w + pl - s*dw in range
// of grad_out[n, c*Kg + j, p, q] * w[c*Kg + j, r, s]: a gather, one thread per input element.
template <typename T, bool NHWC>
__global__ void __launch_bounds__(kThreads) dw_grad_x_kernel(const DwArgs a) {
    const int i = blockIdx.x * kThreads + threadIdx.x;
    if (i >= a.inner) return;
    int c, pix;
    if (NHWC) {
        c = i % a.C;
        pix = i / a.C;
    } else {
        c = 0;
        pix = i;
    }
    const int h = pix / a.W, w = pix - h * a.W;
    const int64_t PQ = static_cast<int64_t>(a.P) * a.Q;
    for (int64_t o = blockIdx.y; o < a.outer; o += gridDim.y) {
        // NCHW: o = n*C + c; NHWC: o = n
        const int cc = NHWC ? c : static_cast<int>(o % a.C);
        const int64_t n = NHWC ? o : o / a.C;
        T acc = T(0);
        for (int j = 0; j < a.Kg; ++j) {
            const int k = cc * a.Kg + j;
            const T* gk = static_cast<const T*>(a.a) + (NHWC ? n * PQ * a.K + k : (n * a.K + k) * PQ);
            const int64_t gs = NHWC ? a.K : 1;
            const T* wk = static_cast<const T*>(a.w) + static_cast<int64_t>(k) * a.R * a.S;
            for (int r = 0; r < a.R; ++r) {
                const int vh = h + a.pt - r * a.dh;
                if (vh < 0) continue;
                const int p = vh / a.sh;
                if (p * a.sh != vh || p >= a.P) continue;
                for (int s = 0; s < a.S; ++s) {
                    const int vw = w + a.pl - s * a.dw;
                    if (vw < 0) continue;
                    const int q = vw / a.sw;
                    if (q * a.sw != vw || q >= a.Q) continue;
                    acc = fmadd(gk[(static_cast<int64_t>(p) * a.Q + q) * gs], wk[r * a.S + s], acc);
                }
            }
        }
        const int64_t HW = static_cast<int64_t>(a.H) * a.W;
        static_cast<T*>(a.out)[NHWC ? o * HW * a.C + i : o * HW + i] = acc;
    }
}

// ------------------------------------------------------------------------------------------------
// Per-channel reductions over the N*P*Q output pixels, deterministic (fixed per-thread order, fixed tree):
//   grad_bias[k] = sum grad_out[n, k, p, q]                                  (x == nullptr, R = S = 1)
//   depthwise grad_w[k, r, s] = sum grad_out[n, k, p, q] * x[n, k/Kg, p*sh - pt + r*dh, q*sw - pl + s*dw]
// Grid: x = blocks of CL channels, y = taps r*S + s, z = splits of the pixels (chunk each). Block: CL
// channel lanes x PL pixel lanes (NHWC: 32 x 8, channels contiguous; NCHW: 1 x 256, pixels contiguous).
// Output: dst[split*K*R*S + k*R*S + rs] (partials, or the result when there is one split).
struct ChanReduceArgs {
    const void* go;
    const void* x;  // nullptr: grad_bias
    void* dst;
    int64_t NPQ, PQ, chunk;
    int K, Kg, C, H, W, P, Q, R, S, sh, sw, pt, pl, dh, dw;
    int adv_q, adv_p;  // PL pixels as steps of (q, p, n)
    int64_t adv_n;
};

template <typename T, bool NHWC>
__global__ void __launch_bounds__(kThreads) channel_reduce_kernel(const ChanReduceArgs a) {
    constexpr int CL = NHWC ? 32 : 1, PL = kThreads / CL;
    __shared__ T part[kThreads];
    const int tid = threadIdx.x, cl = tid % CL, pl = tid / CL;
    const int k = blockIdx.x * CL + cl;
    const int rs = blockIdx.y, r = rs / a.S, s = rs - r * a.S;
    const int split = blockIdx.z;
    const int64_t m0 = split * a.chunk, m1 = m0 + a.chunk < a.NPQ ? m0 + a.chunk : a.NPQ;
    T acc = T(0);
    if (k < a.K) {
        const T* go = static_cast<const T*>(a.go);
        const T* xc = nullptr;
        if (a.x) {
            const int64_t c = k / a.Kg;
            xc = static_cast<const T*>(a.x) + (NHWC ? c : c * a.H * a.W);
        }
        const int64_t HW = static_cast<int64_t>(a.H) * a.W;
        int64_t m = m0 + pl;
        int64_t n = m / a.PQ;
        int p = static_cast<int>((m - n * a.PQ) / a.Q);
        int q = static_cast<int>(m - n * a.PQ - static_cast<int64_t>(p) * a.Q);
        for (; m < m1; m += PL) {
            const int64_t pq = static_cast<int64_t>(p) * a.Q + q;
            T g = go[NHWC ? m * a.K + k : (n * a.K + k) * a.PQ + pq];
            if (xc) {
                const int ih = p * a.sh - a.pt + r * a.dh, iw = q * a.sw - a.pl + s * a.dw;
                if (ih >= 0 && ih < a.H && iw >= 0 && iw < a.W) {
                    const int64_t pix = static_cast<int64_t>(ih) * a.W + iw;
                    acc = fmadd(g, xc[NHWC ? (n * HW + pix) * a.C : n * a.C * HW + pix], acc);
                }
            } else {
                acc += g;
            }
            q += a.adv_q;
            const int c1 = q >= a.Q;
            q -= c1 * a.Q;
            p += a.adv_p + c1;
            const int c2 = p >= a.P;
            p -= c2 * a.P;
            n += a.adv_n + c2;
        }
    }
    part[tid] = acc;
    __syncthreads();
    for (int half = PL / 2; half > 0; half /= 2) {
        if (pl < half) part[tid] += part[tid + half * CL];
        __syncthreads();
    }
    if (pl == 0 && k < a.K) {
        const int64_t RS = static_cast<int64_t>(a.R) * a.S;
        static_cast<T*>(a.dst)[split * a.K * RS + k * RS + rs] = part[cl];
    }
}

// out[i] = sum over s < splits (in order) of part[s*len + i].
template <typename T>
__global__ void __launch_bounds__(kThreads) sum_splits_kernel(const T* part, int splits, int64_t len, T* out) {
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; i < len;
         i += static_cast<int64_t>(gridDim.x) * kThreads) {
        T v = part[i];
        for (int s = 1; s < splits; ++s) v += part[s * len + i];
        out[i] = v;
    }
}

// ------------------------------------------------------------------------------------------------ host

bool is_depthwise(const ConvGeo& g) { return g.Cg == 1 && g.G > 1 && g.R * g.S <= kMaxGridYZ; }

bool aligned(const void* p, int64_t bytes) { return reinterpret_cast<uintptr_t>(p) % static_cast<uintptr_t>(bytes) == 0; }

// The kernels index within a plane / the reduction in 32 bits (dims, P*Q, H*W, C/g*R*S, padded sizes);
// offsets of whole tensors are 64-bit.
void check_int32(const ConvGeo& g, const char* op) {
    const int64_t lim = int64_t(1) << 30;
    const int64_t Hp = (g.P - 1) * g.sh + (g.R - 1) * g.dh + 1, Wp = (g.Q - 1) * g.sw + (g.S - 1) * g.dw + 1;
    const bool ok = g.C < lim && g.K < lim && g.H * g.W < lim && g.P * g.Q < lim && g.H + Hp + g.pt < lim &&
                    g.W + Wp + g.pl < lim && g.Cg * g.R * g.S < lim && g.Kg * g.R * g.S < lim && g.sh < lim &&
                    g.sw < lim && g.dh < lim && g.dw < lim && g.R < lim && g.S < lim &&
                    g.H * g.W * g.C < (int64_t(1) << 31) && g.P * g.Q * g.K < (int64_t(1) << 31);
    if (!ok)
        throw ValueError(std::string(op) + ": sizes too large for the CUDA kernels (one image, plane or filter "
                                           "of 2^30 or more elements)");
}

struct Split {
    int splits;
    int64_t chunk;  // multiple of `align`
};

// Splits of a reduction over `len` pixels so that about 2 blocks per multiprocessor run (`base` blocks
// without splitting), each split at least `min_len` long; at most `max_splits`.
Split split_reduction(int64_t len, int64_t base, int sms, int64_t min_len, int max_splits, int64_t align) {
    int64_t s = (2 * static_cast<int64_t>(sms) + base - 1) / base;
    const int64_t by_len = len / min_len;
    if (s > by_len) s = by_len;
    if (s > max_splits) s = max_splits;
    if (s < 1) s = 1;
    int64_t chunk = (len + s - 1) / s;
    chunk = (chunk + align - 1) / align * align;
    if (chunk < align) chunk = align;
    return {static_cast<int>((len + chunk - 1) / chunk), chunk};
}

// The column count of a GEMM picks the float tile: <= 64 columns -> 256 x 64, else 128 x 128.
bool narrow(int64_t cols) { return cols <= 64; }

constexpr int kChanLanesNHWC = 32;

// What conv2d_backward launches and how much workspace it needs (elements).
struct BackwardPlan {
    Split wsplit{1, 0};  // grad_weight (implicit GEMM or depthwise reduction)
    Split bsplit{1, 0};  // grad_bias
    int64_t ws_weight = 0, ws_bias = 0;
};

BackwardPlan plan_backward(const ConvGeo& g, DType dt, bool need_gw, bool need_gb, int sms) {
    BackwardPlan pl;
    const int64_t NPQ = g.N * g.P * g.Q, RS = g.R * g.S;
    const int64_t chan_blocks = g.nhwc ? (g.K + kChanLanesNHWC - 1) / kChanLanesNHWC : g.K;
    if (need_gw) {
        if (is_depthwise(g)) {
            pl.wsplit = split_reduction(NPQ, chan_blocks * RS, sms, 2048, 64, 1);
        } else {
            int bm, bn;
            if (dt == DType::f64) bm = bn = 64;
            else if (narrow(g.Kg)) bm = 256, bn = 64;
            else bm = bn = 128;
            const int64_t base = ((g.Cg * RS + bm - 1) / bm) * ((g.Kg + bn - 1) / bn) * g.G;
            const int max_splits = static_cast<int>(std::min<int64_t>(64, kMaxGridYZ / g.G));
            pl.wsplit = split_reduction(NPQ, base, sms, 512, max_splits > 0 ? max_splits : 1, kBK);
        }
        if (pl.wsplit.splits > 1) pl.ws_weight = pl.wsplit.splits * g.K * g.Cg * RS;
    }
    if (need_gb) {
        pl.bsplit = split_reduction(NPQ, chan_blocks, sms, 4096, 64, 1);
        if (pl.bsplit.splits > 1) pl.ws_bias = pl.bsplit.splits * g.K;
    }
    return pl;
}

// Vector-store flags of an epilogue (see Epilogue); `extra` is any further per-block offset stride.
template <typename T, int BM, int BN>
void set_vector_flags(Epilogue& e, int64_t extra) {
    constexpr int HM = Tile<T, BM, BN>::HM, HN = Tile<T, BM, BN>::HN;
    e.vec_rows = e.row_lo == 1 && (e.row_div == 0 || (e.row_div % HM == 0 && e.row_hi % HM == 0)) &&
                 e.rows % HM == 0 && e.col_stride % HM == 0 && e.group_stride % HM == 0 && extra % HM == 0 &&
                 aligned(e.dst, HM * sizeof(T));
    e.vec_cols = e.col_stride == 1 && e.cols % HN == 0 && e.row_lo % HN == 0 &&
                 (e.row_div == 0 || e.row_hi % HN == 0) && e.group_stride % HN == 0 && extra % HN == 0 &&
                 aligned(e.dst, HN * sizeof(T));
}

void set_reduction_steps(GemmArgs& a) {
    a.adv_ch = kBK % a.chg;
    a.adv_rs = kBK / a.chg;
    a.adv_s = a.adv_rs % a.S;
    a.adv_r = a.adv_rs / a.S;
}

template <typename T, int BM, int BN>
void launch_igemm(GemmArgs a, bool nhwc, int64_t groups, void* stream) {
    using Cfg = Tile<T, BM, BN>;
    if (nhwc) {
        a.a_vec = a.chg % Cfg::A_PER == 0 && a.CH % Cfg::A_PER == 0 && aligned(a.src, Cfg::A_PER * sizeof(T));
    } else {
        a.a_vec = false;
    }
    // B contiguous along kk (offset ch + rs*Cg == kk: forward NHWC, or any 1x1), whole vectors, aligned rows
    a.b_vec = a.b_kfast && !a.flip && a.cs == 1 && (a.rss == a.chg || a.RS == 1) && a.js % Cfg::B_PER == 0 &&
              a.Kred % Cfg::B_PER == 0 && a.w_group % Cfg::B_PER == 0 && aligned(a.w, Cfg::B_PER * sizeof(T));
    set_vector_flags<T, BM, BN>(a.epi, 0);
    const int64_t gx = (a.M + BM - 1) / BM, gy = (a.Ncols + BN - 1) / BN;
    if (gx > kMaxGridX || gy > kMaxGridYZ || groups > kMaxGridYZ)
        throw ValueError("conv2d: problem too large for the CUDA grid");
    const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy), static_cast<unsigned>(groups));
    if (nhwc)
        launch("conv_igemm_kernel<NHWC>", conv_igemm_kernel<T, BM, BN, true>, grid, dim3(kThreads), stream, a);
    else
        launch("conv_igemm_kernel<NCHW>", conv_igemm_kernel<T, BM, BN, false>, grid, dim3(kThreads), stream, a);
}

// The GEMM's output is an image batch: row m = pixel (n, h, w), column = channel j of group gi, so element
// (m, j) of group gi goes to NCHW (n*C + gi*Cg + j)*plane + pixel, or NHWC m*C + gi*Cg + j, where C =
// channels in all groups, Cg = cols and plane = the pixels of one channel plane.
inline void set_image_epilogue(Epilogue& e, void* dst, const void* bias, int64_t rows, int cols, bool nhwc,
                               int64_t channels, int64_t plane) {
    e.dst = dst;
    e.bias = bias;
    e.rows = rows;
    e.cols = cols;
    if (nhwc) {
        e.row_div = 0;
        e.row_lo = channels;
        e.col_stride = 1;
        e.group_stride = cols;
    } else {
        e.row_div = plane;
        e.row_hi = channels * plane;
        e.row_lo = 1;
        e.col_stride = plane;
        e.group_stride = cols * plane;
    }
}

template <typename T>
void run_igemm(const GemmArgs& a, bool nhwc, int64_t groups, void* stream) {
    if constexpr (sizeof(T) == 8)
        launch_igemm<T, 64, 64>(a, nhwc, groups, stream);
    else if (narrow(a.Ncols))
        launch_igemm<T, 256, 64>(a, nhwc, groups, stream);
    else
        launch_igemm<T, 128, 128>(a, nhwc, groups, stream);
}

template <typename T>
void forward_igemm(const ConvGeo& g, const T* x, const T* w, const T* b, T* out, void* stream) {
    GemmArgs a{};
    a.M = g.N * g.P * g.Q;
    a.Ho = static_cast<int>(g.P);
    a.Wo = static_cast<int>(g.Q);
    a.src = x;
    a.CH = static_cast<int>(g.C);
    a.Hin = static_cast<int>(g.H);
    a.Win = static_cast<int>(g.W);
    a.chg = static_cast<int>(g.Cg);
    a.R = static_cast<int>(g.R);
    a.S = static_cast<int>(g.S);
    a.RS = a.R * a.S;
    a.Kred = a.chg * a.RS;
    a.ostr_h = static_cast<int>(g.sh);
    a.ostr_w = static_cast<int>(g.sw);
    a.pad_h = static_cast<int>(g.pt);
    a.pad_w = static_cast<int>(g.pl);
    a.dil_h = static_cast<int>(g.dh);
    a.dil_w = static_cast<int>(g.dw);
    a.ld_h = a.ld_w = 1;
    set_reduction_steps(a);
    const int64_t CRS = g.Cg * g.R * g.S, PQ = g.P * g.Q;
    a.w = w;
    a.w_group = g.Kg * CRS;
    a.js = CRS;  // column j = output channel k of the group: weight row k
    a.cs = g.nhwc ? 1 : g.R * g.S;
    a.rss = g.nhwc ? g.Cg : 1;
    a.flip = false;
    a.b_kfast = true;  // each thread reads a short run of one weight row
    a.Ncols = static_cast<int>(g.Kg);
    set_image_epilogue(a.epi, out, b, a.M, a.Ncols, g.nhwc, g.K, PQ);
    run_igemm<T>(a, g.nhwc, g.G, stream);
}

// grad_x as the transposed convolution (see GemmArgs).
template <typename T>
void grad_x_igemm(const ConvGeo& g, const T* go, const T* w, T* gx, void* stream) {
    GemmArgs a{};
    a.M = g.N * g.H * g.W;
    a.Ho = static_cast<int>(g.H);
    a.Wo = static_cast<int>(g.W);
    a.src = go;
    a.CH = static_cast<int>(g.K);
    a.Hin = static_cast<int>(g.P);
    a.Win = static_cast<int>(g.Q);
    a.chg = static_cast<int>(g.Kg);
    a.R = static_cast<int>(g.R);
    a.S = static_cast<int>(g.S);
    a.RS = a.R * a.S;
    a.Kred = a.chg * a.RS;
    a.ostr_h = a.ostr_w = 1;
    a.pad_h = static_cast<int>(g.dh * (g.R - 1) - g.pt);
    a.pad_w = static_cast<int>(g.dw * (g.S - 1) - g.pl);
    a.dil_h = static_cast<int>(g.dh);
    a.dil_w = static_cast<int>(g.dw);
    a.ld_h = static_cast<int>(g.sh);
    a.ld_w = static_cast<int>(g.sw);
    set_reduction_steps(a);
    const int64_t CRS = g.Cg * g.R * g.S, HW = g.H * g.W;
    a.w = w;
    a.w_group = g.Kg * CRS;
    // B[kk = (rs, k)][j = c] = w[k, c, flipped tap]: NCHW w[k*CRS + c*RS + tap]; NHWC w[k*CRS + tap*Cg + c]
    a.js = g.nhwc ? 1 : g.R * g.S;
    a.cs = CRS;
    a.rss = g.nhwc ? g.Cg : 1;
    a.flip = true;
    a.b_kfast = false;  // consecutive threads take consecutive input channels
    a.Ncols = static_cast<int>(g.Cg);
    set_image_epilogue(a.epi, gx, nullptr, a.M, a.Ncols, g.nhwc, g.C, HW);
    run_igemm<T>(a, g.nhwc, g.G, stream);
}

template <typename T, int BM, int BN>
void launch_wgrad(WgradArgs a, bool nhwc, int64_t groups, void* stream) {
    using Cfg = Tile<T, BM, BN>;
    a.b_vec = !nhwc && a.PQ % Cfg::B_PER == 0 && aligned(a.go, Cfg::B_PER * sizeof(T));
    set_vector_flags<T, BM, BN>(a.epi, a.split_stride);
    const int64_t gx = (a.CRS + BM - 1) / BM, gy = (a.Kg + BN - 1) / BN, gz = groups * a.splits;
    if (gx > kMaxGridX || gy > kMaxGridYZ || gz > kMaxGridYZ || a.chunk / kBK >= kMaxGridX)
        throw ValueError("conv2d_backward: problem too large for the CUDA grid");
    const dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy), static_cast<unsigned>(gz));
    if (nhwc)
        launch("conv_wgrad_kernel<NHWC>", conv_wgrad_kernel<T, BM, BN, true>, grid, dim3(kThreads), stream, a);
    else
        launch("conv_wgrad_kernel<NCHW>", conv_wgrad_kernel<T, BM, BN, false>, grid, dim3(kThreads), stream, a);
}

template <typename T>
void sum_splits(const T* part, int splits, int64_t len, T* out, void* stream) {
    const int64_t blocks = std::min<int64_t>((len + kThreads - 1) / kThreads, 65535);
    launch("sum_splits_kernel", sum_splits_kernel<T>, dim3(static_cast<unsigned>(blocks)), dim3(kThreads), stream,
           part, splits, len, out);
}

template <typename T>
void grad_w_igemm(const ConvGeo& g, const T* go, const T* x, T* gw, const Split& sp, T* partial, void* stream) {
    WgradArgs a{};
    a.x = x;
    a.go = go;
    a.C = static_cast<int>(g.C);
    a.H = static_cast<int>(g.H);
    a.W = static_cast<int>(g.W);
    a.K = static_cast<int>(g.K);
    a.Cg = static_cast<int>(g.Cg);
    a.Kg = static_cast<int>(g.Kg);
    a.S = static_cast<int>(g.S);
    a.P = static_cast<int>(g.P);
    a.Q = static_cast<int>(g.Q);
    a.CRS = static_cast<int>(g.Cg * g.R * g.S);
    a.PQ = g.P * g.Q;
    a.NPQ = g.N * a.PQ;
    a.sh = static_cast<int>(g.sh);
    a.sw = static_cast<int>(g.sw);
    a.pt = static_cast<int>(g.pt);
    a.pl = static_cast<int>(g.pl);
    a.dh = static_cast<int>(g.dh);
    a.dw = static_cast<int>(g.dw);
    a.splits = sp.splits;
    a.chunk = sp.chunk;
    a.adv_q = static_cast<int>(kBK % g.Q);
    a.adv_p = static_cast<int>((kBK / g.Q) % g.P);
    a.adv_n = kBK / a.PQ;
    a.adv_pq = kBK % a.PQ;
    a.adv_npq = kBK / a.PQ;
    const int64_t KCRS = g.K * a.CRS;
    a.split_stride = sp.splits > 1 ? KCRS : 0;
    Epilogue& e = a.epi;
    e.dst = sp.splits > 1 ? partial : gw;
    e.bias = nullptr;
    e.rows = a.CRS;
    e.cols = a.Kg;
    e.col_stride = a.CRS;
    e.group_stride = g.Kg * a.CRS;
    if (g.nhwc) {  // rows (rs, c) are the weight's own order
        e.row_div = 0;
        e.row_lo = 1;
    } else {  // weight (K, Cg, R, S): row (rs, c) -> c*R*S + rs
        e.row_div = g.Cg;
        e.row_hi = 1;
        e.row_lo = g.R * g.S;
    }
    if constexpr (sizeof(T) == 8)
        launch_wgrad<T, 64, 64>(a, g.nhwc, g.G, stream);
    else if (narrow(g.Kg))
        launch_wgrad<T, 256, 64>(a, g.nhwc, g.G, stream);
    else
        launch_wgrad<T, 128, 128>(a, g.nhwc, g.G, stream);
    if (sp.splits > 1) sum_splits<T>(partial, sp.splits, KCRS, gw, stream);
}

DwArgs dw_args(const ConvGeo& g) {
    DwArgs a{};
    a.C = static_cast<int>(g.C);
    a.H = static_cast<int>(g.H);
    a.W = static_cast<int>(g.W);
    a.K = static_cast<int>(g.K);
    a.Kg = static_cast<int>(g.Kg);
    a.R = static_cast<int>(g.R);
    a.S = static_cast<int>(g.S);
    a.P = static_cast<int>(g.P);
    a.Q = static_cast<int>(g.Q);
    a.sh = static_cast<int>(g.sh);
    a.sw = static_cast<int>(g.sw);
    a.pt = static_cast<int>(g.pt);
    a.pl = static_cast<int>(g.pl);
    a.dh = static_cast<int>(g.dh);
    a.dw = static_cast<int>(g.dw);
    return a;
}

dim3 plane_grid(int64_t outer, int64_t inner) {
    return dim3(blocks_for(inner, kThreads), static_cast<unsigned>(std::min<int64_t>(outer, kMaxGridYZ)));
}

template <typename T>
void forward_depthwise(const ConvGeo& g, const T* x, const T* w, const T* b, T* out, void* stream) {
    DwArgs a = dw_args(g);
    a.a = x;
    a.w = w;
    a.bias = b;
    a.out = out;
    a.outer = g.nhwc ? g.N : g.N * g.K;
    a.inner = static_cast<int>(g.nhwc ? g.P * g.Q * g.K : g.P * g.Q);
    if (g.nhwc)
        launch("dw_forward_kernel<NHWC>", dw_forward_kernel<T, true>, plane_grid(a.outer, a.inner), dim3(kThreads),
               stream, a);
    else
        launch("dw_forward_kernel<NCHW>", dw_forward_kernel<T, false>, plane_grid(a.outer, a.inner), dim3(kThreads),
               stream, a);
}

template <typename T>
void grad_x_depthwise(const ConvGeo& g, const T* go, const T* w, T* gx, void* stream) {
    DwArgs a = dw_args(g);
    a.a = go;
    a.w = w;
    a.bias = nullptr;
    a.out = gx;
    a.outer = g.nhwc ? g.N : g.N * g.C;
    a.inner = static_cast<int>(g.nhwc ? g.H * g.W * g.C : g.H * g.W);
    if (g.nhwc)
        launch("dw_grad_x_kernel<NHWC>", dw_grad_x_kernel<T, true>, plane_grid(a.outer, a.inner), dim3(kThreads),
               stream, a);
    else
        launch("dw_grad_x_kernel<NCHW>", dw_grad_x_kernel<T, false>, plane_grid(a.outer, a.inner), dim3(kThreads),
               stream, a);
}

// grad_bias (x == nullptr) or the depthwise grad_weight into `out` (K x R*S), through `partial` when split.
template <typename T>
void channel_reduce(const ConvGeo& g, const T* go, const T* x, T* out, const Split& sp, T* partial, void* stream) {
    ChanReduceArgs a{};
    a.go = go;
    a.x = x;
    a.dst = sp.splits > 1 ? partial : out;
    a.PQ = g.P * g.Q;
    a.NPQ = g.N * a.PQ;
    a.chunk = sp.chunk;
    a.K = static_cast<int>(g.K);
    a.Kg = static_cast<int>(g.Kg);
    a.C = static_cast<int>(g.C);
    a.H = static_cast<int>(g.H);
    a.W = static_cast<int>(g.W);
    a.P = static_cast<int>(g.P);
    a.Q = static_cast<int>(g.Q);
    a.R = x ? static_cast<int>(g.R) : 1;
    a.S = x ? static_cast<int>(g.S) : 1;
    a.sh = static_cast<int>(g.sh);
    a.sw = static_cast<int>(g.sw);
    a.pt = static_cast<int>(g.pt);
    a.pl = static_cast<int>(g.pl);
    a.dh = static_cast<int>(g.dh);
    a.dw = static_cast<int>(g.dw);
    const int cl = g.nhwc ? kChanLanesNHWC : 1, pl = kThreads / cl;
    a.adv_q = static_cast<int>(pl % g.Q);
    a.adv_p = static_cast<int>((pl / g.Q) % g.P);
    a.adv_n = pl / a.PQ;
    const int64_t RS = static_cast<int64_t>(a.R) * a.S;
    const dim3 grid(static_cast<unsigned>((g.K + cl - 1) / cl), static_cast<unsigned>(RS),
                    static_cast<unsigned>(sp.splits));
    if (g.nhwc)
        launch("channel_reduce_kernel<NHWC>", channel_reduce_kernel<T, true>, grid, dim3(kThreads), stream, a);
    else
        launch("channel_reduce_kernel<NCHW>", channel_reduce_kernel<T, false>, grid, dim3(kThreads), stream, a);
    if (sp.splits > 1) sum_splits<T>(partial, sp.splits, g.K * RS, out, stream);
}

template <typename T>
void forward_impl(const ConvGeo& g, const T* x, const T* w, const T* b, T* out, void* stream) {
    if (is_depthwise(g))
        forward_depthwise<T>(g, x, w, b, out, stream);
    else
        forward_igemm<T>(g, x, w, b, out, stream);
}

template <typename T>
void backward_impl(const ConvGeo& g, const BackwardPlan& pl, const T* go, const T* x, const T* w, T* gx, T* gw,
                   T* gb, T* ws, void* stream) {
    if (gb) channel_reduce<T>(g, go, nullptr, gb, pl.bsplit, ws + pl.ws_weight, stream);
    if (is_depthwise(g)) {
        if (gx) grad_x_depthwise<T>(g, go, w, gx, stream);
        if (gw) channel_reduce<T>(g, go, x, gw, pl.wsplit, ws, stream);
        return;
    }
    if (gx) grad_x_igemm<T>(g, go, w, gx, stream);
    if (gw) grad_w_igemm<T>(g, go, x, gw, pl.wsplit, ws, stream);
}

}  // namespace

std::string conv2d_algorithm(const View& x, const View& weight, const Conv2dParams& p) {
    return is_depthwise(detail::conv_geometry(x, weight, p, "conv2d")) ? "direct" : "implicit_gemm";
}

void conv2d_forward(const View& x, const View& w, const View* bias, const View& out, const Conv2dParams& p,
                    void* stream) {
    const ConvGeo g = detail::check_conv2d_forward(x, w, bias, out, p);
    if (g.N == 0) return;
    check_int32(g, "conv2d");
    if (x.dtype == DType::f32)
        forward_impl<float>(g, x.ptr<float>(), w.ptr<float>(), bias ? bias->ptr<float>() : nullptr, out.ptr<float>(),
                            stream);
    else
        forward_impl<double>(g, x.ptr<double>(), w.ptr<double>(), bias ? bias->ptr<double>() : nullptr,
                             out.ptr<double>(), stream);
}

int64_t conv2d_backward_workspace_size(const View& x, const View& w, const Conv2dParams& p, bool grad_weight,
                                       bool grad_bias) {
    const ConvGeo g = detail::conv_geometry(x, w, p, "conv2d_backward");
    if (g.N == 0) return 0;
    const BackwardPlan pl = plan_backward(g, x.dtype, grad_weight, grad_bias, multiprocessor_count());
    return pl.ws_weight + pl.ws_bias;
}

void conv2d_backward(const View& grad_out, const View& x, const View& w, const View* grad_x,
                     const View* grad_weight, const View* grad_bias, const Conv2dParams& p, const View* workspace,
                     void* stream) {
    const char* op = "conv2d_backward";
    const ConvGeo g = detail::check_conv2d_backward(grad_out, x, w, grad_x, grad_weight, grad_bias, p);
    if (g.N == 0) {  // empty batch: grad_x is empty; the parameter gradients are zero sums
        if (grad_weight)
            check(cudaMemsetAsync(grad_weight->data, 0, grad_weight->numel() * dtype_size(x.dtype),
                                  static_cast<cudaStream_t>(stream)),
                  "cudaMemsetAsync");
        if (grad_bias)
            check(cudaMemsetAsync(grad_bias->data, 0, grad_bias->numel() * dtype_size(x.dtype),
                                  static_cast<cudaStream_t>(stream)),
                  "cudaMemsetAsync");
        return;
    }
    check_int32(g, op);
    const BackwardPlan pl = plan_backward(g, x.dtype, grad_weight != nullptr, grad_bias != nullptr,
                                          multiprocessor_count());
    const int64_t need = pl.ws_weight + pl.ws_bias;
    void* ws = nullptr;
    if (need > 0) {
        if (!workspace || workspace->ndim != 1 || workspace->dtype != x.dtype || !workspace->is_contiguous() ||
            workspace->numel() < need)
            throw ValueError(std::string(op) + ": needs a contiguous 1-d " + dtype_name(x.dtype) +
                             " workspace of at least " + std::to_string(need) +
                             " elements (conv2d_backward_workspace_size)");
        ws = workspace->data;
    }
    if (x.dtype == DType::f32)
        backward_impl<float>(g, pl, grad_out.ptr<float>(), x.ptr<float>(), w.ptr<float>(),
                             grad_x ? grad_x->ptr<float>() : nullptr, grad_weight ? grad_weight->ptr<float>() : nullptr,
                             grad_bias ? grad_bias->ptr<float>() : nullptr, static_cast<float*>(ws), stream);
    else
        backward_impl<double>(g, pl, grad_out.ptr<double>(), x.ptr<double>(), w.ptr<double>(),
                              grad_x ? grad_x->ptr<double>() : nullptr,
                              grad_weight ? grad_weight->ptr<double>() : nullptr,
                              grad_bias ? grad_bias->ptr<double>() : nullptr, static_cast<double*>(ws), stream);
}

}  // namespace cuda
}  // namespace layerforge
