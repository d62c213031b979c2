// Convolution kernels on NCHW data (1-D convolution is the H == 1 case). Kernels trust their inputs: the Python
// layer validates shapes and computes P, Q with its one output-size helper.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <new>
#include <vector>

namespace convcore {

// x (N, C, H, W), w (K, C/groups, R, S), y (N, K, P, Q); every size int64.
struct ConvShape {
  int64_t N, C, H, W;       // input
  int64_t K, R, S;          // filters and their extent
  int64_t P, Q;             // output extent
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  int64_t groups;
};

// The layouts in which the fast forwards keep a layer's weights: regrouped by filter block (the direct and
// filter-vector kernels), transformed by Winograd F(2x2, 3x3) or F(4x4, 3x3) for the engine's products or for the
// fused kernel's, or packed as the A of the im2col and pointwise products (PackedA).
enum class ConvPacking : int { filter_blocks, winograd2, winograd4, winograd_fused, winograd_fused4, gemm_filters };

// The packed weights of one layer's fast forward, kept from call to call by an owner whose weights do not change (a
// frozen plan, src/bind_plan.cpp): the direct and filter-vector forwards regroup their weights by filter block, the
// Winograd forwards transform their filters, the GEMM forwards of one group pack them for the engine, on the first
// call, and each reads that copy from then on. A packing for each layout and block width asked (the filter block's,
// or the products' tile rows; a batch-1 layer's can follow the thread count, which a frozen plan's calls change:
// ThreadChoice), the kEntries used last kept; safe to share between threads.
class ConvWeightCache {
 public:
  using Packed = std::shared_ptr<const float>;
  static constexpr size_t kEntries = 3;
  // The packing of `floats` floats in `layout` for block width `block`: written by fill(float*) into a fresh 64-byte
  // aligned buffer where none is kept for the three; the holder keeps it alive.
  template <typename Fill>
  Packed get(ConvPacking layout, int64_t block, int64_t floats, const Fill& fill) {
    const std::lock_guard<std::mutex> lock(mutex_);
    auto kept = std::find_if(entries_.begin(), entries_.end(), [&](const Entry& e) {
      return e.layout == layout && e.block == block && e.floats == floats;
    });
    if (kept == entries_.end()) {
      void* p = std::aligned_alloc(64, static_cast<size_t>((floats * 4 + 63) / 64 * 64));
      if (!p) throw std::bad_alloc();
      std::shared_ptr<float> fresh(static_cast<float*>(p), std::free);
      fill(fresh.get());
      if (entries_.size() == kEntries) entries_.pop_back();  // the one used longest ago
      entries_.insert(entries_.begin(), Entry{layout, block, floats, std::move(fresh)});
    } else {
      std::rotate(entries_.begin(), kept, kept + 1);  // to the front: used last
    }
    return entries_.front().packed;
  }

 private:
  struct Entry {
    ConvPacking layout;
    int64_t block, floats;
    Packed packed;
  };
  std::mutex mutex_;
  std::vector<Entry> entries_;  // the one used last first
};

// Reference kernels (the oracle, and the float64 path): direct loops, parallel over independent output planes,
// each output element summed in a fixed order, so results do not depend on the thread count.
template <typename T>
void conv2d_forward_ref(const ConvShape& s, const T* x, const T* w, const T* bias /* K or null */, T* y);
template <typename T>
void conv2d_backward_input_ref(const ConvShape& s, const T* dy, const T* w, T* dx);
template <typename T>
void conv2d_backward_weight_ref(const ConvShape& s, const T* dy, const T* x, T* dw);
template <typename T>
void conv2d_backward_bias_ref(const ConvShape& s, const T* dy, T* db);

// Fast float32 kernels: blocked im2col on the SGEMM engine. The im2col columns of one block of output pixels are packed
// straight into the engine's B panels (Im2col as a BPanelSource), so the (C*R*S) x (P*Q) matrix is never materialised;
// 1x1 stride-1 unpadded convolutions use the input itself as B. Forward layers with few taps and filters run the direct
// kernel instead (see conv2d_direct_applies), 3x3 stride-1 ones of 16 to 64 channels and filters Winograd F(2x2, 3x3)
// or F(4x4, 3x3) fused in L1 (conv2d_winograd_fused_applies), larger 3x3 stride-1 ones Winograd F(2x2, 3x3) or F(4x4,
// 3x3) on the engine (conv2d_winograd_applies). Horizontally strided layers whose im2col reads each input element at
// least 4 times (7x7/2, 11x11/4) pack from a zero-padded copy of the image with each row split by phase modulo the
// stride, so every packed run is consecutive floats. Stride-1 input gradients run as a forward convolution of dy with
// the flipped, channel-swapped filters (the transposed-convolution route) unless that would pack more than twice the
// GEMM + col2im route's columns; the others by GEMM + col2im. The weight gradients of 3x3 stride-1 layers of 16 to 64
// channels and filters with at least 256 output tiles in the batch run Winograd F(2x2, 3x3) or F(4x4, 3x3) fused on
// AVX2 and AVX-512 (conv2d_winograd_fused_weight_applies); others multiply dY by the transposed im2col, whose panels
// the ISA's transposing packer writes from consecutive runs of a phase-split, zero-padded copy of the image (of x
// itself when unpadded and unstrided); or, where dW has at most 64 Ki floats and the taps as rows pad to no larger an
// area (ResNet-50 conv1: 147 taps, 64 filters; AlexNet conv1), the im2col by dY transposed, the taps as the rows, read
// in place by the gathered microkernel (one pointer per tap) against dY^T packed a block of whole output rows at a time
// (at most 64 Ki floats or 256 pixels' filters, whichever is more, or one row), dW's per-chunk partials transposed back
// at the end. Layers (not pointwise) with fewer than 256 output pixels per image fold the batch into one GEMM per
// group: the forward's N dimension (the result, Kg x N*P*Q floats, is then copied into y), the weight gradient's K
// dimension (dY packed as its A, Kg rounded up to the tile's rows x N*P*Q floats, and every image copied when padded or
// strided). Per-thread workspace: the engine's packed blocks (<= 384 x 960 floats of B, 144 x 384 of A), the copied
// image (strided forward, weight gradient), and for the input gradient one column block of at most max(256 Ki, 16 *
// C/groups * R * S) floats. Work is split over images when there are at least as many as threads, otherwise inside each
// GEMM; every result is bitwise identical at any thread count (the unfolded weight gradient sums a fixed number of
// per-chunk partials in a fixed order).
// cache, where not null, keeps the weights as the direct, filter-vector and Winograd routes pack or transform them
// (ConvWeightCache).
void conv2d_forward_fast(const ConvShape& s, const float* x, const float* w, const float* bias, bool relu, float* y,
                         ConvWeightCache* cache = nullptr);
void conv2d_backward_input_fast(const ConvShape& s, const float* dy, const float* w, float* dx);
// The weight gradient, and db where not null (the bits of conv2d_backward_bias_fast): the fused Winograd and direct
// kernels (direct, over filters) and the products taken image chunk by image chunk add the bias partials in their own
// pass over each image; elsewhere (depthwise, the batch folded, chunks of pixels) the bias gradient's own pass follows.
void conv2d_backward_weight_fast(const ConvShape& s, const float* dy, const float* x, float* dw, float* db);
// All of a layer's gradients: dw, and dx and db where not null; from one pass over the batch where
// conv_channel_vector_backward applies; else the weight gradient (with db), then the input gradient.
void conv2d_backward_fast(const ConvShape& s, const float* dy, const float* x, const float* w, float* dx, float* dw,
                          float* db);
// db[k] = sum of dy over (n, p, q): the batch in image_chunks(s) chunks, each summing 16 lane partials per
// filter in (n, p, q) order (per pixel where P*Q < 16); then the chunks in order and the lanes pairwise (the
// reference's one running sum is a serial chain of dependent adds, ~4 cycles an element). The weight-gradient
// kernels that pass over the same image chunks add the partials there (bias_partials_add), with the same bits.
void conv2d_backward_bias_fast(const ConvShape& s, const float* dy, float* db);
constexpr int kBiasLanes = 16;
// The fixed image chunks (at most 8) of the weight and bias gradients: the sums' order whatever the thread count.
inline int64_t image_chunks(const ConvShape& s) { return std::min<int64_t>(std::max<int64_t>(s.N, 1), 8); }
int64_t bias_partial_floats(const ConvShape& s);  // per chunk
// db from `chunks` chunks' partials (consecutive in parts; added into the first).
void bias_from_partials(const ConvShape& s, float* parts, int64_t chunks, float* db);
namespace {  // its own copy in each unit: an inline function must not be merged across ISA units
// part (one chunk's partials) += one image's dy (K planes of P*Q) for filters [k0, k1), its pixels [first, first +
// count) only: a run of pixels in order, after those before it. Each lane's sum is the same whatever the vector
// width; in the header, so that each ISA's kernels vectorise it with their own instructions (compiled for SSE2 alone
// it was 5.5% of LeNet conv1's forward+backward on AVX-512).
inline void bias_partials_add_pixels(const ConvShape& s, const float* dy_image, int64_t k0, int64_t k1, int64_t first,
                                     int64_t count, float* part) {
  const int64_t PQ = s.P * s.Q, end = first + count;
  if (PQ < kBiasLanes) {
    for (int64_t k = k0; k < k1; ++k)
      for (int64_t i = first; i < end; ++i) part[k * PQ + i] += dy_image[k * PQ + i];
    return;
  }
  for (int64_t k = k0; k < k1; ++k) {
    float lanes[kBiasLanes];  // a local copy: the compiler keeps it in registers (part might alias dy)
    std::copy(part + k * kBiasLanes, part + (k + 1) * kBiasLanes, lanes);
    const float* dk = dy_image + k * PQ;
    int64_t i = first;
    for (; i < end && i % kBiasLanes != 0; ++i) lanes[i % kBiasLanes] += dk[i];
    for (; i + kBiasLanes <= end; i += kBiasLanes)
      for (int j = 0; j < kBiasLanes; ++j) lanes[j] += dk[i + j];
    for (; i < end; ++i) lanes[i % kBiasLanes] += dk[i];
    std::copy(lanes, lanes + kBiasLanes, part + k * kBiasLanes);
  }
}

// bias_partials_add_pixels over all of the image's pixels.
inline void bias_partials_add(const ConvShape& s, const float* dy_image, int64_t k0, int64_t k1, float* part) {
  bias_partials_add_pixels(s, dy_image, k0, k1, 0, s.P * s.Q, part);
}

// parts[i] += the other chunks' element i for i in [lo, hi), chunk after chunk (chunks of per_chunk floats,
// consecutive): each element's fixed-order sum, in one contiguous pass per chunk (a range of them per thread gives the
// same bits). In the header, so that each ISA's kernels vectorise it with their own instructions.
inline void add_chunks_into_first(float* parts, int64_t chunks, int64_t per_chunk, int64_t lo, int64_t hi) {
  for (int64_t chunk = 1; chunk < chunks; ++chunk)
    for (int64_t i = lo; i < hi; ++i) parts[i] += parts[chunk * per_chunk + i];
}
}  // namespace

// Copies one image x (C planes of H x W) into the interior of its zero-padded copy xp (C planes of Hp x Wp, the
// image at row pad_h, column pad_w). Only the interior is written, so a buffer reused for the next image keeps its
// zero padding.
void pad_image(const ConvShape& s, const float* x, int64_t Hp, int64_t Wp, float* xp);
// The image as a kernel reading C planes of Hp x Wp sees it: x itself where that is already its layout (no padding,
// rows not widened), else its copy by pad_image in `buffer`, which is sized and zeroed on first use (a buffer kept
// for the next image keeps its zero padding).
const float* padded_image(const ConvShape& s, const float* x, int64_t Hp, int64_t Wp, std::vector<float>& buffer);

// Direct forward convolution (conv_direct.h), one per ISA in the dispatch table: stride 1, no dilation, one
// group, at most 400 taps (C*R*S) and 32 filters, not 1x1. Workspace: one zero-padded image per thread.
bool conv2d_direct_applies(const ConvShape& s);
using ConvDirectKernel = void (*)(const ConvShape& s, const float* x, const float* w, const float* bias, bool relu,
                                  float* y, ConvWeightCache* cache);
void conv2d_direct_forward_scalar(const ConvShape& s, const float* x, const float* w, const float* bias, bool relu,
                                  float* y, ConvWeightCache* cache);
void conv2d_direct_forward_avx2(const ConvShape& s, const float* x, const float* w, const float* bias, bool relu,
                                float* y, ConvWeightCache* cache);
void conv2d_direct_forward_avx512(const ConvShape& s, const float* x, const float* w, const float* bias, bool relu,
                                  float* y, ConvWeightCache* cache);
// Their weight gradient, for kernel widths 3 and 5 with at most 160 taps or at most 4 filters (the GEMM's M; both
// builds in one process, calls alternated, median of per-pair time ratios, AMD Zen 4, 2 threads, against the GEMM: 1
// filter of 32 x 3 x 3 on 64 x 64 n=32 3.4x, of 16 x 5 x 5 4.8x; 2 of 8 x 5 x 5 2.8x, 2 of 44 x 3 x 3 1.5x, 4 of 32 x 3
// x 3 1.7x; forced AVX2, 1 thread, 0.99-3.7x), and the bias gradient in the same pass where db is not null (the bits of
// conv2d_backward_bias_fast); workspace per image chunk (at most 8): one zero-padded image of x, the accumulators and
// the bias partials.
bool conv2d_direct_weight_applies(const ConvShape& s);
using ConvDirectWeightKernel = void (*)(const ConvShape& s, const float* dy, const float* x, float* dw, float* db);
void conv2d_direct_backward_weight_scalar(const ConvShape& s, const float* dy, const float* x, float* dw,
                                          float* db);
void conv2d_direct_backward_weight_avx2(const ConvShape& s, const float* dy, const float* x, float* dw,
                                        float* db);
void conv2d_direct_backward_weight_avx512(const ConvShape& s, const float* dy, const float* x, float* dw,
                                          float* db);
// Forward convolution vectorised over filters (conv_direct.h, filter_vector_forward), tried first: rows at most half a
// vector wide (horizontally strided ones up to a vector), more than half a vector of filters, one group, at most 144
// KiB of weights per filter block, any stride, padding and dilation. Returns false, doing nothing, where it does not
// apply. Workspace: the weights regrouped by filter block and one zero-padded image per thread; where AVX-512 runs
// Winograd's F(4, 5) and F(2, 5) along the rows (5-wide kernels at stride 1 on rows of 9 or 10 outputs, whole blocks of
// 10 output rows: LeNet-5's conv2), also the transformed weights and per thread one image's transformed input,
// products and outputs.
using ConvFilterVectorForwardKernel = bool (*)(const ConvShape& s, const float* x, const float* w, const float* bias,
                                               bool relu, float* y, ConvWeightCache* cache);
bool conv2d_filter_vector_forward_scalar(const ConvShape& s, const float* x, const float* w, const float* bias,
                                         bool relu, float* y, ConvWeightCache* cache);
bool conv2d_filter_vector_forward_avx2(const ConvShape& s, const float* x, const float* w, const float* bias,
                                       bool relu, float* y, ConvWeightCache* cache);
bool conv2d_filter_vector_forward_avx512(const ConvShape& s, const float* x, const float* w, const float* bias,
                                         bool relu, float* y, ConvWeightCache* cache);
// The weight gradient vectorised over filters (conv_direct.h, filter_vector_weight), tried first: one group, kernel
// width 3 or 5, more than half a vector and at most two vectors of filters (on AVX-512 up to four, in blocks of two, on
// maps of at most 256 output pixels and at least two images), any stride, padding and dilation; the bias
// gradient in the same pass where db is not null (the bits of conv2d_backward_bias_fast). On AVX-512, 5 x 5 kernels at
// stride 1 with 9 to 16 filters on rows of an even number, at most 10, of outputs by Winograd's F(5, 4) and F(5, 2)
// along the rows (the pass run again by the direct units where its result is not finite), the same as with dx. Returns
// false, doing nothing, where it does not apply. Workspace: per image chunk (at most 8) the accumulators and the bias
// partials; per thread one zero-padded image and one transposed dy image (Winograd: also one image's transformed
// input and dy).
using ConvFilterVectorWeightKernel = bool (*)(const ConvShape& s, const float* dy, const float* x, float* dw,
                                              float* db);
bool conv2d_filter_vector_weight_scalar(const ConvShape& s, const float* dy, const float* x, float* dw,
                                        float* db);
bool conv2d_filter_vector_weight_avx2(const ConvShape& s, const float* dy, const float* x, float* dw,
                                      float* db);
bool conv2d_filter_vector_weight_avx512(const ConvShape& s, const float* dy, const float* x, float* dw,
                                        float* db);

// All three gradients of a stride-1 layer with 9 to 16 filters on rows of 5 to 10 outputs (LeNet-5's conv2), tried by
// conv2d_backward_fast when dx is wanted: AVX-512 and AVX2 (the scalar entry returns false), no dilation, one group,
// kernel widths 3 and 5, padding within the kernel, finite weights. The weight gradient as
// conv2d_filter_vector_weight's (Winograd on AVX-512 where that takes it); the input gradient in the same pass with
// dy's channels in the vector lanes (conv_direct.h, channel_vector_backward) or, on AVX-512 with 5-wide kernels and
// at least 32 images, in a pass of its own with 16 images in the lanes (ImageLaneInputGradient). db may be null.
// Returns false, doing nothing, where it does not apply. Workspace: the regrouped weights, per image chunk (at most
// 8) the weight gradient's accumulators, per thread one zero-padded image, one transposed dy image and the weight
// gradient's workspace; with the images in the lanes, per task (16 images' dx rows, from the buffer cache) their dy
// transposed, dy's points (V), a block's products, their dx rows' full convolutions and one channel's dx.
using ConvChannelVectorBackwardKernel = bool (*)(const ConvShape& s, const float* dy, const float* x, const float* w,
                                                 float* dx, float* dw, float* db);
bool conv2d_channel_vector_backward_scalar(const ConvShape& s, const float* dy, const float* x, const float* w,
                                           float* dx, float* dw, float* db);
bool conv2d_channel_vector_backward_avx2(const ConvShape& s, const float* dy, const float* x, const float* w,
                                         float* dx, float* dw, float* db);
bool conv2d_channel_vector_backward_avx512(const ConvShape& s, const float* dy, const float* x, const float* w,
                                           float* dx, float* dw, float* db);

// Winograd F(2x2, 3x3) or F(4x4, 3x3) forward convolution (conv_winograd.h, one per ISA in the dispatch table; where
// it applies: conv_winograd.cpp): 3x3 filters, stride 1, no dilation, one group, at least 16 channels and 16 filters,
// outputs at least 4 x 4 and at least 49 2x2 output tiles; any padding. tile (2 or 4; conv2d_winograd_tile chooses)
// is the output tile: (tile + 2)^2 GEMMs, one per position of the transformed tile, on the SGEMM engine do 2.25x
// (F(2x2)) or 4x (F(4x4)) fewer multiplies than im2col. Both are exact on small-integer data (conv_winograd.h).
// Workspace: the transformed filters ((tile + 2)^2 * K * C floats) and, per block of whole tile rows, the transformed
// inputs and products: at most ~4 Mi floats (16 MiB) or one tile row, shared by the threads; or, where the
// transformed filters take at most 1 Mi floats and there are at least two blocks a thread, ~1 Mi floats (4 MiB) or
// one tile row per thread, each thread taking whole blocks. Results do not depend on the thread count. Returns false,
// y unfinished, where x or w holds an infinity or a NaN (the transforms' differences would turn an infinity into
// NaN): the caller computes y another way. cache, where not null, keeps the transformed filters from call to call
// (ConvWeightCache; the weights must then be finite).
bool conv2d_winograd_applies(const ConvShape& s);
// Winograd F(4x4, 3x3) or F(2x2, 3x3) (conv2d_winograd_fused_tile) fused in L1 and L2 (conv_winograd.h, AVX2 and
// AVX-512 only: the table's entry is null for the portable kernels) where conv2d_winograd_fused_applies: 16 to 32
// channels and filters on rows of at least 15 outputs, or up to 64 on rows of 7 or 8, padding at most 1
// (conv_winograd.cpp); the forward route (conv2d_forward_fast) takes it before the filter-vector and direct kernels.
// Exact on small-integer data (F(4x4) as conv2d_winograd_applies's kernel); results do not depend on the thread
// count. Returns false, y unfinished, where x or w holds an infinity or a NaN. cache as for conv2d_winograd_applies's
// kernel (its key: the filters rounded up to a vector).
bool conv2d_winograd_fused_applies(const ConvShape& s);
using ConvWinogradFusedKernel = bool (*)(const ConvShape& s, const float* x, const float* w, const float* bias,
                                         bool relu, float* y, ConvWeightCache* cache);
bool conv2d_forward_winograd_fused_avx2(const ConvShape& s, const float* x, const float* w, const float* bias,
                                        bool relu, float* y, ConvWeightCache* cache);
bool conv2d_forward_winograd_fused_avx512(const ConvShape& s, const float* x, const float* w, const float* bias,
                                          bool relu, float* y, ConvWeightCache* cache);
// The output tile the Winograd convolution takes for s where it applies: 4 (F(4x4, 3x3)) or 2 (F(2x2, 3x3)).
int conv2d_winograd_tile(const ConvShape& s);
// The fused kernel's output tile for s (where conv2d_winograd_fused_applies) on vectors of `lanes` floats (8 or 16):
// 4 or 2 (for a frozen model as for any other call: the same bits); and its tile rows a vector (lane groups: 1, 2 or,
// with 16 lanes, 4) for rows of tw tiles.
int conv2d_winograd_fused_tile(const ConvShape& s, int lanes);
int winograd_fused_lane_groups(int64_t tw, int lanes);
using ConvWinogradKernel = bool (*)(const ConvShape& s, int tile, const float* x, const float* w, const float* bias,
                                    bool relu, float* y, ConvWeightCache* cache);
bool conv2d_forward_winograd_scalar(const ConvShape& s, int tile, const float* x, const float* w, const float* bias,
                                    bool relu, float* y, ConvWeightCache* cache);
bool conv2d_forward_winograd_avx2(const ConvShape& s, int tile, const float* x, const float* w, const float* bias,
                                  bool relu, float* y, ConvWeightCache* cache);
bool conv2d_forward_winograd_avx512(const ConvShape& s, int tile, const float* x, const float* w, const float* bias,
                                    bool relu, float* y, ConvWeightCache* cache);

// The weight gradient by Winograd F(4x4, 3x3) where tile is 4, else F(2x2, 3x3) (conv_winograd.h, one per ISA in the
// dispatch table; where it applies: conv_winograd.cpp, the forward's layers with at least 128 channels and filters and
// 192 output tiles, maps without many overhanging tiles; the tile: conv2d_winograd_weight_tile): alpha^2 GEMMs
// (filters x channels, summing over the output tiles) do 2.25x (F(2x2)) or 4x (F(4x4)) fewer multiplies than im2col.
// Exact on small-integer data; float errors up to ~3e-7 of the sum of |x| |dy| for F(2x2), ~1.3e-6 for F(4x4).
// Workspace: the products' sums (alpha^2 * K * C floats) and, per block of whole tile rows, the transformed inputs and
// output gradients: 1-2 Mi floats (4-8 MiB), or 256-512 tiles' worth (alpha^2 * (C + K) floats a tile) where that is
// more. Results do not depend on the thread count. Returns false, dw untouched, where x or dy holds an infinity or a
// NaN: the caller computes dw another way.
bool conv2d_winograd_weight_applies(const ConvShape& s);
using ConvWinogradWeightKernel = bool (*)(const ConvShape& s, int tile, const float* dy, const float* x, float* dw);
bool conv2d_backward_weight_winograd_scalar(const ConvShape& s, int tile, const float* dy, const float* x, float* dw);
bool conv2d_backward_weight_winograd_avx2(const ConvShape& s, int tile, const float* dy, const float* x, float* dw);
bool conv2d_backward_weight_winograd_avx512(const ConvShape& s, int tile, const float* dy, const float* x, float* dw);
// The weight gradient's output tile for s where conv2d_winograd_weight_applies: 4 (F(4x4, 3x3)) or 2.
int conv2d_winograd_weight_tile(const ConvShape& s);
// The weight gradient by Winograd F(4x4, 3x3) where tile is 4, else F(2x2, 3x3) (the caller's tile:
// conv2d_winograd_fused_weight_tile), fused (conv_winograd.h, AVX2 and AVX-512 only: null for the portable kernels)
// where conv2d_winograd_fused_weight_applies: 3x3 stride-1 layers of 16 to 64 channels and filters with at least 256
// 2x2 output tiles in the batch (conv_winograd.cpp); conv2d_backward_weight_fast takes it first. The bias gradient in
// the same pass where db is not null (the bits of conv2d_backward_bias_fast). Exact on small-integer data while its
// sums (F(2x2): up to 64 times the direct sum's terms; F(4x4): in sixteenths) stay below 2^24; float errors up to ~5e-7
// of the sum of |x| |dy| for F(4x4), ~1e-7 for F(2x2); results do not depend on the thread count. Returns false, dw and
// db untouched, where x or dy holds an infinity or a NaN.
bool conv2d_winograd_fused_weight_applies(const ConvShape& s);
// The fused weight gradient's output tile for s (where conv2d_winograd_fused_weight_applies): 4 (F(4x4, 3x3)) or 2.
int conv2d_winograd_fused_weight_tile(const ConvShape& s);
// A single image's tile rows go to this many chunks in the fused weight gradient (each writes, sums into and reads
// back its alpha^2 x K x C sums). Both builds in one process, calls alternated, median of per-pair time ratios, AMD Zen
// 4, 2 threads, F(2x2) weight gradient at n=1: 8 chunks against the image as one (one thread) 64 channels at 32 x 32
// 1.26x, at 56 x 56 1.42x; 4 chunks against 8: 1.17x, 1.08x, 16 channels at 32 x 32 1.19x. (Images split so at n=2
// to 4 went 0.85-0.88x against whole images.)
constexpr int64_t kImageRowChunks = 4;
// The fused weight gradient's chunks for tile T (2 or 4): image_chunks(s) runs of whole images, or for one image runs
// of its tile rows; the sums' order whatever the thread count.
inline int64_t winograd_fused_weight_chunks(const ConvShape& s, int T) {
  return s.N > 1 ? image_chunks(s) : std::min<int64_t>(kImageRowChunks, (s.P + T - 1) / T);
}
using ConvWinogradFusedWeightKernel = bool (*)(const ConvShape& s, int tile, const float* dy, const float* x,
                                               float* dw, float* db);
bool conv2d_backward_weight_winograd_fused_avx2(const ConvShape& s, int tile, const float* dy, const float* x,
                                                float* dw, float* db);
bool conv2d_backward_weight_winograd_fused_avx512(const ConvShape& s, int tile, const float* dy, const float* x,
                                                  float* dw, float* db);

// Depthwise (groups == C > 1, any channel multiplier K/C): direct loops along rows, no workspace; the
// fast kernels above route here. Each dw element sums 8 lane partials over (n, p, q) in order, then the lanes.
bool is_depthwise(const ConvShape& s);
void conv2d_forward_depthwise(const ConvShape& s, const float* x, const float* w, const float* bias, bool relu,
                              float* y);
void conv2d_backward_input_depthwise(const ConvShape& s, const float* dy, const float* w, float* dx);
void conv2d_backward_weight_depthwise(const ConvShape& s, const float* dy, const float* x, float* dw);

}  // namespace convcore
