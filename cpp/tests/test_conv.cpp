// C++ tests of the reference convolution: a hand-computed case (forward and all gradients) and float vs double.
#include <cmath>
#include <cstdio>
#include <vector>

#include "convcore/conv.h"

using namespace convcore;

static int failures = 0;

static void expect_equal(const char* what, const std::vector<float>& got, const std::vector<float>& want) {
  for (size_t i = 0; i < want.size(); ++i) {
    if (got[i] != want[i]) {
      std::printf("FAIL %s[%zu]: got %g, want %g\n", what, i, got[i], want[i]);
      ++failures;
      return;
    }
  }
}

// x (1, 1, 3, 3) = 1..9, bias 10, stride 1, padding 1, 2x2 kernel -> y (1, 1, 4, 4).
static void hand_computed_case() {
  const ConvShape s{1, 1, 3, 3, 1, 2, 2, 4, 4, 1, 1, 1, 1, 1, 1, 1};
  const std::vector<float> x{1, 2, 3, 4, 5, 6, 7, 8, 9};
  const float bias = 10;
  // w = [[1, 0], [0, -1]]: y[p, q] = xpad[p, q] - xpad[p+1, q+1] + 10, xpad = x zero-padded by 1.
  const std::vector<float> w_diff{1, 0, 0, -1};
  const std::vector<float> y_want{9, 8, 7, 10,  //
                                  6, 6, 6, 13,  //
                                  3, 6, 6, 16,  //
                                  10, 17, 18, 19};
  std::vector<float> y(16);
  conv2d_forward_ref<float>(s, x.data(), w_diff.data(), &bias, Activation::none, y.data());
  expect_equal("y", y, y_want);
  // bias -5 with ReLU: y_relu = max(y_want - 15, 0), so only the last column and row (16..19) survive.
  const float bias_neg = -5;
  std::vector<float> y_relu(16), y_relu_want(16);
  for (int i = 0; i < 16; ++i) y_relu_want[i] = std::fmax(y_want[i] - 15, 0.0f);
  conv2d_forward_ref<float>(s, x.data(), w_diff.data(), &bias_neg, Activation::relu, y_relu.data());
  expect_equal("relu(y)", y_relu, y_relu_want);

  // dy = ones: every input pixel is seen by all four taps once, so dx = sum(w) = 1 + 2 + 3 - 1 = 5 everywhere.
  const std::vector<float> w{1, 2, 3, -1};
  const std::vector<float> dy(16, 1.0f);
  std::vector<float> dx(9), dw(4), db(1);
  conv2d_backward_input_ref<float>(s, dy.data(), w.data(), dx.data());
  expect_equal("dx", dx, std::vector<float>(9, 5.0f));
  // dw[r, t] = sum of the 4x4 window of xpad starting at (r, t) = sum(x) = 45 for every tap.
  conv2d_backward_weight_ref<float>(s, dy.data(), x.data(), dw.data());
  expect_equal("dw", dw, {45, 45, 45, 45});
  conv2d_backward_bias_ref<float>(s, dy.data(), db.data());
  expect_equal("db", db, {16});
}

// Strided, dilated, grouped, padded case: the float and double kernels agree to float rounding.
static void float_matches_double() {
  // x (2, 4, 9, 7), w (6, 2, 3, 2), stride (2, 1), padding (1, 2), dilation (1, 2), groups 2 -> y (2, 6, 5, 9).
  const ConvShape s{2, 4, 9, 7, 6, 3, 2, 5, 9, 2, 1, 1, 2, 1, 2, 2};
  const int64_t nx = s.N * s.C * s.H * s.W, nw = s.K * (s.C / s.groups) * s.R * s.S, ny = s.N * s.K * s.P * s.Q;
  std::vector<double> xd(nx), wd(nw), bd(s.K), dyd(ny);
  unsigned state = 12345;
  auto next = [&state] {
    state = state * 1103515245u + 12345u;
    return static_cast<double>((state >> 8) % 2001) / 1000.0 - 1.0;
  };
  for (auto* v : {&xd, &wd, &bd, &dyd})
    for (double& e : *v) e = next();
  std::vector<float> xf(xd.begin(), xd.end()), wf(wd.begin(), wd.end()), bf(bd.begin(), bd.end()),
      dyf(dyd.begin(), dyd.end());

  std::vector<double> yd(ny), dxd(nx), dwd(nw), dbd(s.K);
  std::vector<float> yf(ny), dxf(nx), dwf(nw), dbf(s.K);
  conv2d_forward_ref<double>(s, xd.data(), wd.data(), bd.data(), Activation::none, yd.data());
  conv2d_forward_ref<float>(s, xf.data(), wf.data(), bf.data(), Activation::none, yf.data());
  conv2d_backward_input_ref<double>(s, dyd.data(), wd.data(), dxd.data());
  conv2d_backward_input_ref<float>(s, dyf.data(), wf.data(), dxf.data());
  conv2d_backward_weight_ref<double>(s, dyd.data(), xd.data(), dwd.data());
  conv2d_backward_weight_ref<float>(s, dyf.data(), xf.data(), dwf.data());
  conv2d_backward_bias_ref<double>(s, dyd.data(), dbd.data());
  conv2d_backward_bias_ref<float>(s, dyf.data(), dbf.data());

  auto close = [](const char* what, const std::vector<float>& f, const std::vector<double>& d) {
    double worst = 0;
    for (size_t i = 0; i < d.size(); ++i) worst = std::fmax(worst, std::fabs(f[i] - d[i]) / (1.0 + std::fabs(d[i])));
    if (!(worst < 1e-5)) {
      std::printf("FAIL %s: float vs double differ by %g\n", what, worst);
      ++failures;
    }
  };
  close("y", yf, yd);
  close("dx", dxf, dxd);
  close("dw", dwf, dwd);
  close("db", dbf, dbd);
}

int main() {
  hand_computed_case();
  float_matches_double();
  if (failures == 0) std::printf("test_conv: all passed\n");
  return failures == 0 ? 0 : 1;
}
