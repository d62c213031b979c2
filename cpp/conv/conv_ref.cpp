// Reference convolution kernels (direct loops, float and double), parallel over (n, k) or (n, c) or (k, c).
// Every output element is summed by one thread in a fixed order, so results do not depend on the thread count.
#include <algorithm>

#include "convcore/conv.h"
#include "convcore/threads.h"

namespace convcore {
namespace {

// Output positions o in [lo, hi) whose input index o*stride - pad + tap lies in [0, size).
struct ValidRange {
  int64_t lo, hi;
};

ValidRange valid_outputs(int64_t out_size, int64_t in_size, int64_t stride, int64_t pad, int64_t tap) {
  // o*stride >= pad - tap  and  o*stride < in_size + pad - tap
  const int64_t first = pad - tap;
  const int64_t lo = first <= 0 ? 0 : (first + stride - 1) / stride;
  const int64_t end = in_size + pad - tap;
  const int64_t hi = end <= 0 ? 0 : std::min(out_size, (end + stride - 1) / stride);
  return {std::min(lo, hi), hi};
}

int64_t forward_work(const ConvShape& s) { return s.N * s.K * s.P * s.Q * (s.C / s.groups) * s.R * s.S; }

}  // namespace

template <typename T>
void conv2d_forward_ref(const ConvShape& s, const T* x, const T* w, const T* bias, Activation activation, T* y) {
  const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups;
  const int nt = threads_for(forward_work(s));
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t nk = 0; nk < s.N * s.K; ++nk) {
    const int64_t n = nk / s.K, k = nk % s.K, g = k / Kg;
    T* yp = y + nk * s.P * s.Q;  // (P, Q) plane of y[n, k]
    std::fill(yp, yp + s.P * s.Q, bias ? bias[k] : T(0));
    for (int64_t c = 0; c < Cg; ++c) {
      const T* xp = x + (n * s.C + g * Cg + c) * s.H * s.W;  // (H, W) plane of x[n, g*Cg + c]
      const T* wp = w + (k * Cg + c) * s.R * s.S;           // (R, S) taps of w[k, c]
      for (int64_t r = 0; r < s.R; ++r) {
        const ValidRange pr = valid_outputs(s.P, s.H, s.stride_h, s.pad_h, r * s.dil_h);
        for (int64_t t = 0; t < s.S; ++t) {
          const ValidRange qr = valid_outputs(s.Q, s.W, s.stride_w, s.pad_w, t * s.dil_w);
          const int64_t w_off = t * s.dil_w - s.pad_w;  // input column of output column q is q*stride_w + w_off
          const T tap = wp[r * s.S + t];
          for (int64_t p = pr.lo; p < pr.hi; ++p) {
            const T* xrow = xp + (p * s.stride_h - s.pad_h + r * s.dil_h) * s.W;
            T* yrow = yp + p * s.Q;
            for (int64_t q = qr.lo; q < qr.hi; ++q) yrow[q] += tap * xrow[q * s.stride_w + w_off];
          }
        }
      }
    }
    if (activation == Activation::relu) {
      for (int64_t pq = 0; pq < s.P * s.Q; ++pq) yp[pq] = yp[pq] < T(0) ? T(0) : yp[pq];  // NaN stays NaN
    }
  }
}

template <typename T>
void conv2d_backward_input_ref(const ConvShape& s, const T* dy, const T* w, T* dx) {
  const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups;
  const int nt = threads_for(forward_work(s));
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t nc = 0; nc < s.N * s.C; ++nc) {
    const int64_t n = nc / s.C, ci = nc % s.C, g = ci / Cg, c = ci % Cg;
    T* dxp = dx + nc * s.H * s.W;  // (H, W) plane of dx[n, ci], owned by this iteration
    std::fill(dxp, dxp + s.H * s.W, T(0));
    for (int64_t k = g * Kg; k < (g + 1) * Kg; ++k) {
      const T* dyp = dy + (n * s.K + k) * s.P * s.Q;  // (P, Q) plane of dy[n, k]
      const T* wp = w + (k * Cg + c) * s.R * s.S;     // (R, S) taps of w[k, c]
      for (int64_t r = 0; r < s.R; ++r) {
        const ValidRange pr = valid_outputs(s.P, s.H, s.stride_h, s.pad_h, r * s.dil_h);
        for (int64_t t = 0; t < s.S; ++t) {
          const ValidRange qr = valid_outputs(s.Q, s.W, s.stride_w, s.pad_w, t * s.dil_w);
          const int64_t w_off = t * s.dil_w - s.pad_w;  // input column of output column q is q*stride_w + w_off
          const T tap = wp[r * s.S + t];
          for (int64_t p = pr.lo; p < pr.hi; ++p) {
            T* dxrow = dxp + (p * s.stride_h - s.pad_h + r * s.dil_h) * s.W;
            const T* dyrow = dyp + p * s.Q;
            for (int64_t q = qr.lo; q < qr.hi; ++q) dxrow[q * s.stride_w + w_off] += tap * dyrow[q];
          }
        }
      }
    }
  }
}

template <typename T>
void conv2d_backward_weight_ref(const ConvShape& s, const T* dy, const T* x, T* dw) {
  const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups;
  const int nt = threads_for(forward_work(s));
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t kc = 0; kc < s.K * Cg; ++kc) {
    const int64_t k = kc / Cg, c = kc % Cg, g = k / Kg;
    for (int64_t r = 0; r < s.R; ++r) {
      const ValidRange pr = valid_outputs(s.P, s.H, s.stride_h, s.pad_h, r * s.dil_h);
      for (int64_t t = 0; t < s.S; ++t) {
        const ValidRange qr = valid_outputs(s.Q, s.W, s.stride_w, s.pad_w, t * s.dil_w);
        const int64_t w_off = t * s.dil_w - s.pad_w;  // input column of output column q is q*stride_w + w_off
        T acc = 0;
        for (int64_t n = 0; n < s.N; ++n) {
          const T* dyp = dy + (n * s.K + k) * s.P * s.Q;            // (P, Q) plane of dy[n, k]
          const T* xp = x + (n * s.C + g * Cg + c) * s.H * s.W;      // (H, W) plane of x[n, g*Cg + c]
          for (int64_t p = pr.lo; p < pr.hi; ++p) {
            const T* xrow = xp + (p * s.stride_h - s.pad_h + r * s.dil_h) * s.W;
            const T* dyrow = dyp + p * s.Q;
            for (int64_t q = qr.lo; q < qr.hi; ++q) acc += dyrow[q] * xrow[q * s.stride_w + w_off];
          }
        }
        dw[(kc * s.R + r) * s.S + t] = acc;
      }
    }
  }
}

template <typename T>
void conv2d_backward_bias_ref(const ConvShape& s, const T* dy, T* db) {
  const int nt = threads_for(s.N * s.K * s.P * s.Q, 1 << 18);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t k = 0; k < s.K; ++k) {
    T acc = 0;
    for (int64_t n = 0; n < s.N; ++n) {
      const T* dyp = dy + (n * s.K + k) * s.P * s.Q;
      for (int64_t pq = 0; pq < s.P * s.Q; ++pq) acc += dyp[pq];
    }
    db[k] = acc;
  }
}

#define CONVCORE_INSTANTIATE_CONV_REF(T)                                                   \
  template void conv2d_forward_ref<T>(const ConvShape&, const T*, const T*, const T*, Activation, T*); \
  template void conv2d_backward_input_ref<T>(const ConvShape&, const T*, const T*, T*);    \
  template void conv2d_backward_weight_ref<T>(const ConvShape&, const T*, const T*, T*);   \
  template void conv2d_backward_bias_ref<T>(const ConvShape&, const T*, T*);
CONVCORE_INSTANTIATE_CONV_REF(float)
CONVCORE_INSTANTIATE_CONV_REF(double)
#undef CONVCORE_INSTANTIATE_CONV_REF

}  // namespace convcore
