// Bindings: max and average pooling. Arrays arrive validated from convcore/functional/pool.py; `geometry` is
// (H, W, OH, OW, KH, KW, SH, SW, PH, PW) and every array is (N, C, rows, cols).
#include <array>
#include <optional>

#include "bindings.h"
#include "convcore/pool.h"

using namespace convcore;

template <typename A>
static int64_t planes_of(const A& a) {
  return static_cast<int64_t>(a.shape(0)) * a.shape(1);
}

// (y, offsets): compact argmax, uint8 window offsets (KH*KW <= 256).
template <typename T>
static py::tuple max_pool2d_offsets(const CArray<T>& x, const PoolGeom& geometry) {
  const PoolGeometry g = pool_geometry(geometry);
  const int64_t N = x.shape(0), C = x.shape(1), planes = planes_of(x);
  auto y = new_array<T>({N, C, g.OH, g.OW});
  auto offsets = new_array<uint8_t>({N, C, g.OH, g.OW});
  const T* px = x.data();
  T* py_ = y.mutable_data();
  uint8_t* po = offsets.mutable_data();
  {
    CoreCall call;
    max_pool2d_compact(px, py_, po, planes, g);
  }
  return py::make_tuple(y, offsets);
}

// y (N, C, OH, OW) alone, run(x, y, planes, g) computing it in one core call.
template <typename T, typename Run>
static CArray<T> pooled(const CArray<T>& x, const PoolGeom& geometry, const Run& run) {
  const PoolGeometry g = pool_geometry(geometry);
  const int64_t N = x.shape(0), C = x.shape(1), planes = planes_of(x);
  auto y = new_array<T>({N, C, g.OH, g.OW});
  const T* px = x.data();
  T* py_ = y.mutable_data();
  {
    CoreCall call;
    run(px, py_, planes, g);
  }
  return y;
}

// y alone (an inference call: no argmax kept; any window size).
template <typename T>
static CArray<T> max_pool2d_values(const CArray<T>& x, const PoolGeom& geometry) {
  return pooled(x, geometry, [](const T* px, T* py_, int64_t planes, const PoolGeometry& g) {
    max_pool2d_compact(px, py_, nullptr, planes, g);
  });
}

// relu_output: the pooled output of a ReLU's output, whose backward is folded in (dy counts where it is > 0).
template <typename T>
static CArray<T> max_pool2d_offsets_backward(const CArray<T>& dy, const CArray<uint8_t>& offsets,
                                             const PoolGeom& geometry, const std::optional<CArray<T>>& relu_output) {
  if (!same_shape(offsets, dy)) throw py::value_error("offsets must have dy's shape");
  if (relu_output && !same_shape(*relu_output, dy)) throw py::value_error("relu_output must have dy's shape");
  const PoolGeometry g = pool_geometry(geometry);
  const int64_t N = dy.shape(0), C = dy.shape(1), planes = planes_of(dy);
  auto dx = new_array<T>({N, C, g.H, g.W});
  const T* pdy = dy.data();
  const uint8_t* po = offsets.data();
  const T* pm = relu_output ? relu_output->data() : nullptr;
  T* pdx = dx.mutable_data();
  {
    CoreCall call;
    max_pool2d_backward_compact(pdy, po, pdx, planes, g, pm);
  }
  return dx;
}

static CArray<int64_t> pool_offsets_to_indices(const CArray<uint8_t>& offsets, const PoolGeom& geometry) {
  const PoolGeometry g = pool_geometry(geometry);
  auto indices = new_array<int64_t>({offsets.shape(0), offsets.shape(1), g.OH, g.OW});
  const uint8_t* po = offsets.data();
  int64_t* pi = indices.mutable_data();
  const int64_t planes = planes_of(offsets);
  {
    CoreCall call;
    offsets_to_indices(po, pi, planes, g);
  }
  return indices;
}

// Reference path with int64 indices (any window size).
template <typename T>
static py::tuple max_pool2d_indices(const CArray<T>& x, const PoolGeom& geometry) {
  const PoolGeometry g = pool_geometry(geometry);
  const int64_t N = x.shape(0), C = x.shape(1), planes = planes_of(x);
  auto y = new_array<T>({N, C, g.OH, g.OW});
  auto indices = new_array<int64_t>({N, C, g.OH, g.OW});
  const T* px = x.data();
  T* py_ = y.mutable_data();
  int64_t* pi = indices.mutable_data();
  {
    CoreCall call;
    max_pool2d_ref(px, py_, pi, planes, g);
  }
  return py::make_tuple(y, indices);
}

template <typename T>
static CArray<T> max_pool2d_indices_backward(const CArray<T>& dy, const CArray<int64_t>& indices,
                                             const PoolGeom& geometry) {
  const PoolGeometry g = pool_geometry(geometry);
  const int64_t N = dy.shape(0), C = dy.shape(1), planes = planes_of(dy);
  auto dx = new_array<T>({N, C, g.H, g.W});
  const T* pdy = dy.data();
  const int64_t* pi = indices.data();
  T* pdx = dx.mutable_data();
  {
    CoreCall call;
    max_pool2d_backward_ref(pdy, pi, pdx, planes, g);
  }
  return dx;
}

static void avg_forward(const float* x, float* y, int64_t planes, const PoolGeometry& g, bool cip) {
  avg_pool2d(x, y, planes, g, cip);
}
static void avg_forward(const double* x, double* y, int64_t planes, const PoolGeometry& g, bool cip) {
  avg_pool2d_ref(x, y, planes, g, cip);
}
static void avg_backward(const float* dy, float* dx, int64_t planes, const PoolGeometry& g, bool cip) {
  avg_pool2d_backward(dy, dx, planes, g, cip);
}
static void avg_backward(const double* dy, double* dx, int64_t planes, const PoolGeometry& g, bool cip) {
  avg_pool2d_backward_ref(dy, dx, planes, g, cip);
}

template <typename T>
static CArray<T> avg_pool2d_forward(const CArray<T>& x, const PoolGeom& geometry, bool count_include_pad) {
  return pooled(x, geometry, [&](const T* px, T* py_, int64_t planes, const PoolGeometry& g) {
    avg_forward(px, py_, planes, g, count_include_pad);
  });
}

template <typename T>
static CArray<T> avg_pool2d_grad(const CArray<T>& dy, const PoolGeom& geometry, bool count_include_pad) {
  const PoolGeometry g = pool_geometry(geometry);
  const int64_t N = dy.shape(0), C = dy.shape(1), planes = planes_of(dy);
  auto dx = new_array<T>({N, C, g.H, g.W});
  const T* pdy = dy.data();
  T* pdx = dx.mutable_data();
  {
    CoreCall call;
    avg_backward(pdy, pdx, planes, g, count_include_pad);
  }
  return dx;
}

void bind_pool(py::module_& m) {
  m.attr("pool_max_compact_window") = kMaxCompactWindow;
  m.def("max_pool2d_values", &max_pool2d_values<float>);
  m.def("max_pool2d_values", &max_pool2d_values<double>);
  m.def("max_pool2d_offsets", &max_pool2d_offsets<float>);
  m.def("max_pool2d_offsets", &max_pool2d_offsets<double>);
  m.def("max_pool2d_offsets_backward", &max_pool2d_offsets_backward<float>, py::arg("dy"), py::arg("offsets"),
        py::arg("geometry"), py::arg("relu_output") = py::none());
  m.def("max_pool2d_offsets_backward", &max_pool2d_offsets_backward<double>, py::arg("dy"), py::arg("offsets"),
        py::arg("geometry"), py::arg("relu_output") = py::none());
  m.def("pool_offsets_to_indices", &pool_offsets_to_indices);
  m.def("max_pool2d_indices", &max_pool2d_indices<float>);
  m.def("max_pool2d_indices", &max_pool2d_indices<double>);
  m.def("max_pool2d_indices_backward", &max_pool2d_indices_backward<float>);
  m.def("max_pool2d_indices_backward", &max_pool2d_indices_backward<double>);
  m.def("avg_pool2d", &avg_pool2d_forward<float>);
  m.def("avg_pool2d", &avg_pool2d_forward<double>);
  m.def("avg_pool2d_backward", &avg_pool2d_grad<float>);
  m.def("avg_pool2d_backward", &avg_pool2d_grad<double>);
}
