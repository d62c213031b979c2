// Minimal assertion helper for the C++ tests: each test is a main() returning the number of failed checks.
#pragma once
#include <cmath>
#include <cstdio>

namespace convcore_test {
inline int failures = 0;

inline void check(bool ok, const char* what, int line) {
  if (!ok) {
    std::printf("FAILED line %d: %s\n", line, what);
    ++failures;
  }
}
}  // namespace convcore_test

#define CHECK(cond) convcore_test::check((cond), #cond, __LINE__)
