// Scalar pooling pieces shared by the pooling units: one max window with its compact offset, 2x2 stride-2
// rows and plane loops. Everything sits in an anonymous namespace so each unit keeps its own copy, compiled
// with its own flags.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "convcore/pool.h"

// The ISA units' row functions are forced inline: once the steps over several rows also called them for their
// leftover rows, GCC stopped inlining them into the plane loops (AVX-512: ~15% slower on 28x28 planes; AVX2: the
// backward of 16 x 16 planes 0.67x).
#define CONVCORE_ROW __attribute__((always_inline)) inline

namespace convcore {
namespace {

// a where take, else b, as integer bit operations: random data would mispredict a branch on every element,
// and GCC turns float selects into branches.
template <typename T>
inline T select_bits(bool take, T a, T b) {
  if constexpr (std::is_integral_v<T>) {
    const T mask = static_cast<T>(T(0) - static_cast<T>(take));
    return static_cast<T>((a & mask) | (b & static_cast<T>(~mask)));
  } else {
    using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
    Bits ua, ub;
    std::memcpy(&ua, &a, sizeof(T));
    std::memcpy(&ub, &b, sizeof(T));
    const Bits mask = Bits(0) - static_cast<Bits>(take);
    const Bits r = (ua & mask) | (ub & ~mask);
    T out;
    std::memcpy(&out, &r, sizeof(T));
    return out;
  }
}

// Max of the window of output (oh, ow) in plane xp (H, W), clipped to the input; its offset from the
// window origin where offset is not null. Row-major scan; a later element wins only if greater or NaN.
template <typename T>
inline void max_window(const T* xp, const PoolGeometry& g, int64_t oh, int64_t ow, T* y, uint8_t* offset) {
  const int64_t ih0 = oh * g.SH - g.PH, iw0 = ow * g.SW - g.PW;
  const int64_t ih_lo = std::max<int64_t>(ih0, 0), ih_hi = std::min(ih0 + g.KH, g.H);
  const int64_t iw_lo = std::max<int64_t>(iw0, 0), iw_hi = std::min(iw0 + g.KW, g.W);
  T best = -std::numeric_limits<T>::infinity();
  int64_t best_offset = (ih_lo - ih0) * g.KW + (iw_lo - iw0);
  for (int64_t ih = ih_lo; ih < ih_hi; ++ih) {
    for (int64_t iw = iw_lo; iw < iw_hi; ++iw) {
      const T v = xp[ih * g.W + iw];
      const bool take = (v > best) | std::isnan(v);
      best = select_bits(take, v, best);
      best_offset = select_bits(take, (ih - ih0) * g.KW + (iw - iw0), best_offset);
    }
  }
  *y = best;
  if (offset != nullptr) *offset = static_cast<uint8_t>(best_offset);
}

// Mean of the window of output (oh, ow) in plane xp (H, W): sum of its input elements in row-major order
// divided by PyTorch's divisor (the window clipped to the padded input, or to the input).
inline float avg_window(const float* xp, const PoolGeometry& g, int64_t oh, int64_t ow, bool count_include_pad) {
  const int64_t ih0 = oh * g.SH - g.PH, iw0 = ow * g.SW - g.PW;
  const int64_t ih_end = std::min(ih0 + g.KH, g.H + g.PH), iw_end = std::min(iw0 + g.KW, g.W + g.PW);
  const int64_t ih_lo = std::max<int64_t>(ih0, 0), ih_hi = std::min(ih_end, g.H);
  const int64_t iw_lo = std::max<int64_t>(iw0, 0), iw_hi = std::min(iw_end, g.W);
  float sum = 0.0f;
  for (int64_t ih = ih_lo; ih < ih_hi; ++ih)
    for (int64_t iw = iw_lo; iw < iw_hi; ++iw) sum += xp[ih * g.W + iw];
  return sum / (count_include_pad ? window_divisor<float>(ih_end - ih0, iw_end - iw0)
                                 : window_divisor<float>(ih_hi - ih_lo, iw_hi - iw_lo));
}

// The average pooling backward of one output (oh, ow) into plane dxp, as the reference loops: dy / divisor added
// to each input element of the window in row-major order.
inline void avg_window_backward(float dy, const PoolGeometry& g, int64_t oh, int64_t ow, bool count_include_pad,
                                float* dxp) {
  const int64_t ih0 = oh * g.SH - g.PH, iw0 = ow * g.SW - g.PW;
  const int64_t ih_end = std::min(ih0 + g.KH, g.H + g.PH), iw_end = std::min(iw0 + g.KW, g.W + g.PW);
  const int64_t ih_lo = std::max<int64_t>(ih0, 0), ih_hi = std::min(ih_end, g.H);
  const int64_t iw_lo = std::max<int64_t>(iw0, 0), iw_hi = std::min(iw_end, g.W);
  const float share = dy / (count_include_pad ? window_divisor<float>(ih_end - ih0, iw_end - iw0)
                                             : window_divisor<float>(ih_hi - ih_lo, iw_hi - iw_lo));
  for (int64_t ih = ih_lo; ih < ih_hi; ++ih)
    for (int64_t iw = iw_lo; iw < iw_hi; ++iw) dxp[ih * g.W + iw] += share;
}

// Along one axis (input size, padding, stride, kernel, outputs): the outputs [begin, end) whose windows lie inside
// the input (no padding, no ceil_mode cut).
struct InnerWindows {
  int64_t begin, end;
};
inline InnerWindows inner_windows(int64_t size, int64_t pad, int64_t stride, int64_t kernel, int64_t outputs) {
  const int64_t begin = std::min((pad + stride - 1) / stride, outputs);  // first window starting inside
  const int64_t room = size + pad - kernel;  // negative where no window ends inside (ceil_mode: one cut window)
  const int64_t last = room < 0 ? -1 : room / stride;  // last window ending inside
  return {begin, std::max(begin, std::min(outputs, last + 1))};
}

// Stride-2 windows along a row: outputs [begin, end) of each output row read only columns inside the row, so the
// ISA units run them as vector steps; the others one by one.
inline InnerWindows stride2_columns(const PoolGeometry& g) { return inner_windows(g.W, g.PW, 2, g.KW, g.OW); }

// The average pooling divisor of those outputs of output row oh (the same for all of them).
inline float stride2_divisor(const PoolGeometry& g, int64_t oh, bool count_include_pad) {
  const int64_t ih0 = oh * g.SH - g.PH, ih_end = std::min(ih0 + g.KH, g.H + g.PH);
  const int64_t rows = count_include_pad ? ih_end - ih0 : std::min(ih_end, g.H) - std::max<int64_t>(ih0, 0);
  return window_divisor<float>(rows, g.KW);
}

// The backward of a stride-2 average pooling, one output row at a time into a zeroed dx: edge outputs one by one
// as the reference does (avg_window_backward); the others' shares (dy / divisor, the same division) computed once
// per row into every other float of a zero-padded row, spread[2 * ow] (offset by the padding), so that what window
// element kw of any interior output adds to dx element e is spread[e + PW - kw] (0 where none lands there). Each
// dx row the windows cover is then read and written once: add(dx_at, spread_at, count, KW) adds to dx_at[j], for
// j < count, spread_at[j - kw] for kw from KW - 1 down to 0 (a step's vector of each lies in the buffer). Each dx
// element so receives its outputs' contributions in the reference's order (output rows, then columns, ascending:
// window element kw of output ow lands where element kw + 2 of output ow - 1 does) and zeros where no window
// lies, which change nothing (dx is never -0: it starts at +0), so the sums are the same bits. (Adding window
// element by element, each step read back the floats the step before had stored, shifted by one.)
template <typename Add>
void avg_stride2_backward_rows(const float* dy, float* dx, int64_t planes, const PoolGeometry& g,
                               bool count_include_pad, const Add& add) {
  const InnerWindows cols = stride2_columns(g);
  const int64_t lo = std::max<int64_t>(0, 2 * cols.begin - g.PW);           // the dx columns interior windows cover
  const int64_t hi = std::min(g.W, 2 * (cols.end - 1) - g.PW + g.KW);
  const int64_t front = g.KW;                                                // zeros before spread[0]
  std::vector<float> spread(static_cast<size_t>(front + g.W + g.PW + 16), 0.0f);
  for (int64_t p = 0; p < planes; ++p) {
    float* dxp = dx + p * g.H * g.W;
    std::fill(dxp, dxp + g.H * g.W, 0.0f);
    for (int64_t oh = 0; oh < g.OH; ++oh) {
      const float* dy_row = dy + (p * g.OH + oh) * g.OW;
      const int64_t ih0 = oh * g.SH - g.PH;
      for (int64_t ow = 0; ow < cols.begin; ++ow) avg_window_backward(dy_row[ow], g, oh, ow, count_include_pad, dxp);
      if (cols.begin < cols.end) {
        const float divisor = stride2_divisor(g, oh, count_include_pad);
        for (int64_t ow = cols.begin; ow < cols.end; ++ow) spread[front + 2 * ow] = dy_row[ow] / divisor;
        for (int64_t kh = std::max<int64_t>(0, -ih0); kh < std::min(g.KH, g.H - ih0); ++kh)
          add(dxp + (ih0 + kh) * g.W + lo, spread.data() + front + lo + g.PW, hi - lo, g.KW);
      }
      for (int64_t ow = cols.end; ow < g.OW; ++ow) avg_window_backward(dy_row[ow], g, oh, ow, count_include_pad, dxp);
    }
  }
}

// The OW outputs of one output row and, where offsets is not null, their offsets; top/bot are the two input rows
// (W >= 2*OW).
inline void max_2x2_row_scalar(const float* top, const float* bot, float* y, uint8_t* offsets, int64_t OW) {
  for (int64_t o = 0; o < OW; ++o) {
    const float window[4] = {top[2 * o], top[2 * o + 1], bot[2 * o], bot[2 * o + 1]};
    float best = window[0];
    uint8_t best_offset = 0;
    for (uint8_t k = 1; k < 4; ++k) {
      const bool take = (window[k] > best) | std::isnan(window[k]);
      best = select_bits(take, window[k], best);
      best_offset = select_bits(take, k, best_offset);
    }
    y[o] = best;
    if (offsets != nullptr) offsets[o] = best_offset;
  }
}

// dx rows top/bot for the OW outputs: dy routed to the stored offset, 0 elsewhere (0 + dy, as the reference's
// zero-fill-and-add gives, so -0 becomes +0).
inline void max_2x2_row_backward_scalar(const float* dy, const uint8_t* offsets, float* top, float* bot, int64_t OW) {
  for (int64_t o = 0; o < OW; ++o) {
    const float g = 0.0f + dy[o];
    const uint8_t k = offsets[o];
    top[2 * o] = k == 0 ? g : 0.0f;
    top[2 * o + 1] = k == 1 ? g : 0.0f;
    bot[2 * o] = k == 2 ? g : 0.0f;
    bot[2 * o + 1] = k == 3 ? g : 0.0f;
  }
}

// Sum in the reference's order (0 + a + b + c + d), times 1/4 (== / 4 exactly).
inline void avg_2x2_row_scalar(const float* top, const float* bot, float* y, int64_t OW) {
  for (int64_t o = 0; o < OW; ++o) {
    float sum = 0.0f;
    sum += top[2 * o];
    sum += top[2 * o + 1];
    sum += bot[2 * o];
    sum += bot[2 * o + 1];
    y[o] = sum * 0.25f;
  }
}

inline void avg_2x2_row_backward_scalar(const float* dy, float* top, float* bot, int64_t OW) {
  for (int64_t o = 0; o < OW; ++o) {
    const float g = 0.0f + dy[o] * 0.25f;
    top[2 * o] = g;
    top[2 * o + 1] = g;
    bot[2 * o] = g;
    bot[2 * o + 1] = g;
  }
}

// Plane loops: row(top, bot, out_row, ...) handles one output row of OW = W/2 outputs.
template <typename Row>
inline void for_output_rows(int64_t planes, int64_t H, int64_t W, Row row) {
  const int64_t OH = H / 2;
  for (int64_t p = 0; p < planes; ++p)
    for (int64_t oh = 0; oh < OH; ++oh) row((p * H + 2 * oh) * W, p * OH + oh);
}

// Backward: row(dy_row_index, top, bot) writes the covered part of two dx rows; this writes the rest
// (an odd last column, an odd last row) so that every dx element is written exactly once.
template <typename Row>
inline void for_gradient_rows(float* dx, int64_t planes, int64_t H, int64_t W, Row row) {
  const int64_t OH = H / 2;
  for (int64_t p = 0; p < planes; ++p) {
    float* plane = dx + p * H * W;
    for (int64_t oh = 0; oh < OH; ++oh) {
      float* top = plane + 2 * oh * W;
      float* bot = top + W;
      row(p * OH + oh, top, bot);
      if (W % 2) top[W - 1] = bot[W - 1] = 0.0f;
    }
    if (H % 2) std::fill_n(plane + (H - 1) * W, W, 0.0f);  // (not memset: an empty plane's pointer may be null)
  }
}

}  // namespace
}  // namespace convcore
