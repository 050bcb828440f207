// A CPU emulator of the CUDA execution model, for testing kernels on machines without a GPU.
//
// Compiling a .cu file as C++ with this directory first on the include path replaces the CUDA runtime:
// every CUDA thread of a block runs as a std::thread, __syncthreads() is a barrier over the block's threads,
// __shared__ variables are function-local statics (shared by the threads of a block; blocks run one after
// the other), and layerforge::cuda::launch (csrc/cuda/launch.cuh) runs the grid block by block, checking
// the launch configuration as the driver would. What it checks: index arithmetic, bounds (use it under
// AddressSanitizer), barrier placement (a barrier not reached by every thread deadlocks and is reported),
// launch limits. What it cannot: timing, warp-level behaviour, memory-model races that happen to work
// out, anything in inline PTX (none is used by the kernels built this way).
//
// Built and used by tests/cuda_emu/build.py; never part of the library.
#pragma once
#define LAYERFORGE_CUDA_EMULATION 1

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
    unsigned x, y, z;
};

namespace lf_emu {
extern thread_local uint3 thread_idx;
extern thread_local uint3 block_idx;
extern dim3 block_dim;
extern dim3 grid_dim;
void syncthreads();
// Runs body() once per CUDA thread of every block of the grid (throws std::runtime_error on a bad
// configuration, an exception in a thread, or a barrier deadlock).
void run_grid(const char* name, dim3 grid, dim3 block, const std::function<void()>& body);
}  // namespace lf_emu

#define threadIdx (::lf_emu::thread_idx)
#define blockIdx (::lf_emu::block_idx)
#define blockDim (::lf_emu::block_dim)
#define gridDim (::lf_emu::grid_dim)

inline void __syncthreads() { ::lf_emu::syncthreads(); }

// Vector accesses must be aligned on the GPU (misaligned address fault); x86 would accept them silently.
[[noreturn]] void lf_emu_misaligned(const void* p, std::size_t bytes);
#define LF_CHECK_ALIGNED(p, bytes) \
    ((reinterpret_cast<std::uintptr_t>(p) % (bytes)) ? lf_emu_misaligned((p), (bytes)) : (void)0)

// ---- the slice of the runtime API the layerforge .cu files use on the host
typedef int cudaError_t;
constexpr cudaError_t cudaSuccess = 0;
typedef struct CUstream_st* cudaStream_t;
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };

inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorName(cudaError_t) { return "cudaEmulated"; }
inline const char* cudaGetErrorString(cudaError_t) { return "emulated CUDA error"; }
inline cudaError_t cudaGetDevice(int* d) {
    *d = 0;
    return cudaSuccess;
}
// A small multiprocessor count so that the split-K paths split even on test-sized problems
// (LAYERFORGE_EMU_SMS overrides it).
int lf_emu_multiprocessors();
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr attr, int) {
    *v = attr == cudaDevAttrMultiProcessorCount ? lf_emu_multiprocessors() : 0;
    return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t) {
    std::memset(p, value, bytes);
    return cudaSuccess;
}

// ---- the launch helper of csrc/cuda/launch.cuh, run on the emulator
namespace layerforge {
namespace cuda {
template <typename... Params, typename... Args>
void launch(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, void* /*stream*/, Args&&... args) {
    const std::tuple<std::decay_t<Params>...> params(static_cast<Params>(args)...);
    ::lf_emu::run_grid(name, grid, block, [&] { std::apply(kernel, params); });
}
}  // namespace cuda
}  // namespace layerforge
