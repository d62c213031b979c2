// The one thread-count setting every OpenMP region reads (passed as num_threads(n) per region), and parallel_for.
#pragma once
#include <cstdint>
#include <exception>
#include <mutex>

namespace convcore {

int num_threads();            // current setting, >= 1; always 1 in a process forked from this one
void set_num_threads(int n);  // n >= 1 (validated by the caller)
bool in_forked_child();       // true after fork(): OpenMP's pool is gone there, kernels run serially

// Threads to use for `work` units (e.g. multiply-adds): 1 below the serial threshold, and 1 inside an enclosing
// parallel region (a kernel called per image from a parallel loop runs serially).
int threads_for(int64_t work, int64_t serial_below = 300000);

enum class Schedule { fixed, as_free };

// Runs body(i) for i in [0, n) on `nt` threads (in order on the calling thread when nt <= 1): in equal contiguous
// shares (Schedule::fixed), or one i at a time to whichever thread is free (Schedule::as_free: for few, large tasks
// on cores of unequal speed; no task's result may depend on which thread ran it). An exception thrown by a body is
// caught inside the OpenMP region (where it would terminate the process) and rethrown on the calling thread
// afterwards.
template <typename Body>
void parallel_for(int64_t n, int nt, const Body& body, Schedule schedule = Schedule::fixed) {
  if (nt <= 1) {  // no OpenMP region (~1 us to enter) for serial work; exceptions propagate as they are
    for (int64_t i = 0; i < n; ++i) body(i);
    return;
  }
  std::exception_ptr error;
  std::mutex error_lock;
  const auto run = [&](int64_t i) {
    try {
      body(i);
    } catch (...) {
      std::lock_guard<std::mutex> guard(error_lock);
      if (!error) error = std::current_exception();
    }
  };
  if (schedule == Schedule::fixed) {
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t i = 0; i < n; ++i) run(i);
  } else {
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t i = 0; i < n; ++i) run(i);
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace convcore
