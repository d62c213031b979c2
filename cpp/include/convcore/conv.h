// 2-D convolution (NCHW), forward and backward; conv1d is the same code with H == 1.
// The *_ref kernels are the readable oracle and fallback (float and double) the fast kernels are tested against.
#pragma once
#include <cstdint>

namespace convcore {

// Sizes of one convolution, validated by the caller (convcore/functional/conv.py):
// x (N, C, H, W), w (K, C/groups, R, S), bias (K), y (N, K, P, Q) with
// P = (H + 2*pad_h - dil_h*(R-1) - 1) / stride_h + 1 (likewise Q), P, Q >= 1.
struct ConvShape {
  int64_t N, C, H, W;
  int64_t K, R, S;
  int64_t P, Q;
  int64_t stride_h, stride_w;
  int64_t pad_h, pad_w;
  int64_t dil_h, dil_w;
  int64_t groups;
};

// Epilogue applied to each output after the bias: none, or max(y, 0) with NaN propagated.
enum class Activation : int { none = 0, relu = 1 };

// y (N, K, P, Q) = activation(conv(x, w) + bias); bias may be null. y is fully written.
template <typename T>
void conv2d_forward_ref(const ConvShape& s, const T* x, const T* w, const T* bias, Activation activation, T* y);

// dx (N, C, H, W) from dy (N, K, P, Q) and w (K, C/groups, R, S). dx is fully written.
template <typename T>
void conv2d_backward_input_ref(const ConvShape& s, const T* dy, const T* w, T* dx);

// dw (K, C/groups, R, S) from dy (N, K, P, Q) and x (N, C, H, W); each dw element sums over n, p, q in order.
template <typename T>
void conv2d_backward_weight_ref(const ConvShape& s, const T* dy, const T* x, T* dw);

// db (K) = sum of dy (N, K, P, Q) over n, p, q in order.
template <typename T>
void conv2d_backward_bias_ref(const ConvShape& s, const T* dy, T* db);

// Blocked im2col, the B-operand producer of the GEMM convolution. For group g the im2col matrix has
// Cg*R*S rows (c, r, t) and N*P*Q columns (n, p, q) (the batch folded in, so late layers with few pixels fill
// a tile), entry x[n, g*Cg + c, p*stride_h - pad_h + r*dil_h, q*stride_w - pad_w + t*dil_w] or 0 in the padding.
// Writes rows [k0, k0+kc) x columns [j0, j0+nb) as ceil(nb/nr) panels of kc x nr (panel i at out + i*kc*nr,
// element (row, col) at row*nr + col), zero-filled past nb: out holds kc * ceil(nb/nr) * nr elements.
template <typename T>
void im2col_pack_panels(const ConvShape& s, const T* x, int64_t group, int64_t k0, int64_t kc, int64_t j0,
                        int64_t nb, int64_t nr, T* out);

// The adjoint of im2col for image n, group g: dx[n, g*Cg + c] += sum over (r, t, p, q) of
// dcols[(c*R + r)*S + t, p*Q + q] scattered back to its input pixel; dcols is (Cg*R*S, P*Q) row-major.
// Parallel over c; each dx element accumulates in the fixed order (r, t, p, q).
template <typename T>
void col2im_add(const ConvShape& s, const T* dcols, int64_t n, int64_t group, T* dx);

}  // namespace convcore
