// Max and average pooling, forward and backward, on planes: x (planes, H, W) with planes = N*C
// (NCHW; 1-D pooling is H == 1, KH == 1). PyTorch semantics: row-major scan, first max wins ties,
// NaN propagates (the last NaN's position is kept, as PyTorch does), padding never wins a max.
#pragma once
#include <cstdint>

namespace convcore {

// One window sweep over an (H, W) plane. OH/OW come from the Python output-size helper, which keeps
// every window starting inside the input or the left padding (so every window has an input element).
struct PoolGeometry {
  int64_t H, W, OH, OW;
  int64_t KH, KW, SH, SW, PH, PW;
};

// ---- Reference kernels (float and double), parallel over planes: the oracle and the fallback. ----

// y (planes, OH, OW); indices (planes, OH, OW): flat ih*W + iw of the max inside its plane.
template <typename T>
void max_pool2d_ref(const T* x, T* y, int64_t* indices, int64_t planes, const PoolGeometry& g);
// dx (planes, H, W) = scatter-add of dy through indices.
template <typename T>
void max_pool2d_backward_ref(const T* dy, const int64_t* indices, T* dx, int64_t planes, const PoolGeometry& g);
// Divisor: the window clipped to the padded input when count_include_pad, else clipped to the input. A window of at
// most kFloatSumWindow elements (KH x KW) is summed in T in row-major order, as PyTorch's avg_pool2d sums it; a larger
// one in double (a float sum over a 224 x 224 plane, a global average, drifted ~5e-6 on random data and 5e-4 for a
// constant 0.1, where PyTorch's adaptive pooling sums in double); the vector kernels take only the smaller ones.
constexpr int64_t kFloatSumWindow = 256;
template <typename T>
void avg_pool2d_ref(const T* x, T* y, int64_t planes, const PoolGeometry& g, bool count_include_pad);
template <typename T>
void avg_pool2d_backward_ref(const T* dy, T* dx, int64_t planes, const PoolGeometry& g, bool count_include_pad);

namespace {  // its own copy in each unit (an inline function must not be merged across ISA units)
// The average pooling divisor, a window's rows x cols, as T. With count_include_pad both are bounded by the padded
// input and the kernel only (each up to about 2**41), so their product can pass int64 (a 2**32 x 2**32 window
// wrapped to 0): past it the product is taken in double.
template <typename T>
inline T window_divisor(int64_t rows, int64_t cols) {
  int64_t area;
  return __builtin_mul_overflow(rows, cols, &area) ? static_cast<T>(static_cast<double>(rows) * cols)
                                                   : static_cast<T>(area);
}
}  // namespace

// ---- Compact argmax: one byte per output, the offset kh*KW + kw of the max inside its window, ----
// counted from the window origin (oh*SH - PH, ow*SW - PW), padding included. Needs KH*KW <= 256. Where offsets
// is null (an inference call, which routes no gradient), the forwards compute the outputs alone (any window).
constexpr int64_t kMaxCompactWindow = 256;

// indices (planes, OH, OW) int64 from offsets (planes, OH, OW) uint8.
void offsets_to_indices(const uint8_t* offsets, int64_t* indices, int64_t planes, const PoolGeometry& g);

// Entry points with compact argmax. float runs the selected ISA's fast paths where the geometry has
// one (else the portable generic loops); double runs the generic loops. Same results as the references.
void max_pool2d_compact(const float* x, float* y, uint8_t* offsets, int64_t planes, const PoolGeometry& g);
void max_pool2d_compact(const double* x, double* y, uint8_t* offsets, int64_t planes, const PoolGeometry& g);
// dx (planes, H, W) written in full. relu_output: null, or the pooled output y (planes, OH, OW) of a ReLU's output,
// whose backward is folded in: dy counts only where y > 0 (the argmax input is > 0 exactly there), as
// relu_backward(dy, y) before the routing gives, in one pass over a few planes at a time.
void max_pool2d_backward_compact(const float* dy, const uint8_t* offsets, float* dx, int64_t planes,
                                 const PoolGeometry& g, const float* relu_output = nullptr);
void max_pool2d_backward_compact(const double* dy, const uint8_t* offsets, double* dx, int64_t planes,
                                 const PoolGeometry& g, const double* relu_output = nullptr);
// float: 2x2/2 fast path where it applies, else the reference.
void avg_pool2d(const float* x, float* y, int64_t planes, const PoolGeometry& g, bool count_include_pad);
void avg_pool2d_backward(const float* dy, float* dx, int64_t planes, const PoolGeometry& g, bool count_include_pad);

// True for 2x2 windows, stride 2, no padding (floor or ceil mode alike: OH == H/2, OW == W/2).
bool is_2x2_stride2(const PoolGeometry& g);

// ---- Per-ISA fast paths (float), on a run of `planes` planes of (H, W); OH = H/2, OW = W/2. ----
struct PoolKernels {
  const char* name;
  // 2x2 stride 2, no padding. y, offsets (planes, OH, OW); offsets in {0, 1, 2, 3}, or null.
  void (*max_2x2s2_forward)(const float* x, float* y, uint8_t* offsets, int64_t planes, int64_t H, int64_t W);
  // dx (planes, H, W): every element written exactly once (an odd last row / column gets 0).
  void (*max_2x2s2_backward)(const float* dy, const uint8_t* offsets, float* dx, int64_t planes, int64_t H,
                             int64_t W);
  void (*avg_2x2s2_forward)(const float* x, float* y, int64_t planes, int64_t H, int64_t W);
  void (*avg_2x2s2_backward)(const float* dy, float* dx, int64_t planes, int64_t H, int64_t W);
  // Any window (KH*KW <= 256) with column stride SW == 2: overlapping windows, padding, ceil_mode.
  // y, offsets (planes, OH, OW; offsets may be null). nullptr where the ISA has no such path (the generic loops
  // run instead).
  void (*max_stride2_forward)(const float* x, float* y, uint8_t* offsets, int64_t planes, const PoolGeometry& g);
  // Average pooling with column stride SW == 2, any window; nullptr where the ISA has none (reference runs).
  void (*avg_stride2_forward)(const float* x, float* y, int64_t planes, const PoolGeometry& g,
                              bool count_include_pad);
  // Its backward (dx (planes, H, W) written whole, each element summed in the reference's order); nullptr where
  // the ISA has none (the reference runs). (Max pooling's backward routes one value per output: the portable
  // loop was as fast as a vector pass per window element on AVX-512, and faster on AVX2.)
  void (*avg_stride2_backward)(const float* dy, float* dx, int64_t planes, const PoolGeometry& g,
                               bool count_include_pad);
};

PoolKernels pool_kernels_scalar();
PoolKernels pool_kernels_avx2();
PoolKernels pool_kernels_avx512();

}  // namespace convcore
