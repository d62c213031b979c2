// Batch-norm row reductions, portable (x86-64 baseline) build of batch_norm_rows.h.
#include "batch_norm_rows.h"

namespace convcore {

BatchNormRowKernels batch_norm_row_kernels_scalar() { return row_kernels(); }

}  // namespace convcore
