// SGEMM kernels for AVX2+FMA: MR x (8*NV) tiles, MR*NV ymm accumulators, NV B vectors, 1 broadcast (16 registers).
// 6x16 is the general tile; 4x24 serves products of 4, 8 or 16 rows (LeNet conv2's 16 filters: 6x16 would compute
// 18). The packers move whole 8-float vectors, loaded masked at the ends of rows and stored there in 4-, 2- and
// 1-lane pieces (store_first_lanes: a masked store is slow on AMD's cores); a library copy per panel row of 16
// floats was 28% of a res2a 3x3 forward.
#include <immintrin.h>

#include <algorithm>

#include "convcore/avx2_lanes.h"
#include "convcore/gemm.h"

namespace convcore {
namespace {

// A micro-panel of an A packed in advance as a whole (GemmTile::prepacked) is prefetched into L1 this many floats
// ahead (as on AVX-512).
constexpr int64_t kPrefetchAFloats = 512;

// The MR x (8 * NV) tile: C = (accumulate ? C : 0) + A B, then the epilogue, A a packed micro-panel (MR floats a k
// step, from Ap; kPrefetchA: prefetched kPrefetchAFloats ahead) or, kGathered, one pointer per row (row i at row[i],
// in runs of len floats, jump apart; the k steps are runs x len, runs 1 for a packed A). kEdge: the edge
// microkernel's tile, whose last vector holds `last` columns (B's loads, C's loads and the column bias masked, C's
// stores in pieces: store_first_lanes) and whose rows past `rows` are computed but neither read nor written.
template <int MR, int NV, bool kGathered = false, bool kEdge = false, bool kPrefetchA = false>
inline void micro_body(const float* Ap, const float* const* row, int64_t len, int64_t runs, int64_t jump,
                       const float* Bp, int64_t ldb, float* C, int64_t ldc, bool accumulate, const TileEpilogue* epi,
                       int rows = MR, int last = 8) {
  const __m256i tail = first_lanes(last);
  // vector v of a row at p: all its lanes, or the first `last` for an edge tile's last
  const auto load = [tail](int v, const float* p) {
    return kEdge && v == NV - 1 ? _mm256_maskload_ps(p, tail) : _mm256_loadu_ps(p);
  };
  const float* ptr[kGathered ? MR : 1];
  for (int i = 0; i < (kGathered ? MR : 0); ++i) ptr[i] = row[i];
  __m256 c[MR][NV];
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 3
    for (int v = 0; v < NV; ++v) c[i][v] = _mm256_setzero_ps();
  for (int64_t r = 0; r < runs; ++r) {
    for (int64_t k = 0; k < len; ++k) {
      __m256 b[NV];
#pragma GCC unroll 3
      for (int v = 0; v < NV; ++v) b[v] = load(v, Bp + 8 * v);
#pragma GCC unroll 6
      for (int i = 0; i < MR; ++i) {
        const __m256 a = _mm256_broadcast_ss(kGathered ? ptr[i] + k : Ap + i);
#pragma GCC unroll 3
        for (int v = 0; v < NV; ++v) c[i][v] = _mm256_fmadd_ps(a, b[v], c[i][v]);
      }
      if constexpr (kPrefetchA) _mm_prefetch(reinterpret_cast<const char*>(Ap + kPrefetchAFloats), _MM_HINT_T0);
      if constexpr (!kGathered) Ap += MR;
      Bp += ldb;
    }
    if constexpr (kGathered)
      for (int i = 0; i < MR; ++i) ptr[i] += jump;
  }
  if (accumulate)
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i)
      if (!kEdge || i < rows)
#pragma GCC unroll 3
        for (int v = 0; v < NV; ++v) c[i][v] = _mm256_add_ps(c[i][v], load(v, C + i * ldc + 8 * v));
  if (epi) {
    if (epi->row_bias)
#pragma GCC unroll 6
      for (int i = 0; i < MR; ++i) {
        const __m256 b = _mm256_set1_ps(!kEdge || i < rows ? epi->row_bias[i] : 0.0f);
#pragma GCC unroll 3
        for (int v = 0; v < NV; ++v) c[i][v] = _mm256_add_ps(c[i][v], b);
      }
    if (epi->col_bias)
#pragma GCC unroll 3
      for (int v = 0; v < NV; ++v) {
        const __m256 b = load(v, epi->col_bias + 8 * v);
#pragma GCC unroll 6
        for (int i = 0; i < MR; ++i) c[i][v] = _mm256_add_ps(c[i][v], b);
      }
    if (epi->relu)  // keep where not <= 0: positive or NaN (relu_keep_nan), else +0
#pragma GCC unroll 6
      for (int i = 0; i < MR; ++i)
#pragma GCC unroll 3
        for (int v = 0; v < NV; ++v)
          c[i][v] = _mm256_and_ps(c[i][v], _mm256_cmp_ps(c[i][v], _mm256_setzero_ps(), _CMP_NLE_UQ));
  }
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i)
    if (!kEdge || i < rows)
#pragma GCC unroll 3
      for (int v = 0; v < NV; ++v) {
        if (kEdge && v == NV - 1)
          store_first_lanes(C + i * ldc + 8 * v, c[i][v], last);
        else
          _mm256_storeu_ps(C + i * ldc + 8 * v, c[i][v]);
      }
}

// MicroKernel (kPrefetchA for an A packed in advance, GemmTile::prepacked).
template <int MR, int NV, bool kPrefetchA = false>
void micro(int64_t kc, const float* Ap, const float* Bp, int64_t ldb, float* C, int64_t ldc, bool accumulate,
           const TileEpilogue* epi) {
  micro_body<MR, NV, false, false, kPrefetchA>(Ap, nullptr, kc, 1, 0, Bp, ldb, C, ldc, accumulate, epi);
}

// The MR x (8 * V) edge tile with the fewest vectors V <= NV that covers cols (kPrefetchA: as micro_body's).
template <int MR, int NV, bool kGathered, bool kPrefetchA = false, int V = 1>
void edge_tile(const float* Ap, const float* const* row, int64_t len, int64_t runs, int64_t jump, const float* Bp,
               int64_t ldb, float* C, int64_t ldc, bool accumulate, const TileEpilogue* epi, int rows, int cols) {
  if constexpr (V < NV) {
    if (cols > 8 * V) {
      edge_tile<MR, NV, kGathered, kPrefetchA, V + 1>(Ap, row, len, runs, jump, Bp, ldb, C, ldc, accumulate, epi, rows,
                                                      cols);
      return;
    }
  }
  micro_body<MR, V, kGathered, true, kPrefetchA>(Ap, row, len, runs, jump, Bp, ldb, C, ldc, accumulate, epi, rows,
                                                 cols - 8 * (V - 1));
}

// EdgeMicroKernel (A packed: lda unused; kPrefetchA for an A packed in advance, GemmTile::edge_prepacked).
template <int MR, int NV, bool kPrefetchA = false>
void micro_edge(int64_t kc, const float* Ap, int64_t /* lda */, const float* Bp, int64_t ldb, float* C, int64_t ldc,
                bool accumulate, const TileEpilogue* epi, int rows, int cols) {
  edge_tile<MR, NV, false, kPrefetchA>(Ap, nullptr, kc, 1, 0, Bp, ldb, C, ldc, accumulate, epi, rows, cols);
}

// RowsMicroKernel: micro reading A's MR rows in place, one pointer a row (the gathered tile's loop with one run of
// kc: the same sums in the same order as on A packed).
template <int MR, int NV>
void micro_rows(int64_t kc, const float* A, int64_t lda, const float* Bp, int64_t ldb, float* C, int64_t ldc,
                bool accumulate, const TileEpilogue* epi) {
  const float* row[MR];
  for (int i = 0; i < MR; ++i) row[i] = A + i * lda;
  micro_body<MR, NV, true>(nullptr, row, kc, 1, 0, Bp, ldb, C, ldc, accumulate, epi);
}

// EdgeMicroKernel reading A's MR rows in place (all present, lda apart).
template <int MR, int NV>
void micro_rows_edge(int64_t kc, const float* A, int64_t lda, const float* Bp, int64_t ldb, float* C, int64_t ldc,
                     bool accumulate, const TileEpilogue* epi, int rows, int cols) {
  const float* row[MR];
  for (int i = 0; i < MR; ++i) row[i] = A + i * lda;
  edge_tile<MR, NV, true>(nullptr, row, kc, 1, 0, Bp, ldb, C, ldc, accumulate, epi, rows, cols);
}

// GatheredMicroKernel: the edge tile, A's rows through their pointers.
template <int MR, int NV>
void micro_gathered(int64_t len, int64_t runs, int64_t jump, const float* const* a, const float* Bp, int64_t ldb,
                    float* C, int64_t ldc, bool accumulate, int rows, int cols) {
  edge_tile<MR, NV, true>(nullptr, a, len, runs, jump, Bp, ldb, C, ldc, accumulate, nullptr, rows, cols);
}

// Four 8-lane FMA accumulators over 32-float steps (independent chains), the tail into a scalar sum; the lanes
// are summed by a fixed shuffle tree. Fixed order for a given K.
float dot_4x8(const float* a, const float* b, int64_t K) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 8), _mm256_loadu_ps(b + k + 8), s1);
    s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 16), _mm256_loadu_ps(b + k + 16), s2);
    s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 24), _mm256_loadu_ps(b + k + 24), s3);
  }
  for (; k + 8 <= K; k += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), s0);
  float tail = 0.0f;
  for (; k < K; ++k) tail += a[k] * b[k];
  const __m256 s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
  __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  h = _mm_add_ps(h, _mm_movehl_ps(h, h));
  h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
  return _mm_cvtss_f32(h) + tail;
}

void dots_4x8(const float* a, const float* B, int64_t ldb, int64_t K, int64_t n, float* out) {
  for (int64_t j = 0; j < n; ++j) out[j] = dot_4x8(a, B + j * ldb, K);
}

// r[c] = column c of the 8 x 8 block whose row i is r[i] (unpack, shuffle, then swap 128-bit halves).
inline void transpose_8x8(__m256 r[8]) {
  __m256 t[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  __m256 u[8];
  for (int g = 0; g < 8; g += 4) {  // u[g + q], half L: rows g..g+3 of column 4L + q
    u[g] = _mm256_shuffle_ps(t[g], t[g + 2], 0x44);
    u[g + 1] = _mm256_shuffle_ps(t[g], t[g + 2], 0xEE);
    u[g + 2] = _mm256_shuffle_ps(t[g + 1], t[g + 3], 0x44);
    u[g + 3] = _mm256_shuffle_ps(t[g + 1], t[g + 3], 0xEE);
  }
  for (int q = 0; q < 4; ++q) {
    r[q] = _mm256_permute2f128_ps(u[q], u[4 + q], 0x20);
    r[4 + q] = _mm256_permute2f128_ps(u[q], u[4 + q], 0x31);
  }
}

// PackTransposedKernel: blocks of 8 source rows x 8 elements, loaded as rows (masked only past the rows' ends: masked
// loads are slow on AMD's cores), times alpha unless it is 1 (exact: most packs copy), transposed in registers, stored
// as 8-lane rows of dst (cut to width); lanes past count are zero. The rows' addresses are read once a block of rows
// into a local array: read from `offsets` at every step, they were reloaded after each store (stores of vectors may
// alias anything).
void pack_transposed_8x8(const float* base, const int64_t* offsets, int64_t count, int64_t width, int64_t len,
                         float alpha, float* dst) {
  const __m256 scale = _mm256_set1_ps(alpha);
  const bool scaled = alpha != 1.0f;
  for (int64_t i0 = 0; i0 < width; i0 += 8) {
    const int64_t rows = std::clamp<int64_t>(count - i0, 0, 8), lanes = std::min<int64_t>(8, width - i0);
    float* out = dst + i0;
    if (rows == 0) {
      for (int64_t k = 0; k < len; ++k) store_first_lanes(out + k * width, _mm256_setzero_ps(), lanes);
      continue;
    }
    const float* row[8];
    for (int64_t i = 0; i < rows; ++i) row[i] = base + offsets[i0 + i];
    for (int64_t k0 = 0; k0 < len; k0 += 8) {
      const int64_t cols = std::min<int64_t>(8, len - k0);
      const __m256i load_mask = first_lanes(cols);
      __m256 r[8];
      for (int i = 0; i < 8; ++i) {
        if (i >= rows) {
          r[i] = _mm256_setzero_ps();
          continue;
        }
        const __m256 v = cols == 8 ? _mm256_loadu_ps(row[i] + k0) : _mm256_maskload_ps(row[i] + k0, load_mask);
        r[i] = scaled ? _mm256_mul_ps(scale, v) : v;
      }
      transpose_8x8(r);
      for (int c = 0; c < cols; ++c) store_first_lanes(out + (k0 + c) * width, r[c], lanes);
    }
  }
}

// PackRowsKernel: each row's nc floats as 8-lane vectors into the panels' rows, the vectors past nc masked (their
// zeros pad the last panel). The row kPrefetchRows ahead is prefetched into L2 (B usually comes from memory: each
// element is packed once per product; into L2 as the AVX-512 packer: forced AVX2 on AMD Zen 4, 2 threads, 64 x 50176
// x 576 1.07x, 96 x 24200 x 363 1.06x, 256 x 6272 x 2304 1.01x, 1024-square 1.00x over L1).
constexpr int64_t kPrefetchRows = 4;

void pack_rows_8(const float* B, int64_t ldb, int64_t kc, int64_t nc, int nr, float* Bp) {
  const int64_t panel_floats = kc * nr;
  for (int64_t k = 0; k < kc; ++k) {
    const float* src = B + k * ldb;
    if (k + kPrefetchRows < kc)
      for (int64_t j = 0; j < nc; j += 16)
        _mm_prefetch(reinterpret_cast<const char*>(src + kPrefetchRows * ldb + j), _MM_HINT_T1);
    float* dst = Bp + k * nr;
    for (int64_t jp = 0; jp < nc; jp += nr, dst += panel_floats) {
      if (jp + nr <= nc) {
        for (int v = 0; v < nr; v += 8) _mm256_storeu_ps(dst + v, _mm256_loadu_ps(src + jp + v));
        continue;
      }
      for (int v = 0; v < nr; v += 8) {
        const int64_t cols = std::clamp<int64_t>(nc - jp - v, 0, 8);
        _mm256_storeu_ps(dst + v, _mm256_maskload_ps(src + jp + v, first_lanes(cols)));
      }
    }
  }
}

// PackGatheredKernel: each row as 8-lane vectors, the last one loaded masked and stored in pieces.
void pack_gathered_8(const float* base, const int64_t* offsets, int64_t count, int64_t len, int64_t width,
                     float* dst) {
  const int64_t full = len / 8 * 8;
  const __m256i tail = first_lanes(len - full);
  for (int64_t k = 0; k < count; ++k, dst += width) {
    const float* src = base + offsets[k];
    for (int64_t j = 0; j < full; j += 8) _mm256_storeu_ps(dst + j, _mm256_loadu_ps(src + j));
    if (len > full) store_first_lanes(dst + full, _mm256_maskload_ps(src + full, tail), len - full);
  }
}

// SplitRow2Kernel: 8 floats of each phase from a 16-float window of the row (loaded whole inside the row; at its
// ends masked, the lanes outside it loaded as 0), the evens and the odds each by a shuffle and a permute of 64-bit
// lanes.
void split_row2_8(const float* src, int64_t W, int64_t pad, int64_t Wq, float* dst) {
  // [a0 a2 a4 a6 b0 b2 b4 b6] from the shuffle's [a0 a2 b0 b2 a4 a6 b4 b6] (and the odds likewise)
  const auto in_order = [](__m256 v) {
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), _MM_SHUFFLE(3, 1, 2, 0)));
  };
  for (int64_t i0 = 0; i0 < Wq; i0 += 8) {
    const int64_t start = 2 * i0 - pad;  // the row's column at the window's first lane
    const auto inside = [&](int64_t first) {  // the window's lanes [first, first + 8) that lie in the row
      const int64_t lo = std::clamp<int64_t>(-start - first, 0, 8), hi = std::clamp<int64_t>(W - start - first, lo, 8);
      return _mm256_andnot_si256(first_lanes(lo), first_lanes(hi));
    };
    const bool whole = start >= 0 && start + 16 <= W;
    const __m256 a = whole ? _mm256_loadu_ps(src + start) : _mm256_maskload_ps(src + start, inside(0));
    const __m256 b = whole ? _mm256_loadu_ps(src + start + 8) : _mm256_maskload_ps(src + start + 8, inside(8));
    const int64_t lanes = std::min<int64_t>(8, Wq - i0);
    store_first_lanes(dst + i0, in_order(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0))), lanes);
    store_first_lanes(dst + Wq + i0, in_order(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))), lanes);
  }
}

}  // namespace

// No copying microkernels: a B panel row here is a cache line or less (16 or 24 floats), and rows of B read in
// place a matrix row apart were not followed by the prefetchers (kPanelOuterMinNr in sgemm.cpp). The kernels reading
// A in place serve products of few columns (sgemm_part's a_in_place).
GemmKernels gemm_kernels_avx2() {
  return GemmKernels{"avx2 6x16 (4x24 for few rows)",
                     {{6, 16, micro<6, 2>, micro_edge<6, 2>, nullptr, micro_rows<6, 2>, micro_rows_edge<6, 2>,
                       micro_gathered<6, 2>, 0, nullptr, nullptr, micro<6, 2, true>,
                       micro_edge<6, 2, true>, nullptr},
                      {4, 24, micro<4, 3>, micro_edge<4, 3>, nullptr, micro_rows<4, 3>, micro_rows_edge<4, 3>,
                       micro_gathered<4, 3>, 0, nullptr, nullptr, micro<4, 3, true>,
                       micro_edge<4, 3, true>, nullptr}},
                     2,
                     dots_4x8,
                     axpys<8>,
                     pack_transposed_8x8,
                     pack_rows_8,
                     pack_gathered_8,
                     split_row2_8,
                     fma_chains<8>};
}

}  // namespace convcore
