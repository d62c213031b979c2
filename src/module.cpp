// convcore._core: the pybind11 module. Each bind_*.cpp converts, checks, releases the GIL and calls cpp/.
#include "bindings.h"

PYBIND11_MODULE(_core, m) {
  m.doc() = "convcore C++ core (internal; use the convcore package)";
  bind_runtime(m);
  bind_gemm(m);
  bind_ops(m);
  bind_conv(m);
  bind_pool(m);
  bind_plan(m);
}
