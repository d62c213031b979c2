// Optimizer steps on one parameter's flat arrays, with PyTorch's update rules, in place (one pass over memory where
// NumPy made eight to fifteen). Arithmetic in T with the hyper-parameters rounded to T; each element's update is
// independent of the others, so results do not depend on the thread count.
#pragma once
#include <cstdint>

namespace convcore {

// d = g + weight_decay * p; with momentum: buf = d at the first step, else momentum * buf + (1 - dampening) * d,
// and d = d + momentum * buf (nesterov) or buf; then p -= lr * d. buf may be null when momentum is 0.
struct SgdHyper {
  double lr, momentum, dampening, weight_decay;
  bool nesterov;
};
template <typename T>
void sgd_step(T* p, const T* g, T* buf, int64_t n, const SgdHyper& h, bool first_step);

// Adam (decoupled: AdamW, p *= 1 - lr * weight_decay first; else g += weight_decay * p), step t >= 1:
// m = beta1 * m + (1 - beta1) * g, v = beta2 * v + (1 - beta2) * g * g,
// p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps).
struct AdamHyper {
  double lr, beta1, beta2, eps, weight_decay;
  bool decoupled;
};
template <typename T>
void adam_step(T* p, const T* g, T* m, T* v, int64_t n, const AdamHyper& h, int64_t t);

}  // namespace convcore
