// Optimizer step loops, avx512 build of optim_blocks.h.
#include "optim_blocks.h"

namespace convcore {

OptimKernels optim_kernels_avx512() { return optim_kernels(); }

}  // namespace convcore
