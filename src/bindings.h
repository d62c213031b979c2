// Shared helpers for the thin pybind11 layer: arrays arrive validated (dtype, C order) from convcore/.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <vector>

#include "convcore/buffer_cache.h"
#include "convcore/checked.h"

namespace py = pybind11;

template <typename T>
using CArray = py::array_t<T, py::array::c_style>;

// A new C-order array (uninitialised); its element and byte counts are computed with checked int64 multiplication, so a shape
// whose size overflows is refused (ValueError) before anything is allocated.
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

void bind_runtime(py::module_& m);
void bind_gemm(py::module_& m);
void bind_ops(py::module_& m);
void bind_conv(py::module_& m);
void bind_pool(py::module_& m);
void bind_plan(py::module_& m);
