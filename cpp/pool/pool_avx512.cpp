// Pooling fast paths for avx512.
#include "convcore/pool.h"

namespace convcore {
PoolKernels pool_kernels_avx512() { return PoolKernels{"avx512"}; }
}  // namespace convcore
