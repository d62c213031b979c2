// Blocked im2col into GEMM B panels, and its adjoint col2im (float and double); layouts documented in conv.h.
#include "convcore/conv.h"
#include "convcore/threads.h"

namespace convcore {

template <typename T>
void im2col_pack_panels(const ConvShape& s, const T* x, int64_t group, int64_t k0, int64_t kc, int64_t j0,
                        int64_t nb, int64_t nr, T* out) {
  const int64_t Cg = s.C / s.groups, PQ = s.P * s.Q;
  const int64_t panels = (nb + nr - 1) / nr;
  for (int64_t row = 0; row < kc; ++row) {
    const int64_t kk = k0 + row;
    const int64_t c = kk / (s.R * s.S), r = (kk / s.S) % s.R, t = kk % s.S;
    const int64_t h_off = r * s.dil_h - s.pad_h, w_off = t * s.dil_w - s.pad_w;
    // column j0 as (n, p, q), advanced one column at a time
    int64_t n = j0 / PQ, p = (j0 % PQ) / s.Q, q = j0 % s.Q;
    for (int64_t col = 0; col < panels * nr; ++col) {
      T v = T(0);
      if (col < nb) {
        const int64_t h = p * s.stride_h + h_off, w = q * s.stride_w + w_off;
        if (h >= 0 && h < s.H && w >= 0 && w < s.W) v = x[((n * s.C + group * Cg + c) * s.H + h) * s.W + w];
        if (++q == s.Q) {
          q = 0;
          if (++p == s.P) p = 0, ++n;
        }
      }
      out[(col / nr) * kc * nr + row * nr + col % nr] = v;
    }
  }
}

template <typename T>
void col2im_add(const ConvShape& s, const T* dcols, int64_t n, int64_t group, T* dx) {
  const int64_t Cg = s.C / s.groups, PQ = s.P * s.Q;
  const int nt = threads_for(Cg * s.R * s.S * PQ, 1 << 16);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t c = 0; c < Cg; ++c) {
    T* dxp = dx + (n * s.C + group * Cg + c) * s.H * s.W;  // (H, W) plane of dx[n, g*Cg + c]
    for (int64_t r = 0; r < s.R; ++r) {
      for (int64_t t = 0; t < s.S; ++t) {
        const T* drow = dcols + ((c * s.R + r) * s.S + t) * PQ;  // (P, Q) of this tap
        const int64_t h_off = r * s.dil_h - s.pad_h, w_off = t * s.dil_w - s.pad_w;
        for (int64_t p = 0; p < s.P; ++p) {
          const int64_t h = p * s.stride_h + h_off;
          if (h < 0 || h >= s.H) continue;
          for (int64_t q = 0; q < s.Q; ++q) {
            const int64_t w = q * s.stride_w + w_off;
            if (w >= 0 && w < s.W) dxp[h * s.W + w] += drow[p * s.Q + q];
          }
        }
      }
    }
  }
}

template void im2col_pack_panels<float>(const ConvShape&, const float*, int64_t, int64_t, int64_t, int64_t, int64_t,
                                        int64_t, float*);
template void im2col_pack_panels<double>(const ConvShape&, const double*, int64_t, int64_t, int64_t, int64_t,
                                         int64_t, int64_t, double*);
template void col2im_add<float>(const ConvShape&, const float*, int64_t, int64_t, float*);
template void col2im_add<double>(const ConvShape&, const double*, int64_t, int64_t, double*);

}  // namespace convcore
