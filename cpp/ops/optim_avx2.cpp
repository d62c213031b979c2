// Optimizer step loops, avx2 build of optim_blocks.h.
#include "optim_blocks.h"

namespace convcore {

OptimKernels optim_kernels_avx2() { return optim_kernels(); }

}  // namespace convcore
