// SGEMM: C = alpha * op(A) * op(B) + beta * C, row-major, with a fused epilogue.
// gemm_ref is the naive oracle (float and double); the per-ISA microkernels live behind GemmKernels.
#pragma once
#include <cstdint>

namespace convcore {

enum class Trans : int { no = 0, yes = 1 };

// Naive reference. A is (M, K) (or (K, M) when trans_a), B is (K, N) (or (N, K) when trans_b);
// lda/ldb/ldc are row strides in elements. With beta == 0, C is not read.
template <typename T>
void gemm_ref(Trans trans_a, Trans trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
              const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// Per-ISA microkernels (filled by the SGEMM engine).
struct GemmKernels {
  const char* name;
};

GemmKernels gemm_kernels_scalar();
GemmKernels gemm_kernels_avx2();
GemmKernels gemm_kernels_avx512();

}  // namespace convcore
