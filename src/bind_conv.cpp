// Bindings: convolution. Arrays arrive validated (dtype, C order, shapes) from convcore/functional/conv.py;
// `geom` = (P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups). float32 runs the fast kernels unless
// `reference` is set (tests compare the two); float64 always runs the reference kernels.
#include <array>

#include "bindings.h"
#include "convcore/conv.h"
#include "convcore/ops.h"

using namespace convcore;

namespace {

template <typename T>
std::array<int64_t, 4> dims(const CArray<T>& a) {
  return {a.shape(0), a.shape(1), a.shape(2), a.shape(3)};
}

template <typename T>
CArray<T> forward(const CArray<T>& x, const CArray<T>& w, std::optional<CArray<T>> bias, const ConvGeom& g, bool relu,
                  bool reference) {
  const ConvShape s = conv_shape(dims(x), dims(w), g);
  auto y = new_array<T>({s.N, s.K, s.P, s.Q});
  const T* pb = bias ? bias->data() : nullptr;
  const T *px = x.data(), *pw = w.data();
  T* py_ = y.mutable_data();
  py::gil_scoped_release release;
  if constexpr (std::is_same_v<T, float>) {
    if (!reference) {
      conv2d_forward_fast(s, px, pw, pb, relu, py_);
      return y;
    }
  }
  conv2d_forward_ref<T>(s, px, pw, pb, py_);
  if (relu) relu_forward<T>(py_, py_, s.N * s.K * s.P * s.Q);
  return y;
}

template <typename T>
CArray<T> backward_input(const CArray<T>& dy, const CArray<T>& w, const std::array<int64_t, 4>& x_shape,
                         const ConvGeom& g, bool reference) {
  const ConvShape s = conv_shape(x_shape, dims(w), g);
  auto dx = new_array<T>({s.N, s.C, s.H, s.W});
  const T *pdy = dy.data(), *pw = w.data();
  T* pdx = dx.mutable_data();
  py::gil_scoped_release release;
  if constexpr (std::is_same_v<T, float>) {
    if (!reference) {
      conv2d_backward_input_fast(s, pdy, pw, pdx);
      return dx;
    }
  }
  conv2d_backward_input_ref<T>(s, pdy, pw, pdx);
  return dx;
}

template <typename T>
CArray<T> backward_weight(const CArray<T>& dy, const CArray<T>& x, const std::array<int64_t, 4>& w_shape,
                          const ConvGeom& g, bool reference) {
  const ConvShape s = conv_shape(dims(x), w_shape, g);
  auto dw = new_array<T>({w_shape[0], w_shape[1], w_shape[2], w_shape[3]});
  const T *pdy = dy.data(), *px = x.data();
  T* pdw = dw.mutable_data();
  py::gil_scoped_release release;
  if constexpr (std::is_same_v<T, float>) {
    if (!reference) {
      conv2d_backward_weight_fast(s, pdy, px, pdw);
      return dw;
    }
  }
  conv2d_backward_weight_ref<T>(s, pdy, px, pdw);
  return dw;
}

template <typename T>
CArray<T> backward_bias(const CArray<T>& dy, bool reference) {
  ConvShape s{};
  s.N = dy.shape(0);
  s.K = dy.shape(1);
  s.P = dy.shape(2);
  s.Q = dy.shape(3);
  auto db = new_array<T>({s.K});
  const T* pdy = dy.data();
  T* pdb = db.mutable_data();
  py::gil_scoped_release release;
  if constexpr (std::is_same_v<T, float>) {
    if (!reference) {
      conv2d_backward_bias_fast(s, pdy, pdb);
      return db;
    }
  }
  conv2d_backward_bias_ref<T>(s, pdy, pdb);
  return db;
}

template <typename T>
void bind_dtype(py::module_& m) {
  m.def("conv2d_forward", &forward<T>, py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("geom"),
        py::arg("relu") = false, py::arg("reference") = false);
  m.def("conv2d_backward_input", &backward_input<T>, py::arg("dy"), py::arg("w"), py::arg("x_shape"),
        py::arg("geom"), py::arg("reference") = false);
  m.def("conv2d_backward_weight", &backward_weight<T>, py::arg("dy"), py::arg("x"), py::arg("w_shape"),
        py::arg("geom"), py::arg("reference") = false);
  m.def("conv2d_backward_bias", &backward_bias<T>, py::arg("dy"), py::arg("reference") = false);
}
}  // namespace

void bind_conv(py::module_& m) {
  bind_dtype<float>(m);
  bind_dtype<double>(m);
}
