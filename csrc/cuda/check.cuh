// Launch/check helpers for the .cu files: every CUDA call and every launch is checked, and the error
// names the call or kernel.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace layerforge {
namespace cuda {

inline void check(cudaError_t err, const char* what) {
    if (err != cudaSuccess)
        throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorName(err) +
                                 ": " + cudaGetErrorString(err));
}

// After a <<<>>> launch: catches bad configurations and "no kernel image is available".
inline void check_launch(const char* kernel_name) { check(cudaGetLastError(), kernel_name); }

}  // namespace cuda
}  // namespace layerforge
