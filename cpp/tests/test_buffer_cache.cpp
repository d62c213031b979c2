// The threads' workspace caches: a block a thread gives back is handed to that thread again (not to another thread
// taking the same size), the cap is on all the caches' idle bytes together, set_buffer_limits reaches every thread's
// cache (0 frees every idle block), a thread's blocks are freed when it ends, buffer_stats adds them all up, and a
// forked child finds no lock held and only its own thread's blocks.
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <thread>
#include <vector>

#include <omp.h>

#include "check.h"
#include "convcore/buffer_cache.h"

using namespace convcore;

namespace {

constexpr size_t kBytes = 256 << 10;  // past BufferCache::kMinBytes: cached

// Each of nt threads takes a block of kBytes and gives it back, together; returns each thread's block.
std::vector<void*> take_and_give(int nt) {
  std::vector<void*> blocks(static_cast<size_t>(nt));
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num();
    blocks[t] = thread_buffers().take(kBytes);
#pragma omp barrier
    thread_buffers().give(blocks[t]);
  }
  return blocks;
}

void each_thread_gets_its_own_block_back() {
  set_buffer_limits(BufferCache::kDefaultLimit);
  constexpr int nt = 4;
  const std::vector<void*> first = take_and_give(nt);
  const BufferCacheStats before = buffer_stats();
  CHECK(before.idle_bytes >= nt * kBytes);
  for (int round = 0; round < 3; ++round) CHECK(take_and_give(nt) == first);
  const BufferCacheStats after = buffer_stats();
  CHECK(after.reused == before.reused + 3 * nt && after.allocated == before.allocated);
}

void a_zero_limit_empties_every_thread_cache() {
  set_buffer_limits(BufferCache::kDefaultLimit);
  take_and_give(4);
  CHECK(buffer_stats().idle_bytes >= 4 * kBytes);
  set_buffer_limits(0);
  CHECK(buffer_stats().idle_bytes == 0);
  const int64_t allocated = buffer_stats().allocated;
  take_and_give(4);  // with the cap at 0 nothing is kept
  CHECK(buffer_stats().idle_bytes == 0 && buffer_stats().allocated == allocated + 4);
  CHECK(buffer_stats().limit_bytes == 0);
  set_buffer_limits(BufferCache::kDefaultLimit);
}

void the_cap_is_on_all_caches_together() {
  set_buffer_limits(0);
  const size_t cap = 3 * BufferCache::footprint(kBytes);
  set_buffer_limits(cap);
  take_and_give(4);  // four threads' blocks, room for three
  CHECK(buffer_stats().idle_bytes == cap);
  set_buffer_limits(BufferCache::kDefaultLimit);
}

void an_ended_thread_frees_its_blocks() {
  set_buffer_limits(BufferCache::kDefaultLimit);
  const size_t before = buffer_stats().idle_bytes;
  std::thread([] { thread_buffers().give(thread_buffers().take(kBytes)); }).join();
  CHECK(buffer_stats().idle_bytes == before);
  bool kept = false;  // while the thread lived its block was idle in its cache
  std::thread([&] {
    thread_buffers().give(thread_buffers().take(kBytes));
    kept = buffer_stats().idle_bytes == before + BufferCache::footprint(kBytes);
  }).join();
  CHECK(kept);
}

void an_ended_thread_keeps_its_counts() {
  const BufferCacheStats before = buffer_stats();
  std::thread([] { thread_buffers().give(thread_buffers().take(kBytes)); }).join();
  const BufferCacheStats after = buffer_stats();
  CHECK(after.reused + after.allocated == before.reused + before.allocated + 1);
}

// Waits for a child; kills it (and counts it as hung) if it has not ended within 10 s.
bool ended_in_time(pid_t pid, int* status) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (waitpid(pid, status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, status, 0);
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// Forks while another thread takes and gives blocks without pause, so that its cache's lock is often held at the
// moment of fork(). Each child must trim every cache and read the counts, and finds only the forking thread's idle
// block: the other thread's cache went with its thread.
void a_forked_child_finds_no_lock_held() {
  set_buffer_limits(0);
  set_buffer_limits(BufferCache::kDefaultLimit);
  thread_buffers().give(thread_buffers().take(kBytes));  // this thread's one idle block
  const size_t mine = BufferCache::footprint(kBytes);
  std::atomic<bool> stop{false};
  std::thread busy([&] {
    while (!stop.load(std::memory_order_relaxed)) thread_buffers().give(thread_buffers().take(2 * kBytes));
  });
  int hung = 0, wrong = 0;
  for (int i = 0; i < 200 && hung == 0; ++i) {
    const pid_t pid = fork();
    if (pid == 0) {
      const bool only_mine = buffer_stats().idle_bytes == mine;
      set_buffer_limits(0);
      const bool emptied = buffer_stats().idle_bytes == 0;
      thread_buffers().give(thread_buffers().take(kBytes));
      _exit(only_mine && emptied ? 0 : 1);
    }
    int status = 0;
    if (!ended_in_time(pid, &status)) ++hung;
    else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++wrong;
  }
  stop = true;
  busy.join();
  CHECK(hung == 0);
  CHECK(wrong == 0);
}

}  // namespace

int main() {
  each_thread_gets_its_own_block_back();
  a_zero_limit_empties_every_thread_cache();
  the_cap_is_on_all_caches_together();
  an_ended_thread_frees_its_blocks();
  an_ended_thread_keeps_its_counts();
  a_forked_child_finds_no_lock_held();
  return convcore_test::failures;
}
