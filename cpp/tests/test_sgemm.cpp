// The tiled engine against gemm_ref for every ISA this CPU runs: strided C with guard columns left untouched,
// transposes, beta, and a custom BPanelSource (the interface the convolution packs im2col columns through).
#include <cstdint>
#include <vector>

#include "check.h"
#include "convcore/dispatch.h"
#include "convcore/gemm.h"

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
  }
  select_isa(detected_isa());
  return convcore_test::failures;
}
