// Pooling fast paths, AVX2: 2x2 stride-2 max/avg forward and backward, 8 outputs per step. Rows of 4 to 15 outputs
// (other than 8) run forward in steps across the rows' ends, rows of at most 7 backward in whole dx vectors; other
// rows one at a time, a row's last outputs by one partial step (load_lanes: masked only at the arrays' ends).
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <numeric>

#include "convcore/avx2_lanes.h"
#include "convcore/pool.h"
#include "pool_rows.h"

namespace convcore {
namespace {

// The output each lane of deinterleave's vectors holds (restore_order puts lane i at output kLaneOutput[i]).
alignas(32) constexpr int32_t kLaneOutput[8] = {0, 1, 4, 5, 2, 3, 6, 7};

// Even / odd columns of 16 floats lo, hi; lane order kLaneOutput's (fixed by restore_order).
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

// Byte b of bits to p[b] for b < n <= 8: all 8 by one copy, else (a row's last step) a loop of bytes.
inline void store_bytes(uint8_t* p, uint64_t bits, int64_t n) {
  if (n == 8) {
    std::memcpy(p, &bits, 8);
    return;
  }
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
    if constexpr (kOffsets) store_bytes(offsets, offset_bytes(restore_order(offset)), n);
  }
};

// Where the rule takes v over the max so far, m.
inline __m256 takes(__m256 v, __m256 m) {
  return _mm256_or_ps(_mm256_cmp_ps(v, m, _CMP_GT_OQ), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
}

// kLaneBytes[m]: bit j of m (a movemask of lanes in deinterleave's order) as byte kLaneOutput[j], 0 or 1.
constexpr std::array<uint64_t, 256> kLaneBytes = [] {
  std::array<uint64_t, 256> bytes{};
  for (int m = 0; m < 256; ++m)
    for (int lane = 0; lane < 8; ++lane)
      if (m >> lane & 1) bytes[m] |= uint64_t(1) << (8 * kLaneOutput[lane]);
  return bytes;
}();

// The max of 8 2x2 windows (lane order as deinterleave's) and, with kOffsets, where it lies: offset 2 * bottom + right
// (a 0, b 1, c 2, d 3), the bytes from the masks' sign bits by a table lookup each (one blend and two movemasks; the
// int32 offsets blended and packed to bytes took nine vector operations). Both builds in one process, calls
// alternated, median of per-pair time ratios, AMD Zen 3, 64 x 16 planes, 1 / 2 threads: max forward of 28 x 28
// planes 1.06-1.09 / 1.07x, 32 x 32 1.08 / 1.09x, 10 x 10 1.04-1.08 / 1.00-1.04x.
template <bool kOffsets>
struct WindowMax {
  __m256 best = _mm256_setzero_ps(), bottom = _mm256_setzero_ps(), right = _mm256_setzero_ps();

  // The first n outputs in order to y and, with kOffsets, their offsets.
  void store(float* y, uint8_t* offsets, int64_t n = 8) const {
    store_first_lanes(y, restore_order(best), n);
    if constexpr (kOffsets)
      store_bytes(offsets, kLaneBytes[_mm256_movemask_ps(bottom)] << 1 | kLaneBytes[_mm256_movemask_ps(right)], n);
  }
};

// The max of each window (a, b on the top row, c, d below) as a pairwise tree, the same element as the scan in order
// picks: the first of equal maxima (a later pair's wins only where greater), the last NaN (a NaN in c or d wins, one
// in a or b where c and d hold none). The scan's three blends a lane wait on each other, the tree's two.
template <bool kOffsets>
inline WindowMax<kOffsets> max_2x2(__m256 a, __m256 b, __m256 c, __m256 d) {
  const __m256 take_b = takes(b, a), take_d = takes(d, c);
  const __m256 top = _mm256_blendv_ps(a, b, take_b), bottom = _mm256_blendv_ps(c, d, take_d);
  const __m256 take_bottom = takes(bottom, top);
  WindowMax<kOffsets> max;
  max.best = _mm256_blendv_ps(top, bottom, take_bottom);
  if constexpr (kOffsets) {
    max.bottom = take_bottom;
    max.right = _mm256_blendv_ps(take_b, take_d, take_bottom);
  }
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
CONVCORE_ROW void max_2x2_row(const float* top, const float* bot, const float* x_end, float* y, uint8_t* offsets,
                              int64_t OW) {
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

CONVCORE_ROW void max_2x2_row_backward(const float* dy, const float* dy_end, const uint8_t* offsets,
                                       const uint8_t* offsets_end, float* top, float* bot, int64_t OW) {
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

CONVCORE_ROW void avg_2x2_row(const float* top, const float* bot, const float* x_end, float* y, int64_t OW) {
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

CONVCORE_ROW void avg_2x2_row_backward(const float* dy, const float* dy_end, float* top, float* bot, int64_t OW) {
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

// Rows of 4 to 15 outputs (W even, so that each output row's input rows lie 2W floats after the row before's) run
// in steps of 8 consecutive outputs across the rows' ends: lane i of a step from output column c0 of row r lies in
// row r + m, m = 0, 1 or 2 the number of row ends before it (c0 + i >= m OW). Its window's top-left element lies at
// base + m W + 2i (base: output (r, c0)'s), so the window elements of every lane come from the de-interleaved 16
// floats at base, base + W, base + 2W and base + 3W, chosen by blends. (Rows of 8 outputs, one whole step each row
// by row, measured slower this way.)
inline bool flat_rows(int64_t W) { return W % 2 == 0 && W >= 8 && W < 32 && W != 16; }

// The floats each step reads from its base: up to base + 3W + 16.
inline int64_t flat_reach(int64_t W) { return 3 * W + 16; }

// The window elements a, b (top row) and c, d (bottom row) of the 8 outputs from column c0 (< OW) at base, in
// deinterleave's lane order.
inline void flat_windows(const float* base, int64_t W, int64_t c0, __m256* a, __m256* b, __m256* c, __m256* d) {
  const int64_t OW = W / 2;
  const __m256i lane = _mm256_load_si256(reinterpret_cast<const __m256i*>(kLaneOutput));
  const __m256 next = _mm256_castsi256_ps(_mm256_cmpgt_epi32(lane, _mm256_set1_epi32(static_cast<int>(OW - 1 - c0))));
  __m256 e0, o0, e1, o1, e2, o2;
  deinterleave(base, &e0, &o0);
  deinterleave(base + W, &e1, &o1);
  deinterleave(base + 2 * W, &e2, &o2);
  *a = _mm256_blendv_ps(e0, e1, next);
  *b = _mm256_blendv_ps(o0, o1, next);
  *c = _mm256_blendv_ps(e1, e2, next);
  *d = _mm256_blendv_ps(o1, o2, next);
  if (c0 + 7 >= 2 * OW) {  // lanes in a third row
    const __m256 third =
        _mm256_castsi256_ps(_mm256_cmpgt_epi32(lane, _mm256_set1_epi32(static_cast<int>(2 * OW - 1 - c0))));
    __m256 e3, o3;
    deinterleave(base + 3 * W, &e3, &o3);
    *a = _mm256_blendv_ps(*a, e2, third);
    *b = _mm256_blendv_ps(*b, o2, third);
    *c = _mm256_blendv_ps(*c, e3, third);
    *d = _mm256_blendv_ps(*d, o3, third);
  }
}

// For `rows` output rows of OW = W / 2 outputs whose input rows lie 2W floats apart from x (W even, x_end the end
// of the array x points into): step(a, b, c, d, o) for the 8 outputs from output o while a step's reads stay
// before x_end, then row(r, c0) for the outputs of row r from column c0 on, for the rows left.
template <typename Step, typename Row>
CONVCORE_ROW void for_flat_steps(const float* x, const float* x_end, int64_t rows, int64_t W, const Step& step,
                                 const Row& row) {
  const int64_t OW = W / 2, outputs = rows * OW;
  int64_t r = 0, c0 = 0, o = 0;
  for (; o + 8 <= outputs && x_end - (x + 2 * W * r + 2 * c0) >= flat_reach(W); o += 8) {
    __m256 a, b, c, d;
    flat_windows(x + 2 * W * r + 2 * c0, W, c0, &a, &b, &c, &d);
    step(a, b, c, d, o);
    for (c0 += 8; c0 >= OW; c0 -= OW) ++r;
  }
  for (; r < rows; ++r, c0 = 0) row(r, c0);
}

// run(in, out, rows) for runs of output rows whose input rows lie 2W apart (their first input and output elements at
// in and out): all the planes' rows where H is even, else each plane's.
template <typename Run>
void for_uniform_runs(int64_t planes, int64_t H, int64_t W, const Run& run) {
  const int64_t OH = H / 2;
  if (H % 2 == 0) {
    run(int64_t(0), int64_t(0), planes * OH);
    return;
  }
  for (int64_t p = 0; p < planes; ++p) run(p * H * W, p * OH * (W / 2), OH);
}

// The loops over several rows are functions of their own, not inlined beside the row-by-row loops: in one function
// with them, GCC compiled the row-by-row loops slower (max pooling of 16 x 16 planes 0.90x).
template <bool kOffsets>
__attribute__((noinline)) void max_2x2s2_flat(const float* x, float* y, uint8_t* offsets, int64_t planes, int64_t H,
                                              int64_t W) {
  const int64_t OW = W / 2;
  const float* x_end = x + planes * H * W;
  for_uniform_runs(planes, H, W, [&](int64_t in, int64_t out, int64_t rows) {
    // The run's arrays as locals of its own: read through the captures in the loop, GCC reloaded y and offsets from
    // this lambda's closure after every store (the vector and byte stores may alias anything; LeNet s4's max forward
    // 1.01-1.06x on AMD Zen 3).
    const float* const xr = x + in;
    float* const yr = y + out;
    uint8_t* const offsets_r = kOffsets ? offsets + out : nullptr;
    const auto offsets_at = [offsets_r](int64_t o) { return kOffsets ? offsets_r + o : nullptr; };
    for_flat_steps(
        xr, x_end, rows, W,
        [&](__m256 a, __m256 b, __m256 c, __m256 d, int64_t o) {
          max_2x2<kOffsets>(a, b, c, d).store(yr + o, offsets_at(o));
        },
        [&](int64_t r, int64_t c0) {
          const int64_t o = r * OW + c0;
          max_2x2_row<kOffsets>(xr + 2 * W * r + 2 * c0, xr + 2 * W * r + W + 2 * c0, x_end, yr + o, offsets_at(o),
                                OW - c0);
        });
  });
}

template <bool kOffsets>
void max_2x2s2_planes(const float* x, float* y, uint8_t* offsets, int64_t planes, int64_t H, int64_t W) {
  if (flat_rows(W)) {
    max_2x2s2_flat<kOffsets>(x, y, offsets, planes, H, W);
    return;
  }
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

// The backward of rows of at most 7 outputs (W even, below 16) writes dx in whole vectors: each 8 floats hold the
// column pairs of 4 windows whose outputs lie within 8 consecutive outputs (a row's end and the next row's start
// at most OW apart), so one load of dy (and of the offsets) from the first of them and a lane permutation give
// each float its output. The pattern repeats every lcm(2W, 8) floats, a whole number of output rows: a table built
// per call holds, for each vector of that period, its first output, each float's lane from there and its element
// of the window (0-3, the offsets' numbering). (Rows of 8 outputs, one whole step each row by row, measured slower
// this way.)
inline bool narrow_gradient_rows(int64_t W) { return W >= 2 && W % 2 == 0 && W < 16; }

struct NarrowGradient {
  int64_t vectors, rows, reach;  // a period's vectors and output rows; the outputs a period reads from its first
  int64_t first[16];             // output (the largest first + 8)
  __m256i lane[16], element[16];

  explicit NarrowGradient(int64_t W) {  // (no division a float: those took ~2000 cycles, a third of a small call)
    const int64_t OW = W / 2, floats = std::lcm(2 * W, int64_t(8));
    vectors = floats / 8;
    rows = floats / (2 * W);
    alignas(32) int32_t output[16][8], element_of[16][8];
    for (int64_t row = 0, at = 0; row < rows; ++row)
      for (int64_t bottom = 0; bottom < 2; ++bottom)
        for (int64_t col = 0; col < W; ++col, ++at) {
          output[at / 8][at % 8] = static_cast<int32_t>(row * OW + col / 2);
          element_of[at / 8][at % 8] = static_cast<int32_t>(2 * bottom + col % 2);
        }
    reach = 0;
    for (int64_t v = 0; v < vectors; ++v) {
      first[v] = *std::min_element(output[v], output[v] + 8);
      for (int32_t& o : output[v]) o -= static_cast<int32_t>(first[v]);
      lane[v] = _mm256_load_si256(reinterpret_cast<const __m256i*>(output[v]));
      element[v] = _mm256_load_si256(reinterpret_cast<const __m256i*>(element_of[v]));
      reach = std::max(reach, first[v] + 8);
    }
  }
};

// The backward of narrow rows: vector(o, lane, element, dx_at) writes the 8 dx floats at dx_at from the outputs
// o + lane (each float element `element` of its window), over whole periods while their reads stay before the
// planes' last output; row(o, top, bot) the dx rows of each output row left (o: its first output); the last input
// row of each plane zeroed where H is odd. vector is a copy of the caller's, holding its arrays by value: reached
// through a reference (and its captures through references), they were reloaded from memory after every store
// (stores of vectors may alias anything): LeNet s4's max backward 1.17-1.24x, avg 1.08-1.25x on AMD Zen 3.
template <typename Vector, typename Row>
void for_narrow_gradient(float* dx, int64_t planes, int64_t H, int64_t W, const Vector vector, const Row& row) {
  const NarrowGradient n(W);
  const int64_t OW = W / 2, all_outputs = planes * (H / 2) * OW;
  for_uniform_runs(planes, H, W, [&](int64_t in, int64_t out, int64_t rows) {
    float* dxr = dx + in;
    int64_t r = 0;
    for (; r + n.rows <= rows && out + r * OW + n.reach <= all_outputs; r += n.rows)
      for (int64_t v = 0; v < n.vectors; ++v)
        vector(out + r * OW + n.first[v], n.lane[v], n.element[v], dxr + 2 * W * r + 8 * v);
    for (; r < rows; ++r) row(out + r * OW, dxr + 2 * W * r, dxr + 2 * W * r + W);
    if (H % 2) std::fill_n(dxr + 2 * W * rows, W, 0.0f);
  });
}

__attribute__((noinline)) void max_2x2s2_backward_narrow(const float* dy, const uint8_t* offsets, float* dx,
                                                         int64_t planes, int64_t H, int64_t W) {
  const int64_t OW = W / 2, outputs = planes * (H / 2) * OW;
  for_narrow_gradient(
      dx, planes, H, W,
      [dy, offsets](int64_t o, __m256i lane, __m256i element, float* dx_at) {
        const __m256 g = _mm256_add_ps(_mm256_setzero_ps(), _mm256_loadu_ps(dy + o));  // 0 + dy: -0 to +0
        const __m256i k = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(offsets + o)));
        const __m256i chosen = _mm256_cmpeq_epi32(_mm256_permutevar8x32_epi32(k, lane), element);
        _mm256_storeu_ps(dx_at, _mm256_and_ps(_mm256_permutevar8x32_ps(g, lane), _mm256_castsi256_ps(chosen)));
      },
      [&](int64_t o, float* top, float* bot) {
        max_2x2_row_backward(dy + o, dy + outputs, offsets + o, offsets + outputs, top, bot, OW);
      });
}

__attribute__((noinline)) void max_2x2s2_backward_rows(const float* dy, const uint8_t* offsets, float* dx,
                                                       int64_t planes, int64_t H, int64_t W) {
  const int64_t OW = W / 2, outputs = planes * (H / 2) * OW;
  for_gradient_rows(dx, planes, H, W, [&](int64_t out_row, float* top, float* bot) {
    max_2x2_row_backward(dy + out_row * OW, dy + outputs, offsets + out_row * OW, offsets + outputs, top, bot, OW);
  });
}

void max_2x2s2_backward(const float* dy, const uint8_t* offsets, float* dx, int64_t planes, int64_t H, int64_t W) {
  if (narrow_gradient_rows(W))
    max_2x2s2_backward_narrow(dy, offsets, dx, planes, H, W);
  else
    max_2x2s2_backward_rows(dy, offsets, dx, planes, H, W);
}

__attribute__((noinline)) void avg_2x2s2_flat(const float* x, float* y, int64_t planes, int64_t H, int64_t W) {
  const int64_t OW = W / 2;
  const float* x_end = x + planes * H * W;
  for_uniform_runs(planes, H, W, [&](int64_t in, int64_t out, int64_t rows) {
    const float* xr = x + in;
    for_flat_steps(
        xr, x_end, rows, W,
        [&](__m256 a, __m256 b, __m256 c, __m256 d, int64_t o) {
          _mm256_storeu_ps(y + out + o, restore_order(avg_2x2(a, b, c, d)));
        },
        [&](int64_t r, int64_t c0) {
          avg_2x2_row(xr + 2 * W * r + 2 * c0, xr + 2 * W * r + W + 2 * c0, x_end, y + out + r * OW + c0, OW - c0);
        });
  });
}

void avg_2x2s2_forward(const float* x, float* y, int64_t planes, int64_t H, int64_t W) {
  if (flat_rows(W)) {
    avg_2x2s2_flat(x, y, planes, H, W);
    return;
  }
  const int64_t OW = W / 2;
  const float* x_end = x + planes * H * W;
  for_output_rows(planes, H, W, [&](int64_t in, int64_t out_row) {
    avg_2x2_row(x + in, x + in + W, x_end, y + out_row * OW, OW);
  });
}

__attribute__((noinline)) void avg_2x2s2_backward_narrow(const float* dy, float* dx, int64_t planes, int64_t H,
                                                         int64_t W) {
  const int64_t OW = W / 2;
  const float* dy_end = dy + planes * (H / 2) * OW;
  for_narrow_gradient(
      dx, planes, H, W,
      [dy](int64_t o, __m256i lane, __m256i, float* dx_at) {  // (1/4 captured from outside: 0.75x, reloaded)
        const __m256 g =
            _mm256_add_ps(_mm256_setzero_ps(), _mm256_mul_ps(_mm256_loadu_ps(dy + o), _mm256_set1_ps(0.25f)));
        _mm256_storeu_ps(dx_at, _mm256_permutevar8x32_ps(g, lane));
      },
      [&](int64_t o, float* top, float* bot) { avg_2x2_row_backward(dy + o, dy_end, top, bot, OW); });
}

void avg_2x2s2_backward(const float* dy, float* dx, int64_t planes, int64_t H, int64_t W) {
  if (narrow_gradient_rows(W)) {
    avg_2x2s2_backward_narrow(dy, dx, planes, H, W);
    return;
  }
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
