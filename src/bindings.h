// Shared helpers for the thin pybind11 layer: arrays arrive validated (dtype, C order) from convcore/.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <vector>

namespace py = pybind11;

template <typename T>
using CArray = py::array_t<T, py::array::c_style>;

template <typename T>
inline CArray<T> new_array(const std::vector<int64_t>& shape) {
  return CArray<T>(std::vector<py::ssize_t>(shape.begin(), shape.end()));
}

void bind_runtime(py::module_& m);
void bind_gemm(py::module_& m);
void bind_ops(py::module_& m);
void bind_conv(py::module_& m);
void bind_pool(py::module_& m);
