// Where the Winograd forward convolution and weight gradient, on the engine and fused (conv_winograd.h, one per ISA in
// the dispatch table), apply.
#include <algorithm>
#include <cstdint>

#include "convcore/conv.h"

namespace convcore {
namespace {
// Fewer output tiles than this leave the filter transform (16*K*C floats written, F(2x2)) unpaid: the im2col GEMM is
// faster. Both builds in one process, calls alternated, median of per-pair time ratios, AMD Zen 4, 2 threads,
// batch-1 forward, Winograd against the im2col GEMM: 14 x 14 maps (49 tiles, 8x48's 48 columns and one added by
// the wide microkernels) 256 channels 1.49x, 128 1.46x, 512 1.28x, 64 1.18x, the input gradient of 256 1.11x; 1
// thread 1.22-1.49x; AVX2 (select_isa; per-second windows, the machine's phases) 256 channels 1.40x, 512 1.16x,
// 128 1.27-1.44x, 64 1.19-1.24x, the input gradient of 256 1.03x. Small maps with 49-63 tiles in a batch: 256
// channels at 10 x 10 n=2 1.30-1.40x (1 thread 1.40x), at 5 x 5 n=6 1.02-1.03x, 512 at 6 x 6 n=7 1.17-1.20x, 128 at
// 9 x 9 n=2 0.81-1.35x (1 thread 1.28x); with a CI run loading the other core 0.73-0.86x. Fewer tiles slower: 12 x 12
// maps (36 tiles) of 256 channels 0.66x, 10 x 10 0.61x, 8 x 8 0.84x, 7 x 7 0.39x (0.74x at batch 2, 32 tiles).
constexpr int64_t kMinTiles = 49;
// The transforms cost per input and output element, the products per channel pair: with fewer than kWideChannels
// input or output channels they pay only along rows of at least kMinRowTiles tiles (measured AVX2 Zen 3, 2 threads,
// forward, median ms, Winograd -> im2col GEMM: 64 channels at 8 x 8 (ResNet-20's last stage, n=128) 7.6 -> 5.6, at
// 10 x 10 1.45 -> 1.30, at 12 x 12 1.83 -> 1.45; Winograd kept: 64 at 32 x 32 20.9 against 23.3, 128 at 8 x 8 5.4
// against 5.9, 512 at 7 x 7 53 against 68, 128 at 14 x 14 3.8 against 4.7).
constexpr int64_t kWideChannels = 128;
constexpr int64_t kMinRowTiles = 7;
// F(4x4, 3x3) transforms 36 floats per filter pair (F(2x2, 3x3) 16), more per input and output element, and computes
// more overhanging outputs where the maps are not multiples of 4: it takes layers whose 36 products per 4x4 tile do
// at most kQuadWork of F(2x2, 3x3)'s 64 per four 2x2 tiles (maps of 7, 8, 12, 16, 28, 32, 56, ...: 0.5625) and whose
// products are at least kMinQuadProducts multiply-adds (N x P x Q x C x K). Both builds in one process, calls
// alternated, median of per-pair time ratios, AMD Zen 4, 2 threads, forward, F(4x4) against F(2x2): 64 channels at 56
// x 56 n=1 1.24-1.36x, 128 at 28 x 28 n=1 1.21-1.24x, 64 at 32 x 32 n=2 1.11x, 512 at 7 x 7 n=16 1.22x, n=8 1.04x,
// 256 at 7 x 7 n=4 1.03x; 64 at 32 x 32 n=1 (4.2 M) 0.96x; 14 x 14 maps (0.73 of the products) 0.69-0.90x at n=1 to
// 8, 1.00x at n=4, 1.04x at n=32.
constexpr double kQuadWork = 0.6;
constexpr int64_t kMinQuadProducts = int64_t(1) << 23;
// The Winograd weight gradient (winograd_weight) takes the forward's layers with at least kWideChannels channels and
// filters and at least kMinWeightTiles 2x2 output tiles (the depth of its products, each of which also reads and writes
// a K x C block of sums) whose 16 multiplies per tile are at most kWeightWork of the direct sum's 9 per output (maps of
// even size or of at least 17: no overhanging tiles to speak of). Both builds in one process, calls alternated, median
// of per-pair time ratios, AMD Zen 4, 2 threads, weight gradient by F(2x2) against the im2col GEMM: 256 channels at 14
// x 14 n=32 1.60x, n=4 (196 tiles) 1.17x, n=3 1.19x, 128 at 28 x 28 n=1 1.22x (forward+backward: 1.11-1.15x, 1.05x,
// 1.14x; 128 at 28 x 28 n=8 1.28x, at 56 x 56 n=1 1.01x); fewer tiles: 256 at 14 x 14 n=1 (49) 0.83x, n=2 1.00x; 7 x 7
// maps (16 tiles of 64 outputs for 49): 512 channels n=32 1.15x, n=16 1.06x, n=12 1.00x, n=8 0.91x, 256 n=16 0.87x. 64
// channels gained in calm minutes (32 x 32 n=32 1.34x, n=1 1.35x, 56 x 56 n=8 1.29x, 224 x 224 n=8 1.23x), but their
// transforms write and read 8 floats of V and D per input and output element through L3 for 4 to 8 times fewer products
// per element, and in minutes when the machine's neighbours slowed memory the forward+backward went 0.70-0.75x (32 x 32
// n=32, 56 x 56 n=8, 224 x 224 n=1) while the im2col route, packing into L2, kept its speed: left to it.
constexpr int64_t kMinWeightTiles = 192;
constexpr double kWeightWork = 0.5;
// It takes F(4x4, 3x3) where its products (36 positions a 4x4 tile) come to at most kQuadWork of F(2x2, 3x3)'s (16 a
// 2x2 tile), the batch holds at least kMinWeightTiles 4x4 tiles and the rows at least kMinWeightQuadRow (maps of 56 x
// 56 and more: its transforms run a vector of tiles along a row, and half of a 16-float vector would stay idle on
// rows of 7). Both builds in one process, calls alternated, median of per-pair time ratios, AMD Zen 4, weight
// gradient, F(4x4) against F(2x2), 2 threads: 128 channels at 56 x 56 n=1 1.06x, n=2 1.20x, 256 at 56 x 56 n=1
// 1.13-1.17x (1 thread 1.10-1.12x), n=8 1.52x, 128 at 112 x 112 n=1 1.28x, n=4 1.40x; forced AVX2 128 at 56 x 56 n=1
// 1.39x, 256 n=1 1.27x. On 28 x 28 maps it varied with the minute and the ISA: 128 channels n=8 0.93-0.98x (1.61-1.66x
// in minutes when the machine's neighbours slowed memory and F(2x2) ran slower on 2 threads than on 1), n=16 0.97x,
// n=32 1.17x, n=4 0.91-0.93x, 256 n=2 0.83x; forced AVX2 1.02x, 1.37x, 0.92x.
constexpr int64_t kMinWeightQuadRow = 14;
// The fused Winograd forward (winograd_fused_forward) takes layers of kFusedChannels to 2 x kFusedChannels channels
// and filters whose rows hold at least kFusedMinWidth outputs (half a 16-float vector of tiles or more), and of up to 4
// x kFusedChannels on rows of 7 or 8 outputs (four tile rows a vector; ResNet-20's third stage, which the
// filter-vector kernel ran): there the products as GEMMs (16 x 16 by 16 x tiles) are too small for the engine, and
// the direct and filter-vector kernels do 2.25x the multiplies. Both builds in one process, calls alternated, median
// of per-pair time ratios, AMD Zen 4, forward, fused against the route before, 1 / 2 threads: 16 channels at 32 x 32
// n=128 1.22x / 1.14-1.25x, 32 at 16 x 16 n=128 1.39x / 1.34-1.38x, 64 at 8 x 8 n=128 1.41x / 1.40x; n=1, the
// filters transformed at every call: 16 and 32 channels 1.08-1.28x / 1.56-1.65x, 64 channels 0.90x / 0.67x (a frozen
// model keeps them: 1.38x / 1.0x). ResNet-20 inference, frozen: n=1 1.10x / 1.30x, n=128 1.13x / 1.14x; eval n=1
// 0.98x / 1.06x. Applies on AVX2 and AVX-512 (the portable kernels keep the other routes).
constexpr int64_t kFusedChannels = 16;
constexpr int64_t kFusedMinWidth = 15;
// The fused forward takes F(4x4, 3x3) where its products (36 positions a vector of tiles) come to at most
// kFusedQuadWork of F(2x2, 3x3)'s (16 a vector), the lanes either tile leaves idle counted: 0.5625 on ResNet-20's 32 x
// 32 and 16 x 16 maps, 2.25 (AVX-512) and 1.125 (AVX2) on its 8 x 8, above 0.6 on some sizes between (square maps:
// AVX-512 17 to 22 and 25 to 28, AVX2 17, 18, 21, 22, 25, 26 and 33 to 48); and where the batch holds at least
// kMinFusedQuads 4x4 tiles: its filters' transform (2.25 times F(2x2)'s, at every call but a frozen model's) and each
// task's copy of its rows are paid for by fewer tiles' products. Both builds in one process, calls alternated, median
// of per-pair time ratios, AMD Zen 4, forward, F(4x4) against F(2x2), 2 / 1 threads: 16 channels at 32 x 32 n=128
// 1.29 / 1.27x, n=4 1.25x, n=2 1.17x, n=1 0.75 / 1.21x; 32 at 16 x 16 n=128 1.33 / 1.40x, n=16 1.08x, n=8 0.98x, n=4
// 0.82x, n=1 0.44x.
constexpr double kFusedQuadWork = 0.6;
constexpr int64_t kMinFusedQuads = 256;
// The fused weight gradient (winograd_fused_weight) takes the layers of kFusedChannels to 4 x kFusedChannels channels
// and filters with at least kMinFusedWeightTiles 2x2 output tiles in the batch (each image chunk writes, sums into and
// reads back alpha^2 x K x C sums, K and C rounded up to a vector; with few images the chunks leave threads idle). Both
// builds in one process, calls alternated, median of per-pair time ratios, AMD Zen 4, 2 threads, weight gradient
// against the route before (the filter-vector kernel, or for 64 channels on maps of 16 x 16 or more the im2col GEMM):
// 16 channels at 32 x 32 n=128 1.06-1.17x (1 thread 1.09-1.21x), 32 at 16 x 16 n=128 1.52-1.55x, 64 at 8 x 8 n=128
// 1.56-1.76x, 64 at 32 x 32 n=32 1.56-1.66x, at 56 x 56 n=8 1.59x; n=1 (a single image's tile rows in chunks) 16
// channels at 32 x 32 1.25-1.52x, 64 at 32 x 32 1.39x, at 56 x 56 1.49x (1 thread 1.06x, 1.36x, 1.41x), 32 at 16 x 16
// n=8 1.33x, 64 at 8 x 8 n=16 1.42x, n=4 1.09x, n=2 0.95x; forward+backward, 64 channels at 32 x 32 n=32 1.23x, n=1
// 1.08x; forced AVX2: n=128 1.11x, 1.33x and 1.76x, 64 channels at 32 x 32 n=32 1.45x, n=1 1.07x, at 56 x 56 n=1 1.10x,
// 16 channels n=1 1.06-1.13x, 32 n=4 1.12x, n=1 0.78x, 64 at 8 x 8 n=16 1.16x, n=8 0.88x. ResNet-20's training step
// (batch 128): 1.12x at 1 and at 2 threads.
constexpr int64_t kMinFusedWeightTiles = 256;
// The fused weight gradient takes F(4x4, 3x3) where its products (36 positions a 4x4 tile) come to at most kQuadWork
// of F(2x2, 3x3)'s (16 a 2x2 tile; channels in the lanes: no idle ones) and each chunk (winograd_fused_weight_chunks)
// holds at least kMinFusedWeightQuads 4x4 tiles: each chunk writes, sums into and reads back 36 x K x C sums (F(2x2):
// 16 x K x C, for 4 times as many tiles). Both builds in one process, calls alternated, median of per-pair time ratios,
// AMD Zen 4, 2 threads, weight gradient, F(4x4) against F(2x2), by 4x4 tiles a chunk: 16 channels at 32 x 32 n=128
// (1024) 1.33x (1 thread 1.30x, forced AVX2 1.66x), 32 at 16 x 16 n=128 (256) 1.41x (1.43x, 1.43x), 64 at 8 x 8 n=128
// (64) 1.20x (1.21x, 1.09x), 64 at 56 x 56 n=2 (196) 1.20x, 64 at 112 x 112 n=1 (196) 1.31x, 16 at 32 x 32 n=8, 4, 3
// (64) 1.18x, 1.09x, 1.13x, 32 at 16 x 16 n=32 (64) 1.24x; fewer: 64 at 56 x 56 n=1 (49) 0.98x, 32 at 16 x 16 n=16 (32)
// 1.06x, 64 at 8 x 8 n=64 (32) 1.03x, n=16 (8) 0.58x, 16 and 64 channels at 32 x 32 n=1 (16) 0.74x and 0.64x.
constexpr int64_t kMinFusedWeightQuads = 64;

// 3x3 filters at stride 1, no dilation, one group: the layers every Winograd route here takes
bool plain_3x3(const ConvShape& s) {
  return s.R == 3 && s.S == 3 && s.stride_h == 1 && s.stride_w == 1 && s.dil_h == 1 && s.dil_w == 1 && s.groups == 1;
}

// 2x2 output tiles an image, and in the batch; 4x4 tiles an image
int64_t image_pairs(const ConvShape& s) { return ((s.P + 1) / 2) * ((s.Q + 1) / 2); }
int64_t batch_tiles(const ConvShape& s) { return s.N * image_pairs(s); }
int64_t image_quads(const ConvShape& s) { return ((s.P + 3) / 4) * ((s.Q + 3) / 4); }

// F(4x4, 3x3)'s 36 products a 4x4 tile come to at most kQuadWork of F(2x2, 3x3)'s 16 a 2x2 tile
bool quads_do_less(const ConvShape& s) { return 36.0 * image_quads(s) <= kQuadWork * 16.0 * image_pairs(s); }
}  // namespace

bool conv2d_winograd_applies(const ConvShape& s) {
  return plain_3x3(s) && s.C >= 16 && s.K >= 16 && s.P >= 4 && s.Q >= 4 &&
         batch_tiles(s) >= kMinTiles &&
         (std::min(s.C, s.K) >= kWideChannels || std::min(s.P, s.Q) >= 2 * kMinRowTiles - 1);
}

bool conv2d_winograd_weight_applies(const ConvShape& s) {
  const int64_t tiles = batch_tiles(s);
  return conv2d_winograd_applies(s) && std::min(s.C, s.K) >= kWideChannels && tiles >= kMinWeightTiles &&
         16 * tiles <= kWeightWork * 9 * s.N * s.P * s.Q;
}

bool conv2d_winograd_fused_applies(const ConvShape& s) {
  return plain_3x3(s) && std::min(s.C, s.K) >= kFusedChannels && s.P >= 2 && s.pad_h <= 1 && s.pad_w <= 1 &&
         ((std::max(s.C, s.K) <= 2 * kFusedChannels && s.Q >= kFusedMinWidth) ||
          (std::max(s.C, s.K) <= 4 * kFusedChannels && (s.Q == 7 || s.Q == 8)));
}

bool conv2d_winograd_fused_weight_applies(const ConvShape& s) {
  return plain_3x3(s) && std::min(s.C, s.K) >= kFusedChannels && std::max(s.C, s.K) <= 4 * kFusedChannels &&
         batch_tiles(s) >= kMinFusedWeightTiles;
}

int winograd_fused_lane_groups(int64_t tw, int lanes) {
  if (lanes == 16 && 4 * tw <= lanes) return 4;
  return 2 * tw <= lanes ? 2 : 1;
}

int conv2d_winograd_fused_tile(const ConvShape& s, int lanes) {
  const auto vectors = [&](int T) {  // vectors of tiles an image
    const int64_t th = (s.P + T - 1) / T, tw = (s.Q + T - 1) / T, G = winograd_fused_lane_groups(tw, lanes);
    return (th + G - 1) / G * ((tw + lanes / G - 1) / (lanes / G));
  };
  const int64_t quads = s.N * image_quads(s);
  return quads >= kMinFusedQuads && 36.0 * vectors(4) <= kFusedQuadWork * 16.0 * vectors(2) ? 4 : 2;
}

int conv2d_winograd_weight_tile(const ConvShape& s) {
  const bool pays = s.N * image_quads(s) >= kMinWeightTiles && (s.Q + 3) / 4 >= kMinWeightQuadRow;
  return quads_do_less(s) && pays ? 4 : 2;
}

int conv2d_winograd_fused_weight_tile(const ConvShape& s) {
  const bool pays = s.N * image_quads(s) >= kMinFusedWeightQuads * winograd_fused_weight_chunks(s, 4);
  return quads_do_less(s) && pays ? 4 : 2;
}

int conv2d_winograd_tile(const ConvShape& s) {
  return quads_do_less(s) && s.N * s.P * s.Q * s.C * s.K >= kMinQuadProducts ? 4 : 2;
}

}  // namespace convcore
