// parallel_for's schedules: every task once, whatever the task and thread counts; Schedule::as_free's threads take
// from the back of another thread's share once done with their own (a thread held up by its first task does not hold
// up the tasks behind it).
#include <atomic>
#include <chrono>
#include <cstdint>
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

// Calls of work whose times on each thread count are `times(threads, call)` (seconds), run back to back under
// ThreadChoice from clock 0: the thread counts picked, in order.
template <typename Times>
std::vector<int> choices(ThreadChoice& choice, int setting, int calls, const Times& times, double* clock) {
  std::vector<int> picked;
  for (int call = 0; call < calls; ++call) {
    const int threads = choice.pick(setting, *clock);
    const double t = times(threads, call);
    choice.record(setting, threads, t);
    *clock += t;
    picked.push_back(threads);
  }
  return picked;
}

size_t count(const std::vector<int>& v, size_t from, size_t to, int threads) {
  size_t n = 0;
  for (size_t i = from; i < to && i < v.size(); ++i) n += v[i] == threads;
  return n;
}

// Two candidates: each timed twice first (the setting's first), then the faster; a slower one probed again only
// after 100 times its own time; a change in which is faster followed within two probes; probes cost about 1% more.
void two_threads_follow_the_faster() {
  ThreadChoice choice;
  double clock = 0.0;
  // 2 threads take 1.0 on the first call (its weights packed), then 0.7; 1 thread 0.5
  const auto far = [](int threads, int call) { return threads == 1 ? 0.5 : call == 0 ? 1.0 : 0.7; };
  std::vector<int> picked = choices(choice, 2, 1000, far, &clock);
  CHECK((std::vector<int>(picked.begin(), picked.begin() + 4) == std::vector<int>({2, 2, 1, 1})));
  // after those 4: a probe of 2 threads once 100 x 0.7 = 70 s have passed (every ~141 calls of 0.5)
  const size_t probes = count(picked, 4, picked.size(), 2);
  CHECK(probes >= 6 && probes <= 8);
  CHECK(picked[4] == 1 && picked[100] == 1);
  // the cores come near: 2 threads 0.3; the next probe switches (a time below the estimate replaces it)
  const auto near = [](int threads, int) { return threads == 1 ? 0.5 : 0.3; };
  picked = choices(choice, 2, 1000, near, &clock);
  size_t first_two = 0;
  while (first_two < picked.size() && picked[first_two] != 2) ++first_two;
  CHECK(first_two <= 150);
  CHECK(count(picked, first_two, first_two + 100, 2) == 100);
  // then 1 thread is probed once each 100 x 0.5 = 50 s: 1000 calls of 0.3 s take 300 s, so about 5 probes
  const size_t back = count(picked, first_two, picked.size(), 1);
  CHECK(back >= 4 && back <= 7);
  // far again: the best's own times move its estimate (0.3 -> 0.5 -> 0.6 -> ...) past 1 thread's within a few calls
  picked = choices(choice, 2, 20, far, &clock);
  CHECK(count(picked, 5, 20, 1) == 15);
}

// Noise: a 2-thread call 4x slower once in 40 does not move the choice (1 thread is only probed: never twice in a
// row); nor does a probe of 2 threads 30x slower (waking a thread that slept through the 1-thread calls), after which
// the next probe, faster, moves it back.
void single_slow_calls_do_not_move_it() {
  ThreadChoice choice;
  double clock = 0.0;
  const auto noisy = [](int threads, int call) { return threads == 1 ? 2.0 : call % 40 == 39 ? 4.6 : 1.15; };
  std::vector<int> picked = choices(choice, 2, 2000, noisy, &clock);
  size_t ones = 0;
  for (size_t i = 4; i < picked.size(); ++i) {
    ones += picked[i] == 1;
    CHECK(picked[i] == 2 || picked[i - 1] == 2);
  }
  CHECK(ones >= 8 && ones <= 14);  // one probe per 100 x 2.0 s, about 2400 s in all
  ThreadChoice woken;
  clock = 0.0;
  int two_thread_calls = 0;
  const auto wakes = [&](int threads, int) {
    if (threads == 1) return 0.5;
    ++two_thread_calls;
    return two_thread_calls <= 2 ? 0.7 : two_thread_calls == 3 ? 20.0 : 0.3;
  };
  picked = choices(woken, 2, 600, wakes, &clock);
  std::vector<size_t> twos;  // where 2 threads ran
  for (size_t i = 0; i < picked.size(); ++i)
    if (picked[i] == 2) twos.push_back(i);
  // timed first (0, 1), probed after 100 x 0.7 s (142 calls of 0.5), which takes 20 s; the next probe 100 x 0.7 s later
  CHECK(twos.size() > 300 && twos[0] == 0 && twos[1] == 1 && twos[2] > 100 && twos[3] < twos[2] + 150);
  CHECK(count(picked, twos[3], twos[3] + 100, 2) == 100);
}

// More threads: the candidates are the setting and its halvings; the fastest wins, and noise within kMargin of the
// best does not move it; a new setting starts afresh; one thread, nothing to choose.
void halvings_and_settings() {
  ThreadChoice choice;
  double clock = 0.0;
  const auto four_best = [](int threads, int) {  // 8, 4, 2, 1 threads: 1.0, 0.6, 0.8, 1.2 s a call
    return threads == 8 ? 1.0 : threads == 4 ? 0.6 : threads == 2 ? 0.8 : 1.2;
  };
  std::vector<int> picked = choices(choice, 8, 12, four_best, &clock);
  CHECK((picked == std::vector<int>({8, 8, 4, 4, 2, 2, 1, 1, 4, 4, 4, 4})));
  // 2 threads now 0.59: not more than kMargin (3%) below 4's 0.6, so 4 stays after its probe
  const auto close = [&](int threads, int call) { return threads == 2 ? 0.59 : four_best(threads, call); };
  picked = choices(choice, 8, 1000, close, &clock);
  CHECK(count(picked, 0, picked.size(), 4) >= 990);
  picked = choices(choice, 3, 6, [](int threads, int) { return threads == 3 ? 0.2 : 0.5; }, &clock);
  CHECK((picked == std::vector<int>({3, 3, 1, 1, 3, 3})));
  picked = choices(choice, 1, 5, [](int, int) { return 1.0; }, &clock);
  CHECK((picked == std::vector<int>({1, 1, 1, 1, 1})));
  choice.record(2, 2, 0.001);  // timed under a setting since replaced: ignored
  CHECK(choice.pick(1, clock) == 1);
}

// ThreadCap bounds num_threads() on its own thread only, innermost first, and restores it.
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
      CHECK(threads_for(int64_t(1) << 30) == 1);
    }
    CHECK(num_threads() == 2);
    const ThreadCap above(8);  // a cap above the setting leaves the setting
    CHECK(num_threads() == 4);
  }
  CHECK(num_threads() == 4);
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
  return convcore_test::failures;
}
