// Bindings: conv2d forward and backward (conv1d arrives here as H == 1). Sizes are validated in convcore/.
#include <optional>

#include "bindings.h"
#include "convcore/conv.h"

using namespace convcore;

// x (N, C, H, W), w (K, C/groups, R, S); output size (P, Q) computed by convcore._validate.output_size.
template <typename T>
static ConvShape conv_shape(const CArray<T>& x, const CArray<T>& w, int64_t P, int64_t Q, int64_t stride_h,
                            int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w,
                            int64_t groups) {
  return ConvShape{x.shape(0), x.shape(1), x.shape(2), x.shape(3), w.shape(0), w.shape(2), w.shape(3),
                   P,          Q,          stride_h,   stride_w,   pad_h,      pad_w,      dil_h,
                   dil_w,      groups};
}

template <typename T>
static CArray<T> conv2d(const CArray<T>& x, const CArray<T>& w, const std::optional<CArray<T>>& bias, int64_t P,
                        int64_t Q, int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                        int64_t dil_w, int64_t groups, bool relu) {
  const ConvShape s = conv_shape(x, w, P, Q, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups);
  auto y = new_array<T>({s.N, s.K, s.P, s.Q});
  const T* px = x.data();
  const T* pw = w.data();
  const T* pb = bias ? bias->data() : nullptr;
  T* py_ = y.mutable_data();
  {
    py::gil_scoped_release release;
    conv2d_forward_ref<T>(s, px, pw, pb, relu ? Activation::relu : Activation::none, py_);
  }
  return y;
}

// Returns (dx or None, dw, db or None).
template <typename T>
static py::tuple conv2d_grad(const CArray<T>& dy, const CArray<T>& x, const CArray<T>& w, int64_t stride_h,
                             int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w,
                             int64_t groups, bool input_grad, bool bias_grad) {
  const ConvShape s = conv_shape(x, w, dy.shape(2), dy.shape(3), stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                                 groups);
  auto dw = new_array<T>({s.K, s.C / s.groups, s.R, s.S});
  std::optional<CArray<T>> dx, db;
  if (input_grad) dx = new_array<T>({s.N, s.C, s.H, s.W});
  if (bias_grad) db = new_array<T>({s.K});
  const T* pdy = dy.data();
  const T* px = x.data();
  const T* pw = w.data();
  T* pdw = dw.mutable_data();
  T* pdx = dx ? dx->mutable_data() : nullptr;
  T* pdb = db ? db->mutable_data() : nullptr;
  {
    py::gil_scoped_release release;
    conv2d_backward_weight_ref<T>(s, pdy, px, pdw);
    if (pdx) conv2d_backward_input_ref<T>(s, pdy, pw, pdx);
    if (pdb) conv2d_backward_bias_ref<T>(s, pdy, pdb);
  }
  return py::make_tuple(dx ? py::object(*dx) : py::none(), dw, db ? py::object(*db) : py::none());
}

template <typename T>
static void bind_conv_for(py::module_& m) {
  m.def("conv2d", &conv2d<T>, py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("P"), py::arg("Q"),
        py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_h"), py::arg("pad_w"), py::arg("dil_h"),
        py::arg("dil_w"), py::arg("groups"), py::arg("relu"));
  m.def("conv2d_backward", &conv2d_grad<T>, py::arg("dy"), py::arg("x"), py::arg("w"), py::arg("stride_h"),
        py::arg("stride_w"), py::arg("pad_h"), py::arg("pad_w"), py::arg("dil_h"), py::arg("dil_w"),
        py::arg("groups"), py::arg("input_grad"), py::arg("bias_grad"));
}

void bind_conv(py::module_& m) {
  bind_conv_for<float>(m);
  bind_conv_for<double>(m);
}
