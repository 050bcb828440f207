// Fused multi-tensor optimizer steps on the GPU: SGD, Adam/AdamW, RMSprop over any number of parameters in
// ONE kernel launch per step and dtype.
//
// The host describes every (non-empty) parameter in a Slot: its five pointers (param, grad, up to three
// state arrays; null when absent), its size, the index of its first chunk, and its update coefficients,
// computed in double exactly as the CPU kernel computes them (csrc/cpu/elementwise_impl.h), so the element
// math is the CPU's in the param's dtype. The slots travel to the device in one copy from a pinned staging
// buffer; each tensor is cut into chunks of kChunk elements, and block b takes chunks b, b + gridDim.x, ...,
// finding its tensor by binary search over the chunk starts. A tensor whose pointers are all 16-byte
// aligned is read and written with float4 / double2 accesses (its chunks start at multiples of kChunk, so
// they stay aligned), the ragged end element by element. Elementwise: nothing depends on the grid.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "layerforge/detail/elementwise_checks.h"
#include "layerforge/optim.h"
#include "check.cuh"
#include "ew_util.cuh"

namespace layerforge {
namespace cuda {
namespace {

using ew::Pack;

constexpr int64_t kChunk = 32768;  // elements per block-chunk (a multiple of every pack size)
constexpr int kThreads = 256;
constexpr int kCoefs = 10;

enum class Opt : int { sgd = 0, adam = 1, rmsprop = 2 };

// One parameter of a launch (host-built, copied to the device as an array). 144 bytes.
struct alignas(16) Slot {
    void* ptr[5];           // param, grad, state 0..2 (SGD: buf; Adam: exp_avg, exp_avg_sq, max_exp_avg_sq;
                            // RMSprop: square_avg, grad_avg, momentum_buffer); null = absent
    int64_t n;              // elements
    int64_t chunk_begin;    // first chunk of this tensor in the launch
    double coef[kCoefs];    // update coefficients (see make_*_slot), cast to the param's dtype on the device
    int32_t flags;          // SGD: bit 0 first_step, bit 1 nesterov
    int32_t aligned;        // every pointer 16-byte aligned
};

// ---- the update rules (one element; e = {param, grad, state0, state1, state2}) --------------------------
// Operation for operation the CPU kernels'. Absent states (null pointers) are never read or written; which
// are present is uniform over a block, so the branches do not diverge.
template <Opt kOpt, typename T>
__device__ __forceinline__ void update(T (&e)[5], const T (&k)[kCoefs], int flags, bool has2, bool has3,
                                       bool has4) {
    if constexpr (kOpt == Opt::sgd) {
        // k: lr, wd, momentum, 1 - dampening, sign
        const T lr = k[0], wd = k[1], mom = k[2], damp = k[3], sign = k[4];
        T d = sign * e[1] + wd * e[0];
        if (has2) {
            const T bnew = (flags & 1) ? d : mom * e[2] + damp * d;
            e[2] = bnew;
            d = (flags & 2) ? d + mom * bnew : bnew;
        }
        e[0] = e[0] - lr * d;
    } else if constexpr (kOpt == Opt::adam) {
        // k: step_size = lr / bc1, sqrt(bc2), 1 - beta1, beta2, 1 - beta2, eps, wd (0 when decoupled),
        //    decay (1 - lr wd when decoupled, else 1), sign
        const T step_size = k[0], bc2_sqrt = k[1], b1 = k[2], b2 = k[3], omb2 = k[4], eps = k[5], wd = k[6],
                decay = k[7], sign = k[8];
        const T pi = e[0] * decay;
        const T gi = sign * e[1] + wd * pi;
        const T mi = e[2] + b1 * (gi - e[2]);
        const T vi = b2 * e[3] + omb2 * gi * gi;
        T vm = vi;
        if (has4) {
            vm = e[4] > vi ? e[4] : vi;
            e[4] = vm;
        }
        e[2] = mi;
        e[3] = vi;
        e[0] = pi - step_size * (mi / (ew::dsqrt(vm) / bc2_sqrt + eps));
    } else {
        // k: lr, alpha, 1 - alpha, eps, wd, momentum, sign
        const T lr = k[0], a = k[1], oma = k[2], eps = k[3], wd = k[4], mom = k[5], sign = k[6];
        const T gi = sign * e[1] + wd * e[0];
        const T s = a * e[2] + oma * gi * gi;
        e[2] = s;
        T avg;
        if (has3) {
            const T gm = e[3] + oma * (gi - e[3]);
            e[3] = gm;
            avg = ew::dsqrt(s - gm * gm) + eps;
        } else {
            avg = ew::dsqrt(s) + eps;
        }
        if (has4) {
            const T bn = mom * e[4] + gi / avg;
            e[4] = bn;
            e[0] = e[0] - lr * bn;
        } else {
            e[0] = e[0] - lr * (gi / avg);
        }
    }
    (void)has2;
    (void)has3;
    (void)has4;
    (void)flags;
}

template <Opt kOpt, typename T>
__global__ void __launch_bounds__(kThreads) multi_tensor_kernel(const Slot* __restrict__ slots, int64_t count,
                                                                 int64_t total_chunks) {
    constexpr int N = Pack<T>::N;
    for (int64_t chunk = blockIdx.x; chunk < total_chunks; chunk += gridDim.x) {
        // The tensor of this chunk: the last slot whose chunk_begin <= chunk (slots are in chunk order and
        // every slot has at least one chunk).
        int64_t lo = 0, hi = count - 1;
        while (lo < hi) {
            const int64_t mid = (lo + hi + 1) / 2;
            if (slots[mid].chunk_begin <= chunk) lo = mid;
            else hi = mid - 1;
        }
        const Slot& s = slots[lo];
        T* p[5];
#pragma unroll
        for (int q = 0; q < 5; ++q) p[q] = static_cast<T*>(s.ptr[q]);
        T k[kCoefs];
#pragma unroll
        for (int q = 0; q < kCoefs; ++q) k[q] = T(s.coef[q]);
        const int flags = s.flags;
        const bool has2 = p[2] != nullptr, has3 = p[3] != nullptr, has4 = p[4] != nullptr;
        const int64_t begin = (chunk - s.chunk_begin) * kChunk;
        const int64_t end = begin + kChunk < s.n ? begin + kChunk : s.n;

        // Full packs with vector accesses (begin is a multiple of kChunk, hence of N), the rest one by one.
        int64_t scalar_from = begin;
        if (s.aligned) {
            const int64_t packed_end = begin + (end - begin) / N * N;
            for (int64_t i = begin + static_cast<int64_t>(threadIdx.x) * N; i < packed_end;
                 i += static_cast<int64_t>(blockDim.x) * N) {
                T v[5][N];
#pragma unroll
                for (int q = 0; q < 5; ++q) {
                    if (p[q]) {
                        ew::ld(p[q] + i, v[q]);
                    } else {
#pragma unroll
                        for (int j = 0; j < N; ++j) v[q][j] = T(0);
                    }
                }
#pragma unroll
                for (int j = 0; j < N; ++j) {
                    T e[5] = {v[0][j], v[1][j], v[2][j], v[3][j], v[4][j]};
                    update<kOpt>(e, k, flags, has2, has3, has4);
                    v[0][j] = e[0];
                    v[2][j] = e[2];
                    v[3][j] = e[3];
                    v[4][j] = e[4];
                }
                ew::st(p[0] + i, v[0]);
#pragma unroll
                for (int q = 2; q < 5; ++q)
                    if (p[q]) ew::st(p[q] + i, v[q]);
            }
            scalar_from = packed_end;
        }
        for (int64_t i = scalar_from + threadIdx.x; i < end; i += blockDim.x) {
            T e[5];
#pragma unroll
            for (int q = 0; q < 5; ++q) e[q] = p[q] ? p[q][i] : T(0);
            update<kOpt>(e, k, flags, has2, has3, has4);
            p[0][i] = e[0];
#pragma unroll
            for (int q = 2; q < 5; ++q)
                if (p[q]) p[q][i] = e[q];
        }
    }
}

// ---- host: slots --------------------------------------------------------------------------------------------
const void* data_or_null(const View* v) { return v ? v->data : nullptr; }
const View* present(const View& v) { return v.data ? &v : nullptr; }

Slot make_slot(const View& param, const View& grad, const View* s0, const View* s1, const View* s2) {
    Slot s{};
    const void* ptrs[5] = {param.data, grad.data, data_or_null(s0), data_or_null(s1), data_or_null(s2)};
    s.aligned = 1;
    for (int q = 0; q < 5; ++q) {
        s.ptr[q] = const_cast<void*>(ptrs[q]);
        if (ptrs[q] && !ew::aligned16(ptrs[q])) s.aligned = 0;
    }
    s.n = param.numel();
    return s;
}

// The coefficients below are the CPU kernel's, computed the same way in double.
Slot sgd_slot(const cuda::SgdTensor& t) {
    const View* buf = detail::check_sgd(t.param, t.grad, present(t.momentum_buffer), t.p);
    Slot s = make_slot(t.param, t.grad, buf, nullptr, nullptr);
    const SgdParams& p = t.p;
    const double c[] = {p.lr, p.weight_decay, p.momentum, 1 - p.dampening, p.maximize ? -1.0 : 1.0};
    std::memcpy(s.coef, c, sizeof(c));
    s.flags = (p.first_step ? 1 : 0) | (p.nesterov ? 2 : 0);
    return s;
}

Slot adam_slot(const cuda::AdamTensor& t) {
    const View* vmax = detail::check_adam(t.param, t.grad, t.exp_avg, t.exp_avg_sq, present(t.max_exp_avg_sq), t.p);
    Slot s = make_slot(t.param, t.grad, &t.exp_avg, &t.exp_avg_sq, vmax);
    const AdamParams& p = t.p;
    const double bc1 = 1 - std::pow(p.beta1, double(p.step));
    const double bc2 = 1 - std::pow(p.beta2, double(p.step));
    const double c[] = {p.lr / bc1,
                        std::sqrt(bc2),
                        1 - p.beta1,
                        p.beta2,
                        1 - p.beta2,
                        p.eps,
                        p.decoupled ? 0.0 : p.weight_decay,
                        p.decoupled ? 1 - p.lr * p.weight_decay : 1.0,
                        p.maximize ? -1.0 : 1.0};
    std::memcpy(s.coef, c, sizeof(c));
    return s;
}

Slot rmsprop_slot(const cuda::RmspropTensor& t) {
    const detail::RmspropState st = detail::check_rmsprop(t.param, t.grad, t.square_avg, present(t.grad_avg),
                                                          present(t.momentum_buffer), t.p);
    Slot s = make_slot(t.param, t.grad, &t.square_avg, st.grad_avg, st.momentum_buffer);
    const RmspropParams& p = t.p;
    const double c[] = {p.lr, p.alpha, 1 - p.alpha, p.eps, p.weight_decay, p.momentum, p.maximize ? -1.0 : 1.0};
    std::memcpy(s.coef, c, sizeof(c));
    return s;
}

// ---- host: staging the slots on the device ---------------------------------------------------------------------
// A small ring of (pinned host buffer, device buffer, event) per device. A launch takes the next entry,
// waits for the event of that entry's previous launch (kRing launches ago: normally long finished; if the
// host runs that far ahead of the GPU, waiting is the right back-pressure), writes the slots into the pinned
// buffer, copies them with cudaMemcpyAsync on the launch's stream (truly asynchronous: pinned memory),
// launches, and records the event after the kernel. No allocation per step once the buffers have grown.
// The buffers live as long as the process: freeing them at exit could run after the CUDA runtime is gone.
constexpr int kRing = 4;
struct StagingEntry {
    void* host = nullptr;
    void* dev = nullptr;
    size_t cap = 0;
    cudaEvent_t done = nullptr;
    bool pending = false;
};
struct DeviceStaging {
    std::mutex mu;
    StagingEntry entry[kRing];
    int next = 0;
};

DeviceStaging& staging_for(int device) {
    static std::mutex map_mu;
    static std::map<int, DeviceStaging*>* all = new std::map<int, DeviceStaging*>();  // never freed, see above
    std::lock_guard<std::mutex> lock(map_mu);
    DeviceStaging*& d = (*all)[device];
    if (!d) d = new DeviceStaging();
    return *d;
}

template <Opt kOpt, typename T>
void launch(std::vector<Slot>& slots, int64_t total_chunks, void* stream, const char* name) {
    int device = 0;
    check(cudaGetDevice(&device), "cudaGetDevice");
    DeviceStaging& staging = staging_for(device);
    std::lock_guard<std::mutex> lock(staging.mu);  // the GIL is released: two Python threads may step at once
    StagingEntry& e = staging.entry[staging.next];
    staging.next = (staging.next + 1) % kRing;
    if (e.pending) {
        check(cudaEventSynchronize(e.done), "cudaEventSynchronize (optimizer staging)");
        e.pending = false;
    }
    const size_t bytes = slots.size() * sizeof(Slot);
    if (e.cap < bytes) {
        size_t cap = 2 * e.cap > bytes ? 2 * e.cap : bytes;
        if (cap < 16384) cap = 16384;
        // This entry's previous kernel has finished (pending was waited for above).
        if (e.host) check(cudaFreeHost(e.host), "cudaFreeHost");
        if (e.dev) check(cudaFree(e.dev), "cudaFree");
        e.host = e.dev = nullptr;
        e.cap = 0;
        check(cudaMallocHost(&e.host, cap), "cudaMallocHost (optimizer staging)");
        check(cudaMalloc(&e.dev, cap), "cudaMalloc (optimizer staging)");
        e.cap = cap;
    }
    if (!e.done) check(cudaEventCreateWithFlags(&e.done, cudaEventDisableTiming), "cudaEventCreate");
    std::memcpy(e.host, slots.data(), bytes);
    const cudaStream_t s = ew::as_stream(stream);
    check(cudaMemcpyAsync(e.dev, e.host, bytes, cudaMemcpyHostToDevice, s), "cudaMemcpyAsync (optimizer slots)");
    const int64_t max_blocks = int64_t(1) << 20;
    const unsigned blocks = static_cast<unsigned>(total_chunks < max_blocks ? total_chunks : max_blocks);
    multi_tensor_kernel<kOpt, T><<<blocks, kThreads, 0, s>>>(static_cast<const Slot*>(e.dev),
                                                             static_cast<int64_t>(slots.size()), total_chunks);
    const cudaError_t launch_err = cudaGetLastError();
    // Recorded even when the launch failed, so the entry is not reused before the copy has read it.
    check(cudaEventRecord(e.done, s), "cudaEventRecord");
    e.pending = true;
    check(launch_err, name);
}

// Validates every tensor (make_slot_fn), drops empty ones, numbers the chunks, launches once.
template <Opt kOpt, typename Tensor, typename MakeSlot>
void step_all(const Tensor* tensors, int64_t count, void* stream, const char* op, const char* kernel,
              MakeSlot make_slot_fn) {
    if (count < 0) throw ValueError(std::string(op) + ": negative tensor count");
    if (count > 0 && !tensors) throw ValueError(std::string(op) + ": tensors is null");
    std::vector<Slot> slots;
    slots.reserve(static_cast<size_t>(count));
    int64_t chunks = 0;
    DType dtype = DType::f32;
    for (int64_t i = 0; i < count; ++i) {
        const View& param = tensors[i].param;
        if (i == 0) dtype = param.dtype;
        else if (param.dtype != dtype)
            throw DTypeError(std::string(op) + ": tensor " + std::to_string(i) + " has dtype " +
                             dtype_name(param.dtype) + ", tensor 0 has " + dtype_name(dtype) +
                             " (one launch per dtype)");
        // Nothing to update (and an empty array may have a null pointer, which would read as "absent").
        if (param.numel() == 0) continue;
        if (!param.data) throw ValueError(std::string(op) + ": tensor " + std::to_string(i) + ": param is null");
        Slot s = make_slot_fn(tensors[i]);
        if (!s.ptr[1]) throw ValueError(std::string(op) + ": tensor " + std::to_string(i) + ": grad is null");
        s.chunk_begin = chunks;
        chunks += (s.n + kChunk - 1) / kChunk;
        slots.push_back(s);
    }
    if (slots.empty()) return;
    if (dtype == DType::f32) launch<kOpt, float>(slots, chunks, stream, kernel);
    else launch<kOpt, double>(slots, chunks, stream, kernel);
}

}  // namespace

void sgd_step(const SgdTensor* tensors, int64_t count, void* stream) {
    step_all<Opt::sgd>(tensors, count, stream, "sgd_step", "sgd_multi_tensor_kernel", sgd_slot);
}

void adam_step(const AdamTensor* tensors, int64_t count, void* stream) {
    step_all<Opt::adam>(tensors, count, stream, "adam_step", "adam_multi_tensor_kernel", adam_slot);
}

void rmsprop_step(const RmspropTensor* tensors, int64_t count, void* stream) {
    step_all<Opt::rmsprop>(tensors, count, stream, "rmsprop_step", "rmsprop_multi_tensor_kernel", rmsprop_slot);
}

}  // namespace cuda
}  // namespace layerforge
