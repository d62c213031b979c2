// Direct convolution, AVX2+FMA: 8-float vectors; 8 filters x 1 vector or 4 filters x 2 vectors in registers;
// weight gradient 3 or 2 filters x S taps.
// The kernels vectorised over filters (forward and weight gradient) use the same vectors.
#include "conv_direct.h"

namespace convcore {
void conv2d_direct_forward_avx2(const ConvShape& s, const float* x, const float* w, const float* bias, bool relu,
                                float* y, ConvWeightCache* cache) {
  direct_forward_any<8, 8, 4, 2>(s, x, w, bias, relu, y, cache);
}

void conv2d_direct_backward_weight_avx2(const ConvShape& s, const float* dy, const float* x, float* dw,
                                        float* db) {
  direct_backward_weight_any<8, 3, 2>(s, dy, x, dw, db);
}

bool conv2d_filter_vector_weight_avx2(const ConvShape& s, const float* dy, const float* x, float* dw,
                                      float* db) {
  return filter_vector_weight_any<8>(s, dy, x, dw, db);
}

bool conv2d_filter_vector_forward_avx2(const ConvShape& s, const float* x, const float* w, const float* bias,
                                       bool relu, float* y, ConvWeightCache* cache) {
  return filter_vector_forward_any<8>(s, x, w, bias, relu, y, cache);
}

bool conv2d_channel_vector_backward_avx2(const ConvShape& s, const float* dy, const float* x, const float* w,
                                         float* dx, float* dw, float* db) {
  return channel_vector_backward_any<8>(s, dy, x, w, dx, dw, db);
}
}  // namespace convcore
