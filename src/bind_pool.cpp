// Bindings: pool.
#include "bindings.h"

void bind_pool(py::module_& m) { (void)m; }
