// The direct-convolution and pooling loops for the portable path (baseline ISA); see convpool_internal.h.
#include <cstdint>

#include "convpool_internal.h"

#define LF_ISA generic
#include "convpool_kernels.inc"
#undef LF_ISA
