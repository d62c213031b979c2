// Convolution kernels on NCHW data (1-D convolution is the H == 1 case). Kernels trust their inputs: the Python
// layer validates shapes and computes P, Q with its one output-size helper.
#pragma once
#include <cstdint>

namespace convcore {

// x (N, C, H, W), w (K, C/groups, R, S), y (N, K, P, Q); every size int64.
struct ConvShape {
  int64_t N, C, H, W;       // input
  int64_t K, R, S;          // filters and their extent
  int64_t P, Q;             // output extent
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  int64_t groups;
};

// Reference kernels (the oracle, and the float64 path): direct loops, parallel over independent output planes,
// each output element summed in a fixed order, so results do not depend on the thread count.
template <typename T>
void conv2d_forward_ref(const ConvShape& s, const T* x, const T* w, const T* bias /* K or null */, T* y);
template <typename T>
void conv2d_backward_input_ref(const ConvShape& s, const T* dy, const T* w, T* dx);
template <typename T>
void conv2d_backward_weight_ref(const ConvShape& s, const T* dy, const T* x, T* dw);
template <typename T>
void conv2d_backward_bias_ref(const ConvShape& s, const T* dy, T* db);

}  // namespace convcore
