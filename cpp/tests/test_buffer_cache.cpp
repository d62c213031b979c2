// The threads' workspace caches: a block a thread gives back is handed to that thread again (not to another thread
// taking the same size), the cap is on all the caches' idle bytes together, set_buffer_limits reaches every thread's
// cache (0 frees every idle block), a thread's blocks are freed when it ends, and buffer_stats adds them all up.
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

}  // namespace

int main() {
  each_thread_gets_its_own_block_back();
  a_zero_limit_empties_every_thread_cache();
  the_cap_is_on_all_caches_together();
  an_ended_thread_frees_its_blocks();
  return convcore_test::failures;
}
