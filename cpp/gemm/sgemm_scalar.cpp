// SGEMM microkernels for scalar.
#include "convcore/gemm.h"

namespace convcore {
GemmKernels gemm_kernels_scalar() { return GemmKernels{"scalar"}; }
}  // namespace convcore
