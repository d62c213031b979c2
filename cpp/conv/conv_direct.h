// Direct convolution for layers with few taps and filters (stride 1, no dilation, one group; e.g. LeNet's and
// ResNet-20's CIFAR stage): vectors along the output row, a block of KB filters x QV vectors in registers, the
// image zero-padded once into a per-image buffer so the loops carry no bounds checks. No im2col: each input value
// is loaded once per (tap, filter block) instead of being copied R*S times. Included by each ISA's translation
// unit (conv_direct_<isa>.cpp), which instantiates it with its vector width; the anonymous namespace keeps each
// copy in its own unit (the linker must not merge an AVX-512 copy into the AVX2 path).
#pragma once
#include <algorithm>
#include <cstring>
#include <vector>

#include "convcore/conv.h"
#include "convcore/threads.h"

namespace convcore {
namespace {

// Each output element sums its taps in (c, r, t) order, adds the bias, then applies ReLU (keeping NaN): the same
// order whatever the thread count.
template <int VL, int KB, int QV>
void direct_forward(const ConvShape& s, const float* x, const float* w, const float* bias, bool relu, float* y) {
  typedef float vec __attribute__((vector_size(4 * VL)));
  const int64_t C = s.C, K = s.K, R = s.R, S = s.S, P = s.P, Q = s.Q, H = s.H, W = s.W;
  const int64_t CRS = C * R * S, k_blocks = (K + KB - 1) / KB, step = int64_t(VL) * QV;
  const int64_t q_span = (Q + step - 1) / step * step;
  const int64_t Hp = H + 2 * s.pad_h, Wp = std::max(W + 2 * s.pad_w, q_span + S - 1);
  // weights as [k block][c][r][t][KB], zero rows past K: the KB weights of one tap are adjacent
  std::vector<float> wp(static_cast<size_t>(k_blocks * CRS * KB), 0.0f);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t i = 0; i < CRS; ++i) wp[((k / KB) * CRS + i) * KB + k % KB] = w[k * CRS + i];
  parallel_for(s.N, threads_for(s.N * K * P * Q * CRS), [&](int64_t n) {
    std::vector<float> xp(static_cast<size_t>(C * Hp * Wp), 0.0f);
    for (int64_t c = 0; c < C; ++c)
      for (int64_t h = 0; h < H; ++h)
        std::memcpy(&xp[(c * Hp + h + s.pad_h) * Wp + s.pad_w], x + ((n * C + c) * H + h) * W, W * sizeof(float));
    float* yn = y + n * K * P * Q;
    for (int64_t p = 0; p < P; ++p) {
      for (int64_t q0 = 0; q0 < Q; q0 += step) {
        for (int64_t kb = 0; kb < k_blocks; ++kb) {
          vec acc[KB][QV];
          for (int i = 0; i < KB; ++i)
            for (int v = 0; v < QV; ++v) acc[i][v] = vec{};
          const float* wk = &wp[kb * CRS * KB];
          for (int64_t c = 0; c < C; ++c) {
            for (int64_t r = 0; r < R; ++r) {
              const float* row = &xp[(c * Hp + p + r) * Wp + q0];
              for (int64_t t = 0; t < S; ++t, wk += KB) {
                vec xv[QV];
                for (int v = 0; v < QV; ++v) std::memcpy(&xv[v], row + t + v * VL, sizeof(vec));
                for (int i = 0; i < KB; ++i)
                  for (int v = 0; v < QV; ++v) acc[i][v] += xv[v] * wk[i];
              }
            }
          }
          for (int i = 0; i < KB && kb * KB + i < K; ++i) {
            const int64_t k = kb * KB + i;
            const float b = bias ? bias[k] : 0.0f;
            for (int v = 0; v < QV; ++v) {
              const int64_t q = q0 + v * VL, count = std::min<int64_t>(VL, Q - q);
              if (count <= 0) break;
              vec o = acc[i][v] + b;
              if (relu) o = ((o > 0) | (o != o)) ? o : vec{};  // lane-wise select, NaN kept
              std::memcpy(yn + (k * P + p) * Q + q, &o, count * sizeof(float));
            }
          }
        }
      }
    }
  });
}

// Output rows up to one vector wide use one vector per row and more filters per block.
template <int VL, int KB_NARROW, int KB_WIDE, int QV_WIDE>
void direct_forward_any(const ConvShape& s, const float* x, const float* w, const float* bias, bool relu, float* y) {
  if (s.Q <= VL)
    direct_forward<VL, KB_NARROW, 1>(s, x, w, bias, relu, y);
  else
    direct_forward<VL, KB_WIDE, QV_WIDE>(s, x, w, bias, relu, y);
}

}  // namespace
}  // namespace convcore
