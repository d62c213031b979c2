// Batch-norm row reductions, avx512 build of batch_norm_rows.h.
#include "batch_norm_rows.h"

namespace convcore {

BatchNormRowKernels batch_norm_row_kernels_avx512() { return row_kernels(); }

}  // namespace convcore
