// SGEMM microkernels for avx512.
#include "convcore/gemm.h"

namespace convcore {
GemmKernels gemm_kernels_avx512() { return GemmKernels{"avx512"}; }
}  // namespace convcore
