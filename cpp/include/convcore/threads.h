// The one thread-count setting every OpenMP region reads (passed as num_threads(n) per region).
#pragma once
#include <cstdint>

namespace convcore {

int num_threads();            // current setting, >= 1; always 1 in a process forked from this one
void set_num_threads(int n);  // n >= 1 (validated by the caller)
bool in_forked_child();       // true after fork(): OpenMP's pool is gone there, kernels run serially

// Threads to use for `work` units (e.g. multiply-adds): 1 below the serial threshold.
int threads_for(int64_t work, int64_t serial_below = 300000);

}  // namespace convcore
