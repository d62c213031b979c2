// Batch-norm channel reductions, written once with GCC vector extensions and compiled per ISA
// (batch_norm_{scalar,avx2,avx512}.cpp): each row sums in 32 float lanes (element l into lane l mod 32, a partial
// last step padded with values that add nothing), held as vectors of the unit's own width (two 16-float vectors on
// AVX-512, four 8-float on AVX2, eight 4-float on the baseline: a 64-byte vector type compiled for AVX2 moved its
// halves through general registers and the stack, 4.9 GB/s for the gradient sums); rows add lane by lane into 32
// float64 lanes, which close in a fixed pairwise tree. The lanes and their order are the same on every ISA.
// Everything here has internal linkage (an anonymous namespace), so the per-ISA copies are never merged across units.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

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

// 32 float64 lanes: each row's 32 float lanes are added in (lane by lane) when the row ends, and closed in a fixed
// pairwise tree at the end of the channel.
struct RowTotals {
  Lanes8d lanes[4] = {};

  void add_row(const Lanes (&acc)[kRowVectors]) {
    Lanes8f row[4];
    std::memcpy(row, acc, sizeof row);
    for (int h = 0; h < 4; ++h) lanes[h] += __builtin_convertvector(row[h], Lanes8d);
  }

  double close() const {
    double l[32];
    std::memcpy(l, lanes, sizeof l);
    for (int width = 16; width >= 1; width /= 2)
      for (int i = 0; i < width; ++i) l[i] += l[i + width];
    return l[0];
  }
};

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

// sum over the rows x[n * stride + l] (n < rows, l < L) of term(x), term applied to a vector of values (a partial
// last step is padded with `fill` first).
template <typename Term>
inline double channel_total(const float* x, int64_t rows, int64_t stride, int64_t L, float fill, const Term& term) {
  RowTotals total;
  for (int64_t n = 0; n < rows; ++n) {
    const float* row = x + n * stride;
    Lanes acc[kRowVectors] = {};
    for_steps(L, [&](int a, int64_t l, int64_t k) { acc[a] += term(load(row + l, k, fill)); });
    total.add_row(acc);
  }
  return total.close();
}

inline double channel_sum(const float* x, int64_t rows, int64_t stride, int64_t L) {
  return channel_total(x, rows, stride, L, 0.0f, [](Lanes v) { return v; });
}

inline double channel_centred_squares(const float* x, int64_t rows, int64_t stride, int64_t L, float mean) {
  return channel_total(x, rows, stride, L, mean, [mean](Lanes v) {  // mean-padded: the tail adds 0
    v -= mean;
    return v * v;
  });
}

inline void channel_grad_sums(const float* dy, const float* x, const float* relu_out, int64_t rows, int64_t stride,
                              int64_t L, float mean, double* sum, double* sum_centred) {
  RowTotals s, sc;
  for (int64_t n = 0; n < rows; ++n) {
    const int64_t at = n * stride;
    Lanes acc_s[kRowVectors] = {}, acc_sc[kRowVectors] = {};
    for_steps(L, [&](int a, int64_t l, int64_t k) {
      Lanes g = load(dy + at + l, k, 0.0f);
      if (relu_out)  // g where the output is > 0, else +0 (a mask, not a select: GCC scalarised the select)
        g = reinterpret_cast<Lanes>(reinterpret_cast<LanesMask>(g) & (load(relu_out + at + l, k, 0.0f) > 0.0f));
      const Lanes d = load(x + at + l, k, mean) - mean;
      acc_s[a] += g;
      acc_sc[a] += g * d;
    });
    s.add_row(acc_s);
    sc.add_row(acc_sc);
  }
  *sum = s.close();
  *sum_centred = sc.close();
}

inline BatchNormRowKernels row_kernels() {
  return BatchNormRowKernels{channel_sum, channel_centred_squares, channel_grad_sums};
}

}  // namespace
}  // namespace convcore
