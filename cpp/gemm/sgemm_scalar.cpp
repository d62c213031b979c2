// Portable SGEMM microkernel: 4x16 tile in plain C++ (the compiler vectorises the j loops with SSE2).
#include "convcore/gemm.h"

namespace convcore {
namespace {

constexpr int MR = 4, NR = 16;

// The top-left rows x cols of the 4 x 16 tile, A a packed micro-panel (Ap) or one pointer per row (row[i], in runs
// of len floats, jump apart; runs 1 for a packed A).
void tile_4x16(const float* Ap, const float* const* row, int64_t len, int64_t runs, int64_t jump, const float* Bp,
               int64_t ldb, float* C, int64_t ldc, bool accumulate, const TileEpilogue* epi, int rows, int cols) {
  float c[MR][NR] = {};
  for (int64_t r = 0; r < runs; ++r)
    for (int64_t k = 0; k < len; ++k) {
      for (int i = 0; i < MR; ++i) {
        const float a = row ? row[i][r * jump + k] : Ap[i];
        for (int j = 0; j < cols; ++j) c[i][j] += a * Bp[j];
      }
      if (!row) Ap += MR;
      Bp += ldb;
    }
  for (int i = 0; i < rows; ++i)
    for (int j = 0; j < cols; ++j) store_tile_element(c[i][j], accumulate, epi, i, j, C + i * ldc + j);
}

void micro_4x16(int64_t kc, const float* Ap, const float* Bp, int64_t ldb, float* C, int64_t ldc, bool accumulate,
                const TileEpilogue* epi) {
  tile_4x16(Ap, nullptr, kc, 1, 0, Bp, ldb, C, ldc, accumulate, epi, MR, NR);
}

void micro_edge_4x16(int64_t kc, const float* Ap, int64_t /* lda */, const float* Bp, int64_t ldb, float* C,
                     int64_t ldc, bool accumulate, const TileEpilogue* epi, int rows, int cols) {
  tile_4x16(Ap, nullptr, kc, 1, 0, Bp, ldb, C, ldc, accumulate, epi, rows, cols);
}

void micro_gathered_4x16(int64_t len, int64_t runs, int64_t jump, const float* const* a, const float* Bp,
                         int64_t ldb, float* C, int64_t ldc, bool accumulate, int rows, int cols) {
  tile_4x16(nullptr, a, len, runs, jump, Bp, ldb, C, ldc, accumulate, nullptr, rows, cols);
}

// 8 lanes, each summing every 8th product in k order, then the lanes in order.
float dot_8(const float* a, const float* b, int64_t K) {
  constexpr int kLanes = 8;
  float lanes[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= K; k += kLanes)
    for (int l = 0; l < kLanes; ++l) lanes[l] += a[k + l] * b[k + l];
  for (int l = 0; k < K; ++k, ++l) lanes[l] += a[k] * b[k];
  float sum = 0.0f;
  for (int l = 0; l < kLanes; ++l) sum += lanes[l];
  return sum;
}

void dots_8(const float* a, const float* B, int64_t ldb, int64_t K, int64_t n, float* out) {
  for (int64_t j = 0; j < n; ++j) out[j] = dot_8(a, B + j * ldb, K);
}

}  // namespace

GemmKernels gemm_kernels_scalar() {
  return GemmKernels{"scalar 4x16",
                     {{MR, NR, micro_4x16, micro_edge_4x16, nullptr, nullptr, nullptr, micro_gathered_4x16, 0,
                       nullptr, nullptr, micro_4x16, micro_edge_4x16, nullptr}},
                     1,
                     dots_8,
                     axpys<4>,
                     pack_transposed_rows,
                     pack_rows,
                     pack_gathered_rows,
                     split_row2,
                     fma_chains<4>};
}

}  // namespace convcore
