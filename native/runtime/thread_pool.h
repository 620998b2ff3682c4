// A persistent pool of worker threads for splitting one kernel call over cores.
//
// parallelFor(count, align, fn, chunksPerThread) cuts [0, count) into at most size() * chunksPerThread
// contiguous chunks of near-equal size whose boundaries are multiples of `align` (a kernel's row tile),
// runs fn(begin, end) once per chunk, the threads (the caller included) taking chunks as they become
// free, and returns when all are done. More chunks than threads let a thread that lost its core for a
// while be covered by the others. Nothing is allocated per call.
// Calls from several threads are serialized; a call from inside a running fn (nesting) runs inline.
// Workers spin briefly after a job before sleeping, so back-to-back calls (one per layer) wake fast.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace w4a8 {

class ThreadPool {
 public:
  using ChunkFn = void (*)(void* context, int begin, int end);

  explicit ThreadPool(int threads);  // threads in all, the caller included (>= 1)
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return threads_.load(std::memory_order_relaxed); }
  void resize(int threads);  // waits for a running call, then restarts the workers

  void run(int count, int align, ChunkFn fn, void* context, int chunksPerThread = 1);

  template <class F>
  void parallelFor(int count, int align, F&& fn, int chunksPerThread = 1) {
    run(count, align, [](void* c, int b, int e) { (*static_cast<std::remove_reference_t<F>*>(c))(b, e); },
        const_cast<void*>(static_cast<const void*>(&fn)), chunksPerThread);
  }

 private:
  void startWorkers();
  void stopWorkers();
  void workerLoop(uint64_t seenGeneration);
  void runChunks();  // takes chunks until none is left

  std::atomic<int> threads_;
  std::vector<std::thread> workers_;
  std::mutex callMutex_;  // one call at a time

  // The current job, published under wakeMutex_ with a new generation.
  std::mutex wakeMutex_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  bool stopping_ = false;
  ChunkFn fn_ = nullptr;
  void* context_ = nullptr;
  int count_ = 0, align_ = 1, unitsPerChunk_ = 0, extraUnits_ = 0;
  std::atomic<uint64_t> job_{0};  // chunks << 32 | next unclaimed chunk
  std::atomic<int> remainingChunks_{0};
};

// The process-wide pool used by kernels/parallel.h. Size: W4A8_THREADS if set (>= 1), else
// std::thread::hardware_concurrency().
ThreadPool& globalThreadPool();
void setThreadCount(int threads);  // resizes the global pool (threads >= 1)
int threadCount();

}  // namespace w4a8
