// Direct convolution, portable x86-64: 4-float (SSE2) vectors; 8 filters x 1 vector or 4 filters x 2 vectors;
// weight gradient 3 or 2 filters x S taps.
// The kernels vectorised over filters (forward and weight gradient) use the same vectors.
#include "conv_direct.h"

namespace convcore {
void conv2d_direct_forward_scalar(const ConvShape& s, const float* x, const float* w, const float* bias, bool relu,
                                  float* y, ConvWeightCache* cache) {
  direct_forward_any<4, 8, 4, 2>(s, x, w, bias, relu, y, cache);
}

void conv2d_direct_backward_weight_scalar(const ConvShape& s, const float* dy, const float* x, float* dw,
                                          float* db) {
  direct_backward_weight_any<4, 3, 2>(s, dy, x, dw, db);
}

bool conv2d_filter_vector_weight_scalar(const ConvShape& s, const float* dy, const float* x, float* dw,
                                        float* db) {
  return filter_vector_weight_any<4>(s, dy, x, dw, db);
}

bool conv2d_filter_vector_forward_scalar(const ConvShape& s, const float* x, const float* w, const float* bias,
                                       bool relu, float* y, ConvWeightCache* cache) {
  return filter_vector_forward_any<4>(s, x, w, bias, relu, y, cache);
}

bool conv2d_channel_vector_backward_scalar(const ConvShape& s, const float* dy, const float* x, const float* w,
                                           float* dx, float* dw, float* db) {
  return channel_vector_backward_any<4>(s, dy, x, w, dx, dw, db);
}
}  // namespace convcore
