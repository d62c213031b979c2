// Bindings: GEMM.
#include "bindings.h"
#include "convcore/gemm.h"

using namespace convcore;

template <typename T>
static CArray<T> matmul(const CArray<T>& a, const CArray<T>& b) {
  const int64_t M = a.shape(0), K = a.shape(1), N = b.shape(1);
  auto c = new_array<T>({M, N});
  const T* pa = a.data();
  const T* pb = b.data();
  T* pc = c.mutable_data();
  {
    py::gil_scoped_release release;
    gemm_ref<T>(Trans::no, Trans::no, M, N, K, T(1), pa, K, pb, N, T(0), pc, N);
  }
  return c;
}

void bind_gemm(py::module_& m) {
  m.def("matmul", &matmul<float>, py::arg("a"), py::arg("b"));
  m.def("matmul", &matmul<double>, py::arg("a"), py::arg("b"));
}
