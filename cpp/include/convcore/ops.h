// Element-wise and row-wise ops: ReLU, softmax, cross-entropy (float and double).
#pragma once
#include <cstdint>

namespace convcore {

// y[i] = max(x[i], 0); NaN propagates.
template <typename T>
void relu_forward(const T* x, T* y, int64_t n);
// dx[i] = dy[i] where x[i] > 0, else 0.
template <typename T>
void relu_backward(const T* dy, const T* x, T* dx, int64_t n);

// x, y are (rows, cols); softmax along cols, max-subtracted.
template <typename T>
void softmax_forward(const T* x, T* y, int64_t rows, int64_t cols);

// logits (N, C), labels (N,) in [0, C). Writes probs (N, C) = softmax(logits) and returns
// mean over N of -log softmax(logits)[n, labels[n]] (log-sum-exp, stable).
template <typename T>
double cross_entropy_forward(const T* logits, const int64_t* labels, T* probs, int64_t N, int64_t C);
// dlogits = (probs - onehot(labels)) * scale, scale = dloss / N.
template <typename T>
void cross_entropy_backward(const T* probs, const int64_t* labels, T* dlogits, int64_t N, int64_t C, T scale);

}  // namespace convcore
