// The tiled SGEMM engine (portable code around the per-ISA microkernels): loop order jc (NC) -> pc (KC, pack B) ->
// ic (MC, pack A) -> ir (MR) -> jr (NR), KC standing for the product's K block (gemm_k_block). One A micro-panel (mr x
// kc, the broadcast operand) stays in L1 while the B micro-panels (the vector operand) stream from the packed B
// block in L2, and C is walked along its rows, which the hardware prefetchers follow (measured against jr -> ir,
// which kept B's micro-panel in L1 and jumped down C: 5-20% faster for n >= 512 on 1 and 2 threads); products of
// few rows run jr -> ir with B packed panel by panel, or have their first row panel pack B as it computes
// (sgemm_part). Packing buffers are per thread (thread_local, 64-byte aligned, grown on demand; all of a thread's A,
// where packed before the blocks, from its CachedBlock), except all of A packed once for the threads of a product
// taken in chunks where it takes more than 4 MiB.
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <new>
#include <optional>
#include <vector>

#include "convcore/buffer_cache.h"
#include "convcore/dispatch.h"
#include "convcore/gemm.h"
#include "convcore/threads.h"

namespace convcore {
namespace {
// K blocks: a product of depth up to kOneBlockK in one block, deeper ones in blocks of at most KC. The A micro-panel,
// mr x kc (at most 18 KiB), stays in L1.
constexpr int64_t KC = 256;
constexpr int64_t kOneBlockK = 384;
}  // namespace

// The K block of a product of depth K: K up to kOneBlockK in one block (each block stores and reloads all of C:
// both builds in one process, calls alternated, median of per-pair time ratios, 2 threads: 96 x 3025 x 363,
// AlexNet conv1's product, 1.07x faster in one block than in two of 182; deeper products were not faster in blocks
// of 384: 512 x 1568 x 4608 0.95x, squares 0.99-1.00x), else cut into equal blocks of at most KC, so that no short
// last block reloads and stores all of C for a few products (K = 600: 3 x 200, not 256 + 256 + 88; measured 2
// threads, alternating, median ms: AlexNet conv1 n=8 forward 12.9 -> 10.1, res5a n=32 forward 35.6 -> 32.0, when
// that K of 363 ran as 256 + 107). It depends on K alone: every row of C sums the same blocks whatever M, the tile
// (every tile and ISA uses it) or the thread count.
int64_t gemm_k_block(int64_t K) {
  if (K <= kOneBlockK) return K;
  const int64_t blocks = (K + KC - 1) / KC;
  return (K + blocks - 1) / blocks;
}

namespace {

constexpr int64_t MC = 144;   // packed A block MC x kc (at most 216 KiB); a multiple of every mr
constexpr int64_t NC = 768;   // packed B block kc x NC (768 KiB-1.1 MiB) stays in L2; a multiple of every nr
constexpr int64_t kInPlaceRowFloats = 1024;  // B read in place: one row panel uses it, or its rows at most
constexpr int64_t kInPlaceFloats = 8192;     // this far apart and all of it at most this big (32 KiB; 64 KiB,
constexpr int64_t kInPlaceOneBlockFloats = 16384;  // for the rows of one A block), or
constexpr int64_t kInPlaceTwoPanelRowFloats = 8192;  // two row panels use it and its rows are at most this far apart
constexpr int64_t kPanelOuterFloats = 8192;  // B micro-panels packed one by one up to this size (32 KiB), and
constexpr int kPanelOuterMinNr = 32;         // from a B in memory only this wide (two cache lines a row) or wider
constexpr int64_t kInPlaceAPanels = 2;       // A read in place by products of at most this many column panels
constexpr int64_t kDeepInPlaceK = 512;       // or by products this deep
constexpr int64_t kDeepInPlaceColumns = 64;  // of at most this many columns (the product's, not a thread's part)
// An A the engine may read in place (with a rows kernel, no copying of B, few column panels: sgemm_part): stored
// row-major and taken as it is.
bool plain_a(Trans trans_a, float alpha) { return trans_a == Trans::no && alpha == 1.0f; }
constexpr int64_t kCopyRowFloats = 8192;     // the first row panel packs B as it computes: rows this far apart
constexpr int64_t kChunksPerThread = 4;             // column chunks (Shares): at least this many per thread,
constexpr int64_t kMinChunkColumns = 512;           // the first ones this wide (or wider, for kChunksPerThread),
constexpr int64_t kMaxSharedFloats = int64_t(1) << 23;  // and all of packed A at most this big (32 MiB); or
constexpr int64_t kSmallChunkedFloats = int64_t(1) << 20;  // packed A at most this big (4 MiB) and
constexpr int64_t kSmallChunkedPanels = 12;                // at least this many column panels per thread
constexpr int64_t kOwnPackedAFloats = int64_t(1) << 20;    // chunked, each thread packs all of A itself up to 4 MiB

// Column block width for a thread's n columns: blocks of about NC, evened out (at most 1.25 NC, 960 KiB of packed
// B, plus rounding up to nr), so that no short last block repacks the whole of A for a sliver of columns (e.g. 800
// columns ran as 768 + 32). Every C element still sums its K blocks in the same order.
int64_t column_block(int64_t n, int nr) {
  const int64_t blocks = std::max<int64_t>(1, (4 * n + 5 * NC - 1) / (5 * NC));
  return ((n + blocks - 1) / blocks + nr - 1) / nr * nr;
}

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};

// A grow-only, 64-byte aligned scratch buffer owned by one thread.
class Scratch {
 public:
  float* get(int64_t floats) {
    if (floats > capacity_) {
      const size_t bytes = ((static_cast<size_t>(floats) * sizeof(float) + 63) / 64) * 64;
      data_.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
      if (!data_) throw std::bad_alloc();
      capacity_ = floats;
    }
    return data_.get();
  }

 private:
  std::unique_ptr<float, FreeDeleter> data_;
  int64_t capacity_ = 0;
};

thread_local Scratch tl_packed_a, tl_packed_b;

// Ap[panel*kc*mr + k*mr + i] = alpha * op(A)[i0 + panel*mr + i][k0 + k], zero past row m_end. A row-major A
// goes through the ISA's transposing packer; a transposed one is already k-major, element by element.
void pack_a(const PackTransposedKernel pack_transposed, Trans trans, const float* A, int64_t lda, int64_t i0,
            int64_t mc, int64_t k0, int64_t kc, int mr, float alpha, float* Ap) {
  int64_t row_offsets[kMaxMr];
  for (int i = 0; i < mr; ++i) row_offsets[i] = i * lda;
  for (int64_t ir = 0; ir < mc; ir += mr) {
    const int64_t rows = std::min<int64_t>(mr, mc - ir);
    float* panel = Ap + (ir / mr) * kc * mr;
    if (trans == Trans::no) {
      pack_transposed(A + (i0 + ir) * lda + k0, row_offsets, rows, mr, kc, alpha, panel);
      continue;
    }
    for (int64_t k = 0; k < kc; ++k) {
      float* dst = panel + k * mr;
      const float* src = A + (k0 + k) * lda + i0 + ir;
      for (int64_t i = 0; i < rows; ++i) dst[i] = alpha * src[i];
      for (int64_t i = rows; i < mr; ++i) dst[i] = 0.0f;
    }
  }
}

// Rows [r0, r1) of alpha * op(A) (K deep) packed for every K block of gemm_k_block(K), as PackedA lays them out: block
// pc at Ap + pc * block_rows (block_rows: at least r1 - r0 rounded up to mr), the rows from r0 on.
void pack_a_rows(Trans trans, const float* A, int64_t lda, int64_t r0, int64_t r1, int64_t K, int mr, float alpha,
                 int64_t block_rows, float* Ap) {
  const PackTransposedKernel pack_transposed = kernels().gemm.pack_transposed;
  const int64_t kb = gemm_k_block(K);
  for (int64_t pc = 0; pc < K; pc += kb)
    pack_a(pack_transposed, trans, A, lda, r0, r1 - r0, pc, std::min(kb, K - pc), mr, alpha, Ap + pc * block_rows);
}

void apply_epilogue(const Epilogue& e, float* C, int64_t ldc, int64_t i0, int64_t j0, int64_t rows, int64_t cols) {
  if (e.bias_axis == Epilogue::Bias::none && !e.relu) return;
  for (int64_t i = 0; i < rows; ++i) {
    float* c = C + i * ldc;
    switch (e.bias_axis) {  // one loop per case, so that each vectorises
      case Epilogue::Bias::per_row: {
        const float b = e.bias[i0 + i];
        if (e.relu)
          for (int64_t j = 0; j < cols; ++j) c[j] = relu_keep_nan(c[j] + b);
        else
          for (int64_t j = 0; j < cols; ++j) c[j] += b;
        break;
      }
      case Epilogue::Bias::per_col: {
        const float* b = e.bias + j0;
        if (e.relu)
          for (int64_t j = 0; j < cols; ++j) c[j] = relu_keep_nan(c[j] + b[j]);
        else
          for (int64_t j = 0; j < cols; ++j) c[j] += b[j];
        break;
      }
      case Epilogue::Bias::none:
        for (int64_t j = 0; j < cols; ++j) c[j] = relu_keep_nan(c[j]);
        break;
    }
  }
}

// The product sgemm was given: C = alpha * op(A) * B + beta * C, then the epilogue.
struct Product {
  Trans trans_a;
  int64_t M, N, K, kb;  // kb: the K block, gemm_k_block(K)
  float alpha;
  const float* A;
  int64_t lda;
  const BPanelSource& B;
  float beta;
  float* C;
  int64_t ldc;
  const Epilogue& epi;
};

// A part of a product: rows [m0, m1) and columns [n0, n1) of C.
struct Part {
  int64_t m0, m1, n0, n1;
};

// Computes one part. A is packed here (block by block, or all of the part's rows first), or read from given_a, all of
// op(A) packed in advance (then m0 is a multiple of mr): K blocks of padded-M x kc, laid out as pack_a lays out each
// block (PackedA). B is packed here.
void sgemm_part(const GemmTile& tile, const Product& p, const Part& part, const float* given_a = nullptr) {
  const int mr = tile.mr, nr = tile.nr;
  const int64_t m0 = part.m0, m1 = part.m1, n0 = part.n0, n1 = part.n1, K = p.K, ldc = p.ldc;
  const Trans trans_a = p.trans_a;
  const float alpha = p.alpha, beta = p.beta, *A = p.A;
  const int64_t lda = p.lda;
  const BPanelSource& B = p.B;
  float* C = p.C;
  const Epilogue& epi = p.epi;
  const PackTransposedKernel pack_transposed = kernels().gemm.pack_transposed;
  if (beta != 0.0f && beta != 1.0f) {
    for (int64_t i = m0; i < m1; ++i)
      for (int64_t j = n0; j < n1; ++j) C[i * ldc + j] *= beta;
  }
  const int64_t nc_max = column_block(n1 - n0, nr);
  // Packing B costs a read and a write per element; it pays where each packed panel is reused from cache by many row
  // panels. A B held in memory is read in place, its last, partial panel too (the edge microkernel reads only its
  // columns), where one row panel uses it; where two do and its rows are at most kInPlaceTwoPanelRowFloats apart; or
  // where its rows are short (at most kInPlaceRowFloats apart) and all of it fits in L1 (or, for the rows of one A
  // block, which take each B panel in turn from L1, in 64 KiB). Measured, 2 threads: 6 x 784 x 25 and 16 x 1000 x 300
  // 1.4x faster, 64 x 64 x 64 1.1x; 64 x 1024 x 576, 8 row panels, 1.2x slower in place. One A block, B of 32-64 KiB
  // (both builds in one process, calls alternated, median of per-pair time ratios, 1 / 2 threads): 128-square 1.06 /
  // 1.11x, 96 x 128 x 128 1.10 / 1.16x, 64 x 128 x 128 1.12 / 1.14x, 144 x 96 x 96 1.09 / 1.08x, 128 x 64 x 256 1.07 /
  // 1.11x; several A blocks stay packed (384 x 128 x 96 0.91x in place, 2048 x 49 x 256 0.95x). Rows far apart (both
  // builds in one process, calls alternated, median of per-pair time ratios): one row panel 6 x 12544 x 147 1.11x, 12 x
  // 3136 x 576 1.07x, 12 x 12544 x 147 1.06x faster in place; two, rows 6400 apart, 16 x 6400 x 150 1.08x, 24 x 6400 x
  // 150 1.02x; two, rows 12544 apart, 16 x 12544 x 147 1.00x, 24 x 12544 x 147 0.95x (but 16 x 50176 x 27, 27 rows
  // 50176 apart, 1.28x: left packed).
  int64_t ldb = 0;
  const float* in_memory = B.in_memory(&ldb);
  const int64_t part_rows = m1 - m0;
  const bool in_place = in_memory && (part_rows <= mr || (part_rows <= 2 * mr && ldb <= kInPlaceTwoPanelRowFloats) ||
                                      (ldb <= kInPlaceRowFloats &&
                                       K * (n1 - n0) <= (part_rows <= MC ? kInPlaceOneBlockFloats : kInPlaceFloats)));
  const float* Bm = in_place ? in_memory : nullptr;
  // A part of several column blocks packs its rows of A once, into a block of its own (up to kMaxSharedFloats), and
  // reads them as an A packed in advance, instead of packing each A block again for every column block (the same
  // packing, the same sums). A's rows come from memory in short runs (kc floats a row), so the packing waits on its
  // loads: 3.9% of a 2048-square's samples on 1 thread with AVX2, 1.4% packed once. Both builds in one process, calls
  // alternated, median of per-pair time ratios, AMD Zen 4, forced AVX2, 1 thread: 2048-square 1.03x, 1024 x 3000 x
  // 1024 1.03x, 256 x 6272 x 2304 1.02x, 64 x 50176 x 576 1.01x; 2 threads (the squares' rows split) 2048 1.015x,
  // 1536 1.02x; AVX-512 2 threads 2048 1.02x, 1536 1.01x. The parts of a team's threads together take at most
  // kMaxSharedFloats (each thread of an equal split of the columns would pack all of A).
  const int64_t part_rows_padded = (m1 - m0 + mr - 1) / mr * mr;
  const bool pack_part =
      !given_a && n1 - n0 > nc_max && part_rows_padded * K * omp_get_num_threads() <= kMaxSharedFloats;
  std::optional<CachedBlock<float>> part_a;
  if (pack_part) {
    part_a.emplace(part_rows_padded * K);
    pack_a_rows(trans_a, A, lda, m0, m1, K, mr, alpha, part_rows_padded, part_a->get());
  }
  // all of op(A) packed in advance, or null: K blocks of a_rows rows each, the first of them row a_first of op(A)
  const float* const packed_a = pack_part ? part_a->get() : given_a;
  const int64_t a_first = pack_part ? m0 : 0, a_rows = pack_part ? part_rows_padded : (p.M + mr - 1) / mr * mr;
  float* Ap = packed_a ? nullptr : tl_packed_a.get(p.kb * MC);
  // Few rows (one A block) and B micro-panels of at most 32 KiB: each B panel is packed (or read in place) just before
  // the row panels use it, from L1, instead of the whole block first (jr -> ir): its loads then overlap the products.
  // Measured on AVX-512 (panels 32-64 floats wide), 1 thread, alternating, median GFLOP/s: 16 x 6400 x 150 63 -> 78,
  // 64 x 12544 x 147 108 -> 122, 96 x 3025 x 363 110 -> 123; 2 threads unchanged within noise. Wider panels (8x48,
  // 6x64 tiles at kc 256) fill L1: 64 x 50176 x 576 would drop 184 -> 138 on 2 threads. Not where a B in memory is
  // packed into panels narrower than kPanelOuterMinNr (AVX2's 16 and 24): each panel row is then a cache line or
  // less, a matrix row apart, which the prefetchers did not follow (measured on a Zen 3 core, 2 threads,
  // alternating, best of 3, GFLOP/s, panel by panel -> whole block: 64 x 12544 x 147 42 -> 95, 96 x 3025 x 363 51
  // -> 105, 64 x 3136 x 576 38 -> 98; 1 thread 16 x 6400 x 150 8 -> 38; Winograd's products, res2a 3x3 n=8 forward
  // 28 -> 18 ms). Where the copying microkernel exists, the first row panel packs each whole panel of a B in memory
  // as it computes, so that the panel's reads from memory overlap its products (both builds in one process, calls
  // alternated, median of per-pair time ratios, 1 / 2 threads: 64 x 3136 x 147 1.23 / 1.13x, 128 x 12544 x 147
  // 1.25 / 1.06x, 48 x 12544 x 147 1.06 / 1.14x, 64 x 1024 x 147 1.12 / 1.12x, 64 x 50176 x 27 1.06 / 1.07x, 64 x
  // 12544 x 147 0.99-1.01 / 1.05-1.07x).
  const int64_t kb = p.kb;
  const bool panel_outer = m1 - m0 <= MC && kb * nr <= kPanelOuterFloats &&
                           (in_place || !in_memory || nr >= kPanelOuterMinNr);
  float* Bp = Bm ? nullptr : tl_packed_b.get(p.kb * nc_max);
  // Otherwise, a B in memory packed as a whole block is packed by the first row panel of a few-row product while
  // it computes (the tile's copying microkernel reads B's rows in place and stores them as the packed panel), so that
  // the reads from memory overlap the products instead of running ahead of them (22% of a 64 x 3136 x 576 product
  // on 1 thread was packing). Both builds in one process, calls alternated, median of per-pair time ratios: 1 thread
  // 64 x 3136 x 576 1.08x, 64 x 1024 x 576 1.06x, 96 x 3025 x 363 1.01x; 2 threads 1.10x, 1.06x, 1.04x. Not where
  // B's rows are more than kCopyRowFloats apart (64 x 50176 x 576, 2 threads: 0.79x, each row a page apart), nor
  // for several A blocks (1 thread: 256 x 6272 x 2304 0.92x, 512 x 1568 x 4608 0.955x, 256 x 3136 x 64 1.00x);
  // prefetching the next panel's rows as well: 0.98x.
  const bool copy_b = in_memory && !in_place && !panel_outer && tile.copying && m1 - m0 <= MC && ldb <= kCopyRowFloats;
  // A plain A (alpha 1) is read in place, its full row panels three rows to a pointer, by products of at most two
  // column panels: packing reads and writes each A element to save a strided read in each of one or two panels
  // (15% of ResNet-50 res5a's batch-1 forward, 512 filters x 49 pixels x 4608, was packing its weights). Both
  // builds in one process, calls alternated, median of per-pair time ratios, 2 / 1 threads: 512 x 49 x 4608 1.09 /
  // 1.07x, that forward 1.07 / 1.09x, 256 x 49 x 2304 1.11 / 1.09x, 200 x 64 x 1000 1.11 / 1.14x, 16 x 96 x 300
  // 1.10x, 64-square 1.15 / 1.11x; 40 x 49 x 576, 96 x 60 x 363, 66 x 128 x 256 1.00x. With more column panels the
  // strided reads cost more than the packing: 512 x 98 x 4608 0.92 / 0.98x, 256 x 196 x 2304 0.91 / 0.98x. Deep
  // products (K >= kDeepInPlaceK) of at most kDeepInPlaceColumns columns read A in place too, which adds only
  // AVX2's narrow panels (16 and 24 columns; AVX-512's two panels are 64 or more): forced AVX2 on AMD Zen 4, both
  // builds in one process, calls alternated, median of per-pair time ratios, 2 / 1 threads: 512 x 49 x 4608 1.14-1.25
  // / 1.15x, res5a 3x3 n=1 forward 1.13-1.21 / 1.15x, 4608 x 49 x 512 1.16x, 512 x 64 x 512 1.11x, 200 x 64 x 1000
  // 1.09-1.10x, 64 x 64 x 576 1.05-1.10 / 1.09x, 1024 x 64 x 1024 1.08x; but shallow ones lost (144 x 64 x 256
  // 0.89x, 96-square 0.94x), and 64 x 128 x 576 0.81-1.00x at 128 columns.
  const bool a_in_place = tile.rows && !packed_a && plain_a(trans_a, alpha) && !copy_b &&
                          (n1 - n0 <= kInPlaceAPanels * nr || (K >= kDeepInPlaceK && p.N <= kDeepInPlaceColumns));
  for (int64_t jc = n0; jc < n1; jc += nc_max) {
    // B's panels before `full` are read in place (a B read in place: all of them, its last one by the edge or wide
    // microkernel; copy_b: its whole panels, copied by the first row panel as it computes), the rest packed
    const int64_t nc = std::min(nc_max, n1 - jc), full = Bm ? nc : copy_b ? nc / nr * nr : 0;
    // A last panel of at most narrow_cols columns is computed with the full one before it, in the same pass over k
    // (wide microkernels), instead of an edge tile computing 16 columns a row for it (A in place) or a narrow edge
    // tile, one FMA chain a column waiting on its latency (A packed). Both builds in one process, calls alternated,
    // median of per-pair time ratios, AMD Zen 4, 2 / 1 threads: 512 x 49 x 4608 (8x48 instead of 6x64) 1.19-1.23 /
    // 1.22x, ResNet-50 res5a 3x3 n=1 forward 1.16-1.18 / 1.22x, its backward 1.04 / 1.06x, 4608 x 49 x 512 1.20x,
    // 256 x 49 x 2304 1.21x, 64 x 49 x 576 1.26x, 200 x 65 x 300 1.10x; 96 x 3025 x 363, 256 x 195 x 2304, AlexNet
    // conv1 n=1 forward 0.99-1.00x.
    const int64_t narrow = nc > nr && nc % nr <= tile.narrow_cols ? nc % nr : 0;
    const int64_t wide_jr = narrow ? nc - narrow - nr : -1;
    for (int64_t pc = 0; pc < K; pc += kb) {
      const int64_t kc = std::min(kb, K - pc);
      const bool accumulate = pc > 0 || beta != 0.0f, last = pc + kc == K;
      if (nc > full && !panel_outer)
        B.pack(pc, kc, jc + full, nc - full, nr, Bp + (copy_b ? full / nr * kc * nr : 0));  // copy_b: its last panel
      for (int64_t ic = m0; ic < m1; ic += MC) {
        const int64_t mc = std::min(MC, m1 - ic);
        const float* a_block = packed_a ? packed_a + pc * a_rows + (ic - a_first) * kc : Ap;
        const int64_t full_rows = a_in_place ? mc / mr * mr : 0;  // row panels read in place
        if (!packed_a && mc > full_rows)
          pack_a(pack_transposed, trans_a, A, lda, ic + full_rows, mc - full_rows, pc, kc, mr, alpha,
                 Ap + full_rows / mr * kc * mr);
        // An A packed in advance as a whole (packed_a: a frozen layer's filters, or all of A before a product's column
        // chunks) comes from L3 or memory, not from an L2 block packed here: the prefetching microkernels read it
        // (GemmTile::prepacked, edge_prepacked, wide_prepacked). Frozen ResNet-18, each build in its own process,
        // alternated, median ms, Intel Xeon (family 6 model 167): batch 1 on 2 threads 12.82-12.89 -> 10.79-11.00, on
        // 1 thread 23.0-24.2 -> 19.4-20.2, batch 8 on 2 threads 77.4-78.7 -> 70.7-70.8; forced AVX2, batch 1
        // 19.1-19.3 -> 17.7-18.0. Its last stage alone (33 MB of filters) with 512 MB read between calls 4.68 -> 3.85
        // (3.31 without). Both builds in one process, calls alternated, median of per-pair time ratios, 2 threads: the
        // products taken in column chunks (1024- and 2048-squares, 256 x 6272 x 2304, 512 x 1568 x 4608, 96 x 3025 x
        // 363) 0.99-1.01x, frozen ResNet-20 n=128 1.00x. The blocks packed here prefetched as well: 16 x 6400 x 150 on
        // 1 thread 0.97x. 1024 or 2048 floats ahead, or into L2, within noise of 512. The edge tiles' (the Winograd
        // products' 42 and 16 columns) after the others': batch 1 on 2 threads 10.5-10.7 -> 10.2-10.4, on 1 thread
        // 19.1-19.4 -> 18.3-18.9, batch 8 0.99x.
        // bcopy, where not null, takes a copy of the B panel read (a full tile: copy_b's products have more than
        // two row panels and panel by panel only whole ones are copied)
        const auto run_one = [&](int64_t ir, int64_t jr, const float* bpanel, int64_t bstride, float* bcopy,
                                 const float* xpanel, int64_t xstride) {
          const int64_t rows = std::min<int64_t>(mr, mc - ir), cols = std::min<int64_t>(nr, nc - jr);
          const float* apanel = a_block + ir * kc;  // ir a multiple of mr: its micro-panel (no division a tile)
          const float* arows = ir < full_rows ? A + (ic + ir) * lda + pc : nullptr;
          float* c = C + (ic + ir) * ldc + jc + jr;
          const bool fused = last && (epi.bias_axis != Epilogue::Bias::none || epi.relu);
          const TileEpilogue tile_epi{epi.bias_axis == Epilogue::Bias::per_row ? epi.bias + ic + ir : nullptr,
                                      epi.bias_axis == Epilogue::Bias::per_col ? epi.bias + jc + jr : nullptr,
                                      epi.relu};
          const TileEpilogue* e = fused ? &tile_epi : nullptr;
          if (xpanel) {
            if (arows)
              tile.wide_rows(kc, arows, lda, bpanel, bstride, xpanel, xstride, c, ldc, accumulate, e, int(narrow));
            else
              (packed_a ? tile.wide_prepacked : tile.wide)(kc, apanel, 0, bpanel, bstride, xpanel, xstride, c, ldc,
                                                           accumulate, e, int(narrow));
          } else if (rows == mr && cols == nr) {
            if (arows)
              tile.rows(kc, arows, lda, bpanel, bstride, c, ldc, accumulate, e);
            else if (bcopy)
              tile.copying(kc, apanel, bpanel, bstride, bcopy, c, ldc, accumulate, e);
            else
              (packed_a ? tile.prepacked : tile.micro)(kc, apanel, bpanel, bstride, c, ldc, accumulate, e);
          } else if (arows) {
            tile.rows_edge(kc, arows, lda, bpanel, bstride, c, ldc, accumulate, e, int(rows), int(cols));
          } else {
            (packed_a ? tile.edge_prepacked : tile.edge)(kc, apanel, 0, bpanel, bstride, c, ldc, accumulate, e,
                                                         int(rows), int(cols));
          }
        };
        // panel jr, and where it is wide_jr the narrow one after it (B at xpanel): by the wide microkernel for a
        // full row panel not copying B, else one after the other
        const auto run = [&](int64_t ir, int64_t jr, const float* bpanel, int64_t bstride, float* bcopy,
                             const float* xpanel = nullptr, int64_t xstride = 0) {
          const bool wide = xpanel && mc - ir >= mr && !bcopy;
          run_one(ir, jr, bpanel, bstride, bcopy, wide ? xpanel : nullptr, xstride);
          if (xpanel && !wide) run_one(ir, jr + nr, xpanel, xstride, nullptr, nullptr, 0);
        };
        if (panel_outer) {
          for (int64_t jr = 0; jr < nc; jr += nr) {
            if (narrow && jr == nc - narrow) break;  // taken with wide_jr
            const bool read_in_place = jr < full, with_narrow = jr == wide_jr;
            // a whole panel of a B in memory: the first row panel packs it as it computes (copying microkernel)
            const bool copy_panel = !read_in_place && in_memory && tile.copying && mc >= mr && jr + nr <= nc &&
                                    !a_in_place;
            if (copy_panel) {
              run(0, jr, in_memory + pc * ldb + jc + jr, ldb, Bp);
              if (with_narrow) B.pack(pc, kc, jc + jr + nr, narrow, nr, Bp + kc * nr);
            } else if (!read_in_place) {
              B.pack(pc, kc, jc + jr, std::min<int64_t>(with_narrow ? nr + narrow : nr, nc - jr), nr, Bp);
            }
            const float* xpanel = !with_narrow ? nullptr : read_in_place ? Bm + pc * ldb + jc + jr + nr : Bp + kc * nr;
            for (int64_t ir = copy_panel ? mr : 0; ir < mc; ir += mr)
              run(ir, jr, read_in_place ? Bm + pc * ldb + jc + jr : Bp, read_in_place ? ldb : nr, nullptr, xpanel,
                  read_in_place ? ldb : nr);
            if (copy_panel && with_narrow) run_one(0, jr + nr, Bp + kc * nr, nr, nullptr, nullptr, 0);
          }
          continue;
        }
        for (int64_t ir = 0; ir < mc; ir += mr) {
          // panel jr's B: read in place (copy_b: copied as it is read) or packed
          const auto in_place = [&](int64_t jr) { return jr < full && (Bm || (ic == m0 && ir == 0)); };
          const auto b_panel = [&](int64_t jr) -> const float* {
            return in_place(jr) ? in_memory + pc * ldb + jc + jr : Bp + jr * kc;  // jr a multiple of nr
          };
          const auto b_stride = [&](int64_t jr) { return in_place(jr) ? ldb : int64_t(nr); };
          for (int64_t jr = 0; jr < nc; jr += nr) {
            if (narrow && jr == nc - narrow) break;  // taken with wide_jr
            float* bcopy = copy_b && in_place(jr) ? Bp + jr * kc : nullptr;
            run(ir, jr, b_panel(jr), b_stride(jr), bcopy, jr == wide_jr ? b_panel(jr + nr) : nullptr,
                b_stride(jr + nr));
          }
        }
      }
    }
  }
}

}  // namespace

void pack_transposed_rows(const float* base, const int64_t* offsets, int64_t count, int64_t width, int64_t len,
                          float alpha, float* dst) {
  for (int64_t k = 0; k < len; ++k, dst += width) {
    for (int64_t i = 0; i < count; ++i) dst[i] = alpha * base[offsets[i] + k];
    for (int64_t i = count; i < width; ++i) dst[i] = 0.0f;
  }
}

// Row by row: each row of the block is read once, front to back.
void pack_rows(const float* B, int64_t ldb, int64_t kc, int64_t nc, int nr, float* Bp) {
  for (int64_t k = 0; k < kc; ++k) {
    const float* src = B + k * ldb;
    for (int64_t jp = 0; jp < nc; jp += nr) {
      const int64_t cols = std::min<int64_t>(nr, nc - jp);
      float* dst = Bp + (jp / nr) * kc * nr + k * nr;
      std::copy(src + jp, src + jp + cols, dst);
      std::fill(dst + cols, dst + nr, 0.0f);
    }
  }
}

void pack_gathered_rows(const float* base, const int64_t* offsets, int64_t count, int64_t len, int64_t width,
                        float* dst) {
  for (int64_t k = 0; k < count; ++k) std::copy(base + offsets[k], base + offsets[k] + len, dst + k * width);
}

void split_row2(const float* src, int64_t W, int64_t pad, int64_t Wq, float* dst) {
  for (int64_t phase = 0; phase < 2; ++phase)
    for (int64_t i = 0; i < Wq; ++i) {
      const int64_t column = 2 * i + phase - pad;
      dst[phase * Wq + i] = column >= 0 && column < W ? src[column] : 0.0f;
    }
}

int64_t padded_area(const GemmTile& t, int64_t M, int64_t N) {
  return (M + t.mr - 1) / t.mr * t.mr * ((N + t.nr - 1) / t.nr * t.nr);
}

namespace {
// padded_area, with a last panel that a wide microkernel adds to the one before at its cost (narrow_columns_cost)
int64_t computed_area(const GemmTile& t, int64_t M, int64_t N) {
  const int64_t narrow = N % t.nr;
  if (N < t.nr || narrow == 0 || narrow > t.narrow_cols) return padded_area(t, M, N);
  return (M + t.mr - 1) / t.mr * t.mr * (N - narrow + narrow_columns_cost(t, narrow));
}
}  // namespace

// Tiles within 1/16 of each other's area, for an A the engine may read in place (a_in_place: plain_a) and tiles that
// can (a rows kernel), where the one chosen so far covers N in at most kInPlaceAPanels column panels (A then read in
// place, each panel reading all of it again from memory) and M has more rows than one packed A block (MC; within one, a
// B in memory goes to the copying kernel, which takes A packed, unless its panels are packed one by one: 12x32's
// 32-wide ones are, 6x64's are not, so 6x64 would lose the in-place A there). Both builds in one process, calls
// alternated, median of per-pair time ratios, AMD Zen 4, 6x64 (one panel) against 12x32 (two) for 49-64 columns, 2 / 1
// threads: 512 x 49 x 4608 1.07 / 1.05x (ResNet-50 res5a 3x3 n=1 forward 1.08 / 1.07x), 512 x 49 x 2048 1.45 / 1.20x,
// 4608 x 49 x 512 1.07x, 2048 x 49 x 512 1.06x, 384 x 49 x 2304 1.06x, 320 x 49 x 2304 1.07x, 192 x 49 x 2304 1.04x (1
// thread); but with the rows of one A block 0.80-0.95x (256 x 49 x 2304 and 256 x 56 x 1152 on 2 threads, 128 each; 128
// x 49 x 2304 on 1 thread 0.84x: 6x64 copying B, with A packed), hence the bound; 1024-squares (8x48's 22 panels
// against 6x64's 16) 0.98x, and a transposed A (packed: res5 1x1 n=1 input gradient, 2048 x 49 x 512) 0.94x. (49
// columns have since gone to 8x48, its last column added by the wide microkernels: see sgemm_part.)
const GemmTile& choose_tile(const GemmKernels& kernels, int64_t M, int64_t N, bool a_in_place) {
  const auto rows = [M](const GemmTile& t) { return (M + t.mr - 1) / t.mr * t.mr; };
  const auto panels = [N](const GemmTile& t) { return (N + t.nr - 1) / t.nr; };
  const GemmTile* best = &kernels.tiles[0];
  for (int i = 1; i < kernels.count; ++i) {
    const GemmTile& t = kernels.tiles[i];
    const int64_t area = computed_area(t, M, N), best_area = computed_area(*best, M, N);
    const bool close = !clearly_smaller(area, best_area) && !clearly_smaller(best_area, area);
    const bool fewer_panels = close && a_in_place && M > MC && t.rows && best->rows &&
                              panels(*best) <= kInPlaceAPanels && panels(t) < panels(*best);
    if (clearly_smaller(area, best_area) || fewer_panels || (area == best_area && rows(t) < rows(*best))) best = &t;
  }
  return *best;
}

void MatrixB::pack(int64_t k0, int64_t kc, int64_t n0, int64_t nc, int nr, float* Bp) const {
  if (trans_ == Trans::no) {
    kernels().gemm.pack_rows(B_ + k0 * ldb_ + n0, ldb_, kc, nc, nr, Bp);
    return;
  }
  // transposed: a panel's columns are rows of the stored matrix, turned by the ISA's transposing packer
  const PackTransposedKernel pack_transposed = kernels().gemm.pack_transposed;
  int64_t row_offsets[kMaxNr];
  for (int j = 0; j < nr; ++j) row_offsets[j] = j * ldb_;
  for (int64_t jp = 0; jp < nc; jp += nr)
    pack_transposed(B_ + (n0 + jp) * ldb_ + k0, row_offsets, std::min<int64_t>(nr, nc - jp), nr, kc, 1.0f,
                    Bp + (jp / nr) * kc * nr);
}

namespace {

// C = beta * C, then the epilogue: the product of depth 0. False where there is a product to compute.
bool empty_product(int64_t M, int64_t N, int64_t K, float beta, float* C, int64_t ldc, const Epilogue& epi) {
  if (M == 0 || N == 0) return true;
  if (K > 0) return false;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
  apply_epilogue(epi, C, ldc, 0, 0, M, N);
  return true;
}

// Computes p with the tile on the threads, A packed here or, where prepacked is not null, in advance (PackedA's
// layout).
void run_product(const GemmTile& tile, const Product& p, const float* prepacked) {
  const int64_t M = p.M, N = p.N, K = p.K;
  const Trans trans_a = p.trans_a;
  const float alpha = p.alpha, *A = p.A;
  const int64_t lda = p.lda;
  const int nt = threads_for(M * N * K);
  if (nt == 1) {
    sgemm_part(tile, p, {0, M, 0, N}, prepacked);
    return;
  }
  const int64_t mr = tile.mr, nr = tile.nr, padded_m = (M + mr - 1) / mr * mr;
  const int64_t kb = p.kb, k_blocks = (K + kb - 1) / kb, m_blocks = (M + MC - 1) / MC;
  const int64_t share = kChunksPerThread * nt;
  const int64_t chunk = std::max((kMinChunkColumns + nr - 1) / nr, (N + share * nr - 1) / (share * nr)) * nr;
  const int64_t chunks = (N + chunk - 1) / chunk, panels = (N + nr - 1) / nr;
  const bool small_a = N > M && panels >= kSmallChunkedPanels * nt && padded_m * K <= kSmallChunkedFloats;
  const bool can_chunk = (chunks >= share || small_a) && (prepacked || padded_m * K <= kMaxSharedFloats);
  // Split N where the threads can take column chunks (all of A packed once), or where N is wide and more than M;
  // else M: with equal shares of columns each thread packs all of A, and a few panels split unevenly (392 columns:
  // 7 and 6 panels of 32). Measured AVX-512, 2 threads, alternating, best of ~40, GFLOP/s, columns -> rows:
  // 2048 x 392 x 512 261 -> 303, 4608 x 392 x 512 252 -> 303, 512 x 392 x 4608 230 -> 267, 2304 x 300 x 256
  // 232 -> 297 (the folded products of ResNet-50's last stages; n=8 512 -> 2048 1x1 forward 4.8 -> 4.3 ms median).
  // Square products too (each thread packs half of A, through the transposing packer, and all of B, row by row,
  // instead of all of A and half of B): both builds in one process, calls alternated, median of per-pair time
  // ratios, columns -> rows: 512-square 1.07x and 1.02x, 768 1.04x, 384 1.01x, 256 1.00x, 1024 0.99-1.00x.
  const bool split_n = (N >= nt * nr * 4 && (can_chunk || N > M)) || M < nt * mr;
  // Wide products (split N) are taken in chunks by the threads as they finish: the cores of these machines run at
  // different, varying speeds (one thread pinned per core: 90-150 GFLOP/s, minute to minute), and equal shares wait for
  // the slower one (~8% of a 64 x 3136 x 576 product spent at the closing barrier). Each thread takes the chunks of its
  // own equal share first, front to back, then helps the others from the back of theirs (Shares): with cores equally
  // fast, a thread computes the same columns call after call, so that a layer's outputs stay in the cache of the core
  // that writes them. (Against chunks taken in turn from one counter: both builds in one process, calls alternated,
  // median of per-pair time ratios, AMD Zen 4, 2 threads: AlexNet conv1 n=1 forward, 96 x 3025 x 363, 1.10-1.21x in
  // minutes when it ran slowly (1.6 ms against 1.3), 1.00-1.03x in others; ResNet-50's res2a 1x1 n=1, 256 x 3136 x 64,
  // forward 1.16-1.60x, backward 1.08x; res5a 3x3 n=1 backward 1.08-1.43x; the products 256 x 3136 x 64 1.17x (AVX2
  // 1.47x), 64 x 3136 x 576 1.03-1.18x, 256 x 6272 x 2304 1.07x; 1024- and 2048-squares, 64 x 50176 x 576 and the other
  // layers 0.97-1.01x.) Chunks of whole panels, at first kMinChunkColumns wide or 1 / kChunksPerThread of a thread's
  // share if wider, where there are at least kChunksPerThread of them per thread; all of A is packed first (by the
  // threads together, or by each: own_a below), so that a chunk does not pack it again (repacked per chunk, chunks of
  // 128 columns made a 1024-square product 30% slower). Each chunk streams all of packed A again: chunks of at least
  // 512 columns rather than 256 (products 2048 to 4095 wide then run in equal shares), both builds in one process,
  // calls alternated, median of per-pair time ratios: 2048-square 1.06x and 1.07x, 1024 x 3000 x 1024 1.03x, 64 x 3136
  // x 576 1.04x and 1.08x, 256 x 3136 x 64 1.01x, 96 x 3025 x 363 0.99x; at least 768: no further change (0.99-1.01x).
  // Measured 2 threads, alternating, median GFLOP/s, equal shares -> chunks: 256 x 6272 x 2304 218 -> 268, 96 x 24200 x
  // 363 189 -> 251, 512 x 1568 x 4608 232 -> 285, 64 x 50176 x 576 171 -> 188; on a quiet machine (cores equally fast)
  // 64 x 3136 x 576 and 256 x 3136 x 64 unchanged. Chunks shrink towards the end (a thread takes half of a share's
  // panels left, at least two), so that the threads finish together: both builds in one process, calls alternated,
  // median of per-pair time ratios, 2 threads: 64 x 50176 x 576 1.06x, 256 x 6272 x 2304 1.01x and 1.03x. Where packed
  // A is small (at most kSmallChunkedFloats), narrower products are chunked too (at least kSmallChunkedPanels panels a
  // thread): 96 x 3025 x 363 1.04x and 1.06x, 256 x 784 x 2304 1.05x and 1.07x, 64 x 3136 x 576 1.00-1.14x; not for a
  // big A (512 x 1568 x 4608 0.95x and 0.97x, each chunk streaming 9 MiB of it from L3) nor for fewer panels (64 x 1024
  // x 576, 16 panels, 0.97-0.99x), nor where N is no wider than M (B no bigger than A: AVX2's 16-column panels took
  // squares into chunks, which the rows' split beats, forced AVX2, AMD Zen 4, 2 threads: 1024-square 1.04x, 768 1.03x,
  // 512 1.01x, 384 0.99x). Narrow products (split M) keep equal shares of rows, each thread packing all of B:
  // packing it once for all threads, then each K block's row chunks on whichever thread was free (a barrier per K
  // block), was slower once im2col panels were packed by vectors (side by side, median ms: res4a n=1 forward 1.38 ->
  // 1.11 without it, res5a n=1 1.80 -> 1.56, res4a n=1 input gradient 1.88 -> 1.53).
  const bool chunked = split_n && can_chunk;
  // A packed A of at most kOwnPackedAFloats is packed by each thread, all of it, into memory of its own (the thread's
  // CachedBlock: the same core's call after call): packed by the threads together, each half crossed between the cores
  // every call, the stores waiting for the other core's copies of the lines. Both builds in one process, calls
  // alternated, median of per-pair time ratios, AMD Zen 4, 2 threads, up to 1 MiB: AlexNet conv1 n=1 forward (96 x
  // 3025 x 363) 1.04x, ResNet-50 conv1 n=1 forward 1.03x, res2a 1x1 n=1 forward (256 x 3136 x 64) 1.01-1.04x, res3a
  // 1x1/2 n=1 forward 1.01x, 64 x 3136 x 576 1.01-1.02x; up to 4 MiB, forced AVX2: 256 x 784 x 2304 1.02-1.06x, 384 x
  // 1024 x 1024 1.06-1.07x (AVX-512 0.99-1.00x), and the 512-square (then in chunks) 1.02x in minutes when the cores
  // were near, 1.19x when far; with all A up to 32 MiB so packed: 64 x 50176 x 576 1.00x, 256 x 6272 x 2304 0.99x.
  const bool own_a = chunked && !prepacked && padded_m * K <= kOwnPackedAFloats;
  std::optional<CachedBlock<float>> shared;
  if (chunked && !prepacked && !own_a) shared.emplace(padded_m * K);
  float* packing = shared ? shared->get() : nullptr;  // all of A, packed here by the threads together
  const float* packed = prepacked ? prepacked : packing;
  const PackTransposedKernel pack_transposed = kernels().gemm.pack_transposed;
  std::optional<Shares> shares;
  if (chunked) shares.emplace(panels, nt);
  std::atomic<bool> out_of_memory{false};  // an exception must not leave an OpenMP region
#pragma omp parallel num_threads(nt)
  {
    try {
      tl_packed_a.get(p.kb * MC);  // allocated before any barrier, so that no thread throws between two of them
    } catch (const std::bad_alloc&) {
      out_of_memory = true;
    }
#pragma omp barrier
    try {
      if (out_of_memory) {
      } else if (chunked) {
        const auto pack_block = [&](int64_t block, float* into) {
          const int64_t pc = block / m_blocks * kb, ic = block % m_blocks * MC, kc = std::min(kb, K - pc);
          pack_a(pack_transposed, trans_a, A, lda, ic, std::min(MC, M - ic), pc, kc, tile.mr, alpha,
                 into + pc * padded_m + ic * kc);
        };
        const float* panels_a = packed;
        std::optional<CachedBlock<float>> own;
        if (own_a) {
          own.emplace(padded_m * K);
          pack_a_rows(trans_a, A, lda, 0, M, K, tile.mr, alpha, padded_m, own->get());
          panels_a = own->get();
        } else if (packing) {
#pragma omp for schedule(static)
          for (int64_t block = 0; block < k_blocks * m_blocks; ++block) pack_block(block, packing);
        }
        take_shares(*shares, 2, chunk / nr, [&](int64_t lo, int64_t hi) {
          sgemm_part(tile, p, {0, M, lo * nr, std::min(N, hi * nr)}, panels_a);
        });
      } else {
        const int t = omp_get_thread_num(), team = omp_get_num_threads();
        const int64_t extent = split_n ? N : M, unit = split_n ? nr : mr;
        const int64_t units = (extent + unit - 1) / unit, per = (units + team - 1) / team;
        const int64_t lo = std::min(extent, t * per * unit), hi = std::min(extent, (t + 1) * per * unit);
        if (lo < hi) sgemm_part(tile, p, split_n ? Part{0, M, lo, hi} : Part{lo, hi, 0, N}, prepacked);
      }
    } catch (const std::bad_alloc&) {
      out_of_memory = true;
    }
  }
  if (out_of_memory) throw std::bad_alloc();
}

}  // namespace

namespace {
// The rows sgemm chooses its tile for on nt threads: where the threads will split the rows (run_product: N no wider
// than M, short of the widest products), the rows one thread takes, since the slowest thread's share decides.
// 128-square on 2 threads took 12x32, 11 row panels split 6 / 5, where 6x64 splits 22 as 11 / 11 with the same area
// (both builds in one process, calls alternated, median of per-pair time ratios: 1.17x; 96- to 384-squares
// 1.00-1.01x).
int64_t tile_rows(int64_t M, int64_t N, int nt) { return nt > 1 && N <= M ? (M + nt - 1) / nt : M; }
}  // namespace

void sgemm(Trans trans_a, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const BPanelSource& B, float beta, float* C, int64_t ldc, const Epilogue& epi) {
  if (empty_product(M, N, K, beta, C, ldc, epi)) return;
  const int nt = threads_for(M * N * K);
  run_product(choose_tile(kernels().gemm, tile_rows(M, N, nt), N, plain_a(trans_a, alpha)),
              {trans_a, M, N, K, gemm_k_block(K), alpha, A, lda, B, beta, C, ldc, epi}, nullptr);
}

namespace {
// The rows each of nt threads takes where they share a product's rows out (sgemm_row_share), and the tile those rows
// are whole panels of; 0 rows and no tile where they do not (one thread, or fewer rows than a panel each).
struct RowShare {
  int64_t rows;
  const GemmTile* tile;
};
RowShare row_share(int64_t M, int64_t N, int nt) {
  if (nt == 1) return {0, nullptr};
  const GemmTile& tile = choose_tile(kernels().gemm, (M + nt - 1) / nt, N, true);
  if (M < nt * tile.mr) return {0, nullptr};
  return {((M + tile.mr - 1) / tile.mr + nt - 1) / nt * tile.mr, &tile};
}
}  // namespace

int64_t sgemm_row_share(int64_t M, int64_t N, int64_t K) { return row_share(M, N, threads_for(M * N * K)).rows; }

void sgemm(const PackedA& a, const float* packed, int64_t N, const BPanelSource& B, float beta, float* C, int64_t ldc,
           const Epilogue& epi) {
  if (empty_product(a.M, N, a.K, beta, C, ldc, epi)) return;
  run_product(a.tile, {Trans::no, a.M, N, a.K, gemm_k_block(a.K), 1.0f, nullptr, 0, B, beta, C, ldc, epi}, packed);
}

void sgemm_rows(const PackedA& a, const float* packed, int64_t m0, int64_t m1, int64_t N, const BPanelSource& B,
                float beta, float* C, int64_t ldc, const Epilogue& epi) {
  if (m0 >= m1) return;
  Epilogue rows_epi = epi;  // empty_product's rows start at m0
  if (epi.bias_axis == Epilogue::Bias::per_row) rows_epi.bias = epi.bias + m0;
  if (empty_product(m1 - m0, N, a.K, beta, C + m0 * ldc, ldc, rows_epi)) return;
  sgemm_part(a.tile, {Trans::no, a.M, N, a.K, gemm_k_block(a.K), 1.0f, nullptr, 0, B, beta, C, ldc, epi},
             {m0, m1, 0, N}, packed);
}

void sgemm_pack_a(const PackedA& a, const float* A, int64_t lda, float* packed) {
  pack_a_rows(Trans::no, A, lda, 0, a.M, a.K, a.tile.mr, 1.0f, a.padded_m(), packed);
}

const GemmTile& sgemm_row_tile(int64_t M, int64_t N, int64_t K) {
  const int nt = threads_for(M * N * K);
  const RowShare share = row_share(M, N, nt);
  return share.tile ? *share.tile : choose_tile(kernels().gemm, tile_rows(M, N, nt), N, true);
}

// A few rows of A against B given as rows (trans_b): dot products over contiguous rows, no packing (packing the
// whole of B would cost more than the product, e.g. a fully connected layer at batch 1). Columns go in fixed
// blocks of 64, the epilogue once per row of a block.
void sgemm_few_rows(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
                    int64_t ldb, float beta, float* C, int64_t ldc, const Epilogue& epi) {
  constexpr int64_t kBlock = 64;
  const DotsKernel dots = kernels().gemm.dots;
  parallel_for((N + kBlock - 1) / kBlock, threads_for(M * N * K), [&](int64_t block) {
    const int64_t j0 = block * kBlock, cols = std::min(N - j0, kBlock);
    float d[kBlock];
    for (int64_t i = 0; i < M; ++i) {
      dots(A + i * lda, B + j0 * ldb, ldb, K, cols, d);
      float* c = C + i * ldc + j0;
      for (int64_t j = 0; j < cols; ++j) c[j] = beta == 0.0f ? alpha * d[j] : alpha * d[j] + beta * c[j];
      apply_epilogue(epi, c, ldc, i, j0, 1, cols);
    }
  });
}

namespace {

// At most kAxpysRows rows of A against a row-major B: each thread's columns in blocks of at most kAxpysSums / M
// (their sums in L1), B read a row of a block at a time (AxpysKernel), where the engine would read B in place a
// panel's width of each row at a time, rows a matrix row apart, which the prefetchers do not follow. For one row
// always, for 2 to 4 where B has at least kAxpysFloats elements: both builds in one process, calls alternated,
// median of per-pair time ratios, Intel Xeon (family 6 model 167), 2 threads, M x K @ K x N: 1 x 9216 @ 9216 x 4096
// 2.56x (3.47 ms, MKL's 3.77), 2 x 9216 @ 9216 x 4096 2.53x (3.87 ms, MKL's 9.01), 1 x 4096 @ 4096 x 9216 2.64x, 1 x
// 25088 @ 25088 x 4096 2.46x, 4 x 4096 @ 4096 x 4096 1.41x, 1 x 256 @ 256 x 256 1.39x, 1 x 4096 @ 4096 x 1000 1.09x,
// 3 x 4096 @ 4096 x 1000 1.01x; for smaller B the engine's panels stay in cache (the kernel for every B: 4 x 512 @
// 512 x 1000 0.84-0.89x, 3 x 512 @ 512 x 1000 0.94x). Forced AVX2, the same way (blocks of 1024 columns): 1 x 9216 @
// 9216 x 4096 3.17x, 4 x 4096 @ 4096 x 4096 1.93x, 2 x 1024 @ 1024 x 1024 1.63x. Blocks of at most 1024 columns
// whatever M: one and two rows 0.85-0.87x as fast (rows read in shorter runs); 4096 for every M: 4 rows 0.80x (their
// sums past L1). The engine's bits: its K blocks each summed from zero and added to C (beta * C first), alpha * A
// rounded as its packing rounds it, so that a row's bits do not depend on the product's row count.
constexpr int64_t kAxpysSums = 4096;  // floats of sums a block (16 KiB)
constexpr int64_t kAxpysFloats = int64_t(1) << 20;

void sgemm_few_rows_axpys(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
                          int64_t ldb, float beta, float* C, int64_t ldc, const Epilogue& epi) {
  const AxpysKernel axpys = kernels().gemm.axpys;
  std::vector<float> scaled;
  if (alpha != 1.0f) {
    scaled.resize(M * K);
    for (int64_t i = 0; i < M; ++i)
      for (int64_t k = 0; k < K; ++k) scaled[i * K + k] = alpha * A[i * lda + k];
    A = scaled.data();
    lda = K;
  }
  const int64_t kb = gemm_k_block(K);
  const int nt = threads_for(M * N * K);
  // a block's columns at most: whole vectors, so that a block rounded up to whole vectors stays within its sums
  const int64_t columns = kAxpysSums / M / 16 * 16;
  const int64_t per_thread = (N + nt - 1) / nt, blocks_each = (per_thread + columns - 1) / columns;
  const int64_t width = ((per_thread + blocks_each - 1) / blocks_each + 15) / 16 * 16;  // whole vectors but the last
  parallel_for((N + width - 1) / width, nt, [&](int64_t block) {
    const int64_t j0 = block * width, cols = std::min(N - j0, width);
    alignas(64) float sums[kAxpysSums], part[kAxpysSums];
    for (int64_t i = 0; i < M && beta != 0.0f; ++i) {  // the engine's C before its first K block: beta * C
      const float* c = C + i * ldc + j0;
      for (int64_t j = 0; j < cols; ++j) sums[i * cols + j] = beta == 1.0f ? c[j] : beta * c[j];
    }
    for (int64_t pc = 0; pc < K; pc += kb) {
      const bool first = pc == 0 && beta == 0.0f;
      axpys(M, A + pc, lda, B + pc * ldb + j0, ldb, std::min(kb, K - pc), cols, first ? sums : part);
      if (!first)
        for (int64_t e = 0; e < M * cols; ++e) sums[e] = part[e] + sums[e];
    }
    for (int64_t i = 0; i < M; ++i) {
      float* c = C + i * ldc + j0;
      std::copy(sums + i * cols, sums + (i + 1) * cols, c);
      apply_epilogue(epi, c, ldc, i, j0, 1, cols);
    }
  });
}

}  // namespace

void sgemm(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc, const Epilogue& epi) {
  if (empty_product(M, N, K, beta, C, ldc, epi)) return;  // before the few-row kernels (blocks of 4096 / M columns)
  if (M <= 4 && trans_a == Trans::no && trans_b == Trans::yes) {
    sgemm_few_rows(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, epi);
    return;
  }
  if (M <= kAxpysRows && trans_a == Trans::no && trans_b == Trans::no && (M == 1 || K * N >= kAxpysFloats)) {
    sgemm_few_rows_axpys(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, epi);
    return;
  }
  sgemm(trans_a, M, N, K, alpha, A, lda, MatrixB(trans_b, B, ldb), beta, C, ldc, epi);
}

double fma_peak_gflops() {
  const FmaChainsKernel chains = kernels().gemm.fma_chains;
  const auto seconds = [&](int64_t steps, int64_t* flops) {
    float sink;
    const auto start = std::chrono::steady_clock::now();
    *flops = chains(steps, 1.0f, 0.0f, &sink);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  int64_t steps = 1 << 14, flops = 0;
  while (seconds(steps, &flops) < 0.01 && steps < (int64_t(1) << 40)) steps *= 2;  // runs of at least 10 ms
  double best = 0.0;
  for (int run = 0; run < 8; ++run) best = std::max(best, flops / seconds(steps, &flops) * 1e-9);
  return best;
}

}  // namespace convcore
