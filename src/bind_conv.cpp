// Bindings: conv.
#include "bindings.h"

void bind_conv(py::module_& m) { (void)m; }
