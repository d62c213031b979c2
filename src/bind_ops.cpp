// Bindings: ReLU, the option-A shortcut, softmax, cross-entropy, batch normalisation, optimizer steps.
#include <algorithm>
#include <initializer_list>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

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
    CoreCall call;
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
    CoreCall call;
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
    CoreCall call;
    relu_backward_add<T>(pdy, px, pdx, n);
  }
}

// The option-A shortcut of x (N, C, H, W): (N, out_channels, ceil(H / stride), ceil(W / stride)), x subsampled into
// channels [lo, lo + C), zeros elsewhere (convcore/nn/blocks.py).
template <typename T>
static CArray<T> shortcut_forward(const CArray<T>& x, int64_t stride, int64_t lo, int64_t out_channels) {
  if (x.ndim() != 4) throw py::value_error("the shortcut takes (N, C, H, W) arrays");
  const int64_t N = x.shape(0), C = x.shape(1), H = x.shape(2), W = x.shape(3);
  if (stride < 1 || !channels_within(lo, C, out_channels))
    throw py::value_error("the shortcut needs stride >= 1 and the input's channels within [lo, out_channels)");
  const int64_t P = subsampled_size(H, stride), Q = subsampled_size(W, stride);
  auto y = new_array<T>({N, out_channels, P, Q});
  const T* px = x.data();
  T* py_ = y.mutable_data();
  {
    CoreCall call;
    subsample_pad<T>(px, N, C, H, W, stride, lo, out_channels, P, Q, py_);
  }
  return y;
}

// dx (N, C, H, W) += the shortcut's backward of dy through the block's final ReLU (out: the block's output), in
// place.
template <typename T>
static void shortcut_backward_add(const CArray<T>& dy, const CArray<T>& out, int64_t stride, int64_t lo,
                                  CArray<T>& dx) {
  if (dx.ndim() != 4 || dy.ndim() != 4 || !same_shape(dy, out)) throw py::value_error("dy, out and dx shapes differ");
  const int64_t N = dx.shape(0), C = dx.shape(1), H = dx.shape(2), W = dx.shape(3), K = dy.shape(1);
  if (stride < 1 || !channels_within(lo, C, K) || dy.shape(0) != N || dy.shape(2) != subsampled_size(H, stride) ||
      dy.shape(3) != subsampled_size(W, stride))
    throw py::value_error("dy is not the shortcut's output for dx's shape, stride and lo");
  const T *pdy = dy.data(), *pout = out.data();
  T* pdx = dx.mutable_data();
  {
    CoreCall call;
    subsample_pad_backward_add<T>(pdy, pout, N, C, H, W, stride, lo, K, dy.shape(2), dy.shape(3), pdx);
  }
}

template <typename T>
static CArray<T> softmax(const CArray<T>& x) {
  const int64_t rows = x.shape(0), cols = x.shape(1);
  auto y = new_array<T>({rows, cols});
  const T* px = x.data();
  T* py_ = y.mutable_data();
  {
    CoreCall call;
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
    CoreCall call;
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
    CoreCall call;
    cross_entropy_backward<T>(pp, plab, pd, N, C, static_cast<T>(scale));
  }
  return d;
}

// Batch norm: x, dy are (N, C, L) views; per-channel vectors have C entries (checked here: a mismatch would read
// out of bounds).
static void check_bn(const py::array& x, std::initializer_list<const py::array*> per_channel) {
  if (x.ndim() != 3) throw py::value_error("batch norm kernels take (N, C, L) arrays");
  for (const py::array* v : per_channel)
    if (v->ndim() != 1 || v->shape(0) != x.shape(1)) throw py::value_error("per-channel vector length != C");
}

// An optional (N, C, L) array with x's shape (a residual, or the forward's ReLU output), or null.
template <typename T>
static const T* optional_like(const std::optional<CArray<T>>& a, const CArray<T>& x, const char* name) {
  if (!a) return nullptr;
  if (!same_shape(*a, x)) throw py::value_error(std::string(name) + " and x shapes differ");
  return a->data();
}

// (y, mean, var): the batch's statistics in float64.
template <typename T>
static py::tuple bn_train(const CArray<T>& x, const CArray<T>& weight, const CArray<T>& bias, double eps,
                          const std::optional<CArray<T>>& residual, bool relu) {
  check_bn(x, {&weight, &bias});
  const T* pr = optional_like(residual, x, "residual");
  const int64_t N = x.shape(0), C = x.shape(1), L = x.shape(2);
  auto y = new_array<T>({N, C, L});
  auto mean = new_array<double>({C}), var = new_array<double>({C});
  const T *px = x.data(), *pw = weight.data(), *pb = bias.data();
  T* py_ = y.mutable_data();
  double *pm = mean.mutable_data(), *pv = var.mutable_data();
  {
    CoreCall call;
    batch_norm_train<T>(px, N, C, L, pw, pb, eps, pr, relu, py_, pm, pv);
  }
  return py::make_tuple(y, mean, var);
}

template <typename T>
static CArray<T> bn_eval(const CArray<T>& x, const CArray<double>& mean, const CArray<double>& var,
                         const CArray<T>& weight, const CArray<T>& bias, double eps,
                         const std::optional<CArray<T>>& residual, bool relu) {
  check_bn(x, {&mean, &var, &weight, &bias});
  const T* pr = optional_like(residual, x, "residual");
  const int64_t N = x.shape(0), C = x.shape(1), L = x.shape(2);
  auto y = new_array<T>({N, C, L});
  const T *px = x.data(), *pw = weight.data(), *pb = bias.data();
  const double *pm = mean.data(), *pv = var.data();
  T* py_ = y.mutable_data();
  {
    CoreCall call;
    batch_norm_eval<T>(px, N, C, L, pm, pv, pw, pb, eps, pr, relu, py_);
  }
  return y;
}

// (dweight, dbias, dx or None).
template <typename T>
static py::tuple bn_backward(const CArray<T>& dy, const CArray<T>& x, const CArray<double>& mean,
                             const CArray<double>& var, const CArray<T>& weight, double eps,
                             const std::optional<CArray<T>>& relu_out, bool input_grad) {
  check_bn(x, {&mean, &var, &weight});
  if (!same_shape(dy, x)) throw py::value_error("dy and x shapes differ");
  const T* mask = optional_like(relu_out, x, "relu_out");
  const int64_t N = x.shape(0), C = x.shape(1), L = x.shape(2);
  auto dweight = new_array<T>({C}), dbias = new_array<T>({C});
  std::optional<CArray<T>> dx;
  if (input_grad) dx = new_array<T>({N, C, L});
  const T *pdy = dy.data(), *px = x.data(), *pw = weight.data();
  const double *pm = mean.data(), *pv = var.data();
  T *pdw = dweight.mutable_data(), *pdb = dbias.mutable_data(), *pdx = dx ? dx->mutable_data() : nullptr;
  {
    CoreCall call;
    batch_norm_backward<T>(pdy, px, pm, pv, pw, eps, mask, N, C, L, pdw, pdb, pdx);
  }
  return py::make_tuple(dweight, dbias, dx ? py::object(*dx) : py::object(py::none()));
}

// --- optimizer steps: one call per step for all of a model's parameters ---
// params, grads and each buffer list are aligned by index; a None gradient skips its parameter (and its buffers may
// be None). Every array is checked, naming its parameter, before anything changes. Parameters and buffers are
// updated in place, so they are taken as they are (writeable, C order, the parameter's dtype: float32 or float64),
// never as converted copies whose updates would be lost; a gradient is converted to the parameter's form if need be.

static std::string shape_text(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t d = 0; d < a.ndim(); ++d) s += (d ? ", " : "") + std::to_string(a.shape(d));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

static bool updatable(py::handle h) {
  return (py::isinstance<CArray<float>>(h) || py::isinstance<CArray<double>>(h)) &&
         py::reinterpret_borrow<py::array>(h).writeable();
}

struct Update {  // one parameter's arrays, checked; the buffers in the order the step lists them
  size_t index;
  py::array p, g;
  std::vector<py::array> buffers;
};

template <typename T>
static py::array gradient_as(py::handle g) {
  auto converted = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(g);
  if (!converted) throw py::type_error("a gradient could not be converted to its parameter's dtype");
  return std::move(converted);
}

static std::vector<Update> checked_updates(const py::list& params, const py::list& grads,
                                           const std::vector<py::list>& buffers) {
  const size_t n = params.size();
  if (grads.size() != n) throw py::value_error("optimizer step: one gradient (or None) per parameter");
  for (const auto& list : buffers)
    if (list.size() != n) throw py::value_error("optimizer step: one buffer (or None) per parameter");
  std::vector<Update> updates;
  for (size_t i = 0; i < n; ++i) {
    const py::handle p = params[i];
    const std::string name = "parameter " + std::to_string(i);
    if (py::isinstance<py::array>(p)) {  // another kind or size: a TypeError; another byte order: below
      const py::dtype dtype = py::reinterpret_borrow<py::array>(p).dtype();
      if (dtype.kind() != 'f' || (dtype.itemsize() != 4 && dtype.itemsize() != 8))
        throw py::type_error(name + " must be a float32 or float64 array, got " + std::string(py::str(dtype)));
    }
    if (!updatable(p)) {
      std::string got = py::str(py::type::handle_of(p).attr("__name__"));
      if (py::isinstance<py::array>(p)) {
        const auto a = py::reinterpret_borrow<py::array>(p);
        got = std::string(py::str(a.dtype())) + " (C-contiguous: " +
              ((a.flags() & py::array::c_style) ? "True" : "False") +
              ", writeable: " + (a.writeable() ? "True" : "False") + ")";
      }
      throw py::value_error(name + " must be a writeable C-contiguous float32 or float64 array to be updated in "
                            "place, got " + got);
    }
    if (grads[i].is_none()) continue;
    Update u{i, py::reinterpret_borrow<py::array>(p), py::array::ensure(grads[i]), {}};
    if (!u.g) throw py::type_error(name + " has a gradient that is not an array: " +
                                   std::string(py::str(py::type::handle_of(grads[i]).attr("__name__"))));
    if (u.g.dtype().kind() != 'f')  // an integer, bool or complex gradient is not converted (PyTorch refuses it too)
      throw py::type_error(name + " has a gradient of dtype " + std::string(py::str(u.g.dtype())) +
                           ": gradients must be floating-point");
    if (!same_shape(u.p, u.g))
      throw py::value_error(name + " has shape " + shape_text(u.p) + " but its gradient has " + shape_text(u.g));
    const bool single = py::isinstance<CArray<float>>(p);
    u.g = single ? gradient_as<float>(u.g) : gradient_as<double>(u.g);
    for (const auto& list : buffers) {
      const py::handle b = list[i];
      if (!updatable(b) || !py::reinterpret_borrow<py::array>(b).dtype().equal(u.p.dtype()) ||
          py::reinterpret_borrow<py::array>(b).size() != u.p.size())
        throw py::value_error(name + "'s optimizer buffer must be a writeable C-contiguous array of its dtype and "
                              "size");
      u.buffers.push_back(py::reinterpret_borrow<py::array>(b));
    }
    updates.push_back(std::move(u));
  }
  return updates;
}

// One update's arrays as T pointers: make(index, p, g, buffer 0, buffer 1, elements), buffers null where not listed.
template <typename T, typename Make>
static auto typed_arrays(Update& u, const Make& make) {
  T* b0 = u.buffers.size() > 0 ? static_cast<T*>(u.buffers[0].mutable_data()) : nullptr;
  T* b1 = u.buffers.size() > 1 ? static_cast<T*>(u.buffers[1].mutable_data()) : nullptr;
  return make(u.index, static_cast<T*>(u.p.mutable_data()), static_cast<const T*>(u.g.data()), b0, b1,
              static_cast<int64_t>(u.p.size()));
}

// The updates' arrays (typed_arrays), float32 and float64 apart; step(float32 list) then step(float64 list) run without
// the GIL.
template <template <typename> class Arrays, typename Make, typename Step>
static void run_updates(std::vector<Update>& updates, const Make& make, const Step& step) {
  std::vector<Arrays<float>> singles;
  std::vector<Arrays<double>> doubles;
  for (Update& u : updates) {
    if (py::isinstance<CArray<float>>(u.p))
      singles.push_back(typed_arrays<float>(u, make));
    else
      doubles.push_back(typed_arrays<double>(u, make));
  }
  CoreCall call;
  if (!singles.empty()) step(singles);
  if (!doubles.empty()) step(doubles);
}

// first: per parameter, whether its momentum buffer is new (it is then set to the gradient, not read).
static void sgd(const py::list& params, const py::list& grads, const std::optional<py::list>& momentum_buffers,
                const std::vector<bool>& first, double lr, double momentum, double dampening, double weight_decay,
                bool nesterov) {
  if (momentum != 0 && !momentum_buffers) throw py::value_error("sgd_step: momentum needs buffers");
  if (first.size() != params.size()) throw py::value_error("sgd_step: one first-step flag per parameter");
  std::vector<py::list> buffers;
  if (momentum != 0) buffers.push_back(*momentum_buffers);
  std::vector<Update> updates = checked_updates(params, grads, buffers);
  const SgdHyper h{lr, momentum, dampening, weight_decay, nesterov};
  run_updates<SgdArrays>(
      updates,
      [&](size_t i, auto* p, const auto* g, auto* buf, auto*, int64_t n) {
        return SgdArrays<std::remove_pointer_t<decltype(p)>>{p, g, buf, n, bool(first[i])};
      },
      [&](const auto& arrays) { sgd_step(arrays, h); });
}

// steps: per parameter, the step it takes now (its own count of updates, this one included).
static void adam(const py::list& params, const py::list& grads, const py::list& exp_avg, const py::list& exp_avg_sq,
                 double lr, double beta1, double beta2, double eps, double weight_decay, bool decoupled,
                 const std::vector<int64_t>& steps) {
  if (steps.size() != params.size()) throw py::value_error("adam_step: one step per parameter");
  for (const int64_t t : steps)
    if (t < 1) throw py::value_error("adam_step: every step must be >= 1");
  std::vector<Update> updates = checked_updates(params, grads, {exp_avg, exp_avg_sq});
  const AdamHyper h{lr, beta1, beta2, eps, weight_decay, decoupled};
  run_updates<AdamArrays>(
      updates,
      [&](size_t i, auto* p, const auto* g, auto* m, auto* v, int64_t n) {
        return AdamArrays<std::remove_pointer_t<decltype(p)>>{p, g, m, v, n, steps[i]};
      },
      [&](const auto& arrays) { adam_step(arrays, h); });
}

static void bind_optim(py::module_& m) {
  m.def("sgd_step", &sgd, py::arg("params"), py::arg("grads"), py::arg("momentum_buffers").none(true),
        py::arg("first"), py::arg("lr"), py::arg("momentum"), py::arg("dampening"), py::arg("weight_decay"),
        py::arg("nesterov"));
  m.def("adam_step", &adam, py::arg("params"), py::arg("grads"), py::arg("exp_avg"), py::arg("exp_avg_sq"),
        py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"),
        py::arg("decoupled"), py::arg("steps"));
}

void bind_ops(py::module_& m) {
  bind_optim(m);
  m.def("relu", &relu<float>);
  m.def("relu", &relu<double>);
  m.def("relu_backward", &relu_grad<float>);
  m.def("relu_backward", &relu_grad<double>);
  // dx is written in place: never a converted copy
  m.def("relu_backward_add", &relu_grad_add<float>, py::arg("dy"), py::arg("x"), py::arg("dx").noconvert());
  m.def("relu_backward_add", &relu_grad_add<double>, py::arg("dy"), py::arg("x"), py::arg("dx").noconvert());
  m.def("shortcut_forward", &shortcut_forward<float>, py::arg("x"), py::arg("stride"), py::arg("lo"),
        py::arg("out_channels"));
  m.def("shortcut_forward", &shortcut_forward<double>, py::arg("x"), py::arg("stride"), py::arg("lo"),
        py::arg("out_channels"));
  m.def("shortcut_backward_add", &shortcut_backward_add<float>, py::arg("dy"), py::arg("out"), py::arg("stride"),
        py::arg("lo"), py::arg("dx").noconvert());
  m.def("shortcut_backward_add", &shortcut_backward_add<double>, py::arg("dy"), py::arg("out"), py::arg("stride"),
        py::arg("lo"), py::arg("dx").noconvert());
  m.def("softmax", &softmax<float>);
  m.def("softmax", &softmax<double>);
  m.def("cross_entropy", &cross_entropy<float>);
  m.def("cross_entropy", &cross_entropy<double>);
  m.def("cross_entropy_backward", &cross_entropy_grad<float>);
  m.def("cross_entropy_backward", &cross_entropy_grad<double>);
  m.def("batch_norm_train", &bn_train<float>);
  m.def("batch_norm_train", &bn_train<double>);
  m.def("batch_norm_eval", &bn_eval<float>);
  m.def("batch_norm_eval", &bn_eval<double>);
  m.def("batch_norm_backward", &bn_backward<float>);
  m.def("batch_norm_backward", &bn_backward<double>);
}
