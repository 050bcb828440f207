// CPU runtime: feature detection, code-path choice, thread count, and a peak-FLOP probe.
#include "layerforge/runtime.h"

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "layerforge/error.h"
#include "cpu_internal.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace layerforge {

namespace {

CpuFeatures detect_features() {
    CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    f.avx2 = __builtin_cpu_supports("avx2");
    f.fma = __builtin_cpu_supports("fma");
    f.avx512f = __builtin_cpu_supports("avx512f");
#elif defined(__aarch64__)
    f.neon = true;
#endif
    return f;
}

bool path_supported(CpuPath p) {
    if (p == CpuPath::generic) return true;
    const CpuFeatures& f = cpu_features();
    return LAYERFORGE_HAVE_AVX2_BUILD && f.avx2 && f.fma;
}

CpuPath initial_path() {
    CpuPath best = path_supported(CpuPath::avx2) ? CpuPath::avx2 : CpuPath::generic;
    const char* env = std::getenv("LAYERFORGE_CPU_PATH");
    if (env && *env) {
        if (std::strcmp(env, "generic") == 0) return CpuPath::generic;
        // "avx2" or anything else: take the best path this CPU supports.
    }
    return best;
}

std::atomic<int>& path_slot() {
    static std::atomic<int> p{static_cast<int>(initial_path())};
    return p;
}

int default_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();  // honours OMP_NUM_THREADS, else the number of cores
#else
    return 1;
#endif
}

std::atomic<int>& thread_slot() {
    static std::atomic<int> n{default_threads()};
    return n;
}

}  // namespace

const CpuFeatures& cpu_features() {
    static const CpuFeatures f = detect_features();
    return f;
}

std::vector<std::string> cpu_feature_names() {
    std::vector<std::string> out;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2")) out.push_back("sse4.2");
    if (__builtin_cpu_supports("avx")) out.push_back("avx");
    if (__builtin_cpu_supports("avx2")) out.push_back("avx2");
    if (__builtin_cpu_supports("fma")) out.push_back("fma");
    if (__builtin_cpu_supports("avx512f")) out.push_back("avx512f");
#elif defined(__aarch64__)
    out.push_back("neon");
#endif
    return out;
}

std::string cpu_model_name() {
    std::ifstream in("/proc/cpuinfo");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind("model name", 0) == 0) {
            auto pos = line.find(':');
            if (pos != std::string::npos) return line.substr(pos + 2);
        }
    }
    return "unknown";
}

CpuPath cpu_path() { return static_cast<CpuPath>(path_slot().load(std::memory_order_relaxed)); }

const char* cpu_path_name(CpuPath p) { return p == CpuPath::avx2 ? "avx2" : "generic"; }

void set_cpu_path(const std::string& name) {
    CpuPath p;
    if (name == "generic") p = CpuPath::generic;
    else if (name == "avx2") p = CpuPath::avx2;
    else throw ValueError("set_cpu_path: unknown path '" + name + "' (expected 'generic' or 'avx2')");
    if (!path_supported(p))
        throw ValueError("set_cpu_path: this CPU (or this build) cannot run the '" + name + "' path");
    path_slot().store(static_cast<int>(p));
}

int get_num_threads() { return thread_slot().load(std::memory_order_relaxed); }

void set_num_threads(int n) {
    if (n < 1) throw ValueError("set_num_threads: n must be >= 1, got " + std::to_string(n));
    thread_slot().store(n);
}

bool openmp_enabled() {
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
}

double measure_fp32_peak_gflops_one_core(double seconds) {
    using clock = std::chrono::steady_clock;
    const bool avx2 = cpu_path() == CpuPath::avx2;
    double best = 0.0;
    const int64_t iters = 1 << 20;
    auto t_end = clock::now() + std::chrono::duration<double>(seconds);
    do {
        auto t0 = clock::now();
        double flops = avx2 ? detail::fma_probe_avx2(iters) : detail::fma_probe_generic(iters);
        double dt = std::chrono::duration<double>(clock::now() - t0).count();
        if (dt > 0 && flops / dt > best) best = flops / dt;
    } while (clock::now() < t_end);
    return best * 1e-9;
}

}  // namespace layerforge
