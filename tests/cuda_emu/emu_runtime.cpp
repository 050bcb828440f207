// The CPU emulator's runtime (see cuda_runtime.h): grid execution with one std::thread per CUDA thread,
// a deadlock-detecting block barrier, and the layerforge/cuda.h device queries answering "one emulated
// device" (check_device_pointer accepts host memory, which is the emulated device memory).
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "cuda_runtime.h"
#include "layerforge/cuda.h"

namespace lf_emu {

thread_local uint3 thread_idx{0, 0, 0};
thread_local uint3 block_idx{0, 0, 0};
dim3 block_dim;
dim3 grid_dim;

namespace {

// Barrier over the threads of the running block, strict about CUDA's rule that every thread of a block
// executes the same sequence of __syncthreads: a barrier reached after some thread of the block has exited,
// a thread exiting while others wait, or a wait longer than the timeout (a barrier in divergent code) is
// reported as an error instead of hanging or silently passing.
struct Barrier {
    std::mutex mu;
    std::condition_variable cv;
    unsigned expected = 0, arrived = 0, exited = 0;
    unsigned long long generation = 0;
    bool broken = false;

    void reset(unsigned n) {
        std::lock_guard<std::mutex> lock(mu);
        expected = n;
        arrived = exited = 0;
        broken = false;
    }
    void wait() {
        std::unique_lock<std::mutex> lock(mu);
        if (broken || exited > 0) {
            broken = true;
            cv.notify_all();
            throw std::runtime_error("__syncthreads reached after another thread of the block exited");
        }
        const unsigned long long gen = generation;
        if (++arrived == expected) {
            arrived = 0;
            ++generation;
            cv.notify_all();
            return;
        }
        if (!cv.wait_for(lock, std::chrono::seconds(120), [&] { return generation != gen || broken; })) {
            broken = true;
            cv.notify_all();
            throw std::runtime_error("__syncthreads deadlock: not every thread of the block reached the barrier");
        }
        if (generation == gen) throw std::runtime_error("__syncthreads: a thread of the block exited or failed");
    }
    void exit_thread() {
        std::lock_guard<std::mutex> lock(mu);
        ++exited;
        if (arrived > 0) {  // others wait at a barrier this thread will never reach
            broken = true;
            cv.notify_all();
        }
    }
};

Barrier g_barrier;

}  // namespace

void syncthreads() { g_barrier.wait(); }

void run_grid(const char* name, dim3 grid, dim3 block, const std::function<void()>& body) {
    const std::string kname(name);
    const unsigned long long nthreads = 1ull * block.x * block.y * block.z;
    if (nthreads == 0 || nthreads > 1024 || block.z > 64)
        throw std::runtime_error(kname + ": invalid block (" + std::to_string(block.x) + ", " + std::to_string(block.y) +
                                 ", " + std::to_string(block.z) + ")");
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 2147483647u || grid.y > 65535 || grid.z > 65535)
        throw std::runtime_error(kname + ": invalid grid (" + std::to_string(grid.x) + ", " + std::to_string(grid.y) +
                                 ", " + std::to_string(grid.z) + ")");
    grid_dim = grid;
    block_dim = block;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                g_barrier.reset(static_cast<unsigned>(nthreads));
                std::vector<std::thread> threads;
                std::vector<std::exception_ptr> errors(nthreads);
                threads.reserve(nthreads);
                for (unsigned long long t = 0; t < nthreads; ++t) {
                    threads.emplace_back([&, t] {
                        thread_idx = {static_cast<unsigned>(t % block.x), static_cast<unsigned>(t / block.x % block.y),
                                      static_cast<unsigned>(t / (1ull * block.x * block.y))};
                        block_idx = {bx, by, bz};
                        try {
                            body();
                        } catch (...) {
                            errors[t] = std::current_exception();
                        }
                        g_barrier.exit_thread();
                    });
                }
                for (auto& th : threads) th.join();
                for (auto& e : errors)
                    if (e) {
                        try {
                            std::rethrow_exception(e);
                        } catch (const std::exception& ex) {
                            throw std::runtime_error(kname + " (emulated) block (" + std::to_string(bx) + ", " +
                                                     std::to_string(by) + ", " + std::to_string(bz) + "): " + ex.what());
                        }
                    }
            }
}

}  // namespace lf_emu

void lf_emu_misaligned(const void* p, std::size_t bytes) {
    throw std::runtime_error("misaligned vector access: " + std::to_string(reinterpret_cast<std::uintptr_t>(p)) +
                             " is not " + std::to_string(bytes) + "-byte aligned");
}

int lf_emu_multiprocessors() {
    const char* s = std::getenv("LAYERFORGE_EMU_SMS");
    const int v = s ? std::atoi(s) : 2;
    return v > 0 ? v : 2;
}

// ---- layerforge/cuda.h on the emulator
namespace layerforge {
namespace cuda {

int device_count(std::string* why) {
    if (why) why->clear();
    return 1;
}
std::vector<DeviceInfo> devices() {
    DeviceInfo d;
    d.name = "layerforge CPU emulator";
    d.multiprocessors = lf_emu_multiprocessors();
    return {d};
}
std::string compiled_architectures() { return "emulated"; }
int runtime_version() { return 0; }
int driver_version() { return 0; }
void self_test(int) {}
void check_device_pointer(const void*, const char*) {}

}  // namespace cuda
}  // namespace layerforge
