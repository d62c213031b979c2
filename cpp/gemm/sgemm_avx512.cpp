// SGEMM microkernels for AVX-512: MR x (16*NV) tiles, MR*NV zmm accumulators, NV B vectors, 1 broadcast.
// 8x48 is the general tile: 3 B vectors and 8 broadcasts a k step feed its 24 FMAs, where 12x32 loads 2 and
// broadcasts 12 (both builds in one process, calls alternated, median of per-pair time ratios, 2 / 1 threads, 8x48
// over 12x32: 96 x 3025 x 363 1.05-1.06 / 1.05x, 1024 x 3000 x 1024 1.06 / 1.04x, 768-square 1.05 / 1.01x,
// 1024-square 1.03 / 1.02x, 256 x 6272 x 2304 1.07 / 1.03x, 512 x 1568 x 4608 1.04 / 1.03x; AlexNet conv1 n=1
// forward 1.05 / 1.03x, res4a n=32 forward 1.04 / 1.05x; 512-square 1.02 / 0.98x). 12x32 serves products whose
// rows or columns it pads clearly less (12 rows; 60 columns: 64, not 96), 6x64 those of 6 rows (LeNet conv1's 6
// filters) or of 64 x 64. Each tile's wide microkernels add up to 32 - (registers of the tile, its B vectors, A's
// broadcast and A's vector down the rows) columns: 3 to 8x48, 2 to 6x64, 3 to 12x32 (adding 4, all 32 registers,
// it spilled: res4a's batch-1 forward, 256 x 196 x 2304, 0.94x as fast as with its narrow edge tile).
#include <immintrin.h>

#include <algorithm>

#include "convcore/gemm.h"

namespace convcore {
namespace {

// The microkernel prefetches B's row this many k steps ahead into L1 (packed panels come from L2). Both builds in one
// process, calls alternated, median of per-pair time ratios, AVX-512, 2 threads: squares 512 / 1024 / 2048 1.02 /
// 1.06 / 1.02x, AlexNet conv1 n=8 forward 1.05x, res5a n=32 forward 1.02x, few-row and conv-shaped products
// 1.00x; 16 steps ahead 1.00-1.01x; A's panel prefetched as well 1.00x.
constexpr int64_t kPrefetchSteps = 8;
// The tile of C, which the tile loads (accumulating) or stores at its end, is prefetched into L1 this many k steps
// before the end (C's tiles come from L3 or memory: each is touched once per K block). Both builds in one process,
// calls alternated, median of per-pair time ratios, AMD Zen 5, 1 / 2 threads: squares 512 / 1024 / 2048 1.04 /
// 1.09 / 1.08x and 1.03 / 1.07 / 1.13x, 256 x 6272 x 2304 1.03 / 1.02x, 512 x 1568 x 4608 1.06 / 1.02x, one-block
// conv-shaped products 1.01-1.03x, 256 x 3136 x 64 0.98-1.00x; 32 steps before the end gained half as much, at the
// start of the tile as much as 96 on squares.
constexpr int64_t kCPrefetchSteps = 96;
// A micro-panel of an A packed in advance as a whole (ASource::prepacked) is prefetched into L1 this many floats ahead
// (2 KiB: the row panels that follow are the next floats; measured at sgemm_part's choice of kernel, sgemm.cpp).
constexpr int64_t kPrefetchAFloats = 512;

// Where a tile's A comes from: a packed micro-panel (packed: MR floats a k step, from a; prepacked: the same, of an A
// packed in advance as a whole, which comes from L3 or memory rather than from the L2 block: prefetched
// kPrefetchAFloats ahead), A's rows in place (rows: row i at a + i * lda, three rows per pointer: lda and 2 * lda are
// scaled index registers), or one pointer per row (gathered: row i at row[i], in runs of len floats, jump apart). The
// k steps are runs x len (runs 1 but gathered).
enum class ASource { packed, prepacked, rows, gathered };
constexpr bool is_packed(ASource a) { return a == ASource::packed || a == ASource::prepacked; }
struct AOperand {
  const float* a;
  int64_t lda;
  const float* const* row;
  int64_t len, runs, jump;
};

// Columns computed as vectors down a tile's rows (acc[j]: column j, lane i row i), its first `rows` rows written to
// C element by element with the tile epilogue (store_tile_element): the narrow edge tile's and the wide kernels'.
template <int NC>
inline void store_column_vectors(const __m512 (&acc)[NC], int rows, bool accumulate, const TileEpilogue* epi,
                                 float* C, int64_t ldc) {
  float sums[NC][16];
  for (int j = 0; j < NC; ++j) _mm512_storeu_ps(sums[j], acc[j]);
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < NC; ++j) store_tile_element(sums[j][i], accumulate, epi, i, j, C + i * ldc + j);
}

// The MR x (16 * NV) tile: C = (accumulate ? C : 0) + A B, then the epilogue. kCopy: each B row loaded is also stored
// to Bcopy. kEdge: the edge microkernel's tile, whose rows past `rows` are computed but neither read nor written and,
// kTail, whose last vector of columns is masked by tail (B's loads, C's loads and stores, the column bias). kX: the
// tile goes on with kX more columns of C (16 * NV onwards), B's at Bx (row stride ldbx), each as one vector of the
// MR rows (A's k step as a vector: loaded from a packed panel, or gathered or blended from the rows) fed by one FMA
// a k step (the micro_wide kernels); each of their elements takes the same products in the same order, then C, the
// biases and ReLU as the tile's do (store_tile_element): the same bits.
template <int MR, int NV, bool kCopy, ASource kA, bool kEdge = false, bool kTail = kEdge, int kX = 0>
inline void micro_body(const AOperand& A, const float* Bp, int64_t ldb, float* Bcopy, float* C, int64_t ldc,
                       bool accumulate, const TileEpilogue* epi, int rows = MR, __mmask16 tail = 0xFFFF,
                       const float* Bx = nullptr, int64_t ldbx = 0) {
  static_assert(kX == 0 || (!kCopy && !kEdge && kA != ASource::gathered && MR <= 16),
                "extra columns: whole tiles of at most 16 rows, A packed or in place");
  constexpr bool kPacked = is_packed(kA);
  constexpr int kPointers = kA == ASource::rows ? (MR + 2) / 3 : kA == ASource::gathered ? MR : 1;
  // vector v of a row at p: all its lanes, or tail for an edge tile's last
  const auto load = [tail](int v, const float* p) {
    return kTail && v == NV - 1 ? _mm512_maskz_loadu_ps(tail, p) : _mm512_loadu_ps(p);
  };
  const int64_t lda = A.lda;
  const float* ap = A.a;
  const float* ptr[kPointers];
  for (int g = 0; g < kPointers; ++g) ptr[g] = kA == ASource::gathered ? A.row[g] : A.a + 3 * g * lda;
  __m512 c[MR][NV], x[kX > 0 ? kX : 1];
  // kX with A's rows in place: the k step's A down the rows, gathered from at most 8 rows (lda apart) by one
  // instruction, else blended from the rows' broadcasts, one masked move a row (on Intel's cores, 8 more operations
  // a k step for the ports that run the FMAs). Intel Xeon (family 6 model 167), each build in its own process,
  // alternated: frozen ResNet-18 at batch 1, 2 threads, 1.03-1.07x in 6 of 6 pairs (its 512 x 49 x 4608 products of
  // layer 4 run here); 512 x 49 x 4608 and 256 x 50 x 1152 on 1 thread 1.00-1.10x. Two gathers for 12 rows: 360 x 35
  // x 2304 0.90x, so 12x32 blends.
  constexpr bool kGatherRows = kX > 0 && kA == ASource::rows && MR <= 8;
  __m512i row_offsets = _mm512_setzero_si512();
  if constexpr (kGatherRows)
    row_offsets = _mm512_mullo_epi64(_mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi64(lda));
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) c[i][v] = _mm512_setzero_ps();
#pragma GCC unroll 4
  for (int j = 0; j < kX; ++j) x[j] = _mm512_setzero_ps();
  const auto step = [&](int64_t k) {
    __m512 b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      _mm_prefetch(reinterpret_cast<const char*>(Bp + kPrefetchSteps * ldb + 16 * v), _MM_HINT_T0);
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = load(v, Bp + 16 * v);
    if constexpr (kCopy) {
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) _mm512_store_ps(Bcopy + 16 * v, b[v]);
      Bcopy += 16 * NV;
    }
    __m512 a_rows = _mm512_setzero_ps();  // kX: the k step's A down the rows
    if constexpr (kX > 0 && kPacked) a_rows = _mm512_maskz_loadu_ps(__mmask16((1u << MR) - 1), ap);
    if constexpr (kGatherRows)
      a_rows = _mm512_insertf32x8(  // zero-extended (GCC 12's _mm512_zextps256_ps512 warned of an undefined vector)
          _mm512_setzero_ps(),
          _mm512_mask_i64gather_ps(_mm256_setzero_ps(), __mmask8((1u << MR) - 1), row_offsets, ptr[0], 4), 0);
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) {
      const __m512 a = _mm512_set1_ps(kPacked ? ap[i]
                                      : kA == ASource::rows ? ptr[i / 3][(i % 3) * lda]
                                                            : ptr[i][k]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) c[i][v] = _mm512_fmadd_ps(a, b[v], c[i][v]);
      if constexpr (kX > 0 && kA == ASource::rows && !kGatherRows)
        a_rows = _mm512_mask_mov_ps(a_rows, __mmask16(1u << i), a);
    }
    if constexpr (kX > 0) {
#pragma GCC unroll 4
      for (int j = 0; j < kX; ++j) x[j] = _mm512_fmadd_ps(a_rows, _mm512_set1_ps(Bx[j]), x[j]);
      Bx += ldbx;
    }
    if constexpr (kA == ASource::prepacked)
      _mm_prefetch(reinterpret_cast<const char*>(ap + kPrefetchAFloats), _MM_HINT_T0);
    if constexpr (kPacked) ap += MR;
    if constexpr (kA == ASource::rows)
      for (int g = 0; g < kPointers; ++g) ++ptr[g];
    Bp += ldb;
  };
  if constexpr (kA == ASource::gathered) {
    for (int64_t r = 0; r < A.runs; ++r) {
      for (int64_t k = 0; k < A.len; ++k) step(k);
      for (int g = 0; g < kPointers; ++g) ptr[g] += A.jump;
    }
  } else {
    const int64_t split = std::max<int64_t>(0, A.len - kCPrefetchSteps);
    for (int64_t k = 0; k < split; ++k) step(k);
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i)
      if (!kEdge || i < rows)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) _mm_prefetch(reinterpret_cast<const char*>(C + i * ldc + 16 * v), _MM_HINT_T0);
    for (int64_t k = split; k < A.len; ++k) step(k);
  }
  if (accumulate)
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i)
      if (!kEdge || i < rows)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v)
          c[i][v] = _mm512_add_ps(c[i][v], load(v, C + i * ldc + 16 * v));
  if (epi) {
    if (epi->row_bias)
#pragma GCC unroll 12
      for (int i = 0; i < MR; ++i) {
        const __m512 b = _mm512_set1_ps(!kEdge || i < rows ? epi->row_bias[i] : 0.0f);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) c[i][v] = _mm512_add_ps(c[i][v], b);
      }
    if (epi->col_bias)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        const __m512 b = load(v, epi->col_bias + 16 * v);
#pragma GCC unroll 12
        for (int i = 0; i < MR; ++i) c[i][v] = _mm512_add_ps(c[i][v], b);
      }
    if (epi->relu)  // keep where not <= 0: positive or NaN (relu_keep_nan), else +0
#pragma GCC unroll 12
      for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v)
          c[i][v] = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(c[i][v], _mm512_setzero_ps(), _CMP_NLE_UQ), c[i][v]);
  }
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i)
    if (!kEdge || i < rows)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        if (kTail && v == NV - 1)
          _mm512_mask_storeu_ps(C + i * ldc + 16 * v, tail, c[i][v]);
        else
          _mm512_storeu_ps(C + i * ldc + 16 * v, c[i][v]);
      }
  if constexpr (kX > 0) {
    const TileEpilogue* xepi = epi;
    TileEpilogue shifted;  // the epilogue's column bias from the extra columns on
    if (epi && epi->col_bias) {
      shifted = {epi->row_bias, epi->col_bias + 16 * NV, epi->relu};
      xepi = &shifted;
    }
    store_column_vectors(x, MR, accumulate, xepi, C + 16 * NV, ldc);
  }
}

// A's micro-panel (packed) or rows (in place), kc steps
inline AOperand a_operand(const float* a, int64_t lda, int64_t kc) { return {a, lda, nullptr, kc, 1, 0}; }

// MicroKernel, A packed (packed in advance: prepacked, GemmTile::prepacked).
template <int MR, int NV, ASource kA = ASource::packed>
void micro(int64_t kc, const float* Ap, const float* Bp, int64_t ldb, float* C, int64_t ldc, bool accumulate,
           const TileEpilogue* epi) {
  micro_body<MR, NV, false, kA>(a_operand(Ap, 0, kc), Bp, ldb, nullptr, C, ldc, accumulate, epi);
}

// RowsMicroKernel: micro, reading A's rows in place.
template <int MR, int NV>
void micro_rows(int64_t kc, const float* A, int64_t lda, const float* Bp, int64_t ldb, float* C, int64_t ldc,
                bool accumulate, const TileEpilogue* epi) {
  micro_body<MR, NV, false, ASource::rows>(a_operand(A, lda, kc), Bp, ldb, nullptr, C, ldc, accumulate, epi);
}

// CopyingMicroKernel: micro, storing each B row it loads to the packed panel.
template <int MR, int NV>
void micro_copying(int64_t kc, const float* Ap, const float* B, int64_t ldb, float* Bcopy, float* C, int64_t ldc,
                   bool accumulate, const TileEpilogue* epi) {
  micro_body<MR, NV, true, ASource::packed>(a_operand(Ap, 0, kc), B, ldb, Bcopy, C, ldc, accumulate, epi);
}

// WideMicroKernel: the tile and `cols` (1 .. W) more columns, A packed (lda 0; packed in advance: prepacked) or its
// rows in place.
template <int MR, int NV, ASource kA, int W>
void micro_wide(int64_t kc, const float* A, int64_t lda, const float* Bp, int64_t ldb, const float* Bx, int64_t ldbx,
                float* C, int64_t ldc, bool accumulate, const TileEpilogue* epi, int cols) {
  const AOperand a = a_operand(A, lda, kc);
  if constexpr (W > 1) {
    if (cols == W) {
      micro_body<MR, NV, false, kA, false, false, W>(a, Bp, ldb, nullptr, C, ldc, accumulate, epi, MR, 0xFFFF, Bx,
                                                     ldbx);
      return;
    }
    micro_wide<MR, NV, kA, W - 1>(kc, A, lda, Bp, ldb, Bx, ldbx, C, ldc, accumulate, epi, cols);
  } else {
    micro_body<MR, NV, false, kA, false, false, 1>(a, Bp, ldb, nullptr, C, ldc, accumulate, epi, MR, 0xFFFF, Bx,
                                                   ldbx);
  }
}

// An edge tile of NC <= 4 columns with A packed: each column's sums as one vector down the MR rows (a k step: one
// load of A's MR values, NC broadcasts of B's, NC FMAs) instead of MR rows of one masked 16-lane vector (MR FMAs a k
// step for NC useful lanes: 5.7% of res4a's batch-1 forward on AMD Zen 4, whose 14 x 14 maps give products
// 196 = 4 x 48 + 4 columns wide). Each element takes the same products in the same order as in micro_body, then
// C, the biases and ReLU as its epilogue does: the same bits.
template <int MR, int NC, ASource kA>
void narrow_edge(const AOperand& A, const float* Bp, int64_t ldb, float* C, int64_t ldc, bool accumulate,
                 const TileEpilogue* epi, int rows) {
  static_assert(MR <= 16 && NC <= 4, "one vector of rows, at most 4 columns");
  const __mmask16 row_mask = __mmask16((1u << MR) - 1);
  __m512 acc[NC];
  for (int j = 0; j < NC; ++j) acc[j] = _mm512_setzero_ps();
  for (int64_t k = 0; k < A.len; ++k, Bp += ldb) {
    const __m512 a = _mm512_maskz_loadu_ps(row_mask, A.a + k * MR);
    if constexpr (kA == ASource::prepacked)
      _mm_prefetch(reinterpret_cast<const char*>(A.a + k * MR + kPrefetchAFloats), _MM_HINT_T0);
    for (int j = 0; j < NC; ++j) acc[j] = _mm512_fmadd_ps(a, _mm512_set1_ps(Bp[j]), acc[j]);
  }
  store_column_vectors(acc, rows, accumulate, epi, C, ldc);
}

// The MR x (16 * V) edge tile with the fewest vectors V <= NV that covers cols, its last vector masked unless full
// (masked moves with full masks cost on AMD Zen 5: 64 -> 64 3x3 weight gradients, whose gathered tile is always an
// edge tile with 64 full columns, 1.01-1.02x).
template <int MR, int NV, ASource kA, int V = 1>
void edge_tile(const AOperand& A, const float* Bp, int64_t ldb, float* C, int64_t ldc, bool accumulate,
               const TileEpilogue* epi, int rows, int cols) {
  if constexpr (is_packed(kA) && V == 1) {
    switch (cols) {
      case 1: return narrow_edge<MR, 1, kA>(A, Bp, ldb, C, ldc, accumulate, epi, rows);
      case 2: return narrow_edge<MR, 2, kA>(A, Bp, ldb, C, ldc, accumulate, epi, rows);
      case 3: return narrow_edge<MR, 3, kA>(A, Bp, ldb, C, ldc, accumulate, epi, rows);
      case 4: return narrow_edge<MR, 4, kA>(A, Bp, ldb, C, ldc, accumulate, epi, rows);
      default: break;
    }
  }
  if constexpr (V < NV) {
    if (cols > 16 * V) {
      edge_tile<MR, NV, kA, V + 1>(A, Bp, ldb, C, ldc, accumulate, epi, rows, cols);
      return;
    }
  }
  if (cols == 16 * V)
    micro_body<MR, V, false, kA, true, false>(A, Bp, ldb, nullptr, C, ldc, accumulate, epi, rows);
  else
    micro_body<MR, V, false, kA, true>(A, Bp, ldb, nullptr, C, ldc, accumulate, epi, rows,
                                       __mmask16(0xFFFFu >> (16 * V - cols)));
}

// EdgeMicroKernel, A packed (packed in advance: prepacked) or read in place (rows).
template <int MR, int NV, ASource kA>
void micro_edge(int64_t kc, const float* A, int64_t lda, const float* Bp, int64_t ldb, float* C, int64_t ldc,
                bool accumulate, const TileEpilogue* epi, int rows, int cols) {
  edge_tile<MR, NV, kA>(a_operand(A, lda, kc), Bp, ldb, C, ldc, accumulate, epi, rows, cols);
}

// GatheredMicroKernel: the edge tile, A's rows through their pointers (8 for 8x48: kept in registers).
template <int MR, int NV>
void micro_gathered(int64_t len, int64_t runs, int64_t jump, const float* const* a, const float* Bp, int64_t ldb,
                    float* C, int64_t ldc, bool accumulate, int rows, int cols) {
  edge_tile<MR, NV, ASource::gathered>({nullptr, 0, a, len, runs, jump}, Bp, ldb, C, ldc, accumulate, nullptr, rows,
                                       cols);
}

// The 16 lanes of v summed by a fixed halving tree (lanes i and i + half, half = 8, 4, 2, 1). Full-width
// two-source permutes: GCC 12 warns (-Wuninitialized) on its one-source permutes and extracts, which
// _mm512_reduce_add_ps uses.
inline float lane_sum(__m512 v) {
  const __m512i upper8 = _mm512_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i upper4 = _mm512_setr_epi32(4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7, 4, 5, 6, 7);
  const __m512i upper2 = _mm512_setr_epi32(2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
  const __m512i upper1 = _mm512_set1_epi32(1);
  v = _mm512_add_ps(v, _mm512_permutex2var_ps(v, upper8, v));
  v = _mm512_add_ps(v, _mm512_permutex2var_ps(v, upper4, v));
  v = _mm512_add_ps(v, _mm512_permutex2var_ps(v, upper2, v));
  v = _mm512_add_ps(v, _mm512_permutex2var_ps(v, upper1, v));
  return _mm512_cvtss_f32(v);
}

// G dot products a . b_g at once (the loads of a shared). Per product: two 16-lane FMA accumulators over 32-float
// steps, masked 16-float steps into the first, then the lanes of their sum reduced by lane_sum: the same operations
// in the same order for a product whatever G is.
template <int G>
inline void dot_group(const float* a, const float* B, int64_t ldb, int64_t K, float* out) {
  __m512 s0[G], s1[G];
  for (int g = 0; g < G; ++g) s0[g] = s1[g] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) {
    const __m512 a0 = _mm512_loadu_ps(a + k), a1 = _mm512_loadu_ps(a + k + 16);
    for (int g = 0; g < G; ++g) {
      s0[g] = _mm512_fmadd_ps(a0, _mm512_loadu_ps(B + g * ldb + k), s0[g]);
      s1[g] = _mm512_fmadd_ps(a1, _mm512_loadu_ps(B + g * ldb + k + 16), s1[g]);
    }
  }
  for (; k < K; k += 16) {
    const __mmask16 m = K - k >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (K - k)) - 1);
    const __m512 a0 = _mm512_maskz_loadu_ps(m, a + k);
    for (int g = 0; g < G; ++g) s0[g] = _mm512_fmadd_ps(a0, _mm512_maskz_loadu_ps(m, B + g * ldb + k), s0[g]);
  }
  for (int g = 0; g < G; ++g) out[g] = lane_sum(_mm512_add_ps(s0[g], s1[g]));
}

// Rows of B four at a time (one load of a feeds four FMAs; the four reductions overlap), the rest one by one.
void dots_4x2x16(const float* a, const float* B, int64_t ldb, int64_t K, int64_t n, float* out) {
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) dot_group<4>(a, B + j * ldb, ldb, K, out + j);
  for (; j < n; ++j) dot_group<1>(a, B + j * ldb, ldb, K, out + j);
}

// r[c] = column c of the 16 x 16 block whose row i is r[i] (the four-stage unpack / shuffle transpose).
inline void transpose_16x16(__m512 r[16]) {
  const __mmask16 all = 0xFFFF;  // the zero-masking forms: GCC 12 warns (-Wmaybe-uninitialized) on the plain ones
  __m512 t[16];
  for (int i = 0; i < 16; i += 2) {  // t[i], t[i+1]: rows i, i+1 interleaved, per 128-bit lane
    t[i] = _mm512_maskz_unpacklo_ps(all, r[i], r[i + 1]);
    t[i + 1] = _mm512_maskz_unpackhi_ps(all, r[i], r[i + 1]);
  }
  for (int g = 0; g < 16; g += 4) {  // r[g + q], lane L: rows g..g+3 of column 4L + q
    r[g] = _mm512_maskz_shuffle_ps(all, t[g], t[g + 2], 0x44);
    r[g + 1] = _mm512_maskz_shuffle_ps(all, t[g], t[g + 2], 0xEE);
    r[g + 2] = _mm512_maskz_shuffle_ps(all, t[g + 1], t[g + 3], 0x44);
    r[g + 3] = _mm512_maskz_shuffle_ps(all, t[g + 1], t[g + 3], 0xEE);
  }
  for (int q = 0; q < 4; ++q) {  // gather lane L of r[q], r[4+q], r[8+q], r[12+q] into column 4L + q
    const __m512 even01 = _mm512_maskz_shuffle_f32x4(all, r[q], r[4 + q], 0x88);
    const __m512 odd01 = _mm512_maskz_shuffle_f32x4(all, r[q], r[4 + q], 0xDD);
    const __m512 even23 = _mm512_maskz_shuffle_f32x4(all, r[8 + q], r[12 + q], 0x88);
    const __m512 odd23 = _mm512_maskz_shuffle_f32x4(all, r[8 + q], r[12 + q], 0xDD);
    t[q] = _mm512_maskz_shuffle_f32x4(all, even01, even23, 0x88);
    t[4 + q] = _mm512_maskz_shuffle_f32x4(all, odd01, odd23, 0x88);
    t[8 + q] = _mm512_maskz_shuffle_f32x4(all, even01, even23, 0xDD);
    t[12 + q] = _mm512_maskz_shuffle_f32x4(all, odd01, odd23, 0xDD);
  }
  for (int c = 0; c < 16; ++c) r[c] = t[c];
}

// The first `count` floats at p (mask m of count lanes), zeros above: a plain load for 16 and 8 (8x8 images' rows),
// masked otherwise. (Zero-masking forms here and below: the plain ones' undefined pass-through draws GCC 12
// warnings.)
inline __m512 load_first_16(const float* p, int64_t count, __mmask16 m) {
  if (count == 16) return _mm512_loadu_ps(p);
  if (count == 8) return _mm512_maskz_insertf32x8(0xFFFF, _mm512_setzero_ps(), _mm256_loadu_ps(p), 0);
  return _mm512_maskz_loadu_ps(m, p);
}

// The 8 x 16 block whose row i is r[i], transposed: u[j] = columns 2j and 2j + 1 (8 floats each), so that u[0..7]
// in order are the transpose's 16 rows of 8. Per 128-bit lane: rows interleaved in pairs, then columns 4L + q of
// rows 0-3 (s[q]) and 4-7 (s[4 + q]); then the lanes gathered across registers.
inline void transpose_8x16(const __m512 r[8], __m512 u[8]) {
  const __mmask16 all = 0xFFFF;  // the zero-masking forms: GCC 12 warns (-Wmaybe-uninitialized) on the plain ones
  __m512 t[8], s[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm512_maskz_unpacklo_ps(all, r[i], r[i + 1]);
    t[i + 1] = _mm512_maskz_unpackhi_ps(all, r[i], r[i + 1]);
  }
  for (int h = 0; h < 2; ++h) {  // rows 4h..4h+3
    s[4 * h] = _mm512_maskz_shuffle_ps(all, t[4 * h], t[4 * h + 2], 0x44);
    s[4 * h + 1] = _mm512_maskz_shuffle_ps(all, t[4 * h], t[4 * h + 2], 0xEE);
    s[4 * h + 2] = _mm512_maskz_shuffle_ps(all, t[4 * h + 1], t[4 * h + 3], 0x44);
    s[4 * h + 3] = _mm512_maskz_shuffle_ps(all, t[4 * h + 1], t[4 * h + 3], 0xEE);
  }
  __m512 low[4], high[4];  // low[q]: columns q, 4 + q of rows 0-3 then 4-7; high[q]: columns 8 + q, 12 + q
  for (int q = 0; q < 4; ++q) {
    low[q] = _mm512_maskz_shuffle_f32x4(all, s[q], s[4 + q], 0x44);
    high[q] = _mm512_maskz_shuffle_f32x4(all, s[q], s[4 + q], 0xEE);
  }
  for (int q = 0; q < 4; q += 2) {  // columns q, q + 1 (and 4, 8, 12 further) side by side
    u[q / 2] = _mm512_maskz_shuffle_f32x4(all, low[q], low[q + 1], 0x88);
    u[2 + q / 2] = _mm512_maskz_shuffle_f32x4(all, low[q], low[q + 1], 0xDD);
    u[4 + q / 2] = _mm512_maskz_shuffle_f32x4(all, high[q], high[q + 1], 0x88);
    u[6 + q / 2] = _mm512_maskz_shuffle_f32x4(all, high[q], high[q + 1], 0xDD);
  }
}

// PackTransposedKernel for width 8 (the 8-row tile's A panels): blocks of 8 rows x 16 elements, whose transposes
// are 16 rows of 8, 128 consecutive floats of dst, stored plain (the 16 x 16 blocks transposed as many zero rows
// and stored 8 lanes masked: 8% of a 2048-square product on Zen 5, one thread).
void pack_transposed_8(const float* base, const int64_t* offsets, int64_t count, int64_t len, float alpha,
                       float* dst) {
  const __m512 scale = _mm512_set1_ps(alpha);
  for (int64_t k0 = 0; k0 < len; k0 += 16) {
    const int64_t cols = std::min<int64_t>(16, len - k0);
    const __mmask16 m = __mmask16((1u << cols) - 1);
    __m512 r[8], u[8];
    for (int i = 0; i < 8; ++i)
      r[i] = i < count ? _mm512_mul_ps(scale, load_first_16(base + offsets[i] + k0, cols, m)) : _mm512_setzero_ps();
    transpose_8x16(r, u);
    float* out = dst + k0 * 8;
    for (int j = 0; j < 8 && 2 * j < cols; ++j) {
      if (2 * j + 1 < cols)
        _mm512_storeu_ps(out + 16 * j, u[j]);
      else
        _mm256_storeu_ps(out + 16 * j, _mm512_maskz_extractf32x8_ps(0xFF, u[j], 0));
    }
  }
}

// PackTransposedKernel: blocks of 16 source rows x 16 elements, loaded as rows (masked past len), transposed in
// registers, stored as 16-lane rows of dst (masked past width); lanes past count are zero. Full blocks move plain
// (masked moves with full masks cost on AMD Zen 5: squares 1024 and 2048 1.02-1.05x, one thread). Width 8 goes
// to pack_transposed_8.
void pack_transposed_16x16(const float* base, const int64_t* offsets, int64_t count, int64_t width, int64_t len,
                           float alpha, float* dst) {
  if (width == 8) {
    pack_transposed_8(base, offsets, count, len, alpha, dst);
    return;
  }
  const __m512 scale = _mm512_set1_ps(alpha);
  for (int64_t i0 = 0; i0 < width; i0 += 16) {
    const int64_t rows = std::clamp<int64_t>(count - i0, 0, 16);
    const __mmask16 lanes = __mmask16((1u << std::min<int64_t>(16, width - i0)) - 1);
    float* out = dst + i0;
    if (rows == 0) {
      for (int64_t k = 0; k < len; ++k) _mm512_mask_storeu_ps(out + k * width, lanes, _mm512_setzero_ps());
      continue;
    }
    for (int64_t k0 = 0; k0 < len; k0 += 16) {
      const int64_t cols = std::min<int64_t>(16, len - k0);
      const __mmask16 m = __mmask16((1u << cols) - 1);
      __m512 r[16];
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i)  // (offsets past count may be unset: no address is formed from them)
        r[i] = i < rows ? _mm512_mul_ps(scale, load_first_16(base + offsets[i0 + i] + k0, cols, m))
                        : _mm512_setzero_ps();
      transpose_16x16(r);
#pragma GCC unroll 16
      for (int c = 0; c < 16; ++c) {  // constant indices: r stays in registers (a run-time bound spilled it)
        if (c >= cols) break;
        if (lanes == 0xFFFF)
          _mm512_storeu_ps(out + (k0 + c) * width, r[c]);
        else
          _mm512_mask_storeu_ps(out + (k0 + c) * width, lanes, r[c]);
      }
    }
  }
}

// PackRowsKernel: each row's nc floats as 16-lane vectors into the panels' rows, the vectors past nc masked (their
// zeros pad the last panel). The row kPrefetchRows ahead is prefetched (B usually comes from memory: each element
// is packed once per product; measured 2 threads, median GFLOP/s, 64 x 3136 x 576 161.7 -> 168.8 over
// std::copy per panel row, 96 x 24200 x 363 157.6 -> 186.0). It goes to L2 (prefetcht1): into L1, the lines of rows
// a page or more apart were bounded by L1's few outstanding misses (both builds in one process, calls alternated,
// median of per-pair time ratios, AMD Zen 4, 2 / 1 threads, L2 over L1: 64 x 50176 x 576 1.07 / 1.07x, 96 x 24200 x
// 363 1.06 / 1.08x, 256 x 6272 x 2304 1.03 / 1.04x, squares and B in L2 1.00x; 8 or 16 rows ahead ran as 4 do).
constexpr int64_t kPrefetchRows = 4;

void pack_rows_16(const float* B, int64_t ldb, int64_t kc, int64_t nc, int nr, float* Bp) {
  const int64_t panel_floats = kc * nr;
  for (int64_t k = 0; k < kc; ++k) {
    const float* src = B + k * ldb;
    if (k + kPrefetchRows < kc)
      for (int64_t j = 0; j < nc; j += 16)
        _mm_prefetch(reinterpret_cast<const char*>(src + kPrefetchRows * ldb + j), _MM_HINT_T1);
    float* dst = Bp + k * nr;
    for (int64_t jp = 0; jp < nc; jp += nr, dst += panel_floats) {
      if (jp + nr <= nc) {
        for (int v = 0; v < nr; v += 16) _mm512_storeu_ps(dst + v, _mm512_loadu_ps(src + jp + v));
        continue;
      }
      for (int v = 0; v < nr; v += 16) {
        const int64_t cols = std::clamp<int64_t>(nc - jp - v, 0, 16);
        _mm512_storeu_ps(dst + v, _mm512_maskz_loadu_ps(__mmask16((1u << cols) - 1), src + jp + v));
      }
    }
  }
}

// PackGatheredKernel: each row as 16-lane vectors, then 8 and 4 lanes, the last 1-3 masked (a library copy per row
// of at most a few vectors cost more in its call than in its copy: 10% of a strided first layer's forward; masked
// moves cost on AMD Zen 5, and 8x8 images' rows took one each).
void pack_gathered_16(const float* base, const int64_t* offsets, int64_t count, int64_t len, int64_t width,
                      float* dst) {
  const int64_t full = len / 16 * 16;
  for (int64_t k = 0; k < count; ++k, dst += width) {
    const float* src = base + offsets[k];
    for (int64_t j = 0; j < full; j += 16) _mm512_storeu_ps(dst + j, _mm512_loadu_ps(src + j));
    int64_t j = full;
    if (len - j >= 8) {
      _mm256_storeu_ps(dst + j, _mm256_loadu_ps(src + j));
      j += 8;
    }
    if (len - j >= 4) {
      _mm_storeu_ps(dst + j, _mm_loadu_ps(src + j));
      j += 4;
    }
    if (j < len) {
      const __mmask16 rest = __mmask16((1u << (len - j)) - 1);
      _mm512_mask_storeu_ps(dst + j, rest, _mm512_maskz_loadu_ps(rest, src + j));
    }
  }
}

// SplitRow2Kernel: 16 floats of each phase from a 32-float window of the row (loaded whole inside the row; at its
// ends masked, the lanes outside it loaded as 0), the evens and the odds each by one two-source permute. Full
// vectors are stored unmasked (masked moves with full masks cost on AMD Zen 5).
void split_row2_16(const float* src, int64_t W, int64_t pad, int64_t Wq, float* dst) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  for (int64_t i0 = 0; i0 < Wq; i0 += 16) {
    const int64_t start = 2 * i0 - pad;  // the row's column at the window's first lane
    __m512 a, b;
    if (start >= 0 && start + 32 <= W) {
      a = _mm512_loadu_ps(src + start);
      b = _mm512_loadu_ps(src + start + 16);
    } else {
      const int64_t lo = std::clamp<int64_t>(-start, 0, 32), hi = std::clamp<int64_t>(W - start, lo, 32);
      const uint64_t inside = ((uint64_t(1) << hi) - 1) & ~((uint64_t(1) << lo) - 1);  // the window's lanes in the row
      a = _mm512_maskz_loadu_ps(__mmask16(inside), src + start);
      b = _mm512_maskz_loadu_ps(__mmask16(inside >> 16), src + start + 16);
    }
    const __m512 evens = _mm512_permutex2var_ps(a, even, b), odds = _mm512_permutex2var_ps(a, odd, b);
    if (Wq - i0 >= 16) {
      _mm512_storeu_ps(dst + i0, evens);
      _mm512_storeu_ps(dst + Wq + i0, odds);
    } else {
      const __mmask16 lanes = __mmask16((1u << (Wq - i0)) - 1);
      _mm512_mask_storeu_ps(dst + i0, lanes, evens);
      _mm512_mask_storeu_ps(dst + Wq + i0, lanes, odds);
    }
  }
}

}  // namespace

GemmKernels gemm_kernels_avx512() {
  return GemmKernels{"avx512 8x48 (12x32, 6x64 for narrow products)",
                     {{8, 48, micro<8, 3>, micro_edge<8, 3, ASource::packed>, micro_copying<8, 3>, micro_rows<8, 3>,
                       micro_edge<8, 3, ASource::rows>, micro_gathered<8, 3>, 3,
                       micro_wide<8, 3, ASource::packed, 3>, micro_wide<8, 3, ASource::rows, 3>,
                       micro<8, 3, ASource::prepacked>, micro_edge<8, 3, ASource::prepacked>,
                       micro_wide<8, 3, ASource::prepacked, 3>},
                      {12, 32, micro<12, 2>, micro_edge<12, 2, ASource::packed>, micro_copying<12, 2>,
                       micro_rows<12, 2>, micro_edge<12, 2, ASource::rows>, nullptr, 3,
                       micro_wide<12, 2, ASource::packed, 3>, micro_wide<12, 2, ASource::rows, 3>,
                       micro<12, 2, ASource::prepacked>, micro_edge<12, 2, ASource::prepacked>,
                       micro_wide<12, 2, ASource::prepacked, 3>},
                      {6, 64, micro<6, 4>, micro_edge<6, 4, ASource::packed>, micro_copying<6, 4>, micro_rows<6, 4>,
                       micro_edge<6, 4, ASource::rows>, micro_gathered<6, 4>, 2,
                       micro_wide<6, 4, ASource::packed, 2>, micro_wide<6, 4, ASource::rows, 2>,
                       micro<6, 4, ASource::prepacked>, micro_edge<6, 4, ASource::prepacked>,
                       micro_wide<6, 4, ASource::prepacked, 2>}},
                     3,
                     dots_4x2x16,
                     axpys<16>,
                     pack_transposed_16x16,
                     pack_rows_16,
                     pack_gathered_16,
                     split_row2_16,
                     fma_chains<16>};
}

}  // namespace convcore
