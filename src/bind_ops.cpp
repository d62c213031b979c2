// Bindings: ReLU, softmax, cross-entropy, batch normalisation, optimizer steps.
#include <algorithm>
#include <initializer_list>
#include <optional>
#include <string>

#include "bindings.h"
#include "convcore/ops.h"
#include "convcore/optim.h"

using namespace convcore;

template <typename T>
static CArray<T> relu(const CArray<T>& x) {
  auto y = new_array<T>(std::vector<int64_t>(x.shape(), x.shape() + x.ndim()));
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
  auto dx = new_array<T>(std::vector<int64_t>(x.shape(), x.shape() + x.ndim()));
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

// dx += dy where x > 0, in place (dx, dy, x of one shape).
template <typename T>
static void relu_grad_add(const CArray<T>& dy, const CArray<T>& x, CArray<T>& dx) {
  if (!same_shape(dy, x) || !same_shape(dx, x)) throw py::value_error("dy, x and dx shapes differ");
  const T *pdy = dy.data(), *px = x.data();
  T* pdx = dx.mutable_data();
  const int64_t n = x.size();
  {
    py::gil_scoped_release release;
    relu_backward_add<T>(pdy, px, pdx, n);
  }
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

// The kernels index rows by label: one outside [0, C) is refused here (a loop over N labels, cheaper than the
// two numpy reductions that checked it in Python), with the message the Python checks give.
static void check_labels(const CArray<int64_t>& labels, int64_t N, int64_t C) {
  if (labels.ndim() != 1 || labels.shape(0) != N) throw py::value_error("labels must have one entry per row");
  const int64_t* l = labels.data();
  if (N == 0) return;
  const auto [lo, hi] = std::minmax_element(l, l + N);
  if (*lo < 0 || *hi >= C)
    throw py::value_error("labels must be in [0, " + std::to_string(C) + ") (number of classes), found " +
                          std::to_string(*lo < 0 ? *lo : *hi));
}

// Returns (mean loss, probs).
template <typename T>
static py::tuple cross_entropy(const CArray<T>& logits, const CArray<int64_t>& labels) {
  const int64_t N = logits.shape(0), C = logits.shape(1);
  check_labels(labels, N, C);
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
  check_labels(labels, N, C);
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

// Batch norm: x, dy are (N, C, L) views; per-channel vectors have C entries (checked here: a mismatch would read
// out of bounds).
template <typename T>
static void check_bn(const CArray<T>& x, std::initializer_list<const py::array*> per_channel) {
  if (x.ndim() != 3) throw py::value_error("batch norm kernels take (N, C, L) arrays");
  for (const py::array* v : per_channel)
    if (v->ndim() != 1 || v->shape(0) != x.shape(1)) throw py::value_error("per-channel vector length != C");
}

template <typename T>
static py::tuple bn_stats(const CArray<T>& x) {
  check_bn(x, {});
  const int64_t N = x.shape(0), C = x.shape(1), L = x.shape(2);
  auto mean = new_array<double>({C}), var = new_array<double>({C});
  const T* px = x.data();
  double *pm = mean.mutable_data(), *pv = var.mutable_data();
  {
    py::gil_scoped_release release;
    batch_norm_stats<T>(px, N, C, L, pm, pv);
  }
  return py::make_tuple(mean, var);
}

template <typename T>
static CArray<T> bn_apply(const CArray<T>& x, const CArray<T>& scale, const CArray<T>& shift,
                          const std::optional<CArray<T>>& residual, bool relu) {
  check_bn(x, {&scale, &shift});
  if (residual && !same_shape(*residual, x))
    throw py::value_error("residual and x shapes differ");
  const int64_t N = x.shape(0), C = x.shape(1), L = x.shape(2);
  auto y = new_array<T>({N, C, L});
  const T *px = x.data(), *ps = scale.data(), *pb = shift.data(), *pr = residual ? residual->data() : nullptr;
  T* py_ = y.mutable_data();
  {
    py::gil_scoped_release release;
    batch_norm_apply<T>(px, N, C, L, ps, pb, pr, relu, py_);
  }
  return y;
}

// relu_out, when given, must have x's shape (the output of bn_apply with relu).
template <typename T>
static const T* relu_mask(const std::optional<CArray<T>>& relu_out, const CArray<T>& x) {
  if (!relu_out) return nullptr;
  if (!same_shape(*relu_out, x))
    throw py::value_error("relu_out and x shapes differ");
  return relu_out->data();
}

template <typename T>
static py::tuple bn_backward_sums(const CArray<T>& dy, const CArray<T>& x, const CArray<T>& mean,
                                  const std::optional<CArray<T>>& relu_out) {
  check_bn(x, {&mean});
  if (!same_shape(dy, x))
    throw py::value_error("dy and x shapes differ");
  const T* mask = relu_mask(relu_out, x);
  const int64_t N = x.shape(0), C = x.shape(1), L = x.shape(2);
  auto sum_dy = new_array<double>({C}), sum_dy_centred = new_array<double>({C});
  const T *pdy = dy.data(), *px = x.data(), *pm = mean.data();
  double *ps = sum_dy.mutable_data(), *psc = sum_dy_centred.mutable_data();
  {
    py::gil_scoped_release release;
    batch_norm_backward_sums<T>(pdy, px, pm, mask, N, C, L, ps, psc);
  }
  return py::make_tuple(sum_dy, sum_dy_centred);
}

template <typename T>
static CArray<T> bn_backward_input(const CArray<T>& dy, const CArray<T>& x, const CArray<T>& mean,
                                   const CArray<T>& gain, const CArray<T>& a, const CArray<T>& b,
                                   const std::optional<CArray<T>>& relu_out) {
  check_bn(x, {&mean, &gain, &a, &b});
  if (!same_shape(dy, x))
    throw py::value_error("dy and x shapes differ");
  const T* mask = relu_mask(relu_out, x);
  const int64_t N = x.shape(0), C = x.shape(1), L = x.shape(2);
  auto dx = new_array<T>({N, C, L});
  const T *pdy = dy.data(), *px = x.data(), *pm = mean.data(), *pg = gain.data(), *pa = a.data(), *pb = b.data();
  T* pdx = dx.mutable_data();
  {
    py::gil_scoped_release release;
    batch_norm_backward_input<T>(pdy, px, pm, pg, pa, pb, mask, N, C, L, pdx);
  }
  return dx;
}

// The optimizer steps update p and their buffers in place: those arrays are taken as they are (noconvert: of
// dtype T and C order, or the call is refused), never as converted copies whose updates would be lost, and
// mutable_data() refuses a read-only one (ValueError).
template <typename T>
static void check_sizes(const CArray<T>& p, std::initializer_list<const CArray<T>*> others) {
  for (const CArray<T>* a : others)
    if (a && a->size() != p.size())
      throw py::value_error("optimizer step: the parameter, its gradient and its buffers must have the same number "
                            "of elements");
}

template <typename T>
static void sgd(CArray<T>& p, const CArray<T>& g, std::optional<CArray<T>>& buf, double lr, double momentum,
                double dampening, double weight_decay, bool nesterov, bool first_step) {
  if (momentum != 0 && !buf) throw py::value_error("sgd_step: momentum needs a buffer");
  check_sizes(p, {&g, buf ? &*buf : nullptr});
  T* pp = p.mutable_data();
  const T* pg = g.data();
  T* pb = buf ? buf->mutable_data() : nullptr;
  const int64_t n = p.size();
  py::gil_scoped_release release;
  sgd_step<T>(pp, pg, pb, n, SgdHyper{lr, momentum, dampening, weight_decay, nesterov}, first_step);
}

template <typename T>
static void adam(CArray<T>& p, const CArray<T>& g, CArray<T>& m, CArray<T>& v, double lr, double beta1,
                 double beta2, double eps, double weight_decay, bool decoupled, int64_t step) {
  if (step < 1) throw py::value_error("adam_step: step must be >= 1");
  check_sizes(p, {&g, &m, &v});
  T *pp = p.mutable_data(), *pm = m.mutable_data(), *pv = v.mutable_data();
  const T* pg = g.data();
  const int64_t n = p.size();
  py::gil_scoped_release release;
  adam_step<T>(pp, pg, pm, pv, n, AdamHyper{lr, beta1, beta2, eps, weight_decay, decoupled}, step);
}

template <typename T>
static void bind_optim(py::module_& m) {
  m.def("sgd_step", &sgd<T>, py::arg("p").noconvert(), py::arg("g"), py::arg("buf").noconvert().none(true),
        py::arg("lr"), py::arg("momentum"), py::arg("dampening"), py::arg("weight_decay"), py::arg("nesterov"),
        py::arg("first_step"));
  m.def("adam_step", &adam<T>, py::arg("p").noconvert(), py::arg("g"), py::arg("m").noconvert(),
        py::arg("v").noconvert(), py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"),
        py::arg("weight_decay"), py::arg("decoupled"), py::arg("step"));
}

void bind_ops(py::module_& m) {
  bind_optim<float>(m);
  bind_optim<double>(m);
  m.def("relu", &relu<float>);
  m.def("relu", &relu<double>);
  m.def("relu_backward", &relu_grad<float>);
  m.def("relu_backward", &relu_grad<double>);
  // dx is written in place: never a converted copy
  m.def("relu_backward_add", &relu_grad_add<float>, py::arg("dy"), py::arg("x"), py::arg("dx").noconvert());
  m.def("relu_backward_add", &relu_grad_add<double>, py::arg("dy"), py::arg("x"), py::arg("dx").noconvert());
  m.def("softmax", &softmax<float>);
  m.def("softmax", &softmax<double>);
  m.def("cross_entropy", &cross_entropy<float>);
  m.def("cross_entropy", &cross_entropy<double>);
  m.def("cross_entropy_backward", &cross_entropy_grad<float>);
  m.def("cross_entropy_backward", &cross_entropy_grad<double>);
  m.def("batch_norm_stats", &bn_stats<float>);
  m.def("batch_norm_stats", &bn_stats<double>);
  m.def("batch_norm_apply", &bn_apply<float>);
  m.def("batch_norm_apply", &bn_apply<double>);
  m.def("batch_norm_backward_sums", &bn_backward_sums<float>);
  m.def("batch_norm_backward_sums", &bn_backward_sums<double>);
  m.def("batch_norm_backward_input", &bn_backward_input<float>);
  m.def("batch_norm_backward_input", &bn_backward_input<double>);
}
