// Bindings: GEMM. float32 runs the tiled engine, float64 (and gemm_reference) the naive oracle.
// Arrays arrive validated from convcore/functional/gemm.py: op(A) is (M, K), op(B) is (K, N), C is (M, N).
#include "bindings.h"
#include "convcore/gemm.h"

using namespace convcore;

namespace {

template <typename T>
CArray<T> run(const CArray<T>& a, const CArray<T>& b, bool trans_a, bool trans_b, T alpha, T beta,
              std::optional<CArray<T>> c, std::optional<CArray<T>> bias, int bias_axis, bool relu, bool reference) {
  const int64_t M = trans_a ? a.shape(1) : a.shape(0), K = trans_a ? a.shape(0) : a.shape(1);
  const int64_t N = trans_b ? b.shape(0) : b.shape(1);
  if ((trans_b ? b.shape(1) : b.shape(0)) != K) throw py::value_error("gemm: inner dimensions differ");
  if (c && (c->ndim() != 2 || c->shape(0) != M || c->shape(1) != N)) throw py::value_error("gemm: c must be (M, N)");
  if (bias && bias->size() != (bias_axis == 1 ? M : N)) throw py::value_error("gemm: bias has the wrong length");
  CArray<T> out = c ? *c : new_array<T>({M, N});
  const T *pa = a.data(), *pb = b.data(), *pbias = bias ? bias->data() : nullptr;
  T* pc = out.mutable_data();
  const auto ta = trans_a ? Trans::yes : Trans::no, tb = trans_b ? Trans::yes : Trans::no;
  const auto axis = static_cast<Epilogue::Bias>(bias_axis);
  const int64_t lda = a.shape(1), ldb = b.shape(1);
  CoreCall call;
  if constexpr (std::is_same_v<T, float>) {
    if (!reference) {
      Epilogue epi;
      epi.bias = pbias;
      epi.bias_axis = axis;
      epi.relu = relu;
      sgemm(ta, tb, M, N, K, alpha, pa, lda, pb, ldb, beta, pc, N, epi);
      return out;
    }
  }
  gemm_ref<T>(ta, tb, M, N, K, alpha, pa, lda, pb, ldb, beta, pc, N, pbias, axis, relu);
  return out;
}

// matmul's common case, recognised in a few field reads: two float32 ndarrays (not subclasses), 2-D, C-contiguous and
// aligned, whose inner dimensions agree and whose product has at most max_elements elements. Anything else returns
// None, for convcore/functional/gemm.py to validate and run. (Python's own checks of the case took 0.4 us of a 1.3 us
// call.)
py::object plain_matmul(py::handle a, py::handle b, int64_t max_elements) {
  PyTypeObject* const ndarray = py::detail::npy_api::get().PyArray_Type_;
  const auto plain = [&](py::handle h) {
    return Py_TYPE(h.ptr()) == ndarray && plain_array<float>(h.ptr()) &&
           py::detail::array_proxy(h.ptr())->nd == 2;
  };
  if (!plain(a) || !plain(b)) return py::none();
  const py::ssize_t* a_dims = py::detail::array_proxy(a.ptr())->dimensions;
  const py::ssize_t* b_dims = py::detail::array_proxy(b.ptr())->dimensions;
  const int64_t M = a_dims[0], N = b_dims[1];
  if (a_dims[1] != b_dims[0] || (M > 0 && N > max_elements / M)) return py::none();
  return run<float>(py::reinterpret_borrow<CArray<float>>(a), py::reinterpret_borrow<CArray<float>>(b), false, false,
                    1.0f, 0.0f, std::nullopt, std::nullopt, 0, false, false);
}

template <typename T>
void bind_dtype(py::module_& m) {
  m.def("gemm", &run<T>, py::arg("a"), py::arg("b"), py::arg("trans_a"), py::arg("trans_b"), py::arg("alpha"),
        py::arg("beta"), py::arg("c"), py::arg("bias"), py::arg("bias_axis"), py::arg("relu"),
        py::arg("reference"));
}

}  // namespace

void bind_gemm(py::module_& m) {
  bind_dtype<float>(m);
  bind_dtype<double>(m);
  m.def("plain_matmul", &plain_matmul, py::arg("a"), py::arg("b"), py::arg("max_elements"));
}
