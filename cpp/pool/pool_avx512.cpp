// Pooling fast paths, AVX-512: 2x2 stride-2 max/avg forward and backward, 16 outputs per step (several rows a step
// where rows have at most 8 outputs), masked tails (load_lanes: masked only at the arrays' ends).
#include <immintrin.h>

#include <algorithm>

#include "convcore/pool.h"
#include "pool_rows.h"

namespace convcore {
namespace {

// Load masks for the 2*n input floats (two vectors) and the n outputs of a step of n <= 16 outputs.
struct StepMasks {
  __mmask16 in_lo, in_hi, out;
};

inline StepMasks step_masks(int64_t n) {
  const uint32_t in = n >= 16 ? 0xFFFFFFFFu : (1u << (2 * n)) - 1u;
  return StepMasks{static_cast<__mmask16>(in & 0xFFFF), static_cast<__mmask16>(in >> 16),
                   static_cast<__mmask16>(n >= 16 ? 0xFFFF : (1u << n) - 1u)};
}

// Loads and stores of up to 16 lanes, masked only where they must be. On AMD Zen 5 masked moves cost: a sequential
// read from memory by masked loads ran at 11-12 GB/s with a partial mask against 29-34 plain (one thread), and the
// 2x2/2 max pooling forward + backward of 32 x 64 x 32 x 32 ran 2x faster with plain moves for its full steps.
// A load reads all 16 floats where they lie before `end` (the end of the array p points into; the lanes past the
// mask then hold whatever lies there, which callers never store), else the masked lanes and zeros.
inline __m512 load_lanes(__mmask16 m, const float* p, const float* end) {
  return end - p >= 16 ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(m, p);
}
inline void store_lanes(float* p, __mmask16 m, __m512 v) {
  if (m == 0xFFFF)
    _mm512_storeu_ps(p, v);
  else
    _mm512_mask_storeu_ps(p, m, v);
}
// (The offsets' conversions take a full mask: the unmasked forms' undefined pass-through draws GCC 12 warnings.)
inline void store_offsets(uint8_t* p, __mmask16 m, __m512i k) {
  if (m == 0xFFFF)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm512_maskz_cvtepi32_epi8(0xFFFF, k));
  else
    _mm512_mask_cvtepi32_storeu_epi8(p, m, k);
}
inline __m512i load_offsets(__mmask16 m, const uint8_t* p, const uint8_t* end) {
  return _mm512_maskz_cvtepu8_epi32(0xFFFF, end - p >= 16 ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(p))
                                                          : _mm_maskz_loadu_epi8(m, p));
}

// Even / odd columns of the 32 floats lo, hi, in order.
inline void deinterleave(__m512 lo, __m512 hi, __m512* even, __m512* odd) {
  const __m512i even_index = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd_index = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  *even = _mm512_permutex2var_ps(lo, even_index, hi);
  *odd = _mm512_permutex2var_ps(lo, odd_index, hi);
}

// The same from the 2*n floats at p (n <= 16); end: the end of p's array (load_lanes).
inline void deinterleave(const float* p, const StepMasks& m, const float* end, __m512* even, __m512* odd) {
  deinterleave(load_lanes(m.in_lo, p, end), load_lanes(m.in_hi, p + 16, end), even, odd);
}

// Interleaves u, v into the 2*n floats u0 v0 u1 v1 ... at p.
inline void store_interleaved(float* p, const StepMasks& m, __m512 u, __m512 v) {
  const __m512i lo_index = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi_index = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  store_lanes(p, m.in_lo, _mm512_permutex2var_ps(u, lo_index, v));
  store_lanes(p + 16, m.in_hi, _mm512_permutex2var_ps(u, hi_index, v));
}

// The max of 16 windows' elements scanned in order, and with kOffsets the offset of each (PyTorch's rule: a later
// element v is taken where v > max or v is NaN). Without offsets the same values come out, the offsets' blends and
// stores left out (an inference call has no use for them).
template <bool kOffsets>
struct RunningMax {
  __m512 best = _mm512_setzero_ps();
  __m512i offset = _mm512_setzero_si512();

  void start(__m512 v, int k) {
    best = v;
    if constexpr (kOffsets) offset = _mm512_set1_epi32(k);
  }
  void take(__m512 v, int k) {
    const __mmask16 greater = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    best = _mm512_mask_blend_ps(greater, best, v);
    if constexpr (kOffsets) offset = _mm512_mask_blend_epi32(greater, offset, _mm512_set1_epi32(k));
  }
  // y's outputs (mask m) and, with kOffsets, their offsets.
  void store(float* y, uint8_t* offsets, __mmask16 m) const {
    store_lanes(y, m, best);
    if constexpr (kOffsets) store_offsets(offsets, m, offset);
  }
};

// The row functions' `end` arguments: the ends of the arrays their inputs lie in (load_lanes).
// offsets: null where kOffsets is false (as in every function with kOffsets).
template <bool kOffsets>
CONVCORE_ROW void max_2x2_row(const float* top, const float* bot, const float* x_end, float* y, uint8_t* offsets,
                              int64_t OW) {
  for (int64_t o = 0; o < OW; o += 16) {
    const StepMasks m = step_masks(OW - o);
    __m512 a, b, c, d;
    deinterleave(top + 2 * o, m, x_end, &a, &b);
    deinterleave(bot + 2 * o, m, x_end, &c, &d);
    RunningMax<kOffsets> max;
    max.start(a, 0);
    max.take(b, 1);
    max.take(c, 2);
    max.take(d, 3);
    max.store(y + o, kOffsets ? offsets + o : nullptr, m.out);
  }
}

CONVCORE_ROW void max_2x2_row_backward(const float* dy, const float* dy_end, const uint8_t* offsets,
                                      const uint8_t* offsets_end, float* top, float* bot, int64_t OW) {
  for (int64_t o = 0; o < OW; o += 16) {
    const StepMasks m = step_masks(OW - o);
    const __m512 g = _mm512_add_ps(_mm512_setzero_ps(), load_lanes(m.out, dy + o, dy_end));
    const __m512i k = load_offsets(m.out, offsets + o, offsets_end);
    const __m512 v0 = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(k, _mm512_set1_epi32(0)), g);
    const __m512 v1 = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(k, _mm512_set1_epi32(1)), g);
    const __m512 v2 = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(k, _mm512_set1_epi32(2)), g);
    const __m512 v3 = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(k, _mm512_set1_epi32(3)), g);
    store_interleaved(top + 2 * o, m, v0, v1);
    store_interleaved(bot + 2 * o, m, v2, v3);
  }
}

CONVCORE_ROW void avg_2x2_row(const float* top, const float* bot, const float* x_end, float* y, int64_t OW) {
  const __m512 quarter = _mm512_set1_ps(0.25f);
  for (int64_t o = 0; o < OW; o += 16) {
    const StepMasks m = step_masks(OW - o);
    __m512 a, b, c, d;
    deinterleave(top + 2 * o, m, x_end, &a, &b);
    deinterleave(bot + 2 * o, m, x_end, &c, &d);
    __m512 sum = _mm512_add_ps(_mm512_setzero_ps(), a);
    sum = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(sum, b), c), d);
    store_lanes(y + o, m.out, _mm512_mul_ps(sum, quarter));
  }
}

CONVCORE_ROW void avg_2x2_row_backward(const float* dy, const float* dy_end, float* top, float* bot, int64_t OW) {
  const __m512 quarter = _mm512_set1_ps(0.25f);
  for (int64_t o = 0; o < OW; o += 16) {
    const StepMasks m = step_masks(OW - o);
    const __m512 g =
        _mm512_add_ps(_mm512_setzero_ps(), _mm512_mul_ps(load_lanes(m.out, dy + o, dy_end), quarter));
    store_interleaved(top + 2 * o, m, g, g);
    store_interleaved(bot + 2 * o, m, g, g);
  }
}

// Narrow rows (even W from 2 to 16, even H): a step takes G = 16 / OW whole output rows at once (a row of OW <= 8
// outputs used at most half a vector; LeNet-5's second pooling has rows of 5). With H and W even, output row r
// reads the 2W input floats at r * 2W, so a step's G rows read the G * 2W <= 64 consecutive floats of four
// vectors, and its G * OW outputs are consecutive too. Lane i (row i / OW, column i % OW) takes its four window
// elements from those vectors through index vectors built once per call.
struct NarrowRows {
  int64_t G, OW, lanes, floats;  // rows and outputs per step, the input floats they cover
  __m512i window[4];             // per window element k: the input float (0..63) of each lane
  __m512i out_of[4], element[4];  // per input vector v: each input float's output lane and window element
  __mmask16 out_mask, in_mask[4];

  explicit NarrowRows(int64_t W) : G(32 / W), OW(W / 2), lanes(G * OW), floats(G * 2 * W) {
    alignas(64) int32_t idx[4][16] = {}, out[4][16] = {}, elem[4][16] = {};
    for (int64_t i = 0; i < lanes; ++i)
      for (int k = 0; k < 4; ++k) idx[k][i] = int32_t(i / OW * 2 * W + (k / 2) * W + 2 * (i % OW) + k % 2);
    for (int64_t f = 0; f < floats; ++f) {
      const int64_t r = f / (2 * W), in_row = f % (2 * W);
      out[f / 16][f % 16] = int32_t(r * OW + in_row % W / 2);
      elem[f / 16][f % 16] = int32_t(2 * (in_row / W) + in_row % 2);
    }
    for (int v = 0; v < 4; ++v) {
      window[v] = _mm512_load_si512(idx[v]);
      out_of[v] = _mm512_load_si512(out[v]);
      element[v] = _mm512_load_si512(elem[v]);
      in_mask[v] = __mmask16((1u << std::clamp<int64_t>(floats - 16 * v, 0, 16)) - 1);
    }
    out_mask = __mmask16((1u << lanes) - 1);
  }

  // The four window elements of each lane, from the step's input at p (end: the end of its array).
  void gather(const float* p, const float* end, __m512 e[4]) const {
    __m512 in[4];
    for (int v = 0; v < 4; ++v) in[v] = load_lanes(in_mask[v], p + 16 * v, end);
    for (int k = 0; k < 4; ++k) {
      const __m512 low = _mm512_permutex2var_ps(in[0], window[k], in[1]);
      const __m512 high = _mm512_permutex2var_ps(in[2], window[k], in[3]);
      const __mmask16 from_high = _mm512_cmpge_epi32_mask(window[k], _mm512_set1_epi32(32));
      e[k] = _mm512_mask_blend_ps(from_high, low, high);
    }
  }
};

inline bool narrow_rows(int64_t H, int64_t W) { return H % 2 == 0 && W >= 2 && W % 2 == 0 && W <= 16; }

// Runs step(n, i) for each whole step i of the planes' H/2 output rows each, then row(r) for each output row left.
template <typename Step, typename Row>
void for_narrow_steps(int64_t planes, int64_t H, int64_t W, const Step& step, const Row& row) {
  const NarrowRows n(W);
  const int64_t rows = planes * (H / 2), steps = rows / n.G;
  for (int64_t i = 0; i < steps; ++i) step(n, i);
  for (int64_t r = steps * n.G; r < rows; ++r) row(r);
}

template <bool kOffsets>
void max_2x2s2_planes(const float* x, float* y, uint8_t* offsets, int64_t planes, int64_t H, int64_t W) {
  const int64_t OW = W / 2;
  const float* x_end = x + planes * H * W;
  const auto offsets_at = [&](int64_t o) { return kOffsets ? offsets + o : nullptr; };
  if (narrow_rows(H, W)) {
    const auto step = [&](const NarrowRows& n, int64_t i) {
      __m512 e[4];
      n.gather(x + i * n.floats, x_end, e);
      RunningMax<kOffsets> max;
      max.start(e[0], 0);
      for (int k = 1; k < 4; ++k) max.take(e[k], k);
      max.store(y + i * n.lanes, offsets_at(i * n.lanes), n.out_mask);
    };
    for_narrow_steps(planes, H, W, step, [&](int64_t r) {
      max_2x2_row<kOffsets>(x + r * 2 * W, x + r * 2 * W + W, x_end, y + r * OW, offsets_at(r * OW), OW);
    });
    return;
  }
  for_output_rows(planes, H, W, [&](int64_t in, int64_t out_row) {
    max_2x2_row<kOffsets>(x + in, x + in + W, x_end, y + out_row * OW, offsets_at(out_row * OW), OW);
  });
}

void max_2x2s2_forward(const float* x, float* y, uint8_t* offsets, int64_t planes, int64_t H, int64_t W) {
  if (offsets)
    max_2x2s2_planes<true>(x, y, offsets, planes, H, W);
  else
    max_2x2s2_planes<false>(x, y, nullptr, planes, H, W);
}

void max_2x2s2_backward(const float* dy, const uint8_t* offsets, float* dx, int64_t planes, int64_t H, int64_t W) {
  const int64_t OW = W / 2;
  const float* dy_end = dy + planes * (H / 2) * OW;
  const uint8_t* offsets_end = offsets + planes * (H / 2) * OW;
  if (narrow_rows(H, W)) {
    const auto step = [&](const NarrowRows& n, int64_t i) {
      const __m512 g = _mm512_add_ps(_mm512_setzero_ps(), load_lanes(n.out_mask, dy + i * n.lanes, dy_end));
      const __m512i k = load_offsets(n.out_mask, offsets + i * n.lanes, offsets_end);
      for (int v = 0; v < 4; ++v) {
        const __m512 routed = _mm512_maskz_permutexvar_ps(0xFFFF, n.out_of[v], g);
        const __m512i element = _mm512_maskz_permutexvar_epi32(0xFFFF, n.out_of[v], k);
        const __mmask16 argmax = _mm512_cmpeq_epi32_mask(element, n.element[v]);
        store_lanes(dx + i * n.floats + 16 * v, n.in_mask[v], _mm512_maskz_mov_ps(argmax, routed));
      }
    };
    for_narrow_steps(planes, H, W, step, [&](int64_t r) {
      max_2x2_row_backward(dy + r * OW, dy_end, offsets + r * OW, offsets_end, dx + r * 2 * W, dx + r * 2 * W + W,
                           OW);
    });
    return;
  }
  for_gradient_rows(dx, planes, H, W, [&](int64_t out_row, float* top, float* bot) {
    max_2x2_row_backward(dy + out_row * OW, dy_end, offsets + out_row * OW, offsets_end, top, bot, OW);
  });
}

void avg_2x2s2_forward(const float* x, float* y, int64_t planes, int64_t H, int64_t W) {
  const int64_t OW = W / 2;
  const float* x_end = x + planes * H * W;
  if (narrow_rows(H, W)) {
    const auto step = [&](const NarrowRows& n, int64_t i) {
      __m512 e[4];
      n.gather(x + i * n.floats, x_end, e);
      __m512 sum = _mm512_add_ps(_mm512_setzero_ps(), e[0]);  // the reference's order: 0 + a + b + c + d
      sum = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(sum, e[1]), e[2]), e[3]);
      store_lanes(y + i * n.lanes, n.out_mask, _mm512_mul_ps(sum, _mm512_set1_ps(0.25f)));
    };
    for_narrow_steps(planes, H, W, step,
                     [&](int64_t r) { avg_2x2_row(x + r * 2 * W, x + r * 2 * W + W, x_end, y + r * OW, OW); });
    return;
  }
  for_output_rows(planes, H, W, [&](int64_t in, int64_t out_row) {
    avg_2x2_row(x + in, x + in + W, x_end, y + out_row * OW, OW);
  });
}

void avg_2x2s2_backward(const float* dy, float* dx, int64_t planes, int64_t H, int64_t W) {
  const int64_t OW = W / 2;
  const float* dy_end = dy + planes * (H / 2) * OW;
  if (narrow_rows(H, W)) {
    const auto step = [&](const NarrowRows& n, int64_t i) {
      const __m512 quarter = _mm512_set1_ps(0.25f);
      const __m512 g = _mm512_add_ps(_mm512_setzero_ps(),
                                     _mm512_mul_ps(load_lanes(n.out_mask, dy + i * n.lanes, dy_end), quarter));
      for (int v = 0; v < 4; ++v) {
        const __m512 routed = _mm512_maskz_permutexvar_ps(0xFFFF, n.out_of[v], g);
        store_lanes(dx + i * n.floats + 16 * v, n.in_mask[v], routed);
      }
    };
    for_narrow_steps(planes, H, W, step, [&](int64_t r) {
      avg_2x2_row_backward(dy + r * OW, dy_end, dx + r * 2 * W, dx + r * 2 * W + W, OW);
    });
    return;
  }
  for_gradient_rows(dx, planes, H, W, [&](int64_t out_row, float* top, float* bot) {
    avg_2x2_row_backward(dy + out_row * OW, dy_end, top, bot, OW);
  });
}

// Masks for a step of n <= 16 such outputs: one window column's 2n - 1 input floats (its last output's odd
// partner may lie past the row, and past the array) and the n outputs.
inline StepMasks window_masks(int64_t n) {
  const uint32_t in = (1u << (2 * n - 1)) - 1u;
  return StepMasks{static_cast<__mmask16>(in & 0xFFFF), static_cast<__mmask16>(in >> 16),
                   static_cast<__mmask16>(n >= 16 ? 0xFFFF : (1u << n) - 1u)};
}

// fn(v, ih, kw) for each element of the windows of a step of interior outputs from ow (rows [ih_lo, ih_hi)), in
// the scalar order: v holds the element of each output's window, by a de-interleaved load: plain loads of 32
// floats where the step's last ones lie before x_end (the input's end), else masked.
template <typename Fn>
CONVCORE_ROW void for_window_elements(const float* xp, const float* x_end, const PoolGeometry& g, int64_t ow,
                                      const StepMasks& m, int64_t ih_lo, int64_t ih_hi, const Fn& fn) {
  const float* first = xp + 2 * ow - g.PW;
  if (x_end - first >= (ih_hi - 1) * g.W + g.KW - 1 + 32) {
    for (int64_t ih = ih_lo; ih < ih_hi; ++ih)
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        const float* p = first + ih * g.W + kw;
        __m512 v, unused;
        deinterleave(_mm512_loadu_ps(p), _mm512_loadu_ps(p + 16), &v, &unused);
        fn(v, ih, kw);
      }
    return;
  }
  for (int64_t ih = ih_lo; ih < ih_hi; ++ih)
    for (int64_t kw = 0; kw < g.KW; ++kw) {
      const float* p = first + ih * g.W + kw;
      __m512 v, unused;
      deinterleave(_mm512_maskz_loadu_ps(m.in_lo, p), _mm512_maskz_loadu_ps(m.in_hi, p + 16), &v, &unused);
      fn(v, ih, kw);
    }
}

// Column stride 2, any window: edge columns by max_window; interior columns up to 16 at a time, scanned in the
// scalar order (rows clipped, first element taken as is). (The loop over output rows and steps shared with the
// average pooling's as a template calling a step function ran ~15-20% slower, inlined or not.)
template <bool kOffsets>
void max_stride2_planes(const float* x, float* y, uint8_t* offsets, int64_t planes, const PoolGeometry& g) {
  const InnerWindows cols = stride2_columns(g);
  const float* x_end = x + planes * g.H * g.W;
  for (int64_t p = 0; p < planes; ++p) {
    const float* xp = x + p * g.H * g.W;
    for (int64_t oh = 0; oh < g.OH; ++oh) {
      const int64_t ih0 = oh * g.SH - g.PH;
      const int64_t ih_lo = std::max<int64_t>(ih0, 0), ih_hi = std::min(ih0 + g.KH, g.H);
      float* y_row = y + (p * g.OH + oh) * g.OW;
      uint8_t* offset_row = kOffsets ? offsets + (p * g.OH + oh) * g.OW : nullptr;
      const auto offset_at = [&](int64_t o) { return kOffsets ? offset_row + o : nullptr; };
      int64_t ow = 0;
      for (; ow < cols.begin; ++ow) max_window(xp, g, oh, ow, y_row + ow, offset_at(ow));
      for (; ow < cols.end; ow += 16) {
        const StepMasks m = window_masks(std::min<int64_t>(16, cols.end - ow));
        RunningMax<kOffsets> max;
        for_window_elements(xp, x_end, g, ow, m, ih_lo, ih_hi, [&](__m512 v, int64_t ih, int64_t kw) {
          const int k = static_cast<int>((ih - ih0) * g.KW + kw);
          if (ih == ih_lo && kw == 0)
            max.start(v, k);
          else
            max.take(v, k);
        });
        max.store(y_row + ow, offset_at(ow), m.out);
      }
      for (ow = cols.end; ow < g.OW; ++ow) max_window(xp, g, oh, ow, y_row + ow, offset_at(ow));
    }
  }
}

void max_stride2_forward(const float* x, float* y, uint8_t* offsets, int64_t planes, const PoolGeometry& g) {
  if (offsets)
    max_stride2_planes<true>(x, y, offsets, planes, g);
  else
    max_stride2_planes<false>(x, y, nullptr, planes, g);
}

// Column stride 2, any window: edge columns by avg_window; interior columns up to 16 at a time, summed in the
// scalar order and divided by the same divisor (constant across the interior columns of one output row).
void avg_stride2_forward(const float* x, float* y, int64_t planes, const PoolGeometry& g, bool count_include_pad) {
  const InnerWindows cols = stride2_columns(g);
  const float* x_end = x + planes * g.H * g.W;
  for (int64_t p = 0; p < planes; ++p) {
    const float* xp = x + p * g.H * g.W;
    for (int64_t oh = 0; oh < g.OH; ++oh) {
      const int64_t ih0 = oh * g.SH - g.PH;
      const int64_t ih_lo = std::max<int64_t>(ih0, 0), ih_hi = std::min(ih0 + g.KH, g.H);
      const __m512 divisor = _mm512_set1_ps(stride2_divisor(g, oh, count_include_pad));
      float* y_row = y + (p * g.OH + oh) * g.OW;
      int64_t ow = 0;
      for (; ow < cols.begin; ++ow) y_row[ow] = avg_window(xp, g, oh, ow, count_include_pad);
      for (; ow < cols.end; ow += 16) {
        const StepMasks m = window_masks(std::min<int64_t>(16, cols.end - ow));
        __m512 sum = _mm512_setzero_ps();
        for_window_elements(xp, x_end, g, ow, m, ih_lo, ih_hi,
                            [&](__m512 v, int64_t, int64_t) { sum = _mm512_add_ps(sum, v); });
        store_lanes(y_row + ow, m.out, _mm512_div_ps(sum, divisor));
      }
      for (ow = cols.end; ow < g.OW; ++ow) y_row[ow] = avg_window(xp, g, oh, ow, count_include_pad);
    }
  }
}

// The stride-2 average pooling backward (avg_stride2_backward_rows): 16 dx floats a step, the window elements'
// shares added from the spread row.
void avg_stride2_backward(const float* dy, float* dx, int64_t planes, const PoolGeometry& g,
                          bool count_include_pad) {
  avg_stride2_backward_rows(dy, dx, planes, g, count_include_pad,
                            [](float* dx_at, const float* spread_at, int64_t count, int64_t KW) {
                              for (int64_t j = 0; j < count; j += 16) {
                                const __mmask16 m = step_masks(count - j).out;
                                __m512 v = load_lanes(m, dx_at + j, dx_at + count);
                                for (int64_t kw = KW - 1; kw >= 0; --kw)
                                  v = _mm512_add_ps(v, _mm512_loadu_ps(spread_at + j - kw));
                                store_lanes(dx_at + j, m, v);
                              }
                            });
}

}  // namespace

PoolKernels pool_kernels_avx512() {
  return PoolKernels{"avx512", max_2x2s2_forward, max_2x2s2_backward, avg_2x2s2_forward, avg_2x2s2_backward,
                     max_stride2_forward, avg_stride2_forward, avg_stride2_backward};
}

}  // namespace convcore
