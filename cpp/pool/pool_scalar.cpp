// Pooling fast paths for scalar.
#include "convcore/pool.h"

namespace convcore {
PoolKernels pool_kernels_scalar() { return PoolKernels{"scalar"}; }
}  // namespace convcore
