// Launch helper and small device utilities shared by the .cu files.
//
// launch(name, kernel, grid, block, stream, args...) launches on `stream` and checks the launch, naming the
// kernel (pitfall 3). It is the only place a <<<>>> appears for the kernels that use it, so a CPU emulator
// of the CUDA execution model (tests/cuda_emu/, which compiles these .cu files as C++ with std::threads
// standing in for CUDA threads) can replace it: when LAYERFORGE_CUDA_EMULATION is defined, the emulator's
// own cuda_runtime.h provides layerforge::cuda::launch.
#pragma once
#include <cstdint>

#include "check.cuh"

namespace layerforge {
namespace cuda {

#ifndef LAYERFORGE_CUDA_EMULATION
template <typename... Params, typename... Args>
void launch(const char* name, void (*kernel)(Params...), dim3 grid, dim3 block, void* stream, Args&&... args) {
    kernel<<<grid, block, 0, static_cast<cudaStream_t>(stream)>>>(static_cast<Params>(args)...);
    check_launch(name);
}
#endif

// Streaming multiprocessors of the current device (sizes the split-K reductions).
inline int multiprocessor_count() {
    int dev = 0, sms = 0;
    check(cudaGetDevice(&dev), "cudaGetDevice");
    check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
    return sms > 0 ? sms : 1;
}

// LF_CHECK_ALIGNED(p, bytes): a vector access at p needs `bytes` alignment (the GPU faults otherwise). Free
// here; the CPU emulator (where x86 would silently accept it) defines it to check.
#ifndef LF_CHECK_ALIGNED
#define LF_CHECK_ALIGNED(p, bytes) ((void)0)
#endif

// N values of T loaded/stored as one aligned vector access (16 bytes: float4 / double2; 32 bytes: two).
template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
    T v[N];
};

// Grids: x up to 2^31 - 1 blocks, y and z up to 65535.
constexpr int64_t kMaxGridX = 2147483647LL;
constexpr int64_t kMaxGridYZ = 65535;

inline unsigned blocks_for(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

}  // namespace cuda
}  // namespace layerforge
