// Bindings: ISA dispatch and the thread setting.
#include <omp.h>

#include "bindings.h"
#include "convcore/dispatch.h"
#include "convcore/threads.h"

using namespace convcore;

void bind_runtime(py::module_& m) {
  m.def("detected_isa", [] { return std::string(isa_name(detected_isa())); });
  m.def("selected_isa", [] { return std::string(isa_name(selected_isa())); });
  m.def("compiled_isas", [] { return std::vector<std::string>{"scalar", "avx2", "avx512"}; });
  m.def("select_isa", [](const std::string& name) {
    Isa isa;
    if (!parse_isa(name, &isa)) throw py::value_error("unknown ISA '" + name + "'; expected scalar, avx2 or avx512");
    return select_isa(isa);
  });
  m.def("gemm_kernel_name", [] { return std::string(kernels().gemm.name); });
  m.def("pool_kernel_name", [] { return std::string(kernels().pool.name); });
  m.def("get_num_threads", [] { return num_threads(); });
  m.def("set_num_threads", [](int n) { set_num_threads(n); });
  m.def("in_forked_child", [] { return in_forked_child(); });
  m.def("omp_max_threads", [] { return omp_get_max_threads(); });
}
