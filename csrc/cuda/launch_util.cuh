// Host-side helpers shared by the sequence-model launchers (attention.cu, lstm.cu): stream-ordered scratch,
// the dynamic shared-memory opt-in, device attributes, 1-d grid sizes.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "layerforge/error.h"
#include "check.cuh"

namespace layerforge {
namespace cuda {

// Scratch allocated on `stream` (cudaMallocAsync) and freed on it (cudaFreeAsync) when the launcher returns
// or throws: kernels queued before the free on the same stream finish first.
class StreamScratch {
public:
    StreamScratch(size_t bytes, cudaStream_t stream, const char* what) : stream_(stream) {
        if (bytes) check(cudaMallocAsync(&ptr_, bytes, stream), what);
    }
    ~StreamScratch() {
        if (ptr_) cudaFreeAsync(ptr_, stream_);
    }
    StreamScratch(const StreamScratch&) = delete;
    StreamScratch& operator=(const StreamScratch&) = delete;
    template <typename T>
    T* as(size_t element_offset = 0) const {
        return static_cast<T*>(ptr_) + element_offset;
    }
    void* get() const { return ptr_; }

private:
    void* ptr_ = nullptr;
    cudaStream_t stream_;
};

inline int device_attribute(cudaDeviceAttr attr) {
    int dev = 0, val = 0;
    check(cudaGetDevice(&dev), "cudaGetDevice");
    check(cudaDeviceGetAttribute(&val, attr, dev), "cudaDeviceGetAttribute");
    return val;
}

// Dynamic shared memory above the 48 KiB default needs a per-kernel opt-in.
template <typename Kernel>
void allow_dynamic_smem(Kernel kernel, size_t bytes, const char* name) {
    if (bytes > 48 * 1024)
        check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
              name);
}

inline unsigned grid_blocks(int64_t blocks, const char* name) {
    if (blocks > 0x7fffffffLL) throw ValueError(std::string(name) + ": too many blocks for one launch");
    return static_cast<unsigned>(blocks);
}

}  // namespace cuda
}  // namespace layerforge
