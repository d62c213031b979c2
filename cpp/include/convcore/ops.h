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

// The parameter-free shortcut of a residual block that changes shape (option A of the CIFAR ResNet paper): x (N, C,
// H, W) subsampled by `stride` into channels [lo, lo + C) of y (N, K, P, Q), y[n][lo + c][p][q] = x[n][c][p *
// stride][q * stride] (p * stride < H, q * stride < W), the other K - C channels zero: every element of y written.
template <typename T>
void subsample_pad(const T* x, int64_t N, int64_t C, int64_t H, int64_t W, int64_t stride, int64_t lo, int64_t K,
                   int64_t P, int64_t Q, T* y);
// Its output's size along an axis of `size` pixels, ceil(size / stride) for stride >= 1, and whether channels [lo,
// lo + C) lie in [0, K): both without overflow (the bindings check huge arguments with them).
inline int64_t subsampled_size(int64_t size, int64_t stride) { return size == 0 ? 0 : (size - 1) / stride + 1; }
inline bool channels_within(int64_t lo, int64_t C, int64_t K) { return lo >= 0 && C <= K && lo <= K - C; }
// Its backward through the block's final ReLU, added into dx (N, C, H, W): dx[n][c][p * stride][q * stride] +=
// dy[n][lo + c][p][q] where out[n][lo + c][p][q] > 0 (dy and out (N, K, P, Q)); the other elements of dx untouched.
template <typename T>
void subsample_pad_backward_add(const T* dy, const T* out, int64_t N, int64_t C, int64_t H, int64_t W, int64_t stride,
                                int64_t lo, int64_t K, int64_t P, int64_t Q, T* dx);

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

// Batch normalisation on x (N, C, L), per channel c over its N*L values:
// y = (x - mean[c]) / sqrt(var[c] + eps) * weight[c] + bias[c] (+ residual, an (N, C, L) array, when given: a
// residual block's skip), then with relu max(y, 0) (NaN kept); computed as y = x * scale + shift, scale and shift
// in float64 then rounded to T. train takes the batch's mean and biased variance (float64, centred; written to
// mean and var; 0 when N * L = 0); eval takes them as given.
template <typename T>
void batch_norm_train(const T* x, int64_t N, int64_t C, int64_t L, const T* weight, const T* bias, double eps,
                      const T* residual, bool relu, T* y, double* mean, double* var);
template <typename T>
void batch_norm_eval(const T* x, int64_t N, int64_t C, int64_t L, const double* mean, const double* var,
                     const T* weight, const T* bias, double eps, const T* residual, bool relu, T* y);
// A layer of K outputs (w: `taps` weights each, b: K biases or null) followed by the eval batch norm of its outputs,
// as one layer: w_out = w * s and b_out = b * s + bias - mean * s per output, s = weight / sqrt(var + eps), in
// float64 and rounded once (as the eval pass rounds its scale and shift). Returns false, with w_out and b_out
// unspecified, where a result is not finite (an overflow, or statistics that are not finite).
bool batch_norm_fold(int64_t K, int64_t taps, const float* w, const float* b, const float* mean, const float* var,
                     const float* weight, const float* bias, double eps, float* w_out, float* b_out);
// Backward of a training forward (mean, var: its statistics): dweight[c] = sum(g * xhat), dbias[c] = sum(g), and,
// when dx is not null, dx = weight * inv_std * (g - mean(g) - xhat * mean(g * xhat)), with g = dy,
// inv_std = 1 / sqrt(var + eps) and xhat = (x - mean) * inv_std (mean rounded to T). With relu_out (the forward's
// output with relu), g is dy masked to 0 where relu_out is not > 0: the ReLU's backward in the same pass.
template <typename T>
void batch_norm_backward(const T* dy, const T* x, const double* mean, const double* var, const T* weight, double eps,
                         const T* relu_out, int64_t N, int64_t C, int64_t L, T* dweight, T* dbias, T* dx);

// Per-ISA kernels behind the batch norm, each on a run of (n, c) rows of L values, all rounding each operation as the
// baseline does (no FMA contraction), so that every ISA gives the same bits. Float reductions (rows of
// L >= kBatchNormVectorRow floats): each row sums in 32 float lanes (lane = l mod 32) that close in float64 in a
// fixed pairwise tree; the order depends on L only.
constexpr int64_t kBatchNormVectorRow = 32;
struct BatchNormRowKernels {
  // For `rows` consecutive rows r (at x + r * L): sum[r] = sum x, centred_squares[r] = sum (x - sum[r] / L)^2
  void (*moments)(const float* x, int64_t rows, int64_t L, double* sum, double* centred_squares);
  // For `rows` consecutive rows r of channels c = (first + r) % C: sum[r] = sum g,
  // sum_centred[r] = sum g * (x - mean[c]), with g = dy, or dy masked to 0 where relu_out is not > 0
  void (*grad_sums)(const float* dy, const float* x, const float* relu_out, int64_t rows, int64_t L, int64_t first,
                    int64_t C, const float* mean, double* sum, double* sum_centred);
  // Rows r in [r0, r1) of an (N, C, L) array (row r: channel c = r % C, L values from r * L); x, residual, y, dy,
  // relu_out and dx are the whole arrays. y = (x - centre[c]) * scale[c] + shift[c] (+ residual where not null),
  // then max(y, 0) with relu (NaN kept).
  void (*affine_float)(const float* x, const float* residual, int64_t r0, int64_t r1, int64_t C, int64_t L,
                       const float* centre, const float* scale, const float* shift, bool relu, float* y);
  void (*affine_double)(const double* x, const double* residual, int64_t r0, int64_t r1, int64_t C, int64_t L,
                        const double* centre, const double* scale, const double* shift, bool relu, double* y);
  // dx = gain[c] * (g - a[c] - (x - mean[c]) * b[c]), g = dy, or dy masked to 0 where relu_out (not null) is not > 0
  void (*input_gradient_float)(const float* dy, const float* x, const float* relu_out, int64_t r0, int64_t r1,
                               int64_t C, int64_t L, const float* mean, const float* gain, const float* a,
                               const float* b, float* dx);
  void (*input_gradient_double)(const double* dy, const double* x, const double* relu_out, int64_t r0, int64_t r1,
                                int64_t C, int64_t L, const double* mean, const double* gain, const double* a,
                                const double* b, double* dx);
};
BatchNormRowKernels batch_norm_row_kernels_scalar();
BatchNormRowKernels batch_norm_row_kernels_avx2();
BatchNormRowKernels batch_norm_row_kernels_avx512();

}  // namespace convcore
