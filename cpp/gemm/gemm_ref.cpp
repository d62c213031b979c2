// Naive reference GEMM with the same epilogue as the engine: the oracle for sgemm and the float64 path.
#include "convcore/gemm.h"
#include "convcore/threads.h"

namespace convcore {

template <typename T>
void gemm_ref(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
              const T* B, int64_t ldb, T beta, T* C, int64_t ldc, const T* bias, Epilogue::Bias bias_axis,
              bool relu) {
  const int nt = threads_for(M * N * K);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      T acc = 0;
      for (int64_t k = 0; k < K; ++k) {
        const T a = trans_a == Trans::no ? A[i * lda + k] : A[k * lda + i];
        const T b = trans_b == Trans::no ? B[k * ldb + j] : B[j * ldb + k];
        acc += a * b;
      }
      T v = beta == T(0) ? alpha * acc : alpha * acc + beta * C[i * ldc + j];
      if (bias_axis == Epilogue::Bias::per_row) v += bias[i];
      if (bias_axis == Epilogue::Bias::per_col) v += bias[j];
      if (relu && !(v > T(0))) v = v != v ? v : T(0);
      C[i * ldc + j] = v;
    }
  }
}

template void gemm_ref<float>(Trans, Trans, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*,
                              int64_t, float, float*, int64_t, const float*, Epilogue::Bias, bool);
template void gemm_ref<double>(Trans, Trans, int64_t, int64_t, int64_t, double, const double*, int64_t,
                               const double*, int64_t, double, double*, int64_t, const double*, Epilogue::Bias,
                               bool);

}  // namespace convcore
