// Reference max and average pooling over NCHW planes, float and double. The oracle for the fast kernels.
#include <algorithm>
#include <cmath>
#include <limits>

#include "convcore/pool.h"
#include "convcore/threads.h"

namespace convcore {
namespace {

// The window of output (p, q) clipped to the input: rows [h0, h1), columns [w0, w1); divisor per PyTorch.
struct Window {
  int64_t h0, h1, w0, w1, divisor;
};

Window window(const PoolShape& s, int64_t p, int64_t q, bool count_include_pad) {
  int64_t h0 = p * s.stride_h - s.pad_h, w0 = q * s.stride_w - s.pad_w;
  int64_t h1 = std::min(h0 + s.kh, s.H + s.pad_h), w1 = std::min(w0 + s.kw, s.W + s.pad_w);
  const int64_t padded = (h1 - h0) * (w1 - w0);
  h0 = std::max<int64_t>(h0, 0);
  w0 = std::max<int64_t>(w0, 0);
  h1 = std::min(h1, s.H);
  w1 = std::min(w1, s.W);
  return {h0, h1, w0, w1, count_include_pad ? padded : (h1 - h0) * (w1 - w0)};
}

}  // namespace

template <typename T>
void max_pool2d_forward_ref(const PoolShape& s, const T* x, T* y, int64_t* indices) {
  const int64_t planes = s.N * s.C, PQ = s.P * s.Q, HW = s.H * s.W;
  const int nt = threads_for(planes * PQ * s.kh * s.kw);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t plane = 0; plane < planes; ++plane) {
    const T* xp = x + plane * HW;
    for (int64_t p = 0; p < s.P; ++p) {
      for (int64_t q = 0; q < s.Q; ++q) {
        const Window win = window(s, p, q, true);
        T best = -std::numeric_limits<T>::infinity();
        int64_t best_at = win.h0 * s.W + win.w0;
        for (int64_t h = win.h0; h < win.h1; ++h) {
          for (int64_t v = win.w0; v < win.w1; ++v) {
            const T val = xp[h * s.W + v];
            if (val > best || std::isnan(val)) {
              best = val;
              best_at = h * s.W + v;
            }
          }
        }
        y[plane * PQ + p * s.Q + q] = best;
        indices[plane * PQ + p * s.Q + q] = best_at;
      }
    }
  }
}

template <typename T>
void max_pool2d_backward_ref(const PoolShape& s, const T* dy, const int64_t* indices, T* dx) {
  const int64_t planes = s.N * s.C, PQ = s.P * s.Q, HW = s.H * s.W;
  const int nt = threads_for(planes * (PQ + HW));
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t plane = 0; plane < planes; ++plane) {
    T* dxp = dx + plane * HW;
    std::fill(dxp, dxp + HW, T(0));
    for (int64_t i = 0; i < PQ; ++i) dxp[indices[plane * PQ + i]] += dy[plane * PQ + i];
  }
}

template <typename T>
void avg_pool2d_forward_ref(const PoolShape& s, bool count_include_pad, const T* x, T* y) {
  const int64_t planes = s.N * s.C, PQ = s.P * s.Q, HW = s.H * s.W;
  const int nt = threads_for(planes * PQ * s.kh * s.kw);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t plane = 0; plane < planes; ++plane) {
    const T* xp = x + plane * HW;
    for (int64_t p = 0; p < s.P; ++p) {
      for (int64_t q = 0; q < s.Q; ++q) {
        const Window win = window(s, p, q, count_include_pad);
        T sum = 0;
        for (int64_t h = win.h0; h < win.h1; ++h)
          for (int64_t v = win.w0; v < win.w1; ++v) sum += xp[h * s.W + v];
        y[plane * PQ + p * s.Q + q] = sum / T(win.divisor);
      }
    }
  }
}

template <typename T>
void avg_pool2d_backward_ref(const PoolShape& s, bool count_include_pad, const T* dy, T* dx) {
  const int64_t planes = s.N * s.C, PQ = s.P * s.Q, HW = s.H * s.W;
  const int nt = threads_for(planes * PQ * s.kh * s.kw);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t plane = 0; plane < planes; ++plane) {
    T* dxp = dx + plane * HW;
    std::fill(dxp, dxp + HW, T(0));
    for (int64_t p = 0; p < s.P; ++p) {
      for (int64_t q = 0; q < s.Q; ++q) {
        const Window win = window(s, p, q, count_include_pad);
        const T g = dy[plane * PQ + p * s.Q + q] / T(win.divisor);
        for (int64_t h = win.h0; h < win.h1; ++h)
          for (int64_t v = win.w0; v < win.w1; ++v) dxp[h * s.W + v] += g;
      }
    }
  }
}

#define CONVCORE_INSTANTIATE(T)                                                                      \
  template void max_pool2d_forward_ref<T>(const PoolShape&, const T*, T*, int64_t*);                 \
  template void max_pool2d_backward_ref<T>(const PoolShape&, const T*, const int64_t*, T*);          \
  template void avg_pool2d_forward_ref<T>(const PoolShape&, bool, const T*, T*);                     \
  template void avg_pool2d_backward_ref<T>(const PoolShape&, bool, const T*, T*);
CONVCORE_INSTANTIATE(float)
CONVCORE_INSTANTIATE(double)
#undef CONVCORE_INSTANTIATE

}  // namespace convcore
