// Direct convolution, portable x86-64: 4-float (SSE2) vectors; 8 filters x 1 vector or 4 filters x 2 vectors.
#include "conv_direct.h"

namespace convcore {
void conv2d_direct_forward_scalar(const ConvShape& s, const float* x, const float* w, const float* bias, bool relu,
                                  float* y) {
  direct_forward_any<4, 8, 4, 2>(s, x, w, bias, relu, y);
}
}  // namespace convcore
