// Fast float32 convolution: blocked im2col packed straight into the SGEMM engine's B panels.
#include <algorithm>
#include <optional>
#include <vector>

#include <xmmintrin.h>

#include "convcore/buffer_cache.h"
#include "convcore/conv.h"
#include "convcore/dispatch.h"
#include "convcore/gemm.h"
#include "convcore/threads.h"
#include "convcore/vector_edges.h"

namespace convcore {
namespace {

// Convolutions with fewer output pixels per image than this fold the batch into the GEMM's N dimension (where
// folds_batch says so): one GEMM over all images' columns instead of one per image whose N (7x7 = 49 .. 15x15
// = 225 pixels) leaves the last column tile partly empty and the packing and call overheads unshared.
constexpr int64_t kFoldBelowPixels = 256;
constexpr int64_t kFoldColumnFloats = int64_t(1) << 22;  // folded input gradients: im2col columns per product
constexpr int64_t kMinChunkPixels = 512;  // weight gradients: at most one chunk of pixels per this many,
constexpr int64_t kNarrowTaps = 256;      // where dW has fewer taps than this
// One image's copies (pad_split_phases and its adjoint unsplit_planes) run on the threads, its planes or rows in
// equal shares, from this many floats (64 KiB) where the caller runs outside a parallel region (a batch-1 layer).
// Against one thread (stride 1 always, strided below 2**17 floats, unsplit below 2**16), both builds in one
// process, calls alternated, median of per-pair time ratios, AMD Zen 4, 2 threads, n=1: weight gradient 64 -> 64
// 3x3 on 56 x 56 1.15x (the whole backward 1.04x; the main thread had spent 13% of its time zeroing the copy while
// the other waited), on 32 x 32 1.13x, on 16 x 16 1.04x, 128 -> 128 on 28 x 28 1.02x, 512 -> 512 on 7 x 7 1.01x
// (forward 1.03x); 3x3/2 forward 128 -> 256 on 28 x 28 1.09x (weight gradient 1.06x), 256 -> 512 on 14 x 14 1.15x
// (backward 1.06x).
constexpr int64_t kThreadedCopyFloats = int64_t(1) << 14;
// Batch-1 passes whose threads each take their share end to end (filters_from_own_copies, channel_shares): forwards
// of at most kOwnCopyPixels output pixels, each thread's share at least kOwnCopyWork multiply-adds and, taken by
// channels, at least kOwnChannels channels.
constexpr int64_t kOwnCopyPixels = 1024;
constexpr int64_t kOwnCopyWork = int64_t(1) << 22;
constexpr int64_t kOwnChannels = 16;

// A zero-padded image with each row's columns split by phase modulo the horizontal stride sw: C planes of Hp =
// H + 2*pad_h rows; padded column v of a row at (v % sw) * Wq + v / sw, Wq = ceil((W + 2*pad_w) / sw), so a row
// is sw * Wq floats. A kernel tap then reads the consecutive pixels of an output row from consecutive floats. An
// unpadded, unstrided image (Hp = H, Wq = W) is already so laid out.
struct SplitLayout {
  int64_t Hp, Wq, row, plane;  // rows, floats per phase, per row, per channel
  explicit SplitLayout(const ConvShape& s)
      : Hp(s.H + 2 * s.pad_h), Wq((s.W + 2 * s.pad_w + s.stride_w - 1) / s.stride_w), row(s.stride_w * Wq),
        plane(Hp * row) {}
  // where padded column v lies in a row
  int64_t column(const ConvShape& s, int64_t v) const { return v % s.stride_w * Wq + v / s.stride_w; }
  // where kernel tap (c, r, t) reads, from the top-left corner of an output pixel's window
  int64_t tap(const ConvShape& s, int64_t c, int64_t r, int64_t t) const {
    return c * plane + r * s.dil_h * row + column(s, t * s.dil_w);
  }
  // tap(c, r, t) of one group's every tap, in (c, r, t) order: found once per product (with their divisions, found
  // per packed block they cost 3% of AlexNet conv1's forward)
  std::vector<int64_t> taps(const ConvShape& s) const {
    std::vector<int64_t> offsets;
    offsets.reserve(static_cast<size_t>(s.C / s.groups * s.R * s.S));
    for (int64_t c = 0; c < s.C / s.groups; ++c)
      for (int64_t r = 0; r < s.R; ++r)
        for (int64_t t = 0; t < s.S; ++t) offsets.push_back(tap(s, c, r, t));
    return offsets;
  }
  // an output pixel's window (p, q) in an image so laid out
  int64_t window(const ConvShape& s, int64_t p, int64_t q) const { return p * s.stride_h * row + q; }
};

// Calls write_row(src, dst) for every image row of x (src its W floats, dst its row in the SplitLayout copy xp) after
// zeroing the padding rows above and below the image, on the threads from kThreadedCopyFloats.
// On the threads, items are image rows, each row of every channel in turn (item h * C + c), so that a thread writes
// the top or bottom rows of all channels: those the output rows of its share of a forward product's columns read,
// which it packs itself (take_shares), as do a weight gradient's chunks of pixels. Written channel by channel, half
// of each thread's stores waited for lines the other core had read (7% of ResNet-50 conv1's batch-1 forward was
// this copy, nearly all of it in the stores). Both builds in one process, calls alternated, median of per-pair
// time ratios, AMD EPYC Zen 4, 2 threads, batch 1: ResNet-50 conv1 forward 1.01-1.08x, forward+backward
// 1.05-1.08x; AlexNet conv1 forward 1.01-1.07x, forward+backward 1.01x; 3x3/2 64 -> 128 on 56 x 56 forward
// 0.99-1.03x, forward+backward 0.97-0.99x (its weight product shares out taps, by channels). Rows for the forward
// and channels for that weight gradient were worse: the two copies of a training step (the same block of the
// thread's cache) then changed cores every time (AlexNet conv1 forward+backward 0.99x, the 3x3/2 layer's
// 0.96-0.98x). On one thread (an image of a batch, in a task of its own) they are taken channel by channel, each
// channel's rows in order (item c * H + h): taken row by row across the channels, each row's first load missed
// the cache, 3 to 12 KiB from the last one, and the copy was 17% of a 128 -> 256 3x3/2 forward on 28 x 28 maps,
// n=8, one thread (4% now). Both builds in one process, calls alternated, median of per-pair time ratios, AMD Zen
// 4, n=8 3x3/2 forward, 1 / 2 threads: 64 -> 128 on 56 x 56 1.11 / 1.09x, 128 -> 256 on 28 x 28 1.18 / 1.15x,
// 256 -> 512 on 14 x 14 1.11 / 1.11x; 128 -> 256 forward+backward 1.13 / 1.11x; batch-1 layers and the first
// layers of AlexNet and ResNet-50 (n=8) 0.995-1.007x. Channel by channel on the threads too (each thread its share
// of every channel's rows) made batch-1 layers slower (128 -> 256 on 28 x 28 0.95-0.98x, 256 -> 512 on 14 x 14
// 0.97-0.98x).
template <typename WriteRow>
void for_each_image_row(const ConvShape& s, const SplitLayout& L, const float* x, float* xp,
                        const WriteRow& write_row) {
  const int64_t C = s.C, H = s.H, W = s.W, ph = s.pad_h;
  const int nt = threads_for(C * H * W, kThreadedCopyFloats);
  parallel_for(C * H, nt, [&](int64_t item) {
    const int64_t h = nt > 1 ? item / C : item % H, c = nt > 1 ? item % C : item / H;
    float* plane = xp + c * L.plane;
    if (h == 0) std::fill(plane, plane + ph * L.row, 0.0f);  // the padding rows above and below the image
    if (h == H - 1) std::fill(plane + (ph + H) * L.row, plane + L.plane, 0.0f);
    write_row(x + (c * H + h) * W, plane + (h + ph) * L.row);
  });
}

// Writes image x's SplitLayout copy xp, every float of it (by planes for stride 1, else by rows: for_each_image_row):
// the image's, and zeros in the padding, so that the buffer needs no zeroing first (zeroing the whole copy, then
// writing the image into it, was 1.5% of AlexNet conv1's batch-1 forward; both builds in one process, calls
// alternated, median of per-pair time ratios, 2 threads, forward: AlexNet conv1 n=1 1.03-1.04x, ResNet-50 conv1 n=1
// 1.02-1.04x, 32 x 16 x 32 x 32 3x3/2 1.00-1.02x).
void pad_split_phases(const ConvShape& s, const SplitLayout& L, const float* x, float* xp) {
  const int64_t sw = s.stride_w, pw = s.pad_w, W = s.W, Wq = L.Wq, H = s.H, ph = s.pad_h;
  if (sw == 1) {  // each plane zeroed whole, then its image rows (as fast as zeroing the padding alone, or 1% faster)
    const PackGatheredKernel copy_rows = kernels().gemm.pack_gathered;
    std::vector<int64_t> rows(static_cast<size_t>(H));
    for (int64_t h = 0; h < H; ++h) rows[h] = h * W;
    parallel_for(s.C, threads_for(s.C * H * W, kThreadedCopyFloats), [&](int64_t c) {
      float* plane = xp + c * L.plane;
      std::fill(plane, plane + L.plane, 0.0f);
      copy_rows(x + c * H * W, rows.data(), H, W, Wq, plane + ph * Wq + pw);
    });
    return;
  }
  // Padded column i*sw + phase (image column i*sw + phase - pw) goes to phase*Wq + i. Stride 2 by the ISA's kernel, a
  // row at a time (split_row2: vectors of the row, their lanes outside it loaded as zeros).
  if (sw == 2) {
    const SplitRow2Kernel split_row2 = kernels().gemm.split_row2;
    for_each_image_row(s, L, x, xp, [&](const float* src, float* dst) { split_row2(src, W, pw, Wq, dst); });
    return;
  }
  // Other strides: each phase's i in the image, [first, end), found once (found per row, their divisions made the
  // split 32% of a 3x3/2 layer's forward on 32x32 maps); [i0, i1), i in the image for every phase, taken 4 at a time
  // for stride 4: 16 image floats in, one 4-float store per phase.
  std::vector<int64_t> first(static_cast<size_t>(sw)), end(static_cast<size_t>(sw));
  for (int64_t phase = 0; phase < sw; ++phase) {
    first[phase] = std::max<int64_t>(0, pw - phase + sw - 1) / sw;
    end[phase] = std::max(first[phase], std::min(Wq, (W + pw - phase + sw - 1) / sw));
  }
  // the padding floats of a row holding image columns (a few: a library fill per range cost more than the row's
  // copy on 32-pixel rows)
  std::vector<int64_t> margins;
  for (int64_t phase = 0; phase < sw; ++phase)
    for (int64_t i = 0; i < Wq; ++i)
      if (i < first[phase] || i >= end[phase]) margins.push_back(phase * Wq + i);
  const int64_t i0 = first[0];  // phase 0 starts last
  int64_t i1 = i0;
  if (sw == 4)
    while ((i1 + 4) * sw - pw <= W) i1 += 4;
  for_each_image_row(s, L, x, xp, [&](const float* src, float* dst) {
    const int64_t wq = Wq, lo = i0, hi = i1;  // locals: not reloaded after each store
    for (const int64_t at : margins) dst[at] = 0.0f;
    for (int64_t i = lo; i < hi; i += 4) {
      const float* in = src + i * sw - pw;
      __m128 a = _mm_loadu_ps(in), b = _mm_loadu_ps(in + 4), c4 = _mm_loadu_ps(in + 8), d = _mm_loadu_ps(in + 12);
      _MM_TRANSPOSE4_PS(a, b, c4, d);
      _mm_storeu_ps(dst + i, a);
      _mm_storeu_ps(dst + wq + i, b);
      _mm_storeu_ps(dst + 2 * wq + i, c4);
      _mm_storeu_ps(dst + 3 * wq + i, d);
    }
    for (int64_t phase = 0; phase < sw; ++phase) {
      float* out = dst + phase * wq;
      for (int64_t i = first[phase]; i < std::min(i0, end[phase]); ++i) out[i] = src[i * sw + phase - pw];
      for (int64_t i = std::max(i1, first[phase]); i < end[phase]; ++i) out[i] = src[i * sw + phase - pw];
    }
  });
}

// B = im2col of one group over images, (Cg*R*S) x (images*P*Q):
// B(c*R*S + r*S + t, i*P*Q + p*Q + q) = x[i*image_stride + c*H*W + (p*sh - ph + r*dh)*W + q*sw - pw + t*dw]
// read from images in a SplitLayout (pad_split_phases), where each tap's run of an output row is consecutive floats.
class Im2col final : public BPanelSource {
 public:
  Im2col(const ConvShape& s, const float* x, int64_t image_stride, const SplitLayout& layout)
      : s_(s), x_(x), image_stride_(image_stride), layout_(layout), taps_(layout.taps(s)) {}
  // Each panel is cut into segments of pixels that lie in one output row of one image; a segment's packed rows
  // are runs of consecutive floats, one per tap, copied by the ISA's gathering packer from the taps' offsets (a
  // library copy per run of a few vectors cost 10% of a strided first layer's forward).
  void pack(int64_t k0, int64_t kc, int64_t n0, int64_t nc, int nr, float* Bp) const override {
    const PackGatheredKernel pack_gathered = kernels().gemm.pack_gathered;
    const int64_t PQ = s_.P * s_.Q;
    for (int64_t jp = 0; jp < nc; jp += nr) {
      const int64_t cols = std::min<int64_t>(nr, nc - jp);
      float* panel = Bp + (jp / nr) * kc * nr;
      for (int64_t j = 0; j < cols;) {
        const int64_t col = n0 + jp + j, pix = col % PQ, p = pix / s_.Q, q = pix % s_.Q;
        const int64_t len = std::min(cols - j, s_.Q - q);
        const float* image = x_ + (col / PQ) * image_stride_;
        pack_gathered(image + layout_.window(s_, p, q), taps_.data() + k0, kc, len, nr, panel + j);
        j += len;
      }
      if (cols < nr)
        for (int64_t k = 0; k < kc; ++k) std::fill(panel + k * nr + cols, panel + (k + 1) * nr, 0.0f);
    }
  }

 private:
  const ConvShape& s_;
  const float* x_;
  int64_t image_stride_;
  const SplitLayout& layout_;
  std::vector<int64_t> taps_;  // layout_.taps(s_)
};

// B = im2col transposed, (images*P*Q) x (Cg*R*S), for the weight gradient dW = dY x im2col(X)^T, read from images
// in a SplitLayout: row i*P*Q + p*Q + q - first reads image i at x + i*image_stride (first: the pixel row 0 stands
// for, so that a product can cover a run of one image's pixels). A panel's
// columns are kernel taps; for each run of its rows within one output row, every tap reads consecutive floats,
// which the ISA's transposing packer turns into the panel's rows.
class Im2colT final : public BPanelSource {
 public:
  Im2colT(const ConvShape& s, const float* x, int64_t image_stride, const SplitLayout& layout, int64_t first = 0)
      : s_(s), x_(x), image_stride_(image_stride), layout_(layout), first_(first), taps_(layout.taps(s)) {}
  void pack(int64_t k0, int64_t kc, int64_t n0, int64_t nc, int nr, float* Bp) const override {
    const PackTransposedKernel pack_transposed = kernels().gemm.pack_transposed;
    const int64_t PQ = s_.P * s_.Q;
    for (int64_t jp = 0; jp < nc; jp += nr) {
      const int64_t cols = std::min<int64_t>(nr, nc - jp);
      const int64_t* taps = taps_.data() + n0 + jp;  // where the panel's taps read, from a window's top-left corner
      float* panel = Bp + (jp / nr) * kc * nr;
      for (int64_t k = 0; k < kc;) {
        const int64_t pixel = first_ + k0 + k, image = pixel / PQ, p = pixel % PQ / s_.Q, q = pixel % s_.Q;
        const int64_t len = std::min(kc - k, s_.Q - q);
        const float* window = x_ + image * image_stride_ + layout_.window(s_, p, q);
        pack_transposed(window, taps, cols, nr, len, 1.0f, panel + k * nr);
        k += len;
      }
    }
  }

 private:
  const ConvShape& s_;
  const float* x_;
  int64_t image_stride_;
  const SplitLayout& layout_;
  int64_t first_;
  std::vector<int64_t> taps_;  // layout_.taps(s_)
};

// The tile of the gathered weight product: of the tiles with a gathered microkernel (every ISA has one), the one
// computing the least padded area of taps x filters.
const GemmTile& gathered_tile(int64_t taps, int64_t filters) {
  const GemmKernels& g = kernels().gemm;
  const GemmTile* best = nullptr;
  for (int i = 0; i < g.count; ++i)
    if (g.tiles[i].gathered && (!best || padded_area(g.tiles[i], taps, filters) < padded_area(*best, taps, filters)))
      best = &g.tiles[i];
  return *best;
}

// Blocks of the gathered weight product: whole output rows (at least one), at least kGatheredPixels pixels, more up
// to kGatheredFloats floats of dy^T (256 KiB: 1024 pixels of 64 filters). Both builds in one process, calls
// alternated, median of per-pair time ratios, AMD Zen 5, 2 / 1 threads, weight gradient, 1024 pixels of 64 filters
// over 256: 64 -> 64 3x3 on 56 x 56 n=8 1.05 / 1.03x, n=1 1.09 / 1.04x, on 32 x 32 n=32 1.07 / 1.05x, on 224 x 224
// n=8 1.08 / 1.03x; 3 -> 64 3x3 on 224 x 224 n=8 1.22 / 1.16x; ResNet-50 conv1 n=8 1.13 / 1.09x, n=1 1.09 / 1.04x;
// AlexNet conv1 (96 filters, 660 pixels) n=8 1.03-1.06 / 1.03x, n=1 1.03-1.05 / 1.05x. 128 or 160 pixels of 64
// filters were slower (0.93-0.95x), 512 1.01-1.04x, 2048 0.96-1.00x against 1024; 128 of 512 filters 0.93x against
// 256.
constexpr int64_t kGatheredPixels = 256;
constexpr int64_t kGatheredFloats = int64_t(1) << 16;

// The weight gradient's product for pixels [first, first + len) of one image, taps as rows, by the gathered
// microkernel: dwt (Cg*R*S x Kg, row stride Kg) = (accumulate ? dwt : 0) + im2col(xs) dy^T, the im2col's rows read
// in place from xs (one group's channels in `layout`), dy^T packed a block of pixels at a time: whole output rows
// (kGatheredPixels, kGatheredFloats), or the part of one row where the range starts or ends inside it. Where bias_part
// is not null, each block of dy is added to it (bias_partials_add_pixels) after its packing.
void weight_product_gathered(const ConvShape& s, const GemmTile& tile, const SplitLayout& layout, const float* xs,
                             const float* dy, int64_t first, int64_t len, bool accumulate, float* dwt,
                             float* bias_part) {
  const int64_t Kg = s.K / s.groups, CRS = s.C / s.groups * s.R * s.S, PQ = s.P * s.Q, Q = s.Q;
  const int mr = tile.mr, nr = tile.nr;
  const int64_t padded_filters = (Kg + nr - 1) / nr * nr;  // a pixel's floats of packed dy^T
  const int64_t pixels = std::max(kGatheredPixels, kGatheredFloats / padded_filters);
  const int64_t rows_per_block = std::max<int64_t>(1, pixels / Q);
  const std::vector<int64_t> taps = layout.taps(s);
  const MatrixB dyt(Trans::yes, dy, PQ);
  const int64_t jump = s.stride_h * layout.row;  // from one output row's window to the next one's
  // the row panels (of mr taps) in equal shares on the threads, each packing every block of dy^T itself
  const int64_t panels = (CRS + mr - 1) / mr;
  const int nt = static_cast<int>(std::min<int64_t>(threads_for(CRS * Kg * len), panels));
  parallel_for(nt, nt, [&](int64_t part) {
    const int64_t i_begin = part * panels / nt * mr, i_end = std::min(CRS, (part + 1) * panels / nt * mr);
    const CachedBlock<float> packed(rows_per_block * Q * padded_filters);
    for (int64_t at = first, end = first + len; at < end;) {
      const int64_t p = at / Q, q = at % Q;
      const bool whole_rows = q == 0 && end - at >= Q;
      const int64_t run = whole_rows ? Q : std::min(Q - q, end - at);
      const int64_t runs = whole_rows ? std::min(rows_per_block, (end - at) / Q) : 1, kc = run * runs;
      dyt.pack(at, kc, 0, Kg, nr, packed.get());
      if (bias_part && part == 0) bias_partials_add_pixels(s, dy, 0, Kg, at, kc, bias_part);  // dy's block in cache
      const float* window = xs + layout.window(s, p, q);
      for (int64_t i0 = i_begin; i0 < i_end; i0 += mr) {
        const int rows = static_cast<int>(std::min<int64_t>(mr, CRS - i0));
        const float* a[kMaxMr];
        for (int i = 0; i < mr; ++i) a[i] = window + taps[i0 + std::min(i, rows - 1)];
        for (int64_t j0 = 0; j0 < Kg; j0 += nr)
          tile.gathered(run, runs, jump, a, packed.get() + j0 * kc, nr, dwt + i0 * Kg + j0, Kg,
                        accumulate || at > first, rows, static_cast<int>(std::min<int64_t>(nr, Kg - j0)));
      }
      at += kc;
    }
  });
}

// Whether the weight gradient's products take the taps as rows (weight_product_gathered): where dW has at most
// kGatheredWeights floats and their padded area is no larger than with the filters as rows, whose im2col goes
// through the transposing packer. Both builds in one process, calls alternated, median of per-pair time ratios,
// AVX-512, 2 threads, backward, against the im2col packed as the product's A by the transposing packer (ResNet-50
// conv1, 147 taps x 64 filters, VGG conv1_1) or as its B (the rest): ResNet-50 conv1 n=8 1.15x, n=1 1.16x, VGG
// conv1_1 (3 -> 64, 3x3 on 224 x 224) n=8 1.08x, AlexNet conv1 n=8 1.07x, n=1 1.12x, 64 -> 64 3x3 on 56 x 56 n=8
// 1.03x, n=1 1.05x, on 32 x 32 n=32 1.03x, on 224 x 224 n=1 1.05x; but 128 -> 128 on 28 x 28 (1152 x 128, 590 KiB
// of dW) 0.74x at n=8, 0.92x at n=1, 256 -> 256 0.99-1.00x: left with the filters as rows.
// gathered: gathered_tile(taps, filters).
constexpr int64_t kGatheredWeights = int64_t(1) << 16;
bool taps_as_rows(const ConvShape& s, const GemmTile& gathered) {
  const int64_t Kg = s.K / s.groups, CRS = s.C / s.groups * s.R * s.S;
  return CRS * Kg <= kGatheredWeights &&
         padded_area(gathered, CRS, Kg) <= padded_area(choose_tile(kernels().gemm, Kg, CRS), Kg, CRS);
}

// Adds one channel's im2col rows (R*S rows, ld floats apart, of nb columns: output pixels j0 .. j0+nb-1 of one
// image) into its plane xs of a SplitLayout copy, each entry where the forward's im2col read it (what falls in the
// padding is dropped later by unsplit_planes), in (r, t, pixel) order: there each tap's run of an output row is
// consecutive floats, where in the image a strided layer's were sw apart (added one by one, with each segment's
// part inside the image found, this was 17% of a 64 -> 128 3x3/2 layer's backward on 56x56 maps; both builds in
// one process, calls alternated, median of per-pair time ratios, 2 threads, backward: that layer n=8 1.08x, n=1
// 1.07x, 128 -> 256 on 28x28 n=32 1.06x, ResNet-20's 16 -> 32 and 32 -> 64 n=128 1.33x and 1.18x; its step 1.02x).
void col2im_add(const ConvShape& s, const SplitLayout& L, const float* col, int64_t ld, int64_t j0, int64_t nb,
                float* xs) {
  const int64_t Q = s.Q;
  for (int64_t r = 0; r < s.R; ++r)
    for (int64_t t = 0; t < s.S; ++t) {
      const float* src = col + (r * s.S + t) * ld;
      float* dst = xs + L.tap(s, 0, r, t);
      for (int64_t j = 0, p = j0 / Q, q = j0 % Q; j < nb; ++p, q = 0) {  // output row p from column q
        const int64_t len = std::min(nb - j, Q - q);
        float* out = dst + L.window(s, p, q);
        for (int64_t i = 0; i < len; ++i) out[i] += src[j + i];
        j += len;
      }
    }
}

// dx's planes (`planes` of H x W) = the image part of theirs in a SplitLayout copy xs: the adjoint of
// pad_split_phases' copy in. Stride 2 interleaves its two phases four column pairs at a time: image columns 2m and
// 2m + 1 lie m floats after image columns 0 and 1, each in its phase. Planes in parallel where the caller runs
// outside a parallel region.
void unsplit_planes(const ConvShape& s, const SplitLayout& L, const float* xs, int64_t planes, float* dx) {
  const int64_t W = s.W;
  std::vector<int64_t> at(static_cast<size_t>(W));  // image column v's float in a row of the copy
  for (int64_t v = 0; v < W; ++v) at[v] = L.column(s, v + s.pad_w);
  const int64_t paired = s.stride_w == 2 ? W / 8 * 8 : 0;  // image columns taken as pairs, 8 at a time
  parallel_for(planes, threads_for(planes * s.H * W, kThreadedCopyFloats), [&](int64_t c) {
    for (int64_t h = 0; h < s.H; ++h) {
      const float* row = xs + c * L.plane + (h + s.pad_h) * L.row;
      float* out = dx + (c * s.H + h) * W;
      for (int64_t v = 0; v < paired; v += 8) {
        const __m128 even = _mm_loadu_ps(row + at[0] + v / 2), odd = _mm_loadu_ps(row + at[1] + v / 2);
        _mm_storeu_ps(out + v, _mm_unpacklo_ps(even, odd));
        _mm_storeu_ps(out + v + 4, _mm_unpackhi_ps(even, odd));
      }
      for (int64_t v = paired; v < W; ++v) out[v] = row[at[v]];
    }
  });
}

// Folding the batch into a GEMM's columns: planes [first, first + count) of N images (image n's plane j at
// images + (n * planes + j) * PQ) are, batch-major, rows of a (count, N * PQ) matrix at batch + j * N * PQ.
void gather_batch(const float* images, int64_t N, int64_t planes, int64_t first, int64_t count, int64_t PQ,
                  float* batch) {
  parallel_for(count, threads_for(count * N * PQ, 1 << 18), [&](int64_t j) {
    for (int64_t n = 0; n < N; ++n)
      std::copy_n(images + (n * planes + first + j) * PQ, PQ, batch + (j * N + n) * PQ);
  });
}
// Folding the batch into the weight gradient's rows: filters [first, first + a.M) of dy's N images (image n's plane
// j at dy + (n * K + j) * PQ), batch-major, as the product's A (a.K = N * PQ) packed in PackedA's layout: each K
// block's row panels are transposed straight from each image's runs of pixels (rows PQ floats apart) by the ISA's
// packer, on the threads: one pass over dy, instead of a copy into a (a.M, N * PQ) matrix whose rows the engine's
// packer then read N * PQ floats apart. Same bits. Both builds in one process, calls alternated, median of per-pair
// time ratios, AMD Zen 5, 2 threads, weight gradient: 64 -> 64 3x3 on 8 x 8 n=128 1.018x, n=32 1.032x, 256 -> 256 on
// 14 x 14 n=32 1.011x, 256 -> 512 3x3/2 n=8 1.021x, LeNet conv3 (16 -> 120 5x5 on 10 x 10) n=64 1.027x, 512 -> 512
// on 7 x 7 n=32 1.004x.
void pack_batch_a(const float* dy, int64_t K, int64_t first, int64_t PQ, const PackedA& a, float* packed) {
  const int mr = a.tile.mr;
  const int64_t kb = gemm_k_block(a.K), blocks = (a.K + kb - 1) / kb, panels = a.padded_m() / mr;
  const PackTransposedKernel pack = kernels().gemm.pack_transposed;
  parallel_for(blocks * panels, threads_for(a.floats(), 1 << 18), [&](int64_t task) {
    const int64_t pc = task / panels * kb, r = task % panels, end = std::min(a.K, pc + kb);
    const int64_t i0 = r * mr, count = std::min<int64_t>(mr, a.M - i0);
    float* dst = a.panel(packed, r, pc);
    int64_t offsets[kMaxMr];
    for (int64_t at = pc; at < end;) {
      const int64_t n = at / PQ, f = at % PQ, len = std::min(PQ - f, end - at);
      for (int64_t i = 0; i < count; ++i) offsets[i] = (n * K + first + i0 + i) * PQ + f;
      pack(dy, offsets, count, mr, len, 1.0f, dst + (at - pc) * mr);
      at += len;
    }
  });
}
void scatter_batch(const float* batch, int64_t N, int64_t planes, int64_t first, int64_t count, int64_t PQ,
                   float* images) {
  parallel_for(N, threads_for(count * N * PQ, 1 << 18), [&](int64_t n) {
    for (int64_t j = 0; j < count; ++j)
      std::copy_n(batch + (j * N + n) * PQ, PQ, images + (n * planes + first + j) * PQ);
  });
}

bool is_pointwise(const ConvShape& s) {
  return s.R == 1 && s.S == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_h == 0 && s.pad_w == 0;
}

// Layers with fewer than kFoldBelowPixels output pixels per image fold the batch into the GEMM's columns (one
// product over all images, not one per image each reading all of A), except pointwise layers with a single image
// or small weights, whose per-image products read x and y in place (measured AVX-512, 2 threads, n=32,
// forward+backward: 64 -> 64 on 8x8 0.41 -> 0.75 ms folded, 1024 -> 256 on 14x14 57 -> 62; folded 512 -> 2048 on
// 7x7 89 -> 59, n=8 1024 -> 2048 72 -> 29). Large weights: at least kFoldWeights per group.
constexpr int64_t kFoldWeights = int64_t(1) << 19;
bool large_weights(const ConvShape& s) {
  return (s.K / s.groups) * (s.C / s.groups) * s.R * s.S >= kFoldWeights;
}
bool folds_batch(const ConvShape& s) {
  return s.P * s.Q < kFoldBelowPixels && (!is_pointwise(s) || (s.N > 1 && large_weights(s)));
}

// A forward product of at most kOwnCopyPixels columns (output pixels of one image, or of a batch folded into one
// product) from a copy of the images (padded, phase-split or subsampled; ResNet's 3x3 layers on 56 x 56 maps and
// smaller at batch 1): where the threads would share the filters (M) out, each thread writes the whole copy (floats)
// itself, copy(into), and computes its filters [m0, m1) from it, product(m0, m1, copy), where each thread's share is
// at least kOwnCopyWork multiply-adds; false, doing nothing, elsewhere. The copy written by the threads together, a
// product whose rows the threads shared out (each packing all of B) read half of its B panels from lines the other
// core had written; one whose columns they took in chunks (N above M) read some (perf, 128 -> 128 3x3/2 on 56 x 56:
// 9% of the samples in OpenMP's waiting, 7% in the copy). On a shared AMD EPYC Zen 4 the host ran the two vCPUs far
// apart in some minutes (a round trip between them 310-390 ns instead of 50-90), where the 3x3/2 forward of 256 ->
// 256 on 28 x 28 took 1.70 ms instead of 1.30 on 2 threads, while a matmul of the product's shape took 1.12-1.14 in
// both. Each build in its own process, alternated, median ms, 2 threads, far minutes (4 runs each): 3x3/2 forward
// 128 -> 128 on 56 x 56 1.69-1.72 -> 1.29-1.36, 256 -> 256 on 28 x 28 1.71-1.77 -> 1.29-1.34, 512 -> 512 on 14 x 14
// 1.79-1.88 -> 1.33-1.34, 256 -> 64 on 28 x 28 0.92-0.94 -> 0.48; 3x3 512 -> 512 on 7 x 7 1.39-1.41 -> 1.26-1.29;
// near minutes (3 runs): 1.32-1.33 -> 1.27-1.32, 1.28-1.29 -> 1.28-1.32, 1.30-1.31 -> 1.29-1.34, 0.48-0.57 ->
// 0.47-0.48, 1.22-1.23 -> 1.20-1.26; the other ResNet-50 layers at batch 1 as before. Forced on products of more
// pixels, where each thread packing all of B costs more than it saves: 3x3/2 64 -> 128 on 112 x 112 (3136 pixels)
// 2.58-2.61 -> 2.63-2.64, AlexNet conv1 (3025) 1.07-1.09 -> 1.10, ResNet-50 conv1 (12544) 1.15-1.20 -> 1.59-1.76; on
// 784 pixels it was the faster in both kinds of minutes (96 -> 96 3x3/2 on 56 x 56 0.77-1.06 -> 0.77-0.82, 5x5 pad 2
// 128 -> 128 on 28 x 28 3.37-4.09 -> 3.19-3.24). The subsampled copy of a strided 1x1 layer likewise (mixed minutes,
// 4 runs each): ResNet-50's res3a 1x1/2 (256 -> 512 on 56 x 56) 1.09-1.43 -> 1.03-1.06, res4a's (512 -> 1024 on 28 x
// 28) 1.00-1.16 -> 1.02-1.05, res5a's 1.00-1.10 -> 1.01-1.07, 64 -> 256 on 56 x 56 0.18-0.37 -> 0.15-0.23. Not where
// a thread's share is less than kOwnCopyWork multiply-adds, which the copy and a region of its own cost more than
// they save: 64 -> 128 1x1/2 on 56 x 56 (3.2 M a thread) 0.089-0.126 -> 0.094-0.143.
template <typename Copy, typename Product>
bool filters_from_own_copies(int64_t M, int64_t N, int64_t K, int64_t floats, const Copy& copy,
                             const Product& product) {
  const int64_t share = N <= kOwnCopyPixels ? sgemm_row_share(M, N, K) : 0;
  if (share == 0 || share * N * K < kOwnCopyWork) return false;
  parallel_for((M + share - 1) / share, num_threads(), [&](int64_t t) {
    const int64_t m0 = t * share;
    const CachedBlock<float> own(floats);
    copy(own.get());
    product(m0, std::min(M, m0 + share), own.get());
  });
  return true;
}

// The threads a batch-1 backward pass of s takes the image's channels on, a run of them a thread (thread t's [t * C /
// threads, (t + 1) * C / threads)): where each has at least kOwnChannels channels (runs within 1 / kOwnChannels of
// each other's size) and kOwnCopyWork multiply-adds; else 0.
int channel_share_threads(const ConvShape& s) {
  const int64_t per_channel = s.K / s.groups * s.R * s.S * s.P * s.Q;
  const int nt = threads_for(s.N * s.C / s.groups * per_channel);
  const bool runs = s.N * s.groups == 1 && nt > 1 && s.C >= kOwnChannels * nt && s.C / nt * per_channel >= kOwnCopyWork;
  return runs ? nt : 0;
}

// The epilogue of a product computing filters first, first + 1, ...: their biases (bias may be null), ReLU or not.
Epilogue filter_epilogue(const float* bias, int64_t first, bool relu) {
  Epilogue epi;
  epi.bias = bias ? bias + first : nullptr;
  epi.bias_axis = bias ? Epilogue::Bias::per_row : Epilogue::Bias::none;
  epi.relu = relu;
  return epi;
}

// A one-group layer's filters, K x CRS, as the A of its forward products of `columns` columns: packed for the engine
// once where a frozen plan's cache keeps them (PackedA, for the tile of those products' row shares: sgemm_row_tile),
// else read as they are. Packed in advance, a batch-1 product no longer reads the filters' rows in place or packs
// them per call (both builds in one process, calls alternated, median of per-pair time ratios, frozen, batch 1, Intel
// Xeon family 6 model 167, 2 / 1 threads: 512 -> 512 3x3 on 7 x 7 1.15-1.17 / 1.16-1.21x, 256 -> 512 3x3/2 on 14 x
// 14 1.15 / 1.18-1.20x, 128 -> 256 3x3/2 on 28 x 28 1.04 / 1.07x, 64 -> 128 3x3/2 on 56 x 56 1.02x, 1x1/2 shortcuts
// 1.04-1.14x; 1x1 on 56 x 56, ResNet's 7x7/2 first layer and 512 -> 512 3x3 on 7 x 7 at batch 8 (folded) 0.99-1.03x;
// frozen ResNet-18 at batch 1, with its shortcuts' 1x1/2 routing (filter_vector_forward_any), each build in its own
// process, alternated: 11.0-11.9 -> 10.4-10.9 ms in 4 of 4 pairs).
// The same bits either way (the engine's tiles sum each element alike).
class Filters {
 public:
  // filters w, K x CRS (one group's), and the cache of a one-group layer or null (then nothing is done here)
  Filters(const float* w, int64_t K, int64_t CRS, int64_t columns, ConvWeightCache* cache) : w_(w), k_(K), crs_(CRS) {
    if (!cache) return;
    packed_a_.emplace(PackedA{sgemm_row_tile(K, columns, CRS), K, CRS});
    packed_ = cache->get(ConvPacking::gemm_filters, packed_a_->tile.mr, packed_a_->floats(),
                         [&](float* p) { sgemm_pack_a(*packed_a_, w, CRS, p); });
  }
  // rows [m0, m1) of the product with B (N columns) into C (row 0 at C), + bias (by filter, may be null), ReLU:
  // on the calling thread where packed (m0 then a multiple of sgemm_row_share), else on sgemm's threads
  void rows(int64_t m0, int64_t m1, int64_t N, const BPanelSource& B, float* C, const float* bias, bool relu) const {
    if (packed_)
      sgemm_rows(*packed_a_, packed_.get(), m0, m1, N, B, 0.0f, C, N, filter_epilogue(bias, 0, relu));
    else
      sgemm(Trans::no, m1 - m0, N, crs_, 1.0f, w_ + m0 * crs_, crs_, B, 0.0f, C + m0 * N, N,
            filter_epilogue(bias, m0, relu));
  }
  // all of the product, on sgemm's threads
  void all(int64_t N, const BPanelSource& B, float* C, const float* bias, bool relu) const {
    if (packed_)
      sgemm(*packed_a_, packed_.get(), N, B, 0.0f, C, N, filter_epilogue(bias, 0, relu));
    else
      rows(0, k_, N, B, C, bias, relu);
  }

 private:
  const float* w_;
  int64_t k_, crs_;
  std::optional<PackedA> packed_a_;  // where packed
  ConvWeightCache::Packed packed_;
};

// A strided 1x1 kernel without padding reads every stride-th pixel only: its im2col is the subsampled input, and on
// that it is pointwise. pointwise_on_subsampled returns that pointwise layer (input H = P, W = Q) and writes the
// subsampled images (N x C x P x Q floats, at most half of x) to xs, in parallel.
bool is_strided_1x1(const ConvShape& s) {
  return s.R == 1 && s.S == 1 && s.pad_h == 0 && s.pad_w == 0 && (s.stride_h > 1 || s.stride_w > 1);
}
ConvShape pointwise_on_subsampled(const ConvShape& s, const float* x, float* xs) {
  const int64_t PQ = s.P * s.Q, sw = s.stride_w;
  parallel_for(s.N * s.C, threads_for(s.N * s.C * PQ, 1 << 15), [&](int64_t plane) {
    for (int64_t p = 0; p < s.P; ++p) {
      const float* src = x + plane * s.H * s.W + p * s.stride_h * s.W;
      float* dst = xs + plane * PQ + p * s.Q;
      if (sw == 1) {
        std::copy_n(src, s.Q, dst);
      } else {
        for (int64_t q = 0; q < s.Q; ++q) dst[q] = src[q * sw];
      }
    }
  });
  ConvShape t = s;
  t.H = s.P;
  t.W = s.Q;
  t.stride_h = t.stride_w = 1;
  return t;
}

// Stride-1 input gradients can run as a plain convolution t of dy (padding dil*(R-1) - pad must be >= 0). It packs
// H*W x K*R*S im2col elements of dy per image, where GEMM + col2im writes and scatters C*R*S x P*Q: the
// transposed route is taken when t runs the direct or Winograd kernel (which pack no im2col), or else unless it
// would pack more than twice as much (few input channels, e.g. LeNet conv2, 6 <- 16 channels, where it would pack
// 5x as much, mostly padding).
bool transposed_route_pays(const ConvShape& s, const ConvShape& t) {
  return s.stride_h == 1 && s.stride_w == 1 && s.pad_h <= s.dil_h * (s.R - 1) && s.pad_w <= s.dil_w * (s.S - 1) &&
         (conv2d_direct_applies(t) || conv2d_winograd_applies(t) || s.H * s.W * s.K <= 2 * s.C * s.P * s.Q);
}

// Runs task(i) for i in [0, tasks): over threads when there are enough tasks, each thread its own share of them and
// then what the others have left (Schedule::as_free; the two cores' speeds differ and change; measured 2 threads,
// alternating, median ms, against equal shares: 32 x 256 x 56 x 56 -> 128 1x1 forward 49 -> 41 in two runs, first
// layers at n=8 forward+backward even), else one by one so that each task's GEMMs use the threads. Either way every
// task computes the same bits.
template <typename Task>
void for_each_task(int64_t tasks, int64_t work, const Task& task) {
  const int nt = threads_for(work);
  if (nt > 1 && tasks >= nt) {
    parallel_for(tasks, nt, task, Schedule::as_free);
  } else {
    for (int64_t i = 0; i < tasks; ++i) task(i);
  }
}

}  // namespace

// Row by row with the ISA's gathered-row copy (vectors, the last one masked): a library copy per row of 8-32 floats
// cost more in its call (5% of a ResNet-20 training step on 2 threads, its 32-, 16- and 8-pixel rows). Both builds
// in one process, calls alternated, median of per-pair time ratios, 2 threads: 128 x 16 x 32 x 32 3x3 forward 1.019x,
// 32 channels on 16x16 forward+backward 1.020x, 64 on 8x8 1.011x; the ResNet-20 step 1.007x.
void pad_image(const ConvShape& s, const float* x, int64_t Hp, int64_t Wp, float* xp) {
  const PackGatheredKernel copy_rows = kernels().gemm.pack_gathered;
  std::vector<int64_t> rows(static_cast<size_t>(s.H));
  for (int64_t h = 0; h < s.H; ++h) rows[h] = h * s.W;
  for (int64_t c = 0; c < s.C; ++c)
    copy_rows(x + c * s.H * s.W, rows.data(), s.H, s.W, Wp, xp + (c * Hp + s.pad_h) * Wp + s.pad_w);
}

const float* padded_image(const ConvShape& s, const float* x, int64_t Hp, int64_t Wp, std::vector<float>& buffer) {
  if (Hp == s.H && Wp == s.W) return x;
  if (buffer.empty()) buffer.assign(static_cast<size_t>(s.C * Hp * Wp), 0.0f);
  pad_image(s, x, Hp, Wp, buffer.data());
  return buffer.data();
}

bool conv2d_direct_applies(const ConvShape& s) {
  return s.stride_h == 1 && s.stride_w == 1 && s.dil_h == 1 && s.dil_w == 1 && s.groups == 1 &&
         s.C * s.R * s.S <= 400 && s.K <= 32 && s.R * s.S > 1;
}

bool conv2d_direct_weight_applies(const ConvShape& s) {
  return conv2d_direct_applies(s) && (s.C * s.R * s.S <= 160 || s.K <= 4) && (s.S == 3 || s.S == 5);
}

void conv2d_forward_fast(const ConvShape& s, const float* x, const float* w, const float* bias, bool relu, float* y,
                         ConvWeightCache* cache) {
  if (s.N == 0) return;  // no output (the fused Winograd kernel shares its tasks out by the images)
  if (is_depthwise(s)) {
    conv2d_forward_depthwise(s, x, w, bias, relu, y);
    return;
  }
  // 16 to 64 channels and filters (ResNet-20's): the fused Winograd kernel on AVX2 and AVX-512. Where it declines (x
  // holds an infinity or a NaN) the route below runs without the cache, which keeps the fused kernel's filters for
  // the next call.
  if (kernels().conv_winograd_fused && conv2d_winograd_fused_applies(s)) {
    if (kernels().conv_winograd_fused(s, x, w, bias, relu, y, cache)) return;
    cache = nullptr;
  }
  if (!is_pointwise(s) && kernels().conv_filter_vector_forward(s, x, w, bias, relu, y, cache)) return;
  if (conv2d_direct_applies(s)) {
    kernels().conv_direct(s, x, w, bias, relu, y, cache);
    return;
  }
  if (conv2d_winograd_applies(s) && kernels().conv_winograd(s, conv2d_winograd_tile(s), x, w, bias, relu, y, cache))
    return;
  if (is_strided_1x1(s)) {  // measured on AVX2, 2 threads, against im2col runs read with the stride: res3a 1x1/2
    // n=1 forward 2.7 -> 2.0 ms, n=8 24.6 -> 17.0, 8 x 64 x 56 x 56 -> 128 3.8 -> 1.7
    const int64_t PQ = s.P * s.Q;
    const auto subsample = [&](float* xs) { pointwise_on_subsampled(s, x, xs); };
    const Filters filters(w, s.K, s.C, PQ, s.N * s.groups == 1 ? cache : nullptr);
    const auto product = [&](int64_t m0, int64_t m1, const float* xs) {
      filters.rows(m0, m1, PQ, MatrixB(Trans::no, xs, PQ), y, bias, relu);
    };
    if (s.N * s.groups == 1 && filters_from_own_copies(s.K, PQ, s.C, s.C * PQ, subsample, product))
      return;
    CachedBlock<float> xs(s.N * s.C * s.P * s.Q);
    const ConvShape t = pointwise_on_subsampled(s, x, xs.get());
    conv2d_forward_fast(t, xs.get(), w, bias, relu, y, cache);
    return;
  }
  const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups, CRS = Cg * s.R * s.S, PQ = s.P * s.Q, HW = s.H * s.W;
  // im2col reads through a SplitLayout, where every tap's run of an output row is consecutive floats in bounds,
  // packed by the ISA's gathering packer. Strided or padded, each group's channels are first copied so laid out
  // (pad_split_phases), one image per task, or all when folded; an unpadded unit-stride image is so laid out
  // already. (Measured 2 threads, alternating, median ms, against packing runs with bounds checks from
  // x: 3x3/2 layers 32x16x32x32 -> 32 1.13 -> 0.67, 8x64x56x56 -> 128 5.95 -> 4.84; res4a n=1 1.71 -> 1.57; a
  // 5x5 pad-2 layer, 8x32x28x28 -> 64, 4.50 -> 3.54.)
  ConvShape sg = s;  // one group's channels
  sg.C = Cg;
  const bool copied = s.stride_w > 1 || s.pad_h > 0 || s.pad_w > 0;
  const SplitLayout layout(s);
  const int64_t split_floats = copied ? Cg * layout.plane : 0;  // one image of one group so copied
  if (s.N > 1 && folds_batch(s)) {
    // Few pixels per image (late layers): one GEMM per group over all images' columns, yt (Kg, N*PQ), then
    // scattered to y (N, K, P, Q). yt is Kg*N*PQ floats.
    const CachedBlock<float> yt(Kg * s.N * PQ);
    const int64_t columns = s.N * PQ;
    const auto copy_all = [&](float* xs) {
      for (int64_t n = 0; n < s.N; ++n) pad_split_phases(s, layout, x + n * s.C * HW, xs + n * split_floats);
    };
    const Filters filters(w, Kg, CRS, columns, s.groups == 1 ? cache : nullptr);
    const auto product = [&](int64_t m0, int64_t m1, const float* xs) {  // and its rows scattered to y
      filters.rows(m0, m1, columns, Im2col(s, xs, split_floats, layout), yt.get(), bias, relu);
      scatter_batch(yt.get() + m0 * columns, s.N, s.K, m0, m1 - m0, PQ, y);
    };
    // Each thread its own copy of the images (filters_from_own_copies): both builds in one process, calls alternated,
    // median of per-pair time ratios, 2 threads, in minutes when the host ran the vCPUs near / far apart: res5a
    // 3x3/2 n=8 (512 -> 512 on 14 x 14, 392 columns) 0.96x / 1.24x, 256 -> 256 3x3/2 on 14 x 14 n=4 1.01x / 1.68x.
    if (copied && s.groups == 1 &&
        filters_from_own_copies(Kg, columns, CRS, s.N * split_floats, copy_all, product))
      return;
    const CachedBlock<float> xs(s.N * split_floats);
    for (int64_t g = 0; g < s.groups; ++g) {
      const Epilogue epi = filter_epilogue(bias, g * Kg, relu);
      const float* xg = x + g * Cg * HW;
      if (copied)
        parallel_for(s.N, threads_for(s.N * split_floats, 1 << 18),
                     [&](int64_t n) { pad_split_phases(sg, layout, xg + n * s.C * HW, xs.get() + n * split_floats); });
      const float* xi = copied ? xs.get() : xg;  // the images im2col reads, image_stride apart
      const int64_t image_stride = copied ? split_floats : s.C * HW;
      sgemm(Trans::no, Kg, s.N * PQ, CRS, 1.0f, w + g * Kg * CRS, CRS,
            Im2col(s, xi, image_stride, layout), 0.0f, yt.get(), s.N * PQ, epi);
      scatter_batch(yt.get(), s.N, s.K, g * Kg, Kg, PQ, y);
    }
    return;
  }
  const Filters filters(w, Kg, CRS, PQ, s.groups == 1 ? cache : nullptr);
  const auto split = [&](float* xs) { pad_split_phases(s, layout, x, xs); };
  const auto product = [&](int64_t m0, int64_t m1, const float* xs) {
    filters.rows(m0, m1, PQ, Im2col(s, xs, 0, layout), y, bias, relu);
  };
  if (copied && s.N * s.groups == 1 && filters_from_own_copies(Kg, PQ, CRS, split_floats, split, product))
    return;
  for_each_task(s.N * s.groups, s.N * s.K * PQ * CRS, [&](int64_t task) {
    const int64_t n = task / s.groups, g = task % s.groups;
    const float* xg = x + (n * s.C + g * Cg) * HW;
    float* yg = y + (n * s.K + g * Kg) * PQ;
    const float* bg = bias ? bias + g * Kg : nullptr;
    const Filters group_filters(w + g * Kg * CRS, Kg, CRS, PQ, nullptr);
    const Filters& f = s.groups == 1 ? filters : group_filters;
    if (is_pointwise(s)) {
      f.all(PQ, MatrixB(Trans::no, xg, HW), yg, bg, relu);
    } else {
      const CachedBlock<float> xs(split_floats);
      if (copied) pad_split_phases(sg, layout, xg, xs.get());
      f.all(PQ, Im2col(s, copied ? xs.get() : xg, 0, layout), yg, bg, relu);
    }
  });
}

void conv2d_backward_weight_fast(const ConvShape& s, const float* dy, const float* x, float* dw, float* db) {
  const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups, RS = s.R * s.S, CRS = Cg * RS, PQ = s.P * s.Q;
  const int64_t HW = s.H * s.W;
  const int64_t wsize = s.K * CRS;
  const auto bias_apart = [&] {  // the bias gradient in its own pass over dy
    if (db) conv2d_backward_bias_fast(s, dy, db);
  };
  if (is_depthwise(s)) {
    conv2d_backward_weight_depthwise(s, dy, x, dw);
    bias_apart();
    return;
  }
  if (s.N == 0) {
    std::fill(dw, dw + wsize, 0.0f);
    bias_apart();
    return;
  }
  // the kernels that pass over dy image by image (fused Winograd, over filters, or direct), the bias gradient in the
  // same pass
  const ConvWinogradFusedWeightKernel fused = kernels().conv_winograd_fused_weight;
  if (fused && conv2d_winograd_fused_weight_applies(s) && fused(s, conv2d_winograd_fused_weight_tile(s), dy, x, dw, db))
    return;
  if (kernels().conv_filter_vector_weight(s, dy, x, dw, db)) return;
  if (conv2d_direct_weight_applies(s)) {
    kernels().conv_direct_weight(s, dy, x, dw, db);
    return;
  }
  const ConvWinogradWeightKernel winograd = kernels().conv_winograd_weight;
  if (conv2d_winograd_weight_applies(s) && winograd(s, conv2d_winograd_weight_tile(s), dy, x, dw)) {
    bias_apart();
    return;
  }
  if (is_strided_1x1(s)) {
    CachedBlock<float> xs(s.N * s.C * s.P * s.Q);
    const ConvShape t = pointwise_on_subsampled(s, x, xs.get());
    conv2d_backward_weight_fast(t, dy, xs.get(), dw, db);
    return;
  }
  // Im2colT reads images in a SplitLayout: padded or horizontally strided inputs are copied so first (an
  // unpadded, unstrided x is already so laid out).
  const bool copied = !is_pointwise(s) && (s.pad_h > 0 || s.pad_w > 0 || s.stride_w > 1);
  const SplitLayout layout(s);
  const int64_t image_floats = s.C * layout.plane;
  if (folds_batch(s)) {
    // Few pixels per image: one product per group over all images' pixels, dY_g packed as its A (pack_batch_a;
    // per-image or per-chunk products of a few hundred pixels would each read and write a whole dW); the engine's
    // threads split its output. Workspace: the packed dY_g and, when copied, all images.
    const CachedBlock<float> xp(copied ? s.N * image_floats : 0);
    if (copied)
      parallel_for(s.N, threads_for(s.N * image_floats, 1 << 18),
                   [&](int64_t n) { pad_split_phases(s, layout, x + n * s.C * HW, xp.get() + n * image_floats); });
    const float* xs = copied ? xp.get() : x;
    const PackedA a{choose_tile(kernels().gemm, Kg, CRS), Kg, s.N * PQ};
    const CachedBlock<float> dyg(a.floats());
    for (int64_t g = 0; g < s.groups; ++g) {
      pack_batch_a(dy, s.K, g * Kg, PQ, a, dyg.get());
      sgemm(a, dyg.get(), CRS, Im2colT(s, xs + g * Cg * layout.plane, image_floats, layout), 0.0f,
            dw + g * Kg * CRS, CRS);
    }
    bias_apart();
    return;
  }
  // A fixed number of chunks of the N*P*Q pixels, each summing its pieces in order into its own partial; partials
  // are then added in chunk order. Neither depends on the thread count. Chunks are runs of whole images, up to 8;
  // with fewer than 8 images and a narrow dW (fewer than kNarrowTaps taps: the product's threads would split its
  // rows, each packing all of B), up to 8 runs of pixels, which may cut an image (measured 2 threads, ResNet-50
  // conv1 at batch 1, 147 taps: 3.1 -> 2.5 ms; AlexNet conv1, 363 taps, 1.6 -> 2.5 ms, hence the limit).
  const int64_t pixels = s.N * PQ;
  const bool by_pixels = s.N < 8 && CRS < kNarrowTaps;
  const int64_t chunks = by_pixels ? std::clamp<int64_t>(pixels / kMinChunkPixels, 1, 8) : std::min<int64_t>(s.N, 8);
  const auto chunk_start = [&](int64_t chunk) {
    return by_pixels ? chunk * pixels / chunks : chunk * s.N / chunks * PQ;
  };
  // each chunk's partial: dW itself (chunk 0 writes dw) or, taps as rows (weight_product_gathered), its transpose
  // per group
  const GemmTile& gathered = gathered_tile(CRS, Kg);
  const bool by_taps = !is_pointwise(s) && taps_as_rows(s, gathered);
  const int64_t extra_parts = by_taps ? chunks : chunks - 1;
  const CachedBlock<float> extra(extra_parts * wsize);
  // Chunks of whole images are the bias gradient's own chunks (image_chunks): each task adds its images' bias
  // partials after their products, while the other threads' products run (the bias pass alone reads all of dy
  // from memory: 9% of ResNet-50 conv1's backward at batch 8).
  const bool bias_here = db && !by_pixels;
  const int64_t per_chunk = bias_here ? bias_partial_floats(s) : 0;
  // taps as rows: each block of dy's pixels is added to the partials just after the product packs it, from cache
  // (the bias pass read all of dy from memory again: 7% of ResNet-50 conv1's backward at batch 8); the same order
  const bool bias_fused = bias_here && by_taps && PQ >= kBiasLanes;
  std::vector<float> bias_parts(static_cast<size_t>(chunks * per_chunk), 0.0f);
  // One image, in one chunk, whose product's threads would take runs of its taps: each thread takes a run of the
  // channels (their taps), copying those channels of the image itself (rows of every channel, copied by the threads
  // together, crossed between the cores), and a run of the filters' bias partials (measured with the input
  // gradient's: conv2d_backward_input_fast).
  const int nt = chunks == 1 && !by_taps && !is_pointwise(s) ? channel_share_threads(s) : 0;
  if (nt > 0) {
    parallel_for(nt, nt, [&](int64_t t) {
      ConvShape own = s;  // its channels
      const int64_t c0 = t * s.C / nt, c1 = (t + 1) * s.C / nt;
      own.C = c1 - c0;
      const CachedBlock<float> xp(copied ? own.C * layout.plane : 0);
      if (copied) pad_split_phases(own, layout, x + c0 * HW, xp.get());
      sgemm(Trans::no, Kg, own.C * RS, PQ, 1.0f, dy, PQ, Im2colT(own, copied ? xp.get() : x + c0 * HW, 0, layout),
            0.0f, dw + c0 * RS, CRS);
      if (bias_here) bias_partials_add(s, dy, t * s.K / nt, (t + 1) * s.K / nt, bias_parts.data());
    });
    if (bias_here)
      bias_from_partials(s, bias_parts.data(), chunks, db);
    else
      bias_apart();
    return;
  }
  // Copied images: all of them first where chunks share images (fewer images than chunks), else each chunk copies
  // the image it is summing.
  const bool copy_first = copied && s.N < chunks;
  const CachedBlock<float> all(copy_first ? s.N * image_floats : 0);
  if (copy_first)  // one image at a time, each copied by rows on the threads
    for (int64_t n = 0; n < s.N; ++n) pad_split_phases(s, layout, x + n * s.C * HW, all.get() + n * image_floats);
  for_each_task(chunks, s.N * s.K * PQ * CRS, [&](int64_t chunk) {
    float* part = by_taps ? extra.get() + chunk * wsize : chunk == 0 ? dw : extra.get() + (chunk - 1) * wsize;
    const CachedBlock<float> xp(copied && !copy_first ? image_floats : 0);
    const int64_t begin = chunk_start(chunk), end = chunk_start(chunk + 1);
    for (int64_t n = begin / PQ, at = begin; at < end; ++n) {
      const int64_t first = at - n * PQ, len = std::min(end, (n + 1) * PQ) - at;  // pixels [first, first+len) of n
      const float* xn = copy_first ? all.get() + n * image_floats : x + n * s.C * HW;
      if (copied && !copy_first) {
        pad_split_phases(s, layout, xn, xp.get());
        xn = xp.get();
      }
      for (int64_t g = 0; g < s.groups; ++g) {
        const float* dyg = dy + (n * s.K + g * Kg) * PQ;
        float* dwg = part + g * Kg * CRS;
        const float beta = at == begin ? 0.0f : 1.0f;
        if (by_taps)
          weight_product_gathered(s, gathered, layout, xn + g * Cg * layout.plane, dyg, first, len, beta != 0.0f,
                                  dwg, bias_fused ? &bias_parts[chunk * per_chunk + g * Kg * kBiasLanes] : nullptr);
        else if (is_pointwise(s))
          sgemm(Trans::no, Trans::yes, Kg, Cg, len, 1.0f, dyg + first, PQ, xn + g * Cg * HW + first, HW, beta, dwg,
                CRS);
        else
          sgemm(Trans::no, Kg, CRS, len, 1.0f, dyg + first, PQ,
                Im2colT(s, xn + g * Cg * layout.plane, 0, layout, first), beta, dwg, CRS);
      }
      if (bias_here && !bias_fused) bias_partials_add(s, dy + n * s.K * PQ, 0, s.K, &bias_parts[chunk * per_chunk]);
      at += len;
    }
  });
  if (by_taps) {  // dw[g][k][j] = the sum over chunks, in chunk order, of their (j, k) elements of group g
    for (int64_t g = 0; g < s.groups; ++g)
      for (int64_t k = 0; k < Kg; ++k)
        for (int64_t j = 0; j < CRS; ++j) {
          const int64_t at = g * Kg * CRS + j * Kg + k;
          float sum = extra.get()[at];
          for (int64_t chunk = 1; chunk < chunks; ++chunk) sum += extra.get()[chunk * wsize + at];
          dw[(g * Kg + k) * CRS + j] = sum;
        }
  } else {
    for (int64_t chunk = 1; chunk < chunks; ++chunk) {
      const float* part = extra.get() + (chunk - 1) * wsize;
      for (int64_t i = 0; i < wsize; ++i) dw[i] += part[i];
    }
  }
  if (bias_here)
    bias_from_partials(s, bias_parts.data(), chunks, db);
  else
    bias_apart();
}

int64_t bias_partial_floats(const ConvShape& s) {
  const int64_t PQ = s.P * s.Q;
  return PQ < kBiasLanes ? s.K * PQ : s.K * kBiasLanes;
}

void bias_from_partials(const ConvShape& s, float* parts, int64_t chunks, float* db) {
  const int64_t PQ = s.P * s.Q, per_chunk = bias_partial_floats(s);
  add_chunks_into_first(parts, chunks, per_chunk, 0, per_chunk);
  for (int64_t k = 0; k < s.K; ++k) {
    if (PQ < kBiasLanes) {
      float sum = 0.0f;
      for (int64_t i = 0; i < PQ; ++i) sum += parts[k * PQ + i];
      db[k] = sum;
      continue;
    }
    float* lanes = &parts[k * kBiasLanes];
    for (int width = kBiasLanes / 2; width >= 1; width /= 2)
      for (int j = 0; j < width; ++j) lanes[j] += lanes[j + width];
    db[k] = lanes[0];
  }
}

// db[k] = sum of dy[:, k] over images and pixels. The work is cut into fixed items, (image chunk, block of
// filters): at most 8 image chunks, and where there are fewer images, as many filter blocks as make 8 items (batch
// 1 runs its filters in parallel). Items go to the threads in order, so each thread reads the images the previous
// pass (pooling's backward, or the weight gradient) left in its own cache; each item sums its images into lanes per
// filter, and the chunks are added in chunk order, the lanes in a fixed tree: the same order whatever the thread
// count. Planes of fewer than 16 pixels (a fully connected layer's (N, K, 1, 1)) are summed as whole rows of
// filters x pixels instead, one vector per 16 consecutive floats.
void conv2d_backward_bias_fast(const ConvShape& s, const float* dy, float* db) {
  const int64_t K = s.K, row = K * s.P * s.Q, chunks = image_chunks(s);
  const int64_t blocks = std::min<int64_t>(K, (8 + chunks - 1) / chunks);  // filter blocks per chunk
  const int64_t per_chunk = bias_partial_floats(s);
  std::vector<float> parts(static_cast<size_t>(chunks * per_chunk), 0.0f);
  parallel_for(chunks * blocks, threads_for(s.N * row, 1 << 16), [&](int64_t item) {
    const int64_t chunk = item / blocks, block = item % blocks;
    const int64_t k0 = K * block / blocks, k1 = K * (block + 1) / blocks;
    for (int64_t n = chunk * s.N / chunks; n < (chunk + 1) * s.N / chunks; ++n)
      bias_partials_add(s, dy + n * row, k0, k1, &parts[chunk * per_chunk]);
  });
  bias_from_partials(s, parts.data(), chunks, db);
}

void conv2d_backward_input_fast(const ConvShape& s, const float* dy, const float* w, float* dx) {
  const int64_t Cg = s.C / s.groups, Kg = s.K / s.groups, RS = s.R * s.S, CRS = Cg * RS, PQ = s.P * s.Q;
  const int64_t HW = s.H * s.W;
  if (is_depthwise(s)) {
    conv2d_backward_input_depthwise(s, dy, w, dx);
    return;
  }
  const ConvShape t{s.N,     s.K,  s.P, s.Q, s.C, s.R, s.S, s.H, s.W, 1, 1, s.dil_h * (s.R - 1) - s.pad_h,
                    s.dil_w * (s.S - 1) - s.pad_w, s.dil_h, s.dil_w, s.groups};
  if (!is_pointwise(s) && transposed_route_pays(s, t)) {
    // dx (N, C, H, W) = forward conv t of dy (N, K, P, Q) with wt (C, Kg, R, S), the filters flipped in R and S
    // with in/out channels swapped per group: wt[g*Cg + c][k][r][t] = w[g*Kg + k][c][R-1-r][S-1-t].
    // Blocks of 16 input channels in parallel; a block reads each filter's taps for its channels as one run and
    // writes 16 rows of wt front to back (one channel's row at a time gathered 36-byte pieces from every filter,
    // a cache line and a page apart: measured 2 ns an element on 512 x 512 x 3 x 3).
    constexpr int64_t kBlock = 16;
    const int64_t blocks = (Cg + kBlock - 1) / kBlock;
    // wt from the buffer cache, as are the folded routes' gathered dY and columns below: a fresh vector (res5a's
    // 9.4 MB, zeroed and faulted in at every call) was ~25% of res5a's batch-1 backward with the flip; both builds
    // in one process, calls alternated, median of per-pair time ratios, 2 threads, backward: res5a n=1 1.12x, res4a
    // n=1 1.06x, 256 -> 512 3x3/2 n=8 1.05x, res5a n=32 1.01x
    const CachedBlock<float> wt(s.K * CRS);
    parallel_for(s.groups * blocks, threads_for(s.K * CRS, 1 << 16), [&](int64_t task) {
      const int64_t g = task / blocks, c0 = task % blocks * kBlock, c1 = std::min(Cg, c0 + kBlock);
      for (int64_t k = 0; k < Kg; ++k)
        for (int64_t c = c0; c < c1; ++c) {
          const float* taps = w + ((g * Kg + k) * Cg + c) * RS;
          float* out = wt.get() + ((g * Cg + c) * Kg + k) * RS;
          for (int64_t rt = 0; rt < RS; ++rt) out[rt] = taps[RS - 1 - rt];
        }
    });
    conv2d_forward_fast(t, dy, wt.get(), nullptr, false, dx);
    // t reads dy zero-padded: a non-finite weight times that padding (inf * 0) gives NaN where dx, which sums only
    // dy's elements, may be finite. Only a non-finite weight does that, and only where dx then is not finite: the
    // smaller of w and dx is checked first (a w of 9.4 MB checked every call cost res5a's batch-1 backward 2-4%),
    // and with a non-finite weight dx is computed again by the col2im routes below, whose products meet only dy's
    // elements.
    const int64_t weights = s.K * CRS, inputs = s.N * s.C * HW;
    if (weights <= inputs ? !any_non_finite(w, weights)
                          : !any_non_finite(dx, inputs) || !any_non_finite(w, weights))
      return;
  }
  if (s.N > 1 && PQ < kFoldBelowPixels && large_weights(s)) {
    // Few pixels per image and large weights (late layers, pointwise or strided): dY_g gathered over the batch, and
    // the columns of as many whole images as fit in kFoldColumnFloats computed by one product, so that W_g is packed
    // once per such block, not once per image or per few dozen columns; then each image's channels scattered back
    // (col2im) on the threads. A pointwise layer's columns are dX_g itself: all images in one block, copied back
    // (col2im measured ~10-20% slower there). (Measured AVX-512, 2 threads, alternating, median ms, n=8 backward:
    // 512 -> 512 3x3/2 on 14x14 35 -> 27, 256 -> 256 on 28x28 31 -> 28; with ResNet-20's 18 Ki weights, 32 -> 64
    // on 16x16 at n=32, 2.3 -> 2.8, hence large weights only.)
    const bool pointwise = is_pointwise(s);
    const int64_t images =
        pointwise ? s.N : std::clamp<int64_t>(kFoldColumnFloats / std::max<int64_t>(CRS * PQ, 1), 1, s.N);
    const SplitLayout layout(s);
    const CachedBlock<float> dyg(Kg * s.N * PQ), col(CRS * images * PQ);
    for (int64_t g = 0; g < s.groups; ++g) {
      gather_batch(dy, s.N, s.K, g * Kg, Kg, PQ, dyg.get());
      for (int64_t n0 = 0; n0 < s.N; n0 += images) {
        const int64_t count = std::min(images, s.N - n0), nb = count * PQ;
        sgemm(Trans::yes, Trans::no, CRS, nb, Kg, 1.0f, w + g * Kg * CRS, CRS, dyg.get() + n0 * PQ, s.N * PQ,
              0.0f, col.get(), nb);
        if (pointwise) {
          scatter_batch(col.get(), s.N, s.C, g * Cg, Cg, PQ, dx);
          continue;
        }
        parallel_for(count * Cg, threads_for(CRS * nb, 1 << 16), [&](int64_t task) {
          const int64_t i = task / Cg, c = task % Cg;
          std::vector<float> xs(static_cast<size_t>(layout.plane), 0.0f);
          col2im_add(s, layout, col.get() + c * RS * nb + i * PQ, nb, 0, PQ, xs.data());
          unsplit_planes(s, layout, xs.data(), 1, dx + ((n0 + i) * s.C + g * Cg + c) * HW);
        });
      }
    }
    return;
  }
  // columns per block: the (CRS x block) column buffer stays within 256 Ki floats (at least 16 columns)
  const int64_t block = std::min(PQ, std::max<int64_t>(16, (int64_t(1) << 18) / std::max<int64_t>(CRS, 1)));
  // One image: each thread takes a run of the channels, computing their columns, adding them into its own copy of
  // their planes, and writing their planes of dx (the products' threads took runs of all channels' columns, the
  // planes were zeroed by one thread, and each block's two parallel regions waited for each other). With the weight
  // gradient's (conv2d_backward_weight_fast), both builds in one process, calls alternated, median of per-pair time
  // ratios, AMD EPYC Zen 4, 2 threads, batch-1 backward, in minutes when the host ran the vCPUs near / far apart:
  // 3x3/2 128 -> 128 on 56 x 56 1.04x / 1.25x, 256 -> 256 on 28 x 28 1.01x / 1.12x, 512 -> 512 on 14 x 14 1.00x /
  // 1.01x; ResNet-50's res3a 1x1/2 (256 -> 512 on 56 x 56) 1.05x / 1.42x.
  const int nt = is_pointwise(s) ? 0 : channel_share_threads(s);
  if (nt > 0) {
    const SplitLayout layout(s);
    parallel_for(nt, nt, [&](int64_t t) {
      const int64_t c0 = t * s.C / nt, channels = (t + 1) * s.C / nt - c0, rows = channels * RS;
      const CachedBlock<float> col(rows * block), xs(channels * layout.plane);
      std::fill(xs.get(), xs.get() + channels * layout.plane, 0.0f);
      for (int64_t j0 = 0; j0 < PQ; j0 += block) {
        const int64_t nb = std::min(block, PQ - j0);
        sgemm(Trans::yes, Trans::no, rows, nb, Kg, 1.0f, w + c0 * RS, CRS, dy + j0, PQ, 0.0f, col.get(), nb);
        for (int64_t c = 0; c < channels; ++c)
          col2im_add(s, layout, col.get() + c * RS * nb, nb, j0, nb, xs.get() + c * layout.plane);
      }
      unsplit_planes(s, layout, xs.get(), channels, dx + c0 * HW);
    });
    return;
  }
  for_each_task(s.N, s.N * s.K * PQ * CRS, [&](int64_t n) {
    float* dxn = dx + n * s.C * HW;
    if (is_pointwise(s)) {
      for (int64_t g = 0; g < s.groups; ++g)
        sgemm(Trans::yes, Trans::no, Cg, PQ, Kg, 1.0f, w + g * Kg * CRS, CRS, dy + (n * s.K + g * Kg) * PQ, PQ,
              0.0f, dxn + g * Cg * HW, HW);
      return;
    }
    const SplitLayout layout(s);
    const CachedBlock<float> col(CRS * block), xs(Cg * layout.plane);
    for (int64_t g = 0; g < s.groups; ++g) {
      const float* dyg = dy + (n * s.K + g * Kg) * PQ;
      std::fill(xs.get(), xs.get() + Cg * layout.plane, 0.0f);
      for (int64_t j0 = 0; j0 < PQ; j0 += block) {
        const int64_t nb = std::min(block, PQ - j0);
        // col (CRS x nb) = W_g^T (CRS x Kg) x dY_g[:, j0:j0+nb]
        sgemm(Trans::yes, Trans::no, CRS, nb, Kg, 1.0f, w + g * Kg * CRS, CRS, dyg + j0, PQ, 0.0f, col.get(), nb);
        // col2im: add each column entry where the forward read it in the image's SplitLayout copy, over channels
        // (each owns its plane, so the order per element is fixed); serial when images run in parallel (threads_for
        // is 1 inside the enclosing region)
        parallel_for(Cg, threads_for(CRS * nb, 1 << 16), [&](int64_t c) {
          col2im_add(s, layout, col.get() + c * RS * nb, nb, j0, nb, xs.get() + c * layout.plane);
        });
      }
      unsplit_planes(s, layout, xs.get(), Cg, dxn + g * Cg * HW);
    }
  });
}

void conv2d_backward_fast(const ConvShape& s, const float* dy, const float* x, const float* w, float* dx, float* dw,
                          float* db) {
  if (dx && kernels().conv_channel_vector_backward(s, dy, x, w, dx, dw, db)) return;
  conv2d_backward_weight_fast(s, dy, x, dw, db);
  if (dx) conv2d_backward_input_fast(s, dy, w, dx);
}

}  // namespace convcore
