// Max and average pooling, forward and backward (2-D on NCHW, 1-D as H == 1).
#pragma once
#include <cstdint>

namespace convcore {

// Per-ISA pooling fast paths (filled by the pooling work).
struct PoolKernels {
  const char* name;
};

PoolKernels pool_kernels_scalar();
PoolKernels pool_kernels_avx2();
PoolKernels pool_kernels_avx512();

}  // namespace convcore
