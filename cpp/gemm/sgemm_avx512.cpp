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

// Four 16-lane FMA accumulators over 64-float steps (independent chains), then masked 16-lane steps into the
// first; the lanes are summed by a fixed pairwise tree. Fixed order for a given K.
float dot_4x16(const float* a, const float* b, int64_t K) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps(), s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 64 <= K; k += 64) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k + 16), _mm512_loadu_ps(b + k + 16), s1);
    s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k + 32), _mm512_loadu_ps(b + k + 32), s2);
    s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k + 48), _mm512_loadu_ps(b + k + 48), s3);
  }
  for (; k < K; k += 16) {
    const __mmask16 m = K - k >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (K - k)) - 1);
    s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + k), _mm512_maskz_loadu_ps(m, b + k), s0);
  }
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, _mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
  for (int width = 8; width >= 1; width /= 2)  // pairwise tree: a short dependency chain
    for (int i = 0; i < width; ++i) lanes[i] += lanes[i + width];
  return lanes[0];
}

}  // namespace

// kc keeps the kc x nr packed B micro-panel at 24-32 KiB of the 48 KiB L1, beside the A micro-panel.
GemmKernels gemm_kernels_avx512() {
  return GemmKernels{"avx512 12x32 (8x48, 6x64 for few rows)", {{12, 32, 256, micro<12, 2>}, {8, 48, 160, micro<8, 3>},
                                      {6, 64, 128, micro<6, 4>}}, 3, dot_4x16};
}

}  // namespace convcore
