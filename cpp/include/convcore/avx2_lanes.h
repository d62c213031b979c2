// Lane masks for AVX2 units (compiled with -mavx2): AVX2 has no mask registers, only maskload / maskstore with
// a vector of lane masks. An anonymous namespace keeps each unit's copy compiled with its own flags.
#pragma once
#include <immintrin.h>

#include <cstdint>

namespace convcore {
namespace {

// The mask of the first n lanes (0 <= n <= 8) of an 8-float vector, for maskload (masked lanes read as 0 and never
// fault) and maskstore (masked lanes left as they are).
inline __m256i first_lanes(int64_t n) {
  alignas(32) static const int32_t table[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(table + 8 - n));
}

// Stores the first `lanes` (0 to 8) lanes of v at dst by 4-, 2- and 1-lane stores (a masked store is slow on AMD's
// cores, microcoded).
inline void store_first_lanes(float* dst, __m256 v, int64_t lanes) {
  if (lanes == 8) {
    _mm256_storeu_ps(dst, v);
    return;
  }
  __m128 part = _mm256_castps256_ps128(v);
  if (lanes >= 4) {
    _mm_storeu_ps(dst, part);
    part = _mm256_extractf128_ps(v, 1);
    dst += 4;
    lanes -= 4;
  }
  if (lanes >= 2) {
    _mm_storel_pi(reinterpret_cast<__m64*>(dst), part);
    part = _mm_movehl_ps(part, part);
    dst += 2;
    lanes -= 2;
  }
  if (lanes == 1) _mm_store_ss(dst, part);
}

}  // namespace
}  // namespace convcore
