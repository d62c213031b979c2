// Pooling fast paths for avx2.
#include "convcore/pool.h"

namespace convcore {
PoolKernels pool_kernels_avx2() { return PoolKernels{"avx2"}; }
}  // namespace convcore
