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

}  // namespace

// kc keeps the kc x nr packed B micro-panel at 24-32 KiB of the 48 KiB L1, beside the A micro-panel.
GemmKernels gemm_kernels_avx512() {
  return GemmKernels{"avx512 12x32 (8x48, 6x64 for few rows)", {{12, 32, 256, micro<12, 2>}, {8, 48, 160, micro<8, 3>},
                                      {6, 64, 128, micro<6, 4>}}, 3};
}

}  // namespace convcore
