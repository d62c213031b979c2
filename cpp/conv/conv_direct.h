// Direct convolution for layers with few taps and filters (stride 1, no dilation, one group; e.g. LeNet's and
// ResNet-20's CIFAR stage): vectors along the output row, a block of KB filters x QV vectors in registers, the
// image zero-padded once into a per-image buffer so the loops carry no bounds checks. No im2col: each input value
// is loaded once per (tap, filter block) instead of being copied R*S times. Included by each ISA's translation
// unit (conv_direct_<isa>.cpp), which instantiates it with its vector width; the anonymous namespace keeps each
// copy in its own unit (the linker must not merge an AVX-512 copy into the AVX2 path).
#pragma once
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "convcore/conv.h"
#include "convcore/threads.h"

namespace convcore {
namespace {

// Copies one image x (C planes of H x W) into the interior of its zero-padded copy xp (C planes of Hp x Wp, the
// image at row pad_h, column pad_w). Only the interior is written, so a buffer reused for the next image keeps its
// zero padding.
inline void pad_image(const ConvShape& s, const float* x, int64_t Hp, int64_t Wp, float* xp) {
  for (int64_t c = 0; c < s.C; ++c)
    for (int64_t h = 0; h < s.H; ++h)
      std::memcpy(xp + (c * Hp + h + s.pad_h) * Wp + s.pad_w, x + (c * s.H + h) * s.W, s.W * sizeof(float));
}

// Stores the first `count` lanes (1 <= count <= VL) of v at dst: a masked store where the unit's ISA has one (a
// variable-length memcpy cost ~30 cycles a store, a third of LeNet conv1's forward with its 28-wide rows).
template <int VL, typename Vec>
inline void store_first(float* dst, const Vec& v, int64_t count) {
  if (count == VL) {
    std::memcpy(dst, &v, sizeof(Vec));
    return;
  }
#if defined(__AVX512F__)
  if constexpr (VL == 16) {
    _mm512_mask_storeu_ps(dst, static_cast<__mmask16>((1u << count) - 1), reinterpret_cast<const __m512&>(v));
    return;
  }
#endif
#if defined(__AVX2__)
  if constexpr (VL == 8) {
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_maskstore_ps(dst, _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count)), lanes),
                        reinterpret_cast<const __m256&>(v));
    return;
  }
#endif
  for (int64_t j = 0; j < count; ++j) dst[j] = v[j];
}

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
  // images in contiguous chunks, one per thread, each with one padded buffer (the images are independent)
  const int nt = threads_for(s.N * K * P * Q * CRS);
  const int64_t chunks = std::min<int64_t>(s.N, nt);
  parallel_for(chunks, nt, [&](int64_t chunk) {
    std::vector<float> xp(static_cast<size_t>(C * Hp * Wp), 0.0f);
    for (int64_t n = chunk * s.N / chunks; n < (chunk + 1) * s.N / chunks; ++n) {
      pad_image(s, x + n * C * H * W, Hp, Wp, xp.data());
      float* yn = y + n * K * P * Q;
      for (int64_t p = 0; p < P; ++p) {
        // kernel rows that read image rows (the others read only zero padding)
        const int64_t r_lo = std::max<int64_t>(0, s.pad_h - p), r_hi = std::min(R, H + s.pad_h - p);
        for (int64_t q0 = 0; q0 < Q; q0 += step) {
          for (int64_t kb = 0; kb < k_blocks; ++kb) {
            vec acc[KB][QV];
            for (int i = 0; i < KB; ++i)
              for (int v = 0; v < QV; ++v) acc[i][v] = vec{};
            for (int64_t c = 0; c < C; ++c) {
              for (int64_t r = r_lo; r < r_hi; ++r) {
                const float* row = &xp[(c * Hp + p + r) * Wp + q0];
                const float* wk = &wp[((kb * C + c) * R + r) * S * KB];
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
                store_first<VL>(yn + (k * P + p) * Q + q, o, count);
              }
            }
          }
        }
      }
    }
  });
}

// Weight gradient of the same layers with S (kernel width) columns handled together: each work unit (a block of KB
// filters, one input channel c, one kernel row r) keeps KB x S vector accumulators (one load of dy per filter and
// of x per tap feed KB * S FMAs). The batch is cut into a fixed number of image chunks (at most 8) spread over the
// threads; a chunk takes its images one at a time, zero-padded into its own buffers (so every unit's data is in
// cache), and runs every unit on each, carrying the unit's accumulators from image to image. The chunks' sums are
// then added in chunk order and each accumulator's lanes in a fixed pairwise tree, so every dw element is summed
// in the same order whatever the thread count. Workspace per chunk: one padded image of x and of dy, and the
// accumulators (units x KB x S vectors).
template <int VL, int KB, int S>
void direct_backward_weight(const ConvShape& s, const float* dy, const float* x, float* dw) {
  typedef float vec __attribute__((vector_size(4 * VL)));
  const int64_t N = s.N, C = s.C, K = s.K, R = s.R, P = s.P, Q = s.Q, H = s.H, W = s.W;
  const int64_t q_span = (Q + VL - 1) / VL * VL, k_blocks = (K + KB - 1) / KB, K_pad = k_blocks * KB;
  const int64_t Hp = H + 2 * s.pad_h, Wp = std::max(W + 2 * s.pad_w, q_span + S - 1), units = k_blocks * C * R;
  const int64_t chunks = std::min<int64_t>(N, 8), per_chunk = units * KB * S * VL;
  // accumulators as floats (a std::vector of a vector-extension type would drop the vector attribute)
  std::vector<float> state(static_cast<size_t>(chunks * per_chunk), 0.0f);
  parallel_for(chunks, threads_for(N * K * P * Q * C * R * S), [&](int64_t chunk) {
    std::vector<float> xp(static_cast<size_t>(C * Hp * Wp), 0.0f), dyp(static_cast<size_t>(K_pad * P * q_span), 0.0f);
    float* sums = &state[chunk * per_chunk];
    for (int64_t n = chunk * N / chunks; n < (chunk + 1) * N / chunks; ++n) {
      pad_image(s, x + n * C * H * W, Hp, Wp, xp.data());  // interiors only: xp and dyp keep their zero padding
      for (int64_t k = 0; k < K; ++k)
        for (int64_t p = 0; p < P; ++p)
          std::memcpy(&dyp[(k * P + p) * q_span], dy + ((n * K + k) * P + p) * Q, Q * sizeof(float));
      for (int64_t unit = 0; unit < units; ++unit) {
        const int64_t kb = unit / (C * R), c = (unit / R) % C, r = unit % R;
        vec acc[KB][S];
        float* saved = sums + unit * KB * S * VL;
        std::memcpy(acc, saved, sizeof(acc));
        for (int64_t p = 0; p < P; ++p) {
          const float* xrow = &xp[(c * Hp + p + r) * Wp];
          const float* grow = &dyp[(kb * KB * P + p) * q_span];
          for (int64_t q0 = 0; q0 < q_span; q0 += VL) {
            vec g[KB], xv[S];
            for (int i = 0; i < KB; ++i) std::memcpy(&g[i], grow + i * P * q_span + q0, sizeof(vec));
            for (int t = 0; t < S; ++t) std::memcpy(&xv[t], xrow + q0 + t, sizeof(vec));
            for (int i = 0; i < KB; ++i)
              for (int t = 0; t < S; ++t) acc[i][t] += g[i] * xv[t];
          }
        }
        std::memcpy(saved, acc, sizeof(acc));
      }
    }
  });
  for (int64_t unit = 0; unit < units; ++unit) {
    const int64_t kb = unit / (C * R), c = (unit / R) % C, r = unit % R;
    for (int i = 0; i < KB && kb * KB + i < K; ++i)
      for (int t = 0; t < S; ++t) {
        const int64_t at = ((unit * KB + i) * S + t) * VL;
        alignas(64) float lanes[VL];
        std::memcpy(lanes, &state[at], sizeof(lanes));
        for (int64_t chunk = 1; chunk < chunks; ++chunk)
          for (int j = 0; j < VL; ++j) lanes[j] += state[chunk * per_chunk + at + j];
        for (int width = VL / 2; width >= 1; width /= 2)
          for (int j = 0; j < width; ++j) lanes[j] += lanes[j + width];
        dw[(((kb * KB + i) * C + c) * R + r) * S + t] = lanes[0];
      }
  }
}

// Instantiated for kernel widths 3 and 5 (conv2d_direct_weight_applies).
template <int VL, int KB3, int KB5>
void direct_backward_weight_any(const ConvShape& s, const float* dy, const float* x, float* dw) {
  if (s.S == 3)
    direct_backward_weight<VL, KB3, 3>(s, dy, x, dw);
  else
    direct_backward_weight<VL, KB5, 5>(s, dy, x, dw);
}

// Output rows up to one vector wide use one vector per row and more filters per block (half as many when that
// covers every filter, e.g. the 6 of LeNet conv2's input gradient).
template <int VL, int KB_NARROW, int KB_WIDE, int QV_WIDE>
void direct_forward_any(const ConvShape& s, const float* x, const float* w, const float* bias, bool relu, float* y) {
  if (s.Q <= VL && s.K <= KB_NARROW / 2)
    direct_forward<VL, KB_NARROW / 2, 1>(s, x, w, bias, relu, y);
  else if (s.Q <= VL)
    direct_forward<VL, KB_NARROW, 1>(s, x, w, bias, relu, y);
  else
    direct_forward<VL, KB_WIDE, QV_WIDE>(s, x, w, bias, relu, y);
}

}  // namespace
}  // namespace convcore
