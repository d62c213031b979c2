// Fast float32 convolution: blocked im2col packed straight into the SGEMM engine's B panels.
#include <algorithm>
#include <cstdlib>
#include <memory>
#include <vector>

#include "convcore/conv.h"
#include "convcore/gemm.h"
#include "convcore/threads.h"

namespace convcore {
namespace {

constexpr int kMaxNr = 32;  // the widest microkernel tile

// B = im2col of one image's group, (Cg*R*S) x (P*Q): B(c*R*S + r*S + t, p*Q + q) = x[c][p*sh - ph + r*dh][q*sw - pw + t*dw]
class Im2col final : public BPanelSource {
 public:
  Im2col(const ConvShape& s, const float* x) : s_(s), x_(x) {}
  void pack(int64_t k0, int64_t kc, int64_t n0, int64_t nc, int nr, float* Bp) const override {
    const int64_t RS = s_.R * s_.S;
    int64_t hbase[kMaxNr], wbase[kMaxNr];
    for (int64_t jp = 0; jp < nc; jp += nr) {
      const int64_t cols = std::min<int64_t>(nr, nc - jp);
      for (int64_t j = 0; j < cols; ++j) {
        const int64_t pix = n0 + jp + j;
        hbase[j] = (pix / s_.Q) * s_.stride_h - s_.pad_h;
        wbase[j] = (pix % s_.Q) * s_.stride_w - s_.pad_w;
      }
      float* panel = Bp + (jp / nr) * kc * nr;
      for (int64_t k = 0; k < kc; ++k) {
        const int64_t kk = k0 + k, c = kk / RS, r = (kk / s_.S) % s_.R, t = kk % s_.S;
        const float* xc = x_ + c * s_.H * s_.W;
        const int64_t dh = r * s_.dil_h, dw = t * s_.dil_w;
        float* dst = panel + k * nr;
        for (int64_t j = 0; j < cols; ++j) {
          const int64_t h = hbase[j] + dh, v = wbase[j] + dw;
          dst[j] = (h >= 0 && h < s_.H && v >= 0 && v < s_.W) ? xc[h * s_.W + v] : 0.0f;
        }
        for (int64_t j = cols; j < nr; ++j) dst[j] = 0.0f;
      }
    }
  }

 private:
  const ConvShape& s_;
  const float* x_;
};

// B = im2col transposed, (P*Q) x (Cg*R*S), for the weight gradient dW = dY x im2col(X)^T.
class Im2colT final : public BPanelSource {
 public:
  Im2colT(const ConvShape& s, const float* x) : s_(s), x_(x) {}
  void pack(int64_t k0, int64_t kc, int64_t n0, int64_t nc, int nr, float* Bp) const override {
    const int64_t RS = s_.R * s_.S;
    int64_t coff[kMaxNr], dh[kMaxNr], dw[kMaxNr];
    for (int64_t jp = 0; jp < nc; jp += nr) {
      const int64_t cols = std::min<int64_t>(nr, nc - jp);
      for (int64_t j = 0; j < cols; ++j) {
        const int64_t kk = n0 + jp + j;
        coff[j] = (kk / RS) * s_.H * s_.W;
        dh[j] = ((kk / s_.S) % s_.R) * s_.dil_h;
        dw[j] = (kk % s_.S) * s_.dil_w;
      }
      float* panel = Bp + (jp / nr) * kc * nr;
      for (int64_t k = 0; k < kc; ++k) {
        const int64_t pix = k0 + k;
        const int64_t hb = (pix / s_.Q) * s_.stride_h - s_.pad_h, wb = (pix % s_.Q) * s_.stride_w - s_.pad_w;
        float* dst = panel + k * nr;
        for (int64_t j = 0; j < cols; ++j) {
          const int64_t h = hb + dh[j], v = wb + dw[j];
          dst[j] = (h >= 0 && h < s_.H && v >= 0 && v < s_.W) ? x_[coff[j] + h * s_.W + v] : 0.0f;
        }
        for (int64_t j = cols; j < nr; ++j) dst[j] = 0.0f;
      }
    }
  }

 private:
  const ConvShape& s_;
  const float* x_;
};

bool is_pointwise(const ConvShape& s) {
  return s.R == 1 && s.S == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_h == 0 && s.pad_w == 0;
}

// Runs task(i) for i in [0, tasks): over threads when there are enough tasks, else one by one so that each
// task's GEMMs use the threads. Either way every task computes the same bits.
template <typename Task>
void for_each_task(int64_t tasks, int64_t work, const Task& task) {
  const int nt = threads_for(work);
  if (nt > 1 && tasks >= nt) {
    parallel_for(tasks, nt, task);
  } else {
    for (int64_t i = 0; i < tasks; ++i) task(i);
  }
}

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};

}  // namespace

void conv2d_forward_fast(const ConvShape& s, const float* x, const float* w, const float* bias, bool relu,
                         float* y) {
  const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups, CRS = Cg * s.R * s.S, PQ = s.P * s.Q, HW = s.H * s.W;
  for_each_task(s.N * s.groups, s.N * s.K * PQ * CRS, [&](int64_t task) {
    const int64_t n = task / s.groups, g = task % s.groups;
    const float* xg = x + (n * s.C + g * Cg) * HW;
    float* yg = y + (n * s.K + g * Kg) * PQ;
    Epilogue epi;
    epi.bias = bias ? bias + g * Kg : nullptr;
    epi.bias_axis = bias ? Epilogue::Bias::per_row : Epilogue::Bias::none;
    epi.relu = relu;
    const float* wg = w + g * Kg * CRS;
    if (is_pointwise(s)) {
      sgemm(Trans::no, Kg, PQ, Cg, 1.0f, wg, CRS, MatrixB(Trans::no, xg, HW), 0.0f, yg, PQ, epi);
    } else {
      sgemm(Trans::no, Kg, PQ, CRS, 1.0f, wg, CRS, Im2col(s, xg), 0.0f, yg, PQ, epi);
    }
  });
}

void conv2d_backward_weight_fast(const ConvShape& s, const float* dy, const float* x, float* dw) {
  const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups, CRS = Cg * s.R * s.S, PQ = s.P * s.Q, HW = s.H * s.W;
  const int64_t wsize = s.K * CRS;
  if (s.N == 0) {
    std::fill(dw, dw + wsize, 0.0f);
    return;
  }
  // A fixed number of image chunks, each summing its images in order into its own partial; partials are then
  // added in chunk order. Neither depends on the thread count.
  const int64_t chunks = std::min<int64_t>(s.N, 8);
  std::unique_ptr<float, FreeDeleter> extra(
      chunks > 1 ? static_cast<float*>(std::malloc(sizeof(float) * (chunks - 1) * wsize)) : nullptr);
  if (chunks > 1 && !extra) throw std::bad_alloc();
  for_each_task(chunks, s.N * s.K * PQ * CRS, [&](int64_t chunk) {
    float* part = chunk == 0 ? dw : extra.get() + (chunk - 1) * wsize;
    const int64_t n0 = chunk * s.N / chunks, n1 = (chunk + 1) * s.N / chunks;
    for (int64_t n = n0; n < n1; ++n) {
      for (int64_t g = 0; g < s.groups; ++g) {
        const float* dyg = dy + (n * s.K + g * Kg) * PQ;
        const float* xg = x + (n * s.C + g * Cg) * HW;
        float* dwg = part + g * Kg * CRS;
        const float beta = n == n0 ? 0.0f : 1.0f;
        if (is_pointwise(s)) {
          sgemm(Trans::no, Trans::yes, Kg, Cg, PQ, 1.0f, dyg, PQ, xg, HW, beta, dwg, CRS);
        } else {
          sgemm(Trans::no, Kg, CRS, PQ, 1.0f, dyg, PQ, Im2colT(s, xg), beta, dwg, CRS);
        }
      }
    }
  });
  for (int64_t chunk = 1; chunk < chunks; ++chunk) {
    const float* part = extra.get() + (chunk - 1) * wsize;
    for (int64_t i = 0; i < wsize; ++i) dw[i] += part[i];
  }
}

void conv2d_backward_input_fast(const ConvShape& s, const float* dy, const float* w, float* dx) {
  const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups, RS = s.R * s.S, CRS = Cg * RS, PQ = s.P * s.Q;
  const int64_t HW = s.H * s.W;
  // columns per block: the (CRS x block) column buffer stays within 256 Ki floats (at least 16 columns)
  const int64_t block = std::min(PQ, std::max<int64_t>(16, (int64_t(1) << 18) / std::max<int64_t>(CRS, 1)));
  for_each_task(s.N, s.N * s.K * PQ * CRS, [&](int64_t n) {
    float* dxn = dx + n * s.C * HW;
    if (is_pointwise(s)) {
      for (int64_t g = 0; g < s.groups; ++g)
        sgemm(Trans::yes, Trans::no, Cg, PQ, Kg, 1.0f, w + g * Kg * CRS, CRS, dy + (n * s.K + g * Kg) * PQ, PQ,
              0.0f, dxn + g * Cg * HW, HW);
      return;
    }
    std::fill(dxn, dxn + s.C * HW, 0.0f);
    std::vector<float> col(static_cast<size_t>(CRS * block));
    for (int64_t g = 0; g < s.groups; ++g) {
      const float* dyg = dy + (n * s.K + g * Kg) * PQ;
      float* dxg = dxn + g * Cg * HW;
      for (int64_t j0 = 0; j0 < PQ; j0 += block) {
        const int64_t nb = std::min(block, PQ - j0);
        // col (CRS x nb) = W_g^T (CRS x Kg) x dY_g[:, j0:j0+nb]
        sgemm(Trans::yes, Trans::no, CRS, nb, Kg, 1.0f, w + g * Kg * CRS, CRS, dyg + j0, PQ, 0.0f, col.data(), nb);
        // col2im: scatter-add each column entry to the input pixel it was read from
        for (int64_t kk = 0; kk < CRS; ++kk) {
          const int64_t c = kk / RS, r = (kk / s.S) % s.R, t = kk % s.S;
          float* dxc = dxg + c * HW;
          const float* src = col.data() + kk * nb;
          for (int64_t j = 0; j < nb; ++j) {
            const int64_t pix = j0 + j;
            const int64_t h = (pix / s.Q) * s.stride_h - s.pad_h + r * s.dil_h;
            const int64_t v = (pix % s.Q) * s.stride_w - s.pad_w + t * s.dil_w;
            if (h >= 0 && h < s.H && v >= 0 && v < s.W) dxc[h * s.W + v] += src[j];
          }
        }
      }
    }
  });
}

}  // namespace convcore
