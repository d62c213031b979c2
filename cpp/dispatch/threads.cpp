// The thread-count setting (process-wide, initialised from OMP_NUM_THREADS / the OpenMP default; per thread while a
// ThreadSetting lives there), the caps, and the fork guard.
#include "convcore/threads.h"

#include <omp.h>
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <vector>

namespace convcore {
namespace {
std::atomic<int> g_threads{0};
std::atomic<bool> g_forked_child{false};

// libgomp's thread pool does not survive fork(): a parallel region with more than one thread in the child waits
// forever for threads that no longer exist. A forked child therefore runs every kernel on its calling thread.
void mark_forked_child() { g_forked_child.store(true, std::memory_order_relaxed); }

const int g_fork_guard_installed = pthread_atfork(nullptr, nullptr, mark_forked_child);

// The ThreadCaps and ThreadSettings made on this thread, oldest first: their counts, 0 for one that has ended
// (dropped at the next look).
using Scopes = std::vector<std::shared_ptr<std::atomic<int>>>;
thread_local Scopes t_caps, t_settings;
thread_local int t_call_setting = 0;  // a live CallThreads' count on this thread, 0 where none

void drop_ended(Scopes& scopes) {
  scopes.erase(std::remove_if(scopes.begin(), scopes.end(),
                              [](const auto& n) { return n->load(std::memory_order_acquire) == 0; }),
               scopes.end());
}

// The least of this thread's live caps' counts, 0 where there is none.
int live_cap() {
  drop_ended(t_caps);
  int cap = 0;
  for (const auto& scope : t_caps) {
    const int n = scope->load(std::memory_order_acquire);  // 0 where it ended on another thread since
    if (n > 0) cap = cap == 0 ? n : std::min(cap, n);
  }
  return cap;
}
}  // namespace

int thread_setting() {
  if (t_call_setting > 0) return t_call_setting;
  if (!t_settings.empty()) {
    drop_ended(t_settings);
    const int n = t_settings.empty() ? 0 : t_settings.back()->load(std::memory_order_acquire);
    if (n > 0) return n;
  }
  int n = g_threads.load(std::memory_order_relaxed);
  if (n <= 0) {
    n = std::clamp(omp_get_max_threads(), 1, kMaxThreads);
    g_threads.store(n, std::memory_order_relaxed);
  }
  return n;
}

int num_threads() {
  if (g_forked_child.load(std::memory_order_relaxed)) return 1;
  const int n = thread_setting();
  const int cap = t_caps.empty() ? 0 : live_cap();
  return cap > 0 ? std::min(n, cap) : n;
}

void set_num_threads(int n) { g_threads.store(n < 1 ? 1 : n, std::memory_order_relaxed); }

bool in_forked_child() { return g_forked_child.load(std::memory_order_relaxed); }

int threads_for(int64_t work, int64_t serial_below) {
  if (work < serial_below || omp_in_parallel()) return 1;
  return num_threads();
}

ThreadScope::ThreadScope(int n, bool setting) : count_(std::make_shared<std::atomic<int>>(std::max(n, 1))) {
  Scopes& scopes = setting ? t_settings : t_caps;
  drop_ended(scopes);  // the list holds the live ones and those ended since the last look
  scopes.push_back(count_);
}
ThreadScope::~ThreadScope() { count_->store(0, std::memory_order_release); }

CallThreads::CallThreads() : outer_(t_call_setting) {
  if (outer_ == 0) t_call_setting = thread_setting();
}
CallThreads::~CallThreads() { t_call_setting = outer_; }

double ThreadChoice::Times::estimate() const {
  if (count == 0) return -1.0;
  return *std::min_element(last, last + count);
}

int ThreadChoice::pick(int setting) {
  setting = std::max(setting, 1);
  const std::lock_guard<std::mutex> hold(lock_);
  if (setting != setting_) {
    setting_ = setting;
    times_.clear();
    for (int n = setting; n >= 1; n /= 2) times_.push_back(Times{{}, 0, 0});
    best_ = next_probe_ = 0;
    probing_ = kNone;
    busy_ = 0.0;
    spacing_ = kProbeSpacing;
  }
  for (size_t i = 0; i < times_.size(); ++i)  // the first calls, or a probe under way
    if (times_[i].count < kRunCalls) return setting >> i;
  if (times_.size() > 1) {
    const size_t probe = next_probe_ == best_ ? (best_ + 1) % times_.size() : next_probe_;
    if (busy_ >= spacing_ * times_[probe].estimate()) {
      busy_ = 0.0;
      probing_ = probe;
      next_probe_ = (probe + 1) % times_.size();
      times_[probe] = Times{{}, 0, 0};  // timed afresh: this call and the next kRunCalls - 1
      return setting >> probe;
    }
  }
  return setting >> best_;
}

void ThreadChoice::record(int setting, int threads, double seconds) {
  const std::lock_guard<std::mutex> hold(lock_);
  if (setting != setting_ || times_.empty()) return;  // timed under a setting since replaced (or never picked)
  busy_ += seconds;
  size_t timed = kNone;
  for (size_t i = 0; i < times_.size(); ++i) {
    if ((setting >> i) != threads) continue;
    Times& t = times_[i];
    t.last[t.next] = seconds;
    t.next = (t.next + 1) % kWindow;
    t.count = std::min(t.count + 1, kWindow);
    timed = i;
    break;
  }
  size_t fastest = best_;
  for (size_t i = 0; i < times_.size(); ++i) {
    const double e = times_[i].estimate();
    if (e >= 0 && (times_[fastest].estimate() < 0 || e < times_[fastest].estimate())) fastest = i;
  }
  const double best = times_[best_].estimate();
  const bool probe_done = timed != kNone && timed == probing_ && times_[timed].count >= kRunCalls;
  if (best < 0 || times_[fastest].estimate() < best * (1.0 - kMargin)) {
    if (best >= 0 && fastest != best_) {  // the best changed: the probes start again from here, often
      spacing_ = kProbeSpacing;
      busy_ = 0.0;
    }
    best_ = fastest;
  } else if (probe_done && best_ != timed) {  // the probed count stayed the slower
    spacing_ = std::min(2.0 * spacing_, kMaxProbeSpacing);
  }
  if (probe_done) probing_ = kNone;
}

struct alignas(64) Shares::Range {  // a cache line each: the threads taking from two shares do not contend
  std::mutex lock;
  int64_t lo = 0, hi = 0;  // the items not yet taken
};

Shares::Shares(int64_t n, int count) : ranges_(new Range[static_cast<size_t>(count)]), count_(count) {
  for (int s = 0; s < count; ++s) {
    ranges_[s].lo = n * s / count;
    ranges_[s].hi = n * (s + 1) / count;
  }
}

Shares::~Shares() = default;

bool Shares::take(int s, bool front, int64_t min_count, int64_t max_count, int64_t* lo, int64_t* hi) {
  Range& r = ranges_[s];
  std::lock_guard<std::mutex> hold(r.lock);
  const int64_t left = r.hi - r.lo;
  if (left <= 0) return false;
  const int64_t count = std::min(left, std::clamp<int64_t>((left + 1) / 2, min_count, max_count));
  if (front) {
    *lo = r.lo;
    r.lo += count;
  } else {
    r.hi -= count;
    *lo = r.hi;
  }
  *hi = *lo + count;
  return true;
}

}  // namespace convcore
