// Pooling fast paths, AVX2: 2x2 stride-2 max/avg forward and backward, 8 outputs per step; a row's last outputs by
// one partial step (load_lanes: masked only at the arrays' ends).
#include <immintrin.h>

#include "convcore/avx2_lanes.h"
#include "convcore/pool.h"
#include "pool_rows.h"

namespace convcore {
namespace {

// Even / odd columns of 16 floats lo, hi; lane order [0 1 4 5 | 2 3 6 7] (fixed by restore_order).
inline void deinterleave(__m256 lo, __m256 hi, __m256* even, __m256* odd) {
  *even = _mm256_shuffle_ps(lo, hi, 0x88);
  *odd = _mm256_shuffle_ps(lo, hi, 0xDD);
}

// The same from the 16 floats at p.
inline void deinterleave(const float* p, __m256* even, __m256* odd) {
  deinterleave(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8), even, odd);
}

// The first n <= 8 floats at p in the low lanes: all 8 by a plain load where they lie before `end` (the end of the
// array p points into; the lanes past n then hold whatever lies there, which callers never store), else masked
// (zeros past n; nothing past p + n is read). Masked loads are slow on AMD's cores (on Zen 5, AVX-512's read
// memory at a third of the plain loads' speed).
inline __m256 load_lanes(const float* p, int64_t n, const float* end) {
  return end - p >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, first_lanes(n));
}

// The same as deinterleave from the first 2n floats at p (n < 8; end as load_lanes's).
inline void deinterleave_first(const float* p, int64_t n, const float* end, __m256* even, __m256* odd) {
  deinterleave(load_lanes(p, std::min<int64_t>(2 * n, 8), end), load_lanes(p + 8, std::max<int64_t>(2 * n - 8, 0), end),
               even, odd);
}

inline __m256 restore_order(__m256 v) {
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), 0xD8));
}

// 8 int32 offsets (0..255, bit-cast in a float vector) -> 8 bytes, lane i in byte i.
inline uint64_t offset_bytes(__m256 offset) {
  const __m256i k = _mm256_castps_si256(offset);
  const __m128i k16 = _mm_packs_epi32(_mm256_castsi256_si128(k), _mm256_extracti128_si256(k, 1));
  return static_cast<uint64_t>(_mm_cvtsi128_si64(_mm_packus_epi16(k16, k16)));
}

// Byte b of bits to p[b] for b < n: the n <= 8 offsets of a row's last step (a loop of bytes, not a library copy).
inline void store_bytes(uint8_t* p, uint64_t bits, int64_t n) {
  for (int64_t b = 0; b < n; ++b) p[b] = static_cast<uint8_t>(bits >> (8 * b));
}

// The max of 8 windows' elements scanned in order (lane order as deinterleave's), and with kOffsets the offset of
// each (bit-cast int32 lanes; PyTorch's rule: a later element v is taken where v > max or v is NaN). Without
// offsets the same values come out, the offsets' blends and stores left out (an inference call has no use for them).
template <bool kOffsets>
struct RunningMax {
  __m256 best = _mm256_setzero_ps(), offset = _mm256_setzero_ps();

  void start(__m256 v, int k) {
    best = v;
    if constexpr (kOffsets) offset = _mm256_castsi256_ps(_mm256_set1_epi32(k));
  }
  void take(__m256 v, int k) {
    const __m256 greater = _mm256_or_ps(_mm256_cmp_ps(v, best, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    best = _mm256_blendv_ps(best, v, greater);
    if constexpr (kOffsets) offset = _mm256_blendv_ps(offset, _mm256_castsi256_ps(_mm256_set1_epi32(k)), greater);
  }
  // The first n outputs in order to y and, with kOffsets, their offsets.
  void store(float* y, uint8_t* offsets, int64_t n = 8) const {
    store_first_lanes(y, restore_order(best), n);
    if constexpr (kOffsets) {
      const uint64_t bytes = offset_bytes(restore_order(offset));
      if (n == 8)
        std::memcpy(offsets, &bytes, 8);
      else
        store_bytes(offsets, bytes, n);
    }
  }
};

// The max of each window (a, b on the top row, c, d below).
template <bool kOffsets>
inline RunningMax<kOffsets> max_2x2(__m256 a, __m256 b, __m256 c, __m256 d) {
  RunningMax<kOffsets> max;
  max.start(a, 0);
  max.take(b, 1);
  max.take(c, 2);
  max.take(d, 3);
  return max;
}

// Bytes p[b] for b < n <= 8 as byte b of the result: all 8 by one load where they lie before `end`.
inline uint64_t load_bytes(const uint8_t* p, int64_t n, const uint8_t* end) {
  uint64_t bits = 0;
  if (end - p >= 8) {
    std::memcpy(&bits, p, 8);
    return bits;
  }
  for (int64_t b = 0; b < n; ++b) bits |= static_cast<uint64_t>(p[b]) << (8 * b);
  return bits;
}

// The row functions' `end` arguments: the ends of the arrays their inputs lie in (load_lanes).
// offsets: null where kOffsets is false (as in every function with kOffsets).
template <bool kOffsets>
void max_2x2_row(const float* top, const float* bot, const float* x_end, float* y, uint8_t* offsets, int64_t OW) {
  const auto offsets_at = [&](int64_t o) { return kOffsets ? offsets + o : nullptr; };
  __m256 a, b, c, d;
  int64_t o = 0;
  for (; o + 8 <= OW; o += 8) {
    deinterleave(top + 2 * o, &a, &b);
    deinterleave(bot + 2 * o, &c, &d);
    max_2x2<kOffsets>(a, b, c, d).store(y + o, offsets_at(o));
  }
  if (o < OW) {  // the last n < 8 outputs: one partial step (copies through memory: a quarter of LeNet's s2 forward)
    const int64_t n = OW - o;
    deinterleave_first(top + 2 * o, n, x_end, &a, &b);
    deinterleave_first(bot + 2 * o, n, x_end, &c, &d);
    max_2x2<kOffsets>(a, b, c, d).store(y + o, offsets_at(o), n);
  }
}

// Interleaves u, v into u0 v0 u1 v1 ... at p: 16 floats, or the first `count` of them.
inline void store_interleaved(float* p, __m256 u, __m256 v, int64_t count = 16) {
  const __m256 lo = _mm256_unpacklo_ps(u, v), hi = _mm256_unpackhi_ps(u, v);
  const __m256 first = _mm256_permute2f128_ps(lo, hi, 0x20), second = _mm256_permute2f128_ps(lo, hi, 0x31);
  store_first_lanes(p, first, std::min<int64_t>(count, 8));
  store_first_lanes(p + 8, second, std::max<int64_t>(count - 8, 0));
}

// dy routed to the stored offset k (int32 lanes), 0 elsewhere (0 + dy, as the reference's zero-fill-and-add gives,
// so -0 becomes +0), as the 2 x 16 floats of top and bot (the first 2n where n < 8).
inline void route_2x2(__m256 dy, __m256i k, float* top, float* bot, int64_t n = 8) {
  const __m256 g = _mm256_add_ps(_mm256_setzero_ps(), dy);
  const auto at = [&](int i) {
    return _mm256_and_ps(g, _mm256_castsi256_ps(_mm256_cmpeq_epi32(k, _mm256_set1_epi32(i))));
  };
  store_interleaved(top, at(0), at(1), 2 * n);
  store_interleaved(bot, at(2), at(3), 2 * n);
}

void max_2x2_row_backward(const float* dy, const float* dy_end, const uint8_t* offsets, const uint8_t* offsets_end,
                          float* top, float* bot, int64_t OW) {
  int64_t o = 0;
  for (; o + 8 <= OW; o += 8)
    route_2x2(_mm256_loadu_ps(dy + o),
              _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(offsets + o))), top + 2 * o,
              bot + 2 * o);
  if (o < OW) {  // the last n < 8 outputs: one partial step (the scalar loop's branches on random offsets mispredicted)
    const int64_t n = OW - o;
    const __m128i bytes = _mm_cvtsi64_si128(static_cast<int64_t>(load_bytes(offsets + o, n, offsets_end)));
    route_2x2(load_lanes(dy + o, n, dy_end), _mm256_cvtepu8_epi32(bytes), top + 2 * o, bot + 2 * o, n);
  }
}

// Sum in the reference's order (0 + a + b + c + d), times 1/4 (== / 4 exactly).
inline __m256 avg_2x2(__m256 a, __m256 b, __m256 c, __m256 d) {
  const __m256 sum = _mm256_add_ps(_mm256_setzero_ps(), a);
  return _mm256_mul_ps(_mm256_add_ps(_mm256_add_ps(_mm256_add_ps(sum, b), c), d), _mm256_set1_ps(0.25f));
}

void avg_2x2_row(const float* top, const float* bot, const float* x_end, float* y, int64_t OW) {
  __m256 a, b, c, d;
  int64_t o = 0;
  for (; o + 8 <= OW; o += 8) {
    deinterleave(top + 2 * o, &a, &b);
    deinterleave(bot + 2 * o, &c, &d);
    _mm256_storeu_ps(y + o, restore_order(avg_2x2(a, b, c, d)));
  }
  if (o < OW) {  // the last n < 8 outputs: one partial step
    const int64_t n = OW - o;
    deinterleave_first(top + 2 * o, n, x_end, &a, &b);
    deinterleave_first(bot + 2 * o, n, x_end, &c, &d);
    store_first_lanes(y + o, restore_order(avg_2x2(a, b, c, d)), n);
  }
}

void avg_2x2_row_backward(const float* dy, const float* dy_end, float* top, float* bot, int64_t OW) {
  const __m256 quarter = _mm256_set1_ps(0.25f);
  int64_t o = 0;
  for (; o + 8 <= OW; o += 8) {
    const __m256 g = _mm256_add_ps(_mm256_setzero_ps(), _mm256_mul_ps(_mm256_loadu_ps(dy + o), quarter));
    store_interleaved(top + 2 * o, g, g);
    store_interleaved(bot + 2 * o, g, g);
  }
  if (o < OW) {  // the last n < 8 outputs: one partial step
    const int64_t n = OW - o;
    const __m256 g = _mm256_add_ps(_mm256_setzero_ps(), _mm256_mul_ps(load_lanes(dy + o, n, dy_end), quarter));
    store_interleaved(top + 2 * o, g, g, 2 * n);
    store_interleaved(bot + 2 * o, g, g, 2 * n);
  }
}

template <bool kOffsets>
void max_2x2s2_planes(const float* x, float* y, uint8_t* offsets, int64_t planes, int64_t H, int64_t W) {
  const int64_t OW = W / 2;
  const float* x_end = x + planes * H * W;
  for_output_rows(planes, H, W, [&](int64_t in, int64_t out_row) {
    max_2x2_row<kOffsets>(x + in, x + in + W, x_end, y + out_row * OW, kOffsets ? offsets + out_row * OW : nullptr,
                          OW);
  });
}

void max_2x2s2_forward(const float* x, float* y, uint8_t* offsets, int64_t planes, int64_t H, int64_t W) {
  if (offsets)
    max_2x2s2_planes<true>(x, y, offsets, planes, H, W);
  else
    max_2x2s2_planes<false>(x, y, nullptr, planes, H, W);
}

void max_2x2s2_backward(const float* dy, const uint8_t* offsets, float* dx, int64_t planes, int64_t H, int64_t W) {
  const int64_t OW = W / 2, outputs = planes * (H / 2) * OW;
  for_gradient_rows(dx, planes, H, W, [&](int64_t out_row, float* top, float* bot) {
    max_2x2_row_backward(dy + out_row * OW, dy + outputs, offsets + out_row * OW, offsets + outputs, top, bot, OW);
  });
}

void avg_2x2s2_forward(const float* x, float* y, int64_t planes, int64_t H, int64_t W) {
  const int64_t OW = W / 2;
  const float* x_end = x + planes * H * W;
  for_output_rows(planes, H, W, [&](int64_t in, int64_t out_row) {
    avg_2x2_row(x + in, x + in + W, x_end, y + out_row * OW, OW);
  });
}

void avg_2x2s2_backward(const float* dy, float* dx, int64_t planes, int64_t H, int64_t W) {
  const int64_t OW = W / 2;
  const float* dy_end = dy + planes * (H / 2) * OW;
  for_gradient_rows(dx, planes, H, W, [&](int64_t out_row, float* top, float* bot) {
    avg_2x2_row_backward(dy + out_row * OW, dy_end, top, bot, OW);
  });
}

// fn(v, ih, kw) for each element of the windows of a step of n <= 8 interior outputs from ow (rows [ih_lo,
// ih_hi)), in the scalar order: v holds the element of each output's window (lane order as deinterleave's), by a
// de-interleaved load of the window column's 2n - 1 floats (the last output's odd partner may lie past the row,
// and past the array): plain loads of 16 floats where the step's last ones lie before x_end (the input's end),
// else masked.
template <typename Fn>
inline void for_window_elements(const float* xp, const float* x_end, const PoolGeometry& g, int64_t ow, int64_t n,
                                int64_t ih_lo, int64_t ih_hi, const Fn& fn) {
  const float* first = xp + 2 * ow - g.PW;
  if (x_end - first >= (ih_hi - 1) * g.W + g.KW - 1 + 16) {
    for (int64_t ih = ih_lo; ih < ih_hi; ++ih)
      for (int64_t kw = 0; kw < g.KW; ++kw) {
        __m256 v, unused;
        deinterleave(first + ih * g.W + kw, &v, &unused);
        fn(v, ih, kw);
      }
    return;
  }
  const __m256i lo_lanes = first_lanes(std::min<int64_t>(2 * n - 1, 8));
  const __m256i hi_lanes = first_lanes(std::max<int64_t>(2 * n - 9, 0));
  for (int64_t ih = ih_lo; ih < ih_hi; ++ih)
    for (int64_t kw = 0; kw < g.KW; ++kw) {
      const float* p = first + ih * g.W + kw;
      __m256 v, unused;
      deinterleave(_mm256_maskload_ps(p, lo_lanes), _mm256_maskload_ps(p + 8, hi_lanes), &v, &unused);
      fn(v, ih, kw);
    }
}

// Column stride 2, any window: edge columns by max_window; interior columns up to 8 at a time, scanned in the
// scalar order (rows clipped, first element taken as is).
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
      for (; ow < cols.end; ow += 8) {
        const int64_t n = std::min<int64_t>(8, cols.end - ow);
        RunningMax<kOffsets> max;
        for_window_elements(xp, x_end, g, ow, n, ih_lo, ih_hi, [&](__m256 v, int64_t ih, int64_t kw) {
          const int k = static_cast<int>((ih - ih0) * g.KW + kw);
          if (ih == ih_lo && kw == 0)
            max.start(v, k);
          else
            max.take(v, k);
        });
        max.store(y_row + ow, offset_at(ow), n);
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

// Column stride 2, any window: edge columns by avg_window; interior columns up to 8 at a time, summed in the
// scalar order and divided by the same divisor (constant across the interior columns of one output row).
void avg_stride2_forward(const float* x, float* y, int64_t planes, const PoolGeometry& g, bool count_include_pad) {
  const InnerWindows cols = stride2_columns(g);
  const float* x_end = x + planes * g.H * g.W;
  for (int64_t p = 0; p < planes; ++p) {
    const float* xp = x + p * g.H * g.W;
    for (int64_t oh = 0; oh < g.OH; ++oh) {
      const int64_t ih0 = oh * g.SH - g.PH;
      const int64_t ih_lo = std::max<int64_t>(ih0, 0), ih_hi = std::min(ih0 + g.KH, g.H);
      const __m256 divisor = _mm256_set1_ps(stride2_divisor(g, oh, count_include_pad));
      float* y_row = y + (p * g.OH + oh) * g.OW;
      int64_t ow = 0;
      for (; ow < cols.begin; ++ow) y_row[ow] = avg_window(xp, g, oh, ow, count_include_pad);
      for (; ow < cols.end; ow += 8) {
        const int64_t n = std::min<int64_t>(8, cols.end - ow);
        __m256 sum = _mm256_setzero_ps();
        for_window_elements(xp, x_end, g, ow, n, ih_lo, ih_hi,
                            [&](__m256 v, int64_t, int64_t) { sum = _mm256_add_ps(sum, v); });
        store_first_lanes(y_row + ow, restore_order(_mm256_div_ps(sum, divisor)), n);
      }
      for (ow = cols.end; ow < g.OW; ++ow) y_row[ow] = avg_window(xp, g, oh, ow, count_include_pad);
    }
  }
}

// The stride-2 average pooling backward (avg_stride2_backward_rows): 8 dx floats a step, the window elements'
// shares added from the spread row.
void avg_stride2_backward(const float* dy, float* dx, int64_t planes, const PoolGeometry& g,
                          bool count_include_pad) {
  avg_stride2_backward_rows(dy, dx, planes, g, count_include_pad,
                            [](float* dx_at, const float* spread_at, int64_t count, int64_t KW) {
                              for (int64_t j = 0; j < count; j += 8) {
                                const int64_t n = std::min<int64_t>(8, count - j);
                                __m256 v = load_lanes(dx_at + j, n, dx_at + count);
                                for (int64_t kw = KW - 1; kw >= 0; --kw)
                                  v = _mm256_add_ps(v, _mm256_loadu_ps(spread_at + j - kw));
                                store_first_lanes(dx_at + j, v, n);
                              }
                            });
}

}  // namespace

PoolKernels pool_kernels_avx2() {
  return PoolKernels{"avx2", max_2x2s2_forward, max_2x2s2_backward, avg_2x2s2_forward, avg_2x2s2_backward,
                     max_stride2_forward, avg_stride2_forward, avg_stride2_backward};
}

}  // namespace convcore
