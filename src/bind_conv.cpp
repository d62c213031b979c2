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
  CoreCall call;
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

// (dx or None, dw, db or None) of conv2d_forward given dy.
template <typename T>
py::tuple backward(const CArray<T>& dy, const CArray<T>& x, const CArray<T>& w, const ConvGeom& g, bool input_grad,
                   bool bias_grad, bool reference) {
  const ConvShape s = conv_shape(dims(x), dims(w), g);
  auto dw = new_array<T>({w.shape(0), w.shape(1), w.shape(2), w.shape(3)});
  std::optional<CArray<T>> dx, db;
  if (input_grad) dx = new_array<T>({s.N, s.C, s.H, s.W});
  if (bias_grad) db = new_array<T>({s.K});
  const T *pdy = dy.data(), *px = x.data(), *pw = w.data();
  T* pdw = dw.mutable_data();
  T* pdx = dx ? dx->mutable_data() : nullptr;
  T* pdb = db ? db->mutable_data() : nullptr;
  const auto run = [&] {
    if constexpr (std::is_same_v<T, float>) {
      if (!reference) return conv2d_backward_fast(s, pdy, px, pw, pdx, pdw, pdb);
    }
    conv2d_backward_weight_ref<T>(s, pdy, px, pdw);
    if (pdx) conv2d_backward_input_ref<T>(s, pdy, pw, pdx);
    if (pdb) conv2d_backward_bias_ref<T>(s, pdy, pdb);
  };
  {
    CoreCall call;
    run();
  }
  const auto or_none = [](const std::optional<CArray<T>>& a) { return a ? py::object(*a) : py::object(py::none()); };
  return py::make_tuple(or_none(dx), dw, or_none(db));
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
  CoreCall call;
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
  m.def("conv2d_backward", &backward<T>, py::arg("dy"), py::arg("x"), py::arg("w"), py::arg("geom"),
        py::arg("input_grad") = true, py::arg("bias_grad") = true, py::arg("reference") = false);
  m.def("conv2d_backward_bias", &backward_bias<T>, py::arg("dy"), py::arg("reference") = false);
}
}  // namespace

void bind_conv(py::module_& m) {
  bind_dtype<float>(m);
  bind_dtype<double>(m);
}
