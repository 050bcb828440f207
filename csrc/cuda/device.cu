// Device queries and a smoke-test kernel. No CUDA call happens at load time: everything is on demand,
// so importing layerforge._cuda works without a driver (the runtime is linked statically).
#include <cstdint>
#include <string>
#include <vector>

#include "layerforge/cuda.h"
#include "layerforge/error.h"
#include "check.cuh"

#ifndef LAYERFORGE_CUDA_ARCHS
#define LAYERFORGE_CUDA_ARCHS "unknown"
#endif

namespace layerforge {
namespace cuda {

namespace {

// out[i] = 2 * i + 1 for i < n (64-bit indices, as every kernel here).
__global__ void smoke_kernel(float* out, int64_t n) {
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (i < n) out[i] = 2.0f * static_cast<float>(i) + 1.0f;
}

}  // namespace

int device_count(std::string* why) {
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        if (why) {
            std::string plain;
            if (err == cudaErrorNoDevice) plain = "no CUDA device";
            else if (err == cudaErrorInsufficientDriver)
                plain = "no NVIDIA driver, or one older than the CUDA runtime this build links";
            else plain = "the CUDA runtime could not start";
            *why = plain + " (" + cudaGetErrorName(err) + ": " + cudaGetErrorString(err) + ")";
        }
        cudaGetLastError();  // clear the sticky-free error so later calls start clean
        return 0;
    }
    if (n == 0 && why) *why = "the CUDA driver reports no devices";
    return n;
}

std::vector<DeviceInfo> devices() {
    std::vector<DeviceInfo> out;
    const int n = device_count(nullptr);
    for (int i = 0; i < n; ++i) {
        cudaDeviceProp p;
        check(cudaGetDeviceProperties(&p, i), "cudaGetDeviceProperties");
        DeviceInfo d;
        d.index = i;
        d.name = p.name;
        d.major = p.major;
        d.minor = p.minor;
        d.total_memory = static_cast<long long>(p.totalGlobalMem);
        d.multiprocessors = p.multiProcessorCount;
        out.push_back(d);
    }
    return out;
}

std::string compiled_architectures() { return LAYERFORGE_CUDA_ARCHS; }

int runtime_version() {
    int v = 0;
    cudaRuntimeGetVersion(&v);
    return v;
}

int driver_version() {
    int v = 0;
    if (cudaDriverGetVersion(&v) != cudaSuccess) return 0;
    return v;
}

void self_test(int device) {
    check(cudaSetDevice(device), "cudaSetDevice");
    const int64_t n = 1000;
    float* d = nullptr;
    check(cudaMalloc(&d, n * sizeof(float)), "cudaMalloc");
    smoke_kernel<<<static_cast<unsigned>((n + 255) / 256), 256>>>(d, n);
    cudaError_t err = cudaGetLastError();
    std::vector<float> h(n);
    if (err == cudaSuccess) err = cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost);
    cudaFree(d);
    check(err, "smoke_kernel");
    for (int64_t i = 0; i < n; ++i)
        if (h[i] != 2.0f * static_cast<float>(i) + 1.0f)
            throw std::runtime_error("smoke_kernel: wrong result at " + std::to_string(i));
}

void check_device_pointer(const void* ptr, const char* name) {
    cudaPointerAttributes attr;
    const cudaError_t err = cudaPointerGetAttributes(&attr, ptr);
    if (err != cudaSuccess) {
        cudaGetLastError();  // clear it: a bad pointer is the caller's error, not a sticky device fault
        throw ValueError(std::string(name) + ": not a CUDA pointer (" + cudaGetErrorName(err) + ")");
    }
    if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
        throw ValueError(std::string(name) + ": host memory where GPU (device) memory is expected");
    int current = 0;
    check(cudaGetDevice(&current), "cudaGetDevice");
    if (attr.type == cudaMemoryTypeDevice && attr.device != current)
        throw ValueError(std::string(name) + ": lives on GPU " + std::to_string(attr.device) +
                         " but the current device is GPU " + std::to_string(current));
}

}  // namespace cuda
}  // namespace layerforge
