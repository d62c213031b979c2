// Batch normalisation kernels on (N, C, L) data (L = H*W for 2-D, 1 for (N, C)): per-channel statistics, the
// affine apply, and the backward sums and input gradient. Parallel over channels; each channel is reduced
// serially in a fixed order, so results do not depend on the thread count: float rows of at least
// kBatchNormVectorRow values through the selected ISA's channel reductions (float lanes per row, rows added in
// float64), everything else in float64 accumulators.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

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

}  // namespace

template <typename T>
void batch_norm_stats(const T* x, int64_t N, int64_t C, int64_t L, double* mean, double* var) {
  const int64_t count = N * L;
  if constexpr (std::is_same_v<T, float>) {
    if (L >= kBatchNormVectorRow && N > 0) {
      const BatchNormRowKernels rows = kernels().batch_norm_rows;
      parallel_for(C, threads_for(N * C * L, 1 << 16), [&](int64_t c) {
        const float* first = x + c * L;
        const double m = rows.sum(first, N, C * L, L) / count;
        const float mf = static_cast<float>(m);
        const double squares = rows.centred_squares(first, N, C * L, L, mf);
        // squares are centred on mf, not m: mean((x - mf)^2) = var + (m - mf)^2
        const double offset = m - mf;
        mean[c] = m;
        var[c] = std::max(0.0, squares / count - offset * offset);
      });
      return;
    }
  }
  parallel_for(C, threads_for(N * C * L, 1 << 16), [&](int64_t c) {
    double sums[kLanes] = {};
    for (int64_t n = 0; n < N; ++n) {
      const T* row = x + (n * C + c) * L;
      add_lanes(sums, L, [row](int64_t l) { return static_cast<double>(row[l]); });
    }
    const double m = count ? total(sums) / count : 0.0;
    // two passes: the centred sum of squares keeps precision where E[x^2] - m^2 would not
    double squares[kLanes] = {};
    for (int64_t n = 0; n < N; ++n) {
      const T* row = x + (n * C + c) * L;
      add_lanes(squares, L, [row, m](int64_t l) {
        const double d = row[l] - m;
        return d * d;
      });
    }
    mean[c] = m;
    var[c] = count ? total(squares) / count : 0.0;
  });
}

template <typename T>
void batch_norm_apply(const T* x, int64_t N, int64_t C, int64_t L, const T* scale, const T* shift, const T* residual,
                      bool relu, T* y) {
  parallel_for(N * C, threads_for(N * C * L, 1 << 17), [&](int64_t nc) {
    const T a = scale[nc % C], b = shift[nc % C];
    const T* in = x + nc * L;
    const T* res = residual ? residual + nc * L : nullptr;
    T* out = y + nc * L;
    // one loop per case, so that each vectorises
    if (res && relu) {
      for (int64_t l = 0; l < L; ++l) {
        const T v = in[l] * a + b + res[l];
        out[l] = v > T(0) || v != v ? v : T(0);  // NaN kept
      }
    } else if (res) {
      for (int64_t l = 0; l < L; ++l) out[l] = in[l] * a + b + res[l];
    } else if (relu) {
      for (int64_t l = 0; l < L; ++l) {
        const T v = in[l] * a + b;
        out[l] = v > T(0) || v != v ? v : T(0);
      }
    } else {
      for (int64_t l = 0; l < L; ++l) out[l] = in[l] * a + b;
    }
  });
}

// dy[l], or 0 where the fused ReLU's output is not > 0, as a bit mask (a select here compiled to a mispredicted
// branch: 7x slower on half-active channels).
template <typename T>
inline T masked(const T* dy, const T* relu_out, int64_t l) {
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  Bits bits;
  std::memcpy(&bits, &dy[l], sizeof(T));
  bits &= Bits(0) - Bits(relu_out[l] > T(0));
  T g;
  std::memcpy(&g, &bits, sizeof(T));
  return g;
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

template <typename T>
void batch_norm_backward_sums(const T* dy, const T* x, const T* mean, const T* relu_out, int64_t N, int64_t C,
                              int64_t L, double* sum_dy, double* sum_dy_centred) {
  if constexpr (std::is_same_v<T, float>) {
    if (L >= kBatchNormVectorRow) {
      const BatchNormRowKernels rows = kernels().batch_norm_rows;
      parallel_for(C, threads_for(N * C * L, 1 << 16), [&](int64_t c) {
        double s, sc;
        rows.grad_sums(dy + c * L, x + c * L, relu_out ? relu_out + c * L : nullptr, N, C * L, L, mean[c], &s, &sc);
        sum_dy[c] = s;
        sum_dy_centred[c] = sc;
      });
      return;
    }
  }
  parallel_for(C, threads_for(N * C * L, 1 << 16), [&](int64_t c) {
    double s[kLanes] = {}, sc[kLanes] = {};
    const T m = mean[c];
    for (int64_t n = 0; n < N; ++n) {
      const T* g = dy + (n * C + c) * L;
      const T* row = x + (n * C + c) * L;
      if (relu_out)
        add_sums(s, sc, L, row, m, [g, out = relu_out + (n * C + c) * L](int64_t l) { return masked(g, out, l); });
      else
        add_sums(s, sc, L, row, m, [g](int64_t l) { return g[l]; });
    }
    sum_dy[c] = total(s);
    sum_dy_centred[c] = total(sc);
  });
}

template <typename T>
void batch_norm_backward_input(const T* dy, const T* x, const T* mean, const T* gain, const T* a, const T* b,
                               const T* relu_out, int64_t N, int64_t C, int64_t L, T* dx) {
  parallel_for(N * C, threads_for(N * C * L, 1 << 17), [&](int64_t nc) {
    const int64_t c = nc % C;
    const T m = mean[c], g = gain[c], ac = a[c], bc = b[c];
    const T* gy = dy + nc * L;
    const T* row = x + nc * L;
    T* out = dx + nc * L;
    if (relu_out) {
      const T* mask = relu_out + nc * L;
      for (int64_t l = 0; l < L; ++l) out[l] = g * (masked(gy, mask, l) - ac - (row[l] - m) * bc);
    } else {
      for (int64_t l = 0; l < L; ++l) out[l] = g * (gy[l] - ac - (row[l] - m) * bc);
    }
  });
}

#define CONVCORE_INSTANTIATE_BN(T)                                                                              \
  template void batch_norm_stats<T>(const T*, int64_t, int64_t, int64_t, double*, double*);                     \
  template void batch_norm_apply<T>(const T*, int64_t, int64_t, int64_t, const T*, const T*, const T*, bool, T*); \
  template void batch_norm_backward_sums<T>(const T*, const T*, const T*, const T*, int64_t, int64_t, int64_t,  \
                                            double*, double*);                                                  \
  template void batch_norm_backward_input<T>(const T*, const T*, const T*, const T*, const T*, const T*,         \
                                             const T*, int64_t, int64_t, int64_t, T*);
CONVCORE_INSTANTIATE_BN(float)
CONVCORE_INSTANTIATE_BN(double)
#undef CONVCORE_INSTANTIATE_BN

}  // namespace convcore
