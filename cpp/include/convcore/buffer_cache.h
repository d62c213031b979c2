// A cache of freed output buffers, reused by size. Training repeats the same shapes every step; glibc hands
// large freed blocks back to the OS (munmap, heap trimming) and faults them back in, zero-filled, on the next
// step (a quarter of a LeNet-5 step on 2 threads). Blocks kept here stay mapped and are handed out again for
// the same rounded size. Idle bytes are capped; a block freed past the cap goes back to the allocator.
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

  ~BufferCache();
  // A 64-byte aligned block of at least `bytes`; throws std::bad_alloc. Its size is kept in front of it.
  void* take(size_t bytes);
  // Returns a block from take(): kept for reuse, or freed when idle bytes would pass the limit.
  void give(void* block);
  // Sets the cap on idle bytes (0 disables caching) and frees what is over it.
  void set_limit(size_t bytes);
  BufferCacheStats stats();

  // Bytes the allocation behind a take(bytes) occupies: the 64-byte header plus bytes, rounded up to 4 KiB
  // from kMinBytes on (so that near sizes share blocks), to 64 bytes below.
  static size_t footprint(size_t bytes);

 private:
  void trim(size_t limit);  // frees idle blocks until idle_ <= limit; caller holds lock_

  std::mutex lock_;
  std::unordered_map<size_t, std::vector<void*>> idle_blocks_;  // rounded size -> blocks
  size_t idle_ = 0, limit_ = kDefaultLimit;
  int64_t reused_ = 0, allocated_ = 0;
};

BufferCache& output_buffers();  // the process-wide cache for arrays the bindings return

// A block of `count` T from output_buffers() (workspace reused call after call instead of faulted in anew), given
// back when the holder goes.
template <typename T>
class CachedBlock {
 public:
  explicit CachedBlock(int64_t count)
      : p_(static_cast<T*>(output_buffers().take(sizeof(T) * static_cast<size_t>(count)))) {}
  ~CachedBlock() { output_buffers().give(p_); }
  CachedBlock(const CachedBlock&) = delete;
  CachedBlock& operator=(const CachedBlock&) = delete;
  T* get() const { return p_; }

 private:
  T* p_;
};

}  // namespace convcore
