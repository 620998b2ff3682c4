#include "runtime/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>

namespace w4a8 {
namespace {

thread_local bool tlsInsideParallelFor = false;

inline void cpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// How long an idle worker polls for the next job before sleeping on the condition variable.
constexpr auto kSpinBeforeSleep = std::chrono::microseconds(200);

}  // namespace

ThreadPool::ThreadPool(int threads) : threads_(std::max(1, threads)) { startWorkers(); }

ThreadPool::~ThreadPool() { stopWorkers(); }

void ThreadPool::startWorkers() {
  stopping_ = false;
  // The generation is read here, not in the new thread: a job (or a stop) published before the thread
  // gets going must still count as new to it.
  const uint64_t seen = generation_.load(std::memory_order_acquire);
  for (int i = 1; i < size(); ++i) workers_.emplace_back([this, seen] { workerLoop(seen); });
}

void ThreadPool::stopWorkers() {
  {
    std::lock_guard<std::mutex> lock(wakeMutex_);
    stopping_ = true;
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
  workers_.clear();
}

void ThreadPool::resize(int threads) {
  std::lock_guard<std::mutex> call(callMutex_);
  stopWorkers();
  threads_.store(std::max(1, threads));
  startWorkers();
}

void ThreadPool::runChunks() {
  tlsInsideParallelFor = true;
  for (;;) {
    // Claim the next chunk of the published job: job_ = chunks << 32 | next. A successful CAS means the
    // chunk was unclaimed, so its job is still running and the fields below are the job's own.
    uint64_t job = job_.load(std::memory_order_acquire);
    int c = -1;
    while ((uint32_t)job < (uint32_t)(job >> 32)) {
      if (job_.compare_exchange_weak(job, job + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
        c = (int)(uint32_t)job;
        break;
      }
    }
    if (c < 0) break;  // every chunk of the current job is taken
    // Chunk c covers unitsPerChunk_ units of `align` rows, plus one more for the first extraUnits_ chunks.
    const int unitBegin = c * unitsPerChunk_ + std::min(c, extraUnits_);
    const int units = unitsPerChunk_ + (c < extraUnits_ ? 1 : 0);
    const int begin = unitBegin * align_;
    const int end = std::min(count_, (unitBegin + units) * align_);
    fn_(context_, begin, end);
    remainingChunks_.fetch_sub(1, std::memory_order_acq_rel);
  }
  tlsInsideParallelFor = false;
}

void ThreadPool::workerLoop(uint64_t seen) {
  for (;;) {
    // Poll first: the next layer's call usually comes within microseconds.
    const auto spinUntil = std::chrono::steady_clock::now() + kSpinBeforeSleep;
    while (generation_.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < spinUntil)
      for (int i = 0; i < 64; ++i) cpuRelax();
    {
      std::unique_lock<std::mutex> lock(wakeMutex_);
      wake_.wait(lock, [&] { return stopping_ || generation_.load(std::memory_order_acquire) != seen; });
      seen = generation_.load(std::memory_order_acquire);
      if (stopping_) return;
    }
    runChunks();
  }
}

void ThreadPool::run(int count, int align, ChunkFn fn, void* context, int chunksPerThread) {
  if (count <= 0) return;
  align = std::max(1, align);
  const int units = (count + align - 1) / align;
  if (size() == 1 || units == 1 || tlsInsideParallelFor) {
    fn(context, 0, count);  // nothing to split, or nested inside a chunk: run inline
    return;
  }
  std::lock_guard<std::mutex> call(callMutex_);
  {
    std::lock_guard<std::mutex> lock(wakeMutex_);
    fn_ = fn;
    context_ = context;
    count_ = count;
    align_ = align;
    const int chunks = std::min(size() * std::max(1, chunksPerThread), units);
    unitsPerChunk_ = units / chunks;
    extraUnits_ = units % chunks;
    remainingChunks_.store(chunks, std::memory_order_relaxed);
    job_.store((uint64_t)chunks << 32, std::memory_order_release);  // publishes the fields above
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  runChunks();
  // Wait for the chunks other threads took; yield now and then in case one of them lost its core.
  for (int spins = 0; remainingChunks_.load(std::memory_order_acquire) != 0; ++spins) {
    if (spins < 4096) cpuRelax();
    else std::this_thread::yield();
  }
}

namespace {
int defaultThreadCount() {
  if (const char* env = std::getenv("W4A8_THREADS")) {
    const int n = std::atoi(env);
    if (n >= 1) return n;
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw ? (int)hw : 1;
}
}  // namespace

ThreadPool& globalThreadPool() {
  static ThreadPool pool(defaultThreadCount());
  return pool;
}

void setThreadCount(int threads) { globalThreadPool().resize(threads); }
int threadCount() { return globalThreadPool().size(); }

}  // namespace w4a8
