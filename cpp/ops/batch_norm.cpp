// Batch normalisation kernels on (N, C, L) data (L = H*W for 2-D, 1 for (N, C)): the training forward (statistics,
// then the affine apply), the eval forward, and the backward (sums, then the input gradient). Results do not depend
// on the thread count: every sum is taken in a fixed order. Float rows of at least kBatchNormVectorRow values go
// through the selected ISA's row kernels in memory order, (n, c) row after row, each row's sums kept and added per
// channel in order of n afterwards (a channel's rows lie C * L apart: walking them channel by channel read memory
// at about half the speed, and a power-of-two distance left most of the caches' sets unused); everything else is
// reduced channel by channel in float64 lanes.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "batch_norm_rows.h"  // masked()
#include "convcore/dispatch.h"
#include "convcore/ops.h"
#include "convcore/threads.h"

namespace convcore {
namespace {

constexpr int kLanes = 8;

// acc[j] += term(l) for l in [0, L), l = j mod kLanes: independent chains that pipeline and vectorise, summed in
// a fixed order (the order depends on L only).
template <typename Term>
inline void add_lanes(double (&acc)[kLanes], int64_t L, const Term& term) {
  int64_t l = 0;
  for (; l + kLanes <= L; l += kLanes)
    for (int j = 0; j < kLanes; ++j) acc[j] += term(l + j);
  for (int j = 0; l < L; ++l, ++j) acc[j] += term(l);
}

inline double total(const double (&acc)[kLanes]) {
  double s = 0.0;
  for (double v : acc) s += v;
  return s;
}

// The float route's reductions take the rows in blocks of kRowBlock, one kernel call each.
constexpr int64_t kRowBlock = 8;
inline int64_t row_blocks(int64_t rows) { return (rows + kRowBlock - 1) / kRowBlock; }

// The mean and biased variance of every channel (N * L > 0). Float rows: each row's sum and centred sum of squares
// (the ISA's moments), then per channel mean = sum of sums / count and
// sum (x - mean)^2 = sum over rows of [row's centred squares + L (row mean - mean)^2]. Otherwise per channel in
// float64 lanes, two passes. Either way the squares are centred, which keeps precision where E[x^2] - m^2 would not.
template <typename T>
void batch_stats(const T* x, int64_t N, int64_t C, int64_t L, double* mean, double* var) {
  const int64_t count = N * L;
  const int nt = threads_for(N * C * L, 1 << 16);
  if constexpr (std::is_same_v<T, float>) {
    if (L >= kBatchNormVectorRow) {
      const auto moments = kernels().batch_norm_rows.moments;
      std::vector<double> sums(N * C), squares(N * C);
      parallel_for(row_blocks(N * C), nt, [&](int64_t block) {
        const int64_t first = block * kRowBlock, rows = std::min(kRowBlock, N * C - first);
        moments(x + first * L, rows, L, &sums[first], &squares[first]);
      });
      // per channel in order of n (n outermost: the rows' sums are read in memory order)
      std::fill(mean, mean + C, 0.0);
      std::fill(var, var + C, 0.0);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = 0; c < C; ++c) mean[c] += sums[n * C + c];
      for (int64_t c = 0; c < C; ++c) mean[c] /= count;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = 0; c < C; ++c) {
          const double d = sums[n * C + c] / L - mean[c];
          var[c] += squares[n * C + c] + L * d * d;
        }
      for (int64_t c = 0; c < C; ++c) var[c] /= count;
      return;
    }
  }
  parallel_for(C, nt, [&](int64_t c) {
    double sums[kLanes] = {};
    for (int64_t n = 0; n < N; ++n) {
      const T* row = x + (n * C + c) * L;
      add_lanes(sums, L, [row](int64_t l) { return static_cast<double>(row[l]); });
    }
    const double m = total(sums) / count;
    double squares[kLanes] = {};
    for (int64_t n = 0; n < N; ++n) {
      const T* row = x + (n * C + c) * L;
      add_lanes(squares, L, [row, m](int64_t l) {
        const double d = row[l] - m;
        return d * d;
      });
    }
    mean[c] = m;
    var[c] = total(squares) / count;
  });
}

// s[j] += grad(l) and sc[j] += grad(l) * (row[l] - m) for l = j mod kLanes: both sums in one pass (add_lanes).
template <typename T, typename Grad>
inline void add_sums(double (&s)[kLanes], double (&sc)[kLanes], int64_t L, const T* row, T m, const Grad& grad) {
  int64_t l = 0;
  for (; l + kLanes <= L; l += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      const double gv = grad(l + j);
      s[j] += gv;
      sc[j] += gv * (row[l + j] - m);
    }
  for (int j = 0; l < L; ++l, ++j) {
    const double gv = grad(l);
    s[j] += gv;
    sc[j] += gv * (row[l] - m);
  }
}

// Per channel sum(g) and sum(g * (x - m[c])), g = dy masked by the fused ReLU's output where relu_out is not null:
// float rows through the ISA's grad_sums, row sums added per channel in order of n; otherwise per channel in float64
// lanes.
template <typename T>
void batch_grad_sums(const T* dy, const T* x, const T* relu_out, int64_t N, int64_t C, int64_t L, const T* m,
                     double* sum, double* sum_centred) {
  const int nt = threads_for(N * C * L, 1 << 16);
  if constexpr (std::is_same_v<T, float>) {
    if (L >= kBatchNormVectorRow) {
      const auto grad_sums = kernels().batch_norm_rows.grad_sums;
      std::vector<double> s(N * C), sc(N * C);
      parallel_for(row_blocks(N * C), nt, [&](int64_t block) {
        const int64_t first = block * kRowBlock, rows = std::min(kRowBlock, N * C - first), at = first * L;
        grad_sums(dy + at, x + at, relu_out ? relu_out + at : nullptr, rows, L, first, C, m, &s[first], &sc[first]);
      });
      std::fill(sum, sum + C, 0.0);  // per channel in order of n, as the statistics
      std::fill(sum_centred, sum_centred + C, 0.0);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = 0; c < C; ++c) {
          sum[c] += s[n * C + c];
          sum_centred[c] += sc[n * C + c];
        }
      return;
    }
  }
  parallel_for(C, nt, [&](int64_t c) {
    double s[kLanes] = {}, sc[kLanes] = {};
    for (int64_t n = 0; n < N; ++n) {
      const int64_t at = (n * C + c) * L;
      const T* g = dy + at;
      if (relu_out)
        add_sums(s, sc, L, x + at, m[c], [g, out = relu_out + at](int64_t l) { return masked(g, out, l); });
      else
        add_sums(s, sc, L, x + at, m[c], [g](int64_t l) { return g[l]; });
    }
    sum[c] = total(s);
    sum_centred[c] = total(sc);
  });
}

// The row kernels for T.
inline auto affine_kernel(const BatchNormRowKernels& rows, float) { return rows.affine_float; }
inline auto affine_kernel(const BatchNormRowKernels& rows, double) { return rows.affine_double; }
inline auto input_gradient_kernel(const BatchNormRowKernels& rows, float) { return rows.input_gradient_float; }
inline auto input_gradient_kernel(const BatchNormRowKernels& rows, double) { return rows.input_gradient_double; }

// y = (x - mean) / sqrt(var + eps) * weight + bias, folded per channel into y = x * scale + shift (scale and shift
// in float64, then rounded to T), parallel over the N * C rows.
template <typename T>
void affine(const T* x, int64_t N, int64_t C, int64_t L, const double* mean, const double* var, const T* weight,
            const T* bias, double eps, const T* residual, bool relu, T* y) {
  std::vector<T> scale(C), shift(C);
  for (int64_t c = 0; c < C; ++c) {
    const double s = static_cast<double>(weight[c]) * (1.0 / std::sqrt(var[c] + eps));
    scale[c] = static_cast<T>(s);
    shift[c] = static_cast<T>(static_cast<double>(bias[c]) - mean[c] * s);
  }
  const auto kernel = affine_kernel(kernels().batch_norm_rows, T());
  parallel_for(N * C, threads_for(N * C * L, 1 << 17), [&](int64_t nc) {
    const int64_t c = nc % C;
    kernel(x + nc * L, residual ? residual + nc * L : nullptr, L, scale[c], shift[c], relu, y + nc * L);
  });
}

}  // namespace

template <typename T>
void batch_norm_train(const T* x, int64_t N, int64_t C, int64_t L, const T* weight, const T* bias, double eps,
                      const T* residual, bool relu, T* y, double* mean, double* var) {
  if (N * L == 0) {
    std::fill(mean, mean + C, 0.0);
    std::fill(var, var + C, 0.0);
    return;
  }
  batch_stats(x, N, C, L, mean, var);
  affine(x, N, C, L, mean, var, weight, bias, eps, residual, relu, y);
}

template <typename T>
void batch_norm_eval(const T* x, int64_t N, int64_t C, int64_t L, const double* mean, const double* var,
                     const T* weight, const T* bias, double eps, const T* residual, bool relu, T* y) {
  affine(x, N, C, L, mean, var, weight, bias, eps, residual, relu, y);
}

template <typename T>
void batch_norm_backward(const T* dy, const T* x, const double* mean, const double* var, const T* weight, double eps,
                         const T* relu_out, int64_t N, int64_t C, int64_t L, T* dweight, T* dbias, T* dx) {
  std::vector<T> m(C), gain(C), a(C), b(C);
  for (int64_t c = 0; c < C; ++c) m[c] = static_cast<T>(mean[c]);
  std::vector<double> sum(C), sum_centred(C);
  batch_grad_sums(dy, x, relu_out, N, C, L, m.data(), sum.data(), sum_centred.data());
  // dweight = sum(g * xhat); dx = gain * (g - a - (x - mean) * b) with gain = weight * inv_std, a = mean(g),
  // b = inv_std * mean(g * xhat); in float64, then rounded to T
  const double count = static_cast<double>(std::max<int64_t>(N * L, 1));
  for (int64_t c = 0; c < C; ++c) {
    const double inv_std = 1.0 / std::sqrt(var[c] + eps), dw = sum_centred[c] * inv_std;
    dweight[c] = static_cast<T>(dw);
    dbias[c] = static_cast<T>(sum[c]);
    gain[c] = static_cast<T>(static_cast<double>(weight[c]) * inv_std);
    a[c] = static_cast<T>(sum[c] / count);
    b[c] = static_cast<T>(inv_std * dw / count);
  }
  if (!dx) return;
  const auto kernel = input_gradient_kernel(kernels().batch_norm_rows, T());
  parallel_for(N * C, threads_for(N * C * L, 1 << 17), [&](int64_t nc) {
    const int64_t c = nc % C, at = nc * L;
    kernel(dy + at, x + at, relu_out ? relu_out + at : nullptr, L, m[c], gain[c], a[c], b[c], dx + at);
  });
}

#define CONVCORE_INSTANTIATE_BN(T)                                                                              \
  template void batch_norm_train<T>(const T*, int64_t, int64_t, int64_t, const T*, const T*, double, const T*, bool, \
                                    T*, double*, double*);                                                         \
  template void batch_norm_eval<T>(const T*, int64_t, int64_t, int64_t, const double*, const double*, const T*,     \
                                   const T*, double, const T*, bool, T*);                                          \
  template void batch_norm_backward<T>(const T*, const T*, const double*, const double*, const T*, double, const T*, \
                                       int64_t, int64_t, int64_t, T*, T*, T*);
CONVCORE_INSTANTIATE_BN(float)
CONVCORE_INSTANTIATE_BN(double)
#undef CONVCORE_INSTANTIATE_BN

}  // namespace convcore
