// Winograd F(2x2, 3x3) and F(4x4, 3x3) forward convolution and weight gradient (winograd_weight; both also fused for
// few channels: winograd_fused_forward, winograd_fused_weight; Lavin and Gray, "Fast Algorithms for Convolutional
// Neural Networks", 2016). Each T x T output tile comes from an alpha x alpha input tile d (alpha = T + 2) and each 3x3
// filter g through
//   Y = A^T [ sum_c (G g G^T) . (B^T d B) ] A,
// for F(2x2, 3x3) with B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1] and
// A^T = [1 1 1 0; 0 1 -1 -1] (F(4x4, 3x3): WinogradTile<4>). The sum over channels is alpha^2 independent GEMMs, one
// per position xi of the transformed tile: M_xi (K x tiles) = U_xi (K x C) V_xi (C x tiles), run on the SGEMM
// engine. F(2x2): 16 multiplies per 4 outputs and channel instead of 36, 2.25x fewer than the direct or im2col
// form; F(4x4): 36 per 16, 4x fewer. The transforms only add, subtract and scale by binary fractions and integers
// (F(4x4)'s thirds go into one division by 36 at the end), so small-integer data stays exact.
// Included by each ISA's translation unit (conv_winograd_<isa>.cpp), which compiles it with its own vectors (VL
// floats); the anonymous namespace keeps each copy in its own unit. The input and output transforms work on VL tiles
// at a time in registers. (F(2x2, 3x3) written as loops along each row and compiled for SSE2, the three transforms
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
#include <type_traits>
#include <vector>

#include "convcore/buffer_cache.h"
#include "convcore/conv.h"
#include "convcore/dispatch.h"
#include "convcore/gemm.h"
#include "convcore/threads.h"
#include "convcore/vector_edges.h"

namespace convcore {
namespace {

// Tile rows per block: V and M together hold at most about this many floats (16 MiB), but at least one tile row.
constexpr int64_t kBlockFloats = int64_t(1) << 22;
// Where the transformed filters take at most kThreadFilterFloats (4 MiB: 256 x 256 channels for F(2x2), 170 x 170 for
// F(4x4); every block's products read all of them) and there are at least two blocks a thread, each thread takes whole
// blocks of about kThreadBlockFloats of V and M (4 MiB), transforms and products on its own: no waits between the
// phases, and a block's V and M written and read on one core. Each such thread takes its share of the blocks first
// (Shares) and, where U takes at most kOwnFilterFloats (1 MiB: 128 x 128 channels, 85 x 85 for F(4x4)), transforms all
// the filters into a U of its own (U written by both and read by both crossed between the cores every call; larger
// ones, never measured so, stay shared: each thread's own would multiply the transforms and memory by the threads).
// Both builds in one process, calls alternated, median of per-pair time ratios, 2 threads, forward: 64 channels at 32 x
// 32 (n=32) 1.12x, at 56 x 56 (n=8) 1.13x, 128 at 28 x 28 1.03x, 256 at 14 x 14 1.05-1.09x; blocks of 1 Mi floats 0.90x
// for 128 channels (products of 28 columns); 512 at 7 x 7, 16 MiB of filters, 0.98x (left to the shared blocks).
constexpr int64_t kThreadFilterFloats = int64_t(1) << 20;
constexpr int64_t kOwnFilterFloats = int64_t(1) << 18;
constexpr int64_t kThreadBlockFloats = int64_t(1) << 20;
// Where blocks that big leave a thread fewer than two (batch-1 layers), the threads still take blocks of their own, two
// a thread, if those hold at least kMinThreadBlockTiles 2x2 tiles' outputs (the products' columns: 64 for F(2x2), 16
// for F(4x4)): a block's V and M (1.6 MiB for 64 channels at 56 x 56) then stay near one core instead of 6.4 MiB shared
// through L3. Measured as above on AMD Zen 4, whose L3 other tenants share, against shared blocks, in minutes when the
// neighbours slowed the shared blocks down (64 channels at 56 x 56, n=1: 2.2 against 0.9 ms) / in the others: 64
// channels at 56 x 56 (ResNet-50's res2a 3x3), n=1, 196 tiles a block, 1.43-1.55x / 0.98-1.02x (its input gradient, by
// the same route, 1.13-1.24x in a slow phase), n=2 (392 tiles) 1.24-1.36x / 1.04-1.06x; 128 channels at 56 x 56 n=1
// 1.08-1.12x / 0.99-1.03x. Blocks of 112 or 140 tiles were 0.87x / 0.96x against 196; blocks of 64 (64 channels at 32 x
// 32, n=1) 0.85-0.89x against shared ones in fast minutes, 0.93x in a slow one, so such layers kept those until each
// thread had a U of its own and took its own blocks first. Since (64 tiles instead of 192, against a shared U and
// blocks taken in turn), both builds in one process, calls alternated, median of per-pair time ratios in 1 s windows,
// AMD Zen 4, 2 threads, forward: 64 channels at 32 x 32 n=1 (CIFAR; four blocks of 64 tiles instead of one shared
// block) 1.23-1.72x in minutes when the shared block ran slowly (0.7-0.85 ms) and 0.92-0.95x in others (0.3 ms); n=2
// 1.11-1.24x; 64 channels at 32 x 32 n=32 1.07x, at 56 x 56 n=8 1.04x, n=1 0.99-1.01x; 128 at 28 x 28 n=8 1.08x, 256 at
// 14 x 14 n=32 1.01x, 64 at 224 x 224 n=1 1.03x; input gradients of 64 channels at 32 x 32 n=1 0.98x, at 56 x 56 n=8
// 0.99x; AVX2 1.00-1.06x. F(4x4) takes blocks of the same outputs (CIFAR 3x3 n=1 by F(4x4), against F(2x2): 0.96x
// with blocks of 16 tiles, 0.65x with shared ones).
constexpr int64_t kMinThreadBlockTiles = 64;
// The weight gradient's blocks (winograd_weight_tiles): V and D together hold at least this many floats and at least
// kMinWeightBlockTiles tiles (the products' depth: each block's products read and write all of M), up to twice that
// once the blocks are evened out.
constexpr int64_t kWeightBlockFloats = int64_t(1) << 20;
constexpr int64_t kMinWeightBlockTiles = 256;

// The transforms subtract elements, and an infinite one gives inf - inf = NaN where the direct sum keeps the
// infinity: x and w (the weight gradient: x and dy) are checked for non-finite values as they are read.

// The two tile sizes' transforms, applied to alpha = T + 2 values (vectors or floats) at a time: filter (G, alpha x
// 3, on a kernel column or row), input (B^T, alpha x alpha) and output (A^T, T x alpha); and the weight gradient's
// gradient (A, alpha x T) and filter_gradient (G_s^T, 3 x alpha), with weight_scale.
// F(2x2, 3x3): G, B^T and A^T as above; the transforms add, subtract and halve.
// F(4x4, 3x3) (Lavin and Gray's points 0, 1, -1, 2, -2 and infinity): G's rows scaled to integers, G_s = diag(s) G
// with s = (4, 6, 6, 24, 24, 1), and A^T's columns divided by them, 6 A^T diag(1/s) = A_e^T, whose coefficients are
// binary fractions; Y = A_e^T M A_e / 36. 36 multiplies per 16 outputs and channel, against F(2x2, 3x3)'s 64:
// 1.78x fewer. Transforms of small integers stay integers (binary fractions in A_e^T) and the division by 36,
// correctly rounded, gives the integer sum exactly: exact on small-integer data while the products' partial sums
// stay below 2^24 and the output transform's below 2^20 (A_e^T's quarters: sixteenths after both passes). The
// transformed values are larger than the direct sum's terms (B^T d B up to 100 |d|, G_s g G_s^T up to 49 |g|), and
// on float data the error grows with them: up to ~2e-6 of the sum of |x| |w| over a window, F(2x2)'s ~1e-7.
template <int T>
struct WinogradTile;

template <>
struct WinogradTile<2> {
  static constexpr int alpha = 4;
  template <typename V>
  static void filter(V g0, V g1, V g2, V (&u)[alpha]) {
    u[0] = g0;
    u[1] = 0.5f * (g0 + g1 + g2);
    u[2] = 0.5f * (g0 - g1 + g2);
    u[3] = g2;
  }
  template <typename V>
  static void input(const V (&d)[alpha], V (&v)[alpha]) {
    v[0] = d[0] - d[2];
    v[1] = d[1] + d[2];
    v[2] = d[2] - d[1];
    v[3] = d[1] - d[3];
  }
  template <typename V>
  static void output(const V (&m)[alpha], V (&y)[2]) {
    y[0] = m[0] + m[1] + m[2];
    y[1] = m[1] - m[2] - m[3];
  }
  // A g for a dy row's or column's two values g (the weight gradient's A dY A^T; A = [1 0; 1 1; 1 -1; 0 -1])
  template <typename V>
  static void gradient(const V (&g)[2], V (&d)[alpha]) {
    d[0] = g[0];
    d[1] = g[0] + g[1];
    d[2] = g[0] - g[1];
    d[3] = -g[1];
  }
  // G_s^T m for a column or row of the weight gradient's sums m, G_s = 2 G (G_s^T = [2 1 1 0; 0 1 -1 0; 0 1 1 2]):
  // back to three taps
  template <typename V>
  static void filter_gradient(const V (&m)[alpha], V (&g)[3]) {
    g[0] = 2.0f * m[0] + m[1] + m[2];
    g[1] = m[1] - m[2];
    g[2] = m[1] + m[2] + 2.0f * m[3];
  }
  static constexpr float scale = 1.0f;         // y = A^T M A / scale
  static constexpr float weight_scale = 4.0f;  // dw = G_s^T M G_s / weight_scale
};

template <>
struct WinogradTile<4> {
  static constexpr int alpha = 6;
  template <typename V>
  static void filter(V g0, V g1, V g2, V (&u)[alpha]) {
    const V a = g0 + g2, b = g0 + 4.0f * g2;
    u[0] = g0;
    u[1] = -(a + g1);
    u[2] = g1 - a;
    u[3] = b + 2.0f * g1;
    u[4] = b - 2.0f * g1;
    u[5] = g2;
  }
  template <typename V>
  static void input(const V (&d)[alpha], V (&v)[alpha]) {
    const V d42 = d[4] - d[2], d31 = d[3] - d[1];
    v[0] = 4.0f * d[0] - 5.0f * d[2] + d[4];
    v[1] = (d[3] + d[4]) - 4.0f * (d[1] + d[2]);
    v[2] = (d[4] - d[3]) + 4.0f * (d[1] - d[2]);
    v[3] = d42 + 2.0f * d31;
    v[4] = d42 - 2.0f * d31;
    v[5] = 4.0f * d[1] - 5.0f * d[3] + d[5];
  }
  template <typename V>
  static void output(const V (&m)[alpha], V (&y)[4]) {
    const V s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4];
    y[0] = 1.5f * m[0] + s12 + 0.25f * s34;
    y[1] = d12 + 0.5f * d34;
    y[2] = s12 + s34;
    y[3] = d12 + 2.0f * d34 + 6.0f * m[5];
  }
  // A_e g for a dy row's or column's four values g (the weight gradient's A_e dY A_e^T; A_e is output's A_e^T turned)
  template <typename V>
  static void gradient(const V (&g)[4], V (&d)[alpha]) {
    const V s02 = g[0] + g[2], s13 = g[1] + g[3], q = 0.25f * g[0] + g[2], h = 0.5f * g[1] + 2.0f * g[3];
    d[0] = 1.5f * g[0];
    d[1] = s02 + s13;
    d[2] = s02 - s13;
    d[3] = q + h;
    d[4] = q - h;
    d[5] = 6.0f * g[3];
  }
  // G_s^T m for a column or row of the weight gradient's sums m (G_s^T = [1 -1 -1 1 1 0; 0 -1 1 2 -2 0; 0 -1 -1 4 4
  // 1]): back to three taps
  template <typename V>
  static void filter_gradient(const V (&m)[alpha], V (&g)[3]) {
    const V s12 = m[1] + m[2], s34 = m[3] + m[4];
    g[0] = m[0] - s12 + s34;
    g[1] = (m[2] - m[1]) + 2.0f * (m[3] - m[4]);
    g[2] = 4.0f * s34 - s12 + m[5];
  }
  static constexpr float scale = 36.0f;
  static constexpr float weight_scale = 36.0f;  // dw = G_s^T M G_s / weight_scale
};

// U_xi[k][c] = (G g G^T)[xi] for the filter g = w[k][c] (3x3), each U_xi (K x C) packed as the products read it
// (a), at xi * a.floats() in U: written packed once per call instead of written and then packed by each block's
// products (res5a, 512 x 512 channels at 7 x 7, batch 32, forward: packing U 7% and copying it out 5% of the time).
// Per panel of mr filters (one task: whole cache lines of the packed rows), each filter's nine taps of all channels
// are gathered into nine contiguous rows (its C x 9 taps transposed by the ISA's transposing packer), so that the
// transform runs along c in vectors, into alpha^2 rows per filter; each position's panel rows are then turned into
// the panel by the same packer. Panels [first_panel, end_panel) only.
template <int T>
void transform_filters(const ConvShape& s, const float* w, const PackedA& a, float* U, std::atomic<bool>& non_finite,
                       int64_t first_panel, int64_t end_panel) {
  typedef WinogradTile<T> Tile;
  constexpr int alpha = Tile::alpha;
  constexpr int64_t positions = alpha * alpha;
  const int64_t C = s.C, mr = a.tile.mr, kb = gemm_k_block(C), panels = end_panel - first_panel;
  const PackTransposedKernel pack_transposed = kernels().gemm.pack_transposed;
  std::vector<int64_t> taps(C);  // channel c's taps in a filter's C x 9
  for (int64_t c = 0; c < C; ++c) taps[c] = c * 9;
  parallel_for(panels, threads_for(panels * mr * C * 4 * positions, 1 << 16), [&](int64_t panel) {
    const int64_t r = first_panel + panel;
    const int64_t k0 = r * mr, filters = std::min(mr, s.K - k0);
    const CachedBlock<float> buf((9 + 3 * alpha + positions * filters) * C);
    float* __restrict g = buf.get();  // g[m * C + c]: tap m of channel c
    float* __restrict t = g + 9 * C;  // t[(i * 3 + j) * C + c]: G g
    float* u = t + 3 * alpha * C;     // u[(f * positions + xi) * C + c]: filter k0 + f
    int64_t rows[kMaxMr];             // filter f's rows for the packer
    if (any_non_finite(w + k0 * C * 9, filters * C * 9)) non_finite.store(true, std::memory_order_relaxed);
    for (int64_t f = 0; f < filters; ++f) {
      const int64_t k = k0 + f;
      float* __restrict uf = u + f * positions * C;
      rows[f] = f * positions * C;
      pack_transposed(w + k * C * 9, taps.data(), C, C, 9, 1.0f, g);
      for (int j = 0; j < 3; ++j)  // G g
#pragma GCC ivdep
        for (int64_t c = 0; c < C; ++c) {
          float col[alpha];
          Tile::filter(g[j * C + c], g[(3 + j) * C + c], g[(6 + j) * C + c], col);
          for (int i = 0; i < alpha; ++i) t[(i * 3 + j) * C + c] = col[i];
        }
      for (int i = 0; i < alpha; ++i)  // (G g) G^T
#pragma GCC ivdep
        for (int64_t c = 0; c < C; ++c) {
          float row[alpha];
          Tile::filter(t[i * 3 * C + c], t[(i * 3 + 1) * C + c], t[(i * 3 + 2) * C + c], row);
          for (int j = 0; j < alpha; ++j) uf[(i * alpha + j) * C + c] = row[j];
        }
    }
    for (int64_t xi = 0; xi < positions; ++xi)
      for (int64_t pc = 0; pc < C; pc += kb)
        pack_transposed(u + xi * C + pc, rows, filters, mr, std::min(kb, C - pc), 1.0f,
                        a.panel(U + xi * a.floats(), r, pc));
  });
}

// The tiles of one block are whole tile rows (image n, tile row ty), tw tiles each; tile (row, tx) is column
// row * tw + tx of the block's V and M.
struct Tiling {
  int64_t th, tw;  // tiles per image: th x tw, covering T*th x T*tw outputs (the last row / column may overhang)
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

// The T*VL floats of a (a[0] first) split by column modulo T (T = 2 or 4): phase[q] holds columns q, T + q, 2T + q, ...
template <int VL, int T, typename vec>
inline void split_phases(const vec (&a)[T], vec (&phase)[T]) {
  if constexpr (T == 2) {
    split_even_odd<VL>(a[0], a[1], phase[0], phase[1]);
  } else {
    static_assert(T == 4, "tiles of 2 or 4");
    vec e0, o0, e1, o1;
    split_even_odd<VL>(a[0], a[1], e0, o0);
    split_even_odd<VL>(a[2], a[3], e1, o1);
    split_even_odd<VL>(e0, e1, phase[0], phase[2]);
    split_even_odd<VL>(o0, o1, phase[1], phase[3]);
  }
}

// The inverse: out holds the T*VL floats taking lanes from phase 0, 1, .., T-1 in turn.
template <int VL, int T, typename vec>
inline void join_phases(const vec (&phase)[T], vec (&out)[T]) {
  if constexpr (T == 2) {
    interleave<VL>(phase[0], phase[1], out[0], out[1]);
  } else {
    static_assert(T == 4, "tiles of 2 or 4");
    vec a_lo, a_hi, b_lo, b_hi;  // phases 0 and 2, 1 and 3 in turn
    interleave<VL>(phase[0], phase[2], a_lo, a_hi);
    interleave<VL>(phase[1], phase[3], b_lo, b_hi);
    interleave<VL>(a_lo, b_lo, out[0], out[1]);
    interleave<VL>(a_hi, b_hi, out[2], out[3]);
  }
}

// The input and output transforms (each a function of its own: inlined into a block's code, the output transform's
// vectors went to the stack, 1.4x its time) run on VL tiles at a time, G groups of L = VL / G lanes: with G = 1 VL
// tiles of one tile row, with more groups (rows of at most L tiles: small maps) L tiles of each of G tile rows, the
// block's rows cut into G runs, one a group (rows 1.5 to 8 tiles wide would otherwise leave most lanes idle). A group's
// lanes take whole vectors of its T*L input floats (G <= T).
template <int VL, int T>
int lane_groups(int64_t tw) {
  int groups = 1;
  while (2 * groups <= T && VL / (2 * groups) >= tw) groups *= 2;
  return groups;
}

// The count lanes of v from lane `first` on to dst (first a multiple of L, 1 <= count <= L): on AVX-512 one masked
// store of all of v whose mask keeps those lanes, elsewhere the L lanes' part of v stored as the first of its own.
template <int VL, int L, typename vec>
inline void store_group(float* dst, const vec& v, int first, int64_t count) {
  if constexpr (L == VL) {
    store_first<VL>(dst, v, count);
#if defined(__AVX512F__)
  } else if constexpr (VL == 16) {
    // lanes below `first` are masked off: the address they would take is not accessed
    float* base = reinterpret_cast<float*>(reinterpret_cast<uintptr_t>(dst) - first * sizeof(float));
    const __mmask16 lanes = static_cast<__mmask16>(((1u << count) - 1) << first);
    _mm512_mask_storeu_ps(base, lanes, reinterpret_cast<const __m512&>(v));
#endif
  } else {
    typedef float part_vec __attribute__((vector_size(4 * L)));
    part_vec part;
    std::memcpy(&part, reinterpret_cast<const float*>(&v) + first, sizeof(part));
    store_first<L>(dst, part, count);
  }
}

// Copies n floats of a row from src to dst; returns their exponent_carry, ORed (its sign bit set where one of them is
// infinite or NaN).
inline uint32_t copy_checking(const float* src, int64_t n, float* dst) {
  uint32_t carries = 0;
  for (int64_t i = 0; i < n; ++i) {
    dst[i] = src[i];
    carries |= exponent_carry(src[i]);
  }
  return carries;
}

// V[xi][c][col] = (B^T d B)[xi] for channel c and the block's tiles, rows [row0, row0 + rows) of all images'
// tile rows (row = n * th + ty), VL tiles at a time in G groups (lane_groups; tile tx reads padded columns T*tx ..
// T*tx + T + 1): each of a tile row's alpha input rows, copied zero-padded into a row buffer of its group (a tile
// row's first two are the last two of the tile row above, whose buffers it takes over), gives the group's tiles'
// columns T*tx .. T*tx + T - 1 (split by phase from T*VL floats at T*tx0, the group's T*L of them) and T*tx + T, T*tx
// + T + 1 (the first two phases of those at T*tx0 + T), then d B along the row and B^T (d B) down the columns in
// registers; each group's last vector of a row is stored in part. Channels go to the threads by `schedule`.
template <int VL, int T, int G>
__attribute__((noinline)) void transform_inputs(const ConvShape& s, const Tiling& tl, const float* x, int64_t row0,
                                                int64_t rows, float* V, std::atomic<bool>& non_finite,
                                                Schedule schedule = Schedule::fixed) {
  typedef float vec __attribute__((vector_size(4 * VL)));
  typedef WinogradTile<T> Tile;
  constexpr int alpha = Tile::alpha, L = VL / G, group_vectors = T / G;
  static_assert(G <= T && G * L == VL, "whole vectors a group");
  const int64_t tw = tl.tw, cols = rows * tw, stride = s.C * cols, chunks = (tw + L - 1) / L;
  const int64_t run = (rows + G - 1) / G;  // tile rows a group
  const int64_t width = T * chunks * L + T, copied = std::min(s.W, width - s.pad_w);  // padded row buffers
  const auto channel = [&](int64_t c) {
    const int64_t position_stride = stride;  // a copy the stores cannot change
    std::vector<float> buf(static_cast<size_t>((G * alpha + 1) * width), 0.0f);  // alpha rows a group, zeros
    float* pr[G][alpha];
#pragma GCC unroll 8
    for (int g = 0; g < G; ++g)
#pragma GCC unroll 8
      for (int r = 0; r < alpha; ++r) pr[g][r] = &buf[(g * alpha + r) * width];
    const float* zeros = &buf[G * alpha * width];
    const float* in[G][alpha];  // each group's tile row's input rows, padded
    float* v[G];                // where each group's tiles go in V
    int64_t count[G];           // and how many of them (0: no row)
    uint32_t carries = 0;       // the copied floats' exponent_carry, ORed
    for (int64_t i = 0; i < run; ++i) {
#pragma GCC unroll 8
      for (int g = 0; g < G; ++g) {
        const int64_t row = row0 + g * run + i;
        count[g] = row < row0 + rows ? tw : 0;
        v[g] = V + c * cols + (row - row0) * tw;
        if (count[g] == 0) {
#pragma GCC unroll 8
          for (int r = 0; r < alpha; ++r) in[g][r] = zeros;
          continue;
        }
        const int64_t n = row / tl.th, ty = row % tl.th;
        const float* plane = x + (n * s.C + c) * s.H * s.W;
        const bool above = i > 0 && ty > 0;  // rows 0, 1 are rows T, T + 1 of the tile row above
        if (above) {
          std::swap(pr[g][0], pr[g][T]);
          std::swap(pr[g][1], pr[g][T + 1]);
          in[g][0] = in[g][T];
          in[g][1] = in[g][T + 1];
        }
        for (int r = above ? 2 : 0; r < alpha; ++r) {
          const int64_t h = T * ty - s.pad_h + r;
          if (h < 0 || h >= s.H) {
            in[g][r] = zeros;
            continue;
          }
          const float* src = plane + h * s.W;
          carries |= copy_checking(src, copied, pr[g][r] + s.pad_w);
          in[g][r] = pr[g][r];
        }
      }
      for (int64_t chunk = 0; chunk < chunks; ++chunk) {
        const int64_t t0 = chunk * L;
        vec hb[alpha][alpha];  // hb[r][j]: input row r times B, column j
#pragma GCC unroll 8
        for (int r = 0; r < alpha; ++r) {
          vec a[T], an[T], d[alpha], first[T], next[T];
#pragma GCC unroll 8
          for (int u = 0; u < T; ++u) {
            const float* p = in[u / group_vectors][r] + T * t0 + u % group_vectors * VL;
            std::memcpy(&a[u], p, sizeof(vec));
            std::memcpy(&an[u], p + T, sizeof(vec));
          }
          split_phases<VL, T>(a, first);   // columns T*tx .. T*tx + T - 1
          split_phases<VL, T>(an, next);   // T*tx + T, T*tx + T + 1
#pragma GCC unroll 8
          for (int q = 0; q < T; ++q) d[q] = first[q];
          d[T] = next[0];
          d[T + 1] = next[1];
          Tile::input(d, hb[r]);
        }
        float* dst[G];     // the group's first tile of the chunk at position 0
        int64_t tiles[G];  // and its tiles in the chunk
#pragma GCC unroll 8
        for (int g = 0; g < G; ++g) {
          dst[g] = v[g] + t0;
          tiles[g] = std::min<int64_t>(L, count[g] - t0);
        }
#pragma GCC unroll 8
        for (int j = 0; j < alpha; ++j) {
          vec col[alpha], out[alpha];
#pragma GCC unroll 8
          for (int r = 0; r < alpha; ++r) col[r] = hb[r][j];
          Tile::input(col, out);
#pragma GCC unroll 8
          for (int g = 0; g < G; ++g)
            if (tiles[g] > 0) {
#pragma GCC unroll 8
              for (int k = 0; k < alpha; ++k)
                store_group<VL, L>(dst[g] + (alpha * k + j) * position_stride, out[k], g * L, tiles[g]);
            }
        }
      }
    }
    if (carries & 0x80000000u) non_finite.store(true, std::memory_order_relaxed);
  };
  parallel_for(s.C, threads_for(s.C * cols * 4 * alpha * alpha, 1 << 16), channel, schedule);
}

// y tiles = A^T M A (divided by Tile::scale) for filter k's tiles of the block, VL tiles at a time in G groups as
// transform_inputs takes them, + bias, ReLU, written where they lie inside the P x Q output (each group's last vector
// of a row stored in part). M holds at least VL - 1 floats past its last product, which a group's last vector of a
// row may read. Filters [first_filter, end_filter) only.
template <int VL, int T, int G>
__attribute__((noinline)) void transform_outputs(const ConvShape& s, const Tiling& tl, const float* M, int64_t row0,
                                                 int64_t rows, const float* bias, bool relu, float* y,
                                                 int64_t first_filter, int64_t end_filter) {
  typedef float vec __attribute__((vector_size(4 * VL)));
  typedef WinogradTile<T> Tile;
  constexpr int alpha = Tile::alpha, L = VL / G, group_vectors = T / G;
  const int64_t tw = tl.tw, cols = rows * tw, stride = s.K * cols, chunks = (tw + L - 1) / L;
  const int64_t run = (rows + G - 1) / G;
  const int64_t filters = end_filter - first_filter;
  parallel_for(filters, threads_for(filters * cols * 4 * alpha * alpha, 1 << 16), [&](int64_t f) {
    const int64_t k = first_filter + f;
    const float b = bias ? bias[k] : 0.0f;
    const bool apply_relu = relu;
    const int64_t position_stride = stride, K = s.K, P = s.P, Q = s.Q;  // copies the stores cannot change
    for (int64_t i = 0; i < run; ++i) {
      const float* m[G];   // each group's tile row's products (a row past the block: the first group's, not stored)
      float* out_row[G];   // and its first output row
      int64_t out_rows[G];  // of how many (0: no tile row)
#pragma GCC unroll 8
      for (int g = 0; g < G; ++g) {
        const int64_t row = row0 + g * run + i, n = row / tl.th, ty = row % tl.th;
        const bool active = row < row0 + rows;
        m[g] = M + k * cols + ((active ? row : row0 + i) - row0) * tw;
        out_row[g] = active ? y + ((n * K + k) * P + T * ty) * Q : y;
        out_rows[g] = active ? std::min<int64_t>(T, P - T * ty) : 0;
      }
      for (int64_t chunk = 0; chunk < chunks; ++chunk) {
        const int64_t t0 = chunk * L;
        vec at[T][alpha];  // at[i][j]: row i of A^T M, column j
#pragma GCC unroll 8
        for (int j = 0; j < alpha; ++j) {
          vec col[alpha], out[T];
#pragma GCC unroll 8
          for (int r = 0; r < alpha; ++r) {
            const int64_t at_r = (alpha * r + j) * position_stride + t0;
            if constexpr (G == 1) {
              std::memcpy(&col[r], m[0] + at_r, sizeof(vec));
            } else {  // each group's L lanes
              float lanes[VL];
#pragma GCC unroll 8
              for (int g = 0; g < G; ++g) std::memcpy(lanes + g * L, m[g] + at_r, L * sizeof(float));
              std::memcpy(&col[r], lanes, sizeof(vec));
            }
          }
          Tile::output(col, out);
#pragma GCC unroll 8
          for (int e = 0; e < T; ++e) at[e][j] = out[e];
        }
#pragma GCC unroll 8
        for (int e = 0; e < T; ++e) {
          vec phase[T], out[T];
          Tile::output(at[e], phase);
#pragma GCC unroll 8
          for (int q = 0; q < T; ++q) {
            if constexpr (Tile::scale != 1.0f) phase[q] /= Tile::scale;  // correctly rounded: integers stay exact
            phase[q] += b;
            if (apply_relu) phase[q] = relu_keep_nan_lanes<VL>(phase[q]);
          }
          join_phases<VL, T>(phase, out);
#pragma GCC unroll 8
          for (int g = 0; g < G; ++g) {
            if (e >= out_rows[g]) continue;
            float* dst = out_row[g] + e * Q + T * t0;
            const int64_t left = Q - T * t0;  // outputs of the row from dst on
            for (int u = 0; u < group_vectors && left > u * VL; ++u)
              store_first<VL>(dst + u * VL, out[g * group_vectors + u], std::min<int64_t>(VL, left - u * VL));
          }
        }
      }
    }
  });
}

// Calls body(std::integral_constant<int, G>) for the transforms' G = lane_groups<VL, T>(tw); F(2x2, 3x3) in groups of
// one (grouped, 1.5-8 tiles wide rows of F(2x2, 3x3) went 0.98-0.99x as fast: their transforms' time goes into the
// rows' copies more than into the vectors).
template <int VL, int T, typename Body>
void with_lane_groups(int64_t tw, const Body& body) {
  if constexpr (T == 2) {
    body(std::integral_constant<int, 1>());
  } else {
    const int groups = lane_groups<VL, T>(tw);
    if (groups == 1) body(std::integral_constant<int, 1>());
    if (groups == 2) body(std::integral_constant<int, 2>());
    if (groups == 4) body(std::integral_constant<int, 4>());
  }
}

// Where all the tiles make one block, not a thread's (per_thread; batch 1 on maps up to 28 x 28 and the like), each
// thread with at least this many filters takes a run of them (filter_shares): it transforms its filters, all the
// inputs into a V of its own, and computes its filters' products and outputs, so that nothing one core
// writes is read by the other. Before, the transforms went to the threads by channel and by filter, and the products
// by position (by filters from 256 of them), so that V, U and M crossed between the cores; the host of a shared AMD
// EPYC Zen 4 ran the two vCPUs far apart in some minutes (a round trip between them 310-350 ns instead of 50-90),
// and there a 2 thread forward of 192 -> 192 on 14 x 14 at batch 1 took 0.91-0.92 ms, more than on 1 thread (0.84),
// against 0.44 in the other minutes. Each build in its own process, alternated, median ms, 2 threads, batch-1
// forward, near / far minutes (5 runs): 192 -> 192 on 14 x 14 0.44 / 0.91-0.92 -> 0.45-0.48 in both, 256 -> 256 on
// 14 x 14 (ResNet's res4 layers) 0.77 / 1.08-1.11 -> 0.75-0.80; 512 -> 512 on 14 x 14 3.3-3.8 -> 3.3-3.6 (mostly the
// filters' transform). Fewer filters a thread pay more for transforming all the inputs than they save: 128 -> 128 on
// 28 x 28 0.43 / 0.95 -> 0.48-0.50, 512 -> 64 on 14 x 14 0.49 / 1.16-1.19 -> 0.61-0.65, 128 -> 128 on 16 x 16 0.29
// -> 0.32-0.34. Several blocks keep their transforms on the threads, and their products go by position (by filters
// before from 256 of them; both builds in one process, calls alternated, median of per-pair time ratios, 2 threads:
// res5a 3x3 n=32 1.06x, 512 -> 512 on 14 x 14 n=8 1.04x; filter shares there 0.91x and 1.02x), and so do the
// products of one block with fewer filters. A batch of 4 on 14 x 14 maps, 256 -> 256, one block: 1.28x.
constexpr int64_t kFilterShare = 96;

// F(T x T, 3x3), VL floats a vector.
template <int VL, int T>
bool winograd_forward_tiles(const ConvShape& s, const float* x, const float* w, const float* bias, bool relu,
                            float* y, ConvWeightCache* cache) {
  constexpr int64_t positions = WinogradTile<T>::alpha * WinogradTile<T>::alpha;
  const Tiling tl{(s.P + T - 1) / T, (s.Q + T - 1) / T};
  const int64_t tile_rows = s.N * tl.th, row_floats = positions * (s.C + s.K) * tl.tw;
  const int nt = threads_for(s.N * s.K * s.C * s.P * s.Q);
  const int64_t big_rows = std::clamp<int64_t>(kThreadBlockFloats / row_floats, 1, tile_rows);
  const int64_t thread_rows = tile_rows >= 2 * nt * big_rows ? big_rows : tile_rows / (2 * nt);
  const bool per_thread = positions * s.C * s.K <= kThreadFilterFloats && nt > 1 &&
                          (thread_rows == big_rows || thread_rows * tl.tw * T * T >= 4 * kMinThreadBlockTiles);
  const int64_t block_rows =
      per_thread ? thread_rows : std::clamp<int64_t>(kBlockFloats / row_floats, 1, tile_rows);
  const int64_t max_cols = block_rows * tl.tw;
  const PackedA a{choose_tile(kernels().gemm, s.K, max_cols), s.K, s.C};
  const int64_t mr = a.tile.mr, panels = (s.K + mr - 1) / mr;
  std::atomic<bool> non_finite{false};  // found in x or w: the caller computes y another way
  // one block's filters [k0, k1), with the transformed filters U: its transforms on the threads (inputs by channel,
  // outputs by filter), its products spread over them by position (each product serial); in a task of its own
  // (per_thread, filter_shares) all of it serially
  const auto block = [&](int64_t row0, const float* U, float* V, float* M, int64_t k0, int64_t k1) {
    if (non_finite.load(std::memory_order_relaxed)) return;
    const int64_t rows = std::min(block_rows, tile_rows - row0), cols = rows * tl.tw;
    with_lane_groups<VL, T>(tl.tw, [&](auto groups) {
      transform_inputs<VL, T, decltype(groups)::value>(s, tl, x, row0, rows, V, non_finite);
    });
    parallel_for(positions, threads_for(positions * (k1 - k0) * s.C * cols), [&](int64_t xi) {
      sgemm_rows(a, U + xi * a.floats(), k0, k1, cols, MatrixB(Trans::no, V + xi * s.C * cols, cols), 0.0f,
                 M + xi * s.K * cols, cols);
    });
    with_lane_groups<VL, T>(tl.tw, [&](auto groups) {
      transform_outputs<VL, T, decltype(groups)::value>(s, tl, M, row0, rows, bias, relu, y, k0, k1);
    });
  };
  const int64_t u_floats = positions * a.floats();
  ConvWeightCache::Packed kept;  // the transformed filters kept by the cache (their layout follows the tile's rows)
  if (cache)
    kept = cache->get(T == 4 ? ConvPacking::winograd4 : ConvPacking::winograd2, mr, u_floats,
                      [&](float* u) { transform_filters<T>(s, w, a, u, non_finite, 0, panels); });
  const bool own_u = !kept && per_thread && u_floats <= kOwnFilterFloats;
  const bool filter_shares = !per_thread && nt > 1 && s.K >= kFilterShare * nt && tile_rows <= block_rows;
  const CachedBlock<float> U(own_u || kept ? 0 : u_floats);  // shared
  if (!own_u && !kept && !filter_shares) transform_filters<T>(s, w, a, U.get(), non_finite, 0, panels);
  const float* shared_u = kept ? kept.get() : U.get();
  if (per_thread) {
    // each thread its share of the blocks first (Shares), its own V and M and, own_u, its own U (all filters
    // transformed by itself): nothing one core writes is read by the other. (One task a thread; a thread given two
    // would transform the filters again and find its share taken: the same results.)
    Shares shares((tile_rows + block_rows - 1) / block_rows, nt);
    parallel_for(nt, nt, [&](int64_t) {
      const CachedBlock<float> own(own_u ? u_floats : 0), V(positions * s.C * max_cols),
          M(positions * s.K * max_cols + VL);
      if (own_u) transform_filters<T>(s, w, a, own.get(), non_finite, 0, panels);
      const float* filters = own_u ? own.get() : shared_u;
      take_shares(shares, 1, 1,
                  [&](int64_t b, int64_t) { block(b * block_rows, filters, V.get(), M.get(), 0, s.K); });
    });
    return !non_finite;
  }
  if (filter_shares) {  // each thread a run of the filters' panels (the first panels % nt threads one more)
    parallel_for(nt, nt, [&](int64_t t) {
      const auto first_panel = [&](int64_t u) { return u * (panels / nt) + std::min<int64_t>(u, panels % nt); };
      const int64_t p0 = first_panel(t), p1 = first_panel(t + 1), k0 = p0 * mr, k1 = std::min(s.K, p1 * mr);
      if (!kept) transform_filters<T>(s, w, a, U.get(), non_finite, p0, p1);
      // M laid out for all the filters (sgemm_rows writes rows k0 to k1 where they lie in the whole product): the
      // output transform's last vector of a row reads up to VL - 1 floats past it, here from a row it did not write
      // (read, never stored)
      const CachedBlock<float> V(positions * s.C * max_cols), M(positions * s.K * max_cols + VL);
      block(0, shared_u, V.get(), M.get(), k0, k1);
    });
    return !non_finite;
  }
  const CachedBlock<float> V(positions * s.C * max_cols), M(positions * s.K * max_cols + VL);
  for (int64_t row0 = 0; row0 < tile_rows; row0 += block_rows) block(row0, shared_u, V.get(), M.get(), 0, s.K);
  return !non_finite;
}

// The weight gradient by Winograd turned around, F(2x2, 3x3) first. The forward's tile Y = A^T [(G g G^T) . (B^T d B)]
// A is bilinear in the filter g and the input tile d, so for a loss L with dL/dY = dY (the tile's 2x2 output gradient)
//   dL/dg = G^T [ (A dY A^T) . (B^T d B) ] G,
// summed over the tiles: dW[k][c] = G^T M G with M_xi (K x C) = D_xi (K x tiles) V_xi^T (tiles x C), one GEMM per
// position xi, D = A dY A^T the filters' transformed output gradients (transform_output_gradients) and V = B^T d B the
// channels' transformed inputs (transform_inputs). 16 multiplies per 2x2 outputs, channel and filter instead of 36
// (the im2col product's). G's halves are scaled out (G_s = 2 G: dW = G_s^T M G_s / 4), so that every transform adds
// and subtracts: small-integer data stays exact while the products' sums stay below 2^24. F(4x4, 3x3) the same way
// with WinogradTile<4>'s G_s and A_e: dW = G_s^T [ (A_e dY A_e^T) . (B^T d B) ] G_s / 36, 36 multiplies per 4x4
// outputs (exact on small integers while the sums, in sixteenths, stay below 2^24).

// dY's tiles, D[xi][k][col] = (A dY A^T)[xi] (F(2x2, 3x3): A = [1 0; 1 1; 1 -1; 0 -1], its A^T turned; F(4x4): A_e)
// for filter k and the block's tiles (rows [row0, row0 + rows) of all images' tile rows, as transform_inputs takes
// them), VL tiles at a time: each of a tile row's T dy rows copied into a zero-padded row buffer (a row past P:
// zeros), its columns split by phase (column modulo T), then A along the rows and down the columns.
template <int VL, int T>
__attribute__((noinline)) void transform_output_gradients(const ConvShape& s, const Tiling& tl, const float* dy,
                                                          int64_t row0, int64_t rows, float* D,
                                                          std::atomic<bool>& non_finite) {
  typedef float vec __attribute__((vector_size(4 * VL)));
  typedef WinogradTile<T> Tile;
  constexpr int alpha = Tile::alpha;
  const int64_t tw = tl.tw, cols = rows * tw, chunks = (tw + VL - 1) / VL, width = T * chunks * VL;
  const auto filter = [&](int64_t k) {
    const int64_t position_stride = s.K * cols, P = s.P, Q = s.Q;  // copies the stores cannot change
    std::vector<float> buf(static_cast<size_t>(T * width), 0.0f);
    uint32_t carries = 0;  // the copied floats' exponent_carry, ORed
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t row = row0 + i, n = row / tl.th, ty = row % tl.th;
      const float* plane = dy + (n * s.K + k) * P * Q;
      for (int r = 0; r < T; ++r) {
        float* dst = &buf[r * width];
        const int64_t p = T * ty + r;
        if (p >= P) {
          std::fill(dst, dst + Q, 0.0f);
          continue;
        }
        carries |= copy_checking(plane + p * Q, Q, dst);
      }
      float* d = D + k * cols + i * tw;
      for (int64_t chunk = 0; chunk < chunks; ++chunk) {
        const int64_t t0 = chunk * VL;
        vec h[T][alpha];  // h[r][j]: dy row r times A^T (F(4x4): A_e^T), column j
#pragma GCC unroll 4
        for (int r = 0; r < T; ++r) {
          vec a[T], g[T];
#pragma GCC unroll 4
          for (int u = 0; u < T; ++u) std::memcpy(&a[u], &buf[r * width + T * t0 + u * VL], sizeof(vec));
          split_phases<VL, T>(a, g);  // g[q]: column T tx + q of the VL tiles
          Tile::gradient(g, h[r]);
        }
        const int64_t tiles = std::min<int64_t>(VL, tw - t0);
#pragma GCC unroll 6
        for (int j = 0; j < alpha; ++j) {
          vec g[T], out[alpha];
#pragma GCC unroll 4
          for (int r = 0; r < T; ++r) g[r] = h[r][j];
          Tile::gradient(g, out);
#pragma GCC unroll 6
          for (int e = 0; e < alpha; ++e) store_first<VL>(d + (alpha * e + j) * position_stride + t0, out[e], tiles);
        }
      }
    }
    if (carries & 0x80000000u) non_finite.store(true, std::memory_order_relaxed);
  };
  parallel_for(s.K, threads_for(s.K * cols * T * T * alpha * alpha, 1 << 16), filter, Schedule::as_free);
}

// dw = G_s^T M G_s / weight_scale for every filter and channel (F(T x T, 3x3)'s G_s and scale: WinogradTile),
// M[xi][k][c] the products summed over all tiles (filters KP apart, channels CP: at least K and C): the division is
// correctly rounded (F(2x2): by 4, exact).
template <int T>
void weight_gradients_from_sums(const ConvShape& s, const float* M, int64_t KP, int64_t CP, float* dw) {
  typedef WinogradTile<T> Tile;
  constexpr int alpha = Tile::alpha;
  const int64_t K = s.K, C = s.C;
  parallel_for(K, threads_for(K * C * alpha * alpha * 4, 1 << 16), [&](int64_t k) {
    for (int64_t c = 0; c < C; ++c) {
      float m[alpha][alpha], t[3][alpha];
      for (int xi = 0; xi < alpha * alpha; ++xi) m[xi / alpha][xi % alpha] = M[(xi * KP + k) * CP + c];
      for (int j = 0; j < alpha; ++j) {  // G_s^T M, down the columns
        float column[alpha], taps[3];
        for (int i = 0; i < alpha; ++i) column[i] = m[i][j];
        Tile::filter_gradient(column, taps);
        for (int r = 0; r < 3; ++r) t[r][j] = taps[r];
      }
      float* out = dw + (k * C + c) * 9;
      for (int r = 0; r < 3; ++r) {  // (G_s^T M) G_s, along the rows
        float taps[3];
        Tile::filter_gradient(t[r], taps);
        for (int j = 0; j < 3; ++j) out[3 * r + j] = taps[j] / Tile::weight_scale;
      }
    }
  });
}

// The weight gradient by F(T x T, 3x3), VL floats a vector. Blocks of whole tile rows (evened out), in order: each
// block's transforms on the threads (by channel, by filter) and its alpha^2 products spread over them (each
// product then serial), adding into M (the first block writing it), all three taken by the threads as they are free
// (Schedule::as_free); then dw from M. Returns false, dw untouched, where x or dy holds an infinity or a NaN.
template <int VL, int T>
bool winograd_weight_tiles(const ConvShape& s, const float* dy, const float* x, float* dw) {
  constexpr int64_t positions = (T + 2) * (T + 2);
  const Tiling tl{(s.P + T - 1) / T, (s.Q + T - 1) / T};
  const int64_t tile_rows = s.N * tl.th, row_floats = positions * (s.C + s.K) * tl.tw;
  const int64_t least_rows = std::clamp<int64_t>(
      std::max(kWeightBlockFloats / row_floats, (kMinWeightBlockTiles + tl.tw - 1) / tl.tw), 1, tile_rows);
  const int64_t blocks = tile_rows / least_rows, block_rows = (tile_rows + blocks - 1) / blocks;  // evened out
  const int64_t max_cols = block_rows * tl.tw;
  const CachedBlock<float> V(positions * s.C * max_cols), D(positions * s.K * max_cols), M(positions * s.K * s.C);
  std::atomic<bool> non_finite{false};
  for (int64_t row0 = 0; row0 < tile_rows; row0 += block_rows) {
    const int64_t rows = std::min(block_rows, tile_rows - row0), cols = rows * tl.tw;
    transform_inputs<VL, T, 1>(s, tl, x, row0, rows, V.get(), non_finite, Schedule::as_free);
    transform_output_gradients<VL, T>(s, tl, dy, row0, rows, D.get(), non_finite);
    if (non_finite) return false;
    const float beta = row0 == 0 ? 0.0f : 1.0f;
    parallel_for(
        positions, threads_for(positions * s.K * s.C * cols),
        [&](int64_t xi) {
          sgemm(Trans::no, s.K, s.C, cols, 1.0f, D.get() + xi * s.K * cols, cols,
                MatrixB(Trans::yes, V.get() + xi * s.C * cols, cols), beta, M.get() + xi * s.K * s.C, s.C,
                Epilogue{});
        },
        Schedule::as_free);
  }
  weight_gradients_from_sums<T>(s, M.get(), s.K, s.C, dw);
  return true;
}

// conv2d_backward_weight_winograd_<isa> (conv.h), VL floats a vector: F(4x4, 3x3) where tile is 4, else F(2x2, 3x3).
template <int VL>
bool winograd_weight(const ConvShape& s, int tile, const float* dy, const float* x, float* dw) {
  return tile == 4 ? winograd_weight_tiles<VL, 4>(s, dy, x, dw) : winograd_weight_tiles<VL, 2>(s, dy, x, dw);
}

// The vector of lo's lanes, then hi's (two vectors of N / 2 floats; the type deduced: GCC 12 took a function
// template's own vector typedefs for floats in __builtin_shufflevector).
template <int N, typename Part>
inline auto join_halves(Part lo, Part hi) {
  if constexpr (N == 16) {
    return __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  } else {
    static_assert(N == 8, "8 or 16 lanes");
    return __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7);
  }
}

// The fused kernel's transformed filters U[xi][c][k] = (G g G^T)[xi] for g = w[k][c] (F(T x T, 3x3): alpha^2
// positions xi), for the filters [k_lo, k_hi) (multiples of VL up to KP, a multiple of VL; zeros past K): w's taps
// regrouped with the filters along rows (wt[c][tap][k]: w's rows of 9C floats transposed by the ISA's transposing
// packer, which zeroes the rows past K), then transformed VL filters at a time; channels on the threads (serial inside
// a parallel region).
template <int VL, int T>
void fused_filters(const ConvShape& s, const float* w, int64_t KP, int64_t k_lo, int64_t k_hi, float* U) {
  typedef float vec __attribute__((vector_size(4 * VL)));
  typedef WinogradTile<T> Tile;
  constexpr int alpha = Tile::alpha;
  const int64_t C = s.C, width = k_hi - k_lo, count = std::clamp<int64_t>(s.K - k_lo, 0, width);
  const CachedBlock<float> regrouped(9 * C * width);
  float* wt = regrouped.get();
  std::vector<int64_t> rows(count);  // filter k_lo + i's row of w
  for (int64_t i = 0; i < count; ++i) rows[i] = (k_lo + i) * C * 9;
  const PackTransposedKernel pack_transposed = kernels().gemm.pack_transposed;
  parallel_for(C, threads_for(alpha * alpha * C * width * 4, 1 << 15), [&](int64_t c) {
    pack_transposed(w + c * 9, rows.data(), count, width, 9, 1.0f, wt + c * 9 * width);
    for (int64_t k0 = 0; k0 < width; k0 += VL) {
      vec g[9], t[alpha][3];
      for (int m = 0; m < 9; ++m) std::memcpy(&g[m], wt + (c * 9 + m) * width + k0, sizeof(vec));
      for (int j = 0; j < 3; ++j) {  // G g
        vec col[alpha];
        Tile::filter(g[j], g[3 + j], g[6 + j], col);
        for (int i = 0; i < alpha; ++i) t[i][j] = col[i];
      }
      for (int i = 0; i < alpha; ++i) {  // (G g) G^T
        vec row[alpha];
        Tile::filter(t[i][0], t[i][1], t[i][2], row);
        for (int j = 0; j < alpha; ++j)
          std::memcpy(U + ((i * alpha + j) * C + c) * KP + k_lo + k0, &row[j], sizeof(vec));
      }
    }
  });
}

// F(T x T, 3x3) fused (T = 2 or 4: winograd_fused_forward chooses), for layers of few channels and filters
// (conv2d_winograd_fused_applies: ResNet-20's 16 to 64), where the products as GEMMs (16 x 16 by 16 x tiles) are too
// small for the engine and V and M written for a block and read back cost more than the multiplies saved. Each task
// (an image; where images are fewer than threads, a band of an image's vector rows; where those are fewer still, a run
// of the filters of a band) first copies the padded rows it reads, zero-padded, each row split by column phase (padded
// column v of a row at (v % T) * Wq + v / T), so that the alpha = T + 2 columns of VL tiles' input tiles are alpha
// plain loads. Then, per vector of tiles (G tile rows of L = VL / G tiles each: two or four tile rows where a row
// holds at most half or a quarter of a vector of tiles; kSlots vectors at once), in L1 and L2: V[xi][c] = (B^T d
// B)[xi] for every channel and each of the alpha^2 positions xi, M[xi][k] = sum over c of U[xi][c][k] V[xi][c] in
// registers (VL / kSlots filters at a time, U broadcast), then y = A^T M A (divided by Tile::scale) + bias, ReLU. Each
// output's sums are formed in the same order whatever the thread count. Returns false, y unfinished, where x or w
// holds an infinity or a NaN. Workspace, with KP the filters rounded up to VL: U (alpha^2 x C x KP floats; kept by
// the cache) and the filters regrouped for it (9 x C x KP), and per task the copy of its rows (C x (T x its vector
// rows x G + 2) rows of T x (ceil(tw / L) x L + 1) floats, tw = ceil(Q / T) tiles a row) and V and M (kSlots x
// alpha^2 x (C + KP + 2) vectors).
constexpr int64_t kSplitAhead = 1024;  // floats ahead of the image row being copied, prefetched (else its misses: 20%)
template <int VL, int T, int G>
bool winograd_fused_groups(const ConvShape& s, const float* x, const float* w, const float* bias, bool relu, float* y,
                           ConvWeightCache* cache) {
  typedef float vec __attribute__((vector_size(4 * VL)));
  typedef float half __attribute__((vector_size(2 * VL)));
  typedef float quarter __attribute__((vector_size(VL)));
  typedef WinogradTile<T> Tile;
  constexpr int alpha = Tile::alpha, positions = alpha * alpha;
  constexpr int KB = VL, L = VL / G;  // filters a block of accumulators, tiles a lane group
  // vectors of tiles whose products run together (products): two on AVX2 where a vector holds one tile row (G = 1).
  // Both builds in one process, calls alternated, median of per-pair time ratios, AMD Zen 3, F(2x2), forward at
  // n=128, 1 / 2 threads: 16 channels on 32 x 32 1.15 / 1.17x, 32 on 16 x 16 1.19 / 1.13x, 64 on 16 x 16 (n=32)
  // 1.00x; but with two tile rows a vector (8 x 8 maps) 0.93-1.09x (64 channels), 0.95x (16), 0.97x (32). AVX-512: one
  // (AMD Zen 4, where the broadcasts fold into the FMAs: two for one tile row a vector 0.98-1.02x, for up to two
  // 1.00-1.03x). F(4x4)'s AVX2 kernel pairs its vectors by the same rule, not measured apart on Zen 3.
  constexpr int kSlots = VL == 8 && G == 1 ? 2 : 1;
  const int64_t C = s.C, K = s.K, KP = (K + KB - 1) / KB * KB, H = s.H, W = s.W, P = s.P, Q = s.Q;
  const int64_t th = (P + T - 1) / T, tw = (Q + T - 1) / T;
  const int64_t chunks = (tw + L - 1) / L, vector_rows = (th + G - 1) / G;
  const int64_t Wq = chunks * L + 1, row_floats = T * Wq;
  // V[xi][c] and M[xi][k], positions VS and MS vectors apart (one more than C and KP: 1 or 4 KiB apart, the
  // positions of a channel or filter fell into few cache sets)
  const int64_t VS = C + 1, MS = KP + 1;
  if (!cache && any_non_finite(w, K * C * 9)) return false;  // a cache is given finite weights only (conv.h)
  const auto transform = [&](float* U) { fused_filters<VL, T>(s, w, KP, 0, KP, U); };
  ConvWeightCache::Packed kept;
  if (cache)
    kept = cache->get(T == 4 ? ConvPacking::winograd_fused4 : ConvPacking::winograd_fused, KP, positions * C * KP,
                      transform);
  // tasks: whole images, or where there are fewer images than threads, bands of each image's vector rows (each task
  // copies the padded rows its band reads), and where those are fewer still, runs of each band's blocks of filters
  // (each transforming the band's inputs). One image whose filters are transformed at this call (not kept) runs in
  // runs of its filters, each task transforming its own filters' U: transformed by all the threads first, each task
  // then read the other core's half (2 threads ran ResNet-20's 64 -> 64 3x3 on 8 x 8 slower than 1).
  const int nt = threads_for(s.N * K * C * P * Q * 9);  // as the direct kernels count their work
  const bool own_filters = !kept && s.N == 1 && nt > 1 && KP / KB > 1;
  const int64_t bands = own_filters ? 1 : std::min<int64_t>(vector_rows, (nt + s.N - 1) / s.N);
  const int64_t band_rows = (vector_rows + bands - 1) / bands;
  const int64_t k_parts = std::min<int64_t>(KP / KB, (nt + s.N * bands - 1) / (s.N * bands));
  const int64_t part_blocks = (KP / KB + k_parts - 1) / k_parts;
  const CachedBlock<float> own(kept ? 0 : positions * C * KP);
  if (!kept && !own_filters) transform(own.get());
  float* const U_own = own.get();
  const float* U = kept ? kept.get() : U_own;
  std::atomic<bool> non_finite{false};
  // padded rows [r0, r1) of image n, column-split, into xs (channel c's at c * band_plane, row r at (r - r0) *
  // row_floats); returns false where they hold an infinity or a NaN
  const auto split_rows = [&](int64_t n, int64_t r0, int64_t r1, float* xs) {
    typedef uint32_t uvec __attribute__((vector_size(4 * VL)));
    const int64_t band_plane = (r1 - r0) * row_floats;
    int64_t phase_at[T];  // image column u0 + j + T i (u0 a multiple of T) goes to phase_at[j] + u0 / T + i
    for (int j = 0; j < T; ++j) phase_at[j] = ((s.pad_w + j) % T) * Wq + (s.pad_w + j) / T;
    uvec carries{};  // the image floats' exponent_carry, ORed
    for (int64_t c = 0; c < C; ++c)
      for (int64_t r = r0; r < r1; ++r) {
        float* row = xs + c * band_plane + (r - r0) * row_floats;
        std::fill(row, row + row_floats, 0.0f);
        const int64_t h = r - s.pad_h;
        if (h < 0 || h >= H) continue;
        const float* src = x + ((n * C + c) * H + h) * W;
        for (int64_t u = 0; u < W; u += 16) __builtin_prefetch(src + kSplitAhead + u);
        for (int64_t u0 = 0; u0 < W; u0 += T * VL) {
          const uint64_t left = W - u0;  // image columns from u0 on
          vec a[T], phase[T];  // phase[j]: image columns u0 + j, u0 + j + T, ...
#pragma GCC unroll 4
          for (int i = 0; i < T; ++i) {
            a[i] = left > uint64_t(i) * VL ? load_first<VL, vec>(src + u0 + i * VL, std::min<int64_t>(left - i * VL, VL))
                                           : vec{};
            uvec bits;
            std::memcpy(&bits, &a[i], sizeof(vec));
            carries |= exponent_carry_lanes<VL>(bits);
          }
          split_phases<VL, T>(a, phase);
#pragma GCC unroll 4
          for (int j = 0; j < T; ++j) {
            const int64_t count = std::min<int64_t>(VL, (left + T - 1 - j) / T);
            if (count > 0) store_first<VL>(row + phase_at[j] + u0 / T, phase[j], count);
          }
        }
      }
    uint32_t lanes[VL];
    std::memcpy(lanes, &carries, sizeof(lanes));
    return std::none_of(lanes, lanes + VL, [](uint32_t c) { return (c & 0x80000000u) != 0; });
  };
  // V = B^T d B of the G tile rows from vr * G on, tiles of chunk `chunk` (the padded rows from r0 on in xs,
  // split_rows): positions x VS vectors
  const auto tile_inputs = [&](const float* xs, int64_t band_plane, int64_t r0, int64_t vr, int64_t chunk, vec* V) {
    const int64_t t0 = chunk * L;
    for (int64_t c = 0; c < C; ++c) {
      const float* xc = xs + c * band_plane + (T * vr * G - r0) * row_floats + t0;
      vec hb[alpha][alpha];  // hb[r][j]: input row r times B, column j
#pragma GCC unroll 6
      for (int r = 0; r < alpha; ++r) {
        vec d[alpha];
#pragma GCC unroll 6
        for (int q = 0; q < alpha; ++q) {  // padded columns T t + q: phase q % T, index t + q / T
          const float* at_g = xc + r * row_floats + (q % T) * Wq + q / T;  // group g's tile row: T g rows down
          if constexpr (G == 1) {
            std::memcpy(&d[q], at_g, sizeof(vec));
          } else if constexpr (G == 2) {
            half lo, hi;
            std::memcpy(&lo, at_g, sizeof(half));
            std::memcpy(&hi, at_g + T * row_floats, sizeof(half));
            d[q] = join_halves<VL>(lo, hi);
          } else {
            quarter g0, g1, g2, g3;
            std::memcpy(&g0, at_g, sizeof(quarter));
            std::memcpy(&g1, at_g + T * row_floats, sizeof(quarter));
            std::memcpy(&g2, at_g + 2 * T * row_floats, sizeof(quarter));
            std::memcpy(&g3, at_g + 3 * T * row_floats, sizeof(quarter));
            d[q] = join_halves<VL>(join_halves<VL / 2>(g0, g1), join_halves<VL / 2>(g2, g3));
          }
        }
        Tile::input(d, hb[r]);
      }
#pragma GCC unroll 6
      for (int j = 0; j < alpha; ++j) {
        vec col[alpha], out[alpha];
#pragma GCC unroll 6
        for (int r = 0; r < alpha; ++r) col[r] = hb[r][j];
        Tile::input(col, out);
#pragma GCC unroll 6
        for (int i = 0; i < alpha; ++i) V[(i * alpha + j) * VS + c] = out[i];
      }
    }
  };
  // M[xi][k] = sum over c of U[xi][c][k] V[xi][c] for the filters [k_lo, k_hi), for `slots` vectors of tiles (slot
  // s's V and M positions x VS and positions x MS vectors on), KB / slots filters a block: two vectors share each
  // broadcast of U (AVX2: per channel 6 loads for 8 FMAs, against 9 for one vector of 8 filters)
  const auto products = [&](auto slots, int64_t k_lo, int64_t k_hi, const vec* V, vec* M) {
    constexpr int S = decltype(slots)::value, F = KB / S;
    for (int xi = 0; xi < positions; ++xi)
      for (int64_t k0 = k_lo; k0 < k_hi; k0 += F) {
        vec acc[S][F];
#pragma GCC unroll 2
        for (int i = 0; i < S; ++i)
#pragma GCC unroll 16
          for (int j = 0; j < F; ++j) acc[i][j] = vec{};
        const float* u = U + xi * C * KP + k0;
        for (int64_t c = 0; c < C; ++c) {
          vec v[S];
#pragma GCC unroll 2
          for (int i = 0; i < S; ++i) v[i] = V[(positions * i + xi) * VS + c];
#pragma GCC unroll 16
          for (int j = 0; j < F; ++j) {
            const float uj = u[c * KP + j];
#pragma GCC unroll 2
            for (int i = 0; i < S; ++i) acc[i][j] += uj * v[i];
          }
        }
#pragma GCC unroll 2
        for (int i = 0; i < S; ++i)
#pragma GCC unroll 16
          for (int j = 0; j < F; ++j) M[(positions * i + xi) * MS + k0 + j] = acc[i][j];
      }
  };
  // y (image n, its G tile rows from vr * G on, tiles of chunk `chunk`) = A^T M A / Tile::scale + bias, ReLU
  const auto tile_outputs = [&](int64_t n, int64_t vr, int64_t chunk, int64_t k_lo, int64_t k_hi, const vec* M) {
    const int64_t t0 = chunk * L;
    for (int64_t k = k_lo; k < std::min(K, k_hi); ++k) {
      const float b = bias ? bias[k] : 0.0f;
      vec at[T][alpha];  // at[e][j]: row e of A^T M, column j
#pragma GCC unroll 6
      for (int j = 0; j < alpha; ++j) {
        vec col[alpha], out[T];
#pragma GCC unroll 6
        for (int r = 0; r < alpha; ++r) col[r] = M[(r * alpha + j) * MS + k];
        Tile::output(col, out);
#pragma GCC unroll 4
        for (int e = 0; e < T; ++e) at[e][j] = out[e];
      }
#pragma GCC unroll 4
      for (int e = 0; e < T; ++e) {
        vec phase[T], out[T];
        Tile::output(at[e], phase);
#pragma GCC unroll 4
        for (int q = 0; q < T; ++q) {
          if constexpr (Tile::scale != 1.0f) phase[q] /= Tile::scale;  // correctly rounded: integers stay exact
          phase[q] += b;
          if (relu) phase[q] = relu_keep_nan_lanes<VL>(phase[q]);
        }
        join_phases<VL, T>(phase, out);  // group g's T L outputs: from lane g T L of out on
        const int64_t left = Q - T * t0;
        for (int g = 0; g < G; ++g) {
          const int64_t p = T * (vr * G + g) + e;
          if (p >= P) break;
          float* dst = y + ((n * K + k) * P + p) * Q + T * t0;
          if constexpr (G <= T) {  // the group's T / G whole vectors
            constexpr int group_vectors = T / G;
            for (int u = 0; u < group_vectors && left > u * VL; ++u)
              store_first<VL>(dst + u * VL, out[g * group_vectors + u], std::min<int64_t>(VL, left - u * VL));
          } else {  // part of a vector
            store_group<VL, T * L>(dst, out[g * T / G], (g * T % G) * L, std::min<int64_t>(T * L, left));
          }
        }
      }
    }
  };
  parallel_for(s.N * bands * k_parts, nt, [&](int64_t task) {
    if (non_finite.load(std::memory_order_relaxed)) return;
    const int64_t n = task / (bands * k_parts), band = task / k_parts % bands, part = task % k_parts;
    const int64_t vr0 = band * band_rows, vr1 = std::min(vector_rows, vr0 + band_rows);
    const int64_t k_lo = part * part_blocks * KB, k_hi = std::min(KP, k_lo + part_blocks * KB);
    if (vr0 >= vr1 || k_lo >= k_hi) return;
    if (own_filters) fused_filters<VL, T>(s, w, KP, k_lo, k_hi, U_own);  // one image, one band: each part once
    const int64_t r0 = T * vr0 * G, r1 = T * vr1 * G + alpha - T;
    const CachedBlock<float> xs(C * (r1 - r0) * row_floats), work(kSlots * positions * (VS + MS) * VL);
    if (!split_rows(n, r0, r1, xs.get())) {
      non_finite.store(true, std::memory_order_relaxed);
      return;
    }
    vec *V = reinterpret_cast<vec*>(work.get()), *M = V + kSlots * positions * VS;
    // the band's vectors of tiles (vector row vr, chunk: position vr * chunks + chunk), kSlots at a time
    for (int64_t at = vr0 * chunks; at < vr1 * chunks; at += kSlots) {
      const int64_t count = std::min<int64_t>(kSlots, vr1 * chunks - at);
      for (int64_t i = 0; i < count; ++i)
        tile_inputs(xs.get(), (r1 - r0) * row_floats, r0, (at + i) / chunks, (at + i) % chunks,
                    V + positions * i * VS);
      if (count == kSlots)
        products(std::integral_constant<int, kSlots>{}, k_lo, k_hi, V, M);
      else
        products(std::integral_constant<int, 1>{}, k_lo, k_hi, V, M);
      for (int64_t i = 0; i < count; ++i)
        tile_outputs(n, (at + i) / chunks, (at + i) % chunks, k_lo, k_hi, M + positions * i * MS);
    }
  }, Schedule::as_free);
  return !non_finite;
}

template <int VL, int T>
bool winograd_fused_tiles(const ConvShape& s, const float* x, const float* w, const float* bias, bool relu, float* y,
                          ConvWeightCache* cache) {
  switch (winograd_fused_lane_groups((s.Q + T - 1) / T, VL)) {
    case 4:
      if constexpr (VL == 16) return winograd_fused_groups<VL, T, 4>(s, x, w, bias, relu, y, cache);
      [[fallthrough]];
    case 2:
      return winograd_fused_groups<VL, T, 2>(s, x, w, bias, relu, y, cache);
    default:
      return winograd_fused_groups<VL, T, 1>(s, x, w, bias, relu, y, cache);
  }
}

// conv2d_forward_winograd_fused_<isa> (conv.h), VL = 8 or 16 floats a vector: F(4x4, 3x3) or F(2x2, 3x3)
// (conv2d_winograd_fused_tile), in lane groups (winograd_fused_lane_groups).
template <int VL>
bool winograd_fused_forward(const ConvShape& s, const float* x, const float* w, const float* bias, bool relu, float* y,
                            ConvWeightCache* cache) {
  if (conv2d_winograd_fused_tile(s, VL) == 4) return winograd_fused_tiles<VL, 4>(s, x, w, bias, relu, y, cache);
  return winograd_fused_tiles<VL, 2>(s, x, w, bias, relu, y, cache);
}

// The weight gradient by F(T x T, 3x3) (T = 2 or 4, the caller's tile: conv2d_winograd_fused_weight_tile; as
// winograd_weight: dw = G_s^T M G_s / weight_scale, M_xi = sum over tiles of D_xi V_xi^T) fused, for layers of few
// channels and filters (conv2d_winograd_fused_weight_applies: ResNet-20's 16 to 64), which winograd_weight does not
// take (its transforms write V and D for blocks of hundreds of tiles through L3). The products run vectorised over
// channels, so the transforms take channels in the lanes too: the rows of each image that a task's chunk reads (the
// chunks: image_chunks' runs of whole images, or a single image's tile rows in kImageRowChunks runs:
// winograd_fused_weight_chunks; over the threads) are first checked for infinities and NaN (a pass that also brings
// them into L1 and L2: without it, 0.85x for 32 channels at 16 x 16), then copied by the ISA's transposing packer, x
// zero-padded with pixel (row, col)'s channels at (row * xcols + col) * CP, dy with pixel (p, q)'s filters at (p *
// ycols + q) * KP (zeros past C or K and past the image), while the next image of the chunk is prefetched a few lines a
// tile (16 channels at 32 x 32: 1.07x -> 1.17x over the filter-vector kernel). Then per tile row, into a group of whole
// tile rows of the chunk's images (at most GT tiles, GT = max(kFusedWeightTiles or kFusedWeightQuads, tw)), V[xi][t] =
// (B^T d B)[xi] (CP channels; B^T down the padded columns, each tile's last two the next one's first two, then B along
// the rows) and D[xi][t] = (A dY A^T)[xi] (KP filters; F(4x4): A_e), each of the alpha^2 positions a vector past GT
// tiles' floats (4 KiB apart they fell into one cache set: 0.91x -> 1.07x); and per full group and position xi
// M[xi][k][c] += sum over its tiles t of D[xi][t][k] V[xi][t][c] (the chunk's first group writes M): VL filters'
// accumulators of one vector of channels in registers, D broadcast from memory (at the FMA peak). Then the chunks' M
// are added in chunk order and dw taken from the sum (weight_gradients_from_sums); db (where not null) from the bias
// partials added image by image (the bits of conv2d_backward_bias_fast; for a single image, its own pass). Every sum is
// formed in the same order whatever the thread count. Returns false, dw and db untouched, where x or dy holds an
// infinity or a NaN. Workspace: M per chunk (alpha^2 x KP x CP floats) and per task the copied image and dy, or the
// rows of them its tile rows read ((T th + 2) x (T tw + 2) x CP and T^2 th x tw x KP floats for th x tw tiles) and the
// group's V and D (alpha^2 x (GT x (CP + KP) + 2 VL) floats). Exact on small-integer data while the transformed
// products' sums (up to 64 times the direct sum's terms for F(2x2); F(4x4)'s D in sixteenths) stay below 2^24.
constexpr int64_t kFusedWeightTiles = 64;
// F(4x4)'s groups: 4x4 tiles. Both builds in one process, calls alternated, median of per-pair time ratios, AMD Zen
// 4, 2 threads, weight gradient at n=128, against F(2x2): 16 channels at 32 x 32, 32 at 16 x 16, 64 at 8 x 8: groups
// of 8 tiles 1.22 / 1.29 / 1.10x, 16 1.26 / 1.36 / 1.18x, 32 1.33 / 1.41 / 1.20x, 64 1.31 / 1.41 / 1.21x.
constexpr int64_t kFusedWeightQuads = 32;
template <int VL, int T>
bool winograd_fused_weight_tiles(const ConvShape& s, const float* dy, const float* x, float* dw, float* db) {
  typedef float vec __attribute__((vector_size(4 * VL)));
  typedef WinogradTile<T> Tile;
  constexpr int alpha = Tile::alpha, positions = alpha * alpha;
  constexpr int KB = VL;             // filters a block of accumulators
  const int64_t C = s.C, K = s.K, CP = (C + VL - 1) / VL * VL, KP = (K + KB - 1) / KB * KB;
  const int64_t H = s.H, W = s.W, P = s.P, Q = s.Q, th = (P + T - 1) / T, tw = (Q + T - 1) / T;
  const int64_t xcols = T * tw + 2, ycols = T * tw;
  const int64_t GT = std::max(T == 4 ? kFusedWeightQuads : kFusedWeightTiles, tw);  // a group's tiles: whole tile rows
  // V[xi] and D[xi] VS and DS floats apart: GT tiles and a vector (positions 4 KiB apart fell into one cache set)
  const int64_t VS = GT * CP + VL, DS = GT * KP + VL;
  // chunks: runs of whole images (image_chunks), or for one image runs of its tile rows (image n's tile row ty is row
  // n * th + ty)
  const bool by_images = s.N > 1;
  const int64_t chunks = winograd_fused_weight_chunks(s, T);
  const auto chunk_row = [&](int64_t c) { return by_images ? c * s.N / chunks * th : c * th / chunks; };
  const int64_t per_chunk = positions * KP * CP, bias_floats = bias_partial_floats(s);
  std::vector<int64_t> x_planes(static_cast<size_t>(C)), dy_planes(static_cast<size_t>(K));
  for (int64_t c = 0; c < C; ++c) x_planes[c] = c * H * W;
  for (int64_t k = 0; k < K; ++k) dy_planes[k] = k * P * Q;
  const PackTransposedKernel transpose = kernels().gemm.pack_transposed;
  // tile row ty of the copied image xt and dy gt into the group's slots from t0 on: per vector of channels, B^T down
  // each padded column (a tile's last two columns, T tx + T and T tx + T + 1, are the first two of the next: kept),
  // then B along each tile's rows
  const auto transform_row = [&](const float* xt, const float* gt, int64_t ty, int64_t t0, float* V, float* D,
                                  const auto& prefetch) {
    // the layout in locals of its own: read through the captures (references), it was reloaded from memory after
    // every store of V and D (vector stores may alias anything). Both builds in one process, calls alternated, median
    // of per-pair time ratios, AMD Zen 3, weight gradient at n=128, 2 / 1 threads: 16 channels on 32 x 32 1.25 /
    // 1.29x, 32 on 16 x 16 1.16x, 64 on 8 x 8 1.11 / 1.13x; ResNet-20's training step (batch 128) 1.07x
    const int64_t cp = CP, kp = KP, vs = VS, ds = DS, x_cols = xcols, y_cols = ycols, tiles = tw;
    for (int64_t c0 = 0; c0 < cp; c0 += VL) {
      const float* rows = xt + T * ty * x_cols * cp + c0;
      const auto column = [&](int64_t u, vec(&out)[alpha]) {
        vec d[alpha];
#pragma GCC unroll 6
        for (int r = 0; r < alpha; ++r) std::memcpy(&d[r], rows + (r * x_cols + u) * cp, sizeof(vec));
        Tile::input(d, out);
      };
      vec cols[alpha][alpha];  // cols[q][i]: B^T of the tile's padded column q, row i
      column(0, cols[T]);
      column(1, cols[T + 1]);
      for (int64_t tx = 0; tx < tiles; ++tx) {
#pragma GCC unroll 6
        for (int i = 0; i < alpha; ++i) {
          cols[0][i] = cols[T][i];
          cols[1][i] = cols[T + 1][i];
        }
        if (c0 == 0) prefetch(tx);
#pragma GCC unroll 4
        for (int q = 2; q < alpha; ++q) column(T * tx + q, cols[q]);
#pragma GCC unroll 6
        for (int i = 0; i < alpha; ++i) {
          vec row[alpha], out[alpha];
#pragma GCC unroll 6
          for (int q = 0; q < alpha; ++q) row[q] = cols[q][i];
          Tile::input(row, out);
#pragma GCC unroll 6
          for (int j = 0; j < alpha; ++j)
            std::memcpy(V + (i * alpha + j) * vs + (t0 + tx) * cp + c0, &out[j], sizeof(vec));
        }
      }
    }
    for (int64_t k0 = 0; k0 < kp; k0 += VL)
      for (int64_t tx = 0; tx < tiles; ++tx) {
        const float* g0 = gt + (T * ty * y_cols + T * tx) * kp + k0;
        vec h[T][alpha];  // h[r][j]: dy row r times A^T (F(4x4): A_e^T), column j
#pragma GCC unroll 4
        for (int r = 0; r < T; ++r) {
          vec g[T];
#pragma GCC unroll 4
          for (int q = 0; q < T; ++q) std::memcpy(&g[q], g0 + (r * y_cols + q) * kp, sizeof(vec));
          Tile::gradient(g, h[r]);
        }
#pragma GCC unroll 6
        for (int j = 0; j < alpha; ++j) {
          vec g[T], out[alpha];
#pragma GCC unroll 4
          for (int r = 0; r < T; ++r) g[r] = h[r][j];
          Tile::gradient(g, out);
#pragma GCC unroll 6
          for (int e = 0; e < alpha; ++e)
            std::memcpy(D + (alpha * e + j) * ds + (t0 + tx) * kp + k0, &out[e], sizeof(vec));
        }
      }
  };
  // M[xi][k][c] += the group's first `tiles` products (M = them for the chunk's first group)
  const auto products = [&](const float* V, const float* D, int64_t tiles, bool first, float* M) {
    for (int xi = 0; xi < positions; ++xi)
      for (int64_t c0 = 0; c0 < CP; c0 += VL)
        for (int64_t k0 = 0; k0 < KP; k0 += KB) {
          float* m = M + (xi * KP + k0) * CP + c0;
          const float* v = V + xi * VS + c0;
          const float* d = D + xi * DS + k0;
          vec acc[KB];
#pragma GCC unroll 16
          for (int j = 0; j < KB; ++j) {
            acc[j] = vec{};
            if (!first) std::memcpy(&acc[j], m + j * CP, sizeof(vec));
          }
          for (int64_t t = 0; t < tiles; ++t) {
            vec vt;
            std::memcpy(&vt, v + t * CP, sizeof(vec));
#pragma GCC unroll 16
            for (int j = 0; j < KB; ++j) acc[j] += d[t * KP + j] * vt;
          }
#pragma GCC unroll 16
          for (int j = 0; j < KB; ++j) std::memcpy(m + j * CP, &acc[j], sizeof(vec));
        }
  };
  std::atomic<bool> non_finite{false};
  const CachedBlock<float> sums(chunks * per_chunk);
  std::vector<float> bias(db && by_images ? static_cast<size_t>(chunks * bias_floats) : 0, 0.0f);
  parallel_for(chunks, threads_for(s.N * K * C * P * Q * 9), [&](int64_t chunk) {
    float* M = sums.get() + chunk * per_chunk;
    const int64_t row0 = chunk_row(chunk), row1 = chunk_row(chunk + 1);
    // xt and gt hold the padded rows of the chunk's tile rows of an image: from padded row T * base on
    const int64_t span = by_images ? th : row1 - row0, base = by_images ? 0 : row0;
    const int64_t xt_floats = (T * span + 2) * xcols * CP, gt_floats = T * span * ycols * KP;
    const CachedBlock<float> xt(xt_floats), gt(gt_floats), group(positions * (VS + DS));
    std::fill(xt.get(), xt.get() + xt_floats, 0.0f);  // the padding, never written
    std::fill(gt.get(), gt.get() + gt_floats, 0.0f);
    float *V = group.get(), *D = V + positions * VS;
    int64_t filled = 0;  // the group's tiles
    bool first = true;   // the chunk's first group
    for (int64_t n = row0 / th; n * th < row1; ++n) {
      // the image's tile rows [ty0, ty1) in the chunk: its rows [h0, h1) of x and [p0, p1) of dy
      const int64_t ty0 = std::max<int64_t>(row0 - n * th, 0), ty1 = std::min(row1 - n * th, th);
      const int64_t h0 = std::max<int64_t>(T * ty0 - s.pad_h, 0), h1 = std::min(T * ty1 + 2 - s.pad_h, H);
      const int64_t p0 = T * ty0, p1 = std::min(T * ty1, P);
      const float *xn = x + n * C * H * W, *dyn = dy + n * K * P * Q;
      bool bad = non_finite.load(std::memory_order_relaxed);
      for (int64_t c = 0; c < C && !bad && h0 < h1; ++c) bad = any_non_finite(xn + (c * H + h0) * W, (h1 - h0) * W);
      for (int64_t k = 0; k < K && !bad; ++k) bad = any_non_finite(dyn + (k * P + p0) * Q, (p1 - p0) * Q);
      if (bad) {
        non_finite.store(true, std::memory_order_relaxed);
        return;
      }
      if (db && by_images) bias_partials_add(s, dyn, 0, K, &bias[chunk * bias_floats]);
      for (int64_t h = h0; h < h1; ++h)
        transpose(xn + h * W, x_planes.data(), C, CP, W, 1.0f,
                  xt.get() + ((h + s.pad_h - T * base) * xcols + s.pad_w) * CP);
      for (int64_t p = p0; p < p1; ++p)
        transpose(dyn + p * Q, dy_planes.data(), K, KP, Q, 1.0f, gt.get() + (p - T * base) * ycols * KP);
      const int64_t x_lines = C * H * W / 16, lines = x_lines + K * P * Q / 16;  // the next image's, prefetched
      const int64_t ahead = by_images && (n + 1) * th < row1 ? (lines + th * tw - 1) / (th * tw) : 0;
      for (int64_t ty = ty0; ty < ty1; ++ty) {
        if (filled + tw > GT) {
          products(V, D, filled, first, M);
          filled = 0;
          first = false;
        }
        transform_row(xt.get(), gt.get(), ty - base, filled, V, D, [&](int64_t tx) {
          for (int64_t l = (ty * tw + tx) * ahead, end = std::min(lines, l + ahead); l < end; ++l)
            __builtin_prefetch(l < x_lines ? xn + C * H * W + 16 * l : dyn + K * P * Q + 16 * (l - x_lines));
        });
        filled += tw;
      }
    }
    if (filled > 0) products(V, D, filled, first, M);
  }, Schedule::as_free);
  if (non_finite) return false;
  add_chunks_into_first(sums.get(), chunks, per_chunk, 0, per_chunk);
  weight_gradients_from_sums<T>(s, sums.get(), KP, CP, dw);
  if (db && by_images) bias_from_partials(s, bias.data(), chunks, db);
  if (db && !by_images) conv2d_backward_bias_fast(s, dy, db);
  return true;
}

// conv2d_backward_weight_winograd_fused_<isa> (conv.h), VL floats a vector: F(4x4, 3x3) where tile is 4, else F(2x2,
// 3x3).
template <int VL>
bool winograd_fused_weight(const ConvShape& s, int tile, const float* dy, const float* x, float* dw, float* db) {
  return tile == 4 ? winograd_fused_weight_tiles<VL, 4>(s, dy, x, dw, db)
                   : winograd_fused_weight_tiles<VL, 2>(s, dy, x, dw, db);
}

// conv2d_forward_winograd_<isa> (conv.h), VL floats a vector: F(4x4, 3x3) where tile is 4, else F(2x2, 3x3).
template <int VL>
bool winograd_forward(const ConvShape& s, int tile, const float* x, const float* w, const float* bias, bool relu,
                      float* y, ConvWeightCache* cache) {
  return tile == 4 ? winograd_forward_tiles<VL, 4>(s, x, w, bias, relu, y, cache)
                   : winograd_forward_tiles<VL, 2>(s, x, w, bias, relu, y, cache);
}

}  // namespace
}  // namespace convcore
