// Direct convolution, AVX-512: 16-float vectors; 16 filters x 1 vector or 8 filters x 2 vectors in registers;
// weight gradient 6 (3-wide kernels) or 4 (5-wide; 6 in passes of 3 and 2 taps for 5-6 filters) filters x S taps.
// The kernels vectorised over filters (forward and weight gradient) use the same vectors.
#include "conv_direct.h"

namespace convcore {
void conv2d_direct_forward_avx512(const ConvShape& s, const float* x, const float* w, const float* bias, bool relu,
                                  float* y, ConvWeightCache* cache) {
  direct_forward_any<16, 16, 8, 2>(s, x, w, bias, relu, y, cache);
}

void conv2d_direct_backward_weight_avx512(const ConvShape& s, const float* dy, const float* x, float* dw,
                                          float* db) {
  direct_backward_weight_any<16, 6, 4>(s, dy, x, dw, db);
}

bool conv2d_filter_vector_weight_avx512(const ConvShape& s, const float* dy, const float* x, float* dw,
                                        float* db) {
  return filter_vector_weight_any<16>(s, dy, x, dw, db);
}

bool conv2d_filter_vector_forward_avx512(const ConvShape& s, const float* x, const float* w, const float* bias,
                                       bool relu, float* y, ConvWeightCache* cache) {
  return filter_vector_forward_any<16>(s, x, w, bias, relu, y, cache);
}

bool conv2d_channel_vector_backward_avx512(const ConvShape& s, const float* dy, const float* x, const float* w,
                                           float* dx, float* dw, float* db) {
  return channel_vector_backward_any<16>(s, dy, x, w, dx, dw, db);
}
}  // namespace convcore
