// Reference convolution on hand-computed cases, and float vs double agreement on a strided, dilated, grouped case.
#include <cstdint>
#include <vector>

#include "check.h"
#include "convcore/conv.h"

using convcore::ConvShape;

int main() {
  // x (1, 1, 3, 3) = 1..9, w (1, 1, 2, 2) = [[1, 0], [0, -1]], bias 10, stride 1, no padding:
  // y = x[p][q] - x[p+1][q+1] + 10
  {
    const float x[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    const float w[4] = {1, 0, 0, -1};
    const float b[1] = {10};
    float y[4];
    const ConvShape s{1, 1, 3, 3, 1, 2, 2, 2, 2, 1, 1, 0, 0, 1, 1, 1};
    convcore::conv2d_forward_ref<float>(s, x, w, b, y);
    for (float v : y) CHECK(v == 6.0f);
    // dy = 1 everywhere: dx = sum of the kernel taps that touch each pixel; dw = sum of the windows; db = 4
    const float dy[4] = {1, 1, 1, 1};
    float dx[9], dw[4], db[1];
    convcore::conv2d_backward_input_ref<float>(s, dy, w, dx);
    convcore::conv2d_backward_weight_ref<float>(s, dy, x, dw);
    convcore::conv2d_backward_bias_ref<float>(s, dy, db);
    const float want_dx[9] = {1, 1, 0, 1, 0, -1, 0, -1, -1};
    const float want_dw[4] = {12, 16, 24, 28};
    for (int i = 0; i < 9; ++i) CHECK(dx[i] == want_dx[i]);
    for (int i = 0; i < 4; ++i) CHECK(dw[i] == want_dw[i]);
    CHECK(db[0] == 4.0f);
  }
  // padding 1, stride 2 on a 1x1 image with a 3x3 kernel: only the centre tap sees the pixel
  {
    const float x[1] = {3};
    float w[9];
    for (int i = 0; i < 9; ++i) w[i] = float(i);
    float y[1];
    const ConvShape s{1, 1, 1, 1, 1, 3, 3, 1, 1, 2, 2, 1, 1, 1, 1, 1};
    convcore::conv2d_forward_ref<float>(s, x, w, nullptr, y);
    CHECK(y[0] == 12.0f);
  }
  // float and double agree on a grouped, strided, dilated case with padding
  {
    const ConvShape s{2, 4, 9, 8, 6, 3, 2, 4, 4, 2, 2, 1, 1, 2, 1, 2};
    const int64_t nx = s.N * s.C * s.H * s.W, nw = s.K * (s.C / s.groups) * s.R * s.S, ny = s.N * s.K * s.P * s.Q;
    std::vector<float> xf(nx), wf(nw), yf(ny);
    std::vector<double> xd(nx), wd(nw), yd(ny);
    for (int64_t i = 0; i < nx; ++i) xd[i] = xf[i] = float((i * 7) % 11) - 5;
    for (int64_t i = 0; i < nw; ++i) wd[i] = wf[i] = float((i * 5) % 7) - 3;
    convcore::conv2d_forward_ref<float>(s, xf.data(), wf.data(), nullptr, yf.data());
    convcore::conv2d_forward_ref<double>(s, xd.data(), wd.data(), nullptr, yd.data());
    for (int64_t i = 0; i < ny; ++i) CHECK(double(yf[i]) == yd[i]);
  }
  return convcore_test::failures;
}
