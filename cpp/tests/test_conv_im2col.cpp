// C++ tests of blocked im2col (B panels) and col2im: panels equal the im2col matrix by definition for many
// block and tail choices, and GEMMs over them reproduce the reference forward and input gradient exactly.
#include <cstdio>
#include <vector>

#include "convcore/conv.h"

using namespace convcore;

static int failures = 0;

// x (2, 4, 7, 6), w (6, 2, 3, 2), stride (2, 1), padding (1, 2), dilation (1, 2), groups 2 -> y (2, 6, 4, 8).
static const ConvShape kShape{2, 4, 7, 6, 6, 3, 2, 4, 8, 2, 1, 1, 2, 1, 2, 2};

static std::vector<double> small_integers(int64_t count, unsigned seed) {
  std::vector<double> v(count);
  for (double& e : v) {
    seed = seed * 1103515245u + 12345u;
    e = static_cast<double>((seed >> 10) % 7) - 3.0;  // in [-3, 3]
  }
  return v;
}

// im2col entry (row (c, r, t), column (n, p, q)) of group g, straight from the definition.
static double im2col_entry(const ConvShape& s, const std::vector<double>& x, int64_t g, int64_t row, int64_t col) {
  const int64_t Cg = s.C / s.groups;
  const int64_t c = row / (s.R * s.S), r = (row / s.S) % s.R, t = row % s.S;
  const int64_t n = col / (s.P * s.Q), p = (col / s.Q) % s.P, q = col % s.Q;
  const int64_t h = p * s.stride_h - s.pad_h + r * s.dil_h, w = q * s.stride_w - s.pad_w + t * s.dil_w;
  if (h < 0 || h >= s.H || w < 0 || w >= s.W) return 0.0;
  return x[((n * s.C + g * Cg + c) * s.H + h) * s.W + w];
}

static void panels_match_definition() {
  const ConvShape& s = kShape;
  const auto x = small_integers(s.N * s.C * s.H * s.W, 7);
  const int64_t rows = (s.C / s.groups) * s.R * s.S, cols = s.N * s.P * s.Q;
  // (k0, kc, j0, nb, nr): whole matrix, inner blocks with tails, single row / column, block crossing images
  const int64_t blocks[][5] = {{0, rows, 0, cols, 16}, {3, 5, 7, 30, 8}, {rows - 1, 1, cols - 1, 1, 6},
                               {2, 7, 29, 9, 4},       {0, rows, 5, 20, 6}};
  for (int64_t g = 0; g < s.groups; ++g) {
    for (const auto& b : blocks) {
      const int64_t k0 = b[0], kc = b[1], j0 = b[2], nb = b[3], nr = b[4];
      const int64_t panels = (nb + nr - 1) / nr;
      std::vector<double> out(kc * panels * nr + 1, -99.0);  // one guard element past the end
      im2col_pack_panels<double>(s, x.data(), g, k0, kc, j0, nb, nr, out.data());
      for (int64_t row = 0; row < kc; ++row) {
        for (int64_t col = 0; col < panels * nr; ++col) {
          const double want = col < nb ? im2col_entry(s, x, g, k0 + row, j0 + col) : 0.0;
          const double got = out[(col / nr) * kc * nr + row * nr + col % nr];
          if (got != want) {
            std::printf("FAIL panel g=%lld block k0=%lld j0=%lld: (%lld, %lld) got %g want %g\n", (long long)g,
                        (long long)k0, (long long)j0, (long long)row, (long long)col, got, want);
            ++failures;
            return;
          }
        }
      }
      if (out.back() != -99.0) {
        std::printf("FAIL panel wrote past its end\n");
        ++failures;
      }
    }
  }
}

// y[n, g*Kg + k] = W_g (Kg x Cg*R*S) x im2col_g, and dx = sum over g of col2im(W_g^T x dY_g): both equal the
// reference kernels bit for bit on integer data.
static void gemm_over_panels_matches_reference() {
  const ConvShape& s = kShape;
  const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups, rows = Cg * s.R * s.S, PQ = s.P * s.Q;
  const auto x = small_integers(s.N * s.C * s.H * s.W, 11);
  const auto w = small_integers(s.K * rows, 13);
  const auto dy = small_integers(s.N * s.K * PQ, 17);
  std::vector<double> y_ref(s.N * s.K * PQ), dx_ref(x.size());
  conv2d_forward_ref<double>(s, x.data(), w.data(), nullptr, Activation::none, y_ref.data());
  conv2d_backward_input_ref<double>(s, dy.data(), w.data(), dx_ref.data());

  std::vector<double> y(y_ref.size()), dx(x.size(), 0.0), dcols(rows * PQ);
  for (int64_t n = 0; n < s.N; ++n) {
    for (int64_t g = 0; g < s.groups; ++g) {
      std::vector<double> panel(rows * PQ);  // one panel as wide as the image: element (row, col) at row*PQ + col
      im2col_pack_panels<double>(s, x.data(), g, 0, rows, n * PQ, PQ, PQ, panel.data());
      for (int64_t k = 0; k < Kg; ++k) {
        for (int64_t j = 0; j < PQ; ++j) {
          double acc = 0;
          for (int64_t row = 0; row < rows; ++row) acc += w[(g * Kg + k) * rows + row] * panel[row * PQ + j];
          y[(n * s.K + g * Kg + k) * PQ + j] = acc;
        }
      }
      for (int64_t row = 0; row < rows; ++row) {
        for (int64_t j = 0; j < PQ; ++j) {
          double acc = 0;
          for (int64_t k = 0; k < Kg; ++k) acc += w[(g * Kg + k) * rows + row] * dy[(n * s.K + g * Kg + k) * PQ + j];
          dcols[row * PQ + j] = acc;
        }
      }
      col2im_add<double>(s, dcols.data(), n, g, dx.data());
    }
  }
  for (size_t i = 0; i < y.size(); ++i) {
    if (y[i] != y_ref[i]) {
      std::printf("FAIL y[%zu]: im2col GEMM %g, reference %g\n", i, y[i], y_ref[i]);
      ++failures;
      break;
    }
  }
  for (size_t i = 0; i < dx.size(); ++i) {
    if (dx[i] != dx_ref[i]) {
      std::printf("FAIL dx[%zu]: col2im %g, reference %g\n", i, dx[i], dx_ref[i]);
      ++failures;
      break;
    }
  }
}

int main() {
  panels_match_definition();
  gemm_over_panels_matches_reference();
  if (failures == 0) std::printf("test_conv_im2col: all passed\n");
  return failures == 0 ? 0 : 1;
}
