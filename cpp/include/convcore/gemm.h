// GEMM: C = alpha * op(A) * op(B) + beta * C, row-major, with a fused epilogue (bias, ReLU).
// gemm_ref is the naive oracle (float and double). sgemm is the tiled float engine: BLIS-style packing of A into
// MR-row micro-panels and of B into NR-column micro-panels, register-tiled microkernels per ISA behind GemmKernels.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>

namespace convcore {

enum class Trans : int { no = 0, yes = 1 };

// Applied to each finished C element after alpha * AB + beta * C: + bias (per row i or per column j), then ReLU.
struct Epilogue {
  enum class Bias : int { none = 0, per_row = 1, per_col = 2 };
  const float* bias = nullptr;
  Bias bias_axis = Bias::none;
  bool relu = false;
};

namespace {  // its own copy in each unit: an inline function must not be merged across ISA units
// The epilogue's ReLU, which keeps NaN (PyTorch's relu(NaN) is NaN); also for kernels that apply the epilogue
// themselves (Winograd's output transform).
inline float relu_keep_nan(float v) { return v > 0.0f ? v : (v != v ? v : 0.0f); }
}  // namespace

// Naive reference. A is (M, K) (or (K, M) when trans_a), B is (K, N) (or (N, K) when trans_b);
// lda/ldb/ldc are row strides in elements. With beta == 0, C is not read.
template <typename T>
void gemm_ref(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
              const T* B, int64_t ldb, T beta, T* C, int64_t ldc, const T* bias = nullptr,
              Epilogue::Bias bias_axis = Epilogue::Bias::none, bool relu = false);

// The epilogue of one full tile, applied by the microkernel to its registers before the store (the output is
// written once): + row_bias[i] (when not null), + col_bias[j] (when not null), then ReLU keeping NaN (relu_keep_nan).
struct TileEpilogue {
  const float* row_bias;
  const float* col_bias;
  bool relu;
};

namespace {  // its own copy in each unit, as relu_keep_nan
// Element (i, j) of a tile computed a float at a time (the portable tiles, AVX-512's narrow edge tiles and the wide
// microkernels' added columns) into *c: the products' sum, plus *c where accumulating, then epi's biases and ReLU,
// in the order the vector tiles apply them.
inline void store_tile_element(float sum, bool accumulate, const TileEpilogue* epi, int i, int j, float* c) {
  float v = accumulate ? *c + sum : sum;
  if (epi) {
    if (epi->row_bias) v += epi->row_bias[i];
    if (epi->col_bias) v += epi->col_bias[j];
    if (epi->relu) v = relu_keep_nan(v);
  }
  *c = v;
}
}  // namespace

// Microkernel: the mr x nr tile C (row stride ldc) = (accumulate ? C : 0) + sum_k Ap[k*mr + i] * Bp[k*ldb + j],
// the sum over k in [0, kc) taken in k order from zero, then added to C: C is read only after the products (its
// cache misses overlap them; measured: 1-4% faster than starting from C), then the tile epilogue where epi is not
// null. B's rows are ldb floats apart: nr in a packed panel, the matrix's row stride where the engine reads B in
// place. Full tiles only (edge tiles: EdgeMicroKernel).
using MicroKernel = void (*)(int64_t kc, const float* Ap, const float* Bp, int64_t ldb, float* C, int64_t ldc,
                             bool accumulate, const TileEpilogue* epi);

// The microkernel, also storing each row of B it reads (nr floats, ldb apart) to Bcopy as a packed panel:
// Bcopy[k*nr + j] (64-byte aligned). The first row panel of a few-row product packs B from memory for the others
// while it computes.
using CopyingMicroKernel = void (*)(int64_t kc, const float* Ap, const float* B, int64_t ldb, float* Bcopy, float* C,
                                    int64_t ldc, bool accumulate, const TileEpilogue* epi);

// The microkernel reading A in place: the tile's mr rows of a row-major A, A[i*lda + k] (all mr rows present),
// instead of a packed micro-panel; the same sums in the same order as the microkernel on A packed with alpha 1.
using RowsMicroKernel = void (*)(int64_t kc, const float* A, int64_t lda, const float* Bp, int64_t ldb, float* C,
                                 int64_t ldc, bool accumulate, const TileEpilogue* epi);

// Edge microkernel: the top-left rows x cols of the mr x nr tile (1 <= rows <= mr, 1 <= cols <= nr), the same sums
// in the same order as the microkernel, written to C directly: only B's first cols columns and C's first rows x cols
// elements are touched, so B may be read in place at the matrix's right edge and C needs no scratch tile. A is a
// packed micro-panel (mr rows, zero past rows; lda unused) or, for the kernel reading A in place, the tile's rows
// (all mr present, lda apart). The tile epilogue's row_bias is read for the first rows, its col_bias for the first
// cols.
using EdgeMicroKernel = void (*)(int64_t kc, const float* A, int64_t lda, const float* Bp, int64_t ldb, float* C,
                                 int64_t ldc, bool accumulate, const TileEpilogue* epi, int rows, int cols);

// Gathered microkernel: the top-left rows x cols of the mr x nr tile, written as the edge microkernel writes them,
// = (accumulate ? C : 0) + the sum over runs r < runs and steps k < len, taken in that order from zero, of
// a[i][r * jump + k] * Bp[(r * len + k) * ldb + j]. A's mr rows are read in place through mr row pointers (those
// past `rows` may repeat any row) in runs of len consecutive floats, jump floats apart: an im2col's rows, the taps'
// runs along output rows, multiplied without being packed. Bp is a packed panel (nr floats a row, ldb = nr).
using GatheredMicroKernel = void (*)(int64_t len, int64_t runs, int64_t jump, const float* const* a, const float* Bp,
                                     int64_t ldb, float* C, int64_t ldc, bool accumulate, int rows, int cols);

// Wide microkernel: the full mr x nr tile of the microkernel (A packed, lda 0) or of the one reading A in place
// (lda its row stride), and in the same pass over k the next `cols` columns of C (1 <= cols <= the tile's
// narrow_cols), whose B is at Bx (row stride ldbx), each with the same sums in the same order and the same epilogue
// as the microkernel's: a product's last panel of a few columns rides along with the full panel before it
// (instead of an edge tile computing a vector of 16 columns a row for them, or a narrow edge tile).
using WideMicroKernel = void (*)(int64_t kc, const float* A, int64_t lda, const float* Bp, int64_t ldb,
                                 const float* Bx, int64_t ldbx, float* C, int64_t ldc, bool accumulate,
                                 const TileEpilogue* epi, int cols);

// One register tile: the mr x nr microkernel and its edge microkernel; its copying microkernel, or nullptr; its
// microkernel reading A in place with that one's edge microkernel, or nullptr; its gathered microkernel, or nullptr;
// the most columns its wide microkernels add (narrow_cols, 0 where there are none) and those kernels, A packed
// (wide) and read in place (wide_rows), or nullptr; and the microkernel, its edge microkernel and its wide
// microkernel (or nullptr) for an A packed in advance as a whole (PackedA, or all of A packed before a product's
// column chunks), whose panels come from L3 or memory rather than from the L2 block a product packs as it goes:
// prefetched ahead where the ISA does.
struct GemmTile {
  int mr, nr;
  MicroKernel micro;
  EdgeMicroKernel edge;
  CopyingMicroKernel copying;
  RowsMicroKernel rows;
  EdgeMicroKernel rows_edge;
  GatheredMicroKernel gathered;
  int narrow_cols;
  WideMicroKernel wide;
  WideMicroKernel wide_rows;
  MicroKernel prepacked;
  EdgeMicroKernel edge_prepacked;
  WideMicroKernel wide_prepacked;
};

// The columns of a full tile that `cols` columns added by a wide microkernel cost: a k step takes one FMA of a
// 16-lane vector per column, a full tile mr / 16 per column.
inline int64_t narrow_columns_cost(const GemmTile& t, int64_t cols) { return (16 * cols + t.mr - 1) / t.mr; }

constexpr int kMaxGemmTiles = 3;
constexpr int kMaxNr = 64;                 // nr of every tile is at most this
constexpr int kMaxMr = 16;                 // and mr at most this

// out[j] = a . B[j * ldb ...] (K floats) for j < n, each summed in a fixed order that does not depend on n or on
// the row's position (for products with a few rows: no packing).
using DotsKernel = void (*)(const float* a, const float* B, int64_t ldb, int64_t K, int64_t n, float* out);

// sums[i * n + j] = the sum over k < K of A[i * lda + k] * B[k * ldb + j], for i < M (at most kAxpysRows) and j < n:
// B read a row at a time, each row's n floats front to back (the hardware prefetchers follow such runs, not a
// narrow panel's rows a matrix row apart), every element one chain of multiply-adds in k order that does not
// depend on n or on the column's position (for products with a few rows and a row-major B: no packing).
constexpr int kAxpysRows = 4;
using AxpysKernel = void (*)(int64_t M, const float* A, int64_t lda, const float* B, int64_t ldb, int64_t K,
                             int64_t n, float* sums);

// Packs `count` source rows transposed: dst[k*width + i] = alpha * base[offsets[i] + k] for i < count, k < len,
// and 0 for i in [count, width). The A micro-panels of a row-major A (row offsets i*lda) are such transposes, and
// so are the B panels of a transposed im2col (one source row per kernel tap).
using PackTransposedKernel = void (*)(const float* base, const int64_t* offsets, int64_t count, int64_t width,
                                      int64_t len, float alpha, float* dst);

// The portable PackTransposedKernel (element by element).
void pack_transposed_rows(const float* base, const int64_t* offsets, int64_t count, int64_t width, int64_t len,
                          float alpha, float* dst);

// Packs kc rows of a row-major B (row stride ldb) into ceil(nc/nr) micro-panels: Bp[(j/nr)*kc*nr + k*nr + j%nr] =
// B[k*ldb + j] for k < kc, j < nc, and 0 past nc in the last panel. nr is a multiple of 8.
using PackRowsKernel = void (*)(const float* B, int64_t ldb, int64_t kc, int64_t nc, int nr, float* Bp);

// The portable PackRowsKernel.
void pack_rows(const float* B, int64_t ldb, int64_t kc, int64_t nc, int nr, float* Bp);

// Packs `count` rows gathered from anywhere into the rows of a panel: dst[k*width + j] = base[offsets[k] + j] for
// k < count, j < len (len <= width); dst's elements past len are left as they are. A strided layer's im2col panel
// rows are such runs, one per kernel tap, read from its phase-split image copy; pad_image copies an image's rows so.
using PackGatheredKernel = void (*)(const float* base, const int64_t* offsets, int64_t count, int64_t len,
                                    int64_t width, float* dst);

// The portable PackGatheredKernel.
void pack_gathered_rows(const float* base, const int64_t* offsets, int64_t count, int64_t len, int64_t width,
                        float* dst);

// Writes one image row of W floats zero-padded by `pad` on the left and split by phase for stride 2 (a strided
// layer's copy, pad_split_phases): dst[phase * Wq + i] = src[2 * i + phase - pad] where that column is in [0, W),
// else 0, for phases 0 and 1 and i < Wq. Reads only the row's W floats.
using SplitRow2Kernel = void (*)(const float* src, int64_t W, int64_t pad, int64_t Wq, float* dst);

// The portable SplitRow2Kernel.
void split_row2(const float* src, int64_t W, int64_t pad, int64_t Wq, float* dst);

// Runs `steps` steps of kFmaChains independent chains of the ISA's widest multiply-add, each chain starting at 1
// (acc = acc * a + b per lane), writes the sum of every chain's lanes to *sink and returns the floating-point
// operations done (2 per lane per step). The chains keep the FMA units busy with no memory traffic: fma_peak_gflops
// times it to give the core's peak, the ceiling of any kernel's GFLOP/s (with a = b = 1 and steps < 2^24 the sum is
// exactly kFmaChains * lanes * (steps + 1)).
using FmaChainsKernel = int64_t (*)(int64_t steps, float a, float b, float* sink);
constexpr int kFmaChains = 12;  // enough to cover 2 FMA units x 4+ cycles of latency

// The selected ISA's FMA peak of one core in GFLOP/s: the best of several timed runs of its FmaChainsKernel (about
// 0.1 s in all) on the calling thread.
double fma_peak_gflops();

// An ISA's tiles, the general one first; the engine picks one per problem (choose_tile).
struct GemmKernels {
  const char* name;
  GemmTile tiles[kMaxGemmTiles];
  int count;
  DotsKernel dots;
  AxpysKernel axpys;
  PackTransposedKernel pack_transposed;
  PackRowsKernel pack_rows;
  PackGatheredKernel pack_gathered;
  SplitRow2Kernel split_row2;
  FmaChainsKernel fma_chains;
};

// The tile for an M x N product: the tiles are taken in order, the general one first, and a tile replaces the one
// chosen so far where it pads the product to an area (rows x columns computed; a last panel that a wide
// microkernel adds to the one before counted at narrow_columns_cost) smaller by more than 1/16, or to the same area
// with fewer padded rows (e.g. on AVX-512 8x48, also for 49 columns, 48 + 1; 12x32 for 12 rows or 60 columns, 6x64
// for 6 rows or 64 x 64, which 8x48 would pad to 64 x 96); for an A the engine may read in place (a_in_place:
// row-major, alpha 1), past one packed A block of rows, to an area within 1/16 with fewer column panels (6x64 for
// 512 x 60).
// (Measured: for few rows the wide tiles win even where N is narrower than their nr, e.g. LeNet conv1's weight
// gradient, 6 x 25, where every tile computes the same area.)
const GemmTile& choose_tile(const GemmKernels& kernels, int64_t M, int64_t N, bool a_in_place = false);

// The area a tile computes for an M x N product: M rounded up to whole row panels times N to whole column panels.
int64_t padded_area(const GemmTile& t, int64_t M, int64_t N);
// Whether padded area `area` is smaller than `than` by more than 1/16: the saving that makes choose_tile leave the
// general tile, and the weight gradient take the taps as rows.
inline bool clearly_smaller(int64_t area, int64_t than) { return 16 * (than - area) > than; }

GemmKernels gemm_kernels_scalar();
GemmKernels gemm_kernels_avx2();
GemmKernels gemm_kernels_avx512();

// The B operand as a producer of packed panels, so a convolution can write im2col columns straight into the
// packed buffer (the (K x N) matrix is never materialised). pack() writes rows [k0, k0+kc) and columns
// [n0, n0+nc) of B as ceil(nc/nr) micro-panels: Bp[panel*kc*nr + k*nr + j], zero-padding columns past nc.
// It is called concurrently from several threads on disjoint outputs, must not modify shared state and must not
// throw (it runs between OpenMP barriers).
class BPanelSource {
 public:
  virtual ~BPanelSource() = default;
  virtual void pack(int64_t k0, int64_t kc, int64_t n0, int64_t nc, int nr, float* Bp) const = 0;
  // B as a row-major (K, N) matrix in memory that the engine may read in place: its address, with its row stride in
  // *ldb; nullptr where B exists only as packed panels.
  virtual const float* in_memory(int64_t* /*ldb*/) const { return nullptr; }
};

// B stored as a row-major (K, N) matrix (trans no) or (N, K) (trans yes) with row stride ldb.
class MatrixB final : public BPanelSource {
 public:
  MatrixB(Trans trans, const float* B, int64_t ldb) : trans_(trans), B_(B), ldb_(ldb) {}
  void pack(int64_t k0, int64_t kc, int64_t n0, int64_t nc, int nr, float* Bp) const override;
  const float* in_memory(int64_t* ldb) const override {
    *ldb = ldb_;
    return trans_ == Trans::no ? B_ : nullptr;
  }

 private:
  Trans trans_;
  const float* B_;
  int64_t ldb_;
};

// Tiled engine: C (M, N) = alpha * op(A) * B + beta * C, then the epilogue. With beta == 0, C is never read.
// Threads split N (or M when N is narrow) but never K: each C element is summed in the same order whatever the
// thread count, so results are bitwise identical at any thread count. Small problems run on one thread.
void sgemm(Trans trans_a, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const BPanelSource& B, float beta, float* C, int64_t ldc, const Epilogue& epilogue = {});

// The K block of a product of depth K (the engine's, the same for every tile, thread count and ISA): K itself up to
// 384, deeper K cut into equal blocks of at most 256.
int64_t gemm_k_block(int64_t K);

// A product's rows shared out between the threads, for a caller that runs the threads itself, each computing its
// rows with sgemm (called inside the parallel region, it runs on that thread) from a B of its own: the rows thread t
// takes are t * share to min(M, (t + 1) * share), share a multiple of the height of the tile sgemm takes for M /
// threads rows (each thread's sgemm then chooses a tile for its own rows: the same bits whatever the tile). 0 where
// the product runs on one thread or has fewer rows than a tile's per thread.
int64_t sgemm_row_share(int64_t M, int64_t N, int64_t K);

// op(A), M x K, packed in advance in the engine's own layout for one tile, so that an A used by several products
// (Winograd's transformed filters, the same for every block of tiles) is packed once, or written packed by its
// producer. For each K block [pc, pc + kc) (kb = gemm_k_block(K), kc = min(kb, K - pc)) a padded_m() x kc slab at
// pc * padded_m(); in it, row panel r (rows [r * mr, r * mr + mr), zero past M) at r * mr * kc, element (i, k) at
// k * mr + i (row r * mr + i, column pc + k).
struct PackedA {
  const GemmTile& tile;  // normally choose_tile(kernels().gemm, M, N) for the products' N
  int64_t M, K;
  int64_t padded_m() const { return (M + tile.mr - 1) / tile.mr * tile.mr; }
  int64_t floats() const { return padded_m() * K; }
  // row panel r of K block pc in data
  float* panel(float* data, int64_t r, int64_t pc) const {
    return data + pc * padded_m() + r * tile.mr * std::min(gemm_k_block(K), K - pc);
  }
};

// C (M, N) = packed A * B + beta * C, then the epilogue, with A packed as `a` describes (alpha already applied).
// The same bits as the product from the unpacked A with the same tile.
void sgemm(const PackedA& a, const float* packed, int64_t N, const BPanelSource& B, float beta, float* C, int64_t ldc,
           const Epilogue& epilogue = {});

// Rows [m0, m1) of that product (m0 a multiple of a.tile.mr, m1 of it or a.M), on the calling thread, into C's rows
// m0 to m1 (C points at row 0, the epilogue's per-row bias at the product's row 0): the bits of the whole product's.
void sgemm_rows(const PackedA& a, const float* packed, int64_t m0, int64_t m1, int64_t N, const BPanelSource& B,
                float beta, float* C, int64_t ldc, const Epilogue& epilogue = {});

// Writes the row-major M x K matrix A (row stride lda) packed as `a` describes (alpha 1).
void sgemm_pack_a(const PackedA& a, const float* A, int64_t lda, float* packed);

// The tile whose height sgemm_row_share's shares are a multiple of, or where that is 0 the tile sgemm takes for a
// row-major A of M rows: the tile to pack an A in advance for, for products shared out by sgemm_row_share.
const GemmTile& sgemm_row_tile(int64_t M, int64_t N, int64_t K);

// Both operands as matrices. With at most 4 rows of A and B given as rows (trans_b), runs as dot products
// without packing (a fully connected layer at small batch); with at most kAxpysRows rows of a row-major A against a
// row-major B (one row, or a B of 2^20 elements or more), B is read a row at a time by the AxpysKernel, with the
// engine's bits.
void sgemm(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
           const float* B, int64_t ldb, float beta, float* C, int64_t ldc, const Epilogue& epilogue = {});

namespace {  // its own copy in each ISA unit, compiled with that unit's instructions (multiply-adds contracted)
// The FmaChainsKernel of VL-float vectors.
template <int VL>
int64_t fma_chains(int64_t steps, float a, float b, float* sink) {
  typedef float vec __attribute__((vector_size(4 * VL)));
  const vec av = vec{} + a, bv = vec{} + b;
  vec acc[kFmaChains];
  for (int c = 0; c < kFmaChains; ++c) acc[c] = vec{} + 1.0f;
  for (int64_t i = 0; i < steps; ++i)
    for (int c = 0; c < kFmaChains; ++c) acc[c] = acc[c] * av + bv;
  float lanes[kFmaChains * VL], sum = 0.0f;
  std::memcpy(lanes, acc, sizeof(lanes));
  for (const float lane : lanes) sum += lane;
  *sink = sum;
  return 2 * steps * kFmaChains * VL;
}

// The AxpysKernel of VL-float vectors for M rows: per step, S rows of B (4, then 1 at K's end) against M x S of A's
// elements, each vector of sums loaded, multiplied-added S times in k order (contracted: one rounding each, as the
// microkernels' FMAs; mul then add where the unit has no FMA, as the portable tile) and stored; the columns past the
// last whole vector one by one. The rows kAxpysPrefetchRows ahead are prefetched into L2, a line for each line read
// (both builds in one process, calls alternated, median of per-pair time ratios, Intel Xeon family 6 model 167,
// AVX-512, 2 threads: 2 x 9216 @ 9216 x 4096 1.17x, 1 x 4096 @ 4096 x 1000 1.11x, 3 x 4096 @ 4096 x 1000 1.12x; 8
// rows ahead, or into L1, the same within 3%).
constexpr int64_t kAxpysPrefetchRows = 16;

template <int VL, int M, int S>
inline void axpys_step(const float* A, int64_t lda, int64_t k, const float* B, int64_t ldb, int64_t n, float* sums) {
  typedef float vec __attribute__((vector_size(4 * VL)));
  typedef float at __attribute__((vector_size(4 * VL), aligned(4), may_alias));  // a vector at any float
  vec a[M][S];
  for (int i = 0; i < M; ++i)
    for (int s = 0; s < S; ++s) a[i][s] = vec{} + A[i * lda + k + s];
  const float* b = B + k * ldb;
  int64_t j = 0;
  for (; j + VL <= n; j += VL) {
    vec r[S];
#pragma GCC unroll 4
    for (int s = 0; s < S; ++s) {
      r[s] = *reinterpret_cast<const at*>(b + s * ldb + j);
      __builtin_prefetch(b + (kAxpysPrefetchRows + s) * ldb + j, 0, 2);
    }
#pragma GCC unroll 4
    for (int i = 0; i < M; ++i) {
      at* out = reinterpret_cast<at*>(sums + i * n + j);
      vec c = *out;
#pragma GCC unroll 4
      for (int s = 0; s < S; ++s) c = c + a[i][s] * r[s];
      *out = c;
    }
  }
  for (; j < n; ++j)
    for (int i = 0; i < M; ++i)
      for (int s = 0; s < S; ++s) sums[i * n + j] = sums[i * n + j] + A[i * lda + k + s] * b[s * ldb + j];
}

template <int VL, int M>
void axpys_rows(const float* A, int64_t lda, const float* B, int64_t ldb, int64_t K, int64_t n, float* sums) {
  std::fill(sums, sums + M * n, 0.0f);
  int64_t k = 0;
  for (; k + 4 <= K; k += 4) axpys_step<VL, M, 4>(A, lda, k, B, ldb, n, sums);
  for (; k < K; ++k) axpys_step<VL, M, 1>(A, lda, k, B, ldb, n, sums);
}

template <int VL>
void axpys(int64_t M, const float* A, int64_t lda, const float* B, int64_t ldb, int64_t K, int64_t n, float* sums) {
  switch (M) {
    case 1: return axpys_rows<VL, 1>(A, lda, B, ldb, K, n, sums);
    case 2: return axpys_rows<VL, 2>(A, lda, B, ldb, K, n, sums);
    case 3: return axpys_rows<VL, 3>(A, lda, B, ldb, K, n, sums);
    default: return axpys_rows<VL, 4>(A, lda, B, ldb, K, n, sums);
  }
}
}  // namespace

}  // namespace convcore
