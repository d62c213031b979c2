// SGEMM microkernels for avx2.
#include "convcore/gemm.h"

namespace convcore {
GemmKernels gemm_kernels_avx2() { return GemmKernels{"avx2"}; }
}  // namespace convcore
