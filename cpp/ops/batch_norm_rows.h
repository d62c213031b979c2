// Batch-norm channel reductions, written once with GCC vector extensions and compiled per ISA
// (batch_norm_{scalar,avx2,avx512}.cpp): each row sums in 32 float lanes (two 16-float vectors, element l into lane
// l mod 32, a partial last step padded with values that add nothing), rows add lane by lane into 32 float64 lanes,
// which close in a fixed pairwise tree. Everything here has internal linkage (an anonymous namespace), so the
// per-ISA copies are never merged across units.
#pragma once
#include <cstdint>
#include <cstring>

#include "convcore/ops.h"

namespace convcore {
namespace {

typedef float Lanes16 __attribute__((vector_size(64)));

// The n <= 16 floats at p, then `fill` in the remaining lanes. (Vectors travel by pointer: a 64-byte vector
// passed by value changes the ABI where AVX-512 is off.)
inline void load(const float* p, int64_t n, float fill, Lanes16* v) {
  if (n == 16) {
    std::memcpy(v, p, sizeof *v);
    return;
  }
  float buf[16];
  for (int j = 0; j < 16; ++j) buf[j] = j < n ? p[j] : fill;
  std::memcpy(v, buf, sizeof *v);
}

typedef float Lanes8f __attribute__((vector_size(32)));
typedef double Lanes8d __attribute__((vector_size(64)));

// 32 float64 lanes: each row's 32 float lanes are added in (lane by lane) when the row ends, and closed in a fixed
// pairwise tree at the end of the channel.
struct RowTotals {
  Lanes8d lanes[4] = {};

  void add_row(const Lanes16 (&acc)[2]) {
    for (int h = 0; h < 2; ++h) {
      Lanes8f lo, hi;
      std::memcpy(&lo, &acc[h], sizeof lo);
      std::memcpy(&hi, reinterpret_cast<const char*>(&acc[h]) + sizeof lo, sizeof hi);
      lanes[2 * h] += __builtin_convertvector(lo, Lanes8d);
      lanes[2 * h + 1] += __builtin_convertvector(hi, Lanes8d);
    }
  }

  double close() const {
    double l[32];
    std::memcpy(l, lanes, sizeof l);
    for (int width = 16; width >= 1; width /= 2)
      for (int i = 0; i < width; ++i) l[i] += l[i + width];
    return l[0];
  }
};

// Calls step(a, l, n) for each 16-float step of a row of L floats, l = 0, 16, ..., into float accumulator
// a = (l / 16) % 2; the last step may be partial (n < 16).
template <typename Step>
inline void for_steps(int64_t L, const Step& step) {
  int64_t l = 0;
  for (; l + 32 <= L; l += 32) {
    step(0, l, int64_t(16));
    step(1, l + 16, int64_t(16));
  }
  if (l + 16 <= L) {
    step(0, l, int64_t(16));
    l += 16;
    if (l < L) step(1, l, L - l);
  } else if (l < L) {
    step(0, l, L - l);
  }
}

// sum over the rows x[n * stride + l] (n < rows, l < L) of term(x), term applied in place to a vector of 16
// values (a partial last step is padded with `fill` first).
template <typename Term>
inline double channel_total(const float* x, int64_t rows, int64_t stride, int64_t L, float fill, const Term& term) {
  RowTotals total;
  for (int64_t n = 0; n < rows; ++n) {
    const float* row = x + n * stride;
    Lanes16 acc[2] = {};
    for_steps(L, [&](int a, int64_t l, int64_t k) {
      Lanes16 v;
      load(row + l, k, fill, &v);
      term(v);
      acc[a] += v;
    });
    total.add_row(acc);
  }
  return total.close();
}

inline double channel_sum(const float* x, int64_t rows, int64_t stride, int64_t L) {
  return channel_total(x, rows, stride, L, 0.0f, [](Lanes16&) {});
}

inline double channel_centred_squares(const float* x, int64_t rows, int64_t stride, int64_t L, float mean) {
  return channel_total(x, rows, stride, L, mean, [mean](Lanes16& v) {  // mean-padded: the tail adds 0
    v -= mean;
    v *= v;
  });
}

inline void channel_grad_sums(const float* dy, const float* x, const float* relu_out, int64_t rows, int64_t stride,
                              int64_t L, float mean, double* sum, double* sum_centred) {
  RowTotals s, sc;
  for (int64_t n = 0; n < rows; ++n) {
    const int64_t at = n * stride;
    Lanes16 acc_s[2] = {}, acc_sc[2] = {};
    for_steps(L, [&](int a, int64_t l, int64_t k) {
      Lanes16 g, d;
      load(dy + at + l, k, 0.0f, &g);
      if (relu_out) {
        Lanes16 out;
        load(relu_out + at + l, k, 0.0f, &out);
        g = out > 0.0f ? g : Lanes16{};  // a lane-wise select
      }
      load(x + at + l, k, mean, &d);
      d -= mean;
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
