// Max and average pooling, forward and backward (2-D on NCHW, 1-D as H == 1).
#pragma once
#include <cstdint>

namespace convcore {

// x (N, C, H, W) pooled by windows of (kh, kw) with stride and zero/-inf padding into y (N, C, P, Q).
struct PoolShape {
  int64_t N, C, H, W, P, Q;
  int64_t kh, kw, stride_h, stride_w, pad_h, pad_w;
};

// Reference kernels (the oracle and the float64 path), parallel over the N*C planes, PyTorch semantics:
// max: padding is -inf, the first maximum in row-major window order wins, a NaN is the maximum (the last NaN's
// index is kept, as PyTorch does); indices are flat offsets into the H*W plane.
// avg: the divisor counts the window's elements inside the padded input (count_include_pad) or inside the input,
// never the ceil_mode overhang beyond the padding.
template <typename T>
void max_pool2d_forward_ref(const PoolShape& s, const T* x, T* y, int64_t* indices);
template <typename T>
void max_pool2d_backward_ref(const PoolShape& s, const T* dy, const int64_t* indices, T* dx);
template <typename T>
void avg_pool2d_forward_ref(const PoolShape& s, bool count_include_pad, const T* x, T* y);
template <typename T>
void avg_pool2d_backward_ref(const PoolShape& s, bool count_include_pad, const T* dy, T* dx);

// Per-ISA pooling fast paths (filled by the pooling work).
struct PoolKernels {
  const char* name;
};

PoolKernels pool_kernels_scalar();
PoolKernels pool_kernels_avx2();
PoolKernels pool_kernels_avx512();

}  // namespace convcore
