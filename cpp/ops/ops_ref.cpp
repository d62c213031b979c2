// ReLU, the option-A shortcut, softmax and cross-entropy, parallel over elements, planes or rows.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "convcore/ops.h"
#include "convcore/threads.h"

namespace convcore {

template <typename T>
void relu_forward(const T* x, T* y, int64_t n) {
  const int nt = threads_for(n, 1 << 18);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] > T(0) ? x[i] : (x[i] != x[i] ? x[i] : T(0));
}

template <typename T>
void relu_backward(const T* dy, const T* x, T* dx, int64_t n) {
  const int nt = threads_for(n, 1 << 18);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T g = dy[i];  // loaded unconditionally so the select compiles to a blend, not a mispredicted branch
    dx[i] = x[i] > T(0) ? g : T(0);
  }
}

template <typename T>
void relu_backward_add(const T* dy, const T* x, T* dx, int64_t n) {
  const int nt = threads_for(n, 1 << 18);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T g = dy[i];
    dx[i] += x[i] > T(0) ? g : T(0);
  }
}

template <typename T>
void subsample_pad(const T* x, int64_t N, int64_t C, int64_t H, int64_t W, int64_t stride, int64_t lo, int64_t K,
                   int64_t P, int64_t Q, T* y) {
  parallel_for(N * K, threads_for(N * K * P * Q, 1 << 18), [&](int64_t plane) {
    const int64_t n = plane / K, c = plane % K - lo;
    T* out = y + plane * P * Q;
    if (c < 0 || c >= C) {
      std::fill(out, out + P * Q, T(0));
      return;
    }
    const T* image = x + (n * C + c) * H * W;
    for (int64_t p = 0; p < P; ++p, out += Q)
      for (int64_t q = 0; q < Q; ++q) out[q] = image[p * stride * W + q * stride];
  });
}

template <typename T>
void subsample_pad_backward_add(const T* dy, const T* out, int64_t N, int64_t C, int64_t H, int64_t W, int64_t stride,
                                int64_t lo, int64_t K, int64_t P, int64_t Q, T* dx) {
  parallel_for(N * C, threads_for(N * C * P * Q, 1 << 18), [&](int64_t plane) {
    const int64_t n = plane / C, c = plane % C, from = ((n * K + lo + c) * P) * Q;
    T* image = dx + plane * H * W;
    for (int64_t p = 0; p < P; ++p)
      for (int64_t q = 0; q < Q; ++q) {
        const T g = dy[from + p * Q + q];
        if (out[from + p * Q + q] > T(0)) image[p * stride * W + q * stride] += g;
      }
  });
}

template <typename T>
void softmax_forward(const T* x, T* y, int64_t rows, int64_t cols) {
  const int nt = threads_for(rows * cols, 1 << 16);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    T* yr = y + r * cols;
    T m = -std::numeric_limits<T>::infinity();
    bool has_nan = false;
    for (int64_t c = 0; c < cols; ++c) {
      has_nan |= xr[c] != xr[c];
      if (xr[c] > m) m = xr[c];
    }
    if (has_nan) {
      for (int64_t c = 0; c < cols; ++c) yr[c] = std::numeric_limits<T>::quiet_NaN();
      continue;
    }
    T sum = 0;
    for (int64_t c = 0; c < cols; ++c) {
      yr[c] = std::exp(xr[c] - m);
      sum += yr[c];
    }
    const T inv = T(1) / sum;
    for (int64_t c = 0; c < cols; ++c) yr[c] *= inv;
  }
}

template <typename T>
double cross_entropy_forward(const T* logits, const int64_t* labels, T* probs, int64_t N, int64_t C) {
  double total = 0;
  const int nt = threads_for(N * C, 1 << 16);
  // Per-row losses are summed in row order after the parallel loop, so the result does not depend on threads.
  std::vector<T> row_loss(static_cast<size_t>(N));
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const T* x = logits + n * C;
    T* p = probs + n * C;
    T m = -std::numeric_limits<T>::infinity();
    bool has_nan = false;
    for (int64_t c = 0; c < C; ++c) {
      has_nan |= x[c] != x[c];
      if (x[c] > m) m = x[c];
    }
    if (has_nan || !std::isfinite(m)) {
      for (int64_t c = 0; c < C; ++c) p[c] = std::numeric_limits<T>::quiet_NaN();
      row_loss[n] = std::numeric_limits<T>::quiet_NaN();
      continue;
    }
    T sum = 0;
    for (int64_t c = 0; c < C; ++c) {
      p[c] = std::exp(x[c] - m);
      sum += p[c];
    }
    const T inv = T(1) / sum;
    for (int64_t c = 0; c < C; ++c) p[c] *= inv;
    row_loss[n] = std::log(sum) - (x[labels[n]] - m);  // x[label] - m first: log(sum) + m - x[label] lost what
    // m, large, rounded away (logits 1e6 + (0, 1, -1), label 0: 1.4375 for 1.4076)
  }
  for (int64_t n = 0; n < N; ++n) total += static_cast<double>(row_loss[n]);
  return N > 0 ? total / static_cast<double>(N) : 0.0;
}

template <typename T>
void cross_entropy_backward(const T* probs, const int64_t* labels, T* dlogits, int64_t N, int64_t C, T scale) {
  const int nt = threads_for(N * C, 1 << 16);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) dlogits[n * C + c] = probs[n * C + c] * scale;
    dlogits[n * C + labels[n]] -= scale;
  }
}

#define CONVCORE_INSTANTIATE_OPS(T)                                                                                \
  template void relu_forward<T>(const T*, T*, int64_t);                                                            \
  template void relu_backward<T>(const T*, const T*, T*, int64_t);                                                 \
  template void relu_backward_add<T>(const T*, const T*, T*, int64_t);                                             \
  template void subsample_pad<T>(const T*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, \
                                 int64_t, T*);                                                                     \
  template void subsample_pad_backward_add<T>(const T*, const T*, int64_t, int64_t, int64_t, int64_t, int64_t,     \
                                              int64_t, int64_t, int64_t, int64_t, T*);                             \
  template void softmax_forward<T>(const T*, T*, int64_t, int64_t);                                                \
  template double cross_entropy_forward<T>(const T*, const int64_t*, T*, int64_t, int64_t);                        \
  template void cross_entropy_backward<T>(const T*, const int64_t*, T*, int64_t, int64_t, T);
CONVCORE_INSTANTIATE_OPS(float)
CONVCORE_INSTANTIATE_OPS(double)
#undef CONVCORE_INSTANTIATE_OPS

}  // namespace convcore
