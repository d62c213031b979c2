// The Winograd convolution, F(2x2, 3x3) and F(4x4, 3x3), against the reference for every ISA this CPU runs, on
// small integers (exact: the transforms keep integers and the sums stay below 2^24): tile rows of every lane
// grouping (rows of 2 to 18 tiles: 1, 2 and 4 tile rows a vector), overhanging last tile rows and columns,
// padding 0, 1 and 2 and uneven, blocks taken per thread and shared, bias and ReLU; the same bits at 1, 2 and 3
// threads; false (y left to another path) for an infinite input; which layers conv2d_winograd_tile gives F(4x4), and
// which conv2d_winograd_fused_tile does.
// The weight gradient by either tile the same way (exact, the same bits at 1, 2 and 3 threads also on fractions, dw
// prefilled with NaN, several blocks of tile rows, false and dw untouched for an infinity or NaN in x or dy), where it
// applies and which layers conv2d_winograd_weight_tile gives F(4x4); so too the fused weight gradient by either tile
// (AVX2 and AVX-512), its bias gradient the bits of conv2d_backward_bias_fast (untouched where it returns false), and
// which layers conv2d_winograd_fused_weight_tile gives F(4x4). ConvWeightCache keeps the packings used last.
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "check.h"
#include "convcore/conv.h"
#include "convcore/dispatch.h"
#include "convcore/threads.h"

using namespace convcore;

namespace {

struct Case {
  int64_t N, C, H, W, K, pad_h, pad_w;
};

ConvShape shape_of(const Case& c) {
  const int64_t P = c.H + 2 * c.pad_h - 2, Q = c.W + 2 * c.pad_w - 2;
  return ConvShape{c.N, c.C, c.H, c.W, c.K, 3, 3, P, Q, 1, 1, c.pad_h, c.pad_w, 1, 1, 1};
}

// integers in [-3, 3] from a linear congruential generator
float draw(uint32_t& state) {
  state = state * 1664525u + 1013904223u;
  return float(int(state >> 24) % 7 - 3);
}

void run_case(const Case& c, int tile, bool relu) {
  const ConvShape s = shape_of(c);
  std::vector<float> x(s.N * s.C * s.H * s.W), w(s.K * s.C * 9), b(s.K), want(s.N * s.K * s.P * s.Q);
  uint32_t state = 12345;
  for (float& v : x) v = draw(state);
  for (float& v : w) v = draw(state);
  for (float& v : b) v = draw(state);
  conv2d_forward_ref<float>(s, x.data(), w.data(), b.data(), want.data());
  if (relu)
    for (float& v : want) v = v > 0 ? v : 0.0f;
  const int before = num_threads();
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    std::vector<float> y(want.size(), std::numeric_limits<float>::quiet_NaN());
    CHECK(kernels().conv_winograd(s, tile, x.data(), w.data(), b.data(), relu, y.data(), nullptr));
    CHECK(y == want);
  }
  set_num_threads(before);
}

using WeightRoute = bool (*)(const ConvShape& s, const float* dy, const float* x, float* dw);

template <int tile>
bool engine_weight(const ConvShape& s, const float* dy, const float* x, float* dw) {
  return kernels().conv_winograd_weight(s, tile, dy, x, dw);
}

template <int tile>
bool fused_weight(const ConvShape& s, const float* dy, const float* x, float* dw) {
  std::vector<float> db(s.K, 7.0f), want(s.K, 7.0f);
  const bool done = kernels().conv_winograd_fused_weight(s, tile, dy, x, dw, db.data());
  if (done) conv2d_backward_bias_fast(s, dy, want.data());
  CHECK(db == want);
  return done;
}

void run_weight_case(const Case& c, WeightRoute weight) {
  const ConvShape s = shape_of(c);
  std::vector<float> x(s.N * s.C * s.H * s.W), dy(s.N * s.K * s.P * s.Q), want(s.K * s.C * 9);
  uint32_t state = 54321;
  for (float& v : x) v = draw(state);
  for (float& v : dy) v = draw(state);
  conv2d_backward_weight_ref<float>(s, dy.data(), x.data(), want.data());
  const int before = num_threads();
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    std::vector<float> dw(want.size(), std::numeric_limits<float>::quiet_NaN());
    CHECK(weight(s, dy.data(), x.data(), dw.data()));
    CHECK(dw == want);
  }
  // on fractions (sums that round) the same bits at 1, 2 and 3 threads: no partition depends on the thread count
  for (float& v : x) v += 0.1f * draw(state);
  for (float& v : dy) v -= 0.3f * draw(state);
  std::vector<float> first;
  for (int threads : {1, 2, 3}) {
    set_num_threads(threads);
    std::vector<float> dw(want.size(), std::numeric_limits<float>::quiet_NaN());
    CHECK(weight(s, dy.data(), x.data(), dw.data()));
    if (first.empty()) first = dw;
    CHECK(dw == first);
  }
  set_num_threads(before);
}

// An infinity or NaN as the last element of x or of dy (the last block's): false, dw untouched.
void check_weight_non_finite(const Case& c, WeightRoute weight) {
  const ConvShape s = shape_of(c);
  for (float bad : {std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN()})
    for (bool in_x : {true, false}) {
      std::vector<float> x(s.N * s.C * s.H * s.W, 1.0f), dy(s.N * s.K * s.P * s.Q, 1.0f), dw(s.K * s.C * 9, 7.0f);
      (in_x ? x.back() : dy.back()) = bad;
      CHECK(!weight(s, dy.data(), x.data(), dw.data()));
      CHECK(dw == std::vector<float>(dw.size(), 7.0f));
    }
}

}  // namespace

int main() {
  const Case cases[] = {
      {6, 32, 7, 7, 24, 1, 1},     // 7 x 7 maps (res5a's): 2 tiles a row for F(4x4), 4 for F(2x2)
      {3, 20, 12, 13, 17, 1, 1},   // 3 / 7 tiles a row, an overhanging last column, 17 filters
      {2, 16, 27, 29, 20, 1, 1},   // 7 x 8 tiles, overhanging rows and columns
      {2, 18, 32, 32, 16, 1, 1},   // 8 / 16 tiles a row (CIFAR's maps)
      {1, 16, 9, 70, 16, 0, 1},    // 18 / 35 tiles a row: more than one vector of tiles, no vertical padding
      {2, 16, 14, 15, 16, 2, 2},   // padding 2: tiles reading only padding
      {2, 16, 15, 12, 16, 1, 0},   // uneven padding
      {1, 16, 64, 64, 16, 1, 1},   // one image of 16 / 32 tile rows: per-thread blocks on 2 and 3 threads
      {2, 16, 8, 4, 16, 1, 1},     // 1 / 2 tiles a row (4-float vectors: tile rows of one lane each)
      {1, 16, 12, 12, 260, 1, 1},  // 260 filters: runs of them, one a thread, at 2 threads (filter_shares)
  };
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512}) {
    if (!select_isa(isa)) continue;
    for (const Case& c : cases)
      for (int tile : {2, 4}) run_case(c, tile, tile == 4 && c.N % 2 == 0);
    // an infinite input: false (the caller computes y another way)
    const Case c{1, 16, 16, 16, 16, 1, 1};
    const ConvShape s = shape_of(c);
    std::vector<float> x(s.N * s.C * s.H * s.W, 1.0f), w(s.K * s.C * 9, 1.0f), y(s.N * s.K * s.P * s.Q);
    x[100] = std::numeric_limits<float>::infinity();
    for (int tile : {2, 4})
      CHECK(!kernels().conv_winograd(s, tile, x.data(), w.data(), nullptr, false, y.data(), nullptr));
    // the weight gradient by either tile: every case above, and 7 images of 64 x 66 outputs (F(2x2): 32 tile rows of
    // 33 tiles, at least 62 rows a block: blocks of 75, 75 and 74 rows; F(4x4): 16 tile rows of 17, at least 53 rows a
    // block: two of 56); false, dw untouched, for an infinity or NaN in x or dy (one block, several)
    const Case blocks{7, 16, 64, 66, 16, 1, 1};
    std::vector<WeightRoute> routes{engine_weight<2>, engine_weight<4>};
    if (kernels().conv_winograd_fused_weight) routes.insert(routes.end(), {fused_weight<2>, fused_weight<4>});
    for (WeightRoute weight : routes) {
      for (const Case& w_case : cases) run_weight_case(w_case, weight);
      run_weight_case(blocks, weight);
      check_weight_non_finite(c, weight);
      check_weight_non_finite(blocks, weight);
    }
  }
  select_isa(detected_isa());
  // F(4x4) where its products are at most 0.6 of F(2x2)'s and there are at least 2^23 multiply-adds
  const auto tile_of = [](const Case& c) { return conv2d_winograd_tile(shape_of(c)); };
  CHECK(tile_of({12, 128, 7, 7, 128, 1, 1}) == 4);  // 7 x 7 maps
  CHECK(tile_of({1, 64, 56, 56, 64, 1, 1}) == 4);   // res2a 3x3 at batch 1
  CHECK(tile_of({2, 64, 27, 27, 96, 1, 1}) == 4);   // overhanging tiles
  CHECK(tile_of({1, 64, 32, 32, 64, 1, 1}) == 2);   // CIFAR 3x3 at batch 1: 2^22 multiply-adds
  CHECK(tile_of({32, 256, 14, 14, 256, 1, 1}) == 2);  // 14 x 14 maps: F(4x4) computes 16 x 16
  CHECK(tile_of({150, 48, 10, 10, 40, 1, 1}) == 2);   // 10 x 10 maps: 0.81 of the products
  // the fused forward: F(4x4) where its vectors of tiles' 36 products come to at most 0.6 of F(2x2)'s 16 a vector
  // and the batch holds at least 256 4x4 tiles
  const auto fused_tile = [](const Case& c, int lanes) { return conv2d_winograd_fused_tile(shape_of(c), lanes); };
  for (int lanes : {8, 16}) {
    CHECK(fused_tile({128, 16, 32, 32, 16, 1, 1}, lanes) == 4);  // ResNet-20's first stage: 0.5625
    CHECK(fused_tile({128, 32, 16, 16, 32, 1, 1}, lanes) == 4);  // its second
    CHECK(fused_tile({128, 64, 8, 8, 64, 1, 1}, lanes) == 2);    // its third: 4x4 tiles would leave lanes idle
    CHECK(fused_tile({4, 16, 32, 32, 16, 1, 1}, lanes) == 4);    // 256 tiles
    CHECK(fused_tile({3, 16, 32, 32, 16, 1, 1}, lanes) == 2);    // 192 tiles
    CHECK(fused_tile({15, 32, 16, 16, 32, 1, 1}, lanes) == 2);   // 240 tiles
    CHECK(fused_tile({16, 20, 17, 15, 24, 1, 1}, lanes) == 2);   // 17 x 15 outputs: 4x4 tiles overhang
  }
  CHECK(fused_tile({16, 16, 13, 33, 32, 0, 0}, 8) == 4);   // 11 x 31 outputs: 3 vectors of 8 4x4 tiles, 12 of 2x2
  CHECK(fused_tile({16, 16, 13, 33, 32, 0, 0}, 16) == 2);  // 2 vectors of 2 x 8 4x4 tiles against 6 of 16 2x2 tiles
  // the weight gradient: at least 128 channels and filters, 192 tiles, none overhanging much (not 7 x 7 maps)
  const auto weight_applies = [](const Case& c) { return conv2d_winograd_weight_applies(shape_of(c)); };
  CHECK(weight_applies({1, 128, 28, 28, 128, 1, 1}));     // 196 tiles
  CHECK(weight_applies({4, 256, 14, 14, 256, 1, 1}));     // 196 tiles
  CHECK(!weight_applies({2, 256, 14, 14, 256, 1, 1}));    // 98 tiles
  CHECK(!weight_applies({32, 512, 7, 7, 512, 1, 1}));     // 7 x 7 maps: 64 outputs computed for 49
  CHECK(!weight_applies({32, 64, 32, 32, 64, 1, 1}));     // 64 channels (CIFAR 3x3)
  CHECK(!weight_applies({8, 128, 32, 32, 64, 1, 1}));     // 64 filters
  CHECK(!weight_applies({3, 128, 15, 15, 128, 1, 1}));    // 15 x 15 maps: 16 x 16 computed
  CHECK(weight_applies({3, 128, 17, 17, 128, 1, 1}));     // 17 x 17 maps: 18 x 18 computed
  // and F(4x4) where its 36 products a 4x4 tile come to at most 0.6 of F(2x2)'s 16 a 2x2 tile, there are at least
  // 192 4x4 tiles and rows of at least 14
  const auto weight_tile = [](const Case& c) { return conv2d_winograd_weight_tile(shape_of(c)); };
  CHECK(weight_tile({1, 128, 56, 56, 128, 1, 1}) == 4);   // 196 4x4 tiles, 14 a row
  CHECK(weight_tile({1, 128, 56, 52, 128, 1, 1}) == 2);   // 13 a row
  CHECK(weight_tile({1, 128, 24, 112, 128, 1, 1}) == 2);  // 6 x 28: 168 4x4 tiles
  CHECK(weight_tile({32, 128, 28, 28, 128, 1, 1}) == 2);  // 28 x 28 maps: 7 a row
  CHECK(weight_tile({1, 256, 59, 59, 256, 1, 1}) == 4);   // 59 x 59: 15 x 15 4x4 tiles against 30 x 30 2x2
  CHECK(weight_tile({1, 256, 54, 54, 256, 1, 1}) == 2);   // 54 x 54: 14 x 14 against 27 x 27: 0.605
  // the fused weight gradient: 16 to 64 channels and filters, at least 256 tiles
  const auto fused_applies = [](const Case& c) { return conv2d_winograd_fused_weight_applies(shape_of(c)); };
  CHECK(fused_applies({2, 16, 32, 32, 16, 1, 1}));     // 512 tiles
  CHECK(fused_applies({4, 32, 16, 16, 32, 1, 1}));     // 256 tiles
  CHECK(!fused_applies({2, 32, 16, 16, 32, 1, 1}));    // 128 tiles
  CHECK(fused_applies({16, 64, 8, 8, 64, 1, 1}));      // 256 tiles
  CHECK(!fused_applies({32, 128, 8, 8, 64, 1, 1}));    // 128 channels
  CHECK(!fused_applies({8, 16, 32, 32, 8, 1, 1}));     // 8 filters
  // and F(4x4) where its 36 products a 4x4 tile come to at most 0.6 of F(2x2)'s 16 a 2x2 tile and each chunk (image
  // chunks, at most 8; one image's tile rows in 4) holds at least 64 4x4 tiles
  const auto fused_weight_tile = [](const Case& c) { return conv2d_winograd_fused_weight_tile(shape_of(c)); };
  CHECK(fused_weight_tile({128, 16, 32, 32, 16, 1, 1}) == 4);  // ResNet-20's first stage: 1024 4x4 tiles a chunk
  CHECK(fused_weight_tile({128, 64, 8, 8, 64, 1, 1}) == 4);    // its third: 64
  CHECK(fused_weight_tile({64, 64, 8, 8, 64, 1, 1}) == 2);     // 32
  CHECK(fused_weight_tile({2, 16, 32, 32, 16, 1, 1}) == 4);    // 64, chunks of one image
  CHECK(fused_weight_tile({1, 16, 64, 64, 16, 1, 1}) == 4);    // one image, 4 chunks of 4 tile rows: 64 each
  CHECK(fused_weight_tile({1, 64, 56, 56, 64, 1, 1}) == 2);    // 4 chunks of 3 or 4 tile rows of 14: 49 each
  CHECK(fused_weight_tile({8, 16, 17, 15, 16, 1, 1}) == 2);    // 17 x 15 outputs: 4x4 tiles overhang
  CHECK(fused_weight_tile({8, 16, 31, 31, 16, 1, 1}) == 4);    // 31 x 31: 8 x 8 4x4 tiles against 16 x 16 2x2
  // the kept filters: a packing for each layout and block width (the fused kernel's block, 16 filters, is also a
  // filter-vector block width), the 3 used last kept; one evicted stays readable where it is held
  ConvWeightCache cache;
  int fills = 0;
  const auto fill = [&](float* p) { p[0] = float(++fills); };
  const ConvWeightCache::Packed blocks16 = cache.get(ConvPacking::filter_blocks, 16, 1, fill);
  CHECK(cache.get(ConvPacking::filter_blocks, 16, 1, fill) == blocks16 && fills == 1);
  const ConvWeightCache::Packed fused16 = cache.get(ConvPacking::winograd_fused, 16, 1, fill);
  CHECK(fills == 2 && fused16.get()[0] == 2.0f && blocks16.get()[0] == 1.0f);
  CHECK(cache.get(ConvPacking::filter_blocks, 16, 1, fill) == blocks16 && fills == 2);  // kept: not packed again
  CHECK(cache.get(ConvPacking::winograd_fused, 32, 1, fill).get()[0] == 3.0f);  // 3 kept: fused 32, blocks 16, fused 16
  CHECK(cache.get(ConvPacking::winograd_fused, 16, 1, fill) == fused16 && fills == 3);
  CHECK(cache.get(ConvPacking::winograd2, 32, 1, fill).get()[0] == 4.0f);  // evicts blocks 16, used longest ago
  CHECK(cache.get(ConvPacking::winograd_fused, 16, 1, fill) == fused16 && fills == 4);
  CHECK(cache.get(ConvPacking::filter_blocks, 16, 1, fill).get()[0] == 5.0f && blocks16.get()[0] == 1.0f);
  return convcore_test::failures;
}
