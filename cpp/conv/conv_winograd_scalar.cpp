// Winograd F(2x2, 3x3) and F(4x4, 3x3) forward convolution and weight gradient, portable x86-64: 4-float (SSE2)
// vectors in the transforms.
#include "conv_winograd.h"

namespace convcore {
bool conv2d_forward_winograd_scalar(const ConvShape& s, int tile, const float* x, const float* w, const float* bias,
                                    bool relu, float* y, ConvWeightCache* cache) {
  return winograd_forward<4>(s, tile, x, w, bias, relu, y, cache);
}
bool conv2d_backward_weight_winograd_scalar(const ConvShape& s, int tile, const float* dy, const float* x,
                                            float* dw) {
  return winograd_weight<4>(s, tile, dy, x, dw);
}
}  // namespace convcore
