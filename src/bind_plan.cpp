// Bindings: an eval-mode forward of a layer chain in one call. Sequential's plan (convcore/nn/container.py) hands
// its steps over when every one is a float32 conv2d (ReLU fused or not), pooling, linear, ReLU or reshape; each
// step here calls the kernel its Python step calls, with the same arguments, so the output has the same bits, and
// only the per-call costs go (argument conversion, a Python call and an array object per layer: about half of
// LeNet-5's batch-1 time). Steps arrive validated, with their parameter arrays, which the plan keeps alive and
// reads in place (Python rebuilds the plan when a parameter's array is replaced).
#include <algorithm>
#include <array>
#include <memory>
#include <optional>
#include <variant>
#include <vector>

#include "bindings.h"
#include "convcore/conv.h"
#include "convcore/gemm.h"
#include "convcore/ops.h"
#include "convcore/pool.h"

using namespace convcore;

namespace {

struct Conv {
  ConvShape shape;
  const float *w, *bias;
  bool relu;
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
struct Relu {};
struct Reshape {};  // a view: Flatten, or Dropout in eval
using Op = std::variant<Conv, MaxPool, AvgPool, Linear, Relu, Reshape>;

struct Step {
  Op op;
  int64_t out_elements;
};

int64_t product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

class NativePlan {
 public:
  explicit NativePlan(std::vector<int64_t> in_shape) : in_shape_(std::move(in_shape)) {}

  // shape: the step's output shape; `in` is the previous step's (the input's for the first).
  void add_conv(const CArray<float>& w, const std::optional<CArray<float>>& bias, const ConvGeom& g, bool relu,
                std::vector<int64_t> shape) {
    const std::vector<int64_t>& in = current();
    if (in.size() != 4 || w.ndim() != 4) throw py::value_error("plan: conv2d takes (N, C, H, W)");
    const ConvShape s = conv_shape({in[0], in[1], in[2], in[3]}, {w.shape(0), w.shape(1), w.shape(2), w.shape(3)}, g);
    add(Conv{s, w.data(), bias ? bias->data() : nullptr, relu}, std::move(shape), {w, keep(bias)});
  }
  void add_max_pool(const PoolGeom& geometry, std::vector<int64_t> shape) {
    add(MaxPool{pool_geometry(geometry), planes()}, std::move(shape), {});
  }
  void add_avg_pool(const PoolGeom& geometry, bool count_include_pad, std::vector<int64_t> shape) {
    add(AvgPool{pool_geometry(geometry), planes(), count_include_pad}, std::move(shape), {});
  }
  void add_linear(const CArray<float>& w, const std::optional<CArray<float>>& bias, bool relu,
                  std::vector<int64_t> shape) {
    const std::vector<int64_t>& in = current();
    if (in.size() != 2 || w.ndim() != 2 || w.shape(1) != in[1]) throw py::value_error("plan: linear shapes differ");
    add(Linear{in[0], in[1], w.shape(0), w.data(), bias ? bias->data() : nullptr, relu}, std::move(shape),
        {w, keep(bias)});
  }
  void add_relu(std::vector<int64_t> shape) { add(Relu{}, std::move(shape), {}); }
  void add_reshape(std::vector<int64_t> shape) {
    if (product(shape) != product(current())) throw py::value_error("plan: a reshape keeps the element count");
    add(Reshape{}, std::move(shape), {});
  }

  CArray<float> run(const CArray<float>& x) const {
    if (x.ndim() != static_cast<py::ssize_t>(in_shape_.size()) ||
        !std::equal(in_shape_.begin(), in_shape_.end(), x.shape()))
      throw py::value_error("plan: the input's shape differs from the one the plan was built for");
    size_t last = steps_.size();  // the last step that writes: it writes the returned array
    while (last > 0 && std::holds_alternative<Reshape>(steps_[last - 1].op)) --last;
    if (last == 0) throw py::value_error("plan: no step computes anything");
    auto y = new_array<float>(shapes_.back());
    float* out_final = y.mutable_data();
    {
      py::gil_scoped_release release;
      const float* cur = x.data();
      std::unique_ptr<CachedBlock<float>> held;  // the block cur points into, if any
      for (size_t i = 0; i < last; ++i) {
        const Step& step = steps_[i];
        if (std::holds_alternative<Reshape>(step.op)) continue;
        auto next = i + 1 == last ? nullptr : std::make_unique<CachedBlock<float>>(step.out_elements);
        float* out = next ? next->get() : out_final;
        execute(step, cur, out);
        held = std::move(next);
        cur = out;
      }
    }
    return y;
  }

 private:
  static py::object keep(const std::optional<CArray<float>>& a) { return a ? py::object(*a) : py::object(py::none()); }
  const std::vector<int64_t>& current() const { return shapes_.empty() ? in_shape_ : shapes_.back(); }
  int64_t planes() const {
    const std::vector<int64_t>& in = current();
    if (in.size() != 4) throw py::value_error("plan: pooling takes (N, C, H, W)");
    return in[0] * in[1];
  }
  void add(Op op, std::vector<int64_t> shape, std::vector<py::object> arrays) {
    steps_.push_back(Step{op, product(shape)});
    shapes_.push_back(std::move(shape));
    for (auto& a : arrays) keep_alive_.push_back(std::move(a));
  }

  static void execute(const Step& step, const float* x, float* y) {
    const Op& op = step.op;
    if (const auto* c = std::get_if<Conv>(&op)) {
      conv2d_forward_fast(c->shape, x, c->w, c->bias, c->relu, y);
    } else if (const auto* m = std::get_if<MaxPool>(&op)) {  // the window offsets are computed and dropped
      const CachedBlock<uint8_t> offsets(step.out_elements);
      max_pool2d_compact(x, y, offsets.get(), m->planes, m->g);
    } else if (const auto* a = std::get_if<AvgPool>(&op)) {
      avg_pool2d(x, y, a->planes, a->g, a->count_include_pad);
    } else if (const auto* l = std::get_if<Linear>(&op)) {
      Epilogue epi;
      epi.bias = l->bias;
      epi.bias_axis = l->bias ? Epilogue::Bias::per_col : Epilogue::Bias::none;
      epi.relu = l->relu;
      sgemm(Trans::no, Trans::yes, l->rows, l->out, l->in, 1.0f, x, l->in, l->w, l->in, 0.0f, y, l->out, epi);
    } else if (std::holds_alternative<Relu>(op)) {
      relu_forward<float>(x, y, step.out_elements);
    }
  }

  std::vector<int64_t> in_shape_;
  std::vector<Step> steps_;
  std::vector<std::vector<int64_t>> shapes_;
  std::vector<py::object> keep_alive_;
};

}  // namespace

void bind_plan(py::module_& m) {
  py::class_<NativePlan>(m, "NativePlan")
      .def(py::init<std::vector<int64_t>>())
      // parameter arrays and the input are used in place: never a converted copy
      .def("add_conv", &NativePlan::add_conv, py::arg("w").noconvert(), py::arg("bias").noconvert(), py::arg("geom"),
           py::arg("relu"), py::arg("shape"))
      .def("add_max_pool", &NativePlan::add_max_pool)
      .def("add_avg_pool", &NativePlan::add_avg_pool)
      .def("add_linear", &NativePlan::add_linear, py::arg("w").noconvert(), py::arg("bias").noconvert(),
           py::arg("relu"), py::arg("shape"))
      .def("add_relu", &NativePlan::add_relu)
      .def("add_reshape", &NativePlan::add_reshape)
      .def("run", &NativePlan::run, py::arg("x").noconvert());
}
