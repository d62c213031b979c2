// Batch normalisation kernels on (N, C, L) data (L = H*W for 2-D, 1 for (N, C)): the training forward (statistics,
// then the affine apply), the eval forward, and the backward (sums, then the input gradient). Results do not depend
// on the thread count: every sum is taken in a fixed order. Float rows of at least kBatchNormVectorRow values go
// through the selected ISA's row kernels in memory order, (n, c) row after row, each row's sums kept and added per
// channel in order of n afterwards (a channel's rows lie C * L apart: walking them channel by channel read memory
// at about half the speed, and a power-of-two distance left most of the caches' sets unused); everything else is
// summed in float64 in chunks of channels, image after image (for_channel_chunks). The passes that write (the apply,
// the input gradient) go through the ISA's row kernels in runs of rows (for_row_tasks).
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

// The values from which a reduction (statistics, gradient sums) or a writing pass (apply, input gradient) runs on the
// threads.
constexpr int64_t kReductionSerialBelow = 1 << 16, kPassSerialBelow = 1 << 17;

// The other reductions (double, or rows shorter than kBatchNormVectorRow) take the channels in chunks of
// kChannelChunk, in parallel (from kReductionSerialBelow values); each chunk's channels image after image, so that a
// channel's sum runs in order of n, and within an image in order of l (rows of one value, BatchNorm1d's (N, C): a loop
// along the channels). Walking each channel's rows C * L apart instead, one chain of float64 additions at a time, took
// most of BatchNorm1d's time
// (chunks of 32 channels, so that 64 channels take both threads, and each chunk's sums in arrays of its own ran
// 0.87-0.96x). body(c0, c1) gets the chunk's channels.
constexpr int64_t kChannelChunk = 64;
template <typename Body>
void for_channel_chunks(int64_t C, int64_t values, const Body& body) {
  parallel_for((C + kChannelChunk - 1) / kChannelChunk, threads_for(values, kReductionSerialBelow),
               [&](int64_t k) { body(k * kChannelChunk, std::min(C, (k + 1) * kChannelChunk)); });
}

// acc[c] += the sum over l of term(n, c, l) for every image n (in order) and channel c in [c0, c1).
template <typename Term>
inline void add_per_channel(int64_t N, int64_t L, int64_t c0, int64_t c1, double* acc, const Term& term) {
  for (int64_t n = 0; n < N; ++n) {
    if (L == 1) {
      for (int64_t c = c0; c < c1; ++c) acc[c] += term(n, c, 0);
      continue;
    }
    for (int64_t c = c0; c < c1; ++c) {
      double row = 0.0;
      for (int64_t l = 0; l < L; ++l) row += term(n, c, l);
      acc[c] += row;
    }
  }
}

// body(r0, r1) for the rows [0, rows) of L values in runs of about kTaskValues values (at least one row), on the
// threads from serial_below values (kReductionSerialBelow or kPassSerialBelow): the ISA's row kernels take a run per
// call (one call per row of a few values made its call the cost: BatchNorm1d's (N, C) has rows of one value).
constexpr int64_t kTaskValues = 8192;
template <typename Body>
void for_row_tasks(int64_t rows, int64_t L, int64_t serial_below, const Body& body) {
  const int64_t per_task = std::max<int64_t>(1, kTaskValues / std::max<int64_t>(L, 1));
  const int64_t tasks = (rows + per_task - 1) / per_task;
  parallel_for(tasks, threads_for(rows * L, serial_below),
               [&](int64_t task) { body(task * per_task, std::min(rows, (task + 1) * per_task)); });
}

// out[c] = the sum of per_row[n * C + c] over n, in order of n (n outermost: read in memory order).
inline void add_rows_per_channel(const std::vector<double>& per_row, int64_t N, int64_t C, double* out) {
  std::fill(out, out + C, 0.0);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) out[c] += per_row[n * C + c];
}

// The mean and biased variance of every channel (N * L > 0). Float rows: each row's sum and centred sum of squares
// (the ISA's moments), then per channel mean = sum of sums / count and
// sum (x - mean)^2 = sum over rows of [row's centred squares + L (row mean - mean)^2]. Otherwise in float64 by
// channel chunks, two passes. Either way the squares are centred, which keeps precision where E[x^2] - m^2 would not.
template <typename T>
void batch_stats(const T* x, int64_t N, int64_t C, int64_t L, double* mean, double* var) {
  const int64_t count = N * L;
  if constexpr (std::is_same_v<T, float>) {
    if (L >= kBatchNormVectorRow) {
      const auto moments = kernels().batch_norm_rows.moments;
      std::vector<double> sums(N * C), squares(N * C);
      for_row_tasks(N * C, L, kReductionSerialBelow, [&](int64_t r0, int64_t r1) {
        moments(x + r0 * L, r1 - r0, L, &sums[r0], &squares[r0]);
      });
      add_rows_per_channel(sums, N, C, mean);
      for (int64_t c = 0; c < C; ++c) mean[c] /= count;
      std::fill(var, var + C, 0.0);
      for (int64_t n = 0; n < N; ++n)
        for (int64_t c = 0; c < C; ++c) {
          const double d = sums[n * C + c] / L - mean[c];
          var[c] += squares[n * C + c] + L * d * d;
        }
      for (int64_t c = 0; c < C; ++c) var[c] /= count;
      return;
    }
  }
  for_channel_chunks(C, N * C * L, [&](int64_t c0, int64_t c1) {
    const auto at = [&](int64_t n, int64_t c, int64_t l) { return x[(n * C + c) * L + l]; };
    std::fill(mean + c0, mean + c1, 0.0);
    std::fill(var + c0, var + c1, 0.0);
    add_per_channel(N, L, c0, c1, mean, [&](int64_t n, int64_t c, int64_t l) { return double(at(n, c, l)); });
    for (int64_t c = c0; c < c1; ++c) mean[c] /= count;
    add_per_channel(N, L, c0, c1, var, [&](int64_t n, int64_t c, int64_t l) {
      const double d = at(n, c, l) - mean[c];
      return d * d;
    });
    for (int64_t c = c0; c < c1; ++c) var[c] /= count;
  });
}

// Per channel sum(g) and sum(g * (x - m[c])), g = dy masked by the fused ReLU's output where relu_out is not null:
// float rows through the ISA's grad_sums, row sums added per channel in order of n; otherwise in float64 by channel
// chunks.
template <typename T>
void batch_grad_sums(const T* dy, const T* x, const T* relu_out, int64_t N, int64_t C, int64_t L, const T* m,
                     double* sum, double* sum_centred) {
  if constexpr (std::is_same_v<T, float>) {
    if (L >= kBatchNormVectorRow) {
      const auto grad_sums = kernels().batch_norm_rows.grad_sums;
      std::vector<double> s(N * C), sc(N * C);
      for_row_tasks(N * C, L, kReductionSerialBelow, [&](int64_t r0, int64_t r1) {
        grad_sums(dy + r0 * L, x + r0 * L, relu_out ? relu_out + r0 * L : nullptr, r1 - r0, L, r0, C, m, &s[r0],
                  &sc[r0]);
      });
      add_rows_per_channel(s, N, C, sum);  // in order of n, as the statistics
      add_rows_per_channel(sc, N, C, sum_centred);
      return;
    }
  }
  for_channel_chunks(C, N * C * L, [&](int64_t c0, int64_t c1) {
    const auto g = [&](int64_t n, int64_t c, int64_t l) -> double {
      const int64_t row = (n * C + c) * L;
      return relu_out ? masked(dy + row, relu_out + row, l) : dy[row + l];
    };
    std::fill(sum + c0, sum + c1, 0.0);
    std::fill(sum_centred + c0, sum_centred + c1, 0.0);
    add_per_channel(N, L, c0, c1, sum, g);
    add_per_channel(N, L, c0, c1, sum_centred,
                    [&](int64_t n, int64_t c, int64_t l) { return g(n, c, l) * (x[(n * C + c) * L + l] - m[c]); });
  });
}

// The row kernels for T.
inline auto affine_kernel(const BatchNormRowKernels& rows, float) { return rows.affine_float; }
inline auto affine_kernel(const BatchNormRowKernels& rows, double) { return rows.affine_double; }
inline auto input_gradient_kernel(const BatchNormRowKernels& rows, float) { return rows.input_gradient_float; }
inline auto input_gradient_kernel(const BatchNormRowKernels& rows, double) { return rows.input_gradient_double; }

// y = (x - mean) / sqrt(var + eps) * weight + bias as y = (x - centre) * scale + shift per channel, centre = mean
// rounded to T and shift = bias + (centre - mean) * scale (in float64, then rounded), by the ISA's row kernel in
// parallel runs of rows (for_row_tasks). Centred first, so that a channel whose |mean| * scale is large keeps its
// precision: x * scale + (bias - mean * scale) took the difference of two large rounded values (a constant channel
// of 1000 with eps 1e-5 gave -0.031 for 0; now exactly bias). A mean beyond kMaxCentre<T> is not subtracted (centre
// 0, the uncentred form): x - centre of a finite x could overflow to an infinity.
template <typename T>
constexpr double kMaxCentre = sizeof(T) == 4 ? 0x1p100 : 0x1p960;  // well below half an ulp of T's largest value

template <typename T>
void affine(const T* x, int64_t N, int64_t C, int64_t L, const double* mean, const double* var, const T* weight,
            const T* bias, double eps, const T* residual, bool relu, T* y) {
  std::vector<T> centre(C), scale(C), shift(C);
  for (int64_t c = 0; c < C; ++c) {
    const double s = static_cast<double>(weight[c]) * (1.0 / std::sqrt(var[c] + eps));
    centre[c] = std::abs(mean[c]) < kMaxCentre<T> ? static_cast<T>(mean[c]) : T(0);
    scale[c] = static_cast<T>(s);
    shift[c] = static_cast<T>(static_cast<double>(bias[c]) + (static_cast<double>(centre[c]) - mean[c]) * s);
  }
  const auto kernel = affine_kernel(kernels().batch_norm_rows, T());
  for_row_tasks(N * C, L, kPassSerialBelow, [&](int64_t r0, int64_t r1) {
    kernel(x, residual, r0, r1, C, L, centre.data(), scale.data(), shift.data(), relu, y);
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
  for_row_tasks(N * C, L, kPassSerialBelow, [&](int64_t r0, int64_t r1) {
    kernel(dy, x, relu_out, r0, r1, C, L, m.data(), gain.data(), a.data(), b.data(), dx);
  });
}

bool batch_norm_fold(int64_t K, int64_t taps, const float* w, const float* b, const float* mean, const float* var,
                     const float* weight, const float* bias, double eps, float* w_out, float* b_out) {
  bool finite = true;
  for (int64_t k = 0; k < K; ++k) {
    const double s = static_cast<double>(weight[k]) / std::sqrt(static_cast<double>(var[k]) + eps);
    for (int64_t t = 0; t < taps; ++t) {
      w_out[k * taps + t] = static_cast<float>(w[k * taps + t] * s);
      finite = finite && std::isfinite(w_out[k * taps + t]);
    }
    b_out[k] = static_cast<float>((b ? b[k] : 0.0) * s + (static_cast<double>(bias[k]) - mean[k] * s));
    finite = finite && std::isfinite(b_out[k]);
  }
  return finite;
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
