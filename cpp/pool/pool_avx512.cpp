// Pooling fast paths, AVX-512: 2x2 stride-2 max/avg forward and backward, 16 outputs per step, masked tails.
#include <immintrin.h>

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

// Even / odd columns of the 2*n floats at p (n <= 16), in order.
inline void deinterleave(const float* p, const StepMasks& m, __m512* even, __m512* odd) {
  const __m512i even_index = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd_index = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  const __m512 lo = _mm512_maskz_loadu_ps(m.in_lo, p), hi = _mm512_maskz_loadu_ps(m.in_hi, p + 16);
  *even = _mm512_permutex2var_ps(lo, even_index, hi);
  *odd = _mm512_permutex2var_ps(lo, odd_index, hi);
}

// Interleaves u, v into the 2*n floats u0 v0 u1 v1 ... at p.
inline void store_interleaved(float* p, const StepMasks& m, __m512 u, __m512 v) {
  const __m512i lo_index = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i hi_index = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  _mm512_mask_storeu_ps(p, m.in_lo, _mm512_permutex2var_ps(u, lo_index, v));
  _mm512_mask_storeu_ps(p + 16, m.in_hi, _mm512_permutex2var_ps(u, hi_index, v));
}

// Takes v where v > best or v is NaN (PyTorch's rule), tagging its offset k.
inline void take_if_greater(__m512 v, int k, __m512* best, __m512i* offset) {
  const __mmask16 take = _mm512_cmp_ps_mask(v, *best, _CMP_GT_OQ) | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  *best = _mm512_mask_blend_ps(take, *best, v);
  *offset = _mm512_mask_blend_epi32(take, *offset, _mm512_set1_epi32(k));
}

void max_2x2_row(const float* top, const float* bot, float* y, uint8_t* offsets, int64_t OW) {
  for (int64_t o = 0; o < OW; o += 16) {
    const StepMasks m = step_masks(OW - o);
    __m512 a, b, c, d;
    deinterleave(top + 2 * o, m, &a, &b);
    deinterleave(bot + 2 * o, m, &c, &d);
    __m512 best = a;
    __m512i offset = _mm512_setzero_si512();
    take_if_greater(b, 1, &best, &offset);
    take_if_greater(c, 2, &best, &offset);
    take_if_greater(d, 3, &best, &offset);
    _mm512_mask_storeu_ps(y + o, m.out, best);
    _mm512_mask_cvtepi32_storeu_epi8(offsets + o, m.out, offset);
  }
}

void max_2x2_row_backward(const float* dy, const uint8_t* offsets, float* top, float* bot, int64_t OW) {
  for (int64_t o = 0; o < OW; o += 16) {
    const StepMasks m = step_masks(OW - o);
    const __m512 g = _mm512_add_ps(_mm512_setzero_ps(), _mm512_maskz_loadu_ps(m.out, dy + o));
    const __m512i k = _mm512_maskz_cvtepu8_epi32(m.out, _mm_maskz_loadu_epi8(m.out, offsets + o));
    const __m512 v0 = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(k, _mm512_set1_epi32(0)), g);
    const __m512 v1 = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(k, _mm512_set1_epi32(1)), g);
    const __m512 v2 = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(k, _mm512_set1_epi32(2)), g);
    const __m512 v3 = _mm512_maskz_mov_ps(_mm512_cmpeq_epi32_mask(k, _mm512_set1_epi32(3)), g);
    store_interleaved(top + 2 * o, m, v0, v1);
    store_interleaved(bot + 2 * o, m, v2, v3);
  }
}

void avg_2x2_row(const float* top, const float* bot, float* y, int64_t OW) {
  const __m512 quarter = _mm512_set1_ps(0.25f);
  for (int64_t o = 0; o < OW; o += 16) {
    const StepMasks m = step_masks(OW - o);
    __m512 a, b, c, d;
    deinterleave(top + 2 * o, m, &a, &b);
    deinterleave(bot + 2 * o, m, &c, &d);
    __m512 sum = _mm512_add_ps(_mm512_setzero_ps(), a);
    sum = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(sum, b), c), d);
    _mm512_mask_storeu_ps(y + o, m.out, _mm512_mul_ps(sum, quarter));
  }
}

void avg_2x2_row_backward(const float* dy, float* top, float* bot, int64_t OW) {
  const __m512 quarter = _mm512_set1_ps(0.25f);
  for (int64_t o = 0; o < OW; o += 16) {
    const StepMasks m = step_masks(OW - o);
    const __m512 g = _mm512_add_ps(_mm512_setzero_ps(), _mm512_mul_ps(_mm512_maskz_loadu_ps(m.out, dy + o), quarter));
    store_interleaved(top + 2 * o, m, g, g);
    store_interleaved(bot + 2 * o, m, g, g);
  }
}

void max_2x2s2_forward(const float* x, float* y, uint8_t* offsets, int64_t planes, int64_t H, int64_t W) {
  const int64_t OW = W / 2;
  for_output_rows(planes, H, W, [&](int64_t in, int64_t out_row) {
    max_2x2_row(x + in, x + in + W, y + out_row * OW, offsets + out_row * OW, OW);
  });
}

void max_2x2s2_backward(const float* dy, const uint8_t* offsets, float* dx, int64_t planes, int64_t H, int64_t W) {
  const int64_t OW = W / 2;
  for_gradient_rows(dx, planes, H, W, [&](int64_t out_row, float* top, float* bot) {
    max_2x2_row_backward(dy + out_row * OW, offsets + out_row * OW, top, bot, OW);
  });
}

void avg_2x2s2_forward(const float* x, float* y, int64_t planes, int64_t H, int64_t W) {
  const int64_t OW = W / 2;
  for_output_rows(planes, H, W,
                  [&](int64_t in, int64_t out_row) { avg_2x2_row(x + in, x + in + W, y + out_row * OW, OW); });
}

void avg_2x2s2_backward(const float* dy, float* dx, int64_t planes, int64_t H, int64_t W) {
  const int64_t OW = W / 2;
  for_gradient_rows(dx, planes, H, W, [&](int64_t out_row, float* top, float* bot) {
    avg_2x2_row_backward(dy + out_row * OW, top, bot, OW);
  });
}

// Column stride 2, any window: edge columns by max_window; interior columns 16 at a time, each window element
// a de-interleaved load, scanned in the scalar order (rows clipped, first element taken as is).
void max_stride2_forward(const float* x, float* y, uint8_t* offsets, int64_t planes, const PoolGeometry& g) {
  const StepMasks full = step_masks(16);
  const int64_t ow_interior = (g.PW + 1) / 2;  // first column whose window starts inside the input
  for (int64_t p = 0; p < planes; ++p) {
    const float* xp = x + p * g.H * g.W;
    for (int64_t oh = 0; oh < g.OH; ++oh) {
      const int64_t ih0 = oh * g.SH - g.PH;
      const int64_t ih_lo = std::max<int64_t>(ih0, 0), ih_hi = std::min(ih0 + g.KH, g.H);
      float* y_row = y + (p * g.OH + oh) * g.OW;
      uint8_t* offset_row = offsets + (p * g.OH + oh) * g.OW;
      int64_t ow = 0;
      for (; ow < std::min(ow_interior, g.OW); ++ow) max_window(xp, g, oh, ow, y_row + ow, offset_row + ow);
      // 16 outputs read input columns [2*ow - PW, 2*(ow + 15) - PW + KW]: all inside the row.
      for (; ow + 16 <= g.OW && 2 * (ow + 15) - g.PW + g.KW + 1 <= g.W; ow += 16) {
        __m512 best = _mm512_setzero_ps();
        __m512i offset = _mm512_setzero_si512();
        for (int64_t ih = ih_lo; ih < ih_hi; ++ih) {
          const float* row = xp + ih * g.W + 2 * ow - g.PW;
          for (int64_t kw = 0; kw < g.KW; ++kw) {
            __m512 v, unused;
            deinterleave(row + kw, full, &v, &unused);
            const int k = static_cast<int>((ih - ih0) * g.KW + kw);
            if (ih == ih_lo && kw == 0) {
              best = v;
              offset = _mm512_set1_epi32(k);
            } else {
              take_if_greater(v, k, &best, &offset);
            }
          }
        }
        _mm512_storeu_ps(y_row + ow, best);
        _mm512_mask_cvtepi32_storeu_epi8(offset_row + ow, full.out, offset);
      }
      for (; ow < g.OW; ++ow) max_window(xp, g, oh, ow, y_row + ow, offset_row + ow);
    }
  }
}

}  // namespace

PoolKernels pool_kernels_avx512() {
  return PoolKernels{"avx512", max_2x2s2_forward, max_2x2s2_backward, avg_2x2s2_forward, avg_2x2s2_backward,
                     max_stride2_forward, nullptr};
}

}  // namespace convcore
