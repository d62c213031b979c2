// Direct depthwise convolution (groups == C: one input channel per filter), float32: the GEMM route would run
// one-row GEMMs per channel. Inner loops run along output columns so the compiler vectorises them.
#include <algorithm>

#include "convcore/conv.h"
#include "convcore/threads.h"

namespace convcore {
namespace {

// Output columns q in [lo, hi) read input column q*stride + off inside [0, size).
struct Span {
  int64_t lo, hi;
};

Span valid_span(int64_t out_size, int64_t in_size, int64_t stride, int64_t off) {
  const int64_t lo = off >= 0 ? 0 : (-off + stride - 1) / stride;
  const int64_t end = in_size - off;  // q*stride < end
  const int64_t hi = end <= 0 ? 0 : std::min(out_size, (end + stride - 1) / stride);
  return {std::min(lo, hi), hi};
}

constexpr int kLanes = 8;  // weight-gradient partial sums per tap, added in lane order at the end

}  // namespace

bool is_depthwise(const ConvShape& s) { return s.groups == s.C && s.groups > 1; }

void conv2d_forward_depthwise(const ConvShape& s, const float* x, const float* w, const float* bias, bool relu,
                              float* y) {
  const int64_t Kg = s.K / s.groups, RS = s.R * s.S, PQ = s.P * s.Q, HW = s.H * s.W;
  parallel_for(s.N * s.K, threads_for(s.N * s.K * PQ * RS), [&](int64_t nk) {
    const int64_t n = nk / s.K, k = nk % s.K;
    const float* xc = x + (n * s.C + k / Kg) * HW;  // (H, W) plane of the filter's input channel
    const float* wk = w + k * RS;                   // (R, S) taps
    float* yp = y + nk * PQ;                        // (P, Q) output plane
    for (int64_t p = 0; p < s.P; ++p) {
      float* yrow = yp + p * s.Q;
      std::fill(yrow, yrow + s.Q, bias ? bias[k] : 0.0f);
      for (int64_t r = 0; r < s.R; ++r) {
        const int64_t h = p * s.stride_h - s.pad_h + r * s.dil_h;
        if (h < 0 || h >= s.H) continue;
        const float* xrow = xc + h * s.W;
        for (int64_t t = 0; t < s.S; ++t) {
          const int64_t off = t * s.dil_w - s.pad_w;
          const Span qs = valid_span(s.Q, s.W, s.stride_w, off);
          const float tap = wk[r * s.S + t];
          if (s.stride_w == 1) {
            for (int64_t q = qs.lo; q < qs.hi; ++q) yrow[q] += tap * xrow[q + off];
          } else {
            for (int64_t q = qs.lo; q < qs.hi; ++q) yrow[q] += tap * xrow[q * s.stride_w + off];
          }
        }
      }
      if (relu)
        for (int64_t q = 0; q < s.Q; ++q) yrow[q] = yrow[q] < 0.0f ? 0.0f : yrow[q];  // NaN stays NaN
    }
  });
}

void conv2d_backward_input_depthwise(const ConvShape& s, const float* dy, const float* w, float* dx) {
  const int64_t Kg = s.K / s.groups, RS = s.R * s.S, PQ = s.P * s.Q, HW = s.H * s.W;
  // one input plane per task, scattered into from its Kg filters' output planes in (k, r, t, p, q) order
  parallel_for(s.N * s.C, threads_for(s.N * s.K * PQ * RS), [&](int64_t nc) {
    const int64_t n = nc / s.C, c = nc % s.C;
    float* dxc = dx + nc * HW;
    std::fill(dxc, dxc + HW, 0.0f);
    for (int64_t k = c * Kg; k < (c + 1) * Kg; ++k) {
      const float* dyp = dy + (n * s.K + k) * PQ;
      for (int64_t r = 0; r < s.R; ++r) {
        for (int64_t t = 0; t < s.S; ++t) {
          const int64_t off = t * s.dil_w - s.pad_w;
          const Span qs = valid_span(s.Q, s.W, s.stride_w, off);
          const float tap = w[k * RS + r * s.S + t];
          for (int64_t p = 0; p < s.P; ++p) {
            const int64_t h = p * s.stride_h - s.pad_h + r * s.dil_h;
            if (h < 0 || h >= s.H) continue;
            float* dxrow = dxc + h * s.W;
            const float* dyrow = dyp + p * s.Q;
            if (s.stride_w == 1) {
              for (int64_t q = qs.lo; q < qs.hi; ++q) dxrow[q + off] += tap * dyrow[q];
            } else {
              for (int64_t q = qs.lo; q < qs.hi; ++q) dxrow[q * s.stride_w + off] += tap * dyrow[q];
            }
          }
        }
      }
    }
  });
}

void conv2d_backward_weight_depthwise(const ConvShape& s, const float* dy, const float* x, float* dw) {
  const int64_t Kg = s.K / s.groups, RS = s.R * s.S, PQ = s.P * s.Q, HW = s.H * s.W;
  // one filter per task; each tap sums kLanes partials over (n, p, q) in order, then the lanes in order
  parallel_for(s.K, threads_for(s.N * s.K * PQ * RS), [&](int64_t k) {
    for (int64_t r = 0; r < s.R; ++r) {
      for (int64_t t = 0; t < s.S; ++t) {
        const int64_t off = t * s.dil_w - s.pad_w;
        const Span qs = valid_span(s.Q, s.W, s.stride_w, off);
        float lanes[kLanes] = {};
        for (int64_t n = 0; n < s.N; ++n) {
          const float* xc = x + (n * s.C + k / Kg) * HW;
          const float* dyp = dy + (n * s.K + k) * PQ;
          for (int64_t p = 0; p < s.P; ++p) {
            const int64_t h = p * s.stride_h - s.pad_h + r * s.dil_h;
            if (h < 0 || h >= s.H) continue;
            const float* xrow = xc + h * s.W;
            const float* dyrow = dyp + p * s.Q;
            int64_t q = qs.lo;
            for (; q + kLanes <= qs.hi; q += kLanes)
              for (int j = 0; j < kLanes; ++j) lanes[j] += dyrow[q + j] * xrow[(q + j) * s.stride_w + off];
            for (int j = 0; q < qs.hi; ++q, ++j) lanes[j] += dyrow[q] * xrow[q * s.stride_w + off];
          }
        }
        float sum = 0.0f;
        for (int j = 0; j < kLanes; ++j) sum += lanes[j];
        dw[k * RS + r * s.S + t] = sum;
      }
    }
  });
}

}  // namespace convcore
