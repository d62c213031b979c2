#include "convcore/buffer_cache.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <iterator>
#include <new>

#include <pthread.h>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace convcore {
namespace {

constexpr size_t kHeader = 64;  // holds the footprint; keeps the block 64-byte aligned
constexpr size_t kHugeFrom = 4 << 20;

// Asks for transparent huge pages on large blocks (fewer TLB misses when a kernel streams through tens of MB),
// as numpy's own allocator does from 4 MiB on; where THP is off or unsupported this does nothing.
void advise_huge_pages(char* base, size_t size) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t page = 4096;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(base) + page - 1) & ~(page - 1);
  const uintptr_t end = reinterpret_cast<uintptr_t>(base) + size;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)base;
  (void)size;
#endif
}

// The idle bytes of all the caches together, and their cap.
std::atomic<size_t> g_idle{0}, g_limit{BufferCache::kDefaultLimit};

}  // namespace

size_t BufferCache::footprint(size_t bytes) {
  constexpr size_t page = 4096;
  const size_t total = bytes + kHeader;
  if (total < bytes) throw std::bad_alloc();  // overflow
  return total < kMinBytes ? (total + 63) / 64 * 64 : (total + page - 1) / page * page;
}

BufferCache::~BufferCache() { trim(0); }

void* BufferCache::take(size_t bytes) {
  const size_t size = footprint(bytes);
  char* base = nullptr;
  if (size >= kMinBytes) {
    std::lock_guard<std::mutex> guard(lock_);
    auto it = idle_blocks_.find(size);
    if (it != idle_blocks_.end() && !it->second.empty()) {
      base = static_cast<char*>(it->second.back());
      it->second.pop_back();
      g_idle -= size;
      ++reused_;
    } else {
      ++allocated_;
    }
  }
  if (!base) {
    base = static_cast<char*>(std::aligned_alloc(64, size));
    if (!base) throw std::bad_alloc();
    if (size >= kHugeFrom) advise_huge_pages(base, size);
    *reinterpret_cast<size_t*>(base) = size;
  }
  return base + kHeader;
}

void BufferCache::give(void* block) noexcept {
  if (!block) return;
  char* base = static_cast<char*>(block) - kHeader;
  const size_t size = *reinterpret_cast<size_t*>(base);
  if (size >= kMinBytes) {
    std::lock_guard<std::mutex> guard(lock_);
    if (g_idle.fetch_add(size) + size <= g_limit.load()) {
      try {  // the list's own growth may fail for want of memory: the block is then freed, not kept
        idle_blocks_[size].push_back(base);
        return;
      } catch (const std::bad_alloc&) {
      }
    }
    g_idle -= size;
  }
  std::free(base);
}

void BufferCache::add_counts(BufferCacheStats& total) {
  std::lock_guard<std::mutex> guard(lock_);
  total.reused += reused_;
  total.allocated += allocated_;
}

void BufferCache::trim(size_t limit) {
  std::lock_guard<std::mutex> guard(lock_);
  for (auto it = idle_blocks_.begin(); it != idle_blocks_.end() && g_idle.load() > limit;) {
    std::vector<void*>& blocks = it->second;
    while (!blocks.empty() && g_idle.load() > limit) {
      std::free(blocks.back());
      blocks.pop_back();
      g_idle -= it->first;
    }
    it = blocks.empty() ? idle_blocks_.erase(it) : std::next(it);
  }
}

BufferCache& output_buffers() {
  static BufferCache* cache = new BufferCache();  // never destroyed: arrays may outlive static destruction
  return *cache;
}

namespace {

// The threads' caches, for set_buffer_limits and buffer_stats, and the counts of the caches whose threads ended;
// never destroyed (a thread may end after static destruction).
struct ThreadCaches {
  std::mutex lock;
  std::vector<BufferCache*> caches;
  BufferCacheStats ended{0, 0, 0, 0};  // reused and allocated
};

ThreadCaches& thread_caches() {
  static ThreadCaches* all = new ThreadCaches();
  return *all;
}

thread_local BufferCache* t_own = nullptr;  // the calling thread's listed cache, once it has one

// Frees a cache's blocks and moves its counts to `all.ended`; the caller holds all.lock.
void retire(ThreadCaches& all, BufferCache* cache) {
  cache->trim(0);  // frees every block of this cache: the idle total includes them
  cache->add_counts(all.ended);
  all.caches.erase(std::find(all.caches.begin(), all.caches.end(), cache));
}

// A thread's cache, listed while the thread lives; its blocks freed when the thread ends.
class ListedCache {
 public:
  ListedCache() {
    ThreadCaches& all = thread_caches();
    std::lock_guard<std::mutex> guard(all.lock);
    all.caches.push_back(&cache_);
    t_own = &cache_;
  }
  ~ListedCache() {
    ThreadCaches& all = thread_caches();
    std::lock_guard<std::mutex> guard(all.lock);
    retire(all, &cache_);
  }
  BufferCache& cache() { return cache_; }

 private:
  BufferCache cache_;
};

}  // namespace

// Only the thread that calls fork() goes on in the child, so a lock another thread held at that moment would stay
// held there for good (set_buffer_cache_limit, and a later take on that cache, would hang). Every lock of the caches
// is therefore taken before fork() and released after it, on both sides; in the child the other threads' caches,
// whose threads are gone, are emptied and unlisted.
struct ForkGuard {
  static void prepare() {
    ThreadCaches& all = thread_caches();
    all.lock.lock();
    output_buffers().lock_.lock();
    for (BufferCache* cache : all.caches) cache->lock_.lock();
  }
  static void release() {
    ThreadCaches& all = thread_caches();
    for (BufferCache* cache : all.caches) cache->lock_.unlock();
    output_buffers().lock_.unlock();
    all.lock.unlock();
  }
  static void in_child() {
    release();
    ThreadCaches& all = thread_caches();
    std::lock_guard<std::mutex> guard(all.lock);
    const std::vector<BufferCache*> listed = all.caches;
    for (BufferCache* cache : listed)
      if (cache != t_own) retire(all, cache);
  }
};

namespace {
const int g_fork_guard_installed = pthread_atfork(ForkGuard::prepare, ForkGuard::release, ForkGuard::in_child);
}  // namespace

BufferCache& thread_buffers() {
  thread_local ListedCache mine;
  return mine.cache();
}

void set_buffer_limits(size_t bytes) {
  ThreadCaches& all = thread_caches();
  std::lock_guard<std::mutex> guard(all.lock);
  g_limit = bytes;
  output_buffers().trim(bytes);
  for (BufferCache* cache : all.caches) cache->trim(bytes);
}

BufferCacheStats buffer_stats() {
  BufferCacheStats total{g_idle.load(), g_limit.load(), 0, 0};
  output_buffers().add_counts(total);
  ThreadCaches& all = thread_caches();
  std::lock_guard<std::mutex> guard(all.lock);
  for (BufferCache* cache : all.caches) cache->add_counts(total);
  total.reused += all.ended.reused;
  total.allocated += all.ended.allocated;
  return total;
}

}  // namespace convcore
