// Winograd F(2x2, 3x3) forward convolution (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks",
// 2016). Each 2x2 output tile comes from a 4x4 input tile d and each 3x3 filter g through
//   Y = A^T [ sum_c (G g G^T) . (B^T d B) ] A,
// with B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1] and
// A^T = [1 1 1 0; 0 1 -1 -1]. The sum over channels is 16 independent GEMMs, one per position xi of the 4x4
// transformed tile: M_xi (K x tiles) = U_xi (K x C) V_xi (C x tiles), run on the SGEMM engine. 16 multiplies per
// 4 outputs and channel instead of 36: 2.25x fewer than the direct or im2col form. The transforms only add,
// subtract and halve, so small-integer data stays exact.
// Included by each ISA's translation unit (conv_winograd_<isa>.cpp), which compiles it with its own vectors (VL
// floats); the anonymous namespace keeps each copy in its own unit. The input and output transforms work on VL tiles
// of a row at a time in registers. (Written as loops along each row and compiled for SSE2, the three transforms
// took ~45% of a batch-1 forward, 64 channels at 32 x 32, 2 threads. Both builds in one process, calls alternated,
// median of per-pair time ratios, AMD Zen 4, 2 threads, forward: 64 channels at 32 x 32 n=1 1.24x, n=32 1.26x; at 56
// x 56 n=1 1.18x, n=8 1.15x; 128 at 28 x 28 n=1 1.14x; 256 at 14 x 14 n=32 1.14x; 512 at 7 x 7 n=32 1.04x; 64 at
// 224 x 224 n=1 1.15x; input gradients of 64 channels at 32 x 32 n=32 1.13x, at 56 x 56 n=8 1.07x; 1 thread 64 at
// 32 x 32 n=1 1.26x, at 56 x 56 n=8 1.14x; forced AVX2 1.03-1.15x.)
#pragma once
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>

#include "convcore/buffer_cache.h"
#include "convcore/conv.h"
#include "convcore/dispatch.h"
#include "convcore/gemm.h"
#include "convcore/threads.h"
#include "convcore/vector_edges.h"

namespace convcore {
namespace {

constexpr int64_t kPositions = 16;  // the 4x4 transformed tile
// Tile rows per block: V and M together hold at most about this many floats (16 MiB), but at least one tile row.
constexpr int64_t kBlockFloats = int64_t(1) << 22;
// Where the transformed filters take at most kThreadFilterFloats (4 MiB: 256 x 256 channels; every block's products
// read all of them) and there are at least two blocks a thread, each thread takes whole blocks of about
// kThreadBlockFloats of V and M (4 MiB), transforms and products on its own: no waits between the phases, and a block's
// V and M written and read on one core. Each such thread takes its share of the blocks first (Shares) and, where U
// takes at most kOwnFilterFloats (1 MiB: 128 x 128 channels), transforms all the filters into a U of its own (U written
// by both and read by both crossed between the cores every call; larger ones, never measured so, stay shared: each
// thread's own would multiply the transforms and memory by the threads). Both builds in one process, calls alternated,
// median of per-pair time ratios, 2 threads, forward: 64 channels at 32 x 32 (n=32) 1.12x, at 56 x 56 (n=8) 1.13x, 128
// at 28 x 28 1.03x, 256 at 14 x 14 1.05-1.09x; blocks of 1 Mi floats 0.90x for 128 channels (products of 28 columns);
// 512 at 7 x 7, 16 MiB of filters, 0.98x (left to the shared blocks).
constexpr int64_t kThreadFilterFloats = int64_t(1) << 20;
constexpr int64_t kOwnFilterFloats = int64_t(1) << 18;
constexpr int64_t kThreadBlockFloats = int64_t(1) << 20;
// Where blocks that big leave a thread fewer than two (batch-1 layers), the threads still take blocks of their own, two
// a thread, if those hold at least kMinThreadBlockTiles tiles (the products' columns): a block's V and M (1.6 MiB for
// 64 channels at 56 x 56) then stay near one core instead of 6.4 MiB shared through L3. Measured as above on AMD Zen 4,
// whose L3 other tenants share, against shared blocks, in minutes when the neighbours slowed the shared blocks down (64
// channels at 56 x 56, n=1: 2.2 against 0.9 ms) / in the others: 64 channels at 56 x 56 (ResNet-50's res2a 3x3), n=1,
// 196 tiles a block, 1.43-1.55x / 0.98-1.02x (its input gradient, by the same route, 1.13-1.24x in a slow phase), n=2
// (392 tiles) 1.24-1.36x / 1.04-1.06x; 128 channels at 56 x 56 n=1 1.08-1.12x / 0.99-1.03x. Blocks of 112 or 140 tiles
// were 0.87x / 0.96x against 196; blocks of 64 (64 channels at 32 x 32, n=1) 0.85-0.89x against shared ones in fast
// minutes, 0.93x in a slow one, so such layers kept those until each thread had a U of its own and took its own blocks
// first. Since (64 tiles instead of 192, against a shared U and blocks taken in turn), both builds in one process,
// calls alternated, median of per-pair time ratios in 1 s windows, AMD Zen 4, 2 threads, forward: 64 channels at 32 x
// 32 n=1 (CIFAR; four blocks of 64 tiles instead of one shared block) 1.23-1.72x in minutes when the shared block ran
// slowly (0.7-0.85 ms) and 0.92-0.95x in others (0.3 ms); n=2 1.11-1.24x; 64 channels at 32 x 32 n=32 1.07x, at 56 x 56
// n=8 1.04x, n=1 0.99-1.01x; 128 at 28 x 28 n=8 1.08x, 256 at 14 x 14 n=32 1.01x, 64 at 224 x 224 n=1 1.03x; input
// gradients of 64 channels at 32 x 32 n=1 0.98x, at 56 x 56 n=8 0.99x; AVX2 1.00-1.06x.
constexpr int64_t kMinThreadBlockTiles = 64;

// The transforms subtract elements, and an infinite one gives inf - inf = NaN where the direct sum keeps the
// infinity: x and w are checked for non-finite values (any_non_finite) as they are read.

// U_xi[k][c] = (G g G^T)[xi] for the filter g = w[k][c] (3x3), each U_xi (K x C) packed as the products read it
// (a), at xi * a.floats() in U: written packed once per call instead of written and then packed by each block's
// products (res5a, 512 x 512 channels at 7 x 7, batch 32, forward: packing U 7% and copying it out 5% of the time).
// Per panel of mr filters (one task: whole cache lines of the packed rows), each filter's nine taps of all channels
// are gathered into nine contiguous rows, so that the transform runs along c in vectors, into 16 rows per filter;
// each position's panel rows are then turned into the panel by the ISA's transposing packer.
void transform_filters(const ConvShape& s, const float* w, const PackedA& a, float* U, std::atomic<bool>& non_finite) {
  const int64_t C = s.C, mr = a.tile.mr, panels = (s.K + mr - 1) / mr, kb = gemm_k_block(C);
  const PackTransposedKernel pack_transposed = kernels().gemm.pack_transposed;
  parallel_for(panels, threads_for(s.K * C * 64, 1 << 16), [&](int64_t r) {
    const int64_t k0 = r * mr, filters = std::min(mr, s.K - k0);
    const CachedBlock<float> buf((9 + 12 + kPositions * filters) * C);
    float* __restrict g = buf.get();  // g[m * C + c]: tap m of channel c
    float* __restrict t = g + 9 * C;  // t[(i * 3 + j) * C + c]: G g
    float* u = t + 12 * C;            // u[(f * 16 + xi) * C + c]: filter k0 + f
    int64_t rows[kMaxMr];             // filter f's rows for the packer
    if (any_non_finite(w + k0 * C * 9, filters * C * 9)) non_finite.store(true, std::memory_order_relaxed);
    for (int64_t f = 0; f < filters; ++f) {
      const int64_t k = k0 + f;
      float* __restrict uf = u + f * kPositions * C;
      rows[f] = f * kPositions * C;
      for (int64_t c = 0; c < C; ++c)
        for (int m = 0; m < 9; ++m) g[m * C + c] = w[(k * C + c) * 9 + m];
      for (int j = 0; j < 3; ++j)
#pragma GCC ivdep
        for (int64_t c = 0; c < C; ++c) {
          const float g0 = g[j * C + c], g1 = g[(3 + j) * C + c], g2 = g[(6 + j) * C + c];
          t[j * C + c] = g0;
          t[(3 + j) * C + c] = 0.5f * (g0 + g1 + g2);
          t[(6 + j) * C + c] = 0.5f * (g0 - g1 + g2);
          t[(9 + j) * C + c] = g2;
        }
      for (int i = 0; i < 4; ++i)  // (G g) G^T
#pragma GCC ivdep
        for (int64_t c = 0; c < C; ++c) {
          const float t0 = t[i * 3 * C + c], t1 = t[(i * 3 + 1) * C + c], t2 = t[(i * 3 + 2) * C + c];
          uf[(i * 4) * C + c] = t0;
          uf[(i * 4 + 1) * C + c] = 0.5f * (t0 + t1 + t2);
          uf[(i * 4 + 2) * C + c] = 0.5f * (t0 - t1 + t2);
          uf[(i * 4 + 3) * C + c] = t2;
        }
    }
    for (int64_t xi = 0; xi < kPositions; ++xi)
      for (int64_t pc = 0; pc < C; pc += kb)
        pack_transposed(u + xi * C + pc, rows, filters, mr, std::min(kb, C - pc), 1.0f,
                        a.panel(U + xi * a.floats(), r, pc));
  });
}

// The tiles of one block are whole tile rows (image n, tile row ty), tw tiles each; tile (row, tx) is column
// row * tw + tx of the block's V and M.
struct Tiling {
  int64_t th, tw;  // tiles per image: th x tw, covering 2*th x 2*tw outputs (the last row / column may overhang)
};

// Lane indices for __builtin_shuffle of two 16-, 8- or 4-float vectors.
typedef int32_t i16 __attribute__((vector_size(64)));
typedef int32_t i8 __attribute__((vector_size(32)));
typedef int32_t i4 __attribute__((vector_size(16)));

// Lanes 0, 2, 4, ... (even) and 1, 3, 5, ... (odd) of the 2VL floats a (low) and b (high).
template <int VL, typename vec>
inline void split_even_odd(vec a, vec b, vec& even, vec& odd) {
  if constexpr (VL == 16) {
    even = __builtin_shuffle(a, b, i16{0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30});
    odd = __builtin_shuffle(a, b, i16{1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31});
  } else if constexpr (VL == 8) {
    even = __builtin_shuffle(a, b, i8{0, 2, 4, 6, 8, 10, 12, 14});
    odd = __builtin_shuffle(a, b, i8{1, 3, 5, 7, 9, 11, 13, 15});
  } else {
    static_assert(VL == 4, "4, 8 or 16 lanes");
    even = __builtin_shuffle(a, b, i4{0, 2, 4, 6});
    odd = __builtin_shuffle(a, b, i4{1, 3, 5, 7});
  }
}

// The 2VL floats taking lanes from even and odd in turn (even[0], odd[0], even[1], ...): lo the first VL, hi the rest.
template <int VL, typename vec>
inline void interleave(vec even, vec odd, vec& lo, vec& hi) {
  if constexpr (VL == 16) {
    lo = __builtin_shuffle(even, odd, i16{0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23});
    hi = __builtin_shuffle(even, odd, i16{8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31});
  } else if constexpr (VL == 8) {
    lo = __builtin_shuffle(even, odd, i8{0, 8, 1, 9, 2, 10, 3, 11});
    hi = __builtin_shuffle(even, odd, i8{4, 12, 5, 13, 6, 14, 7, 15});
  } else {
    static_assert(VL == 4, "4, 8 or 16 lanes");
    lo = __builtin_shuffle(even, odd, i4{0, 4, 1, 5});
    hi = __builtin_shuffle(even, odd, i4{2, 6, 3, 7});
  }
}

// V[xi][c][col] = (B^T d B)[xi] for channel c and the block's tiles, rows [row0, row0 + rows) of all images'
// tile rows (row = n * th + ty), VL tiles of a row at a time (tile tx reads padded columns 2tx .. 2tx+3): each of the
// tile row's four input rows, copied zero-padded into a row buffer (a tile row's first two are the last two of the
// tile row above, whose buffers it takes over), gives the VL tiles' columns 2tx, 2tx+1 (split from 2VL floats at 2tx0)
// and 2tx+2, 2tx+3 (from 2VL floats at 2tx0+2), then d B along the row and B^T (d B) down the columns in
// registers; the last vector of a row is stored in part.
template <int VL>
void transform_inputs(const ConvShape& s, const Tiling& tl, const float* x, int64_t row0, int64_t rows, float* V,
                      std::atomic<bool>& non_finite) {
  typedef float vec __attribute__((vector_size(4 * VL)));
  const int64_t tw = tl.tw, cols = rows * tw, stride = s.C * cols, chunks = (tw + VL - 1) / VL;
  const int64_t width = 2 * chunks * VL + 2, copied = std::min(s.W, width - s.pad_w);  // padded row buffers
  parallel_for(s.C, threads_for(s.C * cols * 64, 1 << 16), [&](int64_t c) {
    std::vector<float> buf(static_cast<size_t>(5 * width), 0.0f);  // four rows and a row of zeros
    float* pr[4] = {&buf[0], &buf[width], &buf[2 * width], &buf[3 * width]};
    const float* zeros = &buf[4 * width];
    const float* in[4];  // the tile row's four input rows, padded
    uint32_t carries = 0;  // the copied floats' exponent_carry, ORed
    for (int64_t row = row0; row < row0 + rows; ++row) {
      const int64_t n = row / tl.th, ty = row % tl.th;
      const float* plane = x + (n * s.C + c) * s.H * s.W;
      const bool above = row > row0 && ty > 0;  // rows 0, 1 are rows 2, 3 of the tile row above
      if (above) {
        std::swap(pr[0], pr[2]);
        std::swap(pr[1], pr[3]);
        in[0] = in[2];
        in[1] = in[3];
      }
      for (int r = above ? 2 : 0; r < 4; ++r) {
        const int64_t h = 2 * ty - s.pad_h + r;
        if (h < 0 || h >= s.H) {
          in[r] = zeros;
          continue;
        }
        const float* src = plane + h * s.W;
        float* dst = pr[r] + s.pad_w;
        for (int64_t w = 0; w < copied; ++w) {
          dst[w] = src[w];
          carries |= exponent_carry(src[w]);
        }
        in[r] = pr[r];
      }
      float* v = V + c * cols + (row - row0) * tw;
      for (int64_t chunk = 0; chunk < chunks; ++chunk) {
        const int64_t t0 = chunk * VL;
        vec hb[4][4];  // hb[r][j]: input row r times B, column j
        for (int r = 0; r < 4; ++r) {
          vec a0, a1, b0, b1, e0, o0, e1, o1;
          std::memcpy(&a0, in[r] + 2 * t0, sizeof(vec));
          std::memcpy(&a1, in[r] + 2 * t0 + VL, sizeof(vec));
          std::memcpy(&b0, in[r] + 2 * t0 + 2, sizeof(vec));
          std::memcpy(&b1, in[r] + 2 * t0 + 2 + VL, sizeof(vec));
          split_even_odd<VL>(a0, a1, e0, o0);  // columns 2tx, 2tx + 1
          split_even_odd<VL>(b0, b1, e1, o1);  // columns 2tx + 2, 2tx + 3
          hb[r][0] = e0 - e1;
          hb[r][1] = o0 + e1;
          hb[r][2] = e1 - o0;
          hb[r][3] = o0 - o1;
        }
        const int64_t count = std::min<int64_t>(VL, tw - t0);
        for (int j = 0; j < 4; ++j) {
          const vec out[4] = {hb[0][j] - hb[2][j], hb[1][j] + hb[2][j], hb[2][j] - hb[1][j], hb[1][j] - hb[3][j]};
          for (int i = 0; i < 4; ++i) store_first<VL>(v + (4 * i + j) * stride + t0, out[i], count);
        }
      }
    }
    if (carries & 0x80000000u) non_finite.store(true, std::memory_order_relaxed);
  });
}

// y tiles = A^T M A for filter k's tiles of the block, VL tiles of a row at a time, + bias, ReLU, written where they
// lie inside the P x Q output (the last vector of a row stored in part). M holds at least VL - 1 floats past its
// last product, which the last vector of a row may read.
template <int VL>
void transform_outputs(const ConvShape& s, const Tiling& tl, const float* M, int64_t row0, int64_t rows,
                       const float* bias, bool relu, float* y) {
  typedef float vec __attribute__((vector_size(4 * VL)));
  const int64_t tw = tl.tw, cols = rows * tw, stride = s.K * cols, chunks = (tw + VL - 1) / VL;
  parallel_for(s.K, threads_for(s.K * cols * 64, 1 << 16), [&](int64_t k) {
    const float b = bias ? bias[k] : 0.0f;
    for (int64_t row = row0; row < row0 + rows; ++row) {
      const int64_t n = row / tl.th, ty = row % tl.th;
      const float* m = M + k * cols + (row - row0) * tw;
      for (int64_t chunk = 0; chunk < chunks; ++chunk) {
        const int64_t t0 = chunk * VL;
        vec at[2][4];  // at[i][j]: row i of A^T M, column j
        for (int j = 0; j < 4; ++j) {
          vec m0, m1, m2, m3;
          std::memcpy(&m0, m + j * stride + t0, sizeof(vec));
          std::memcpy(&m1, m + (4 + j) * stride + t0, sizeof(vec));
          std::memcpy(&m2, m + (8 + j) * stride + t0, sizeof(vec));
          std::memcpy(&m3, m + (12 + j) * stride + t0, sizeof(vec));
          at[0][j] = m0 + m1 + m2;
          at[1][j] = m1 - m2 - m3;
        }
        for (int i = 0; i < 2 && 2 * ty + i < s.P; ++i) {
          const vec* a = at[i];
          vec even = a[0] + a[1] + a[2] + b, odd = a[1] - a[2] - a[3] + b;
          if (relu) {
            even = relu_keep_nan_lanes<VL>(even);
            odd = relu_keep_nan_lanes<VL>(odd);
          }
          vec lo, hi;
          interleave<VL>(even, odd, lo, hi);
          float* dst = y + ((n * s.K + k) * s.P + 2 * ty + i) * s.Q + 2 * t0;
          const int64_t left = s.Q - 2 * t0;  // outputs of the row from dst on
          store_first<VL>(dst, lo, std::min<int64_t>(VL, left));
          if (left > VL) store_first<VL>(dst + VL, hi, std::min<int64_t>(VL, left - VL));
        }
      }
    }
  });
}

// With at least this many filters, a shared block's 16 products go to the threads by rows (filters: each thread all
// 16 positions of its share, sgemm_rows), else by position. By rows each thread reads only the transformed filters
// it wrote (transform_filters' runs of filter panels) and writes the products its output transform reads (where K is
// a multiple of threads x mr: transform_outputs takes equal runs of filters); by position half of U and M crossed
// between the cores.
// Both builds in one process, calls alternated, median of per-pair time ratios in windows of several seconds, AMD
// Zen 4, 2 threads, forward, res4a 3x3 n=1 (256 filters, 49 tiles): 1.06-1.32x in the machine's slow phases (when
// traffic between the cores slows 2-3x), 0.97-1.00x in fast ones; 512 filters on 14 x 14 n=1 1.01x, res4a n=32 and
// res5a n=32 0.99-1.00x. With 64 or 128 filters (CIFAR 3x3 n=1, 128 on 28 x 28 n=1) each thread's share of rows is
// too few for the tiles: 0.83-0.92x.
constexpr int64_t kFilterSplit = 256;

// conv2d_forward_winograd_<isa> (conv.h), VL floats a vector.
template <int VL>
bool winograd_forward(const ConvShape& s, const float* x, const float* w, const float* bias, bool relu, float* y) {
  const Tiling tl{(s.P + 1) / 2, (s.Q + 1) / 2};
  const int64_t tile_rows = s.N * tl.th, row_floats = kPositions * (s.C + s.K) * tl.tw;
  const int nt = threads_for(s.N * s.K * s.C * s.P * s.Q);
  const int64_t big_rows = std::clamp<int64_t>(kThreadBlockFloats / row_floats, 1, tile_rows);
  const int64_t thread_rows = tile_rows >= 2 * nt * big_rows ? big_rows : tile_rows / (2 * nt);
  const bool per_thread = kPositions * s.C * s.K <= kThreadFilterFloats && nt > 1 &&
                          (thread_rows == big_rows || thread_rows * tl.tw >= kMinThreadBlockTiles);
  const int64_t block_rows =
      per_thread ? thread_rows : std::clamp<int64_t>(kBlockFloats / row_floats, 1, tile_rows);
  const int64_t max_cols = block_rows * tl.tw;
  const PackedA a{choose_tile(kernels().gemm, s.K, max_cols), s.K, s.C};
  const int64_t mr = a.tile.mr, panels = (s.K + mr - 1) / mr;
  std::atomic<bool> non_finite{false};  // found in x or w: the caller computes y another way
  // one block, with the transformed filters U: its transforms on the threads (by channel), its 16 products spread
  // over them (each product serial); in a block task of its own (per_thread) all of it serially
  const auto block = [&](int64_t row0, const float* U, float* V, float* M) {
    if (non_finite.load(std::memory_order_relaxed)) return;
    const int64_t rows = std::min(block_rows, tile_rows - row0), cols = rows * tl.tw;
    transform_inputs<VL>(s, tl, x, row0, rows, V, non_finite);
    // rows [m0, m1) of product xi, on the calling thread (inside the threads' region, or work for one thread)
    const auto product = [&](int64_t xi, int64_t m0, int64_t m1) {
      sgemm_rows(a, U + xi * a.floats(), m0, m1, cols, MatrixB(Trans::no, V + xi * s.C * cols, cols), 0.0f,
                 M + xi * s.K * cols, cols);
    };
    const int shares = threads_for(kPositions * s.K * s.C * cols);
    if (s.K >= kFilterSplit && shares > 1) {
      // thread t's run of panels as OpenMP's static schedule gives transform_filters' (the first panels % shares
      // threads one more)
      const auto first_panel = [&](int64_t t) { return t * (panels / shares) + std::min<int64_t>(t, panels % shares); };
      parallel_for(shares, shares, [&](int64_t share) {
        const int64_t m0 = first_panel(share) * mr, m1 = std::min(s.K, first_panel(share + 1) * mr);
        for (int64_t xi = 0; xi < kPositions; ++xi) product(xi, m0, m1);
      });
    } else {
      parallel_for(kPositions, shares, [&](int64_t xi) { product(xi, 0, s.K); });
    }
    transform_outputs<VL>(s, tl, M, row0, rows, bias, relu, y);
  };
  const int64_t u_floats = kPositions * a.floats();
  const bool own_u = per_thread && u_floats <= kOwnFilterFloats;
  const CachedBlock<float> U(own_u ? 0 : u_floats);  // shared
  if (!own_u) transform_filters(s, w, a, U.get(), non_finite);
  if (per_thread) {
    // each thread its share of the blocks first (Shares), its own V and M and, own_u, its own U (all filters
    // transformed by itself): nothing one core writes is read by the other. (One task a thread; a thread given two
    // would transform the filters again and find its share taken: the same results.)
    Shares shares((tile_rows + block_rows - 1) / block_rows, nt);
    parallel_for(nt, nt, [&](int64_t) {
      const CachedBlock<float> own(own_u ? u_floats : 0), V(kPositions * s.C * max_cols),
          M(kPositions * s.K * max_cols + VL);
      if (own_u) transform_filters(s, w, a, own.get(), non_finite);
      const float* filters = own_u ? own.get() : U.get();
      take_shares(shares, 1, 1, [&](int64_t b, int64_t) { block(b * block_rows, filters, V.get(), M.get()); });
    });
    return !non_finite;
  }
  const CachedBlock<float> V(kPositions * s.C * max_cols), M(kPositions * s.K * max_cols + VL);
  for (int64_t row0 = 0; row0 < tile_rows; row0 += block_rows) block(row0, U.get(), V.get(), M.get());
  return !non_finite;
}

}  // namespace
}  // namespace convcore
