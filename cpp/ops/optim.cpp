// Optimizer steps (see optim.h): element-wise, in blocks spread over the threads for large parameters.
#include "convcore/optim.h"

#include <xmmintrin.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

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

// body(lo, hi) over [0, n) in blocks, denormals flushed (FlushDenormals); serial below 16K elements (an OpenMP
// region costs more than it saves there; above, a second core halves these passes, which run at L2 speed:
// LeNet-5's 62K parameters 105 -> 80 us).
template <typename Body>
void blocks(int64_t n, const Body& body) {
  parallel_for((n + kBlock - 1) / kBlock, threads_for(n, 1 << 14), [&](int64_t b) {
    const FlushDenormals flush;
    body(b * kBlock, std::min(n, (b + 1) * kBlock));
  });
}

// f(flags...) with each flag as a compile-time std::bool_constant: the step functions pick their block function
// (a plain loop over restrict pointers, branch-free per case, which GCC vectorises) with it.
template <typename F>
void with_flags(const F& f) {
  f();
}
template <typename F, typename... Rest>
void with_flags(const F& f, bool flag, Rest... rest) {
  const auto bind = [&](auto constant) { with_flags([&](auto... more) { f(constant, more...); }, rest...); };
  flag ? bind(std::true_type{}) : bind(std::false_type{});
}

template <typename T, bool kDecay, bool kMomentum, bool kNesterov, bool kFirst>
void sgd_block(T* __restrict p, const T* __restrict g, T* __restrict buf, int64_t n, T lr, T momentum, T keep,
               T wd) {
  for (int64_t i = 0; i < n; ++i) {
    T d = g[i];
    if constexpr (kDecay) d += wd * p[i];
    if constexpr (kMomentum) {
      const T b = kFirst ? d : momentum * buf[i] + keep * d;
      buf[i] = b;
      d = kNesterov ? d + momentum * b : b;
    }
    p[i] -= lr * d;
  }
}

template <typename T, bool kL2Decay, bool kDecoupledDecay>
void adam_block(T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict v, int64_t n, T beta1,
                T beta2, T rest1, T rest2, T step_size, T correction2, T eps, T wd, T shrink) {
  for (int64_t i = 0; i < n; ++i) {
    T gi = g[i], pi = p[i];
    if constexpr (kDecoupledDecay) pi *= shrink;
    if constexpr (kL2Decay) gi += wd * pi;
    const T mi = beta1 * m[i] + rest1 * gi, vi = beta2 * v[i] + rest2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi - step_size * (mi / (std::sqrt(vi) / correction2 + eps));
  }
}

}  // namespace

template <typename T>
void sgd_step(T* p, const T* g, T* buf, int64_t n, const SgdHyper& h, bool first_step) {
  const T lr = T(h.lr), momentum = T(h.momentum), keep = T(1 - h.dampening), wd = T(h.weight_decay);
  const bool use_momentum = h.momentum != 0;
  decltype(&sgd_block<T, false, false, false, false>) block = nullptr;
  with_flags([&](auto decay, auto with_momentum, auto nesterov,
                 auto first) { block = sgd_block<T, decay, with_momentum, nesterov, first>; },
             h.weight_decay != 0, use_momentum, use_momentum && h.nesterov, use_momentum && first_step);
  blocks(n, [&](int64_t lo, int64_t hi) {
    block(p + lo, g + lo, buf ? buf + lo : nullptr, hi - lo, lr, momentum, keep, wd);
  });
}

template <typename T>
void adam_step(T* p, const T* g, T* m, T* v, int64_t n, const AdamHyper& h, int64_t t) {
  const T beta1 = T(h.beta1), beta2 = T(h.beta2), rest1 = T(1 - h.beta1), rest2 = T(1 - h.beta2);
  const T step_size = T(h.lr / (1 - std::pow(h.beta1, double(t))));
  const T correction2 = T(std::sqrt(1 - std::pow(h.beta2, double(t)))), eps = T(h.eps);
  const T wd = T(h.weight_decay), shrink = T(1 - h.lr * h.weight_decay);
  const bool decay = h.weight_decay != 0;
  decltype(&adam_block<T, false, false>) block = nullptr;
  with_flags([&](auto l2_decay, auto decoupled_decay) { block = adam_block<T, l2_decay, decoupled_decay>; },
             decay && !h.decoupled, decay && h.decoupled);
  blocks(n, [&](int64_t lo, int64_t hi) {
    block(p + lo, g + lo, m + lo, v + lo, hi - lo, beta1, beta2, rest1, rest2, step_size, correction2, eps, wd,
          shrink);
  });
}

template void sgd_step<float>(float*, const float*, float*, int64_t, const SgdHyper&, bool);
template void sgd_step<double>(double*, const double*, double*, int64_t, const SgdHyper&, bool);
template void adam_step<float>(float*, const float*, float*, float*, int64_t, const AdamHyper&, int64_t);
template void adam_step<double>(double*, const double*, double*, double*, int64_t, const AdamHyper&, int64_t);

}  // namespace convcore
