// Optimizer steps (see optim.h): element-wise, in blocks spread over the threads for large parameters.
#include "convcore/optim.h"

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "convcore/threads.h"

namespace convcore {
namespace {

constexpr int64_t kBlock = 1 << 15;  // elements per work unit

// body(lo, hi) over [0, n) in blocks; serial below ~256K elements (an OpenMP region costs more than it saves).
template <typename Body>
void blocks(int64_t n, const Body& body) {
  parallel_for((n + kBlock - 1) / kBlock, threads_for(n, 1 << 18),
               [&](int64_t b) { body(b * kBlock, std::min(n, (b + 1) * kBlock)); });
}

// f(a, b, c, d) with each flag as a compile-time std::bool_constant, so that every case's loop is branch-free and
// vectorises.
template <typename F>
void with_flags(bool a, bool b, bool c, bool d, const F& f) {
  const auto one = [](bool flag, const auto& g) { flag ? g(std::true_type{}) : g(std::false_type{}); };
  one(a, [&](auto A) { one(b, [&](auto B) { one(c, [&](auto C) { one(d, [&](auto D) { f(A, B, C, D); }); }); }); });
}

}  // namespace

template <typename T>
void sgd_step(T* p, const T* g, T* buf, int64_t n, const SgdHyper& h, bool first_step) {
  const T lr = T(h.lr), momentum = T(h.momentum), keep = T(1 - h.dampening), wd = T(h.weight_decay);
  with_flags(h.weight_decay != 0, h.momentum != 0, h.nesterov, first_step,
             [&](auto decay, auto use_momentum, auto nesterov, auto first) {
               blocks(n, [&](int64_t lo, int64_t hi) {
                 T* __restrict pp = p;  // local copies: loads through the captured references did not vectorise
                 T* __restrict bp = buf;
                 const T* __restrict gp = g;
                 for (int64_t i = lo; i < hi; ++i) {
                   T d = gp[i];
                   if constexpr (decay) d += wd * pp[i];
                   if constexpr (use_momentum) {
                     const T b = first ? d : momentum * bp[i] + keep * d;
                     bp[i] = b;
                     d = nesterov ? d + momentum * b : b;
                   }
                   pp[i] -= lr * d;
                 }
               });
             });
}

// One block of Adam's update (a plain function with restrict pointers: GCC did not vectorise it inside the lambdas).
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

template <typename T>
void adam_step(T* p, const T* g, T* m, T* v, int64_t n, const AdamHyper& h, int64_t t) {
  const T beta1 = T(h.beta1), beta2 = T(h.beta2), rest1 = T(1 - h.beta1), rest2 = T(1 - h.beta2);
  const T step_size = T(h.lr / (1 - std::pow(h.beta1, double(t))));
  const T correction2 = T(std::sqrt(1 - std::pow(h.beta2, double(t)))), eps = T(h.eps);
  const T wd = T(h.weight_decay), shrink = T(1 - h.lr * h.weight_decay);
  const bool decay = h.weight_decay != 0;
  const auto block = decay && h.decoupled ? adam_block<T, false, true>
                     : decay              ? adam_block<T, true, false>
                                          : adam_block<T, false, false>;
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
