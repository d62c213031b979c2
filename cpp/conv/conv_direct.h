// Direct convolution for layers with few taps and filters (stride 1, no dilation, one group; e.g. LeNet's and
// ResNet-20's CIFAR stage): vectors along the output row, a block of KB filters x QV vectors in registers, the
// image zero-padded once into a per-image buffer so the loops carry no bounds checks (read in place where the
// kernel needs no padding: padded_image). No im2col: each input value is loaded once per (tap, filter block)
// instead of being copied R*S times. Included by each ISA's translation unit (conv_direct_<isa>.cpp), which
// instantiates it with its vector width; the anonymous namespace keeps each copy in its own unit (the linker must
// not merge an AVX-512 copy into the AVX2 path).
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "convcore/buffer_cache.h"
#include "convcore/conv.h"
#include "convcore/dispatch.h"
#include "convcore/threads.h"
#include "convcore/vector_edges.h"
#if defined(__AVX2__)
#include "convcore/avx2_lanes.h"
#endif

namespace convcore {
namespace {

// std::allocator with 64-byte (cache line) alignment: vectors loaded from these buffers never straddle two lines.
template <typename T>
struct LineAllocator {
  using value_type = T;
  LineAllocator() = default;
  template <typename U>
  LineAllocator(const LineAllocator<U>&) {}
  T* allocate(size_t n) {
    void* p = std::aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64);
    if (!p) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { std::free(p); }
  template <typename U>
  bool operator==(const LineAllocator<U>&) const { return true; }
  template <typename U>
  bool operator!=(const LineAllocator<U>&) const { return false; }
};
using LineFloats = std::vector<float, LineAllocator<float>>;

// The kernel rows [lo, hi) that read image rows for output row p (the others read only zero padding).
struct KernelRows {
  int64_t lo, hi;
};
inline KernelRows image_rows(const ConvShape& s, int64_t p) {
  int64_t lo = 0, hi = s.R;
  while (lo < s.R && p * s.stride_h + lo * s.dil_h < s.pad_h) ++lo;
  while (hi > lo && p * s.stride_h + (hi - 1) * s.dil_h >= s.H + s.pad_h) --hi;
  return {lo, hi};
}
// The kernel rows [lo, hi) through which dx row h of a stride-1, undilated layer meets dy (dy row h + pad_h - r in
// [0, P)).
inline KernelRows dy_rows(const ConvShape& s, int64_t h) {
  return {std::max<int64_t>(0, h + s.pad_h - s.P + 1), std::min<int64_t>(s.R, h + s.pad_h + 1)};
}

// Calls body(width) with the kernel width as a compile-time constant for the common widths 3 and 5, else 0 (the
// kernels then read it at run time).
template <typename Body>
void with_kernel_width(const ConvShape& s, const Body& body) {
  if (s.S == 3)
    body(std::integral_constant<int, 3>{});
  else if (s.S == 5)
    body(std::integral_constant<int, 5>{});
  else
    body(std::integral_constant<int, 0>{});
}

// Part `part` of `parts` of the next image's input (`floats` floats from next, or nothing where next is null) fetched
// into L2 while an output row of this image is computed, the parts in turn: copied into its padded buffer when its
// turn came, the next image (the previous layer's output, beyond L2 in a batch) waited for memory (pad_image's copy
// 7% of ResNet-20's inference at batch 128). A line at each step() of the row's work, the rest at its end: a part's
// lines in one burst stalled on the misses (both builds in one process, calls alternated, median of per-pair time
// ratios, AMD Zen 4, 1 thread, n=128: 16 -> 16 3x3 on 32 x 32 1.020x).
class NextImageLines {
 public:
  NextImageLines(const float* next, int64_t floats, int64_t part, int64_t parts) {
    if (!next) return;
    const int64_t lines = (floats * int64_t(sizeof(float)) + 63) / 64;
    line_ = reinterpret_cast<const char*>(next) + lines * part / parts * 64;
    end_ = reinterpret_cast<const char*>(next) + lines * (part + 1) / parts * 64;
  }
  void step() {
    if (line_ < end_) {
      __builtin_prefetch(line_, 0, 2);
      line_ += 64;
    }
  }
  void rest() {
    for (; line_ < end_; line_ += 64) __builtin_prefetch(line_, 0, 2);
  }

 private:
  const char* line_ = nullptr;
  const char* end_ = nullptr;
};

// w (K filters of `taps` floats each) regrouped as [filter block][tap][KB filters], zero lanes past K, into wp
// (filter_block_floats floats): the filters of one tap adjacent, by the ISA's transposing packer (as the GEMM packs
// a row-major A).
inline int64_t filter_block_floats(int64_t K, int64_t taps, int64_t KB) { return (K + KB - 1) / KB * taps * KB; }
inline void filters_in_lanes(const float* w, int64_t K, int64_t taps, int64_t KB, float* wp) {
  std::vector<int64_t> filter_rows(static_cast<size_t>(KB));
  for (int64_t i = 0; i < KB; ++i) filter_rows[i] = i * taps;
  for (int64_t kb = 0; kb * KB < K; ++kb)
    kernels().gemm.pack_transposed(w + kb * KB * taps, filter_rows.data(), std::min(KB, K - kb * KB), KB, taps, 1.0f,
                                   wp + kb * taps * KB);
}
inline LineFloats filters_in_lanes(const float* w, int64_t K, int64_t taps, int64_t KB) {
  LineFloats wp(static_cast<size_t>(filter_block_floats(K, taps, KB)));
  filters_in_lanes(w, K, taps, KB, wp.data());
  return wp;
}

// How a forward of K filters (`taps` weights each) in blocks of KB shares its work out over nt threads, in parts, one
// a thread: the images in contiguous chunks, their weights packed once for all (filters_in_lanes); or, with one image
// (nothing would run beside it), its blocks of filters in contiguous runs, each part packing its own blocks' weights
// (weights packed by one thread for both crossed to the other core at every call: ResNet-20's 64 -> 64 3x3 on 8 x 8,
// its one image's rows in bands over 2 threads, ran 0.3-0.95x against 1; yet each part packing its own at batch 2,
// 144 KiB each, ran 0.79x against one packing). Measured both builds in one process, calls alternated,
// median of per-pair time ratios, AMD Zen 4, n=1, 2 threads against 1 part: 16 -> 16 3x3 on 32 x 32 1.71x, 64 -> 64
// on 8 x 8 1.71x; ResNet-20's forward 1.21-1.68x (1.56x or more in 8 runs of 10).
class ForwardParts {
 public:
  // cache, where not null, holds the weights packed once for all calls (ConvWeightCache): every part reads its
  // blocks there
  ForwardParts(const float* w, int64_t K, int64_t taps, int64_t KB, int64_t N, int nt, ConvWeightCache* cache)
      : w_(w), K_(K), taps_(taps), KB_(KB), images_(N), k_blocks_((K + KB - 1) / KB),
        by_filters_(N == 1 && k_blocks_ > 1 && nt > 1), parts_(std::min<int64_t>(by_filters_ ? k_blocks_ : N, nt)) {
    if (cache)
      cached_ = cache->get(ConvPacking::filter_blocks, KB, filter_block_floats(K, taps, KB),
                           [&](float* wp) { filters_in_lanes(w, K, taps, KB, wp); });
    else if (!by_filters_)
      shared_ = filters_in_lanes(w, K, taps, KB);
  }
  int64_t parts() const { return parts_; }
  int64_t first_block(int64_t part) const { return by_filters_ ? part * k_blocks_ / parts_ : 0; }
  int64_t end_block(int64_t part) const { return by_filters_ ? (part + 1) * k_blocks_ / parts_ : k_blocks_; }
  int64_t first_image(int64_t part) const { return by_filters_ ? 0 : part * images_ / parts_; }
  int64_t end_image(int64_t part) const { return by_filters_ ? images_ : (part + 1) * images_ / parts_; }
  // The part's blocks' weights, [block][tap][KB filters] from its first block on: packed into `own` when the part
  // packs its own.
  const float* weights(int64_t part, LineFloats& own) const {
    if (cached_) return cached_.get() + first_block(part) * taps_ * KB_;
    if (!by_filters_) return shared_.data();
    const int64_t k0 = first_block(part) * KB_;
    own = filters_in_lanes(w_ + k0 * taps_, std::min(K_, end_block(part) * KB_) - k0, taps_, KB_);
    return own.data();
  }

 private:
  const float* w_;
  int64_t K_, taps_, KB_, images_, k_blocks_;
  bool by_filters_;
  int64_t parts_;
  LineFloats shared_;
  ConvWeightCache::Packed cached_;
};

// Each output element sums its taps in (c, r, t) order, adds the bias, then applies ReLU (keeping NaN): the same order
// whatever the thread count. S_FIXED, where not 0, is the kernel width known at compile time: the loop over a kernel
// row's taps unrolls (measured: 10-15% faster on 3x3 layers; not where registers run short: kUnrolledTaps). PB output
// rows are computed together: with few filters and one vector per row, one row's KB accumulators are too few chains to
// hide the FMA latency (each tap's FMA waits for the previous tap's); a pair runs the union of the two rows' kernel
// rows, reading zero padding where a row has no image row (the padded image has a spare zero row for a pair past the
// last output row). Work is shared out by ForwardParts; workspace: the weights regrouped by block, and per part one
// padded image.
template <int VL, int KB, int QV, int PB, int S_FIXED>
void direct_forward(const ConvShape& s, const float* x, const float* w, const float* bias, bool relu, float* y,
                    ConvWeightCache* cache) {
  typedef float vec __attribute__((vector_size(4 * VL)));
  const int64_t C = s.C, K = s.K, R = s.R, S = S_FIXED ? S_FIXED : s.S, P = s.P, Q = s.Q, H = s.H, W = s.W;
  const int64_t CRS = C * R * S, step = int64_t(VL) * QV;
  // The kernel row's taps in a loop GCC does not unroll (a count it cannot see) where the accumulators and x vectors
  // take 13 or more of AVX2's 16 registers: unrolled, GCC loaded later taps' x ahead and spilled accumulators to the
  // stack. Both builds in one process, calls alternated, median of per-pair time ratios, AMD Zen 3, LeNet conv1 (6
  // filters x 2 vectors) n=64 forward: 1.11 / 1.08x on 1 / 2 threads.
  constexpr bool kUnrolledTaps = !(VL == 8 && PB * KB * QV + PB * QV > 12);
  const int64_t row_taps = kUnrolledTaps ? S : s.S;
  const int64_t q_span = (Q + step - 1) / step * step;
  const int64_t Hp = H + 2 * s.pad_h + (PB - 1), Wp = std::max(W + 2 * s.pad_w, q_span + S - 1);
  const int nt = threads_for(s.N * K * P * Q * CRS);
  const ForwardParts parts(w, K, CRS, KB, s.N, nt, cache);
  parallel_for(parts.parts(), nt, [&](int64_t part) {
    const int64_t kb_first = parts.first_block(part), kb_last = parts.end_block(part);
    // the part's blocks' weights as [k block][c][r][t][KB] from kb_first on, zero lanes past K: the KB weights of
    // one tap are adjacent
    LineFloats own;
    const float* const w_block = parts.weights(part, own);
    // the epilogue's operands as locals: its stores would otherwise make the compiler reload them through the
    // closure after each one
    const int64_t p_end = P, q_end = Q, k_end = K;
    const float* const bias_here = bias;
    const bool relu_here = relu;
    const int64_t row_floats = Wp, plane_floats = Hp * Wp;
    std::vector<float> xp;  // the padded image, where it needs one
    const int64_t n_end = parts.end_image(part);
    for (int64_t n = parts.first_image(part); n < n_end; ++n) {
      const float* xn = padded_image(s, x + n * C * H * W, Hp, Wp, xp);
      const float* next = n + 1 < n_end ? x + (n + 1) * C * H * W : nullptr;
      float* yn = y + n * K * P * Q;
      for (int64_t p = 0; p < P; p += PB) {
        NextImageLines ahead(next, C * H * W, p / PB, (P + PB - 1) / PB);
        auto [r_lo, r_hi] = image_rows(s, p);
        for (int j = 1; j < PB && p + j < P; ++j) {
          const auto [lo, hi] = image_rows(s, p + j);
          r_lo = std::min(r_lo, lo);
          r_hi = std::max(r_hi, hi);
        }
        const int64_t rows = std::min<int64_t>(PB, p_end - p);
        for (int64_t q0 = 0; q0 < Q; q0 += step) {
          int64_t count[QV];  // the lanes of each vector inside the row
          for (int v = 0; v < QV; ++v) count[v] = std::clamp<int64_t>(q_end - q0 - v * VL, 0, VL);
          for (int64_t kb = kb_first; kb < kb_last; ++kb) {
            vec acc[PB][KB][QV];
            for (int j = 0; j < PB; ++j)
              for (int i = 0; i < KB; ++i)
                for (int v = 0; v < QV; ++v) acc[j][i][v] = vec{};
            // the channel's first image row and kernel row, advanced by pointer: indexed from the loop counters,
            // the address arithmetic reloaded the closure's references at every channel (measured Zen 3, 1 thread,
            // 16 filters 3x3 on 32 x 32: ~25% of the instructions outside the taps)
            const float* x_c = xn + (p + r_lo) * row_floats + q0;
            const float* w_c = w_block + (kb - kb_first) * C * R * S * KB + r_lo * S * KB;
            for (int64_t c = 0; c < C; ++c, x_c += plane_floats, w_c += R * S * KB) {
              ahead.step();
              const float* row = x_c;
              const float* wk = w_c;
              for (int64_t r = r_lo; r < r_hi; ++r, row += row_floats) {
                for (int64_t t = 0; t < row_taps; ++t, wk += KB) {
                  // fully unrolled: a loop left by GCC (3 rows of 8-float vectors) copied x through the stack in
                  // halves, and each FMA waited on the store forwarding (2.3x slower)
                  vec xv[PB][QV];
#pragma GCC unroll 8
                  for (int j = 0; j < PB; ++j)
#pragma GCC unroll 2
                    for (int v = 0; v < QV; ++v)
                      std::memcpy(&xv[j][v], row + j * row_floats + t + v * VL, sizeof(vec));
#pragma GCC unroll 8
                  for (int i = 0; i < KB; ++i)
#pragma GCC unroll 8
                    for (int j = 0; j < PB; ++j)
#pragma GCC unroll 2
                      for (int v = 0; v < QV; ++v) acc[j][i][v] += xv[j][v] * wk[i];
                }
              }
            }
            const int64_t filters = std::min<int64_t>(KB, k_end - kb * KB);
#pragma GCC unroll 4
            for (int j = 0; j < PB; ++j) {
              if (j >= rows) break;
#pragma GCC unroll 16
              for (int i = 0; i < KB; ++i) {
                if (i >= filters) break;
                const int64_t k = kb * KB + i;
                const float b = bias_here ? bias_here[k] : 0.0f;
                float* out = yn + (k * p_end + p + j) * q_end + q0;
#pragma GCC unroll 4
                for (int v = 0; v < QV; ++v) {
                  if (count[v] == 0) break;
                  vec o = acc[j][i][v] + b;
                  if (relu_here) o = relu_keep_nan_lanes<VL>(o);
                  store_first<VL>(out + v * VL, o, count[v]);
                }
              }
            }
          }
        }
        ahead.rest();
      }
    }
  });
}

// Weight gradient of the same layers with S (kernel width) columns handled together: each work unit (a block of KB
// filters, one input channel c, one kernel row r) keeps KB x S vector accumulators (one load of dy per filter and of x
// per tap feed KB * S FMAs), or, where TA < S, its taps [0, TA) and then [TA, S) in two passes over the image's rows
// (KB x TA and KB x (S - TA) accumulators: blocks of more filters than KB x S registers hold). The batch is cut into
// image_chunks(s) chunks spread over the threads; a chunk takes its images one at a time, adds the image's bias
// gradient partials where db is not null (bias_partials_add), zero-pads x into its own buffer (so every unit's data is
// in cache), and runs every unit on each, carrying the unit's accumulators from image to image. dy is read in place,
// the last vector of a row by a masked load (its lanes past the row are zero, so the finite x they meet does not count;
// with MASK_X x's lanes there are masked too, so an infinite one does not give 0 times infinity), and filters past K
// (a last, partial block) are zero vectors. The chunks' sums are then added in chunk order and each
// accumulator's lanes in a fixed pairwise tree, so every dw element is summed in the same order whatever the thread
// count (db: those of conv2d_backward_bias_fast). Workspace per chunk: one padded image of x, the accumulators (units x
// KB x S vectors) and the bias partials.
template <int VL, int KB, int S, int TA = S, bool MASK_X = false>
void direct_backward_weight(const ConvShape& s, const float* dy, const float* x, float* dw, float* db) {
  typedef float vec __attribute__((vector_size(4 * VL)));
  const int64_t N = s.N, C = s.C, K = s.K, R = s.R, P = s.P, Q = s.Q, H = s.H, W = s.W;
  const int64_t q_span = (Q + VL - 1) / VL * VL, k_blocks = (K + KB - 1) / KB, PQ = P * Q;
  const int64_t Hp = H + 2 * s.pad_h, Wp = std::max(W + 2 * s.pad_w, q_span + S - 1), units = k_blocks * C * R;
  const int64_t chunks = image_chunks(s), per_chunk = units * KB * S * VL, q_full = Q / VL * VL;
  const int64_t bias_floats = bias_partial_floats(s);
  // accumulators as floats (a std::vector of a vector-extension type would drop the vector attribute)
  LineFloats state(static_cast<size_t>(chunks * per_chunk), 0.0f);
  std::vector<float> bias(db ? static_cast<size_t>(chunks * bias_floats) : 0, 0.0f);
  parallel_for(chunks, threads_for(N * K * P * Q * C * R * S), [&](int64_t chunk) {
    std::vector<float> xp;  // the padded image, where it needs one
    float* sums = &state[chunk * per_chunk];
    for (int64_t n = chunk * N / chunks; n < (chunk + 1) * N / chunks; ++n) {
      if (db) bias_partials_add(s, dy + n * K * PQ, 0, K, &bias[chunk * bias_floats]);
      const float* xn = padded_image(s, x + n * C * H * W, Hp, Wp, xp);
      for (int64_t unit = 0; unit < units; ++unit) {
        const int64_t kb = unit / (C * R), c = (unit / R) % C, r = unit % R;
        const int64_t filters = std::min<int64_t>(KB, K - kb * KB);
        float* saved = sums + unit * KB * S * VL;
        const float* g0 = dy + (n * K + kb * KB) * PQ;
        // taps [t0, t0 + TN) in one pass over the image's rows
        const auto pass = [&](auto taps, int64_t t0) {
          constexpr int TN = decltype(taps)::value;
          vec acc[KB][TN];  // loaded and stored a vector at a time (a memcpy of the array became rep movsq)
          for (int i = 0; i < KB; ++i)
            for (int t = 0; t < TN; ++t) std::memcpy(&acc[i][t], saved + (i * S + t0 + t) * VL, sizeof(vec));
          for (int64_t p = 0; p < P; ++p) {
            const float* xrow = xn + (c * Hp + p + r) * Wp + t0;
            const float* grow = g0 + p * Q;
            const auto step = [&](int64_t q0, int64_t count) {
              vec g[KB], xv[TN];
              for (int i = 0; i < KB; ++i)
                g[i] = i < filters ? load_first<VL, vec>(grow + i * PQ + q0, count) : vec{};
              const auto load_x = [&](int t) {
                vec v;
                if constexpr (MASK_X)
                  v = load_first<VL, vec>(xrow + q0 + t, count);
                else
                  std::memcpy(&v, xrow + q0 + t, sizeof(vec));
                return v;
              };
              if constexpr (VL >= 8) {
                // fully unrolled: a loop left by GCC (one filter of width 3 on 8-float vectors) copied x through
                // the stack in halves, and each FMA waited on the store forwarding (3.8x slower); with 4-float
                // vectors the unrolled loop was 0.69x of the rolled one
#pragma GCC unroll 8
                for (int t = 0; t < TN; ++t) xv[t] = load_x(t);
              } else {
                for (int t = 0; t < TN; ++t) xv[t] = load_x(t);
              }
              for (int i = 0; i < KB; ++i)
                for (int t = 0; t < TN; ++t) acc[i][t] += g[i] * xv[t];
            };
            for (int64_t q0 = 0; q0 < q_full; q0 += VL) step(q0, VL);
            if (q_full < Q) step(q_full, Q - q_full);
          }
          for (int i = 0; i < KB; ++i)
            for (int t = 0; t < TN; ++t) std::memcpy(saved + (i * S + t0 + t) * VL, &acc[i][t], sizeof(vec));
        };
        pass(std::integral_constant<int, TA>{}, 0);
        if constexpr (TA < S) pass(std::integral_constant<int, S - TA>{}, TA);
      }
    }
  });
  add_chunks_into_first(state.data(), chunks, per_chunk, 0, per_chunk);
  for (int64_t unit = 0; unit < units; ++unit) {
    const int64_t kb = unit / (C * R), c = (unit / R) % C, r = unit % R;
    for (int i = 0; i < KB && kb * KB + i < K; ++i)
      for (int t = 0; t < S; ++t) {
        const int64_t at = ((unit * KB + i) * S + t) * VL;
        alignas(64) float lanes[VL];
        std::memcpy(lanes, &state[at], sizeof(lanes));
        for (int width = VL / 2; width >= 1; width /= 2)
          for (int j = 0; j < width; ++j) lanes[j] += lanes[j + width];
        dw[(((kb * KB + i) * C + c) * R + r) * S + t] = lanes[0];
      }
  }
  if (db) bias_from_partials(s, bias.data(), chunks, db);
}

// Instantiated for kernel widths 3 and 5 (conv2d_direct_weight_applies). With 16-float vectors, 5 or 6 filters of
// width 5 (LeNet conv1) take one block of 6 in passes of 3 and 2 taps: in blocks of 4 (20 accumulators) a quarter of
// the FMAs met zero filters (both builds in one process, calls alternated, median of per-pair time ratios, AMD Zen 4,
// LeNet conv1 n=64 weight gradient 1.20x on 1 thread, 1.09x on 2, forward+backward 1.07x; blocks of 3 + 3 in one
// pass, 15 accumulators, were 0.92-0.95x: more loads per FMA). One filter takes blocks of one, two or three of width
// 3 blocks of three, instead of blocks mostly zero (alternated, Zen 4, weight gradient n=32, 2 threads: 1 filter of 16
// x 3 x 3 on 32 x 32 2.35x; forced AVX2, 1 thread, with the unrolled loads: 4.6x; 4-float vectors 1.44x).
template <int VL, int KB3, int KB5>
void direct_backward_weight_any(const ConvShape& s, const float* dy, const float* x, float* dw, float* db) {
  const auto run = [&](auto mask_x) {
    constexpr bool M = decltype(mask_x)::value;
    if (s.K == 1) {  // one filter: blocks of one
      if (s.S == 3)
        direct_backward_weight<VL, 1, 3, 3, M>(s, dy, x, dw, db);
      else
        direct_backward_weight<VL, 1, 5, 5, M>(s, dy, x, dw, db);
    } else if (s.S == 3 && KB3 > 3 && s.K <= 3) {
      direct_backward_weight<VL, 3, 3, 3, M>(s, dy, x, dw, db);
    } else if (s.S == 3)
      direct_backward_weight<VL, KB3, 3, 3, M>(s, dy, x, dw, db);
    else if (VL == 16 && (s.K == 5 || s.K == 6))
      direct_backward_weight<VL, 6, 5, 3, M>(s, dy, x, dw, db);
    else
      direct_backward_weight<VL, KB5, 5, 5, M>(s, dy, x, dw, db);
  };
  run(std::false_type{});
  // the last vector of a row reads x past the row, where dy's lanes are zero: an infinite x there gives NaN (0 times
  // infinity) where the sum has none. Where dw is not finite, the pass runs again with those x lanes masked (every
  // load masked cost LeNet conv1's weight gradient 4%).
  if (any_non_finite(dw, s.K * s.C * s.R * s.S)) run(std::true_type{});
}

// Forward convolution vectorised over filters, for rows too narrow to fill vectors along the output row: a tile
// of QT output pixels of one row x KV vectors of filters in registers; per kernel tap, KV loads of the tap's
// filter weights and QT broadcasts of x from the zero-padded image (any stride, dilation or padding; UNIT: both 1
// horizontally, known at compile time). S_FIXED as in direct_forward.
// Kernel rows that read only padding are skipped. Each output element sums its taps in (c, r, t) order, then adds
// the bias and applies ReLU (keeping NaN): the same order whatever the thread count. Work is shared out by
// ForwardParts. Workspace: the weights regrouped by block, and per part one padded image and one image's outputs of
// its blocks.
template <int VL, int KV, int QT, int S_FIXED, bool UNIT>
void filter_vector_forward(const ConvShape& s, const float* x, const float* w, const float* bias, bool relu,
                           float* y, ConvWeightCache* cache) {
  typedef float vec __attribute__((vector_size(4 * VL)));
  constexpr int64_t KB = int64_t(KV) * VL;
  const int64_t C = s.C, K = s.K, R = s.R, S = S_FIXED ? S_FIXED : s.S, P = s.P, Q = s.Q, H = s.H, W = s.W;
  const int64_t CRS = C * R * S;
  const int64_t k_blocks = (K + KB - 1) / KB, q_tiles = (Q + QT - 1) / QT;
  const int64_t sh = s.stride_h, sw = UNIT ? 1 : s.stride_w, dh = s.dil_h, dwid = UNIT ? 1 : s.dil_w;
  const int64_t Hp = H + 2 * s.pad_h;
  const int64_t Wp = std::max(W + 2 * s.pad_w, (q_tiles * QT - 1) * sw + (S - 1) * dwid + 1);  // tiles past Q
  const PackTransposedKernel transpose = kernels().gemm.pack_transposed;
  std::vector<float> bp(static_cast<size_t>(k_blocks * KB), 0.0f);  // the bias in the same lanes
  if (bias) std::copy(bias, bias + K, bp.begin());
  // an image's outputs are kept pixel-major ([k block][pixel][filter in block]) and transposed into y's planes by
  // the ISA's transposing packer: one scalar store per output cost ~15% of LeNet conv2's forward
  const int64_t PQ = P * Q;
  std::vector<int64_t> pixel_rows(static_cast<size_t>(PQ));
  for (int64_t i = 0; i < PQ; ++i) pixel_rows[i] = i * KB;
  const int nt = threads_for(s.N * K * P * Q * CRS);
  const ForwardParts parts(w, K, CRS, KB, s.N, nt, cache);
  parallel_for(parts.parts(), nt, [&](int64_t part) {
    const int64_t kb_first = parts.first_block(part), kb_last = parts.end_block(part);
    const int64_t row_floats = Wp, plane_floats = Hp * Wp, tap_row_floats = dh * Wp;  // as in direct_forward
    LineFloats own;
    const float* const w_block = parts.weights(part, own);  // [k block][c][r][t][KB]
    std::vector<float> xp;  // the padded image, where it needs one
    LineFloats out(static_cast<size_t>((kb_last - kb_first) * PQ * KB));
    const int64_t n_end = parts.end_image(part);
    for (int64_t n = parts.first_image(part); n < n_end; ++n) {
      const float* xn = padded_image(s, x + n * C * H * W, Hp, Wp, xp);
      const float* next = n + 1 < n_end ? x + (n + 1) * C * H * W : nullptr;
      float* yn = y + n * K * P * Q;
      for (int64_t p = 0; p < P; ++p) {
        NextImageLines ahead(next, C * H * W, p, P);
        const auto [r_lo, r_hi] = image_rows(s, p);
        for (int64_t q0 = 0; q0 < q_tiles * QT; q0 += QT) {
          for (int64_t kb = kb_first; kb < kb_last; ++kb) {
            vec acc[QT][KV];
            for (int j = 0; j < QT; ++j)
              for (int v = 0; v < KV; ++v) acc[j][v] = vec{};
            const float* x_c = xn + (p * sh + r_lo * dh) * row_floats + q0 * sw;
            const float* w_c = w_block + (kb - kb_first) * C * R * S * KB + r_lo * S * KB;
            for (int64_t c = 0; c < C; ++c, x_c += plane_floats, w_c += R * S * KB) {
              ahead.step();
              const float* row = x_c;
              const float* wk = w_c;
              for (int64_t r = r_lo; r < r_hi; ++r, row += tap_row_floats) {
                for (int64_t t = 0; t < S; ++t, wk += KB) {
                  vec wv[KV];
                  for (int v = 0; v < KV; ++v) std::memcpy(&wv[v], wk + v * VL, sizeof(vec));
                  const float* xt = row + t * dwid;
                  // with AVX2's 16 registers, x's pointer is made opaque at each tap: GCC otherwise keeps the
                  // broadcasts shared by neighbouring taps (pixel j at tap t is pixel j + 1 at t - 1) across the
                  // unrolled taps and spills accumulators through the stack (measured Zen 3, 1 thread, LeNet conv2
                  // n=64 forward 0.53 -> 0.38 ms)
                  if constexpr (VL == 8) __asm__ volatile("" : "+r"(xt));
                  for (int j = 0; j < QT; ++j) {
                    const float xv = xt[j * sw];
                    for (int v = 0; v < KV; ++v) acc[j][v] += wv[v] * xv;
                  }
                }
              }
            }
            vec bv[KV];
            for (int v = 0; v < KV; ++v) std::memcpy(&bv[v], &bp[kb * KB + v * VL], sizeof(vec));
            for (int j = 0; j < QT; ++j)
              for (int v = 0; v < KV; ++v) {
                const vec o = acc[j][v] + bv[v];
                acc[j][v] = relu ? relu_keep_nan_lanes<VL>(o) : o;
              }
            const int64_t pixels = std::min<int64_t>(QT, Q - q0);
            float* dst = &out[((kb - kb_first) * PQ + p * Q + q0) * KB];
            for (int j = 0; j < QT; ++j)
              if (j < pixels)
                for (int v = 0; v < KV; ++v) std::memcpy(dst + j * KB + v * VL, &acc[j][v], sizeof(vec));
          }
        }
        ahead.rest();
      }
      for (int64_t kb = kb_first; kb < kb_last; ++kb)
        transpose(&out[(kb - kb_first) * PQ * KB], pixel_rows.data(), PQ, PQ, std::min(KB, K - kb * KB), 1.0f,
                  yn + kb * KB * PQ);
    }
  });
}

// Winograd F(2, 5) and F(5, 2) along rows (winograd_rows_forward, RowWinogradWeights), at the points 0, 1, -1, 2, -2
// and infinity, and F(4, 5) and F(5, 4), at those and 1/2, -1/2 (F(6, 3)'s points), share their input transform: each
// tile of a row's outputs (RowTile) reads the 6 or 8 input columns from its own, which B^T turns into its 6 or 8
// points: V[c][slot][row], the tile's points at slots tile.slot .. tile.slot + points - 1 of each row of image xs (C
// planes of Hp x Wp), each slot HV floats (whole vectors; rows past Hp zero). Each plane is first transposed into
// `plane` (Wp columns of HV floats, by the ISA's packer; plane_rows: h * Wp for h < Hp), so that B^T runs along the
// columns in vectors of rows. F(2, 5)'s B^T has integer coefficients, F(4, 5)'s binary fractions (quarters): both exact
// on small integers.
constexpr int64_t kPairPoints = 6, kQuadPoints = 8;

struct RowTile {
  int64_t col, outputs, points, slot;  // first output (and input) column, outputs (2 or 4), points, first slot
};

// A row of Q outputs in tiles of 4 (F(4, 5) or F(5, 4)) while 4 remain, then of 2 (F(2, 5) or F(5, 2)); an output past
// Q (Q odd) is computed and dropped. The tiles of 4 come first.
inline std::vector<RowTile> row_tiles(int64_t Q) {
  std::vector<RowTile> tiles;
  for (int64_t col = 0, slot = 0; col < Q;) {
    const int64_t outputs = Q - col >= 4 ? 4 : 2;
    tiles.push_back({col, outputs, outputs + 4, slot});
    slot += outputs + 4;
    col += outputs;
  }
  return tiles;
}

// The tiles' points summed: V's slots per row.
inline int64_t row_slots(const std::vector<RowTile>& tiles) { return tiles.back().slot + tiles.back().points; }

// G, the kernel row's 5 taps to the tile's points, scaled to integers: F(2, 5)'s times 24, F(4, 5)'s times 90 (the
// sums are multiplied by 1/24 or 1/90 at the end).
constexpr float kRowG24[kPairPoints][5] = {{6, 0, 0, 0, 0},  {-4, -4, -4, -4, -4}, {-4, 4, -4, 4, -4},
                                           {1, 2, 4, 8, 16}, {1, -2, 4, -8, 16},   {0, 0, 0, 0, 24}};
constexpr float kRowG90[kQuadPoints][5] = {{-90, 0, 0, 0, 0}, {-20, -20, -20, -20, -20}, {-20, 20, -20, 20, -20},
                                           {1, 2, 4, 8, 16},  {1, -2, 4, -8, 16},         {64, 32, 16, 8, 4},
                                           {64, -32, 16, -8, 4}, {0, 0, 0, 0, 90}};

// The image-lane kernels' transformed taps (ImageLaneForward, ImageLaneInputGradient): for each point of the tiles'
// kinds (the quads' and the pairs', in the order the tiles first show them; the tiles of a kind share its points), U's
// `block` floats from `point * block` on are the sum over t of G[t] times the taps regrouped as wr[t], rows of `block`
// floats: one sum of whole rows, vectorised (made tap by tap and tile by tile, U had taken ~4% of a LeNet conv2
// forward at n=64, on one thread while the other waited). slot_point[slot]: each slot's point in U.
inline LineFloats row_points_taps(const std::vector<RowTile>& tiles, const LineFloats& wr, int64_t block,
                                  int64_t* slot_point) {
  const float* G[kQuadPoints + kPairPoints];
  int64_t points = 0, kind_first[2] = {-1, -1};  // the quad and pair kinds' first points in U
  for (const RowTile& tile : tiles) {
    int64_t& first = kind_first[tile.points == kPairPoints];
    if (first < 0) {
      first = points;
      for (int64_t i = 0; i < tile.points; ++i) G[points++] = tile.points == kPairPoints ? kRowG24[i] : kRowG90[i];
    }
    for (int64_t i = 0; i < tile.points; ++i) slot_point[tile.slot + i] = first + i;
  }
  LineFloats U(static_cast<size_t>(points * block));
  for (int64_t point = 0; point < points; ++point) {
    float g[5];
    std::copy(G[point], G[point] + 5, g);
    float* u = &U[point * block];
    for (int64_t j = 0; j < block; ++j) {
      float sum = g[0] * wr[j];
      for (int t = 1; t < 5; ++t) sum += g[t] * wr[t * block + j];
      u[j] = sum;
    }
  }
  return U;
}

// B^T on one row tile's input columns (winograd_rows_forward's transform): its points, F(2, 5)'s 6 or F(4, 5)'s 8
// (tile.points), from the tile's columns, vectors of VL floats `in` floats apart from src, stored `out` floats apart
// from v. F(4, 5)'s row 0 is the textbook row negated (d0 - 5.25 d2 + 5.25 d4 - d6), as are 90 G's row 0 (-90) and
// the weight gradient's Gd[0] (-90 dy0): the signs cancel in each product.
template <int VL>
inline void row_tile_points(const RowTile& tile, const float* src, int64_t in, float* v, int64_t out) {
  typedef float vec __attribute__((vector_size(4 * VL)));
  const auto load = [](const float* p) {
    vec x;
    std::memcpy(&x, p, sizeof(vec));
    return x;
  };
  if (tile.points == kPairPoints) {
    vec d[kPairPoints];
#pragma GCC unroll 8
    for (int i = 0; i < kPairPoints; ++i) d[i] = load(src + i * in);
    const vec b[kPairPoints] = {4 * d[0] - 5 * d[2] + d[4],        -4 * d[1] - 4 * d[2] + d[3] + d[4],
                               4 * d[1] - 4 * d[2] - d[3] + d[4], -2 * d[1] - d[2] + 2 * d[3] + d[4],
                               2 * d[1] - d[2] - 2 * d[3] + d[4], 4 * d[1] - 5 * d[3] + d[5]};
#pragma GCC unroll 8
    for (int xi = 0; xi < kPairPoints; ++xi) std::memcpy(v + xi * out, &b[xi], sizeof(vec));
    return;
  }
  vec d[kQuadPoints];
#pragma GCC unroll 8
  for (int i = 0; i < kQuadPoints; ++i) d[i] = load(src + i * in);
  const vec t1 = d[2] + d[6] - 4.25f * d[4], t2 = d[1] + d[5] - 4.25f * d[3];
  const vec t3 = 0.25f * d[2] + d[6] - 1.25f * d[4], t4 = 0.5f * d[1] + 2 * d[5] - 2.5f * d[3];
  const vec t5 = 4 * d[2] + d[6] - 5 * d[4], t6 = 2 * d[1] + 0.5f * d[5] - 2.5f * d[3];
  const vec b[kQuadPoints] = {5.25f * (d[2] - d[4]) + (d[6] - d[0]), t1 + t2, t1 - t2, t3 + t4, t3 - t4,
                              t5 + t6, t5 - t6, 5.25f * (d[3] - d[5]) + (d[7] - d[1])};
#pragma GCC unroll 8
  for (int xi = 0; xi < kQuadPoints; ++xi) std::memcpy(v + xi * out, &b[xi], sizeof(vec));
}

// The weight gradient's scaled A on one row tile's dy (winograd_rows_weight_image's transform): its points, F(5, 2)'s 6
// or F(5, 4)'s 8 (tile.points), integer multiples of the tile's 2 or 4 outputs (vectors of VL floats, VL apart from
// dy; all zero where dy is null), stored `out` floats apart from v.
template <int VL>
inline void row_tile_dy_points(const RowTile& tile, const float* dy, float* v, int64_t out) {
  typedef float vec __attribute__((vector_size(4 * VL)));
  vec d[4] = {};
#pragma GCC unroll 4
  for (int e = 0; e < 4; ++e)  // a constant count: a run-time one became a call to memcpy
    if (dy && e < tile.outputs) std::memcpy(&d[e], dy + e * VL, sizeof(vec));
  if (tile.points == kPairPoints) {
    const vec gd[kPairPoints] = {6 * d[0],        -4 * (d[0] + d[1]), -4 * (d[0] - d[1]),
                                 d[0] + 2 * d[1], d[0] - 2 * d[1],    24 * d[1]};
#pragma GCC unroll 8
    for (int xi = 0; xi < kPairPoints; ++xi) std::memcpy(v + xi * out, &gd[xi], sizeof(vec));
    return;
  }
  const vec even = d[0] + d[2], odd = d[1] + d[3];
  const vec gd[kQuadPoints] = {-90 * d[0],
                               -20 * (even + odd),
                               -20 * (even - odd),
                               (d[0] + 4 * d[2]) + (2 * d[1] + 8 * d[3]),
                               (d[0] + 4 * d[2]) - (2 * d[1] + 8 * d[3]),
                               (64 * d[0] + 16 * d[2]) + (32 * d[1] + 8 * d[3]),
                               (64 * d[0] + 16 * d[2]) - (32 * d[1] + 8 * d[3]),
                               90 * d[3]};
#pragma GCC unroll 8
  for (int xi = 0; xi < kQuadPoints; ++xi) std::memcpy(v + xi * out, &gd[xi], sizeof(vec));
}

template <int VL>
void winograd_rows_inputs(const float* xs, int64_t C, int64_t Hp, int64_t Wp, int64_t HV,
                          const std::vector<RowTile>& tiles, int64_t slots, const int64_t* plane_rows, float* plane,
                          float* V) {
  const PackTransposedKernel transpose = kernels().gemm.pack_transposed;
  for (int64_t c = 0; c < C; ++c) {
    transpose(xs + c * Hp * Wp, plane_rows, Hp, HV, Wp, 1.0f, plane);  // plane[col * HV + row]
    for (const RowTile& tile : tiles) {
      float* v = V + (c * slots + tile.slot) * HV;
      const float* src = plane + tile.col * HV;
      for (int64_t h = 0; h < HV; h += VL) {
        row_tile_points<VL>(tile, src + h, HV, v + h, HV);
      }
    }
  }
}

// Forward of a stride-1 convolution with 5-tap kernel rows by Winograd's minimal filtering along the rows, vectorised
// over filters as filter_vector_forward is (a pixel's VL filters in one vector; outputs kept pixel-major, then
// transposed into y's planes): each row's outputs in tiles of 4 by F(4, 5) and a last tile of 2 by F(2, 5) (row_tiles),
// a kernel row's 4 outputs from 8 multiplies instead of 20, 2 from 6 instead of 10 (LeNet conv2's rows of 10: 22
// instead of 50). The tile's 8 or 6 input columns are transformed by B^T, the kernel row's 5 taps by G (once per call),
// and the tile is A^T times the products summed over the channels and kernel rows. G is scaled to integers (90 G, 24 G)
// and the sums multiplied by 1/90 or 1/24 at the end; B^T and A^T have binary fractions at most (quarters and eighths)
// and the bias joins the sums scaled: sums of small integers are exact while every partial sum stays below a bound
// (F(2, 5): 2^24; F(4, 5): 2^22, its sums being quarters, and 2^19 once A^T's eighths enter), and 90 y (24 y) times the
// float nearest 1/90 (1/24) rounds to y for every such y. With integers in [-3, 3] F(2, 5)'s bound holds for every
// layer the gate admits, F(4, 5)'s for random ones (over 3,000 random sums of LeNet conv2's shape, its partial sums
// stayed below an eighth of it) but not for every input. Per image: V (winograd_rows_inputs); for each tile's point xi,
// PB output rows' accumulators sum U[c][r][xi] (the filters' transformed taps) times V[c][slot][p + r] broadcast, over
// (c, r) in order; A^T, the bias and ReLU (keeping NaN) then give the tile's pixels. Every output sums in the same
// order whatever the thread count. The transforms subtract and scale: an infinite x or w would give inf - inf = NaN
// where the direct sum keeps the infinity, and values near the float range overflow sooner, so an image with a
// non-finite output before ReLU (any non-finite x or w makes some output so) runs again by the direct kernel
// (filter_vector_forward). Workspace: the transformed weights, and per thread one padded image, one transposed plane,
// one image's V, one tile's products and one image's outputs.
template <int VL, int PB>
void winograd_rows_forward(const ConvShape& s, const float* x, const float* w, const float* bias, bool relu,
                           float* y) {
  typedef float vec __attribute__((vector_size(4 * VL)));
  typedef uint32_t uvec __attribute__((vector_size(4 * VL)));
  constexpr int64_t KB = VL, S = 5;
  const int64_t C = s.C, K = s.K, R = s.R, P = s.P, Q = s.Q, H = s.H, W = s.W, PQ = P * Q, CRS = C * R * S;
  const std::vector<RowTile> tiles = row_tiles(Q);
  const int64_t slots = row_slots(tiles);
  const int64_t row_blocks = (P + PB - 1) / PB;
  const int64_t Hp = H + 2 * s.pad_h, Wp = std::max(W + 2 * s.pad_w, tiles.back().col + tiles.back().points);
  // a transposed column in whole vectors, with zero rows past the image for the last row block's reads
  const int64_t HV = (std::max(Hp, row_blocks * PB + R - 1) + VL - 1) / VL * VL;
  // U6[c][r][xi][KB] = 24 G, U8[c][r][xi][KB] = 90 G times each filter's kernel row, zero lanes past K, from the
  // weights as [c][r][t][KB]
  const PackTransposedKernel transpose = kernels().gemm.pack_transposed;
  const LineFloats wt = filters_in_lanes(w, K, CRS, KB);
  const auto transform_taps = [&](const auto& G) {  // U[c][r][xi][KB] = G times kernel row (c, r)
    constexpr int64_t T = sizeof(G) / sizeof(G[0]);
    LineFloats U(static_cast<size_t>(C * R * T * KB));
    for (int64_t cr = 0; cr < C * R; ++cr) {
      vec g[S];
      for (int t = 0; t < S; ++t) std::memcpy(&g[t], &wt[(cr * S + t) * KB], sizeof(vec));
      for (int64_t xi = 0; xi < T; ++xi) {
        vec u = G[xi][0] * g[0];
        for (int t = 1; t < S; ++t) u += G[xi][t] * g[t];
        std::memcpy(&U[(cr * T + xi) * KB], &u, sizeof(vec));
      }
    }
    return U;
  };
  const LineFloats U6 = transform_taps(kRowG24), U8 = transform_taps(kRowG90);
  float bias24[VL] = {}, bias90[VL] = {};  // the bias, in the filters' lanes, times 24 and 90
  for (int64_t k = 0; k < K && bias; ++k) bias24[k] = 24 * bias[k], bias90[k] = 90 * bias[k];
  vec b24, b90;
  std::memcpy(&b24, bias24, sizeof(vec));
  std::memcpy(&b90, bias90, sizeof(vec));
  std::vector<int64_t> plane_rows(static_cast<size_t>(Hp)), pixel_rows(static_cast<size_t>(PQ));
  for (int64_t h = 0; h < Hp; ++h) plane_rows[h] = h * Wp;
  // out holds rows of Qe pixels (Q rounded up to even: a last tile's dropped output lands past the row's pixels)
  const int64_t Qe = (Q + 1) / 2 * 2;
  for (int64_t i = 0; i < PQ; ++i) pixel_rows[i] = (i / Q * Qe + i % Q) * KB;
  const int nt = threads_for(s.N * K * PQ * CRS);
  const int64_t chunks = std::min<int64_t>(s.N, nt);
  parallel_for(chunks, nt, [&](int64_t chunk) {
    std::vector<float> xp;
    LineFloats plane(static_cast<size_t>(Wp * HV)), V(static_cast<size_t>(C * slots * HV));
    LineFloats M(static_cast<size_t>(kQuadPoints * row_blocks * PB * KB)), out(static_cast<size_t>(P * Qe * KB));
    for (int64_t n = chunk * s.N / chunks; n < (chunk + 1) * s.N / chunks; ++n) {
      const float* xn = x + n * C * H * W;
      float* yn = y + n * K * PQ;
      winograd_rows_inputs<VL>(padded_image(s, xn, Hp, Wp, xp), C, Hp, Wp, HV, tiles, slots, plane_rows.data(),
                               plane.data(), V.data());
      bool non_finite = false;
      for (const RowTile& tile : tiles) {
        const int64_t T = tile.points;
        const float* U = T == kPairPoints ? U6.data() : U8.data();
        for (int64_t xi = 0; xi < T; ++xi)
          for (int64_t rb = 0; rb < row_blocks; ++rb) {
            vec acc[PB];
            for (int i = 0; i < PB; ++i) acc[i] = vec{};
            const float* u_c = &U[xi * KB];
            const float* v_c = &V[(tile.slot + xi) * HV + rb * PB];
            if (R == 5) {
              // the 5 kernel rows' U in registers and each of the PB + 4 input rows broadcast once, feeding the (up to
              // 5) output rows it meets: the same sums in the same (c, r) order
              for (int64_t c = 0; c < C; ++c, v_c += slots * HV, u_c += 5 * T * KB) {
                vec uv[5];
                for (int r = 0; r < 5; ++r) std::memcpy(&uv[r], u_c + r * T * KB, sizeof(vec));
#pragma GCC unroll 16
                for (int j = 0; j < PB + 4; ++j) {
                  const float vj = v_c[j];
#pragma GCC unroll 5
                  for (int r = 0; r < 5; ++r)
                    if (j - r >= 0 && j - r < PB) acc[j - r] += uv[r] * vj;
                }
              }
            } else {
              for (int64_t c = 0; c < C; ++c, v_c += slots * HV) {
                for (int64_t r = 0; r < R; ++r, u_c += T * KB) {
                  vec uv;
                  std::memcpy(&uv, u_c, sizeof(vec));
                  for (int i = 0; i < PB; ++i) acc[i] += uv * v_c[r + i];
                }
              }
            }
            float* m = &M[(xi * row_blocks + rb) * PB * KB];
            for (int i = 0; i < PB; ++i) std::memcpy(m + i * KB, &acc[i], sizeof(vec));
          }
        // A^T, the bias, ReLU: the tile's pixels of each output row
        const int64_t stride = row_blocks * PB * KB;  // between points in M
        // the outputs' exponent_carry, ORed (a vector live only here: across the products it cost them a register,
        // and GCC spilled an accumulator there, 0.78x)
        uvec carries{};
        for (int64_t p = 0; p < P; ++p) {
          vec mv[kQuadPoints], o[4];
          for (int xi = 0; xi < T; ++xi) std::memcpy(&mv[xi], &M[xi * stride + p * KB], sizeof(vec));
          // the tile's outputs into out's row p (a dropped one, Q odd, past the row's pixels; its check only costs a
          // rerun), each checked for a non-finite value and through ReLU
          const auto put = [&](auto count) {
            for (int e = 0; e < decltype(count)::value; ++e) {
              uvec bits;
              std::memcpy(&bits, &o[e], sizeof(vec));
              carries |= exponent_carry_lanes<VL>(bits);
              if (relu) o[e] = relu_keep_nan_lanes<VL>(o[e]);
              std::memcpy(&out[(p * Qe + tile.col + e) * KB], &o[e], sizeof(vec));
            }
          };
          // the bias joins the sums scaled: added after the final multiply, a contracted multiply-add would add it to
          // the unrounded product (inexact on integers)
          if (T == kPairPoints) {
            o[0] = ((mv[0] + mv[1]) + (mv[2] + mv[3]) + (mv[4] + b24)) * (1.0f / 24);
            o[1] = ((mv[1] - mv[2]) + 2 * (mv[3] - mv[4]) + (mv[5] + b24)) * (1.0f / 24);
            put(std::integral_constant<int, 2>{});
          } else {
            const vec s1 = mv[1] + mv[2], d1 = mv[1] - mv[2], s2 = mv[3] + mv[4], d2 = mv[3] - mv[4];
            const vec s3 = mv[5] + mv[6], d3 = mv[5] - mv[6];
            o[0] = ((mv[0] + b90) + s1 + s2 + s3) * (1.0f / 90);
            o[1] = (d1 + 2 * d2 + 0.5f * d3 + b90) * (1.0f / 90);
            o[2] = (s1 + 4 * s2 + 0.25f * s3 + b90) * (1.0f / 90);
            o[3] = (d1 + 8 * d2 + 0.125f * d3 + (mv[7] + b90)) * (1.0f / 90);
            put(std::integral_constant<int, 4>{});
          }
        }
        uint32_t lanes[VL];
        std::memcpy(lanes, &carries, sizeof(lanes));
        non_finite |= std::any_of(lanes, lanes + VL, [](uint32_t c) { return (c & 0x80000000u) != 0; });
      }
      if (non_finite) {
        ConvShape one = s;
        one.N = 1;
        filter_vector_forward<VL, 1, 10, 5, true>(one, xn, w, bias, relu, yn, nullptr);
        continue;
      }
      transpose(out.data(), pixel_rows.data(), PQ, PQ, K, 1.0f, yn);
    }
  });
}

// Forward of a stride-1, unpadded convolution with 5 x 5 kernels on rows of 10 outputs and 9 to 16 filters (LeNet-5's
// conv2) on AVX2, with VL images in the vector lanes: the filters-in-lanes forwards need two 8-float vectors a
// pixel there, which with 16 registers left too few for Winograd's tiles (winograd_rows_forward with two vectors ran
// 0.62-0.65x), whereas a lane per image leaves every filter a scalar, broadcast. Each row's outputs in tiles of 4 by
// F(4, 5) and a last tile of 2 by F(2, 5) (row_tiles; winograd_rows_forward's transforms, B^T on the tile's 8 or 6
// input columns, G on the kernel rows, A^T on the products, with the same scalings, so the same exactness on small
// integers): a row of 10 from 22 multiplies a kernel row instead of 50. A task is a group of VL images: x transposed to
// [c][h][w][VL] by the ISA's packer, V[xi][c][h] the points of each input row's tiles, then for each block of PB output
// rows and KB filters and each slot xi, KB x PB accumulators sum U[xi's point][c][r][k] (broadcast) times V[xi][c][p +
// r] over (c, r) in order (each broadcast feeding the block's rows), and A^T, the bias (scaled, as
// winograd_rows_forward adds it) and ReLU (keeping NaN) give the outputs, transposed back into y. Every output sums in
// the same order whatever the thread count. A group whose outputs before ReLU are not all finite (an infinite or NaN
// x or w: inf - inf in the transforms; values near the float range) writes none of its y and is left to redo_marked.
// Workspace per task: its x transposed, V, its outputs; U once.
template <int VL>
class ImageLaneForward {
  typedef float vec __attribute__((vector_size(4 * VL)));
  typedef uint32_t uvec __attribute__((vector_size(4 * VL)));
  static constexpr int KB = 6, PB = 2;  // filters and output rows per block of accumulators (12 vectors)

 public:
  // y of the first `groups` * VL images of the batch
  ImageLaneForward(const ConvShape& s, int64_t groups, const float* x, const float* w, const float* bias, bool relu,
                   float* y)
      : s_(s), groups_(groups), x_(x), y_(y), relu_(relu), tiles_(row_tiles(s.Q)) {
    const int64_t C = s.C, K = s.K, R = s.R;
    KP_ = (K + KB - 1) / KB * KB;
    XI_ = row_slots(tiles_);
    // U[point][c][r][k] (zero past K), from the taps regrouped as wr[t][c][r][k]
    const int64_t block = C * R * KP_;  // U's floats per point
    LineFloats wr(static_cast<size_t>(5 * block), 0.0f);
    for (int64_t k = 0; k < K; ++k)
      for (int64_t cr = 0; cr < C * R; ++cr)
        for (int t = 0; t < 5; ++t) wr[(t * C * R + cr) * KP_ + k] = w[(k * C * R + cr) * 5 + t];
    U_ = row_points_taps(tiles_, wr, block, slot_point_);
    for (int64_t k = 0; k < K && bias; ++k) bias24_[k] = 24 * bias[k], bias90_[k] = 90 * bias[k];
    image_rows_.resize(VL);
    for (int64_t i = 0; i < VL; ++i) image_rows_[i] = i * C * s.H * s.W;
    output_rows_.resize(static_cast<size_t>(s.K * s.P * s.Q));
    for (int64_t j = 0; j < s.K * s.P * s.Q; ++j) output_rows_[j] = j * VL;
    redone_.assign(static_cast<size_t>(groups), 0);
  }

  int64_t tasks() const { return groups_; }

  void operator()(int64_t group) const {
    const int64_t C = s_.C, K = s_.K, R = s_.R, P = s_.P, Q = s_.Q, H = s_.H, W = s_.W, PQ = P * Q, HW = H * W;
    const int64_t n0 = group * VL, XI = XI_, KP = KP_;
    const int64_t rows = (P + PB - 1) / PB * PB + R - 1;  // V's rows a channel: H, and zero rows for a last block
    const int64_t g_floats = C * HW * VL, v_floats = XI * C * rows * VL, m_floats = KB * PB * XI * VL;
    const int64_t out_floats = K * PQ * VL;
    const CachedBlock<float> work(g_floats + v_floats + m_floats + out_floats);
    float *g = work.get(), *V = g + g_floats, *M = V + v_floats, *out = M + m_floats;
    const PackTransposedKernel transpose = kernels().gemm.pack_transposed;
    transpose(x_ + n0 * C * HW, image_rows_.data(), VL, VL, C * HW, 1.0f, g);  // g[c][h][w][VL]
    // V[xi][c][h]: B^T on each input row's tiles (rows past H zero)
    const int64_t point = C * rows * VL;  // between a row's points in V
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t h = H; h < rows; ++h)
        for (int64_t xi = 0; xi < XI; ++xi) store(V + xi * point + (c * rows + h) * VL, vec{});
      for (int64_t h = 0; h < H; ++h)
        for (const RowTile& tile : tiles_)
          row_tile_points<VL>(tile, g + ((c * H + h) * W + tile.col) * VL, VL,
                              V + tile.slot * point + (c * rows + h) * VL, point);
    }
    uvec carries{};  // the outputs' exponent_carry before ReLU, ORed
    for (int64_t p0 = 0; p0 < P; p0 += PB)
      for (int64_t k0 = 0; k0 < KP; k0 += KB) {
        for (int64_t xi = 0; xi < XI; ++xi) {
          vec acc[KB][PB];
#pragma GCC unroll 6
          for (int kk = 0; kk < KB; ++kk)
#pragma GCC unroll 2
            for (int pp = 0; pp < PB; ++pp) acc[kk][pp] = vec{};
          const float* u = &U_[slot_point_[xi] * C * R * KP + k0];
          const float* v = V + xi * point + p0 * VL;
          for (int64_t c = 0; c < C; ++c, v += rows * VL)
            for (int64_t r = 0; r < R; ++r, u += KP) {
              // each weight broadcast once for the block's two rows
              const vec v0 = load(v + r * VL), v1 = load(v + (r + 1) * VL);
#pragma GCC unroll 6
              for (int kk = 0; kk < KB; ++kk) {
                const vec b = u[kk] - vec{};  // a broadcast (x - 0 is x, -0 included; 0 + x is not)
                acc[kk][0] += b * v0;
                acc[kk][1] += b * v1;
              }
            }
#pragma GCC unroll 6
          for (int kk = 0; kk < KB; ++kk)
#pragma GCC unroll 2
            for (int pp = 0; pp < PB; ++pp) store(M + ((kk * PB + pp) * XI + xi) * VL, acc[kk][pp]);
        }
        // A^T, the bias, ReLU: each filter's tiles of the block's rows (the bias added after the final multiply, as in
        // winograd_rows_forward)
        for (int64_t kk = 0; kk < KB && k0 + kk < K; ++kk)
          for (int64_t pp = 0; pp < PB && p0 + pp < P; ++pp)
            for (const RowTile& tile : tiles_) {
              const float* m = M + ((kk * PB + pp) * XI + tile.slot) * VL;
              vec mv[kQuadPoints], o[4];
              for (int64_t i = 0; i < tile.points; ++i) mv[i] = load(m + i * VL);
              const int64_t k = k0 + kk;
              if (tile.points == kPairPoints) {
                const vec b24 = vec{} + bias24_[k];
                o[0] = ((mv[0] + mv[1]) + (mv[2] + mv[3]) + (mv[4] + b24)) * (1.0f / 24);
                o[1] = ((mv[1] - mv[2]) + 2 * (mv[3] - mv[4]) + (mv[5] + b24)) * (1.0f / 24);
              } else {
                const vec b90 = vec{} + bias90_[k];
                const vec s1 = mv[1] + mv[2], d1 = mv[1] - mv[2], s2 = mv[3] + mv[4], d2 = mv[3] - mv[4];
                const vec s3 = mv[5] + mv[6], d3 = mv[5] - mv[6];
                o[0] = ((mv[0] + b90) + s1 + s2 + s3) * (1.0f / 90);
                o[1] = (d1 + 2 * d2 + 0.5f * d3 + b90) * (1.0f / 90);
                o[2] = (s1 + 4 * s2 + 0.25f * s3 + b90) * (1.0f / 90);
                o[3] = (d1 + 8 * d2 + 0.125f * d3 + (mv[7] + b90)) * (1.0f / 90);
              }
              for (int64_t e = 0; e < tile.outputs; ++e) {
                uvec bits;
                std::memcpy(&bits, &o[e], sizeof(vec));
                carries |= exponent_carry_lanes<VL>(bits);
                store(out + ((k * P + p0 + pp) * Q + tile.col + e) * VL, relu_ ? relu_keep_nan_lanes<VL>(o[e]) : o[e]);
              }
            }
      }
    uint32_t lanes[VL];
    std::memcpy(lanes, &carries, sizeof(lanes));
    if (std::any_of(lanes, lanes + VL, [](uint32_t c) { return (c & 0x80000000u) != 0; })) {
      redone_[group] = 1;
      return;
    }
    // out[k][p][q][VL] transposed: each image's K * P * Q outputs, in a row of y
    transpose(out, output_rows_.data(), K * PQ, K * PQ, VL, 1.0f, y_ + n0 * K * PQ);
  }

  // redo(n) for each image of the marked groups (after all the tasks)
  template <typename Redo>
  void redo_marked(const Redo& redo) const {
    for (int64_t group = 0; group < groups_; ++group)
      if (redone_[group])
        for (int64_t n = group * VL; n < (group + 1) * VL; ++n) redo(n);
  }

 private:
  static vec load(const float* p) {
    vec v;
    std::memcpy(&v, p, sizeof(vec));
    return v;
  }
  static void store(float* p, const vec& v) { std::memcpy(p, &v, sizeof(vec)); }

  ConvShape s_;
  int64_t groups_;
  const float* x_;
  float* y_;
  bool relu_;
  std::vector<RowTile> tiles_;
  int64_t KP_ = 0, XI_ = 0;  // filters in whole blocks; slots
  static constexpr int64_t kMaxSlots = 24;  // row_slots of Q <= 10
  int64_t slot_point_[kMaxSlots] = {};      // each slot's point in U
  float bias24_[16] = {}, bias90_[16] = {};  // the bias times 24 and 90 (at most 16 filters)
  LineFloats U_;
  std::vector<int64_t> image_rows_, output_rows_;
  mutable std::vector<char> redone_;  // each task writes its own element
};

// Runs filter_vector_forward where rows are at most half a vector wide (vectors along them would idle half their
// lanes; e.g. 8x8 feature maps), with more than half a vector of filters, one group, and at most 36 Ki floats
// (144 KiB) of weights per block of filters (larger blocks stream from L2 for every pixel tile: measured 1.7x
// slower than GEMM on 7x7 maps with 512 channels). One vector of filters when they fit in one, else two per
// block; tiles of VL/2 pixels. With 16-float vectors, rows of 9 or 10 pixels with at most 16 filters (LeNet-5's
// conv2) also run here, a row per tile of 10: vectors along them idled 6 of 16 lanes (measured 15-25% faster).
// Unit horizontal stride and dilation make each pixel's and tap's x a constant displacement (run-time offsets
// outnumber the registers). Returns false, doing nothing, elsewhere. (Measured on wider rows, 11-32 pixels, the
// direct kernels and GEMM were as fast or faster.) Horizontally strided rows up to a vector wide also run here,
// where the direct kernels (stride 1) do not and the im2col GEMM packs a short run per output row and tap (both builds
// in one process, calls alternated, median of per-pair time ratios, AMD Zen 4, 2 threads, forward: ResNet-20's 16 ->
// 32 3x3/2 on 32 x 32, n=128 1.25x, n=32 1.39x, n=2 1.22x, n=1 1.11x; 64 -> 64 3x3/2 on 32 x 32 n=8 1.24x, 32 -> 64
// on 28 x 28 n=8 1.27x, 16 -> 24 5x5/2 n=8 1.14x; AVX2, rows of 5-8: ResNet-20's 32 -> 64 3x3/2 1.14x, 8 -> 16 3x3/2
// on 16 x 16 3.0x, 16 -> 24 5x5/2 1.32x). With 8-float vectors the 16 filters of such rows go in two
// vectors, tiles of 5 (measured AVX2 Zen 3, 2 threads, LeNet conv2 n=64 forward 0.53 -> 0.36 ms over vectors along
// the row, 16 lanes for 10 pixels). Layers with more than 128 Ki weights go to GEMM: every pixel tile streams all the
// weights (measured AVX-512, 2 threads, batch 1: 1024 -> 2048 1x1/2 on 14x14 10.2 -> 1.7 ms, 128 -> 128 3x3 on 8x8
// 0.44 -> 0.15; batch 32 of the latter 3.3 -> 3.1). Batch 1 has the same rule, its filter blocks shared out over the
// threads (ForwardParts): when one thread ran the image, batch 1 stopped at 36 Ki weights (64 -> 128 3x3 on 8 x 8,
// 72 Ki, 0.74x of GEMM on 2 threads); shared out, up to 128 Ki beats GEMM (both builds in one process, calls
// alternated, median of per-pair time ratios, AMD Zen 4, batch 1, 2 threads / 1 thread: 64 -> 128 3x3 on 8 x 8 1.32x
// / 1.10x, 96 -> 96 1.08x / 1.10x, 128 -> 96 1.08x / 1.10x, 64 -> 128 3x3/2 on 16 x 16 1.46x / 1.14x). A route may
// not depend on the thread count (the bits would). 1x1 kernels go to GEMM: a pixel tile then takes one tap per channel,
// so every C x K weight is loaded for VL / 2 pixels' few FMAs, where the GEMM loads each once per row panel (1x1/2,
// as ResNet's downsampling shortcuts, frozen, each build in one process, calls alternated, median of per-pair time
// ratios, Intel Xeon family 6 model 167, 2 / 1 threads: 128 -> 256 on 28 x 28 n=1 1.68 / 2.05x, n=8 1.89 / 1.80x;
// 256 -> 512 on 14 x 14 n=1 1.50 / 1.73x, n=8 1.66 / 1.68x; 16 -> 32 on 32 x 32 n=1 1.13 / 1.07x; 32 -> 64 on 16 x
// 16 n=128 1.10 / 1.07x, n=1 1.10 / 1.02x; 64 -> 128 on 16 x 16 n=1, 10 us, 0.91 / 1.25x).
// On AVX-512, such rows of 9 or 10 pixels with 5-wide kernels at stride 1 (LeNet-5's conv2) run Winograd's F(4, 5)
// and F(2, 5) along the rows instead (winograd_rows_forward; both builds in one process, calls alternated, median of
// per-pair time ratios, AMD Zen 4, LeNet conv2 n=64 forward: F(2, 5) alone 1.18x on 1 thread, 1.14x on 2, over this
// kernel; tiles of 4 by F(4, 5) then 1.13x on 1 and 2 threads, forward+backward 1.03x; with 8-float vectors, two per
// pixel's filters and rows in blocks of 5, F(2, 5) ran 0.62-0.65x: AVX2 runs them with the images in the lanes from
// 16 images on, ImageLaneForward, and this kernel below).
template <int VL>
bool filter_vector_forward_any(const ConvShape& s, const float* x, const float* w, const float* bias, bool relu,
                               float* y, ConvWeightCache* cache) {
  const int64_t kv = s.K <= VL ? 1 : 2;
  const bool tens = kv * VL == 16 && s.K <= 16 && (s.Q == 9 || s.Q == 10);
  const int64_t weights = s.K * s.C * s.R * s.S;
  const bool strided_row = s.stride_w > 1 && s.Q <= VL;
  if (s.groups != 1 || s.R * s.S == 1 || (2 * s.Q > VL && !tens && !strided_row) || 2 * s.K <= VL ||
      s.C * s.R * s.S * kv * VL > 36864 || weights > 131072)
    return false;
  if constexpr (VL == 16) {  // whole blocks of 10 output rows
    if (tens && s.S == 5 && s.stride_h == 1 && s.stride_w == 1 && s.dil_h == 1 && s.dil_w == 1 && s.P % 10 == 0) {
      winograd_rows_forward<VL, 10>(s, x, w, bias, relu, y);
      return true;
    }
  }
  if constexpr (VL == 8) {  // whole groups of 8 images in the lanes from 16 images on; the images past them below
    const int64_t groups = s.N / VL;
    if (tens && groups >= 2 && s.R == 5 && s.S == 5 && s.Q == 10 && s.stride_h == 1 && s.stride_w == 1 &&
        s.dil_h == 1 && s.dil_w == 1 && s.pad_h == 0 && s.pad_w == 0) {
      // the groups handed out as free (Schedule::as_free), as are those of the AVX2 backward's two image-lane passes:
      // on the shared AMD EPYC Zen 3 the second vCPU's speed comes and goes, and a thread done with its own groups
      // then takes the other's last (both builds in one process, calls alternated, median of per-pair time ratios, 2
      // threads, LeNet conv2 n=64 forward+backward: 1.03-1.19x in 4 runs, 0.99-1.03x in 6 others; n=32 0.99-1.00x;
      // on AVX-512 (AMD Zen 4) the lane passes as free had run 0.97-0.99x)
      const ImageLaneForward<VL> lanes(s, groups, x, w, bias, relu, y);
      parallel_for(lanes.tasks(), threads_for(groups * VL * s.K * s.P * s.Q * s.C * 25), lanes, Schedule::as_free);
      ConvShape rest = s;
      const auto run_images = [&](int64_t n0, int64_t count) {
        rest.N = count;
        filter_vector_forward<VL, 2, 5, 5, true>(rest, x + n0 * s.C * s.H * s.W, w, bias, relu,
                                                 y + n0 * s.K * s.P * s.Q, nullptr);
      };
      lanes.redo_marked([&](int64_t n) { run_images(n, 1); });
      if (s.N > groups * VL) run_images(groups * VL, s.N - groups * VL);
      return true;
    }
  }
  // one image on the threads: two vectors of filters in one block (nothing to share out) go as two blocks of one
  // (the same bits: each lane sums its own filter's taps in the same order). Both builds in one process, calls
  // alternated, median of per-pair time ratios, AMD Zen 4, ResNet-20's 16 -> 32 3x3/2 on 32 x 32, n=1: 2 threads
  // 1.28-1.31x; on 1 thread one block of two vectors stays (blocks of one ran 0.88x).
  const bool one_block_shared = s.N == 1 && s.K <= 2 * VL && threads_for(weights * s.P * s.Q) > 1;
  const auto run = [&](auto unit) {
    with_kernel_width(s, [&](auto width) {
      if (tens)
        filter_vector_forward<VL, 16 / VL, 10 * VL / 16, width, unit>(s, x, w, bias, relu, y, cache);
      else if (kv == 1 || one_block_shared)
        filter_vector_forward<VL, 1, VL / 2, width, unit>(s, x, w, bias, relu, y, cache);
      else
        filter_vector_forward<VL, 2, VL / 2, width, unit>(s, x, w, bias, relu, y, cache);
    });
  };
  if (s.stride_w == 1 && s.dil_w == 1)
    run(std::true_type{});
  else
    run(std::false_type{});
  return true;
}

// Weight gradient vectorised over filters: dw[k][c][r][t] = sum over (n, p, q) of dy[n][k][p][q] *
// x[n][c][p*sh - ph + r*dh][q*sw - pw + t*dw], with the filters in the vector lanes (KV vectors, zero lanes past K).
// A work unit is one block of KV x VL filters (filter_blocks: more filters take several), one input channel and a
// block of RB kernel rows: KV x RB x S accumulators, fed per output pixel by KV loads of the pixel's dy (dy transposed
// per image to [pixel][filter] by the ISA's transposing packer, all blocks' filters of a pixel together) and RB x S
// broadcasts of x from a zero-padded copy of the image (any stride, dilation or padding, no bounds checks).
// UNIT_DIL (horizontal dilation 1) makes each tap's column a constant displacement from its kernel row's pointer:
// with a run-time dilation the RB x S tap offsets outnumbered the registers and were reloaded from the stack
// around every FMA. The batch is cut into image_chunks(s) chunks spread over the threads; a chunk takes its
// images one at a time and runs every unit on each (filter_vector_weight_image), carrying the unit's accumulators
// from image to image (the first image's start from zero); the chunks' sums are then added in a fixed tree (the
// pass, filter_vector_weight_pass) and regrouped into dw (filter_vector_weight_sum). Every dw element is summed in the
// same order whatever the thread count, and no lanes are ever added together. db, where not null, gets the bias
// gradient from the same chunks (bias_partials_add per image: the bits of conv2d_backward_bias_fast). Workspace: per
// chunk the accumulators and the bias partials, per thread one padded image and one transposed dy image.
// Blocks of KV x VL filters, and the floats of accumulators per chunk.
template <int VL, int KV>
int64_t filter_blocks(const ConvShape& s) {
  return (s.K + KV * VL - 1) / (KV * VL);
}
template <int VL, int KV, int RB, int S>
int64_t weight_chunk_floats(const ConvShape& s) {
  return filter_blocks<VL, KV>(s) * s.C * (s.R / RB) * int64_t(KV) * RB * S * VL;
}

// Adds one image's terms to a chunk's accumulators `sums`: xp is the image zero-padded to Hp = H + 2 ph rows of
// Wp = W + 2 pw, g its dy transposed, pixel (p, q)'s filters at g + p * g_row + q * KP (KP: all blocks' lanes),
// those of filter block b from b * KV * VL on.
template <int VL, int KV, int RB, int S, bool UNIT_DIL>
void filter_vector_weight_image(const ConvShape& s, const float* xp, const float* g, int64_t g_row, bool first,
                                float* sums) {
  typedef float vec __attribute__((vector_size(4 * VL)));
  const int64_t C = s.C, R = s.R, P = s.P, Q = s.Q, blocks = filter_blocks<VL, KV>(s), KP = blocks * KV * VL;
  const int64_t Hp = s.H + 2 * s.pad_h, Wp = s.W + 2 * s.pad_w, row_blocks = R / RB, units_per_block = C * row_blocks;
  const int64_t units = blocks * units_per_block;
  const int64_t sh = s.stride_h, sw = s.stride_w, dh = s.dil_h * Wp, dwid = UNIT_DIL ? 1 : s.dil_w;
  constexpr int64_t kUnitFloats = int64_t(KV) * RB * S * VL;
  // output rows per pass over the units: their transposed dy (at most 16 KiB, at least one row) stays in L1
  const int64_t rows_per_block = std::max<int64_t>(1, 4096 / (Q * KP));
  for (int64_t p0 = 0; p0 < P; p0 += rows_per_block) {
    const int64_t p1 = std::min(P, p0 + rows_per_block);
    for (int64_t unit = 0; unit < units; ++unit) {
      const int64_t block = unit / units_per_block, c = unit % units_per_block / row_blocks;
      const int64_t r0 = unit % row_blocks * RB;
      float* saved = sums + unit * kUnitFloats;
      vec acc[KV][RB][S];
      for (int v = 0; v < KV; ++v)
        for (int r = 0; r < RB; ++r)
          for (int t = 0; t < S; ++t) {
            acc[v][r][t] = vec{};
            if (!first || p0 > 0) std::memcpy(&acc[v][r][t], saved + ((v * RB + r) * S + t) * VL, sizeof(vec));
          }
      for (int64_t p = p0; p < p1; ++p) {
        const float* xrow = &xp[(c * Hp + p * sh) * Wp] + r0 * dh;
        const float* xr[RB];  // the unit's kernel rows
        for (int r = 0; r < RB; ++r) xr[r] = xrow + r * dh;
        const float* gp = g + p * g_row + block * KV * VL;
        int64_t q = 0;
        if constexpr (VL != 16 && KV == 1 && RB == 1 && UNIT_DIL) {
          // with 16 registers and one vector of filters, pixels in fours: x's S + 3 values under the four windows are
          // broadcast once each, x at u feeding tap u - j of pixel j. The groups of four alternate between the unit's
          // accumulators and a second set, added into them at the row's end (each tap's sum takes the row's even
          // groups in order, then its odd ones): one set's S chains kept two FMA units with 4 cycles of latency
          // half idle (LeNet conv1's weight gradient n=64, CONVCORE_ISA=avx2 on AMD Zen 4, both builds in one process,
          // alternating: 1.30x on 1 thread, 1.13x on 2).
          constexpr int G = 4;
          const auto group = [&](int64_t at, const float* dy_at, vec(&sums_at)[S]) {
            vec gj[G];
#pragma GCC unroll 4
            for (int j = 0; j < G; ++j) std::memcpy(&gj[j], dy_at + j * KP, sizeof(vec));
            // with AVX2's 16 registers, x's row through a pointer GCC cannot follow: it otherwise kept the x values
            // two groups share in registers from one group to the next and spilled two accumulators to the stack
            // for them (measured Zen 3, LeNet conv1 n=64 weight gradient, 1 and 2 threads: 1.00-1.05x)
            const float* x_at = xr[0] + at;
            if constexpr (VL == 8) __asm__ volatile("" : "+r"(x_at));
#pragma GCC unroll 16
            for (int u = 0; u < S + G - 1; ++u) {
              const float xv = x_at[u];
#pragma GCC unroll 4
              for (int j = 0; j < G; ++j)
                if (u - j >= 0 && u - j < S) sums_at[u - j] += gj[j] * xv;
            }
          };
          if (sw == 1) {
            vec odd[S];
            for (int t = 0; t < S; ++t) odd[t] = vec{};
            for (; q + 2 * G <= Q; q += 2 * G, gp += 2 * G * KP) {
              group(q, gp, acc[0][0]);
              group(q + G, gp + G * KP, odd);
            }
            if (q + G <= Q) {
              group(q, gp, acc[0][0]);
              q += G;
              gp += G * KP;
            }
            for (int t = 0; t < S; ++t) acc[0][0][t] += odd[t];
          }
        }
        for (; q < Q; ++q, gp += KP) {
          vec gv[KV];
          for (int v = 0; v < KV; ++v) std::memcpy(&gv[v], gp + v * VL, sizeof(vec));
          const int64_t col = q * sw;
          for (int r = 0; r < RB; ++r)
            for (int t = 0; t < S; ++t) {
              const float xv = xr[r][col + t * dwid];
              for (int v = 0; v < KV; ++v) acc[v][r][t] += gv[v] * xv;
            }
        }
      }
      for (int v = 0; v < KV; ++v)
        for (int r = 0; r < RB; ++r)
          for (int t = 0; t < S; ++t) std::memcpy(saved + ((v * RB + r) * S + t) * VL, &acc[v][r][t], sizeof(vec));
    }
  }
}

// dw from the accumulators `sums` (the chunks' added: filter_vector_weight_pass).
template <int VL, int KV, int RB, int S>
void filter_vector_weight_sum(const ConvShape& s, const float* state, float* dw) {
  const int64_t K = s.K, C = s.C, R = s.R, row_blocks = R / RB, units_per_block = C * row_blocks;
  const int64_t units = filter_blocks<VL, KV>(s) * units_per_block;
  constexpr int64_t kUnitFloats = int64_t(KV) * RB * S * VL;
  for (int64_t unit = 0; unit < units; ++unit) {
    const int64_t c = unit % units_per_block / row_blocks, r0 = unit % row_blocks * RB;
    for (int v = 0; v < KV; ++v)
      for (int r = 0; r < RB; ++r)
        for (int t = 0; t < S; ++t) {
          const float* sums = state + unit * kUnitFloats + ((int64_t(v) * RB + r) * S + t) * VL;
          const int64_t k0 = (unit / units_per_block * KV + v) * VL;
          for (int64_t k = k0; k < std::min<int64_t>(K, k0 + VL); ++k)
            dw[((k * C + c) * R + r0 + r) * S + t] = sums[k - k0];
        }
  }
}

// filter_vector_weight's units (filter_vector_weight_image, filter_vector_weight_sum) as the method of
// filter_vector_weight_pass.
template <int VL, int KV, int RB, int S, bool UNIT_DIL>
struct DirectWeights {
  int64_t chunk_floats(const ConvShape& s) const { return weight_chunk_floats<VL, KV, RB, S>(s); }
  int64_t scratch_floats(const ConvShape&) const { return 0; }
  void image(const ConvShape& s, const float* xp, const float* g, int64_t g_row, bool first, float* sums,
             float*) const {
    filter_vector_weight_image<VL, KV, RB, S, UNIT_DIL>(s, xp, g, g_row, first, sums);
  }
  bool sum(const ConvShape& s, float* state, float* dw) const {
    filter_vector_weight_sum<VL, KV, RB, S>(s, state, dw);
    return true;
  }
};

// The weight gradient of 5 x 5 kernels at stride 1 with VL filters and an even number of output columns by
// Winograd's F(5, 4) and F(5, 2) along the rows, as filter_vector_weight_pass's method (RowWinogradWeights): each
// output row's dy columns in tiles of 4 and 2 (row_tiles), a tile's 4 (2) dy columns meeting the 8 (6) input columns
// under them (the 5 taps of its pixels) in 8 (6) multiplies instead of 20 (10); LeNet conv2's rows of 10: 22 instead
// of 50. The tile's dy columns (the filters in the vector lanes) are transformed by a scaled A into Gd[p][slot], the
// input columns by B^T (V, winograd_rows_inputs, as the forward's), their products summed per (c, r, point) over the
// chunk's images, rows and tiles, in that order; once, after the chunks' sums (in a fixed tree), 90 dw (24 dw) = A^T of
// each kind's sums, times 1/90 (1/24), the two added. By the transposition principle F(5, m)'s G and A^T are F(m, 5)'s
// A and G transposed, up to a diagonal scaling moved between them: with the scales of 90 and 24, Gd's coefficients
// are integers, B^T's and A^T's binary fractions. Sums of integers are exact while every partial sum stays below
// 2^24 in the units of its fractions: for F(5, 2) with integers in [-3, 3] a transformed product is at most 2,160 and
// A^T weighs the sums by up to 16 (rows of pairs only, Q = 2: ~190 images of 10 such rows in the worst case); F(5, 4)'s
// tap sums count in 1/32s, below 2^19, which one adversarial LeNet conv2 image can pass (~1 M), but random such
// integers stayed exact (LeNet conv2's shape, batches up to 128, three draws each; the direct sums stay exact far
// longer). Where the taps are not finite (an infinity or NaN in
// x or dy: every input and dy value meets a product, and inf - inf gives NaN where the direct sum keeps the infinity;
// or a sum past the float range) the sum writes nothing and returns false, and the caller runs the direct units.
// Workspace: per chunk the sums (C x 5 x 14 vectors); per thread one transposed plane, one image's V and Gd.
// Its geometry: the padded image (Hp x Wp), V's columns (HV floats, whole vectors of vl), the tiles of dy's columns
// (slots: their points summed), and the offsets of the padded image's rows for the transposing packer.
struct RowWinogradLayout {
  int64_t Hp, Wp, HV;
  std::vector<RowTile> tiles;
  int64_t slots, quads;  // quads: the tiles of 4, first
  std::vector<int64_t> plane_rows;  // h * Wp
  RowWinogradLayout(const ConvShape& s, int64_t vl)
      : Hp(s.H + 2 * s.pad_h), Wp(s.W + 2 * s.pad_w), HV((Hp + vl - 1) / vl * vl), tiles(row_tiles(s.Q)),
        slots(row_slots(tiles)),
        quads(std::count_if(tiles.begin(), tiles.end(), [](const RowTile& t) { return t.points == kQuadPoints; })),
        plane_rows(static_cast<size_t>(Hp)) {
    for (int64_t h = 0; h < Hp; ++h) plane_rows[h] = h * Wp;
  }
  int64_t scratch_floats(const ConvShape& s, int64_t vl) const {
    return Wp * HV + s.C * slots * HV + s.P * slots * vl;
  }
};

// The sums of a weight-gradient chunk: per (c, r), the F(5, 4) tiles' 8 points then the F(5, 2) tiles' 6.
constexpr int64_t kWeightSums = kQuadPoints + kPairPoints;

// Adds one image's products to a chunk's sums[c][r][kWeightSums][VL]: xp the padded image, g its dy transposed (pixel
// (p, q)'s filters at g + p * g_row + q * VL).
template <int VL>
void winograd_rows_weight_image(const ConvShape& s, const RowWinogradLayout& m, const float* xp, const float* g,
                                int64_t g_row, bool first, float* sums, float* scratch) {
  typedef float vec __attribute__((vector_size(4 * VL)));
  constexpr int64_t R = 5;
  const int64_t C = s.C, P = s.P, HV = m.HV, slots = m.slots;
  float *plane = scratch, *V = plane + m.Wp * HV, *Gd = V + C * slots * HV;
  winograd_rows_inputs<VL>(xp, C, m.Hp, m.Wp, HV, m.tiles, slots, m.plane_rows.data(), plane, V);
  // Gd[p][slot]: each tile's dy columns (the filters in the lanes) by its scaled A: integers
  for (int64_t p = 0; p < P; ++p)
    for (const RowTile& tile : m.tiles)
      row_tile_dy_points<VL>(tile, g + p * g_row + tile.col * VL, Gd + (p * slots + tile.slot) * VL, VL);
  // per channel and tile kind, the points in groups of X (4 of F(5, 4)'s, 3 of F(5, 2)'s): 5 X accumulators. The
  // tiles of a kind are adjacent in the slots (row_tiles: the quads first), `count` of them from slot0, `points` apart.
  const auto group = [&](auto width, int64_t c, int64_t slot0, int64_t count, int64_t points, int64_t sum0) {
    constexpr int X = decltype(width)::value;
    vec acc[R][X];
    float* saved = sums + (c * R * kWeightSums + sum0) * VL;
    for (int r = 0; r < R; ++r)
      for (int x = 0; x < X; ++x) {
        acc[r][x] = vec{};
        if (!first) std::memcpy(&acc[r][x], saved + (r * kWeightSums + x) * VL, sizeof(vec));
      }
    const float* v_c = V + (c * slots + slot0) * HV;
    for (int64_t p = 0; p < P; ++p)
      for (int64_t i = 0; i < count; ++i) {
        const float* gd = Gd + (p * slots + slot0 + i * points) * VL;
        const float* v = v_c + i * points * HV + p;
        for (int x = 0; x < X; ++x) {
          vec gv;
          std::memcpy(&gv, gd + x * VL, sizeof(vec));
          for (int r = 0; r < R; ++r) acc[r][x] += gv * v[x * HV + r];
        }
      }
    for (int r = 0; r < R; ++r)
      for (int x = 0; x < X; ++x) std::memcpy(saved + (r * kWeightSums + x) * VL, &acc[r][x], sizeof(vec));
  };
  const int64_t quads = m.quads, pairs = int64_t(m.tiles.size()) - quads, pair0 = quads * kQuadPoints;
  for (int64_t c = 0; c < C; ++c) {  // a kind without tiles still has its sums written (zero) on a chunk's first image
    group(std::integral_constant<int, 4>{}, c, 0, quads, kQuadPoints, 0);
    group(std::integral_constant<int, 4>{}, c, 4, quads, kQuadPoints, 4);
    group(std::integral_constant<int, 3>{}, c, pair0, pairs, kPairPoints, kQuadPoints);
    group(std::integral_constant<int, 3>{}, c, pair0 + 3, pairs, kPairPoints, kQuadPoints + 3);
  }
}

// dw from the sums `state` (the chunks' added: filter_vector_weight_pass); false (dw not written)
// where they hold an infinity or NaN.
template <int VL>
bool winograd_rows_weight_sum(const ConvShape& s, float* state, float* dw) {
  typedef float vec __attribute__((vector_size(4 * VL)));
  constexpr int64_t R = 5, T = kWeightSums;
  const int64_t C = s.C, K = s.K;
  // the taps, [c][r][t][VL], over the sums (each (c, r)'s sums read before its 5 taps are written):
  // 90 dw by F(5, 4)'s A^T (its G transposed, scaled), 24 dw by F(5, 2)'s, each times its 1/90 or 1/24, then added
  for (int64_t c = 0; c < C; ++c)
    for (int64_t r = 0; r < R; ++r) {
      vec q[kQuadPoints], m[kPairPoints];
      float* at = state + (c * R + r) * T * VL;
      std::memcpy(q, at, sizeof(q));
      std::memcpy(m, at + kQuadPoints * VL, sizeof(m));
      const vec s1 = q[1] + q[2], d1 = q[1] - q[2], s2 = q[3] + q[4], d2 = q[3] - q[4];
      const vec s3 = q[5] + q[6], d3 = q[5] - q[6];
      const vec quad[5] = {q[0] + s1 + s2 + s3, d1 + 2 * d2 + 0.5f * d3, s1 + 4 * s2 + 0.25f * s3,
                           d1 + 8 * d2 + 0.125f * d3, s1 + 16 * s2 + 0.0625f * s3 + q[7]};
      const vec pair[5] = {(m[0] + m[1]) + (m[2] + m[3]) + m[4], (m[1] - m[2]) + 2 * (m[3] - m[4]),
                           (m[1] + m[2]) + 4 * (m[3] + m[4]), (m[1] - m[2]) + 8 * (m[3] - m[4]),
                           (m[1] + m[2]) + 16 * (m[3] + m[4]) + m[5]};
      for (int t = 0; t < 5; ++t) {
        vec from_quads = quad[t] * (1.0f / 90), from_pairs = pair[t] * (1.0f / 24);
        // both rounded before the add: contracted into a multiply-add, an unrounded product would miss integers (5 +
        // -5 giving the product's rounding error instead of 0)
        __asm__("" : "+v"(from_quads), "+v"(from_pairs));
        const vec tap = from_quads + from_pairs;
        std::memcpy(at + t * VL, &tap, sizeof(vec));
      }
    }
  for (int64_t cr = 0; cr < C * R; ++cr)
    if (any_non_finite(state + cr * T * VL, 5 * VL)) return false;
  for (int64_t k = 0; k < K; ++k)
    for (int64_t cr = 0; cr < C * R; ++cr)
      for (int t = 0; t < 5; ++t) dw[(k * C * R + cr) * 5 + t] = state[(cr * T + t) * VL + k];
  return true;
}

// Where the weight gradient takes F(5, 4) and F(5, 2) along the rows (RowWinogradWeights), with dx or without it (the
// same bits either way): on AVX-512 (the caller's test), one group, 5 x 5 kernels at stride 1 without dilation, 9 to 16
// filters, an even number of output columns, at most 10 (LeNet conv2's; wider rows are unmeasured).
inline bool row_winograd_weight_applies(const ConvShape& s) {
  return s.groups == 1 && s.R == 5 && s.S == 5 && s.stride_h == 1 && s.stride_w == 1 && s.dil_h == 1 &&
         s.dil_w == 1 && s.K > 8 && s.K <= 16 && s.Q % 2 == 0 && s.Q <= 10;
}

template <int VL>
struct RowWinogradWeights {
  RowWinogradLayout layout;
  explicit RowWinogradWeights(const ConvShape& s) : layout(s, VL) {}
  int64_t chunk_floats(const ConvShape& s) const { return s.C * 5 * kWeightSums * VL; }
  int64_t scratch_floats(const ConvShape& s) const { return layout.scratch_floats(s, VL); }
  void image(const ConvShape& s, const float* xp, const float* g, int64_t g_row, bool first, float* sums,
             float* scratch) const {
    winograd_rows_weight_image<VL>(s, layout, xp, g, g_row, first, sums, scratch);
  }
  bool sum(const ConvShape& s, float* state, float* dw) const {
    return winograd_rows_weight_sum<VL>(s, state, dw);
  }
};

// dy's image dyn (K planes of P x Q) transposed by the ISA's packer into g: pixel (p, q)'s KP filters at g + p * g_row
// + q * KP, zero past K; where g_row is wider than a row (Q * KP), the floats past the row are left as they are.
// filter_rows: each filter's plane, k * P * Q.
inline void transpose_dy_image(const ConvShape& s, const float* dyn, const int64_t* filter_rows, int64_t KP,
                               int64_t g_row, float* g) {
  const PackTransposedKernel transpose = kernels().gemm.pack_transposed;
  if (g_row == s.Q * KP)
    transpose(dyn, filter_rows, s.K, KP, s.P * s.Q, 1.0f, g);  // the image in one call
  else
    for (int64_t p = 0; p < s.P; ++p) transpose(dyn + p * s.Q, filter_rows, s.K, KP, s.Q, 1.0f, g + p * g_row);
}

// The sums of `chunks` chunks (per_chunk floats each, consecutive) added in a fixed binary tree: node [lo, hi) is
// [lo, mid) + [mid, hi), mid = (lo + hi + 1) / 2, its sum written into chunk lo, so every element sums in the same
// order whatever the thread count. Adds, children first, floats [f0, f1) of each node of [lo, hi) that take(lo, hi)
// accepts (those it does not, the caller added or adds elsewhere).
template <typename Take>
void add_chunk_tree(float* sums, int64_t per_chunk, int64_t lo, int64_t hi, int64_t f0, int64_t f1, const Take& take) {
  if (hi - lo < 2) return;
  const int64_t mid = (lo + hi + 1) / 2;
  add_chunk_tree(sums, per_chunk, lo, mid, f0, f1, take);
  add_chunk_tree(sums, per_chunk, mid, hi, f0, f1, take);
  if (!take(lo, hi)) return;
  float* to = sums + lo * per_chunk;
  const float* from = sums + mid * per_chunk;
  for (int64_t i = f0; i < f1; ++i) to[i] += from[i];
}

// The pass over the batch of filter_vector_weight, shared with channel_vector_backward: image chunks over the
// threads; per image the bias gradient's partials (where db is not null), x zero-padded (padded_image), dy
// transposed by the ISA's packer into g (pixel (p, q)'s KP filters at g + p * g_row + q * KP, zero past K
// and, where g_row is wider than a row, past Q), the weight gradient's terms (weights.image, into the chunk's
// weights.chunk_floats sums, which its first image writes rather than adds to, with weights.scratch_floats of
// workspace), then more(n, g) (channel_vector_backward's dx rows); then db, and the chunks' sums added by
// add_chunk_tree and turned into dw by weights.sum. Returns weights.sum's answer (false: dw not written). `work` sizes
// the thread count. Each thread takes a run of whole chunks, its part, and adds the tree's nodes within it; the nodes
// across parts are added after (the floats shared out over the threads where there are many). The padded image, g and
// the scratch are each part's, kept from chunk to chunk (g's zeros past K and Q and the padding stay as the first image
// left them).
template <typename Weights, typename More>
bool filter_vector_weight_pass(const ConvShape& s, const float* dy, const float* x, int64_t KP, int64_t g_row,
                               int64_t work, const Weights& weights, float* dw, float* db, const More& more) {
  const int64_t N = s.N, C = s.C, K = s.K, P = s.P, PQ = P * s.Q;
  const int64_t Hp = s.H + 2 * s.pad_h, Wp = s.W + 2 * s.pad_w;
  const int64_t chunks = image_chunks(s), per_chunk = weights.chunk_floats(s);
  const int64_t bias_floats = bias_partial_floats(s);
  std::vector<int64_t> filter_rows(static_cast<size_t>(K));  // dy's plane of each filter in an image
  for (int64_t k = 0; k < K; ++k) filter_rows[k] = k * PQ;
  const CachedBlock<float> state(chunks * per_chunk);  // each chunk's first image writes its sums
  float* const sums = state.get();
  std::vector<float> bias(db ? static_cast<size_t>(chunks * bias_floats) : 0, 0.0f);
  const int nt = static_cast<int>(std::min<int64_t>(threads_for(work), chunks));
  const auto part_first = [&](int64_t part) { return part * chunks / nt; };  // part's chunks: [first, next's first)
  parallel_for(nt, nt, [&](int64_t part) {
    const int64_t chunk0 = part_first(part), chunk1 = part_first(part + 1);
    std::vector<float> xp;  // the padded image, where it needs one
    LineFloats g(static_cast<size_t>(P * g_row), 0.0f), scratch(static_cast<size_t>(weights.scratch_floats(s)));
    for (int64_t chunk = chunk0; chunk < chunk1; ++chunk) {
      const int64_t first = chunk * N / chunks, end = (chunk + 1) * N / chunks;
      if (first == end) std::fill_n(sums + chunk * per_chunk, per_chunk, 0.0f);  // no image (N = 0)
      for (int64_t n = first; n < end; ++n) {
        const float* dyn = dy + n * K * PQ;
        if (db) bias_partials_add(s, dyn, 0, K, &bias[chunk * bias_floats]);
        const float* xn = padded_image(s, x + n * C * s.H * s.W, Hp, Wp, xp);
        transpose_dy_image(s, dyn, filter_rows.data(), KP, g_row, g.data());
        weights.image(s, xn, g.data(), g_row, n == first, sums + chunk * per_chunk, scratch.data());
        more(n, g.data());
      }
    }
    add_chunk_tree(sums, per_chunk, 0, chunks, 0, per_chunk,
                   [&](int64_t lo, int64_t hi) { return lo >= chunk0 && hi <= chunk1; });
  });
  if (db) bias_from_partials(s, bias.data(), chunks, db);
  // the nodes across parts, on as many threads as their floats merit, each a share of the floats in whole lines. So
  // the chunks' sums stay with the thread that writes them again next call but for the nodes across (LeNet conv2 on
  // 2 threads: the root). (Before, the chunks were added in chunk order, the floats shared out over the threads, and
  // each thread's writes next call to lines the other had read waited for them: where the host ran the two threads far
  // apart a chunk's first image took 3-4x as long.)
  const auto across = [&](int64_t lo, int64_t hi) {
    int64_t part = 0;
    while (part_first(part + 1) <= lo) ++part;
    return hi > part_first(part + 1);
  };
  const int64_t lines = (per_chunk + 15) / 16;
  const int64_t shares = std::min<int64_t>(threads_for((nt - 1) * per_chunk, 1 << 16), lines);  // >= nt - 1 nodes
  parallel_for(shares, shares, [&](int64_t share) {
    const int64_t lo = share * lines / shares * 16, hi = std::min(per_chunk, (share + 1) * lines / shares * 16);
    add_chunk_tree(sums, per_chunk, 0, chunks, lo, hi, across);
  });
  return weights.sum(s, sums, dw);
}

template <int VL, int KV, int RB, int S, bool UNIT_DIL>
void filter_vector_weight(const ConvShape& s, const float* dy, const float* x, float* dw, float* db) {
  const int64_t lanes = filter_blocks<VL, KV>(s) * KV * VL;
  filter_vector_weight_pass(s, dy, x, lanes, s.Q * lanes, s.N * s.K * s.P * s.Q * s.C * s.R * S,
                            DirectWeights<VL, KV, RB, S, UNIT_DIL>{}, dw, db, [](int64_t, const float*) {});
}

// Calls body(rows) with the kernel rows per filter_vector_weight unit as a compile-time constant: all of them when
// their KV x S x S accumulators, a pixel's KV dy vectors and a broadcast fit the vector registers (32 with 16-float
// vectors, else 16), else one (then, with one vector of filters, pixels in fours: filter_vector_weight_image).
// Measured Zen 3, 1 thread, both builds in one process, alternating, weight gradient: 128 x 16 x 32 x 32, 16 filters
// 3x3 (two vectors), 1.11x faster by one kernel row (6 accumulators) than by three (18, spilled); 8 filters 5x5 on
// 14 x 14, by one row and pixels in fours 1.08-1.10x faster than by five rows (25 accumulators, spilled; one row
// pixel by pixel, each pixel's 5 broadcasts feeding 5 FMAs, was 0.92x), LeNet conv1 n=64 1.17-1.27x.
template <int VL, int KV, int S, typename Body>
void with_weight_rows(const ConvShape& s, const Body& body) {
  constexpr int registers = VL == 16 ? 32 : 16;
  if constexpr (KV * S * S + KV + 1 <= registers) {
    if (s.R == S) {
      body(std::integral_constant<int, S>{});
      return;
    }
  }
  body(std::integral_constant<int, 1>{});
}

// Runs filter_vector_weight where it applies: one group, kernel width 3 or 5, and more than half a vector but at most
// two vectors of filters (measured: with fewer filters most lanes idle and direct_backward_weight is faster; with 4
// vectors in one block it only matched GEMM, with 4 x 3 accumulators per kernel row), or up to four in blocks of two
// where filter_blocks_apply; on AVX-512, by F(5, 4) and F(5, 2) along the rows where row_winograd_weight_applies (the
// direct units where its taps are not finite). Returns false, doing nothing, elsewhere.
template <int VL, int KV>
void filter_vector_weight_kv(const ConvShape& s, const float* dy, const float* x, float* dw, float* db) {
  const auto rows = [&](auto width) {
    with_weight_rows<VL, KV, width>(s, [&](auto rb) {
      if (s.dil_w == 1)
        filter_vector_weight<VL, KV, rb, width, true>(s, dy, x, dw, db);
      else
        filter_vector_weight<VL, KV, rb, width, false>(s, dy, x, dw, db);
    });
  };
  if (s.S == 3)
    rows(std::integral_constant<int, 3>{});
  else
    rows(std::integral_constant<int, 5>{});
}

// Up to four vectors of filters in blocks of two (each block's units 2 x 3 x 3 accumulators, as for 17-32 filters):
// with 16-float vectors, on maps of at most 256 output pixels, at least two images. The im2col GEMM's packing of
// these maps is runs of one output row (8 or 16 pixels) for all taps. Both builds in one process, calls alternated,
// median of per-pair time ratios, AMD Zen 4, 2 threads, weight gradient against the GEMM: ResNet-20's 64 -> 64 on 8
// x 8, n=128, 1.16x (1 thread 1.19x), its 32 -> 64 3x3/2 on 16 x 16 1.64x (1.50x), 32 -> 48 on 8 x 8 n=16 1.75x, 64
// -> 64 on 16 x 16 n=4 1.31x, n=32 1.08x, 128 -> 64 on 8 x 8 n=32 1.17x, 64 -> 64 5x5 on 16 x 16 n=16 1.06x, 64 ->
// 64 3x3/2 on 32 x 32 n=8 1.48x, n=32 1.22x, 64 -> 64 on 8 x 8 n=2 1.02x. Not on larger maps (64 -> 64 on 32 x 32
// n=32 0.96x, 56 x 56 n=8 1.00x, 112 x 112 n=2 0.94x; 32 -> 48 on 32 x 32 n=8 0.82x, 3 -> 64 on 224 x 224 0.56x), nor
// for one image (its one chunk runs on one thread: 64 -> 64 on 8 x 8 0.56x, 16 x 16 0.81x), more filters (128 -> 128
// on 8 x 8 n=32 0.84x, on 16 x 16 n=8 0.62x; 256 on 14 x 14 0.51x against Winograd), nor with 8-float vectors (16
// registers: one kernel row a unit; ResNet-20's 64 -> 64 on 8 x 8 0.90x, 32 -> 32 on 16 x 16 0.91x).
template <int VL>
bool filter_blocks_apply(const ConvShape& s) {
  return VL == 16 && s.K <= 4 * VL && s.P * s.Q <= 256 && s.N >= 2;
}

// The weight gradient of LeNet-5's conv2-like layers on AVX2 (ImageLaneForward's gate, whole groups of VL images
// only) with the images in the vector lanes, by F(5, 4) and F(5, 2) along the rows as RowWinogradWeights (its Gd,
// B^T and A^T; with two 8-float vectors of filters a pixel, the filters-in-lanes form left too few of the 16
// registers): a task is a group of VL images, x and dy transposed to [c][h][w][VL] and [k][p][q][VL] by the ISA's
// packer, V[c][slot][h] the input rows' tiles by B^T, Gd[k][slot][p] the dy rows' tiles by the scaled A; for each
// channel, point and block of KB filters, KB x 5 accumulators (the kernel rows) sum Gd[k][slot][p] times V[c][slot][p
// + r] over the kind's tiles and dy's rows in order; each sum's lanes are then added in a fixed tree and 90 dw (24 dw)
// is A^T of each kind's sums, times 1/90 (1/24), the two added: the group's terms. dw adds the groups' terms in group
// order, so it has the same bits whatever the thread count. A group whose terms are not all finite makes sum() return
// false (dw not written). Exact on small integers while the sums stay within RowWinogradWeights's bounds (a group's
// sums: VL images). Workspace per task: its x and dy transposed, V, Gd, its sums; the groups' terms.
template <int VL>
class ImageLaneWeightGradient {
  typedef float vec __attribute__((vector_size(4 * VL)));
  static constexpr int KB = 2, R = 5;  // filters per block of accumulators (KB x 5 vectors)

 public:
  ImageLaneWeightGradient(const ConvShape& s, const float* dy, const float* x)
      : s_(s), dy_(dy), x_(x), tiles_(row_tiles(s.Q)), XI_(row_slots(tiles_)),
        terms_(static_cast<size_t>(s.N / VL * s.K * s.C * R * 5)) {
    image_rows_x_.resize(VL);
    image_rows_dy_.resize(VL);
    for (int64_t i = 0; i < VL; ++i) image_rows_x_[i] = i * s.C * s.H * s.W, image_rows_dy_[i] = i * s.K * s.P * s.Q;
  }

  int64_t tasks() const { return s_.N / VL; }

  void operator()(int64_t group) const {
    const int64_t C = s_.C, K = s_.K, P = s_.P, Q = s_.Q, H = s_.H, W = s_.W, HW = H * W, PQ = P * Q, XI = XI_;
    const int64_t n0 = group * VL, KP = (K + KB - 1) / KB * KB;
    const int64_t gx_floats = C * HW * VL, gy_floats = K * PQ * VL, v_floats = C * XI * H * VL;
    // the sums, in whole runs of 8 (lane_sums; the vectors past the filters' sums zero)
    const int64_t sum_count = KP * C * R * kWeightSums, sum_runs = (sum_count + 7) / 8 * 8;
    const int64_t gd_floats = KP * XI * P * VL, sum_floats = sum_runs * VL;
    const CachedBlock<float> work(gx_floats + gy_floats + v_floats + gd_floats + sum_floats);
    float *gx = work.get(), *gy = gx + gx_floats, *V = gy + gy_floats, *Gd = V + v_floats, *sums = Gd + gd_floats;
    const PackTransposedKernel transpose = kernels().gemm.pack_transposed;
    transpose(x_ + n0 * C * HW, image_rows_x_.data(), VL, VL, C * HW, 1.0f, gx);
    transpose(dy_ + n0 * K * PQ, image_rows_dy_.data(), VL, VL, K * PQ, 1.0f, gy);
    // V[c][slot][h]: B^T on each input row's tiles
    for (int64_t c = 0; c < C; ++c)
      for (int64_t h = 0; h < H; ++h)
        for (const RowTile& tile : tiles_)
          row_tile_points<VL>(tile, gx + ((c * H + h) * W + tile.col) * VL, VL, V + ((c * XI + tile.slot) * H + h) * VL,
                              H * VL);
    // Gd[k][slot][p]: each dy row's tiles by the scaled A (winograd_rows_weight_image's); zero for filters past K
    for (int64_t k = 0; k < KP; ++k)
      for (int64_t p = 0; p < P; ++p)
        for (const RowTile& tile : tiles_)
          row_tile_dy_points<VL>(tile, k < K ? gy + ((k * P + p) * Q + tile.col) * VL : nullptr,
                                 Gd + ((k * XI + tile.slot) * P + p) * VL, P * VL);
    // sums[k][c][r][point]: over the kind's tiles (adjacent slots, the quads first) and dy's rows, in that order
    for (int64_t c = 0; c < C; ++c)
      for (int64_t k0 = 0; k0 < KP; k0 += KB)
        for (int kind = 0; kind < 2; ++kind) {
          const int64_t points = kind == 0 ? kQuadPoints : kPairPoints, sum0 = kind == 0 ? 0 : kQuadPoints;
          int64_t first = -1, count = 0;  // the kind's first slot and tiles
          for (const RowTile& tile : tiles_)
            if (tile.points == points) {
              if (first < 0) first = tile.slot;
              ++count;
            }
          for (int64_t xi = 0; xi < points; ++xi) {
            vec acc[KB][R];
#pragma GCC unroll 2
            for (int kk = 0; kk < KB; ++kk)
#pragma GCC unroll 5
              for (int r = 0; r < R; ++r) acc[kk][r] = vec{};
            for (int64_t i = 0; i < count; ++i) {
              const int64_t slot = first + i * points + xi;
              const float* gd = Gd + ((k0 * XI + slot) * P) * VL;
              const float* v = V + ((c * XI + slot) * H) * VL;
              for (int64_t p = 0; p < P; ++p, gd += VL, v += VL) {
                vec g[KB];
#pragma GCC unroll 2
                for (int kk = 0; kk < KB; ++kk) g[kk] = load(gd + kk * XI * P * VL);
#pragma GCC unroll 5
                for (int r = 0; r < R; ++r) {
                  const vec vr = load(v + r * VL);
#pragma GCC unroll 2
                  for (int kk = 0; kk < KB; ++kk) acc[kk][r] += g[kk] * vr;
                }
              }
            }
#pragma GCC unroll 2
            for (int kk = 0; kk < KB; ++kk)
#pragma GCC unroll 5
              for (int r = 0; r < R; ++r)
                store(sums + ((((k0 + kk) * C + c) * R + r) * kWeightSums + sum0 + xi) * VL, acc[kk][r]);
          }
        }
    // the group's terms: each sum's lanes in a fixed tree (into the first floats of sums: each run of 8 sums read
    // before its 8 floats are written), then A^T (winograd_rows_weight_sum's)
    std::fill(sums + sum_count * VL, sums + sum_floats, 0.0f);
    lane_sums(sums, sum_runs);
    float* terms = &terms_[group * K * C * R * 5];
    for (int64_t kcr = 0; kcr < K * C * R; ++kcr) {
      const float* q = sums + kcr * kWeightSums;
      const float* m = q + kQuadPoints;
      const float s1 = q[1] + q[2], d1 = q[1] - q[2], s2 = q[3] + q[4], d2 = q[3] - q[4];
      const float s3 = q[5] + q[6], d3 = q[5] - q[6];
      const float quad[5] = {q[0] + s1 + s2 + s3, d1 + 2 * d2 + 0.5f * d3, s1 + 4 * s2 + 0.25f * s3,
                             d1 + 8 * d2 + 0.125f * d3, s1 + 16 * s2 + 0.0625f * s3 + q[7]};
      const float pair[5] = {(m[0] + m[1]) + (m[2] + m[3]) + m[4], (m[1] - m[2]) + 2 * (m[3] - m[4]),
                             (m[1] + m[2]) + 4 * (m[3] + m[4]), (m[1] - m[2]) + 8 * (m[3] - m[4]),
                             (m[1] + m[2]) + 16 * (m[3] + m[4]) + m[5]};
      for (int t = 0; t < 5; ++t) {
        float from_quads = quad[t] * (1.0f / 90), from_pairs = pair[t] * (1.0f / 24);
        __asm__("" : "+x"(from_quads), "+x"(from_pairs));  // both rounded before the add (as there)
        terms[kcr * 5 + t] = from_quads + from_pairs;
      }
    }
  }

  // dw = the groups' terms added in group order (after all the tasks); false, dw not written, where they are not
  // all finite
  bool sum(float* dw) const {
    const int64_t n = s_.K * s_.C * R * 5;
    if (any_non_finite(terms_.data(), int64_t(terms_.size()))) return false;
    std::copy(terms_.begin(), terms_.begin() + n, dw);
    for (int64_t group = 1; group < tasks(); ++group)
      for (int64_t i = 0; i < n; ++i) dw[i] += terms_[group * n + i];
    return true;
  }

 private:
  static vec load(const float* p) {
    vec v;
    std::memcpy(&v, p, sizeof(vec));
    return v;
  }
  static void store(float* p, const vec& v) { std::memcpy(p, &v, sizeof(vec)); }
  // v[i] = the sum of the VL floats at v + i * VL, for i < n (a multiple of 8), each ((0 + 1) + (2 + 3)) + ((4 + 5)
  // + (6 + 7)): eight vectors' sums at a time by horizontal adds
  static void lane_sums(float* v, int64_t n) {
    static_assert(VL == 8, "8-float vectors");
    for (int64_t i = 0; i < n; i += 8) {
      const float* p = v + i * VL;
      __m256 h[4];
      for (int j = 0; j < 4; ++j)
        h[j] = _mm256_hadd_ps(_mm256_loadu_ps(p + 2 * j * VL), _mm256_loadu_ps(p + (2 * j + 1) * VL));
      const __m256 lo = _mm256_hadd_ps(h[0], h[1]), hi = _mm256_hadd_ps(h[2], h[3]);  // each half's 4-lane sums
      const __m256 first = _mm256_permute2f128_ps(lo, hi, 0x20), second = _mm256_permute2f128_ps(lo, hi, 0x31);
      _mm256_storeu_ps(v + i, _mm256_add_ps(first, second));
    }
  }

  ConvShape s_;
  const float* dy_;
  const float* x_;
  std::vector<RowTile> tiles_;
  int64_t XI_;
  mutable std::vector<float> terms_;  // each group's dw terms, [group][k][c][r][t]; each task writes its own
  std::vector<int64_t> image_rows_x_, image_rows_dy_;
};

// Where ImageLaneWeightGradient runs (AVX2): ImageLaneForward's layers, from two whole groups of images on (the
// batch all in groups).
template <int VL>
bool image_lane_weight_applies(const ConvShape& s) {
  return VL == 8 && s.groups == 1 && s.K > 8 && s.K <= 16 && s.R == 5 && s.S == 5 && s.Q == 10 &&
         s.stride_h == 1 && s.stride_w == 1 && s.dil_h == 1 && s.dil_w == 1 && s.pad_h == 0 && s.pad_w == 0 &&
         s.N % VL == 0 && s.N >= 2 * VL;
}

// dw (and db where not null, conv2d_backward_bias_fast's) by ImageLaneWeightGradient; false, nothing written, where
// its terms are not finite.
template <int VL>
bool image_lane_weight(const ConvShape& s, const float* dy, const float* x, float* dw, float* db) {
  const ImageLaneWeightGradient<VL> lanes(s, dy, x);
  // the groups handed out as free, as the image-lane forward's (filter_vector_forward_any says why)
  parallel_for(lanes.tasks(), threads_for(s.N * s.K * s.P * s.Q * s.C * 25), lanes, Schedule::as_free);
  if (!lanes.sum(dw)) return false;
  if (db) conv2d_backward_bias_fast(s, dy, db);
  return true;
}

template <int VL>
bool filter_vector_weight_any(const ConvShape& s, const float* dy, const float* x, float* dw, float* db) {
  if (s.groups != 1 || (s.S != 3 && s.S != 5) || s.K <= VL / 2 || (s.K > 2 * VL && !filter_blocks_apply<VL>(s)))
    return false;
  if constexpr (VL == 16) {
    if (row_winograd_weight_applies(s) &&
        filter_vector_weight_pass(s, dy, x, VL, s.Q * VL, s.N * s.K * s.P * s.Q * s.C * 25, RowWinogradWeights<VL>(s),
                                  dw, db, [](int64_t, const float*) {}))
      return true;
  }
  if constexpr (VL == 8) {
    if (image_lane_weight_applies<VL>(s) && image_lane_weight<VL>(s, dy, x, dw, db)) return true;
  }
  if (s.K <= VL)
    filter_vector_weight_kv<VL, 1>(s, dy, x, dw, db);
  else
    filter_vector_weight_kv<VL, 2>(s, dy, x, dw, db);
  return true;
}

// Output rows up to one vector wide use one vector per row and more filters per block (half as many when that
// covers every filter, with rows in pairs). With blocks of 8 filters, 5 or 6 filters take a block of 6 (the 6 of
// LeNet conv1, and of conv2's input gradient, filled 8 accumulators of which 2 were zero work: a quarter of the
// FMAs), in pairs of rows, also where a row takes two vectors (6 x 2 x 2 = 24 accumulators: each tap's six weight
// broadcasts feed 24 FMAs instead of 12; both builds in one process, calls alternated, median of per-pair time
// ratios, 1 / 2 threads: LeNet conv1 n=64 forward 1.034 / 1.031x, 3 channels of 32 x 32 valid 1.075x); with 8-float
// vectors, rows wider than one vector take 6 filters x 2 vectors instead of 4 x 2 (measured Zen 3, 2 threads,
// alternating, median ms: LeNet conv1 n=64 forward 0.36 -> 0.28, conv2's input gradient as its transposed
// convolution 0.62 -> 0.45). One filter takes blocks of one, with rows in blocks of 8 or 4 (6 or 3 with 16
// registers), and 2 to 4 filters on AVX-512 blocks of 4 with rows in blocks of 4 or 2, instead of blocks of 8 filters
// mostly zero: the input gradients of one- and three-channel layers by the transposed convolution, and layers with
// few outputs (both builds in one process, calls alternated, median of per-pair time ratios, AMD Zen 4, 1 thread,
// n=32 forward: 6 -> 1 5x5 on 28 x 28 (LeNet conv1's input gradient) 3.85x, forced AVX2 1.96x; 8 -> 1 3x3 on 12 x 12
// 2.35x, AVX2 1.61x; 16 -> 3 5x5 on 32 x 32 1.89x, 7 -> 2 1.88x, 4 -> 4 3x3 on 14 x 14 1.46x; 2 threads, LeNet conv1's
// backward with dx n=32 0.41 -> 0.15 ms).
template <int VL, int KB_NARROW, int KB_WIDE, int QV_WIDE>
void direct_forward_any(const ConvShape& s, const float* x, const float* w, const float* bias, bool relu, float* y,
                        ConvWeightCache* cache) {
  with_kernel_width(s, [&](auto width) {
    if constexpr (KB_WIDE == 8 && KB_NARROW / 2 == 8) {
      if (s.K == 5 || s.K == 6) {
        if (s.Q <= VL)
          direct_forward<VL, 6, 1, 2, width>(s, x, w, bias, relu, y, cache);
        else
          direct_forward<VL, 6, QV_WIDE, 2, width>(s, x, w, bias, relu, y, cache);
        return;
      }
    }
    if constexpr (KB_WIDE * QV_WIDE == 8) {  // 8-float vectors: 6 filters x 2 vectors fill 12 of the 16 registers
      if ((s.K == 5 || s.K == 6) && s.Q > VL) {
        direct_forward<VL, 6, 2, 1, width>(s, x, w, bias, relu, y, cache);
        return;
      }
    }
    if (s.K == 1) {  // one filter (the input gradient of a one-channel layer): rows in blocks instead
      // PB x QV accumulators and as many loaded x vectors: 16 of the 32 registers with 16-float vectors, 12 of 16
      constexpr int rows_narrow = VL == 16 ? 8 : 6, rows_wide = VL == 16 ? 4 : 3;
      if (s.Q <= VL)
        direct_forward<VL, 1, 1, rows_narrow, width>(s, x, w, bias, relu, y, cache);
      else
        direct_forward<VL, 1, QV_WIDE, rows_wide, width>(s, x, w, bias, relu, y, cache);
      return;
    }
    if constexpr (KB_NARROW / 2 > 4) {
      if (s.K <= 4) {  // up to 4 filters (three-channel layers' input gradients): blocks of 4
        if (s.Q <= VL)
          direct_forward<VL, 4, 1, 4, width>(s, x, w, bias, relu, y, cache);
        else
          direct_forward<VL, 4, QV_WIDE, 2, width>(s, x, w, bias, relu, y, cache);
        return;
      }
    }
    if (s.Q <= VL && s.K <= KB_NARROW / 2)
      direct_forward<VL, KB_NARROW / 2, 1, 2, width>(s, x, w, bias, relu, y, cache);
    else if (s.Q <= VL)
      direct_forward<VL, KB_NARROW, 1, 1, width>(s, x, w, bias, relu, y, cache);
    else
      direct_forward<VL, KB_WIDE, QV_WIDE, 1, width>(s, x, w, bias, relu, y, cache);
  });
}

// The input gradient of a stride-1 convolution with 5-tap kernel rows, VL images at a time in the vector lanes (a
// group): each dx row is the full convolution of dy's rows with the kernel rows that meet them, dx[c][h][u - pw] = sum
// over (k, r, q + t = u) of dy[k][h + ph - r][q] * w[k][c][r][t]. Along the row it runs by Toom-Cook (the transpose of
// winograd_rows_forward's F(4, 5) and F(2, 5)): dy's row is cut into row_tiles' chunks of 4 and 2 (zero past Q), each
// chunk evaluated at its tile's 8 or 6 points by A (F(4, 5)'s A^T transposed: eighths at most), multiplied by the
// points of the kernel row (kRowG90 or kRowG24 times its taps), summed over (k, r) and interpolated by B (B^T
// transposed: quarters at most) into the chunk's 8 or 6 outputs, times 1/90 or 1/24; the chunks' outputs overlap and
// are added. A row of 10 from 22 multiplies instead of 50, none of them on padding, and the filters summed along each
// lane's FMA chain (channel_vector_backward sums them across the lanes, a butterfly per row). The products: for each
// point xi (a slot: a tile's point), a block of CB channels x HB dx rows in registers sums U[xi's point][k][r][c]
// (broadcast; the tiles of a kind share the points) times V[xi][k][h + ph - r] over (k, r) in order, each row over its
// own kernel rows that meet dy (the block's rows: those of the first only, of both, of the second only; 2% faster than
// both rows over the union of their kernel rows, with V zero outside dy's rows), so V holds dy's rows alone. A task's
// dy is transposed to [k][p][q][VL] and its dx back from its rows' full convolutions [c][h][full_][VL] (the columns
// from pad_w on) by the ISA's packer. Each element sums in a fixed order, the same in every lane, task and thread
// count. Exact on small integers while the sums stay within the forward's bounds (the same points). A task whose rows'
// full convolutions are not all finite, padding columns included (a non-finite dy: inf - inf in the transforms; values
// near the float range, whose overflow in a padding column may leave a wrong finite sum in dx's) writes none of its dx,
// and its group's images are left to redo_marked. Workspace per task: its dy transposed, V, a block's products, its dx
// rows' full convolutions and one channel's dx for the 16 images; U (the transformed weights) once. Both builds in one
// process, calls alternated, median of per-pair time ratios, AMD Zen 4, LeNet conv2 backward against
// channel_vector_backward's input gradient: n=64 1.12x on 1 thread, 1.05-1.07x on 2 (forward+backward 1.05-1.06x), n=32
// 1.03-1.04x, n=48 1.00x (3 groups: each in two tasks), n=16 0.73x on 2 threads (one group, one thread's; hence from 32
// images on).
template <int VL>
class ImageLaneInputGradient {
  typedef float vec __attribute__((vector_size(4 * VL)));
  static constexpr int HB = 2, CB = 6;        // dx rows and channels per block of accumulators (12 vectors)
  static constexpr int64_t kMaxSlots = 24;  // row_slots of Q <= 10

 public:
  // dx of the first `groups` * VL images of the batch, on nt threads
  ImageLaneInputGradient(const ConvShape& s, int64_t groups, int nt, const float* dy, const float* w, float* dx)
      : s_(s), groups_(groups), dy_(dy), dx_(dx), tiles_(row_tiles(s.Q)) {
    const int64_t C = s.C, K = s.K, R = s.R, H = s.H;
    CP_ = (C + CB - 1) / CB * CB;
    XI_ = row_slots(tiles_);
    full_ = tiles_.back().col + tiles_.back().outputs + 4;
    if (XI_ > kMaxSlots) throw std::logic_error("ImageLaneInputGradient: rows wider than 10 outputs");
    // where the groups do not share out evenly over the threads, each group's rows in two parts of whole blocks, of
    // about the same number of products (block_work); the same sums either way
    int64_t total = 0, first = 0;
    for (int64_t h0 = 0; h0 < H; h0 += HB) total += block_work(h0);
    int64_t split = 0;
    while (split < H && 2 * (first + block_work(split)) <= total) first += block_work(split), split += HB;
    if (split == 0 && H > HB) split = HB;
    parts_ = groups % nt != 0 && split > 0 && split < H ? 2 : 1;
    part_rows_[0] = {0, parts_ == 2 ? split : H};
    part_rows_[1] = {split, H};
    // U[point][k][r][c] (zero past C), from the taps regrouped as wr[t][k][r][c]
    const int64_t block = K * R * CP_;  // U's floats per point
    LineFloats wr(static_cast<size_t>(5 * block), 0.0f);
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t r = 0; r < R; ++r)
          for (int t = 0; t < 5; ++t) wr[((t * K + k) * R + r) * CP_ + c] = w[((k * C + c) * R + r) * 5 + t];
    U_ = row_points_taps(tiles_, wr, block, slot_point_);
    image_rows_.resize(VL);
    for (int64_t i = 0; i < VL; ++i) image_rows_[i] = i * K * s.P * s.Q;
    pixel_rows_.resize(static_cast<size_t>(H * s.W));
    for (int64_t j = 0; j < H * s.W; ++j) pixel_rows_[j] = (j / s.W * full_ + s.pad_w + j % s.W) * VL;
    redone_.assign(static_cast<size_t>(tasks()), 0);
  }

  // Tasks: each group's dx rows in parts_ parts.
  int64_t tasks() const { return groups_ * parts_; }

  // Task `task`'s dx rows; where they are not all finite, none is written and the task is marked (its group's other
  // part may have written its rows: redo_marked writes them all again).
  void operator()(int64_t task) const {
    const int64_t C = s_.C, K = s_.K, P = s_.P, Q = s_.Q, H = s_.H, W = s_.W, PQ = P * Q, ph = s_.pad_h;
    const int64_t group = task / parts_, n0 = group * VL, XI = XI_;
    const KernelRows part = part_rows_[task % parts_];
    const int64_t hn = part.hi - part.lo;  // dx rows
    // the rows of dy the part's rows read, [p0, p1) (within [0, P): each row meets dy through dy_rows alone)
    int64_t p0 = P, p1 = 0;
    for (int64_t h = part.lo; h < part.hi; ++h) {
      const KernelRows kr = dy_rows(s_, h);
      if (kr.lo >= kr.hi) continue;
      p0 = std::min(p0, h + ph - (kr.hi - 1));
      p1 = std::max(p1, h + ph - kr.lo + 1);
    }
    p1 = std::max(p1, p0);
    const int64_t rows = p1 - p0;
    const int64_t g_floats = K * rows * Q * VL, v_floats = XI * K * rows * VL, m_floats = CB * HB * XI * VL;
    const int64_t dxt_floats = C * hn * full_ * VL;  // the rows' full convolutions (dx's columns from pad_w on)
    const CachedBlock<float> work(g_floats + v_floats + m_floats + dxt_floats + VL * hn * W);
    float *g = work.get(), *V = g + g_floats, *M = V + v_floats, *dxt = M + m_floats, *out = dxt + dxt_floats;
    const PackTransposedKernel transpose = kernels().gemm.pack_transposed;
    for (int64_t k = 0; k < K; ++k)  // g[k][p - p0][q][VL]
      transpose(dy_ + (n0 * K + k) * PQ + p0 * Q, image_rows_.data(), VL, VL, rows * Q, 1.0f, g + k * rows * Q * VL);
    // V[xi][k][p - p0]: the points of dy's row p, tile by tile (each point's rows in order)
    for (int64_t k = 0; k < K; ++k)
      for (const RowTile& tile : tiles_) {
        const int64_t m = std::min(tile.outputs, Q - tile.col);  // dy's columns in the chunk (zero past Q)
        float* v = V + (tile.slot * K + k) * rows * VL;
        const int64_t point = K * rows * VL;  // between a row's points in V
        for (int64_t p = p0; p < p1; ++p, v += VL) {
          const float* src = g + ((k * rows + p - p0) * Q + tile.col) * VL;
          vec a[4];  // in registers (a zeroed array indexed up to m went through memory, zeroed by rep stos)
#pragma GCC unroll 4
          for (int e = 0; e < 4; ++e) a[e] = e < m ? load(src + e * VL) : vec{};
          if (tile.points == kPairPoints) {
            store(v, a[0]), store(v + point, a[0] + a[1]), store(v + 2 * point, a[0] - a[1]);
            store(v + 3 * point, a[0] + 2 * a[1]), store(v + 4 * point, a[0] - 2 * a[1]);
            store(v + 5 * point, a[1]);
          } else {
            const vec e1 = a[0] + a[2], o1 = a[1] + a[3], e2 = a[0] + 4 * a[2], o2 = 2 * a[1] + 8 * a[3];
            const vec e3 = a[0] + 0.25f * a[2], o3 = 0.5f * a[1] + 0.125f * a[3];
            store(v, a[0]), store(v + point, e1 + o1), store(v + 2 * point, e1 - o1);
            store(v + 3 * point, e2 + o2), store(v + 4 * point, e2 - o2), store(v + 5 * point, e3 + o3);
            store(v + 6 * point, e3 - o3), store(v + 7 * point, a[3]);
          }
        }
      }
    static_assert(HB == 2, "the kernel rows of a block's two rows");
    for (int64_t h0 = part.lo; h0 < part.hi; h0 += HB) {
      // the kernel rows that meet dy for the first row only, for both, for the second only (the second row's, where
      // the block has one, empty): each product on one of dy's rows
      const KernelRows first = dy_rows(s_, h0);
      const KernelRows second = h0 + 1 < part.hi ? dy_rows(s_, h0 + 1) : KernelRows{first.hi, first.hi};
      const int64_t first_end = std::min(second.lo, first.hi), second_begin = std::max(first.hi, second.lo);
      for (int64_t c0 = 0; c0 < CP_; c0 += CB) {
        for (int64_t xi = 0; xi < XI; ++xi) {
          vec acc[CB][HB];
#pragma GCC unroll 6
          for (int cc = 0; cc < CB; ++cc)
#pragma GCC unroll 2
            for (int hh = 0; hh < HB; ++hh) acc[cc][hh] = vec{};
          const float* u_xi = &U_[slot_point_[xi] * K * s_.R * CP_ + c0];
          const float* v_xi = V + (xi * K * rows + h0 + ph - p0) * VL;
          const auto add = [&](auto hh, const float* u, const float* v) {
            const vec vv = load(v + hh * VL);
#pragma GCC unroll 6
            for (int cc = 0; cc < CB; ++cc) acc[cc][hh] += u[cc] * vv;
          };
          // both rows: each weight broadcast once for the two rows (with AVX2's 16 registers, broadcasts kept for the
          // second row spilled the accumulators)
          const auto add_both = [&](const float* u, const float* v) {
            const vec v0 = load(v), v1 = load(v + VL);
#pragma GCC unroll 6
            for (int cc = 0; cc < CB; ++cc) {
              const vec b = u[cc] - vec{};  // a broadcast (x - 0 is x, -0 included; 0 + x is not)
              acc[cc][0] += b * v0;
              acc[cc][1] += b * v1;
            }
          };
          constexpr std::integral_constant<int, 0> row0{};
          constexpr std::integral_constant<int, 1> row1{};
          for (int64_t k = 0; k < K; ++k) {
            const float *u = u_xi + (k * s_.R + first.lo) * CP_, *v = v_xi + (k * rows - first.lo) * VL;
            int64_t r = first.lo;
            for (; r < first_end; ++r, u += CP_, v -= VL) add(row0, u, v);
            for (; r < first.hi; ++r, u += CP_, v -= VL) add_both(u, v);
            for (r = second_begin, u = u_xi + (k * s_.R + r) * CP_, v = v_xi + (k * rows - r) * VL; r < second.hi;
                 ++r, u += CP_, v -= VL)
              add(row1, u, v);
          }
#pragma GCC unroll 6
          for (int cc = 0; cc < CB; ++cc)
#pragma GCC unroll 2
            for (int hh = 0; hh < HB; ++hh) store(M + ((cc * HB + hh) * XI + xi) * VL, acc[cc][hh]);
        }
        for (int64_t cc = 0; cc < CB && c0 + cc < C; ++cc)
          for (int64_t hh = 0; hh < HB && h0 + hh < part.hi; ++hh)
            interpolate(M + (cc * HB + hh) * XI * VL, dxt + ((c0 + cc) * hn + h0 + hh - part.lo) * full_ * VL);
      }
    }
    if (any_non_finite(dxt, dxt_floats)) {
      redone_[task] = 1;
      return;
    }
    for (int64_t c = 0; c < C; ++c) {  // each channel's rows, image by image
      transpose(dxt + c * hn * full_ * VL, pixel_rows_.data(), hn * W, hn * W, VL, 1.0f, out);
      for (int64_t i = 0; i < VL; ++i)
        std::memcpy(dx_ + ((n0 + i) * C + c) * H * W + part.lo * W, out + i * hn * W, hn * W * sizeof(float));
    }
  }

  // redo(n) for each image of the groups with a marked task (after all the tasks)
  template <typename Redo>
  void redo_marked(const Redo& redo) const {
    for (int64_t group = 0; group < groups_; ++group)
      if (std::any_of(&redone_[group * parts_], &redone_[(group + 1) * parts_], [](char r) { return r != 0; }))
        for (int64_t n = group * VL; n < (group + 1) * VL; ++n) redo(n);
  }

 private:
  static vec load(const float* p) {
    vec v;
    std::memcpy(&v, p, sizeof(vec));
    return v;
  }
  static void store(float* p, const vec& v) { std::memcpy(p, &v, sizeof(vec)); }

  // the products of the block at h0: its rows' kernel rows that meet dy
  int64_t block_work(int64_t h0) const {
    int64_t work = 0;
    for (int64_t h = h0; h < std::min(s_.H, h0 + HB); ++h) {
      const KernelRows kr = dy_rows(s_, h);
      work += std::max<int64_t>(kr.hi - kr.lo, 0);
    }
    return work;
  }

  // One dx row's full convolution (full_ vectors) from its tiles' summed products m (XI_ vectors): B, times 1/24 or
  // 1/90, each chunk's outputs added where the chunks overlap (the first written as 0 + o, as into a zeroed row).
  void interpolate(const float* m0, float* line) const {
    int64_t written = 0;  // the columns before it hold a chunk's outputs
    for (const RowTile& tile : tiles_) {
      const float* m = m0 + tile.slot * VL;
      vec mv[kQuadPoints], o[kQuadPoints];
      for (int64_t i = 0; i < tile.points; ++i) mv[i] = load(m + i * VL);
      if (tile.points == kPairPoints) {
        const vec s1 = mv[1] + mv[2], d1 = mv[1] - mv[2], s2 = mv[3] + mv[4], d2 = mv[3] - mv[4];
        o[0] = 4 * mv[0], o[1] = -4 * d1 - 2 * d2 + 4 * mv[5], o[2] = -5 * mv[0] - 4 * s1 - s2;
        o[3] = d1 + 2 * d2 - 5 * mv[5], o[4] = mv[0] + s1 + s2, o[5] = mv[5];
        for (int64_t j = 0; j < kPairPoints; ++j) o[j] *= 1.0f / 24;
      } else {
        const vec s1 = mv[1] + mv[2], d1 = mv[1] - mv[2], s2 = mv[3] + mv[4], d2 = mv[3] - mv[4];
        const vec s3 = mv[5] + mv[6], d3 = mv[5] - mv[6];
        o[0] = -mv[0], o[1] = d1 + 0.5f * d2 + 2 * d3 - mv[7];
        o[2] = 5.25f * mv[0] + s1 + 0.25f * s2 + 4 * s3;
        o[3] = -4.25f * d1 - 2.5f * d2 - 2.5f * d3 + 5.25f * mv[7];
        o[4] = -5.25f * mv[0] - 4.25f * s1 - 1.25f * s2 - 5 * s3;
        o[5] = d1 + 2 * d2 + 0.5f * d3 - 5.25f * mv[7], o[6] = mv[0] + s1 + s2 + s3, o[7] = mv[7];
        for (int64_t j = 0; j < kQuadPoints; ++j) o[j] *= 1.0f / 90;
      }
      for (int64_t j = 0; j < tile.points; ++j) {
        float* at = line + (tile.col + j) * VL;
        store(at, (tile.col + j < written ? load(at) : vec{}) + o[j]);
      }
      written = tile.col + tile.points;
    }
  }

  ConvShape s_;
  int64_t groups_;
  const float* dy_;
  float* dx_;
  std::vector<RowTile> tiles_;
  int64_t CP_ = 0, XI_ = 0, full_ = 0;  // channels in whole blocks; slots; the full convolution's columns
  int64_t parts_ = 1;
  KernelRows part_rows_[2] = {};  // each part's dx rows [lo, hi)
  int64_t slot_point_[kMaxSlots] = {};  // each slot's point in U
  LineFloats U_;
  std::vector<int64_t> image_rows_, pixel_rows_;
  mutable std::vector<char> redone_;  // each task writes its own element
};

// The backward of a stride-1 convolution with at most 16 filters on narrow rows (LeNet-5's conv2), all three gradients
// from one transposed copy of each image's dy, in one pass over the batch. Input gradient with dy's channels (the
// filters) in vector lanes: dx[c][h][w] = sum over taps (r, t) of the dot product of dy[:, h + ph - r][w + pw - t] with
// w[:, c][r][t]. Along narrow rows the transposed convolution's vectors idle lanes and multiply mostly padding (LeNet
// conv2: 16 lanes for 14 pixels, half the taps on zeros); here every lane is a filter and every multiply meets dy. One
// output row of one input channel at a time: for each kernel row r that meets dy (row p = h + ph - r), each tap t of
// dy's row p (Q <= 10 columns, zero past Q) adds dy[q] * w[r][t] into accumulator q + t, which holds output column q +
// t - pw (the accumulators past the row, from the padding, are dropped): each (dy pixel, tap) pair is one FMA; the
// accumulators' lanes are then summed into the row. This is the frame both ISAs share: the weights regrouped as
// [channel][r][t][16 filters] (zero lanes past K); the batch in filter_vector_weight's image chunks; per image, the
// bias gradient's partials (bias_partials_add), x zero-padded and dy transposed to [row][column][16 filters] by the
// ISA's transposing packer, then the weight gradient's terms and, by dx_row(wt, g, c, h, r_lo, r_hi, out), each dx row
// from the kernel rows [r_lo, r_hi) that meet dy, each dx element summing its taps in (r, t) order, then its lanes in a
// fixed tree. The weight gradient's terms: on AVX-512, 5 x 5 kernels on rows of an even number of columns by F(5, 4)
// and F(5, 2) along the rows (RowWinogradWeights; the pass run again by the direct units where its sums are not
// finite), else the direct units (filter_vector_weight_image). Both builds in one process, calls alternated, median of
// per-pair time ratios, AMD Zen 4, LeNet conv2 n=64 backward 1.09-1.11x by F(5, 2) (1 and 2 threads); weight gradient
// by tiles of 4 (F(5, 4)) then 1.13x on 1 thread, 1.05x on 2. dw and db add the chunks' sums in a fixed order: every
// result has the same bits whatever the thread count (db those of conv2d_backward_bias_fast). db may be null (not
// computed). With 5-wide kernels and at least two groups of VL images (32 on AVX-512, 16 on AVX2), the input gradient
// of each whole group comes from ImageLaneInputGradient, in a pass of its own after this one, and from dx_row only the
// images past them and those of a group whose dx was not finite there; on AVX2, where ImageLaneWeightGradient applies
// (the batch all in groups), dw and db come from it, and this pass does not run. Workspace: the regrouped weights; per
// chunk the weight gradient's sums and the bias gradient's partials; per thread one padded image, one transposed dy
// image and the weight gradient's workspace.
constexpr int kChannelLanes = 16, kChannelMaxQ = 10;

template <int VL, int S, typename Row>
void channel_vector_backward(const ConvShape& s, const float* dy, const float* x, const float* w, float* dx,
                             float* dw, float* db, const Row& dx_row) {
  constexpr int L = kChannelLanes, QMAX = kChannelMaxQ, KV = L / VL;
  const int64_t C = s.C, K = s.K, R = s.R, P = s.P, H = s.H, W = s.W, CRS = C * R * S;
  // the filters in lanes, [c][r][t][16 filters] (K <= 16), for dx_rows: made only where it computes an image's dx
  // (LeNet conv2's batch of 64 goes wholly to the lane kernel: not making them there, its backward 1.003x on 1
  // thread, forward+backward 1.004-1.033x on 2)
  LineFloats wt;
  const auto make_wt = [&] {
    if (wt.empty()) wt = filters_in_lanes(w, K, CRS, L);
  };
  const auto dx_rows = [&](int64_t n, const float* g) {
    float* dxn = dx + n * C * H * W;
    for (int64_t h = 0; h < H; ++h) {
      const KernelRows kr = dy_rows(s, h);
      for (int64_t c = 0; c < C; ++c) dx_row(wt.data(), g, c, h, kr.lo, kr.hi, dxn + (c * H + h) * W);
    }
  };
  const int64_t work = s.N * K * P * s.Q * CRS * 2;
  const auto pass = [&](const auto& more) {  // dw and db, and more(n, g) for each image
    if constexpr (VL == 16 && S == 5) {
      if (row_winograd_weight_applies(s) &&
          filter_vector_weight_pass(s, dy, x, L, QMAX * L, work, RowWinogradWeights<VL>(s), dw, db, more))
        return;
    }
    with_weight_rows<VL, KV, S>(s, [&](auto rows) {
      filter_vector_weight_pass(s, dy, x, L, QMAX * L, work, DirectWeights<VL, KV, rows, S, true>{}, dw, db, more);
    });
  };
  if constexpr ((VL == 16 || VL == 8) && S == 5) {
    // whole groups of VL images in the lanes from two groups on (the route the same at any thread count); the images
    // past them here, and those of a group left unwritten (redo_marked) one at a time as here
    const int64_t groups = s.N / VL;
    if (groups >= 2) {
      if (s.N > groups * VL) make_wt();
      // on AVX2 dw and db from the images in the lanes too where they apply (the batch all in groups: the pass would
      // have no dx rows to add), else by the pass
      bool by_lanes = false;
      if constexpr (VL == 8) by_lanes = image_lane_weight_applies<VL>(s) && image_lane_weight<VL>(s, dy, x, dw, db);
      if (!by_lanes)
        pass([&](int64_t n, const float* g) {
          if (n >= groups * VL) dx_rows(n, g);
        });
      const int nt = threads_for(groups * VL * K * P * s.Q * CRS * 2);
      const ImageLaneInputGradient<VL> lanes(s, groups, nt, dy, w, dx);
      // on AVX2 the groups handed out as free, as the image-lane forward's (filter_vector_forward_any says why)
      parallel_for(lanes.tasks(), nt, lanes, VL == 8 ? Schedule::as_free : Schedule::fixed);
      LineFloats g;  // as the pass's (zero past Q); it and the filters' planes made for the first image redone
      std::vector<int64_t> filter_rows;
      lanes.redo_marked([&](int64_t n) {
        make_wt();
        if (g.empty()) {
          g.assign(static_cast<size_t>(P * QMAX * L), 0.0f);
          for (int64_t k = 0; k < K; ++k) filter_rows.push_back(k * P * s.Q);
        }
        transpose_dy_image(s, dy + n * K * P * s.Q, filter_rows.data(), L, QMAX * L, g.data());
        dx_rows(n, g.data());
      });
      return;
    }
  }
  make_wt();
  pass(dx_rows);
}

#if defined(__AVX512F__)
// Lane g of the result = the sum of v[g]'s 16 lanes: a butterfly of 15 adds (45 instructions for 16 sums). Slot s
// of the first level takes v[4 * (s % 4) + s / 4], so that the lanes come out in order.
inline __m512 lane_sums16(const __m512 (&v)[16]) {
  // the maskz form: GCC 12's unmasked _mm512_shuffle_f32x4 warns of an uninitialised pass-through operand
  const auto halves = [](__m512 x, __m512 y, auto imm) { return _mm512_maskz_shuffle_f32x4(0xFFFF, x, y, imm()); };
  __m512 a[16], b[8], c[4], d[2];
#pragma GCC unroll 16
  for (int s = 0; s < 16; ++s) a[s] = v[4 * (s % 4) + s / 4];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i)
    b[i] = _mm512_add_ps(halves(a[2 * i], a[2 * i + 1], std::integral_constant<int, 0x44>{}),
                         halves(a[2 * i], a[2 * i + 1], std::integral_constant<int, 0xEE>{}));
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i)
    c[i] = _mm512_add_ps(halves(b[2 * i], b[2 * i + 1], std::integral_constant<int, 0x88>{}),
                         halves(b[2 * i], b[2 * i + 1], std::integral_constant<int, 0xDD>{}));
  for (int i = 0; i < 2; ++i)
    d[i] = _mm512_add_ps(_mm512_shuffle_ps(c[2 * i], c[2 * i + 1], 0x44),
                         _mm512_shuffle_ps(c[2 * i], c[2 * i + 1], 0xEE));
  return _mm512_add_ps(_mm512_shuffle_ps(d[0], d[1], 0x88), _mm512_shuffle_ps(d[0], d[1], 0xDD));
}

// channel_vector_backward on AVX-512: the 16 filters in one vector; each kernel row's dy row (10 vectors) is loaded
// once into registers, and a 16-vector butterfly (lane_sums16) sums the lanes.
template <int S>
void channel_vector_backward_isa(const ConvShape& s, const float* dy, const float* x, const float* w, float* dx,
                                 float* dw, float* db) {
  constexpr int L = kChannelLanes, QMAX = kChannelMaxQ, A = QMAX + S - 1;  // A accumulators (one butterfly)
  static_assert(A <= 16, "one lane_sums16 per row");
  const __mmask16 row_lanes = static_cast<__mmask16>((1u << s.W) - 1);  // W <= Q + S - 1 <= 14
  const __m512i from = _mm512_add_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                        _mm512_set1_epi32(static_cast<int>(s.pad_w)));
  const auto dx_row = [&](const float* wt, const float* g, int64_t c, int64_t h, int64_t r_lo, int64_t r_hi,
                          float* out) {
    __m512 acc[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_setzero_ps();
    for (int64_t r = r_lo; r < r_hi; ++r) {
      const float* row = g + (h + s.pad_h - r) * QMAX * L;
      const float* wk = wt + (c * s.R + r) * S * L;
      __m512 gv[QMAX];
      for (int q = 0; q < QMAX; ++q) gv[q] = _mm512_loadu_ps(row + q * L);
      for (int t = 0; t < S; ++t) {
        const __m512 wv = _mm512_loadu_ps(wk + t * L);
        for (int q = 0; q < QMAX; ++q) acc[q + t] = _mm512_fmadd_ps(gv[q], wv, acc[q + t]);
      }
    }
    // columns pad_w .. pad_w + W - 1 of the sums are the row: moved down by a lane permutation and stored masked
    // (a copy through memory called memmove per row: 10% of LeNet conv2's input gradient)
    _mm512_mask_storeu_ps(out, row_lanes, _mm512_maskz_permutexvar_ps(0xFFFF, from, lane_sums16(acc)));
  };
  channel_vector_backward<16, S>(s, dy, x, w, dx, dw, db, dx_row);
}
#endif

#if defined(__AVX2__) && !defined(__AVX512F__)
// Lane g of the result = the sum of v[g]'s 8 lanes (horizontal adds, then the two 128-bit halves), in a fixed order.
inline __m256 lane_sums8(const __m256* v) {
  const __m256 a = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
  const __m256 b = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

// channel_vector_backward on AVX2: the 16 filters in two 8-float vectors whose products go into the same accumulators
// (the lanes are summed at the end anyway). The row's A sums go in two blocks of 8 output columns, so that a block's
// 8 accumulators, a kernel row's S weight vectors (of one half of the filters) and one dy vector fit the 16
// registers: each dy vector of the row, loaded once per half, feeds every tap whose column falls in the block (up to
// S FMAs). Each dx element sums its terms kernel row by kernel row, the lower 8 filters' then the upper 8's, dy's
// columns in order. (With all A accumulators at once dy was read by each FMA from L1, one load per FMA: the new
// order, both builds in one process, alternating, CONVCORE_ISA=avx2 on AMD Zen 4, LeNet conv2 n=64 backward 1.07-1.13x
// on 2 threads, 1.00x on 1.)
template <int S>
void channel_vector_backward_isa(const ConvShape& s, const float* dy, const float* x, const float* w, float* dx,
                                 float* dw, float* db) {
  constexpr int L = kChannelLanes, QMAX = kChannelMaxQ, A = QMAX + S - 1, B = 8;  // A sums, blocks of B
  static_assert(A <= 2 * B, "two blocks per row");
  const int64_t W = s.W;
  // the row, columns pad_w .. pad_w + W - 1 (W <= 14), from the blocks' lane sums s0 (columns 0-7) and s1 (8-15) by
  // lane permutations: its lane i is column pad_w + i, s0's lane pad_w + i up to 7, s1's lane pad_w + i - 8 past it
  // (a permutation takes the index's low 3 bits); lane i of the rest is s1's lane pad_w + i. (Through memory, loads
  // at pad_w straddled the blocks' stores and waited for both to retire.)
  const __m256i from = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                        _mm256_set1_epi32(static_cast<int>(s.pad_w)));
  const __m256 past_s0 = _mm256_castsi256_ps(_mm256_cmpgt_epi32(from, _mm256_set1_epi32(B - 1)));
  const auto dx_row = [&](const float* wt, const float* g, int64_t c, int64_t h, int64_t r_lo, int64_t r_hi,
                          float* out) {
    __m256 sums[2];  // lane j of sums[b]: the sum for output column b * B + j - pad_w
#pragma GCC unroll 2
    for (int j0 = 0; j0 < 2 * B; j0 += B) {
      __m256 acc[8];
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) acc[i] = _mm256_setzero_ps();
      for (int64_t r = r_lo; r < r_hi; ++r) {
        const float* row = g + (h + s.pad_h - r) * QMAX * L;
        const float* wk = wt + (c * s.R + r) * S * L;
#pragma GCC unroll 2
        for (int half = 0; half < L; half += 8) {
          __m256 wv[S];
#pragma GCC unroll 5
          for (int t = 0; t < S; ++t) wv[t] = _mm256_loadu_ps(wk + t * L + half);
#pragma GCC unroll 16
          for (int q = 0; q < QMAX; ++q) {
            if (q + S - 1 < j0 || q >= j0 + B) continue;  // no tap of this column lands in the block
            const __m256 gv = _mm256_loadu_ps(row + q * L + half);
#pragma GCC unroll 5
            for (int t = 0; t < S; ++t)
              if (q + t >= j0 && q + t < j0 + B) acc[q + t - j0] = _mm256_fmadd_ps(gv, wv[t], acc[q + t - j0]);
          }
        }
      }
      sums[j0 / B] = lane_sums8(acc);
    }
    const __m256 second = _mm256_permutevar8x32_ps(sums[1], from);
    store_first_lanes(out, _mm256_blendv_ps(_mm256_permutevar8x32_ps(sums[0], from), second, past_s0),
                      std::min<int64_t>(W, 8));
    if (W > 8) store_first_lanes(out + 8, second, W - 8);
  };
  channel_vector_backward<8, S>(s, dy, x, w, dx, dw, db, dx_row);
}
#endif

// Runs channel_vector_backward where it applies (AVX-512 and AVX2 units; kernel widths 3 and 5): stride 1, no
// dilation, one group, 9 to 16 filters, dy rows of 5 to 10 pixels (shorter ones would multiply mostly the zeros past
// them), padding within the kernel, and finite weights (rows shorter than 10 are read with zeros past them, which a
// non-finite weight would turn into NaN where dx, summing only dy's elements, is finite). Returns false, doing
// nothing, elsewhere. (Measured AVX2 Zen 3, alternating, LeNet conv2 n=64 input gradient at 1 thread: best 1.16 ->
// 1.01 ms, median 1.68 -> 1.10, against the transposed convolution; at 2 threads within the noise.)
template <int VL>
bool channel_vector_backward_any(const ConvShape& s, const float* dy, const float* x, const float* w, float* dx,
                                 float* dw, float* db) {
#if defined(__AVX2__)
  if constexpr (VL == 16 || VL == 8) {
    if (s.stride_h != 1 || s.stride_w != 1 || s.dil_h != 1 || s.dil_w != 1 || s.groups != 1 || s.K <= 8 ||
        s.K > 16 || s.Q > 10 || 2 * s.Q < 10 || (s.S != 3 && s.S != 5) || s.pad_h > s.R - 1 || s.pad_w > s.S - 1 ||
        any_non_finite(w, s.K * s.C * s.R * s.S))
      return false;
    if (s.S == 3)
      channel_vector_backward_isa<3>(s, dy, x, w, dx, dw, db);
    else
      channel_vector_backward_isa<5>(s, dy, x, w, dx, dw, db);
    return true;
  }
#endif
  (void)s, (void)dy, (void)x, (void)w, (void)dx, (void)dw, (void)db;
  return false;
}

}  // namespace
}  // namespace convcore
