// Overflow-checked int64 size arithmetic for shapes and allocations.
#pragma once
#include <cstdint>
#include <stdexcept>

namespace convcore {

inline int64_t checked_mul(int64_t a, int64_t b) {
  int64_t r;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r)) throw std::length_error("size overflows int64");
  return r;
}

template <typename... Rest>
inline int64_t checked_mul(int64_t a, int64_t b, Rest... rest) {
  return checked_mul(checked_mul(a, b), rest...);
}

// The product of non-negative a, b, ..., or INT64_MAX past int64: for work estimates that only pick a thread count
// (a pooling window near 2**33 squared, which checked sizes allow, would overflow them).
inline int64_t saturating_mul(int64_t a, int64_t b) {
  int64_t r;
  return __builtin_mul_overflow(a, b, &r) ? INT64_MAX : r;
}

template <typename... Rest>
inline int64_t saturating_mul(int64_t a, int64_t b, Rest... rest) {
  return saturating_mul(saturating_mul(a, b), rest...);
}

}  // namespace convcore
