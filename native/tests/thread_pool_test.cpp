// ThreadPool (runtime/thread_pool.h): every index is covered exactly once by aligned contiguous
// chunks, nested calls run inline, concurrent callers are serialized, and resizing works.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "runtime/thread_pool.h"
#include "tests/check.h"

using namespace w4a8;

TEST(thread_pool_covers_every_index_once_in_aligned_chunks) {
  for (int threads : {1, 2, 3, 5}) {
    ThreadPool pool(threads);
    for (int count : {1, 7, 16, 17, 100, 1000})
      for (int align : {1, 4, 16}) {
        std::vector<std::atomic<int>> hits(count);
        std::atomic<int> calls{0};
        bool aligned = true;
        pool.parallelFor(count, align, [&](int begin, int end) {
          if (begin % align != 0 || begin >= end) aligned = false;
          for (int i = begin; i < end; ++i) hits[i]++;
          calls++;
        });
        for (int i = 0; i < count; ++i) CHECK(hits[i] == 1, "threads=%d count=%d index %d hit %d times", threads, count, i,
                                             hits[i].load());
        CHECK(aligned, "threads=%d count=%d align=%d: unaligned or empty chunk", threads, count, align);
        CHECK(calls <= threads, "at most one chunk per thread (%d calls)", calls.load());
        std::vector<std::atomic<int>> hits4(count);
        std::atomic<int> calls4{0};
        pool.parallelFor(count, align, [&](int begin, int end) {
          for (int i = begin; i < end; ++i) hits4[i]++;
          calls4++;
        }, 4);
        for (int i = 0; i < count; ++i) CHECK(hits4[i] == 1, "4 chunks per thread: index %d hit %d times", i, hits4[i].load());
        const int expectedChunks = threads == 1 ? 1 : std::min(4 * threads, (count + align - 1) / align);
        CHECK(calls4 == expectedChunks, "chunks: %d, expected %d", calls4.load(), expectedChunks);
      }
  }
}

TEST(thread_pool_uses_several_threads_and_runs_nested_calls_inline) {
  ThreadPool pool(2);
  std::atomic<bool> sawOther{false};
  const std::thread::id caller = std::this_thread::get_id();
  for (int attempt = 0; attempt < 50 && !sawOther; ++attempt)
    pool.parallelFor(2, 1, [&](int, int) {
      if (std::this_thread::get_id() != caller) sawOther = true;
      else std::this_thread::sleep_for(std::chrono::milliseconds(2));  // leave the other chunk to the worker
    });
  CHECK(sawOther, "a worker thread took part");
  std::atomic<int> outerChunks{0}, inner{0};
  pool.parallelFor(4, 1, [&](int, int) {
    outerChunks++;
    pool.parallelFor(8, 1, [&](int b, int e) { inner += e - b; });  // nested: runs inline, no deadlock
  });
  CHECK(inner == outerChunks * 8, "nested calls covered everything (%d of %d)", inner.load(), outerChunks * 8);
}

TEST(thread_pool_serializes_concurrent_callers_and_resizes) {
  ThreadPool pool(3);
  std::atomic<long> total{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 4; ++c)
    callers.emplace_back([&] {
      for (int rep = 0; rep < 200; ++rep) pool.parallelFor(64, 8, [&](int b, int e) { total += e - b; });
    });
  for (std::thread& t : callers) t.join();
  CHECK(total == 4L * 200 * 64, "total %ld", total.load());
  pool.resize(1);
  CHECK(pool.size() == 1, "size after resize");
  long sum = 0;
  pool.parallelFor(10, 1, [&](int b, int e) { sum += e - b; });
  CHECK(sum == 10, "single-thread pool runs inline");
  pool.resize(4);
  std::atomic<int> covered{0};
  pool.parallelFor(1000, 16, [&](int b, int e) { covered += e - b; });
  CHECK(covered == 1000 && pool.size() == 4, "after growing");
}

TEST(global_pool_size_is_settable) {
  const int before = threadCount();
  CHECK(before >= 1, "default size %d", before);
  setThreadCount(2);
  CHECK(threadCount() == 2, "set to 2");
  setThreadCount(before);
  CHECK(threadCount() == before, "restored");
}
