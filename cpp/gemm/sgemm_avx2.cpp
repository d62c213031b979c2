// SGEMM microkernel for AVX2+FMA: 6x16 tile (12 ymm accumulators, 2 B vectors, 1 broadcast).
#include <immintrin.h>

#include "convcore/gemm.h"

namespace convcore {
namespace {

constexpr int MR = 6, NR = 16;

void micro_6x16(int64_t kc, const float* Ap, const float* Bp, int64_t ldb, float* C, int64_t ldc,
                bool accumulate, const TileEpilogue* epi) {
  __m256 c[MR][2];
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) {
    c[i][0] = _mm256_setzero_ps();
    c[i][1] = _mm256_setzero_ps();
  }
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(Bp), b1 = _mm256_loadu_ps(Bp + 8);
#pragma GCC unroll 6
    for (int i = 0; i < MR; ++i) {
      const __m256 a = _mm256_broadcast_ss(Ap + i);
      c[i][0] = _mm256_fmadd_ps(a, b0, c[i][0]);
      c[i][1] = _mm256_fmadd_ps(a, b1, c[i][1]);
    }
    Ap += MR;
    Bp += ldb;
  }
#pragma GCC unroll 6
  for (int i = 0; i < MR; ++i) {
    if (accumulate) {
      c[i][0] = _mm256_add_ps(c[i][0], _mm256_loadu_ps(C + i * ldc));
      c[i][1] = _mm256_add_ps(c[i][1], _mm256_loadu_ps(C + i * ldc + 8));
    }
    if (epi) {
      if (epi->row_bias) {
        const __m256 b = _mm256_set1_ps(epi->row_bias[i]);
        c[i][0] = _mm256_add_ps(c[i][0], b);
        c[i][1] = _mm256_add_ps(c[i][1], b);
      }
      if (epi->col_bias) {
        c[i][0] = _mm256_add_ps(c[i][0], _mm256_loadu_ps(epi->col_bias));
        c[i][1] = _mm256_add_ps(c[i][1], _mm256_loadu_ps(epi->col_bias + 8));
      }
      if (epi->relu)  // keep where not <= 0: positive or NaN (relu_keep_nan), else +0
        for (int v = 0; v < 2; ++v)
          c[i][v] = _mm256_and_ps(c[i][v], _mm256_cmp_ps(c[i][v], _mm256_setzero_ps(), _CMP_NLE_UQ));
    }
    _mm256_storeu_ps(C + i * ldc, c[i][0]);
    _mm256_storeu_ps(C + i * ldc + 8, c[i][1]);
  }
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

}  // namespace

GemmKernels gemm_kernels_avx2() {
  return GemmKernels{"avx2 6x16", {{MR, NR, micro_6x16, nullptr}}, 1, dots_4x8, pack_transposed_rows, pack_rows,
                     pack_gathered_rows};
}

}  // namespace convcore
