// The elementwise / softmax / layer-norm / optimizer kernels compiled for AVX2+FMA (this file gets
// -mavx2 -mfma; entered only when cpu_path() is avx2). The bodies are shared with the portable build.
#define LF_EW_NS ew_avx2
#define LF_EW_TABLE ew_kernels_avx2
#include "elementwise_impl.h"
