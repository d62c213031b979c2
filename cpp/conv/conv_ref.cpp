// Reference convolution: direct loops over NCHW, float and double. The oracle for the fast kernels.
#include "convcore/conv.h"
#include "convcore/threads.h"

namespace convcore {

template <typename T>
void conv2d_forward_ref(const ConvShape& s, const T* x, const T* w, const T* bias, T* y) {
  const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups, PQ = s.P * s.Q;
  const int nt = threads_for(s.N * s.K * PQ * Cg * s.R * s.S);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t nk = 0; nk < s.N * s.K; ++nk) {
    const int64_t n = nk / s.K, k = nk % s.K, g = k / Kg;
    const T* wk = w + k * Cg * s.R * s.S;          // (Cg, R, S)
    const T* xg = x + (n * s.C + g * Cg) * s.H * s.W;  // (Cg, H, W)
    T* yk = y + nk * PQ;                          // (P, Q)
    for (int64_t p = 0; p < s.P; ++p) {
      for (int64_t q = 0; q < s.Q; ++q) {
        T acc = 0;
        for (int64_t c = 0; c < Cg; ++c) {
          for (int64_t r = 0; r < s.R; ++r) {
            const int64_t h = p * s.stride_h - s.pad_h + r * s.dil_h;
            if (h < 0 || h >= s.H) continue;
            for (int64_t t = 0; t < s.S; ++t) {
              const int64_t v = q * s.stride_w - s.pad_w + t * s.dil_w;
              if (v < 0 || v >= s.W) continue;
              acc += xg[(c * s.H + h) * s.W + v] * wk[(c * s.R + r) * s.S + t];
            }
          }
        }
        yk[p * s.Q + q] = bias ? acc + bias[k] : acc;
      }
    }
  }
}

template <typename T>
void conv2d_backward_input_ref(const ConvShape& s, const T* dy, const T* w, T* dx) {
  const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups, HW = s.H * s.W;
  const int nt = threads_for(s.N * s.K * s.P * s.Q * Cg * s.R * s.S);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t nc = 0; nc < s.N * s.C; ++nc) {
    const int64_t n = nc / s.C, c = nc % s.C, g = c / Cg, cg = c % Cg;
    T* dxc = dx + nc * HW;  // (H, W), owned by this iteration
    for (int64_t i = 0; i < HW; ++i) dxc[i] = 0;
    for (int64_t k = g * Kg; k < (g + 1) * Kg; ++k) {
      const T* dyk = dy + (n * s.K + k) * s.P * s.Q;      // (P, Q)
      const T* wkc = w + (k * Cg + cg) * s.R * s.S;       // (R, S)
      for (int64_t p = 0; p < s.P; ++p) {
        for (int64_t q = 0; q < s.Q; ++q) {
          const T d = dyk[p * s.Q + q];
          for (int64_t r = 0; r < s.R; ++r) {
            const int64_t h = p * s.stride_h - s.pad_h + r * s.dil_h;
            if (h < 0 || h >= s.H) continue;
            for (int64_t t = 0; t < s.S; ++t) {
              const int64_t v = q * s.stride_w - s.pad_w + t * s.dil_w;
              if (v < 0 || v >= s.W) continue;
              dxc[h * s.W + v] += d * wkc[r * s.S + t];
            }
          }
        }
      }
    }
  }
}

template <typename T>
void conv2d_backward_weight_ref(const ConvShape& s, const T* dy, const T* x, T* dw) {
  const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups, RS = s.R * s.S;
  const int nt = threads_for(s.N * s.K * s.P * s.Q * Cg * RS);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t kc = 0; kc < s.K * Cg; ++kc) {
    const int64_t k = kc / Cg, cg = kc % Cg, c = (k / Kg) * Cg + cg;
    for (int64_t r = 0; r < s.R; ++r) {
      for (int64_t t = 0; t < s.S; ++t) {
        T acc = 0;
        for (int64_t n = 0; n < s.N; ++n) {
          const T* dyk = dy + (n * s.K + k) * s.P * s.Q;
          const T* xc = x + (n * s.C + c) * s.H * s.W;
          for (int64_t p = 0; p < s.P; ++p) {
            const int64_t h = p * s.stride_h - s.pad_h + r * s.dil_h;
            if (h < 0 || h >= s.H) continue;
            for (int64_t q = 0; q < s.Q; ++q) {
              const int64_t v = q * s.stride_w - s.pad_w + t * s.dil_w;
              if (v < 0 || v >= s.W) continue;
              acc += dyk[p * s.Q + q] * xc[h * s.W + v];
            }
          }
        }
        dw[kc * RS + r * s.S + t] = acc;
      }
    }
  }
}

template <typename T>
void conv2d_backward_bias_ref(const ConvShape& s, const T* dy, T* db) {
  const int64_t PQ = s.P * s.Q;
  const int nt = threads_for(s.N * s.K * PQ);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t k = 0; k < s.K; ++k) {
    T acc = 0;
    for (int64_t n = 0; n < s.N; ++n) {
      const T* dyk = dy + (n * s.K + k) * PQ;
      for (int64_t i = 0; i < PQ; ++i) acc += dyk[i];
    }
    db[k] = acc;
  }
}

#define CONVCORE_INSTANTIATE(T)                                                              \
  template void conv2d_forward_ref<T>(const ConvShape&, const T*, const T*, const T*, T*); \
  template void conv2d_backward_input_ref<T>(const ConvShape&, const T*, const T*, T*);    \
  template void conv2d_backward_weight_ref<T>(const ConvShape&, const T*, const T*, T*);   \
  template void conv2d_backward_bias_ref<T>(const ConvShape&, const T*, T*);
CONVCORE_INSTANTIATE(float)
CONVCORE_INSTANTIATE(double)
#undef CONVCORE_INSTANTIATE

}  // namespace convcore
