// Reference pooling on hand-computed cases: ties, NaN, padding, ceil_mode divisors, backward routing.
#include <cmath>
#include <cstdint>
#include <limits>

#include "check.h"
#include "convcore/pool.h"

using convcore::PoolShape;

int main() {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // 4x4 plane, 2x2/2: ties take the first maximum, NaN wins
  {
    const float x[16] = {1, 5, 5, 0, 5, 2, nan, 3, 7, 7, 1, 1, 7, 7, 1, 2};
    float y[4];
    int64_t idx[4];
    const PoolShape s{1, 1, 4, 4, 2, 2, 2, 2, 2, 2, 0, 0};
    convcore::max_pool2d_forward_ref<float>(s, x, y, idx);
    CHECK(y[0] == 5 && idx[0] == 1);
    CHECK(std::isnan(y[1]) && idx[1] == 6);
    CHECK(y[2] == 7 && idx[2] == 8);
    CHECK(y[3] == 2 && idx[3] == 15);
    const float dy[4] = {1, 2, 3, 4};
    float dx[16];
    convcore::max_pool2d_backward_ref<float>(s, dy, idx, dx);
    float total = 0;
    for (float v : dx) total += v;
    CHECK(dx[1] == 1 && dx[6] == 2 && dx[8] == 3 && dx[15] == 4 && total == 10);
  }
  // 3x3 plane, 2x2 stride 2 padding 1, ceil_mode output 2x2: corner windows hold one input element
  {
    const float x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    float with_pad[4], without_pad[4];
    const PoolShape s{1, 1, 3, 3, 2, 2, 2, 2, 2, 2, 1, 1};
    convcore::avg_pool2d_forward_ref<float>(s, true, x, with_pad);
    convcore::avg_pool2d_forward_ref<float>(s, false, x, without_pad);
    CHECK(with_pad[0] == 0.25f && without_pad[0] == 1.0f);
    CHECK(with_pad[3] == (5 + 6 + 8 + 9) / 4.0f && without_pad[3] == with_pad[3]);
  }
  // ceil_mode overhang past the padding is not counted: 5-wide row, kernel 2 stride 2, ceil -> last window holds 1
  {
    const float x[5] = {2, 2, 2, 2, 6};
    float y[3];
    const PoolShape s{1, 1, 1, 5, 1, 3, 1, 2, 1, 2, 0, 0};
    convcore::avg_pool2d_forward_ref<float>(s, true, x, y);
    CHECK(y[0] == 2 && y[1] == 2 && y[2] == 6);
    const float dy[3] = {2, 2, 2};
    float dx[5];
    convcore::avg_pool2d_backward_ref<float>(s, true, dy, dx);
    CHECK(dx[0] == 1 && dx[3] == 1 && dx[4] == 2);
  }
  return convcore_test::failures;
}
