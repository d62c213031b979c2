// Shared helpers for the thin pybind11 layer: arrays arrive validated (dtype, C order) from convcore/.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "convcore/buffer_cache.h"
#include "convcore/checked.h"
#include "convcore/conv.h"
#include "convcore/pool.h"
#include "convcore/threads.h"

namespace py = pybind11;

template <typename T>
using CArray = py::array_t<T, py::array::c_style>;

// What every call into the core holds while it runs: the GIL released, and the calling thread's thread count read
// once (CallThreads), so that another Python thread's set_num_threads meanwhile does not reach it halfway.
struct CoreCall {
  py::gil_scoped_release release;
  convcore::CallThreads threads;
};

// Whether the ndarray a is C-contiguous, aligned and of T's own dtype object: an array taken as it is, in a few field
// reads (the CArray caster's, and plain_matmul's).
template <typename T>
inline bool plain_array(PyObject* a) {
  using py::detail::npy_api;
  static PyObject* const descr = py::dtype::of<T>().release().ptr();  // numpy's singleton for T, kept for good
  constexpr int flags = npy_api::NPY_ARRAY_C_CONTIGUOUS_ | npy_api::NPY_ARRAY_ALIGNED_;
  const py::detail::PyArray_Proxy* p = py::detail::array_proxy(a);
  return p->descr == descr && (p->flags & flags) == flags;
}

// The caster of CArray arguments. Arrays arrive validated from convcore/, so an argument that is already a
// C-contiguous, aligned array of T's own dtype object is taken as it is, in a few field reads; anything else goes
// through pybind11's conversion as before (which refuses what it cannot convert without loss). pybind11's own caster
// builds an empty array for every argument before loading it, then a dtype and a PyArray_FromAny call: ~0.4 us an
// array, measured 1.6 -> 0.6 us for a call with gemm's eleven arguments.
namespace pybind11::detail {
template <typename T>
struct pyobject_caster<array_t<T, array::c_style>> {
  using type = array_t<T, array::c_style>;
  pyobject_caster() : value(reinterpret_steal<type>(handle())) {}  // a null handle until load: nothing allocated
  bool load(handle src, bool convert) {
    if (npy_api::get().PyArray_Check_(src.ptr()) && ::plain_array<T>(src.ptr())) {
      value = reinterpret_borrow<type>(src);
      return true;
    }
    if (!convert && !type::check_(src)) return false;
    value = type::ensure(src);
    return static_cast<bool>(value);
  }
  static handle cast(const handle& src, return_value_policy /* policy */, handle /* parent */) {
    return src.inc_ref();
  }
  PYBIND11_TYPE_CASTER(type, handle_type_name<type>::name);
};
}  // namespace pybind11::detail

// A new C-order array (uninitialised); its element and byte counts are computed with checked int64 multiplication,
// so a shape whose size overflows is refused (ValueError) before anything is allocated.
template <typename T>
inline CArray<T> new_array(const std::vector<int64_t>& shape) {
  int64_t elements = 1;
  try {
    for (int64_t d : shape) {
      if (d < 0) throw std::overflow_error("negative dimension");
      elements = convcore::checked_mul(elements, d);
    }
    convcore::checked_mul(elements, static_cast<int64_t>(sizeof(T)));
  } catch (const std::overflow_error&) {
    throw py::value_error("array size overflows int64: refusing to allocate");
  }
  // The memory comes from the output-buffer cache and goes back to it when the array (and every view of it)
  // is gone: a training step's outputs reuse the previous step's blocks instead of fresh, faulting pages.
  void* block = convcore::output_buffers().take(static_cast<size_t>(elements) * sizeof(T));
  py::capsule owner(block, [](void* p) { convcore::output_buffers().give(p); });
  return CArray<T>(std::vector<py::ssize_t>(shape.begin(), shape.end()), static_cast<T*>(block), owner);
}

// Whether a and b have the same shape (ndim and every dimension).
template <typename A, typename B>
inline bool same_shape(const A& a, const B& b) {
  return a.ndim() == b.ndim() && std::equal(a.shape(), a.shape() + a.ndim(), b.shape());
}

// The geometry tuples convcore/functional hands over. Convolution: (P, Q, stride_h, stride_w, pad_h, pad_w, dil_h,
// dil_w, groups), with x (N, C, H, W) and w (K, C/groups, R, S). Pooling: (H, W, OH, OW, KH, KW, SH, SW, PH, PW).
using ConvGeom = std::array<int64_t, 9>;
using PoolGeom = std::array<int64_t, 10>;

inline convcore::ConvShape conv_shape(const std::array<int64_t, 4>& x, const std::array<int64_t, 4>& w,
                                      const ConvGeom& g) {
  return convcore::ConvShape{x[0], x[1], x[2], x[3], w[0], w[2], w[3], g[0], g[1], g[2], g[3], g[4], g[5], g[6],
                             g[7], g[8]};
}

inline convcore::PoolGeometry pool_geometry(const PoolGeom& a) {
  return convcore::PoolGeometry{a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9]};
}

void bind_runtime(py::module_& m);
void bind_gemm(py::module_& m);
void bind_ops(py::module_& m);
void bind_conv(py::module_& m);
void bind_pool(py::module_& m);
void bind_plan(py::module_& m);
