// Process-wide thread-count setting, initialised from OMP_NUM_THREADS / the OpenMP default.
#include "convcore/threads.h"

#include <omp.h>

#include <atomic>

namespace convcore {
namespace {
std::atomic<int> g_threads{0};
}

int num_threads() {
  int n = g_threads.load(std::memory_order_relaxed);
  if (n <= 0) {
    n = omp_get_max_threads();
    if (n < 1) n = 1;
    g_threads.store(n, std::memory_order_relaxed);
  }
  return n;
}

void set_num_threads(int n) { g_threads.store(n < 1 ? 1 : n, std::memory_order_relaxed); }

int threads_for(int64_t work, int64_t serial_below) { return work < serial_below ? 1 : num_threads(); }

}  // namespace convcore
