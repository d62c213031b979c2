// Optimizer step loops, portable (x86-64 baseline) build of optim_blocks.h.
#include "optim_blocks.h"

namespace convcore {

OptimKernels optim_kernels_scalar() { return optim_kernels(); }

}  // namespace convcore
