// Caches of freed buffers, reused by size: one for the output arrays the bindings return, and one per thread for
// the workspace a kernel takes and gives back on that thread (CachedBlock). Training repeats the same shapes every
// step; glibc hands large freed blocks back to the OS (munmap, heap trimming) and faults them back in, zero-filled, on
// the next step (a quarter of a LeNet-5 step on 2 threads). Blocks kept here stay mapped and are handed out again for
// the same rounded size. The idle bytes of all the caches together are capped (set_buffer_limits); a block freed past
// the cap goes back to the allocator. Every cache's lock is held across fork(), and a forked child keeps only the
// forking thread's cache and the output cache (buffer_cache.cpp's ForkGuard).
#pragma once
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace convcore {

struct BufferCacheStats {
  size_t idle_bytes;   // bytes held for reuse now
  size_t limit_bytes;  // cap on idle_bytes
  int64_t reused;      // take() calls served from the cache
  int64_t allocated;   // take() calls that allocated
};

class BufferCache {
 public:
  static constexpr size_t kMinBytes = 32 << 10;     // smaller blocks: malloc's own bins already reuse them
  static constexpr size_t kDefaultLimit = 256 << 20;

  ~BufferCache();  // frees its idle blocks
  // A 64-byte aligned block of at least `bytes`; throws std::bad_alloc. Its size is kept in front of it.
  void* take(size_t bytes);
  // Returns a block from take(): kept for reuse, or freed when the caches' idle bytes would pass the cap (or keeping it
  // would need memory there is not: it is called from destructors, CachedBlock's, and never throws).
  void give(void* block) noexcept;
  // Frees this cache's idle blocks while the caches' idle bytes are past `limit`.
  void trim(size_t limit);
  void add_counts(BufferCacheStats& total);  // adds this cache's reused and allocated to total's

  // Bytes the allocation behind a take(bytes) occupies: the 64-byte header plus bytes, rounded up to 4 KiB
  // from kMinBytes on (so that near sizes share blocks), to 64 bytes below.
  static size_t footprint(size_t bytes);

 private:
  friend struct ForkGuard;  // holds every cache's lock across fork()
  std::mutex lock_;
  std::unordered_map<size_t, std::vector<void*>> idle_blocks_;  // rounded size -> blocks
  int64_t reused_ = 0, allocated_ = 0;
};

BufferCache& output_buffers();  // the process-wide cache for arrays the bindings return
// The calling thread's own cache, for workspace taken and given back on that thread. A worker's blocks stay with it
// call after call, so the lines it writes there are in its core's cache already: from one shared cache the threads'
// blocks changed hands from call to call, and a core writing lines the other had held waits for each. (With the
// weight-gradient pass's chunk sums kept with their threads, filter_vector_weight_pass: both builds in one process,
// calls alternated, median of per-pair time ratios, AMD EPYC Zen 4, 2 threads, LeNet conv2 n=64 forward+backward
// 1.00-1.02x; in minutes when the host ran the two vCPUs far apart, a round trip between them 310-360 ns instead of
// 50-90, 1.01-1.09x, two copies of the build under different names 1-4% apart there. Either change alone: 0.98-1.04x.
// Timed in separate processes, two identical builds differed by up to 20%: memory layout.)
BufferCache& thread_buffers();
// Sets the cap on the idle bytes of all the caches together, the output cache's and every thread's, and frees the
// excess.
void set_buffer_limits(size_t bytes);
BufferCacheStats buffer_stats();  // all the caches' added up

// A block of `count` T from the thread's thread_buffers() (workspace reused call after call instead of faulted in
// anew), given back when the holder goes, on the same thread.
template <typename T>
class CachedBlock {
 public:
  explicit CachedBlock(int64_t count)
      : p_(static_cast<T*>(thread_buffers().take(sizeof(T) * static_cast<size_t>(count)))) {}
  ~CachedBlock() { thread_buffers().give(p_); }
  CachedBlock(const CachedBlock&) = delete;
  CachedBlock& operator=(const CachedBlock&) = delete;
  T* get() const { return p_; }

 private:
  T* p_;
};

}  // namespace convcore
