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

}  // namespace cuda
}  // namespace layerforge
