// Bindings: an eval-mode forward of a layer chain in one call. A container's plan (convcore/nn/container.py) hands
// its steps over when every one has native ops: float32 conv2d (ReLU fused or not), pooling, linear, ReLU, batch norm
// with running statistics (a residual added and ReLU fused or not), views, and the blocks and nested containers made
// of them (a ResNet's BasicBlock: its shortcut's value is the residual of its last batch norm). Each step here calls
// the kernel its Python step calls, with the same arguments, so the output has the same bits, and only the per-call
// costs go (argument conversion, a Python call and an array object per layer: about half of LeNet-5's batch-1 time,
// a fifth of ResNet-20's). Steps arrive validated, with their parameter arrays, which the plan keeps alive and reads
// in place (Python rebuilds the plan when a parameter's or buffer's array is replaced; run() refuses, StalePlanError,
// when one was reshaped in place). A frozen plan (convcore.nn.freeze, which hands it arrays that do not change) also
// keeps each convolution's packed weights from run to run (ConvWeightCache) and folds a batch norm into the
// convolution before it (fold_batch_norms): its output is then within rounding of the layer-by-layer one, not the
// same bits; and it runs each call on the thread count its calls have been timed fastest on (ThreadChoice). A step
// reads values defined before it (the input is value 0) and defines one; each buffer goes back to the cache after
// the last step reading it.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "bindings.h"
#include "convcore/conv.h"
#include "convcore/gemm.h"
#include "convcore/ops.h"
#include "convcore/pool.h"
#include "convcore/threads.h"

using namespace convcore;

namespace {

struct Conv {
  ConvShape shape;
  const float *w, *bias;
  bool relu;
  std::shared_ptr<ConvWeightCache> cache;  // a frozen plan's
};
struct MaxPool {
  PoolGeometry g;
  int64_t planes;
};
struct AvgPool {
  PoolGeometry g;
  int64_t planes;
  bool count_include_pad;
};
struct Linear {
  int64_t rows, in, out;
  const float *w, *bias;
  bool relu;
};

// Option A's shortcut of a CIFAR ResNet block: the input subsampled by `stride` along both axes, its channels
// placed from channel `lo` on and the others zero.
struct SubsamplePad {
  int64_t stride, lo;
};
struct BatchNorm {
  const float *mean, *var, *w, *bias;  // the running statistics, read in place (float32) at every run
  double eps;
  bool relu;
};
struct Relu {};
struct Reshape {};  // a view: Flatten, or Dropout in eval
using Op = std::variant<Conv, MaxPool, AvgPool, Linear, Relu, Reshape, SubsamplePad, BatchNorm>;

// A step reads value `in` (and `residual`, a batch norm's skip, where >= 0) and writes value `out`. Values are
// numbered in order of definition, 0 being the plan's input; a reshape's value shares its input's buffer.
struct Step {
  Op op;
  int in, residual, out;
};
struct Value {
  std::vector<int64_t> shape;
  int buffer;
};

int64_t product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// An array the plan reads was reshaped in place since it was built: Python builds the plan afresh.
struct StalePlan : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class NativePlan {
 public:
  NativePlan(std::vector<int64_t> in_shape, bool frozen) : frozen_(frozen), values_{Value{std::move(in_shape), 0}} {}

  // Each add_ reads value `in` and returns the value it defines; shape: that value's shape.
  int add_conv(int in, const CArray<float>& w, const std::optional<CArray<float>>& bias, const ConvGeom& g, bool relu,
               std::vector<int64_t> shape) {
    const std::vector<int64_t>& x = input(in).shape;
    if (x.size() != 4 || w.ndim() != 4) throw py::value_error("plan: conv2d takes (N, C, H, W)");
    const ConvShape s = conv_shape({x[0], x[1], x[2], x[3]}, {w.shape(0), w.shape(1), w.shape(2), w.shape(3)}, g);
    // the geometry convcore/functional worked out for an input shape, checked against this value's: steps made for
    // another shape are refused here, not run past their buffers
    if (s.stride_h < 1 || s.stride_w < 1 || s.groups < 1 || s.C != w.shape(1) * s.groups ||
        s.P != output_extent(s.H, s.R, s.stride_h, s.pad_h, s.dil_h) ||
        s.Q != output_extent(s.W, s.S, s.stride_w, s.pad_w, s.dil_w) ||
        shape != std::vector<int64_t>{s.N, s.K, s.P, s.Q})
      throw py::value_error("plan: a convolution's geometry differs from its input's shape");
    return add(Conv{s, w.data(), bias ? bias->data() : nullptr, relu, nullptr}, in, -1, std::move(shape),
               {w, keep(bias)});
  }
  int add_max_pool(int in, const PoolGeom& geometry, std::vector<int64_t> shape) {
    const PoolGeometry g = pooling(in, geometry, shape);  // before shape is moved
    return add(MaxPool{g, planes(in)}, in, -1, std::move(shape), {});
  }
  int add_avg_pool(int in, const PoolGeom& geometry, bool count_include_pad, std::vector<int64_t> shape) {
    const PoolGeometry g = pooling(in, geometry, shape);
    return add(AvgPool{g, planes(in), count_include_pad}, in, -1, std::move(shape), {});
  }
  int add_linear(int in, const CArray<float>& w, const std::optional<CArray<float>>& bias, bool relu,
                 std::vector<int64_t> shape) {
    const std::vector<int64_t>& x = input(in).shape;
    if (x.size() != 2 || w.ndim() != 2 || w.shape(1) != x[1]) throw py::value_error("plan: linear shapes differ");
    return add(Linear{x[0], x[1], w.shape(0), w.data(), bias ? bias->data() : nullptr, relu}, in, -1,
               std::move(shape), {w, keep(bias)});
  }
  int add_relu(int in, std::vector<int64_t> shape) { return add(Relu{}, in, -1, std::move(shape), {}); }
  int add_reshape(int in, std::vector<int64_t> shape) {
    if (product(shape) != product(input(in).shape))
      throw py::value_error("plan: a reshape keeps the element count");
    return add(Reshape{}, in, -1, std::move(shape), {});
  }
  int add_subsample_pad(int in, int64_t stride, int64_t lo, std::vector<int64_t> shape) {
    const std::vector<int64_t>& x = input(in).shape;
    if (x.size() != 4 || shape.size() != 4 || stride < 1 || shape[0] != x[0] || !channels_within(lo, x[1], shape[1]) ||
        shape[2] != subsampled_size(x[2], stride) || shape[3] != subsampled_size(x[3], stride))
      throw py::value_error("plan: a subsampled, channel-padded shortcut's shapes differ");
    return add(SubsamplePad{stride, lo}, in, -1, std::move(shape), {});
  }
  // The eval-mode batch norm of (N, C, ...) with running statistics: `residual`, a value of the same shape, is
  // added before the optional ReLU in the same pass.
  int add_batch_norm(int in, const CArray<float>& mean, const CArray<float>& var, const CArray<float>& w,
                     const CArray<float>& bias, double eps, bool relu, std::vector<int64_t> shape,
                     std::optional<int> residual) {
    const std::vector<int64_t>& x = input(in).shape;
    if (x.size() < 2 || shape != x) throw py::value_error("plan: batch norm takes (N, C, ...) and keeps its shape");
    for (const CArray<float>* a : {&mean, &var, &w, &bias})
      if (a->ndim() != 1 || a->shape(0) != x[1]) throw py::value_error("plan: batch norm's arrays need C values");
    if (residual && input(*residual).shape != x) throw py::value_error("plan: the residual's shape differs");
    return add(BatchNorm{mean.data(), var.data(), w.data(), bias.data(), eps, relu}, in, residual.value_or(-1),
               std::move(shape), {mean, var, w, bias});
  }
  // Which value run() returns; false where it is the input's own buffer (views alone: nothing to compute). Called
  // after the last add_: a batch norm that is the only step reading its input (a convolution's output, in a ResNet)
  // then writes over it (measured against a buffer of its own, ResNet-20 inference: 1.01-1.02x), and it works out
  // when each buffer is read for the last time.
  bool set_output(int value) {
    if (frozen_) {
      fold_batch_norms(value);
      // each convolution's weights kept packed or transformed from run to run (a transform of an infinity would
      // give NaN: none kept for those)
      for (Step& step : steps_)
        if (auto* c = std::get_if<Conv>(&step.op); c && all_finite(c->w, c->shape.K * taps(c->shape)))
          c->cache = std::make_shared<ConvWeightCache>();
    }
    const std::vector<int> readers = readers_of_buffers(value);
    std::vector<int> storage(static_cast<size_t>(buffers_));
    for (int b = 0; b < buffers_; ++b) storage[b] = b;
    for (const Step& step : steps_) {  // in order: a buffer's storage is settled before a later step takes it over
      const int in = values_[step.in].buffer;
      if (std::holds_alternative<BatchNorm>(step.op) && in != 0 && readers[in] == 1)
        storage[values_[step.out].buffer] = storage[in];
    }
    for (Value& v : values_) v.buffer = storage[v.buffer];
    last_read_.assign(static_cast<size_t>(buffers_), 0);
    for (size_t i = 0; i < steps_.size(); ++i)
      for (int v : {steps_[i].in, steps_[i].residual})
        if (v >= 0) last_read_[values_[v].buffer] = i;
    output_ = input(value).buffer == 0 ? -1 : value;
    return output_ >= 0;
  }

  CArray<float> run(const CArray<float>& x) const {
    for (const auto& [array, shape] : arrays_)
      if (array.ndim() != static_cast<py::ssize_t>(shape.size()) ||
          !std::equal(shape.begin(), shape.end(), array.shape()))
        throw StalePlan("plan: an array it reads was reshaped since it was built");
    const std::vector<int64_t>& in_shape = values_[0].shape;
    if (x.ndim() != static_cast<py::ssize_t>(in_shape.size()) ||
        !std::equal(in_shape.begin(), in_shape.end(), x.shape()))
      throw py::value_error("plan: the input's shape differs from the one the plan was built for");
    if (output_ < 0) throw py::value_error("plan: no output computed by a step (set_output)");
    const int out_buffer = values_[output_].buffer;
    auto y = new_array<float>(values_[output_].shape);
    {
      CoreCall call;
      // a frozen plan's call on the thread count its calls have run fastest on (ThreadChoice; the same bits on any)
      const int setting = num_threads();
      const int threads = frozen_ ? choice_.pick(setting) : setting;
      std::optional<ThreadCap> cap;  // an eval plan's call runs on the setting: nothing to cap
      if (frozen_) cap.emplace(threads);
      const auto start = frozen_ ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
      last_threads_ = threads;
      std::vector<std::unique_ptr<CachedBlock<float>>> held(static_cast<size_t>(buffers_));
      std::vector<float*> data(static_cast<size_t>(buffers_), nullptr);
      data[0] = const_cast<float*>(x.data());  // read only: no step writes the input's buffer
      data[out_buffer] = y.mutable_data();
      for (size_t i = 0; i < steps_.size(); ++i) {
        const Step& step = steps_[i];
        const int b = values_[step.out].buffer;
        if (!data[b]) {
          held[b] = std::make_unique<CachedBlock<float>>(product(values_[step.out].shape));
          data[b] = held[b]->get();
        }
        const Value& in = values_[step.in];
        execute(step.op, in.shape, data[in.buffer], step.residual >= 0 ? data[values_[step.residual].buffer] : nullptr,
                values_[step.out].shape, data[b]);
        for (int v : {step.in, step.residual})
          if (v >= 0 && last_read_[values_[v].buffer] == i) held[values_[v].buffer].reset();
      }
      if (frozen_) {  // the call's time, for the choice (an eval plan's calls are not timed)
        const std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
        choice_.record(setting, threads, took.count());
      }
    }
    return y;
  }

  // The thread count the last call ran on (the setting, or in a frozen plan ThreadChoice's pick); 0 before any.
  int last_threads() const { return last_threads_; }

 private:
  // How many reads each buffer has: by the steps (input and residual) and, for `output`'s, by the caller.
  std::vector<int> readers_of_buffers(int output) const {
    std::vector<int> readers(static_cast<size_t>(buffers_), 0);
    ++readers[input(output).buffer];
    for (const Step& step : steps_)
      for (int v : {step.in, step.residual})
        if (v >= 0) ++readers[values_[v].buffer];
    return readers;
  }
  static int64_t taps(const ConvShape& s) { return s.C / s.groups * s.R * s.S; }
  static bool all_finite(const float* a, int64_t n) {
    return std::all_of(a, a + n, [](float v) { return std::isfinite(v); });
  }
  // A frozen plan's own array (a batch norm folded into a convolution's weights and bias).
  const float* own(std::vector<float> floats) {
    owned_.push_back(std::make_unique<std::vector<float>>(std::move(floats)));
    return owned_.back()->data();
  }

  // In a frozen plan, each batch norm whose input is a convolution's output that nothing else reads (nor the plan's
  // output value) goes into the convolution's weights and bias (batch_norm_fold), its ReLU fused; a batch norm adding
  // a residual stays as that pass, with the identity's statistics. Where a folded weight or bias would not be finite
  // (an overflow), the two stay apart.
  void fold_batch_norms(int output) {
    const std::vector<int> readers = readers_of_buffers(output);
    std::vector<int> producer(values_.size(), -1);  // the step defining each value
    for (size_t i = 0; i < steps_.size(); ++i) producer[steps_[i].out] = static_cast<int>(i);
    std::vector<bool> folded(steps_.size(), false);  // batch norms gone into their convolutions
    for (size_t i = 0; i < steps_.size(); ++i) {
      Step& step = steps_[i];
      auto* bn = std::get_if<BatchNorm>(&step.op);
      const int from = producer[step.in];
      Conv* conv = bn && from >= 0 ? std::get_if<Conv>(&steps_[from].op) : nullptr;
      if (!conv || conv->relu || readers[values_[step.in].buffer] != 1) continue;
      const ConvShape& s = conv->shape;
      std::vector<float> w(static_cast<size_t>(s.K * taps(s))), bias(static_cast<size_t>(s.K));
      if (!batch_norm_fold(s.K, taps(s), conv->w, conv->bias, bn->mean, bn->var, bn->w, bn->bias, bn->eps, w.data(),
                           bias.data()))
        continue;  // an overflow: the two layers stay apart
      conv->w = own(std::move(w));
      conv->bias = own(std::move(bias));
      if (step.residual < 0) {  // the convolution writes the batch norm's value, with its ReLU
        conv->relu = bn->relu;
        steps_[from].out = step.out;
        folded[i] = true;
      } else {  // x * 1 + 0, the residual added, the ReLU
        const float* ones = own(std::vector<float>(static_cast<size_t>(s.K), 1.0f));
        const float* zeros = own(std::vector<float>(static_cast<size_t>(s.K), 0.0f));
        *bn = BatchNorm{zeros, ones, ones, zeros, 0.0, bn->relu};
      }
    }
    std::vector<Step> kept;
    for (size_t i = 0; i < steps_.size(); ++i)
      if (!folded[i]) kept.push_back(steps_[i]);
    steps_ = std::move(kept);
  }

  // floor((size + 2 pad - dilation (kernel - 1) - 1) / stride) + 1, the output extent of a convolution
  static int64_t output_extent(int64_t size, int64_t kernel, int64_t stride, int64_t pad, int64_t dilation) {
    const int64_t span = size + 2 * pad - dilation * (kernel - 1) - 1;
    return span < 0 ? -1 : span / stride + 1;
  }
  // A pooling's geometry, checked against its input value's shape (as a convolution's: add_conv) and the output's.
  PoolGeometry pooling(int in, const PoolGeom& geometry, const std::vector<int64_t>& shape) const {
    const PoolGeometry g = pool_geometry(geometry);
    const std::vector<int64_t>& x = input(in).shape;
    if (x.size() != 4 || g.H != x[2] || g.W != x[3] || shape != std::vector<int64_t>{x[0], x[1], g.OH, g.OW})
      throw py::value_error("plan: a pooling's geometry differs from its input's shape");
    return g;
  }
  static py::object keep(const std::optional<CArray<float>>& a) { return a ? py::object(*a) : py::object(py::none()); }
  const Value& input(int v) const {
    if (v < 0 || v >= static_cast<int>(values_.size())) throw py::value_error("plan: no value " + std::to_string(v));
    return values_[v];
  }
  int64_t planes(int in) const {
    const std::vector<int64_t>& x = input(in).shape;
    if (x.size() != 4) throw py::value_error("plan: pooling takes (N, C, H, W)");
    return x[0] * x[1];
  }
  int add(Op op, int in, int residual, std::vector<int64_t> shape, std::vector<py::object> arrays) {
    const bool view = std::holds_alternative<Reshape>(op);
    const int out = static_cast<int>(values_.size()), buffer = input(in).buffer;
    values_.push_back(Value{std::move(shape), view ? buffer : buffers_++});
    if (!view) steps_.push_back(Step{op, in, residual, out});
    output_ = -1;  // set_output again
    for (auto& a : arrays)
      if (!a.is_none()) {
        const auto array = py::reinterpret_borrow<py::array>(a);
        arrays_.emplace_back(array, std::vector<int64_t>(array.shape(), array.shape() + array.ndim()));
      }
    return out;
  }

  static void execute(const Op& op, const std::vector<int64_t>& in_shape, const float* x, const float* residual,
                      const std::vector<int64_t>& out_shape, float* y) {
    const int64_t out_elements = product(out_shape);
    if (const auto* c = std::get_if<Conv>(&op)) {
      conv2d_forward_fast(c->shape, x, c->w, c->bias, c->relu, y, c->cache.get());
    } else if (const auto* m = std::get_if<MaxPool>(&op)) {
      max_pool2d_compact(x, y, nullptr, m->planes, m->g);  // the values alone
    } else if (const auto* a = std::get_if<AvgPool>(&op)) {
      avg_pool2d(x, y, a->planes, a->g, a->count_include_pad);
    } else if (const auto* l = std::get_if<Linear>(&op)) {
      Epilogue epi;
      epi.bias = l->bias;
      epi.bias_axis = l->bias ? Epilogue::Bias::per_col : Epilogue::Bias::none;
      epi.relu = l->relu;
      sgemm(Trans::no, Trans::yes, l->rows, l->out, l->in, 1.0f, x, l->in, l->w, l->in, 0.0f, y, l->out, epi);
    } else if (std::holds_alternative<Relu>(op)) {
      relu_forward<float>(x, y, out_elements);
    } else if (const auto* s = std::get_if<SubsamplePad>(&op)) {
      subsample_pad<float>(x, in_shape[0], in_shape[1], in_shape[2], in_shape[3], s->stride, s->lo, out_shape[1],
                           out_shape[2], out_shape[3], y);
    } else if (const auto* bn = std::get_if<BatchNorm>(&op)) {
      const int64_t C = in_shape[1], L = out_elements / std::max<int64_t>(in_shape[0] * C, 1);
      // the float64 statistics the Python layer passes (float32 -> float64 is exact)
      const std::vector<double> mean(bn->mean, bn->mean + C), var(bn->var, bn->var + C);
      batch_norm_eval<float>(x, in_shape[0], C, L, mean.data(), var.data(), bn->w, bn->bias, bn->eps, residual,
                             bn->relu, y);
    }
  }

  bool frozen_;
  std::vector<std::unique_ptr<std::vector<float>>> owned_;  // a frozen plan's folded weights and biases
  std::vector<Value> values_;
  int buffers_ = 1;  // buffer 0: the input
  int output_ = -1;
  std::vector<size_t> last_read_;  // the step after which each buffer is read no more
  mutable ThreadChoice choice_;    // a frozen plan's thread count per call
  mutable std::atomic<int> last_threads_{0};
  std::vector<Step> steps_;
  // the parameter and buffer arrays the steps read in place, kept alive, with the shapes they had (run checks them)
  std::vector<std::pair<py::array, std::vector<int64_t>>> arrays_;
};

}  // namespace

void bind_plan(py::module_& m) {
  py::class_<NativePlan>(m, "NativePlan")
      .def(py::init<std::vector<int64_t>, bool>(), py::arg("in_shape"), py::arg("frozen") = false)
      // parameter arrays and the input are used in place: never a converted copy
      .def("add_conv", &NativePlan::add_conv, py::arg("source"), py::arg("w").noconvert(), py::arg("bias").noconvert(),
           py::arg("geom"), py::arg("relu"), py::arg("shape"))
      .def("add_max_pool", &NativePlan::add_max_pool)
      .def("add_avg_pool", &NativePlan::add_avg_pool)
      .def("add_linear", &NativePlan::add_linear, py::arg("source"), py::arg("w").noconvert(),
           py::arg("bias").noconvert(), py::arg("relu"), py::arg("shape"))
      .def("add_relu", &NativePlan::add_relu)
      .def("add_reshape", &NativePlan::add_reshape)
      .def("add_subsample_pad", &NativePlan::add_subsample_pad)
      .def("add_batch_norm", &NativePlan::add_batch_norm, py::arg("source"), py::arg("mean").noconvert(),
           py::arg("var").noconvert(), py::arg("w").noconvert(), py::arg("bias").noconvert(), py::arg("eps"),
           py::arg("relu"), py::arg("shape"), py::arg("residual") = py::none())
      .def("set_output", &NativePlan::set_output)
      .def("run", &NativePlan::run, py::arg("x").noconvert())
      .def_property_readonly("last_threads", &NativePlan::last_threads);
  py::register_exception<StalePlan>(m, "StalePlanError", PyExc_RuntimeError);
}
