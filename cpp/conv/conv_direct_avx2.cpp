// Direct convolution, AVX2+FMA: 8-float vectors; 8 filters x 1 vector or 4 filters x 2 vectors in registers.
#include "conv_direct.h"

namespace convcore {
void conv2d_direct_forward_avx2(const ConvShape& s, const float* x, const float* w, const float* bias, bool relu,
                                float* y) {
  direct_forward_any<8, 8, 4, 2>(s, x, w, bias, relu, y);
}
}  // namespace convcore
