// layerforge/cuda.h — the CUDA side's plain C++ API (no CUDA types, so the bindings and C++ users can
// include it with any host compiler). Implemented in csrc/cuda/*.cu; built only when nvcc is found.
#pragma once
#include <string>
#include <vector>

namespace layerforge {
namespace cuda {

struct DeviceInfo {
    int index = 0;
    std::string name;
    int major = 0, minor = 0;  // compute capability
    long long total_memory = 0;  // bytes
    int multiprocessors = 0;
};

// Number of usable devices; 0 with `why` set (no driver, no device, driver too old...) when none.
// Never throws: importing layerforge on a machine without a GPU must work.
int device_count(std::string* why);
std::vector<DeviceInfo> devices();
std::string compiled_architectures();  // e.g. "80-real;90-real;90-virtual"
int runtime_version();                 // CUDA runtime linked in (e.g. 13000)
int driver_version();                  // 0 when no driver

// Runs a tiny kernel on `device` and checks its result: a smoke test that the compiled architectures
// match the device. Throws std::runtime_error naming the kernel on any CUDA error.
void self_test(int device);

// Throws layerforge::ValueError naming `name` unless `ptr` is device (or managed) memory: a host pointer
// handed to a kernel would crash the process or the device, so the bindings check every array first.
void check_device_pointer(const void* ptr, const char* name);

// Launchers of every kernel family take their stream as `void*` (a cudaStream_t; nullptr = the legacy
// default stream) so that these headers need no CUDA include. They are declared next to the CPU API of
// their family (gemm.h, conv.h, ...) in namespace layerforge::cuda and implemented in csrc/cuda/<family>.cu.

}  // namespace cuda
}  // namespace layerforge
