// Winograd F(2x2, 3x3) forward convolution (Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks",
// 2016). Each 2x2 output tile comes from a 4x4 input tile d and each 3x3 filter g through
//   Y = A^T [ sum_c (G g G^T) . (B^T d B) ] A,
// with B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1] and
// A^T = [1 1 1 0; 0 1 -1 -1]. The sum over channels is 16 independent GEMMs, one per position xi of the 4x4
// transformed tile: M_xi (K x tiles) = U_xi (K x C) V_xi (C x tiles), run on the SGEMM engine. 16 multiplies per
// 4 outputs and channel instead of 36: 2.25x fewer than the direct or im2col form. The transforms only add,
// subtract and halve, so small-integer data stays exact.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>

#include "convcore/buffer_cache.h"
#include "convcore/conv.h"
#include "convcore/dispatch.h"
#include "convcore/gemm.h"
#include "convcore/threads.h"

namespace convcore {
namespace {

constexpr int64_t kPositions = 16;  // the 4x4 transformed tile
// Fewer output tiles than this leave the filter transform (16*K*C floats written) unpaid: the im2col GEMM is as
// fast (measured: 256 channels at 14 x 14, 49 tiles, even; 512 at 7 x 7, 16 tiles, 2x slower).
constexpr int64_t kMinTiles = 64;
// The transforms cost per input and output element, the products per channel pair: with fewer than kWideChannels
// input or output channels they pay only along rows of at least kMinRowTiles tiles (measured AVX2 Zen 3, 2 threads,
// forward, median ms, Winograd -> im2col GEMM: 64 channels at 8 x 8 (ResNet-20's last stage, n=128) 7.6 -> 5.6, at
// 10 x 10 1.45 -> 1.30, at 12 x 12 1.83 -> 1.45; Winograd kept: 64 at 32 x 32 20.9 against 23.3, 128 at 8 x 8 5.4
// against 5.9, 512 at 7 x 7 53 against 68, 128 at 14 x 14 3.8 against 4.7).
constexpr int64_t kWideChannels = 128;
constexpr int64_t kMinRowTiles = 7;
// Tile rows per block: V and M together hold at most about this many floats (16 MiB), but at least one tile row.
constexpr int64_t kBlockFloats = int64_t(1) << 22;
// Where the transformed filters take at most kThreadFilterFloats (4 MiB: 256 x 256 channels; every block's products
// read all of them) and there are at least two blocks a thread, each thread takes whole blocks of about
// kThreadBlockFloats of V and M (4 MiB), transforms and products on its own: no waits between the phases, and a
// block's V and M written and read on one core. Both builds in one process, calls alternated, median of per-pair
// time ratios, 2 threads, forward: 64 channels at 32 x 32 (n=32) 1.12x, at 56 x 56 (n=8) 1.13x, 128 at 28 x 28
// 1.03x, 256 at 14 x 14 1.05-1.09x; blocks of 1 Mi floats 0.90x for 128 channels (products of 28 columns); 512 at
// 7 x 7, 16 MiB of filters, 0.98x (left to the shared blocks).
constexpr int64_t kThreadFilterFloats = int64_t(1) << 20;
constexpr int64_t kThreadBlockFloats = int64_t(1) << 20;
// Where blocks that big leave a thread fewer than two (batch-1 layers), the threads still take blocks of their
// own, two a thread, if those hold at least kMinThreadBlockTiles tiles (the products' columns): a block's V and M
// (1.6 MiB for 64 channels at 56 x 56) then stay near one core instead of 6.4 MiB shared through L3. Measured as
// above on AMD Zen 4, whose L3 other tenants share, against shared blocks, in minutes when the neighbours slowed
// the shared blocks down (64 channels at 56 x 56, n=1: 2.2 against 0.9 ms) / in the others: 64 channels at 56 x 56
// (ResNet-50's res2a 3x3), n=1, 196 tiles a block, 1.43-1.55x / 0.98-1.02x (its input gradient, by the same
// route, 1.13-1.24x in a slow phase), n=2 (392 tiles) 1.24-1.36x / 1.04-1.06x; 128 channels at 56 x 56 n=1
// 1.08-1.12x / 0.99-1.03x. Blocks of 112 or 140 tiles were 0.87x / 0.96x against 196; blocks of 64 (64 channels at
// 32 x 32, n=1) 0.85-0.89x against shared ones in fast minutes, 0.93x in a slow one, so such layers keep those.
constexpr int64_t kMinThreadBlockTiles = 192;

// The transforms subtract elements, and an infinite one gives inf - inf = NaN where the direct sum keeps the
// infinity: x and w are checked for non-finite values as they are read. exponent_carry(v) has its sign bit set
// where v is infinite or NaN (its exponent bits all set: adding one to them carries into the sign bit); ORed over
// many values, an integer reduction, which vectorises.
inline uint32_t exponent_carry(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return (bits & 0x7f800000u) + 0x00800000u;
}

// Whether any of the n floats at v is infinite or NaN.
bool any_non_finite(const float* v, int64_t n) {
  uint32_t carries = 0;
  for (int64_t i = 0; i < n; ++i) carries |= exponent_carry(v[i]);
  return (carries & 0x80000000u) != 0;
}

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

// V[xi][c][col] = (B^T d B)[xi] for channel c and the block's tiles, rows [row0, row0 + rows) of all images'
// tile rows (row = n * th + ty). Each input row is split, zero-padded, into its even and odd columns (tile tx reads
// columns 2tx .. 2tx+3: even[tx], odd[tx], even[tx+1], odd[tx+1]) and multiplied by B along the row once: a tile
// row's first two input rows are the last two of the tile row above, whose products it takes over. Every loop
// runs along contiguous arrays.
void transform_inputs(const ConvShape& s, const Tiling& tl, const float* x, int64_t row0, int64_t rows, float* V,
                      std::atomic<bool>& non_finite) {
  const int64_t tw = tl.tw, cols = rows * tw, stride = s.C * cols, half = tw + 1;
  // the columns 2j - pad_w (even) and 2j + 1 - pad_w (odd) inside the image: j in [j_lo, j_hi) for both
  const int64_t j_lo = std::min(half, (s.pad_w + 1) / 2);
  const int64_t j_hi = std::clamp<int64_t>((s.W + s.pad_w) / 2, j_lo, half);
  parallel_for(s.C, threads_for(s.C * cols * 64, 1 << 16), [&](int64_t c) {
    std::unique_ptr<float[]> buf(new float[16 * tw + 2 * half]);
    float* hb[4];  // hb[r][j * tw + tx]: input row r of the tile times B, column j
    for (int r = 0; r < 4; ++r) hb[r] = buf.get() + r * 4 * tw;
    float *even = buf.get() + 16 * tw, *odd = even + half;  // one input row's even and odd columns
    for (int64_t row = row0; row < row0 + rows; ++row) {
      const int64_t n = row / tl.th, ty = row % tl.th;
      const float* plane = x + (n * s.C + c) * s.H * s.W;
      const bool above = row > row0 && ty > 0;  // rows 0, 1 computed as rows 2, 3 of the tile row above
      if (above) {
        std::swap(hb[0], hb[2]);
        std::swap(hb[1], hb[3]);
      }
      for (int r = above ? 2 : 0; r < 4; ++r) {
        const int64_t h = 2 * ty - s.pad_h + r;
        float *h0 = hb[r], *h1 = h0 + tw, *h2 = h1 + tw, *h3 = h2 + tw;
        if (h < 0 || h >= s.H) {
          std::fill(h0, h0 + 4 * tw, 0.0f);
          continue;
        }
        const float* src = plane + h * s.W;  // padded column w is src[w - pad_w]
        const auto column = [&](int64_t w) { return w >= s.pad_w && w < s.pad_w + s.W ? src[w - s.pad_w] : 0.0f; };
        uint32_t carries = 0;  // the row's columns' exponent_carry, ORed as they are split
        for (int64_t j = 0; j < j_lo; ++j) {
          even[j] = column(2 * j);
          odd[j] = column(2 * j + 1);
          carries |= exponent_carry(even[j]) | exponent_carry(odd[j]);
        }
#pragma GCC ivdep
        for (int64_t j = j_lo; j < j_hi; ++j) {
          even[j] = src[2 * j - s.pad_w];
          odd[j] = src[2 * j + 1 - s.pad_w];
          carries |= exponent_carry(even[j]) | exponent_carry(odd[j]);
        }
        for (int64_t j = j_hi; j < half; ++j) {
          even[j] = column(2 * j);
          odd[j] = column(2 * j + 1);
          carries |= exponent_carry(even[j]) | exponent_carry(odd[j]);
        }
        if (carries & 0x80000000u) non_finite.store(true, std::memory_order_relaxed);
#pragma GCC ivdep
        for (int64_t tx = 0; tx < tw; ++tx) {  // d B along the row
          h0[tx] = even[tx] - even[tx + 1];
          h1[tx] = odd[tx] + even[tx + 1];
          h2[tx] = even[tx + 1] - odd[tx];
          h3[tx] = odd[tx] - odd[tx + 1];
        }
      }
      float* v = V + c * cols + (row - row0) * tw;
      for (int j = 0; j < 4; ++j) {  // B^T (d B) down each column
        const float *r0 = hb[0] + j * tw, *r1 = hb[1] + j * tw, *r2 = hb[2] + j * tw, *r3 = hb[3] + j * tw;
        float *v0 = v + j * stride, *v1 = v + (4 + j) * stride, *v2 = v + (8 + j) * stride,
              *v3 = v + (12 + j) * stride;
#pragma GCC ivdep
        for (int64_t tx = 0; tx < tw; ++tx) {
          v0[tx] = r0[tx] - r2[tx];
          v1[tx] = r1[tx] + r2[tx];
          v2[tx] = r2[tx] - r1[tx];
          v3[tx] = r1[tx] - r3[tx];
        }
      }
    }
  });
}

// y tiles = A^T M A for the block's tiles, + bias, ReLU, written where they lie inside the P x Q output.
void transform_outputs(const ConvShape& s, const Tiling& tl, const float* M, int64_t row0, int64_t rows,
                       const float* bias, bool relu, float* y) {
  const int64_t tw = tl.tw, cols = rows * tw, stride = s.K * cols;
  parallel_for(s.K, threads_for(s.K * cols * 64, 1 << 16), [&](int64_t k) {
    std::unique_ptr<float[]> buf(new float[8 * tw + 2 * tw + 2 * tw]);
    float* sv = buf.get();                          // sv[(i * 4 + j) * tw + tx]: row i of A^T M, column j
    float *even = sv + 8 * tw, *odd = even + tw;    // one output row's even and odd columns
    float* out = odd + tw;                          // the row, 2 * tw wide
    const float b = bias ? bias[k] : 0.0f;
    for (int64_t row = row0; row < row0 + rows; ++row) {
      const int64_t n = row / tl.th, ty = row % tl.th;
      const float* m = M + k * cols + (row - row0) * tw;
      for (int j = 0; j < 4; ++j) {
        const float *m0 = m + j * stride, *m1 = m + (4 + j) * stride, *m2 = m + (8 + j) * stride,
                    *m3 = m + (12 + j) * stride;
        float *s0 = sv + j * tw, *s1 = sv + (4 + j) * tw;
#pragma GCC ivdep
        for (int64_t tx = 0; tx < tw; ++tx) {
          s0[tx] = m0[tx] + m1[tx] + m2[tx];
          s1[tx] = m1[tx] - m2[tx] - m3[tx];
        }
      }
      for (int i = 0; i < 2 && 2 * ty + i < s.P; ++i) {
        const float *a0 = sv + i * 4 * tw, *a1 = a0 + tw, *a2 = a1 + tw, *a3 = a2 + tw;
#pragma GCC ivdep
        for (int64_t tx = 0; tx < tw; ++tx) {
          even[tx] = a0[tx] + a1[tx] + a2[tx] + b;
          odd[tx] = a1[tx] - a2[tx] - a3[tx] + b;
        }
#pragma GCC ivdep
        for (int64_t tx = 0; tx < tw; ++tx) {
          out[2 * tx] = even[tx];
          out[2 * tx + 1] = odd[tx];
        }
        float* dst = y + ((n * s.K + k) * s.P + 2 * ty + i) * s.Q;
        if (relu)
          for (int64_t q = 0; q < s.Q; ++q) dst[q] = relu_keep_nan(out[q]);
        else
          std::copy(out, out + s.Q, dst);
      }
    }
  });
}

}  // namespace

bool conv2d_winograd_applies(const ConvShape& s) {
  return s.R == 3 && s.S == 3 && s.stride_h == 1 && s.stride_w == 1 && s.dil_h == 1 && s.dil_w == 1 &&
         s.groups == 1 && s.C >= 16 && s.K >= 16 && s.P >= 4 && s.Q >= 4 &&
         s.N * ((s.P + 1) / 2) * ((s.Q + 1) / 2) >= kMinTiles &&
         (std::min(s.C, s.K) >= kWideChannels || std::min(s.P, s.Q) >= 2 * kMinRowTiles - 1);
}

bool conv2d_forward_winograd(const ConvShape& s, const float* x, const float* w, const float* bias, bool relu,
                             float* y) {
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
  const CachedBlock<float> U(kPositions * a.floats());
  std::atomic<bool> non_finite{false};  // found in x or w: the caller computes y another way
  transform_filters(s, w, a, U.get(), non_finite);
  // one block: its transforms on the threads (by channel), its 16 products spread over them (each product serial);
  // in a block task of its own (per_thread) all of it serially
  const auto block = [&](int64_t row0, float* V, float* M) {
    if (non_finite.load(std::memory_order_relaxed)) return;
    const int64_t rows = std::min(block_rows, tile_rows - row0), cols = rows * tl.tw;
    transform_inputs(s, tl, x, row0, rows, V, non_finite);
    parallel_for(kPositions, threads_for(kPositions * s.K * s.C * cols), [&](int64_t xi) {
      sgemm(a, U.get() + xi * a.floats(), cols, MatrixB(Trans::no, V + xi * s.C * cols, cols), 0.0f,
            M + xi * s.K * cols, cols);
    });
    transform_outputs(s, tl, M, row0, rows, bias, relu, y);
  };
  if (per_thread) {
    const int64_t blocks = (tile_rows + block_rows - 1) / block_rows;
    parallel_for(
        blocks, nt,
        [&](int64_t b) {
          const CachedBlock<float> V(kPositions * s.C * max_cols), M(kPositions * s.K * max_cols);
          block(b * block_rows, V.get(), M.get());
        },
        Schedule::as_free);
    return !non_finite;
  }
  const CachedBlock<float> V(kPositions * s.C * max_cols), M(kPositions * s.K * max_cols);
  for (int64_t row0 = 0; row0 < tile_rows; row0 += block_rows) block(row0, V.get(), M.get());
  return !non_finite;
}

}  // namespace convcore
