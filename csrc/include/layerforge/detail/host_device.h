// layerforge/detail/host_device.h — LAYERFORGE_HOST_DEVICE marks small inline functions that the CPU
// (g++) and CUDA (nvcc) kernels share from one definition.
#pragma once

#if defined(__CUDACC__)
#define LAYERFORGE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define LAYERFORGE_HOST_DEVICE inline
#endif
