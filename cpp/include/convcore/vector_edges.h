// For kernels written with GCC's vector extension (VL floats a vector) and compiled once per ISA: the partial vectors
// at the end of a row (a masked load or store where the unit's ISA has a fast one, vector pieces or lanes otherwise),
// the lane-wise ReLU and the non-finite check of Winograd's kernels. Each takes VL explicitly (with the vector type
// alone to deduce, GCC 12 deduced float for a function template's vector typedef). An anonymous namespace keeps each
// unit's copy compiled with its own flags.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#if defined(__AVX2__)
#include "convcore/avx2_lanes.h"
#endif

namespace convcore {
namespace {

// Stores the first `count` lanes (1 <= count <= VL) of v at dst: a masked store on AVX-512, vector pieces on AVX2 (a
// variable-length memcpy cost ~30 cycles a store, a third of LeNet conv1's forward with its 28-wide rows).
template <int VL, typename Vec>
inline void store_first(float* dst, const Vec& v, int64_t count) {
  if (count == VL) {
    std::memcpy(dst, &v, sizeof(Vec));
    return;
  }
#if defined(__AVX512F__)
  if constexpr (VL == 16) {
    _mm512_mask_storeu_ps(dst, static_cast<__mmask16>((1u << count) - 1), reinterpret_cast<const __m512&>(v));
    return;
  }
#endif
#if defined(__AVX2__)
  if constexpr (VL == 8) {  // 4-, 2- and 1-lane stores: AVX2's masked store is slow on AMD's cores
    store_first_lanes(dst, reinterpret_cast<const __m256&>(v), count);
    return;
  }
#endif
  for (int64_t j = 0; j < count; ++j) dst[j] = v[j];
}

// The first `count` floats at src (0 <= count <= VL) in the low lanes of a vector, zeros above: a masked load where
// the unit's ISA has one (nothing past src + count is read).
template <int VL, typename Vec>
inline Vec load_first(const float* src, int64_t count) {
  Vec v{};
  if (count == VL) {
    std::memcpy(&v, src, sizeof(Vec));
    return v;
  }
#if defined(__AVX512F__)
  if constexpr (VL == 16) {
    const __m512 m = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << count) - 1), src);
    std::memcpy(&v, &m, sizeof(Vec));
    return v;
  }
#endif
#if defined(__AVX2__)
  if constexpr (VL == 8) {
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 m = _mm256_maskload_ps(src, _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)), lanes));
    std::memcpy(&v, &m, sizeof(Vec));
    return v;
  }
#endif
  for (int64_t j = 0; j < count; ++j) v[j] = src[j];
  return v;
}

// v's lanes where positive or NaN, +0 elsewhere: the epilogue's ReLU (relu_keep_nan) lane by lane.
template <int VL, typename Vec>
inline Vec relu_keep_nan_lanes(const Vec& v) {
  return ((v > 0) | (v != v)) ? v : Vec{};
}

// Fast kernels whose transforms subtract (Winograd's) check their operands for infinities and NaN, where inf - inf
// would give NaN where the direct sum keeps the infinity. exponent_carry(v) has its sign bit set where v is infinite
// or NaN (its exponent bits all set: adding one to them carries into the sign bit); ORed over many values, an
// integer reduction, which vectorises.
// exponent_carry_lanes does it lane by lane on a vector of VL floats' bits (uint32_t lanes), or on one float's.
template <int VL, typename Bits>
inline Bits exponent_carry_lanes(const Bits& bits) {
  return (bits & 0x7f800000u) + 0x00800000u;
}

inline uint32_t exponent_carry(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return exponent_carry_lanes<1>(bits);
}

// Whether any of the n floats at v is infinite or NaN.
inline bool any_non_finite(const float* v, int64_t n) {
  uint32_t carries = 0;
  for (int64_t i = 0; i < n; ++i) carries |= exponent_carry(v[i]);
  return (carries & 0x80000000u) != 0;
}

}  // namespace
}  // namespace convcore
