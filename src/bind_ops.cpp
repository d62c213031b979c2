// Bindings: ReLU, softmax, cross-entropy.
#include "bindings.h"
#include "convcore/ops.h"

using namespace convcore;

template <typename T>
static CArray<T> relu(const CArray<T>& x) {
  CArray<T> y(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  const T* px = x.data();
  T* py_ = y.mutable_data();
  const int64_t n = x.size();
  {
    py::gil_scoped_release release;
    relu_forward<T>(px, py_, n);
  }
  return y;
}

template <typename T>
static CArray<T> relu_grad(const CArray<T>& dy, const CArray<T>& x) {
  CArray<T> dx(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
  const T* pdy = dy.data();
  const T* px = x.data();
  T* pdx = dx.mutable_data();
  const int64_t n = x.size();
  {
    py::gil_scoped_release release;
    relu_backward<T>(pdy, px, pdx, n);
  }
  return dx;
}

template <typename T>
static CArray<T> softmax(const CArray<T>& x) {
  const int64_t rows = x.shape(0), cols = x.shape(1);
  auto y = new_array<T>({rows, cols});
  const T* px = x.data();
  T* py_ = y.mutable_data();
  {
    py::gil_scoped_release release;
    softmax_forward<T>(px, py_, rows, cols);
  }
  return y;
}

// Returns (mean loss, probs).
template <typename T>
static py::tuple cross_entropy(const CArray<T>& logits, const CArray<int64_t>& labels) {
  const int64_t N = logits.shape(0), C = logits.shape(1);
  auto probs = new_array<T>({N, C});
  const T* pl = logits.data();
  const int64_t* plab = labels.data();
  T* pp = probs.mutable_data();
  double loss;
  {
    py::gil_scoped_release release;
    loss = cross_entropy_forward<T>(pl, plab, pp, N, C);
  }
  return py::make_tuple(loss, probs);
}

template <typename T>
static CArray<T> cross_entropy_grad(const CArray<T>& probs, const CArray<int64_t>& labels, double scale) {
  const int64_t N = probs.shape(0), C = probs.shape(1);
  auto d = new_array<T>({N, C});
  const T* pp = probs.data();
  const int64_t* plab = labels.data();
  T* pd = d.mutable_data();
  {
    py::gil_scoped_release release;
    cross_entropy_backward<T>(pp, plab, pd, N, C, static_cast<T>(scale));
  }
  return d;
}

void bind_ops(py::module_& m) {
  m.def("relu", &relu<float>);
  m.def("relu", &relu<double>);
  m.def("relu_backward", &relu_grad<float>);
  m.def("relu_backward", &relu_grad<double>);
  m.def("softmax", &softmax<float>);
  m.def("softmax", &softmax<double>);
  m.def("cross_entropy", &cross_entropy<float>);
  m.def("cross_entropy", &cross_entropy<double>);
  m.def("cross_entropy_backward", &cross_entropy_grad<float>);
  m.def("cross_entropy_backward", &cross_entropy_grad<double>);
}
