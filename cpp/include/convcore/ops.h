// Element-wise and row-wise ops: ReLU, softmax, cross-entropy, batch normalisation (float and double).
#pragma once
#include <cstdint>

namespace convcore {

// y[i] = max(x[i], 0); NaN propagates.
template <typename T>
void relu_forward(const T* x, T* y, int64_t n);
// dx[i] = dy[i] where x[i] > 0, else 0.
template <typename T>
void relu_backward(const T* dy, const T* x, T* dx, int64_t n);
// dx[i] += dy[i] where x[i] > 0: a ReLU's backward added into a gradient that another branch started (a residual
// block's skip), in one pass.
template <typename T>
void relu_backward_add(const T* dy, const T* x, T* dx, int64_t n);

// x, y are (rows, cols); softmax along cols, max-subtracted.
template <typename T>
void softmax_forward(const T* x, T* y, int64_t rows, int64_t cols);

// logits (N, C), labels (N,) in [0, C). Writes probs (N, C) = softmax(logits) and returns
// mean over N of -log softmax(logits)[n, labels[n]] (log-sum-exp, stable).
template <typename T>
double cross_entropy_forward(const T* logits, const int64_t* labels, T* probs, int64_t N, int64_t C);
// dlogits = (probs - onehot(labels)) * scale, scale = dloss / N.
template <typename T>
void cross_entropy_backward(const T* probs, const int64_t* labels, T* dlogits, int64_t N, int64_t C, T scale);

// Batch normalisation on x (N, C, L), per channel c over N*L values. Statistics in float64: mean and biased
// variance (two passes). apply: y = x * scale[c] + shift[c] (+ residual, an (N, C, L) array, when given: a
// residual block's skip), then with relu max(y, 0) (NaN kept).
template <typename T>
void batch_norm_stats(const T* x, int64_t N, int64_t C, int64_t L, double* mean, double* var);
template <typename T>
void batch_norm_apply(const T* x, int64_t N, int64_t C, int64_t L, const T* scale, const T* shift, const T* residual,
                      bool relu, T* y);
// Backward: per-channel sum(dy) and sum(dy * (x - mean)), then dx = gain[c] * (dy - a[c] - (x - mean[c]) * b[c]).
// With relu_out (the output of an apply with relu), dy is taken as 0 where relu_out is not > 0: the ReLU's
// backward in the same pass.
template <typename T>
void batch_norm_backward_sums(const T* dy, const T* x, const T* mean, const T* relu_out, int64_t N, int64_t C,
                              int64_t L, double* sum_dy, double* sum_dy_centred);
template <typename T>
void batch_norm_backward_input(const T* dy, const T* x, const T* mean, const T* gain, const T* a, const T* b,
                               const T* relu_out, int64_t N, int64_t C, int64_t L, T* dx);

// Per-ISA channel reductions behind the float batch norm (rows of L >= kBatchNormVectorRow floats; a channel's rows
// are x[n * stride + l], n < rows, l < L). Each row sums in 32 float lanes (lane = l mod 32), rows add lane by lane
// in float64, and the lanes close in a fixed pairwise tree: the order depends on the shape only, never on the
// thread count (the ISA may change the last bits: FMA contraction).
constexpr int64_t kBatchNormVectorRow = 32;
struct BatchNormRowKernels {
  double (*sum)(const float* x, int64_t rows, int64_t stride, int64_t L);
  double (*centred_squares)(const float* x, int64_t rows, int64_t stride, int64_t L, float mean);  // sum (x-mean)^2
  // *sum = sum g, *sum_centred = sum g * (x - mean), with g = dy, or dy masked to 0 where relu_out is not > 0
  void (*grad_sums)(const float* dy, const float* x, const float* relu_out, int64_t rows, int64_t stride, int64_t L,
                    float mean, double* sum, double* sum_centred);
};
BatchNormRowKernels batch_norm_row_kernels_scalar();
BatchNormRowKernels batch_norm_row_kernels_avx2();
BatchNormRowKernels batch_norm_row_kernels_avx512();

}  // namespace convcore
