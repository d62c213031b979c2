// Pooling fast paths vs the reference kernels, bit for bit, for every ISA this CPU runs: 2x2/2 max and avg,
// forward and backward, widths around the vector lengths, odd sizes, NaNs, ties, -0; outputs pre-filled with NaN.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "convcore/dispatch.h"
#include "convcore/pool.h"

using namespace convcore;

namespace {

int failures = 0;

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

void check(bool ok, const char* what, const char* isa, const PoolGeometry& g) {
  if (ok) return;
  ++failures;
  std::printf("FAIL %s [%s] H=%lld W=%lld K=%lldx%lld S=%lldx%lld P=%lldx%lld\n", what, isa, (long long)g.H,
              (long long)g.W, (long long)g.KH, (long long)g.KW, (long long)g.SH, (long long)g.SW, (long long)g.PH,
              (long long)g.PW);
}

// Random floats with ties (few distinct values), NaNs, -0 and -inf mixed in.
std::vector<float> make_input(std::mt19937& gen, int64_t n) {
  std::uniform_int_distribution<int> kind(0, 19), small(-2, 2);
  std::normal_distribution<float> normal;
  std::vector<float> x(n);
  for (auto& v : x) {
    const int k = kind(gen);
    v = k == 0   ? std::numeric_limits<float>::quiet_NaN()
        : k == 1 ? -0.0f
        : k == 2 ? -std::numeric_limits<float>::infinity()
        : k < 10 ? static_cast<float>(small(gen))
                 : normal(gen);
  }
  return x;
}

void check_geometry(std::mt19937& gen, const char* isa, const PoolGeometry& g, int64_t planes) {
  const int64_t in = planes * g.H * g.W, out = planes * g.OH * g.OW;
  const std::vector<float> x = make_input(gen, in), dy = make_input(gen, out);
  const float nan = std::numeric_limits<float>::quiet_NaN();

  std::vector<float> y_ref(out), y(out, nan);
  std::vector<int64_t> idx_ref(out), idx(out);
  std::vector<uint8_t> offsets(out);
  max_pool2d_ref(x.data(), y_ref.data(), idx_ref.data(), planes, g);
  max_pool2d_compact(x.data(), y.data(), offsets.data(), planes, g);
  offsets_to_indices(offsets.data(), idx.data(), planes, g);
  check(same_bits(y, y_ref), "max forward values", isa, g);
  check(idx == idx_ref, "max forward argmax", isa, g);

  std::vector<float> dx_ref(in), dx(in, nan);
  max_pool2d_backward_ref(dy.data(), idx_ref.data(), dx_ref.data(), planes, g);
  max_pool2d_backward_compact(dy.data(), offsets.data(), dx.data(), planes, g);
  check(same_bits(dx, dx_ref), "max backward", isa, g);

  for (bool count_include_pad : {true, false}) {
    std::vector<float> a_ref(out), a(out, nan);
    avg_pool2d_ref(x.data(), a_ref.data(), planes, g, count_include_pad);
    avg_pool2d(x.data(), a.data(), planes, g, count_include_pad);
    check(same_bits(a, a_ref), "avg forward", isa, g);
    std::vector<float> da_ref(in), da(in, nan);
    avg_pool2d_backward_ref(dy.data(), da_ref.data(), planes, g, count_include_pad);
    avg_pool2d_backward(dy.data(), da.data(), planes, g, count_include_pad);
    check(same_bits(da, da_ref), "avg backward", isa, g);
  }
}

int64_t out_size(int64_t n, int64_t k, int64_t s, int64_t p) { return (n + 2 * p - k) / s + 1; }

}  // namespace

int main() {
  std::mt19937 gen(7);
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512}) {
    if (!select_isa(isa)) {
      std::printf("skip %s: not supported by this CPU\n", isa_name(isa));
      continue;
    }
    for (int64_t H : {0, 2, 3, 4, 7}) {
      for (int64_t W = 0; W <= 70; ++W) {  // (empty planes: W = 0 once sent the AVX2 backward into a division by 0)
        check_geometry(gen, isa_name(isa), PoolGeometry{H, W, H / 2, W / 2, 2, 2, 2, 2, 0, 0}, 3);
      }
    }
    // Generic paths: overlapping, padded windows.
    for (int64_t W : {5, 8, 13, 18, 19, 20, 33, 34, 40, 57, 112}) {
      check_geometry(gen, isa_name(isa),
                     PoolGeometry{9, W, out_size(9, 3, 2, 1), out_size(W, 3, 2, 1), 3, 3, 2, 2, 1, 1}, 2);
      check_geometry(gen, isa_name(isa),
                     PoolGeometry{6, W, out_size(6, 2, 1, 1), out_size(W, 3, 1, 1), 2, 3, 1, 1, 1, 1}, 2);
      check_geometry(gen, isa_name(isa),
                     PoolGeometry{7, W, out_size(7, 3, 2, 0), out_size(W, 3, 2, 0), 3, 3, 2, 2, 0, 0}, 2);
      check_geometry(gen, isa_name(isa),
                     PoolGeometry{8, W, out_size(8, 2, 1, 1), out_size(W, 5, 2, 2), 2, 5, 1, 2, 1, 2}, 2);
      if (W >= 4)  // ceil_mode: one more column whose window overhangs the right edge
        check_geometry(gen, isa_name(isa),
                       PoolGeometry{5, W, 3, W / 2 + 1, 3, 3, 2, 2, 1, 1}, 2);
    }
    std::printf("%s: pooling fast paths checked against the reference\n", isa_name(isa));
  }
  select_isa(detected_isa());
  return failures == 0 ? 0 : 1;
}
