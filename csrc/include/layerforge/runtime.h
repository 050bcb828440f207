// layerforge/runtime.h — process-wide CPU runtime: detected CPU features, the chosen code path, threads.
#pragma once
#include <string>
#include <vector>

namespace layerforge {

// The CPU code paths. The path is chosen once from CPU features (and LAYERFORGE_CPU_PATH, which may
// force "generic" or "avx2"); set_cpu_path() changes it at run time, which the tests use to check both.
enum class CpuPath : int { generic = 0, avx2 = 1 };

struct CpuFeatures {
    bool avx2 = false;
    bool fma = false;
    bool avx512f = false;
    bool neon = false;
};

const CpuFeatures& cpu_features();
std::vector<std::string> cpu_feature_names();  // e.g. {"sse4.2", "avx", "avx2", "fma"}
std::string cpu_model_name();                   // from /proc/cpuinfo where available

CpuPath cpu_path();
const char* cpu_path_name(CpuPath p);
// Throws ValueError for a path this CPU cannot run (e.g. "avx2" without AVX2+FMA) or an unknown name.
void set_cpu_path(const std::string& name);

// Threads for every kernel (OpenMP). Default: OMP_NUM_THREADS if set, else all cores.
int get_num_threads();
void set_num_threads(int n);  // n >= 1, else ValueError
bool openmp_enabled();

// Peak FP32 throughput of one core, measured with an independent-FMA loop on the chosen path
// (GFLOP/s). Used by the benchmark harness to report % of peak.
double measure_fp32_peak_gflops_one_core(double seconds);

}  // namespace layerforge
