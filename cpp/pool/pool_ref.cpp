// Reference pooling kernels (float and double), one plane per loop iteration: the oracle and the fallback.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "convcore/checked.h"
#include "convcore/pool.h"
#include "convcore/threads.h"

namespace convcore {

template <typename T>
void max_pool2d_ref(const T* x, T* y, int64_t* indices, int64_t planes, const PoolGeometry& g) {
  const int nt = threads_for(saturating_mul(planes, g.OH, g.OW, g.KH, g.KW), 1 << 15);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    const T* xp = x + p * g.H * g.W;
    for (int64_t oh = 0; oh < g.OH; ++oh) {
      const int64_t ih0 = oh * g.SH - g.PH;
      const int64_t ih_lo = std::max<int64_t>(ih0, 0), ih_hi = std::min(ih0 + g.KH, g.H);
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        const int64_t iw0 = ow * g.SW - g.PW;
        const int64_t iw_lo = std::max<int64_t>(iw0, 0), iw_hi = std::min(iw0 + g.KW, g.W);
        T best = -std::numeric_limits<T>::infinity();
        int64_t best_index = ih_lo * g.W + iw_lo;
        for (int64_t ih = ih_lo; ih < ih_hi; ++ih) {
          for (int64_t iw = iw_lo; iw < iw_hi; ++iw) {
            const T v = xp[ih * g.W + iw];
            if (v > best || std::isnan(v)) {
              best = v;
              best_index = ih * g.W + iw;
            }
          }
        }
        const int64_t o = (p * g.OH + oh) * g.OW + ow;
        y[o] = best;
        indices[o] = best_index;
      }
    }
  }
}

template <typename T>
void max_pool2d_backward_ref(const T* dy, const int64_t* indices, T* dx, int64_t planes, const PoolGeometry& g) {
  const int nt = threads_for(planes * g.H * g.W, 1 << 15);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    T* dxp = dx + p * g.H * g.W;
    std::fill(dxp, dxp + g.H * g.W, T(0));
    const int64_t base = p * g.OH * g.OW;
    for (int64_t o = 0; o < g.OH * g.OW; ++o) dxp[indices[base + o]] += dy[base + o];
  }
}

namespace {

// Window rows/cols of output (oh, ow) clipped to the input, and the factors of PyTorch's avg divisor
// (window_divisor(rows, cols)).
struct AvgWindow {
  int64_t ih_lo, ih_hi, iw_lo, iw_hi, rows, cols;
};

AvgWindow avg_window(const PoolGeometry& g, int64_t oh, int64_t ow, bool count_include_pad) {
  const int64_t ih0 = oh * g.SH - g.PH, iw0 = ow * g.SW - g.PW;
  const int64_t ih_end = std::min(ih0 + g.KH, g.H + g.PH), iw_end = std::min(iw0 + g.KW, g.W + g.PW);
  AvgWindow w;
  w.ih_lo = std::max<int64_t>(ih0, 0);
  w.ih_hi = std::min(ih_end, g.H);
  w.iw_lo = std::max<int64_t>(iw0, 0);
  w.iw_hi = std::min(iw_end, g.W);
  w.rows = count_include_pad ? ih_end - ih0 : w.ih_hi - w.ih_lo;
  w.cols = count_include_pad ? iw_end - iw0 : w.iw_hi - w.iw_lo;
  return w;
}

}  // namespace

template <typename T>
void avg_pool2d_ref(const T* x, T* y, int64_t planes, const PoolGeometry& g, bool count_include_pad) {
  const int nt = threads_for(saturating_mul(planes, g.OH, g.OW, g.KH, g.KW), 1 << 15);
  const bool wide = saturating_mul(g.KH, g.KW) > kFloatSumWindow;
  // a window's mean, its elements summed in row-major order in the type of `zero` (T, or double for a wide window)
  const auto mean = [&g](auto zero, const T* xp, const AvgWindow& w) {
    auto sum = zero;
    for (int64_t ih = w.ih_lo; ih < w.ih_hi; ++ih)
      for (int64_t iw = w.iw_lo; iw < w.iw_hi; ++iw) sum += xp[ih * g.W + iw];
    return static_cast<T>(sum / window_divisor<decltype(zero)>(w.rows, w.cols));
  };
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    const T* xp = x + p * g.H * g.W;
    for (int64_t oh = 0; oh < g.OH; ++oh) {
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        const AvgWindow w = avg_window(g, oh, ow, count_include_pad);
        y[(p * g.OH + oh) * g.OW + ow] = wide ? mean(0.0, xp, w) : mean(T(0), xp, w);
      }
    }
  }
}

template <typename T>
void avg_pool2d_backward_ref(const T* dy, T* dx, int64_t planes, const PoolGeometry& g, bool count_include_pad) {
  const int64_t work = saturating_mul(planes, std::max(g.H * g.W, saturating_mul(g.OH, g.OW, g.KH, g.KW)));
  const int nt = threads_for(work, 1 << 15);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    T* dxp = dx + p * g.H * g.W;
    std::fill(dxp, dxp + g.H * g.W, T(0));
    for (int64_t oh = 0; oh < g.OH; ++oh) {
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        const AvgWindow w = avg_window(g, oh, ow, count_include_pad);
        const T share = dy[(p * g.OH + oh) * g.OW + ow] / window_divisor<T>(w.rows, w.cols);
        for (int64_t ih = w.ih_lo; ih < w.ih_hi; ++ih)
          for (int64_t iw = w.iw_lo; iw < w.iw_hi; ++iw) dxp[ih * g.W + iw] += share;
      }
    }
  }
}

void offsets_to_indices(const uint8_t* offsets, int64_t* indices, int64_t planes, const PoolGeometry& g) {
  const int nt = threads_for(planes * g.OH * g.OW, 1 << 15);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t p = 0; p < planes; ++p) {
    for (int64_t oh = 0; oh < g.OH; ++oh) {
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        const int64_t o = (p * g.OH + oh) * g.OW + ow;
        const int64_t k = offsets[o];
        indices[o] = (oh * g.SH - g.PH + k / g.KW) * g.W + (ow * g.SW - g.PW + k % g.KW);
      }
    }
  }
}

#define CONVCORE_POOL_REF(T)                                                                                  \
  template void max_pool2d_ref<T>(const T*, T*, int64_t*, int64_t, const PoolGeometry&);                      \
  template void max_pool2d_backward_ref<T>(const T*, const int64_t*, T*, int64_t, const PoolGeometry&);       \
  template void avg_pool2d_ref<T>(const T*, T*, int64_t, const PoolGeometry&, bool);                          \
  template void avg_pool2d_backward_ref<T>(const T*, T*, int64_t, const PoolGeometry&, bool);
CONVCORE_POOL_REF(float)
CONVCORE_POOL_REF(double)
#undef CONVCORE_POOL_REF

}  // namespace convcore
