// Optimizer steps on the flat arrays of a model's parameters, with PyTorch's update rules, in place (one pass over
// memory where NumPy made eight to fifteen). Arithmetic in T with the hyper-parameters rounded to T; each element's
// update is independent of the others and compiled without contracting a multiply and an add into an FMA, so
// results depend neither on the thread count nor on the instruction set.
#pragma once
#include <cstdint>
#include <vector>

namespace convcore {

// d = g + weight_decay * p; with momentum: buf = d at the first step, else momentum * buf + (1 - dampening) * d,
// and d = d + momentum * buf (nesterov) or buf; then p -= lr * d. buf may be null when momentum is 0.
struct SgdHyper {
  double lr, momentum, dampening, weight_decay;
  bool nesterov;
};
template <typename T>
struct SgdArrays {  // one parameter's: n elements each; first_step: buf is new (set to d, not read)
  T* p;
  const T* g;
  T* buf;
  int64_t n;
  bool first_step;
};
template <typename T>
void sgd_step(const std::vector<SgdArrays<T>>& params, const SgdHyper& h);

// Adam (decoupled: AdamW, p *= 1 - lr * weight_decay first; else g += weight_decay * p), each parameter at its own
// step t >= 1 (the count of its own updates, this one included):
// m = beta1 * m + (1 - beta1) * g, v = beta2 * v + (1 - beta2) * g * g,
// p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps).
struct AdamHyper {
  double lr, beta1, beta2, eps, weight_decay;
  bool decoupled;
};
template <typename T>
struct AdamArrays {  // one parameter's, n elements each, and its step t
  T* p;
  const T* g;
  T* m;
  T* v;
  int64_t n, t;
};
template <typename T>
void adam_step(const std::vector<AdamArrays<T>>& params, const AdamHyper& h);

// The steps' constants in T, as the element loops use them.
template <typename T>
struct SgdTerms {
  T lr, momentum, keep, wd;  // keep: 1 - dampening
  bool decay, use_momentum, nesterov;
};
template <typename T>
struct AdamTerms {
  T beta1, beta2, rest1, rest2, step_size, correction2, eps, wd, shrink;  // rest: 1 - beta; shrink: 1 - lr * wd
  bool l2_decay, decoupled_decay;
};

// The element loops over a run of n elements, compiled per ISA (optim_blocks.h in optim_{scalar,avx2,avx512}.cpp).
struct OptimKernels {
  void (*sgd_float)(float* p, const float* g, float* buf, int64_t n, const SgdTerms<float>& k, bool first_step);
  void (*sgd_double)(double* p, const double* g, double* buf, int64_t n, const SgdTerms<double>& k, bool first_step);
  void (*adam_float)(float* p, const float* g, float* m, float* v, int64_t n, const AdamTerms<float>& k);
  void (*adam_double)(double* p, const double* g, double* m, double* v, int64_t n, const AdamTerms<double>& k);
};
OptimKernels optim_kernels_scalar();
OptimKernels optim_kernels_avx2();
OptimKernels optim_kernels_avx512();

}  // namespace convcore
