// The one thread-count setting every OpenMP region reads (passed as num_threads(n) per region), and parallel_for.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <mutex>
#include <vector>

namespace convcore {

int num_threads();            // current setting, >= 1; always 1 in a process forked from this one
void set_num_threads(int n);  // n >= 1 (validated by the caller)
bool in_forked_child();       // true after fork(): OpenMP's pool is gone there, kernels run serially

// Threads to use for `work` units (e.g. multiply-adds): 1 below the serial threshold, and 1 inside an enclosing
// parallel region (a kernel called per image from a parallel loop runs serially).
int threads_for(int64_t work, int64_t serial_below = 300000);

// One thread's share [lo, hi) of a range of work items, those not yet taken: its owner takes them from the front,
// and the other threads, once done with their own shares, from the back (take_shares). With cores equally fast each
// thread then does the same items call after call, so that what an item writes stays in the cache of the core that
// wrote it last time (items handed out in turn from one counter moved between cores from call to call, and a core
// writing lines the other last held waits for them: on a shared AMD EPYC, some minutes, a batch-1 AlexNet conv1
// forward took 1.6 ms instead of 1.3); a slower core's items still go to the faster one.
class alignas(64) Share {
 public:
  void reset(int64_t lo, int64_t hi) {
    lo_ = lo;
    hi_ = hi;
  }
  // The next items [*lo, *hi): half of those left, at least min_count and at most max_count; false if none is left.
  bool take(bool front, int64_t min_count, int64_t max_count, int64_t* lo, int64_t* hi) {
    std::lock_guard<std::mutex> hold(lock_);
    const int64_t left = hi_ - lo_;
    if (left <= 0) return false;
    const int64_t count = std::min(left, std::clamp<int64_t>((left + 1) / 2, min_count, max_count));
    if (front) {
      *lo = lo_;
      lo_ += count;
    } else {
      hi_ -= count;
      *lo = hi_;
    }
    *hi = *lo + count;
    return true;
  }

 private:
  std::mutex lock_;
  int64_t lo_ = 0, hi_ = 0;
};

// n items in nt equal contiguous shares
inline std::vector<Share> equal_shares(int64_t n, int nt) {
  std::vector<Share> shares(static_cast<size_t>(nt));
  for (int t = 0; t < nt; ++t) shares[t].reset(n * t / nt, n * (t + 1) / nt);
  return shares;
}

// On the calling thread of a parallel region: body(lo, hi) for runs of items taken from this thread's share, then
// from the others' (see Share).
template <typename Body>
void take_shares(std::vector<Share>& shares, int64_t min_count, int64_t max_count, const Body& body) {
  const int nt = static_cast<int>(shares.size()), t = omp_get_thread_num();
  for (int step = 0; step < nt; ++step) {
    Share& share = shares[(t + step) % nt];
    int64_t lo, hi;
    while (share.take(step == 0, min_count, max_count, &lo, &hi)) body(lo, hi);
  }
}

enum class Schedule { fixed, as_free };

// Runs body(i) for i in [0, n) on `nt` threads (in order on the calling thread when nt <= 1): in equal contiguous
// shares (Schedule::fixed), or, one i at a time, each thread its own such share first and then whatever the others
// have not yet taken (Schedule::as_free: for few, large tasks on cores of unequal speed; see Share; no task's result
// may depend on which thread ran it). An exception thrown by a body is caught inside the OpenMP region (where it
// would terminate the process) and rethrown on the calling thread afterwards.
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
    std::vector<Share> shares = equal_shares(n, nt);
#pragma omp parallel num_threads(nt)
    take_shares(shares, 1, 1, [&](int64_t lo, int64_t) { run(lo); });
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace convcore
