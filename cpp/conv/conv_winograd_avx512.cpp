// Winograd F(2x2, 3x3) and F(4x4, 3x3) forward convolution and weight gradient, both also fused,
// AVX-512: 16-float vectors in the transforms.
#include "conv_winograd.h"

namespace convcore {
bool conv2d_forward_winograd_avx512(const ConvShape& s, int tile, const float* x, const float* w, const float* bias,
                                    bool relu, float* y, ConvWeightCache* cache) {
  return winograd_forward<16>(s, tile, x, w, bias, relu, y, cache);
}
bool conv2d_forward_winograd_fused_avx512(const ConvShape& s, const float* x, const float* w, const float* bias,
                                          bool relu, float* y, ConvWeightCache* cache) {
  return winograd_fused_forward<16>(s, x, w, bias, relu, y, cache);
}
bool conv2d_backward_weight_winograd_avx512(const ConvShape& s, int tile, const float* dy, const float* x,
                                            float* dw) {
  return winograd_weight<16>(s, tile, dy, x, dw);
}
bool conv2d_backward_weight_winograd_fused_avx512(const ConvShape& s, int tile, const float* dy, const float* x,
                                                  float* dw, float* db) {
  return winograd_fused_weight<16>(s, tile, dy, x, dw, db);
}
}  // namespace convcore
