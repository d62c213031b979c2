// Pooling fast paths, portable: 2x2 stride-2 max/avg forward and backward in plain C++.
#include "convcore/pool.h"
#include "pool_rows.h"

namespace convcore {
namespace {

void max_2x2s2_forward(const float* x, float* y, uint8_t* offsets, int64_t planes, int64_t H, int64_t W) {
  const int64_t OW = W / 2;
  for_output_rows(planes, H, W, [&](int64_t in, int64_t out_row) {
    max_2x2_row_scalar(x + in, x + in + W, y + out_row * OW, offsets ? offsets + out_row * OW : nullptr, OW);
  });
}

void max_2x2s2_backward(const float* dy, const uint8_t* offsets, float* dx, int64_t planes, int64_t H, int64_t W) {
  const int64_t OW = W / 2;
  for_gradient_rows(dx, planes, H, W, [&](int64_t out_row, float* top, float* bot) {
    max_2x2_row_backward_scalar(dy + out_row * OW, offsets + out_row * OW, top, bot, OW);
  });
}

void avg_2x2s2_forward(const float* x, float* y, int64_t planes, int64_t H, int64_t W) {
  const int64_t OW = W / 2;
  for_output_rows(planes, H, W, [&](int64_t in, int64_t out_row) {
    avg_2x2_row_scalar(x + in, x + in + W, y + out_row * OW, OW);
  });
}

void avg_2x2s2_backward(const float* dy, float* dx, int64_t planes, int64_t H, int64_t W) {
  const int64_t OW = W / 2;
  for_gradient_rows(dx, planes, H, W, [&](int64_t out_row, float* top, float* bot) {
    avg_2x2_row_backward_scalar(dy + out_row * OW, top, bot, OW);
  });
}

}  // namespace

PoolKernels pool_kernels_scalar() {
  return PoolKernels{"scalar", max_2x2s2_forward, max_2x2s2_backward, avg_2x2s2_forward, avg_2x2s2_backward,
                     nullptr, nullptr, nullptr};
}

}  // namespace convcore
