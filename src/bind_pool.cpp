// Bindings: pooling. Arrays arrive validated from convcore/functional/pool.py;
// `geom` = (P, Q, kh, kw, stride_h, stride_w, pad_h, pad_w).
#include <array>

#include "bindings.h"
#include "convcore/pool.h"

using namespace convcore;

namespace {
using Geom = std::array<int64_t, 8>;

PoolShape make_shape(const std::array<int64_t, 4>& x, const Geom& g) {
  return PoolShape{x[0], x[1], x[2], x[3], g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]};
}

template <typename T>
std::array<int64_t, 4> dims(const CArray<T>& a) {
  return {a.shape(0), a.shape(1), a.shape(2), a.shape(3)};
}

template <typename T>
py::tuple max_forward(const CArray<T>& x, const Geom& g) {
  const PoolShape s = make_shape(dims(x), g);
  auto y = new_array<T>({s.N, s.C, s.P, s.Q});
  auto idx = new_array<int64_t>({s.N, s.C, s.P, s.Q});
  const T* px = x.data();
  T* py_ = y.mutable_data();
  int64_t* pi = idx.mutable_data();
  {
    py::gil_scoped_release release;
    max_pool2d_forward_ref<T>(s, px, py_, pi);
  }
  return py::make_tuple(y, idx);
}

template <typename T>
CArray<T> max_backward(const CArray<T>& dy, const CArray<int64_t>& idx, const std::array<int64_t, 4>& x_shape,
                       const Geom& g) {
  const PoolShape s = make_shape(x_shape, g);
  auto dx = new_array<T>({s.N, s.C, s.H, s.W});
  const T* pdy = dy.data();
  const int64_t* pi = idx.data();
  T* pdx = dx.mutable_data();
  py::gil_scoped_release release;
  max_pool2d_backward_ref<T>(s, pdy, pi, pdx);
  return dx;
}

template <typename T>
CArray<T> avg_forward(const CArray<T>& x, const Geom& g, bool count_include_pad) {
  const PoolShape s = make_shape(dims(x), g);
  auto y = new_array<T>({s.N, s.C, s.P, s.Q});
  const T* px = x.data();
  T* py_ = y.mutable_data();
  py::gil_scoped_release release;
  avg_pool2d_forward_ref<T>(s, count_include_pad, px, py_);
  return y;
}

template <typename T>
CArray<T> avg_backward(const CArray<T>& dy, const std::array<int64_t, 4>& x_shape, const Geom& g,
                       bool count_include_pad) {
  const PoolShape s = make_shape(x_shape, g);
  auto dx = new_array<T>({s.N, s.C, s.H, s.W});
  const T* pdy = dy.data();
  T* pdx = dx.mutable_data();
  py::gil_scoped_release release;
  avg_pool2d_backward_ref<T>(s, count_include_pad, pdy, pdx);
  return dx;
}

template <typename T>
void bind_dtype(py::module_& m) {
  m.def("max_pool2d_forward", &max_forward<T>, py::arg("x"), py::arg("geom"));
  m.def("max_pool2d_backward", &max_backward<T>, py::arg("dy"), py::arg("indices"), py::arg("x_shape"),
        py::arg("geom"));
  m.def("avg_pool2d_forward", &avg_forward<T>, py::arg("x"), py::arg("geom"), py::arg("count_include_pad"));
  m.def("avg_pool2d_backward", &avg_backward<T>, py::arg("dy"), py::arg("x_shape"), py::arg("geom"),
        py::arg("count_include_pad"));
}
}  // namespace

void bind_pool(py::module_& m) {
  bind_dtype<float>(m);
  bind_dtype<double>(m);
}
