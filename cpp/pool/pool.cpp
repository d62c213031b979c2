// Pooling entry points with compact argmax: the selected ISA's 2x2/2 fast paths, else portable generic loops.
#include <algorithm>
#include <vector>

#include "convcore/checked.h"
#include "convcore/dispatch.h"
#include "convcore/ops.h"
#include "convcore/pool.h"
#include "convcore/threads.h"
#include "pool_rows.h"

namespace convcore {
namespace {

constexpr int64_t kSerialBelow = 1 << 15;  // elements touched; smaller calls run on one thread

// Runs fn(first_plane, plane_count) on contiguous runs of planes, one run per thread (through parallel_for, which
// brings an exception such as std::bad_alloc out of the OpenMP region to the caller).
template <typename Fn>
void for_plane_runs(int64_t planes, int64_t work_per_plane, Fn fn) {
  const int64_t threads = threads_for(saturating_mul(planes, work_per_plane), kSerialBelow);
  const int nt = static_cast<int>(std::min<int64_t>(threads, std::max<int64_t>(planes, 1)));
  parallel_for(nt, nt, [&](int64_t t) {
    const int64_t begin = planes * t / nt, end = planes * (t + 1) / nt;
    if (end > begin) fn(begin, end - begin);
  });
}

// The stride-2 average pooling backward keeps a row of KW + W + PW + 16 floats per thread (avg_stride2_backward_rows);
// windows and paddings of more than this or W floats (far past any image: a 2**33 window asked for 48 GiB) go to the
// reference loops, which visit only each window's part inside the input.
constexpr int64_t kMaxSpreadRow = int64_t(1) << 20;

template <typename T>
void max_pool2d_generic(const T* x, T* y, uint8_t* offsets, int64_t planes, const PoolGeometry& g) {
  for (int64_t p = 0; p < planes; ++p)
    for (int64_t oh = 0; oh < g.OH; ++oh)
      for (int64_t ow = 0; ow < g.OW; ++ow) {
        const int64_t o = (p * g.OH + oh) * g.OW + ow;
        max_window(x + p * g.H * g.W, g, oh, ow, y + o, offsets ? offsets + o : nullptr);
      }
}

// Each output's dy added to the input element its offset names (offsets past the window, which no forward
// stores, are ignored), outputs in order. Window rows and columns of the 256 possible offsets come from a table: a
// division and a remainder per output cost ~half of a 3x3/2 backward. Windows inside the plane (no padding or
// ceil_mode cut) take the element's plane offset from the window's origin from a table and skip the bounds tests
// (ResNet's stem pooling backward 1.63x, AlexNet's 1.67x on AMD Zen 5, 2 threads).
template <typename T>
void max_pool2d_backward_generic(const T* dy, const uint8_t* offsets, T* dx, int64_t planes, const PoolGeometry& g) {
  const int64_t window = g.KH * g.KW;
  int16_t row_of[256], col_of[256];
  int64_t delta[256];
  for (int k = 0; k < 256; ++k) {
    const bool inside = k < window;
    row_of[k] = static_cast<int16_t>(inside ? k / g.KW : -1);
    col_of[k] = static_cast<int16_t>(inside ? k % g.KW : 0);
    delta[k] = inside ? row_of[k] * g.W + col_of[k] : 0;
  }
  const InnerWindows inner_rows = inner_windows(g.H, g.PH, g.SH, g.KH, g.OH);
  const InnerWindows inner_cols = inner_windows(g.W, g.PW, g.SW, g.KW, g.OW);
  for (int64_t p = 0; p < planes; ++p) {
    T* dxp = dx + p * g.H * g.W;
    std::fill(dxp, dxp + g.H * g.W, T(0));
    const auto checked = [&](int64_t oh, int64_t ow) {
      const int64_t o = (p * g.OH + oh) * g.OW + ow;
      const uint8_t k = offsets[o];
      const int64_t ih = oh * g.SH - g.PH + row_of[k], iw = ow * g.SW - g.PW + col_of[k];
      if (row_of[k] >= 0 && ih >= 0 && ih < g.H && iw >= 0 && iw < g.W) dxp[ih * g.W + iw] += dy[o];
    };
    for (int64_t oh = 0; oh < g.OH; ++oh) {
      if (oh < inner_rows.begin || oh >= inner_rows.end) {
        for (int64_t ow = 0; ow < g.OW; ++ow) checked(oh, ow);
        continue;
      }
      for (int64_t ow = 0; ow < inner_cols.begin; ++ow) checked(oh, ow);
      const int64_t row = (p * g.OH + oh) * g.OW;
      const int64_t origin = (oh * g.SH - g.PH) * g.W - g.PW;  // of window 0, were it inside
      for (int64_t ow = inner_cols.begin; ow < inner_cols.end; ++ow) {
        const uint8_t k = offsets[row + ow];
        if (k < window) dxp[origin + ow * g.SW + delta[k]] += dy[row + ow];
      }
      for (int64_t ow = inner_cols.end; ow < g.OW; ++ow) checked(oh, ow);
    }
  }
}

}  // namespace

bool is_2x2_stride2(const PoolGeometry& g) {
  return g.KH == 2 && g.KW == 2 && g.SH == 2 && g.SW == 2 && g.PH == 0 && g.PW == 0 && g.OH == g.H / 2 &&
         g.OW == g.W / 2;
}

void max_pool2d_compact(const double* x, double* y, uint8_t* offsets, int64_t planes, const PoolGeometry& g) {
  for_plane_runs(planes, saturating_mul(g.OH, g.OW, g.KH, g.KW), [&](int64_t first, int64_t count) {
    const int64_t in = first * g.H * g.W, out = first * g.OH * g.OW;
    max_pool2d_generic(x + in, y + out, offsets ? offsets + out : nullptr, count, g);
  });
}

void max_pool2d_compact(const float* x, float* y, uint8_t* offsets, int64_t planes, const PoolGeometry& g) {
  const PoolKernels& k = kernels().pool;
  const bool two_by_two = is_2x2_stride2(g), stride2 = g.SW == 2 && k.max_stride2_forward != nullptr;
  for_plane_runs(planes, saturating_mul(g.OH, g.OW, g.KH, g.KW), [&](int64_t first, int64_t count) {
    const int64_t in = first * g.H * g.W, out = first * g.OH * g.OW;
    uint8_t* const run_offsets = offsets ? offsets + out : nullptr;
    if (two_by_two)
      k.max_2x2s2_forward(x + in, y + out, run_offsets, count, g.H, g.W);
    else if (stride2)
      k.max_stride2_forward(x + in, y + out, run_offsets, count, g);
    else
      max_pool2d_generic(x + in, y + out, run_offsets, count, g);
  });
}

namespace {

// The routing of a run of planes, route(dy, offsets, dx, planes), given dy itself or, with a ReLU's pooled output,
// dy masked to where that output is > 0: a few planes at a time (about 16 KiB of dy), so that the masked copy is
// written and read back in L1.
template <typename T, typename Route>
void route_planes(const T* dy, const uint8_t* offsets, T* dx, int64_t planes, const PoolGeometry& g,
                  const T* relu_output, const Route& route) {
  if (relu_output == nullptr) {
    route(dy, offsets, dx, planes);
    return;
  }
  const int64_t out = g.OH * g.OW, step = std::max<int64_t>(1, 4096 / out);
  std::vector<T> masked(static_cast<size_t>(std::min(step, planes) * out));
  for (int64_t p = 0; p < planes; p += step) {
    const int64_t count = std::min(step, planes - p), o = p * out;
    relu_backward(dy + o, relu_output + o, masked.data(), count * out);  // a few planes: one thread
    route(masked.data(), offsets + o, dx + p * g.H * g.W, count);
  }
}

}  // namespace

void max_pool2d_backward_compact(const double* dy, const uint8_t* offsets, double* dx, int64_t planes,
                                 const PoolGeometry& g, const double* relu_output) {
  for_plane_runs(planes, std::max(g.H * g.W, g.OH * g.OW), [&](int64_t first, int64_t count) {
    const int64_t in = first * g.H * g.W, out = first * g.OH * g.OW;
    route_planes(dy + out, offsets + out, dx + in, count, g, relu_output ? relu_output + out : nullptr,
                 [&](const double* d, const uint8_t* o, double* x, int64_t n) {
                   max_pool2d_backward_generic(d, o, x, n, g);
                 });
  });
}

void max_pool2d_backward_compact(const float* dy, const uint8_t* offsets, float* dx, int64_t planes,
                                 const PoolGeometry& g, const float* relu_output) {
  const bool fast = is_2x2_stride2(g);
  const auto kernel = kernels().pool.max_2x2s2_backward;
  for_plane_runs(planes, std::max(g.H * g.W, g.OH * g.OW), [&](int64_t first, int64_t count) {
    const int64_t in = first * g.H * g.W, out = first * g.OH * g.OW;
    route_planes(dy + out, offsets + out, dx + in, count, g, relu_output ? relu_output + out : nullptr,
                 [&](const float* d, const uint8_t* o, float* x, int64_t n) {
                   if (fast)
                     kernel(d, o, x, n, g.H, g.W);
                   else
                     max_pool2d_backward_generic(d, o, x, n, g);
                 });
  });
}

void avg_pool2d(const float* x, float* y, int64_t planes, const PoolGeometry& g, bool count_include_pad) {
  const PoolKernels& k = kernels().pool;
  if (is_2x2_stride2(g)) {
    for_plane_runs(planes, g.H * g.W, [&](int64_t first, int64_t count) {
      k.avg_2x2s2_forward(x + first * g.H * g.W, y + first * g.OH * g.OW, count, g.H, g.W);
    });
  } else if (g.SW == 2 && k.avg_stride2_forward != nullptr && saturating_mul(g.KH, g.KW) <= kFloatSumWindow) {
    for_plane_runs(planes, saturating_mul(g.OH, g.OW, g.KH, g.KW), [&](int64_t first, int64_t count) {
      k.avg_stride2_forward(x + first * g.H * g.W, y + first * g.OH * g.OW, count, g, count_include_pad);
    });
  } else {
    avg_pool2d_ref(x, y, planes, g, count_include_pad);
  }
}

void avg_pool2d_backward(const float* dy, float* dx, int64_t planes, const PoolGeometry& g, bool count_include_pad) {
  const PoolKernels& k = kernels().pool;
  if (is_2x2_stride2(g)) {
    for_plane_runs(planes, g.H * g.W, [&](int64_t first, int64_t count) {
      k.avg_2x2s2_backward(dy + first * g.OH * g.OW, dx + first * g.H * g.W, count, g.H, g.W);
    });
  } else if (g.SW == 2 && k.avg_stride2_backward != nullptr && g.KW + g.PW <= std::max(kMaxSpreadRow, g.W)) {
    const int64_t work = std::max(g.H * g.W, saturating_mul(g.OH, g.OW, g.KH, g.KW));
    for_plane_runs(planes, work, [&](int64_t first, int64_t count) {
      k.avg_stride2_backward(dy + first * g.OH * g.OW, dx + first * g.H * g.W, count, g, count_include_pad);
    });
  } else {
    avg_pool2d_backward_ref(dy, dx, planes, g, count_include_pad);
  }
}

}  // namespace convcore
