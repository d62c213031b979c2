// The one thread-count setting every OpenMP region reads (passed as num_threads(n) per region), and parallel_for.
#pragma once
#include <omp.h>

#include <atomic>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <vector>

namespace convcore {

// The most threads a setting may hold: more OpenMP threads than any machine has cores (set_num_threads' callers
// refuse more; a larger OMP_NUM_THREADS is taken as this: 100000 crashed the first parallel region).
constexpr int kMaxThreads = 4096;

// The calling thread's setting, at most a live ThreadCap's count on that thread; always 1 in a process forked from
// this one.
int num_threads();
// The calling thread's setting whatever caps are live: its newest live ThreadSetting's count, else the process-wide
// one.
int thread_setting();
void set_num_threads(int n);  // the process-wide setting, n >= 1 (validated by the caller)
bool in_forked_child();       // true after fork(): OpenMP's pool is gone there, kernels run serially

// A count that holds on the thread that made it while it lives (ThreadCap, ThreadSetting). They nest, may end in any
// order, and one may end on another thread (a Python with-block closed there).
class ThreadScope {
 public:
  ThreadScope(const ThreadScope&) = delete;
  ThreadScope& operator=(const ThreadScope&) = delete;

 protected:
  ThreadScope(int n, bool setting);
  ~ThreadScope();

 private:
  std::shared_ptr<std::atomic<int>> count_;  // its count, 0 once ended; also in its thread's list of its kind
};

// While it lives, num_threads() on the thread that made it is at most n (>= 1): one call run on fewer threads than
// the setting (ThreadChoice). The least of the thread's live caps counts.
class ThreadCap : ThreadScope {
 public:
  explicit ThreadCap(int n) : ThreadScope(n, false) {}
};

// While it lives, the setting on the thread that made it is n (>= 1), whatever the process-wide one is or becomes
// (Python's `with threads(n)`): other threads keep theirs. The thread's newest live one counts.
class ThreadSetting : ThreadScope {
 public:
  explicit ThreadSetting(int n) : ThreadScope(n, true) {}
};

// While it lives, the setting on the thread that made it stays what it was when it was made: one call into the core
// (the bindings make one per call) reads one count throughout, though another thread change the process-wide setting
// meanwhile (set_num_threads). A frozen convolution packed its filters for the tile of one count and shared its rows
// out by another's: wrong outputs (each thread's rows began inside another tile's panels). Nested ones keep the
// outermost's count; they must end in the reverse order of their making, on the thread that made them.
class CallThreads {
 public:
  CallThreads();
  ~CallThreads();
  CallThreads(const CallThreads&) = delete;
  CallThreads& operator=(const CallThreads&) = delete;

 private:
  int outer_;  // the count an enclosing one pinned, 0 where none
};

// The thread count for the calls of one repeated piece of work whose results do not depend on it (a frozen plan's
// run; Python's ThreadChoice blocks, such as fit's training steps): among the setting n and its halvings (n, n / 2,
// ..., 1), the one whose recent calls took the least time. Where cores are far apart (on a shared AMD EPYC host, in
// some minutes, a core-to-core round trip of 310-390 ns instead of 50-90) what one thread writes and the other reads
// costs more than a small layer's work: ResNet-20 at batch 1 took 0.66-0.72 ms on 2 threads there against 0.55 on 1
// (and 0.38 on 2 in the other minutes), a LeNet-5 training step at batch 32 0.88 against 0.81 (0.55). Each candidate
// runs kRunCalls calls in a row first, the setting's first; then the best runs, and each of the others in turn is
// probed: its times forgotten, it runs kRunCalls calls again, once the calls since the last probe (or since the best
// last changed) have taken the spacing times its estimate (the time spent in calls, not between them: a server's calls
// an idle second apart probe no more often). The spacing starts at kProbeSpacing, doubles after each probe that leaves
// the best as it was, up to kMaxProbeSpacing, and starts again when the best changes: the probes' calls take kRunCalls
// / spacing of the time in calls, 1% at first and 0.125% at the widest (the time they add is less: their excess over
// the best's; more where a probe's first call is slow, a thread waking from sleep took up to 20 ms); a candidate that
// becomes the faster is found at its next probe, within kMaxProbeSpacing times its estimate with two candidates (a
// LeNet-5 training step's 1600 x 0.8 ms). A candidate's estimate is the least of its last kWindow times (its probe's,
// for one not the best): the noise of a shared machine only adds time (a 2-thread LeNet-5 call at batch 256 took 4 ms
// instead of 1.15 about once a second), while a lasting change of the best shows within kWindow calls. The best
// changes to a candidate whose estimate is more than kMargin below the best's. A new setting starts afresh (calls
// under different settings, or caps, should not share one). Thread-safe.
class ThreadChoice {
 public:
  static constexpr int kRunCalls = 2;
  static constexpr int kWindow = 3;
  static constexpr double kProbeSpacing = 200.0;
  static constexpr double kMaxProbeSpacing = 1600.0;
  static constexpr double kMargin = 0.03;
  // The thread count for the next call under the setting `setting` (>= 1).
  int pick(int setting);
  // A call on `threads` threads, picked under `setting`, took `seconds`.
  void record(int setting, int threads, double seconds);

 private:
  struct Times {  // one candidate's last `count` (at most kWindow) times, the next one going to last[next]
    double last[kWindow];
    int count, next;
    double estimate() const;  // the least of them; -1 where none
  };
  std::mutex lock_;
  int setting_ = 0;
  std::vector<Times> times_;  // of the candidates, setting_ >> i threads
  static constexpr size_t kNone = ~size_t(0);
  size_t best_ = 0, next_probe_ = 0;
  size_t probing_ = kNone;  // the candidate a probe under way times
  double busy_ = 0.0;       // seconds in calls since the last probe began
  double spacing_ = kProbeSpacing;
};

// Threads to use for `work` units (e.g. multiply-adds): 1 below the serial threshold, and 1 inside an enclosing
// parallel region (a kernel called per image from a parallel loop runs serially).
int threads_for(int64_t work, int64_t serial_below = 300000);

// The items [0, n) in equal contiguous shares, one a thread, each handed out from its front to its owner and, once
// they are done with their own, from its back to the other threads (take_shares). With cores equally fast each thread
// then does the same items call after call, so that what an item writes stays in the cache of the core that wrote it
// last time (items handed out in turn from one counter moved between cores from call to call, and a core writing
// lines the other last held waits for them: on a shared AMD EPYC, some minutes, a batch-1 AlexNet conv1 forward took
// 1.6 ms instead of 1.3); a slower core's items still go to the faster one. Defined in threads.cpp, compiled for
// every CPU (the ISA-specific units that use it hold no copy of its code).
class Shares {
 public:
  Shares(int64_t n, int count);  // count >= 1
  ~Shares();
  Shares(const Shares&) = delete;
  Shares& operator=(const Shares&) = delete;
  int count() const { return count_; }
  // The next items [*lo, *hi) of share s, from its front or back: half of those left, at least min_count and at most
  // max_count; false if none is left.
  bool take(int s, bool front, int64_t min_count, int64_t max_count, int64_t* lo, int64_t* hi);

 private:
  struct Range;
  std::unique_ptr<Range[]> ranges_;
  int count_;
};

// On the calling thread of a parallel region: body(lo, hi) for runs of items taken from this thread's share, then
// from the others' (see Shares).
template <typename Body>
void take_shares(Shares& shares, int64_t min_count, int64_t max_count, const Body& body) {
  const int nt = shares.count(), t = omp_get_thread_num();
  for (int step = 0; step < nt; ++step) {
    const int share = (t + step) % nt;
    int64_t lo, hi;
    while (shares.take(share, step == 0, min_count, max_count, &lo, &hi)) body(lo, hi);
  }
}

enum class Schedule { fixed, as_free };

// Runs body(i) for i in [0, n) on min(n, nt) threads (in order on the calling thread, outside any parallel region,
// when that is 1: kernels the body calls may then use the threads themselves): in equal contiguous
// shares (Schedule::fixed), or, one i at a time, each thread its own such share first and then whatever the others
// have not yet taken (Schedule::as_free: for few, large tasks on cores of unequal speed; see Shares; no task's result
// may depend on which thread ran it). An exception thrown by a body is caught inside the OpenMP region (where it
// would terminate the process) and rethrown on the calling thread afterwards.
template <typename Body>
void parallel_for(int64_t n, int nt, const Body& body, Schedule schedule = Schedule::fixed) {
  if (n < nt) nt = static_cast<int>(n);  // a thread without an item would only be woken to wait at the barrier
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
    Shares shares(n, nt);
#pragma omp parallel num_threads(nt)
    take_shares(shares, 1, 1, [&](int64_t lo, int64_t) { run(lo); });
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace convcore
