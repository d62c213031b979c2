// parallel_for's schedules: every task once, whatever the task and thread counts; Schedule::as_free's threads take
// from the back of another thread's share once done with their own (a thread held up by its first task does not hold
// up the tasks behind it).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include <omp.h>

#include "check.h"
#include "convcore/threads.h"

using namespace convcore;

namespace {

void every_task_once(int64_t n, int nt, Schedule schedule) {
  std::vector<std::atomic<int>> runs(static_cast<size_t>(n));
  for (auto& r : runs) r = 0;
  parallel_for(n, nt, [&](int64_t i) { ++runs[i]; }, schedule);
  bool once = true;
  for (auto& r : runs) once &= r == 1;
  CHECK(once);
}

// Two threads, 10 tasks: thread 0 owns 0-4, thread 1 owns 5-9. Task 0 waits until task 4, the back of thread 0's
// share, has run on the other thread (or 30 s have passed, failing): thread 1 runs its own share, in order, then takes
// from the back of thread 0's. (In turn from one counter, thread 1 would take 1 to 4; in fixed shares, none.)
void held_up_share_is_taken_from_the_back() {
  std::atomic<bool> back_taken{false};
  std::vector<int64_t> order[2];  // the tasks each thread ran, in order
  bool waited_out = false;
  parallel_for(
      10, 2,
      [&](int64_t i) {
        const int t = omp_get_thread_num();
        order[t].push_back(i);
        if (i == 4 && t == 1) back_taken = true;
        if (i != 0 || omp_get_num_threads() < 2) return;  // a team of one (an OpenMP thread limit): nothing to wait for
        const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        while (!back_taken && std::chrono::steady_clock::now() < give_up) std::this_thread::yield();
        waited_out = !back_taken;
      },
      Schedule::as_free);
  if (order[0].size() == 10) return;  // one thread ran them all
  CHECK(!waited_out);
  CHECK(order[1].size() >= 6 && std::vector<int64_t>(order[1].begin(), order[1].begin() + 6) ==
                                    std::vector<int64_t>({5, 6, 7, 8, 9, 4}));
}

// Calls of work whose times on each thread count are `times(threads, call)` (seconds), under ThreadChoice: the thread
// counts picked, in order.
template <typename Times>
std::vector<int> choices(ThreadChoice& choice, int setting, int calls, const Times& times) {
  std::vector<int> picked;
  for (int call = 0; call < calls; ++call) {
    const int threads = choice.pick(setting);
    choice.record(setting, threads, times(threads, call));
    picked.push_back(threads);
  }
  return picked;
}

size_t count(const std::vector<int>& v, size_t from, size_t to, int threads) {
  size_t n = 0;
  for (size_t i = from; i < to && i < v.size(); ++i) n += v[i] == threads;
  return n;
}

// The longest run of `threads` in v from `from` on.
size_t longest_run(const std::vector<int>& v, size_t from, int threads) {
  size_t longest = 0, run = 0;
  for (size_t i = from; i < v.size(); ++i) {
    run = v[i] == threads ? run + 1 : 0;
    longest = std::max(longest, run);
  }
  return longest;
}

// Two candidates: each run twice first (the setting's first), then the faster; the slower probed with two calls once
// the calls since the last probe have taken 200 times its estimate, twice that after a probe that left the best as it
// was, up to 1600 times; a change in which is faster followed at the next probe, or within three calls of the best.
void two_threads_follow_the_faster() {
  ThreadChoice choice;
  // 2 threads take 1.0 on the first call (its weights packed), then 0.7; 1 thread 0.5
  const auto far = [](int threads, int call) { return threads == 1 ? 0.5 : call == 0 ? 1.0 : 0.7; };
  std::vector<int> picked = choices(choice, 2, 1000, far);
  CHECK((std::vector<int>(picked.begin(), picked.begin() + 4) == std::vector<int>({2, 2, 1, 1})));
  // then two calls on 2 threads once 200 x 0.7 = 140 s have gone in calls since 1 thread became the best (at the
  // third call: 280 calls of 0.5 from the fourth, calls 283 and 284), then once 400 x 0.7 = 280 s have (558 calls
  // more: 843 and 844)
  std::vector<size_t> twos;  // where 2 threads ran after the first 4 calls
  for (size_t i = 4; i < picked.size(); ++i)
    if (picked[i] == 2) twos.push_back(i);
  CHECK((twos == std::vector<size_t>({283, 284, 843, 844})));
  // the cores come near: 2 threads 0.3; the next probe (800 x 0.7 = 560 s after the last began: 78.9 s in its 2
  // calls and the 155 calls of 0.5 above, then 963 calls) switches, its estimate (the least of its last 3 times)
  // dropping
  const auto near = [](int threads, int) { return threads == 1 ? 0.5 : 0.3; };
  picked = choices(choice, 2, 3000, near);
  size_t first_two = 0;
  while (first_two < picked.size() && picked[first_two] != 2) ++first_two;
  CHECK(first_two == 963);
  CHECK(count(picked, first_two, first_two + 300, 2) == 300);
  // then 1 thread is probed with two calls once 200 x 0.5 = 100 s have gone in calls of 0.3 (333 calls), then 400 x
  // 0.5 (667 calls): the spacing starts again where the best changes
  std::vector<size_t> ones;
  for (size_t i = first_two; i < picked.size(); ++i)
    if (picked[i] == 1) ones.push_back(i - first_two);
  CHECK(ones.size() == 4 && ones[1] == ones[0] + 1 && ones[3] == ones[2] + 1);
  CHECK(ones[0] >= 330 && ones[0] <= 336 && ones[2] - ones[0] >= 660 && ones[2] - ones[0] <= 675);
  // far again: three slow calls of the best (2 threads: 1.0, 0.7, 0.7) move its estimate past 1 thread's
  picked = choices(choice, 2, 20, far);
  CHECK(count(picked, 0, 3, 2) == 3 && count(picked, 3, 20, 1) == 17);
}

// Noise: a 2-thread call 4x slower once in 40 does not move the choice (1 thread is only probed, two calls at a time,
// once 400, then 800 s have gone in calls); nor does a probe of 2 threads whose first call is 30x slower (waking a
// thread that slept through the 1-thread calls): its second call moves the choice back.
void single_slow_calls_do_not_move_it() {
  ThreadChoice choice;
  const auto noisy = [](int threads, int call) { return threads == 1 ? 2.0 : call % 40 == 39 ? 4.6 : 1.15; };
  std::vector<int> picked = choices(choice, 2, 2000, noisy);
  const size_t ones = count(picked, 4, picked.size(), 1);
  CHECK(ones == 4 && longest_run(picked, 4, 1) == 2);  // ~2400 s in all
  ThreadChoice woken;
  int two_thread_calls = 0;
  const auto wakes = [&](int threads, int) {
    if (threads == 1) return 0.5;
    ++two_thread_calls;
    return two_thread_calls <= 2 ? 0.7 : two_thread_calls == 3 ? 20.0 : 0.3;
  };
  picked = choices(woken, 2, 600, wakes);
  std::vector<size_t> twos;  // where 2 threads ran
  for (size_t i = 0; i < picked.size(); ++i)
    if (picked[i] == 2) twos.push_back(i);
  // run first (0, 1); probed once 200 x 0.7 s have gone in calls (about 280): 20 s, then 0.3, and 2 threads from then
  CHECK(twos.size() > 300 && twos[0] == 0 && twos[1] == 1 && twos[2] > 250 && twos[3] == twos[2] + 1);
  CHECK(count(picked, twos[3], twos[3] + 100, 2) == 100);
}

// More threads: the candidates are the setting and its halvings; the fastest wins, and noise within kMargin of the
// best does not move it; a new setting starts afresh; one thread, nothing to choose.
void halvings_and_settings() {
  ThreadChoice choice;
  const auto four_best = [](int threads, int) {  // 8, 4, 2, 1 threads: 1.0, 0.6, 0.8, 1.2 s a call
    return threads == 8 ? 1.0 : threads == 4 ? 0.6 : threads == 2 ? 0.8 : 1.2;
  };
  std::vector<int> picked = choices(choice, 8, 12, four_best);
  CHECK((picked == std::vector<int>({8, 8, 4, 4, 2, 2, 1, 1, 4, 4, 4, 4})));
  // 2 threads now 0.59: not more than kMargin (3%) below 4's 0.6, so 4 stays after its probes
  const auto close = [&](int threads, int call) { return threads == 2 ? 0.59 : four_best(threads, call); };
  picked = choices(choice, 8, 1000, close);
  CHECK(count(picked, 0, picked.size(), 4) >= 990);
  picked = choices(choice, 3, 6, [](int threads, int) { return threads == 3 ? 0.2 : 0.5; });
  CHECK((picked == std::vector<int>({3, 3, 1, 1, 3, 3})));
  picked = choices(choice, 1, 5, [](int, int) { return 1.0; });
  CHECK((picked == std::vector<int>({1, 1, 1, 1, 1})));
  choice.record(2, 2, 0.001);  // timed under a setting since replaced: ignored
  CHECK(choice.pick(1) == 1);
}

// The widest team a large parallel_for runs on from this thread: the kernels' thread count.
int widest_team() {
  std::atomic<int> team{0};
  parallel_for(8, threads_for(int64_t(1) << 30), [&](int64_t) { team = std::max(team.load(), omp_get_num_threads()); });
  return team;
}

// ThreadCap bounds num_threads() on its own thread only, the least of the live caps counting, whatever order they end
// in and wherever; the kernels' thread counts follow it.
void caps_nest_on_their_thread() {
  const int before = num_threads();
  set_num_threads(4);
  {
    const ThreadCap outer(2);
    CHECK(num_threads() == 2);
    int other = 0;
    std::thread([&] { other = num_threads(); }).join();
    CHECK(other == 4);
    {
      const ThreadCap inner(1);
      CHECK(num_threads() == 1);
      CHECK(widest_team() == 1);
    }
    CHECK(num_threads() == 2);
    const ThreadCap above(8);  // a cap above a live one leaves that one
    CHECK(num_threads() == 2);
  }
  CHECK(num_threads() == 4);
  // caps that end out of order (Python with-blocks held by generators), or on another thread
  auto first = std::make_unique<ThreadCap>(1);
  auto second = std::make_unique<ThreadCap>(3);
  CHECK(num_threads() == 1 && thread_setting() == 4);
  first.reset();
  CHECK(num_threads() == 3);
  std::thread([&] { second.reset(); }).join();
  CHECK(num_threads() == 4);
  set_num_threads(before);
}

// ThreadSetting sets the setting of its own thread only, the newest live one counting, whatever the process-wide one
// becomes; caps still bound it; it may end out of order or on another thread.
void settings_hold_on_their_thread() {
  const int before = thread_setting();
  set_num_threads(2);
  {
    const ThreadSetting outer(4);
    CHECK(num_threads() == 4 && thread_setting() == 4);
    int other = 0;
    std::thread([&] { other = num_threads(); }).join();
    CHECK(other == 2);
    set_num_threads(3);
    CHECK(num_threads() == 4);
    {
      const ThreadSetting inner(1);
      CHECK(num_threads() == 1);
      CHECK(widest_team() == 1);
    }
    const ThreadCap cap(2);
    CHECK(num_threads() == 2 && thread_setting() == 4);
  }
  CHECK(num_threads() == 3);
  auto first = std::make_unique<ThreadSetting>(1);
  auto second = std::make_unique<ThreadSetting>(5);
  CHECK(num_threads() == 5);
  second.reset();  // the newer one ends first: the older one's 1 holds
  CHECK(num_threads() == 1);
  std::thread([&] { first.reset(); }).join();
  CHECK(num_threads() == 3);
  set_num_threads(before);
}

// CallThreads holds its thread's setting as it was when made, whatever the process-wide one becomes meanwhile (another
// thread's set_num_threads), the outermost one's count for nested ones; caps still bound it; other threads unaffected.
void a_call_reads_one_setting() {
  const int before = thread_setting();
  set_num_threads(2);
  {
    const CallThreads call;
    std::thread([] { set_num_threads(3); }).join();
    CHECK(num_threads() == 2 && thread_setting() == 2);
    int other = 0;
    std::thread([&] { other = num_threads(); }).join();
    CHECK(other == 3);
    {
      const CallThreads nested;
      set_num_threads(4);
      CHECK(num_threads() == 2);
    }
    CHECK(num_threads() == 2);
    const ThreadCap cap(1);
    CHECK(num_threads() == 1);
  }
  CHECK(num_threads() == 4);
  {
    const ThreadSetting setting(5);
    const CallThreads call;  // a `with threads(5)` block's call
    set_num_threads(1);
    CHECK(num_threads() == 5);
  }
  set_num_threads(before);
}

}  // namespace

int main() {
  for (const Schedule schedule : {Schedule::fixed, Schedule::as_free})
    for (const int nt : {1, 2, 3, 4})
      for (const int64_t n : {0, 1, 2, 3, 7, 100}) every_task_once(n, nt, schedule);
  held_up_share_is_taken_from_the_back();
  two_threads_follow_the_faster();
  single_slow_calls_do_not_move_it();
  halvings_and_settings();
  caps_nest_on_their_thread();
  settings_hold_on_their_thread();
  a_call_reads_one_setting();
  return convcore_test::failures;
}
