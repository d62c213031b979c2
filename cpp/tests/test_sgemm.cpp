// The tiled engine against gemm_ref for every ISA this CPU runs: strided C with guard columns left untouched,
// transposes, beta, a custom BPanelSource (the interface the convolution packs im2col columns through), and an A
// packed in advance (PackedA); the few-rows kernel that reads B a row at a time (AxpysKernel); and the stride-2 row
// splitter of the convolutions' image copies.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "check.h"
#include "convcore/dispatch.h"
#include "convcore/gemm.h"
#include "convcore/threads.h"

using namespace convcore;

namespace {

// B(k, j) = (k * 3 + j) % 7 - 3, produced on the fly.
class FormulaB final : public BPanelSource {
 public:
  void pack(int64_t k0, int64_t kc, int64_t n0, int64_t nc, int nr, float* Bp) const override {
    for (int64_t jp = 0; jp < nc; jp += nr)
      for (int64_t k = 0; k < kc; ++k)
        for (int64_t j = 0; j < nr; ++j)
          Bp[(jp / nr) * kc * nr + k * nr + j] = jp + j < nc ? value(k0 + k, n0 + jp + j) : 0.0f;
  }
  static float value(int64_t k, int64_t j) { return float((k * 3 + j) % 7 - 3); }
};

// The ISA's SplitRow2Kernel against its definition: the row amid NaNs (a read outside it would reach dst as NaN),
// dst pre-filled with NaN and a NaN guard after it left untouched.
void check_split_row2(int64_t W, int64_t pad) {
  const int64_t Wq = (W + 2 * pad + 1) / 2, margin = 40;
  std::vector<float> row(W + 2 * margin, NAN), dst(2 * Wq + 16, NAN);
  for (int64_t j = 0; j < W; ++j) row[margin + j] = float(j + 1);
  kernels().gemm.split_row2(row.data() + margin, W, pad, Wq, dst.data());
  for (int64_t phase = 0; phase < 2; ++phase)
    for (int64_t i = 0; i < Wq; ++i) {
      const int64_t column = 2 * i + phase - pad;
      CHECK(dst[phase * Wq + i] == (column >= 0 && column < W ? float(column + 1) : 0.0f));
    }
  for (int64_t i = 2 * Wq; i < int64_t(dst.size()); ++i) CHECK(std::isnan(dst[i]));
}

// The ISA's AxpysKernel against its definition on small integers (exact): B's rows ldb apart with NaN after their n
// columns (a read past them would reach the sums as NaN), the sums pre-filled with NaN and a NaN guard after them
// left untouched.
void check_axpys(int64_t M, int64_t K, int64_t n) {
  const int64_t lda = K + 2, ldb = n + 5, guard = 16;
  std::vector<float> A(M * lda), B(K * ldb, NAN), sums(M * n + guard, NAN);
  for (int64_t i = 0; i < M * lda; ++i) A[i] = float(i % 7) - 3;
  for (int64_t k = 0; k < K; ++k)
    for (int64_t j = 0; j < n; ++j) B[k * ldb + j] = float((k * 5 + j) % 9) - 4;
  kernels().gemm.axpys(M, A.data(), lda, B.data(), ldb, K, n, sums.data());
  bool same = true;
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double want = 0.0;
      for (int64_t k = 0; k < K; ++k) want += double(A[i * lda + k]) * B[k * ldb + j];
      same &= sums[i * n + j] == want;
    }
  CHECK(same);
  for (int64_t e = M * n; e < M * n + guard; ++e) CHECK(std::isnan(sums[e]));
}

void run_case(int64_t M, int64_t N, int64_t K, Trans ta, Trans tb, float beta) {
  const int64_t ldc = N + 3;
  std::vector<float> A(M * K), B(K * N), C(M * ldc, -7.0f), R(M * ldc, -7.0f);
  for (int64_t i = 0; i < M * K; ++i) A[i] = float(i % 5) - 2;
  for (int64_t i = 0; i < K * N; ++i) B[i] = float(i % 3) - 1;
  const int64_t lda = ta == Trans::no ? K : M, ldb = tb == Trans::no ? N : K;
  sgemm(ta, tb, M, N, K, 1.0f, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
  gemm_ref<float>(ta, tb, M, N, K, 1.0f, A.data(), lda, B.data(), ldb, beta, R.data(), ldc);
  bool same = true, guards = true;
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) same &= C[i * ldc + j] == R[i * ldc + j];
    for (int64_t j = N; j < ldc; ++j) guards &= C[i * ldc + j] == -7.0f;
  }
  CHECK(same);
  CHECK(guards);
}

// A packed in advance (PackedA's layout, written here element by element) gives the bits of the same product from
// the unpacked A, on 1 and 2 threads (the products split by columns in chunks, and by rows).
void run_packed_case(int64_t M, int64_t N, int64_t K, int threads) {
  const int before = num_threads();
  set_num_threads(threads);
  std::vector<float> A(M * K), B(K * N), C(M * N, std::nanf("")), R(M * N);
  for (int64_t i = 0; i < M * K; ++i) A[i] = float(i % 11) * 0.37f - 1.5f;
  for (int64_t i = 0; i < K * N; ++i) B[i] = float(i % 13) * 0.21f - 1.0f;
  const PackedA a{choose_tile(kernels().gemm, M, N), M, K};
  std::vector<float> packed(a.floats(), std::nanf(""));
  const int64_t mr = a.tile.mr, kb = gemm_k_block(K);
  for (int64_t pc = 0; pc < K; pc += kb)
    for (int64_t r = 0; r * mr < M; ++r) {
      float* panel = a.panel(packed.data(), r, pc);
      for (int64_t k = 0; k < std::min(kb, K - pc); ++k)
        for (int64_t i = 0; i < mr; ++i) panel[k * mr + i] = r * mr + i < M ? A[(r * mr + i) * K + pc + k] : 0.0f;
    }
  sgemm(a, packed.data(), N, MatrixB(Trans::no, B.data(), N), 0.0f, C.data(), N);
  sgemm(Trans::no, Trans::no, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, R.data(), N);
  CHECK(C == R);
  // the engine's packer writes the same layout, every float of it
  std::vector<float> by_engine(a.floats(), std::nanf(""));
  sgemm_pack_a(a, A.data(), K, by_engine.data());
  CHECK(by_engine == packed);
  // rows in two parts (the first a whole number of tiles high), each with the epilogue: the whole product's bits
  std::vector<float> bias(M);
  for (int64_t i = 0; i < M; ++i) bias[i] = float(i % 7) - 3.0f;
  Epilogue epi;
  epi.bias = bias.data();
  epi.bias_axis = Epilogue::Bias::per_row;
  epi.relu = true;
  const int64_t split = M / mr / 2 * mr;
  std::fill(C.begin(), C.end(), std::nanf(""));
  sgemm_rows(a, packed.data(), 0, split, N, MatrixB(Trans::no, B.data(), N), 0.0f, C.data(), N, epi);
  sgemm_rows(a, packed.data(), split, M, N, MatrixB(Trans::no, B.data(), N), 0.0f, C.data(), N, epi);
  sgemm(a, packed.data(), N, MatrixB(Trans::no, B.data(), N), 0.0f, R.data(), N, epi);
  CHECK(C == R);
  set_num_threads(before);
}

}  // namespace

int main() {
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512}) {
    if (!select_isa(isa)) continue;
    // M reaches every tile (6x64, 8x48, 12x32 on AVX-512), N past every NR, K past every KC
    for (int64_t M : {1, 5, 7, 8, 12, 13, 16, 150})
      for (int64_t N : {1, 16, 33, 65, 70})
        for (int64_t K : {1, 9, 129, 161, 257})
          for (Trans ta : {Trans::no, Trans::yes})
            for (Trans tb : {Trans::no, Trans::yes}) run_case(M, N, K, ta, tb, M % 2 ? 0.0f : 1.0f);
    // a produced B operand
    const int64_t M = 7, N = 45, K = 300;
    std::vector<float> A(M * K), C(M * N), R(M * N);
    std::vector<float> B(K * N);
    for (int64_t i = 0; i < M * K; ++i) A[i] = float(i % 5) - 2;
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = 0; j < N; ++j) B[k * N + j] = FormulaB::value(k, j);
    sgemm(Trans::no, M, N, K, 1.0f, A.data(), K, FormulaB(), 0.0f, C.data(), N);
    gemm_ref<float>(Trans::no, Trans::no, M, N, K, 1.0f, A.data(), K, B.data(), N, 0.0f, R.data(), N);
    CHECK(C == R);
    for (int threads : {1, 2})
      for (int64_t M : {5, 13, 150})
        for (int64_t N : {33, 35, 49, 66, 4000})  // 35, 49, 66: the wide microkernels of 12x32, 8x48, 6x64
          for (int64_t K : {9, 257, 600}) run_packed_case(M, N, K, threads);  // 257: blocks 129 + 128
    for (int64_t M = 1; M <= kAxpysRows; ++M)
      for (int64_t K : {1, 3, 4, 5, 17})
        for (int64_t n : {1, 7, 8, 15, 16, 17, 33, 100}) check_axpys(M, K, n);
    for (int64_t W : {1, 2, 3, 7, 8, 14, 15, 16, 17, 28, 31, 32, 33, 56, 100, 224})
      for (int64_t pad : {0, 1, 2, 3}) check_split_row2(W, pad);
    // the FMA chains do every step on every lane of the ISA's vectors (scalar: SSE2's 4)
    const int lanes = isa == Isa::avx512 ? 16 : isa == Isa::avx2 ? 8 : 4;
    float sink = 0.0f;
    CHECK(kernels().gemm.fma_chains(1000, 1.0f, 1.0f, &sink) == 2 * 1000 * kFmaChains * lanes);
    CHECK(sink == float(kFmaChains * lanes * 1001));
    CHECK(kernels().gemm.fma_chains(3, 2.0f, 0.5f, &sink) == 2 * 3 * kFmaChains * lanes);
    CHECK(sink == float(kFmaChains * lanes) * 11.5f);  // 1 -> 2.5 -> 5.5 -> 11.5
    CHECK(fma_peak_gflops() > 0.0);
  }
  select_isa(detected_isa());
  return convcore_test::failures;
}
