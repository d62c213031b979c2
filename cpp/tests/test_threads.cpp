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

}  // namespace

int main() {
  for (const Schedule schedule : {Schedule::fixed, Schedule::as_free})
    for (const int nt : {1, 2, 3, 4})
      for (const int64_t n : {0, 1, 2, 3, 7, 100}) every_task_once(n, nt, schedule);
  held_up_share_is_taken_from_the_back();
  return convcore_test::failures;
}
