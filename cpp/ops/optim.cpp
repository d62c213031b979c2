// Optimizer steps (see optim.h): element-wise, all parameters in blocks spread over the threads, each block by the
// selected ISA's loops (optim_blocks.h).
#include "convcore/optim.h"

#include <xmmintrin.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "convcore/dispatch.h"
#include "convcore/threads.h"

namespace convcore {
namespace {

constexpr int64_t kBlock = 1 << 13;  // elements per work unit

// Denormal results flushed to zero, and denormal operands read as zero, on the calling thread while in scope
// (MXCSR's FTZ and DAZ bits; the caller's MXCSR is restored on exit, so nothing else in the process sees them).
// A momentum or moment buffer whose gradient stays zero (a dead unit's weights) decays geometrically through the
// denormals, and each multiply that yields one takes a microcode assist (~100 cycles): after a few hundred steps
// of LeNet-5 on Fashion-MNIST-sized batches, half of the momentum buffers were denormal and the SGD step took
// 650 us instead of 80. A denormal is below half an ulp of any float of magnitude 2^-102 or more: such results come
// out the same.
class FlushDenormals {
 public:
  FlushDenormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ | kFlushBits); }
  ~FlushDenormals() { _mm_setcsr(saved_); }
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;

 private:
  static constexpr unsigned kFlushBits = 0x8040;  // FTZ (bit 15) | DAZ (bit 6)
  unsigned saved_;
};

// step(param, lo, hi) over every parameter's elements in blocks of kBlock, all of them in one parallel loop,
// denormals flushed (FlushDenormals); serial below 16K elements in all (an OpenMP region costs more than it saves
// there; above, a second core halves these passes, which run at L2 speed).
template <typename Arrays, typename Step>
void blocks(const std::vector<Arrays>& params, const Step& step) {
  std::vector<int64_t> first_block{0};  // parameter i's blocks are [first_block[i], first_block[i + 1])
  int64_t elements = 0;
  for (const Arrays& a : params) {
    first_block.push_back(first_block.back() + (a.n + kBlock - 1) / kBlock);
    elements += a.n;
  }
  parallel_for(first_block.back(), threads_for(elements, 1 << 14), [&](int64_t b) {
    const size_t i = std::upper_bound(first_block.begin(), first_block.end(), b) - first_block.begin() - 1;
    const int64_t lo = (b - first_block[i]) * kBlock;
    const FlushDenormals flush;
    step(params[i], lo, std::min(params[i].n, lo + kBlock));
  });
}

template <typename T>
auto sgd_kernel() {
  if constexpr (std::is_same_v<T, float>) return kernels().optim.sgd_float;
  else return kernels().optim.sgd_double;
}

template <typename T>
auto adam_kernel() {
  if constexpr (std::is_same_v<T, float>) return kernels().optim.adam_float;
  else return kernels().optim.adam_double;
}

}  // namespace

template <typename T>
void sgd_step(const std::vector<SgdArrays<T>>& params, const SgdHyper& h) {
  const bool use_momentum = h.momentum != 0;
  const SgdTerms<T> k{T(h.lr), T(h.momentum), T(1 - h.dampening), T(h.weight_decay), h.weight_decay != 0,
                      use_momentum, use_momentum && h.nesterov};
  const auto kernel = sgd_kernel<T>();
  blocks(params, [&](const SgdArrays<T>& a, int64_t lo, int64_t hi) {
    kernel(a.p + lo, a.g + lo, a.buf ? a.buf + lo : nullptr, hi - lo, k, a.first_step);
  });
}

template <typename T>
void adam_step(const std::vector<AdamArrays<T>>& params, const AdamHyper& h) {
  const bool decay = h.weight_decay != 0;
  const auto terms = [&](int64_t t) {  // the constants of step t
    return AdamTerms<T>{T(h.beta1),
                        T(h.beta2),
                        T(1 - h.beta1),
                        T(1 - h.beta2),
                        T(h.lr / (1 - std::pow(h.beta1, double(t)))),
                        T(std::sqrt(1 - std::pow(h.beta2, double(t)))),
                        T(h.eps),
                        T(h.weight_decay),
                        T(1 - h.lr * h.weight_decay),
                        decay && !h.decoupled,
                        decay && h.decoupled};
  };
  const auto kernel = adam_kernel<T>();
  blocks(params, [&](const AdamArrays<T>& a, int64_t lo, int64_t hi) {
    kernel(a.p + lo, a.g + lo, a.m + lo, a.v + lo, hi - lo, terms(a.t));
  });
}

template void sgd_step<float>(const std::vector<SgdArrays<float>>&, const SgdHyper&);
template void sgd_step<double>(const std::vector<SgdArrays<double>>&, const SgdHyper&);
template void adam_step<float>(const std::vector<AdamArrays<float>>&, const AdamHyper&);
template void adam_step<double>(const std::vector<AdamArrays<double>>&, const AdamHyper&);

}  // namespace convcore
