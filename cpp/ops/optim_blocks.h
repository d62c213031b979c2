// The optimizer steps' element loops, written once and compiled per ISA (optim_{scalar,avx2,avx512}.cpp): plain
// loops over restrict pointers, one per combination of the step's options (picked by with_flags, each branch-free),
// which GCC vectorises with the unit's widest vectors (they had been compiled for the baseline only: SSE2's 4-float
// square roots and divisions; LeNet-5's 62K parameters, 2 threads, each build in its own process, alternated,
// median us: AdamW 53-56 -> 30-39, SGD with momentum 23-27 -> 17-20, all parameters' blocks in one parallel loop
// as well; its training step at batch 32, both builds in one process, steps alternated, median of per-pair time
// ratios: AdamW 1.044x, SGD 1.033x; batch 64 AdamW 1.023x). The units are compiled with -ffp-contract=off: no multiply
// and add fused into an FMA, so that every ISA rounds each operation as the baseline does (sqrt and division are
// correctly rounded everywhere) and gives the same bits. Everything here has internal linkage (an anonymous
// namespace), so the per-ISA copies are never merged across units.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "convcore/optim.h"

namespace convcore {
namespace {

// f(flags...) with each flag as a compile-time std::bool_constant.
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
void sgd_loop(T* __restrict p, const T* __restrict g, T* __restrict buf, int64_t n, T lr, T momentum, T keep, T wd) {
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

template <typename T>
void sgd_block(T* p, const T* g, T* buf, int64_t n, const SgdTerms<T>& k, bool first_step) {
  with_flags(
      [&](auto decay, auto momentum, auto nesterov, auto first) {
        sgd_loop<T, decay, momentum, nesterov, first>(p, g, buf, n, k.lr, k.momentum, k.keep, k.wd);
      },
      k.decay, k.use_momentum, k.use_momentum && k.nesterov, k.use_momentum && first_step);
}

template <typename T, bool kL2Decay, bool kDecoupledDecay>
void adam_loop(T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict v, int64_t n,
               const AdamTerms<T> k) {
  for (int64_t i = 0; i < n; ++i) {
    T gi = g[i], pi = p[i];
    if constexpr (kDecoupledDecay) pi *= k.shrink;
    if constexpr (kL2Decay) gi += k.wd * pi;
    const T mi = k.beta1 * m[i] + k.rest1 * gi, vi = k.beta2 * v[i] + k.rest2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi - k.step_size * (mi / (std::sqrt(vi) / k.correction2 + k.eps));
  }
}

template <typename T>
void adam_block(T* p, const T* g, T* m, T* v, int64_t n, const AdamTerms<T>& k) {
  with_flags([&](auto l2_decay, auto decoupled_decay) { adam_loop<T, l2_decay, decoupled_decay>(p, g, m, v, n, k); },
             k.l2_decay, k.decoupled_decay);
}

OptimKernels optim_kernels() {
  return {sgd_block<float>, sgd_block<double>, adam_block<float>, adam_block<double>};
}

}  // namespace
}  // namespace convcore
