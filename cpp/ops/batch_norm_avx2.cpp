// Batch-norm row reductions, avx2 build of batch_norm_rows.h.
#include "batch_norm_rows.h"

namespace convcore {

BatchNormRowKernels batch_norm_row_kernels_avx2() { return row_kernels(); }

}  // namespace convcore
