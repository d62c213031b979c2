// Batch-norm row kernels, compiled per ISA (batch_norm_{scalar,avx2,avx512}.cpp, built with -ffp-contract=off: no
// multiply and add fuse, so every ISA rounds each operation as the baseline does and gives its bits). Each works on
// (n, c) rows of L values. The passes (the affine apply, the input gradient) are plain loops that GCC vectorises with
// the unit's widest vectors. The float reductions are written with GCC vector extensions: a row sums in 32 float
// lanes (element l into lane l mod 32, a partial last step padded with values that add nothing), held as vectors of
// the unit's own width (two 16-float vectors on AVX-512, four 8-float on AVX2, eight 4-float on the baseline: a
// 64-byte vector type compiled for AVX2 moved its halves through general registers and the stack, 4.9 GB/s for the
// gradient sums), then the 32 lanes close in float64 in a fixed pairwise tree. The lanes and their order are the same
// on every ISA.
// Everything here has internal linkage (an anonymous namespace), so the per-ISA copies are never merged across units.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "convcore/ops.h"

namespace convcore {
namespace {

#if defined(__AVX512F__)
constexpr int kLaneWidth = 16;
#elif defined(__AVX2__)
constexpr int kLaneWidth = 8;
#else
constexpr int kLaneWidth = 4;
#endif
constexpr int kRowLanes = 32, kRowVectors = kRowLanes / kLaneWidth;
typedef float Lanes __attribute__((vector_size(4 * kLaneWidth)));
typedef int32_t LanesMask __attribute__((vector_size(4 * kLaneWidth)));

// The n <= kLaneWidth floats at p, then `fill` in the remaining lanes.
inline Lanes load(const float* p, int64_t n, float fill) {
  Lanes v;
  if (n == kLaneWidth) {
    std::memcpy(&v, p, sizeof v);
    return v;
  }
  float buf[kLaneWidth];
  for (int j = 0; j < kLaneWidth; ++j) buf[j] = j < n ? p[j] : fill;
  std::memcpy(&v, buf, sizeof v);
  return v;
}

typedef float Lanes8f __attribute__((vector_size(32)));
typedef double Lanes8d __attribute__((vector_size(64)));
typedef double Lanes4d __attribute__((vector_size(32)));
typedef double Lanes2d __attribute__((vector_size(16)));

// The 32 float lanes in float64, added in a fixed pairwise tree: lane i += lane i + 16, then i + 8, i + 4, i + 2,
// i + 1 (on vectors throughout).
inline double close(const Lanes (&acc)[kRowVectors]) {
  Lanes8f quarters[4];
  std::memcpy(quarters, acc, sizeof quarters);
  Lanes8d d[4];
  for (int h = 0; h < 4; ++h) d[h] = __builtin_convertvector(quarters[h], Lanes8d);
  const Lanes8d l8 = (d[0] + d[2]) + (d[1] + d[3]);
  const Lanes4d l4 = __builtin_shufflevector(l8, l8, 0, 1, 2, 3) + __builtin_shufflevector(l8, l8, 4, 5, 6, 7);
  const Lanes2d l2 = __builtin_shufflevector(l4, l4, 0, 1) + __builtin_shufflevector(l4, l4, 2, 3);
  return l2[0] + l2[1];
}

// Calls step(a, l, n) for each kLaneWidth-float step of a row of L floats, l = 0, kLaneWidth, ..., into row vector
// a = (l / kLaneWidth) % kRowVectors; the last step may be partial (n < kLaneWidth).
template <typename Step>
inline void for_steps(int64_t L, const Step& step) {
  int64_t l = 0;
  for (; l + kRowLanes <= L; l += kRowLanes)
#pragma GCC unroll 8
    for (int a = 0; a < kRowVectors; ++a) step(a, l + a * kLaneWidth, int64_t(kLaneWidth));
  for (int a = 0; l < L; ++a, l += kLaneWidth) step(a, l, std::min<int64_t>(kLaneWidth, L - l));
}

// sum over the row's x[l] of term(x), term applied to a vector of values (a partial last step is padded with `fill`
// first).
template <typename Term>
inline double row_total(const float* x, int64_t L, float fill, const Term& term) {
  Lanes acc[kRowVectors] = {};
  for_steps(L, [&](int a, int64_t l, int64_t k) { acc[a] += term(load(x + l, k, fill)); });
  return close(acc);
}

// For each of `rows` consecutive rows of L floats (row r at x + r * L): sum[r] = its sum, centred_squares[r] = the sum
// of (x - sum[r] / L)^2. Two passes over the row (the second from the cache): the squares are centred on the row's
// mean m rounded to float, mf, and corrected: sum (x - m)^2 = sum (x - mf)^2 - L (m - mf)^2. Rows run back to back in
// one loop, so that one row's closing tree overlaps the next row's loads.
inline void row_moments(const float* x, int64_t rows, int64_t L, double* sum, double* centred_squares) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * L;
    const double s = row_total(row, L, 0.0f, [](Lanes v) { return v; });
    const double m = s / L;
    const float mf = static_cast<float>(m);
    const double squares = row_total(row, L, mf, [mf](Lanes v) {  // mean-padded: the tail adds 0
      v -= mf;
      return v * v;
    });
    const double offset = m - mf;
    sum[r] = s;
    centred_squares[r] = std::max(0.0, squares - L * offset * offset);
  }
}

// For each of `rows` consecutive rows (at r * L in dy, x and relu_out), of channel c = (first + r) % C:
// sum[r] = sum g and sum_centred[r] = sum g * (x - mean[c]), g = dy masked where relu_out is not null.
inline void row_grad_sums(const float* dy, const float* x, const float* relu_out, int64_t rows, int64_t L,
                          int64_t first, int64_t C, const float* mean, double* sum, double* sum_centred) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t at = r * L;
    const float m = mean[(first + r) % C];
    Lanes acc_s[kRowVectors] = {}, acc_sc[kRowVectors] = {};
    for_steps(L, [&](int a, int64_t l, int64_t k) {
      Lanes g = load(dy + at + l, k, 0.0f);
      if (relu_out)  // g where the output is > 0, else +0 (a mask, not a select: GCC scalarised the select)
        g = reinterpret_cast<Lanes>(reinterpret_cast<LanesMask>(g) & (load(relu_out + at + l, k, 0.0f) > 0.0f));
      const Lanes d = load(x + at + l, k, m) - m;
      acc_s[a] += g;
      acc_sc[a] += g * d;
    });
    sum[r] = close(acc_s);
    sum_centred[r] = close(acc_sc);
  }
}

// A channel's term as the value loops below read it, term(i) for value i: a row's one value (row_term), or one per
// value (channels_term: rows of one value, channel c + i).
template <typename T>
inline auto row_term(T v) {
  return [v](int64_t) { return v; };
}
template <typename T>
inline auto channels_term(const T* per_channel, int64_t c) {
  return [p = per_channel + c](int64_t i) { return p[i]; };
}

// y[i] = (x[i] - centre(i)) * scale(i) + shift(i) (+ residual[i] where it is not null), then max(y, 0) with relu
// (NaN kept), for i < n: one loop per case, so that each vectorises.
template <typename T, typename Term>
inline void affine_values(const T* x, const T* residual, int64_t n, const Term& centre, const Term& scale,
                          const Term& shift, bool relu, T* y) {
  if (residual && relu) {
    for (int64_t i = 0; i < n; ++i) {
      const T v = (x[i] - centre(i)) * scale(i) + shift(i) + residual[i];
      y[i] = v > T(0) || v != v ? v : T(0);
    }
  } else if (residual) {
    for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - centre(i)) * scale(i) + shift(i) + residual[i];
  } else if (relu) {
    for (int64_t i = 0; i < n; ++i) {
      const T v = (x[i] - centre(i)) * scale(i) + shift(i);
      y[i] = v > T(0) || v != v ? v : T(0);
    }
  } else {
    for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - centre(i)) * scale(i) + shift(i);
  }
}

// dy[l], or 0 where the fused ReLU's output is not > 0, as a bit mask (a select here compiled to a mispredicted
// branch: 7x slower on half-active channels).
template <typename T>
inline T masked(const T* dy, const T* relu_out, int64_t l) {
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  Bits bits;
  std::memcpy(&bits, &dy[l], sizeof(T));
  bits &= Bits(0) - Bits(relu_out[l] > T(0));
  T g;
  std::memcpy(&g, &bits, sizeof(T));
  return g;
}

// dx[i] = gain(i) * (g - a(i) - (x[i] - mean(i)) * b(i)), g = dy[i], masked where relu_out is not null, for i < n.
template <typename T, typename Term>
inline void input_gradient_values(const T* dy, const T* x, const T* relu_out, int64_t n, const Term& mean,
                                  const Term& gain, const Term& a, const Term& b, T* dx) {
  if (relu_out) {
    for (int64_t i = 0; i < n; ++i) dx[i] = gain(i) * (masked(dy, relu_out, i) - a(i) - (x[i] - mean(i)) * b(i));
  } else {
    for (int64_t i = 0; i < n; ++i) dx[i] = gain(i) * (dy[i] - a(i) - (x[i] - mean(i)) * b(i));
  }
}

// Calls row(i, c) for the rows [r0, r1) of an (N, C, L) array (row r: channel r % C, values from r * L), or, where
// L = 1, values(r, c, count) for runs of consecutive channels c, c + 1, ... (one value each): loops along them.
template <typename Row, typename Values>
inline void for_rows(int64_t r0, int64_t r1, int64_t C, int64_t L, const Row& row, const Values& values) {
  for (int64_t r = r0; r < r1;) {
    const int64_t c = r % C, count = std::min(r1 - r, C - c);
    if (L == 1) {
      values(r, c, count);
    } else {
      for (int64_t i = 0; i < count; ++i) row(r + i, c + i);
    }
    r += count;
  }
}

// The affine apply of rows [r0, r1) (channel c's centre[c], scale[c], shift[c]).
template <typename T>
void affine_rows(const T* x, const T* residual, int64_t r0, int64_t r1, int64_t C, int64_t L, const T* centre,
                 const T* scale, const T* shift, bool relu, T* y) {
  for_rows(
      r0, r1, C, L,
      [&](int64_t r, int64_t c) {
        affine_values(x + r * L, residual ? residual + r * L : nullptr, L, row_term(centre[c]), row_term(scale[c]),
                      row_term(shift[c]), relu, y + r * L);
      },
      [&](int64_t r, int64_t c, int64_t count) {
        affine_values(x + r, residual ? residual + r : nullptr, count, channels_term(centre, c),
                      channels_term(scale, c), channels_term(shift, c), relu, y + r);
      });
}

// The input gradient of rows [r0, r1) (channel c's mean[c], gain[c], a[c], b[c]).
template <typename T>
void input_gradient_rows(const T* dy, const T* x, const T* relu_out, int64_t r0, int64_t r1, int64_t C, int64_t L,
                         const T* mean, const T* gain, const T* a, const T* b, T* dx) {
  for_rows(
      r0, r1, C, L,
      [&](int64_t r, int64_t c) {
        input_gradient_values(dy + r * L, x + r * L, relu_out ? relu_out + r * L : nullptr, L, row_term(mean[c]),
                              row_term(gain[c]), row_term(a[c]), row_term(b[c]), dx + r * L);
      },
      [&](int64_t r, int64_t c, int64_t count) {
        input_gradient_values(dy + r, x + r, relu_out ? relu_out + r : nullptr, count, channels_term(mean, c),
                              channels_term(gain, c), channels_term(a, c), channels_term(b, c), dx + r);
      });
}

inline BatchNormRowKernels row_kernels() {
  return BatchNormRowKernels{row_moments,         row_grad_sums,      affine_rows<float>,
                             affine_rows<double>, input_gradient_rows<float>, input_gradient_rows<double>};
}

}  // namespace
}  // namespace convcore
