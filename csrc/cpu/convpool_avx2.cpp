// The direct-convolution and pooling loops compiled with -mavx2 -mfma (see convpool_internal.h); entered
// only when cpu_path() == CpuPath::avx2.
#include <immintrin.h>
#include <cstdint>

#include "convpool_internal.h"

#define LF_ISA avx2
#include "convpool_kernels.inc"
#undef LF_ISA
