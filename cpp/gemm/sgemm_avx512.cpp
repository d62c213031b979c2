// SGEMM microkernels for AVX-512: MR x (16*NV) tiles, MR*NV zmm accumulators, NV B vectors, 1 broadcast.
// 12x32 is the general tile; 8x48 and 6x64 serve layers with few output channels (16 or 6 rows fill them
// exactly where 12x32 would compute 24 or 12), and need fewer loads per FMA.
#include <immintrin.h>

#include "convcore/gemm.h"

namespace convcore {
namespace {

template <int MR, int NV>
void micro(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, bool accumulate) {
  constexpr int NR = 16 * NV;
  __m512 c[MR][NV];
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) c[i][v] = accumulate ? _mm512_loadu_ps(C + i * ldc + 16 * v) : _mm512_setzero_ps();
  for (int64_t k = 0; k < kc; ++k) {
    __m512 b[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) b[v] = _mm512_load_ps(Bp + 16 * v);
#pragma GCC unroll 12
    for (int i = 0; i < MR; ++i) {
      const __m512 a = _mm512_set1_ps(Ap[i]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) c[i][v] = _mm512_fmadd_ps(a, b[v], c[i][v]);
    }
    Ap += MR;
    Bp += NR;
  }
#pragma GCC unroll 12
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(C + i * ldc + 16 * v, c[i][v]);
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

}  // namespace

// kc keeps the kc x nr packed B micro-panel at 24-32 KiB of the 48 KiB L1, beside the A micro-panel.
GemmKernels gemm_kernels_avx512() {
  return GemmKernels{"avx512 12x32 (8x48, 6x64 for few rows)", {{12, 32, 256, micro<12, 2>}, {8, 48, 160, micro<8, 3>},
                                      {6, 64, 128, micro<6, 4>}}, 3, dots_4x2x16};
}

}  // namespace convcore
