// Machine-limit probes (see probes.h). Each instruction-set body is a function compiled for its own target
// (__attribute__((target(...)))), so this file builds with baseline x86-64 flags and picks at run time
// from __builtin_cpu_supports (which also checks that the OS saves the vector registers).
#include "bench/probes.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define W4A8_PROBES_X86 1
#else
#define W4A8_PROBES_X86 0
#endif

namespace w4a8::bench {
namespace {

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Runs body(t) on `threads` threads (t = 0 .. threads-1) and returns the wall time from the moment all
// of them are started and released together to the moment the last one finishes.
template <class Body>
double timeOnThreads(int threads, Body body) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      ready.fetch_add(1);
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      body(t);
    });
  while (ready.load() < threads) std::this_thread::yield();
  const Clock::time_point start = Clock::now();
  go.store(true, std::memory_order_release);
  for (std::thread& th : pool) th.join();
  return secondsSince(start);
}

// ---- read bandwidth ------------------------------------------------------------------------------------
// Each body XORs every 64-byte line of [p, p + bytes) into 8 independent accumulators (XOR, not a float add:
// no latency chain, nothing for the compiler to drop since the result is returned). bytes % 512 == 0.

#if W4A8_PROBES_X86
__attribute__((target("avx512f"))) uint64_t readAvx512(const uint8_t* p, size_t bytes) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  for (size_t i = 0; i < bytes; i += 512) {
    a0 = _mm512_xor_si512(a0, _mm512_load_si512(p + i));
    a1 = _mm512_xor_si512(a1, _mm512_load_si512(p + i + 64));
    a2 = _mm512_xor_si512(a2, _mm512_load_si512(p + i + 128));
    a3 = _mm512_xor_si512(a3, _mm512_load_si512(p + i + 192));
    a4 = _mm512_xor_si512(a4, _mm512_load_si512(p + i + 256));
    a5 = _mm512_xor_si512(a5, _mm512_load_si512(p + i + 320));
    a6 = _mm512_xor_si512(a6, _mm512_load_si512(p + i + 384));
    a7 = _mm512_xor_si512(a7, _mm512_load_si512(p + i + 448));
  }
  const __m512i a = _mm512_xor_si512(_mm512_xor_si512(_mm512_xor_si512(a0, a1), _mm512_xor_si512(a2, a3)),
                                     _mm512_xor_si512(_mm512_xor_si512(a4, a5), _mm512_xor_si512(a6, a7)));
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(lanes, a);
  uint64_t r = 0;
  for (uint64_t v : lanes) r ^= v;
  return r;
}

__attribute__((target("avx2"))) uint64_t readAvx2(const uint8_t* p, size_t bytes) {
  __m256i a[8];
  for (__m256i& v : a) v = _mm256_setzero_si256();
  for (size_t i = 0; i < bytes; i += 512)
    for (int j = 0; j < 8; ++j) {  // 8 accumulators x 2 loads of 32 bytes = 512 bytes per step
      a[j] = _mm256_xor_si256(a[j], _mm256_load_si256((const __m256i*)(p + i + 64 * j)));
      a[j] = _mm256_xor_si256(a[j], _mm256_load_si256((const __m256i*)(p + i + 64 * j + 32)));
    }
  __m256i s = a[0];
  for (int j = 1; j < 8; ++j) s = _mm256_xor_si256(s, a[j]);
  alignas(32) uint64_t lanes[4];
  _mm256_store_si256((__m256i*)lanes, s);
  return lanes[0] ^ lanes[1] ^ lanes[2] ^ lanes[3];
}
#endif

// Baseline (SSE2 on x86-64, NEON elsewhere): 16-byte loads through the generic vector extension.
uint64_t readBaseline(const uint8_t* p, size_t bytes) {
  typedef uint64_t V2 __attribute__((vector_size(16)));
  V2 a[8] = {};
  for (size_t i = 0; i < bytes; i += 512)
    for (int j = 0; j < 8; ++j)
      for (int h = 0; h < 4; ++h) a[j] ^= *(const V2*)(p + i + 64 * j + 16 * h);
  V2 s = a[0];
  for (int j = 1; j < 8; ++j) s ^= a[j];
  return s[0] ^ s[1];
}

using ReadFn = uint64_t (*)(const uint8_t*, size_t);

ReadFn widestRead(std::string& name) {
#if W4A8_PROBES_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) {
    name = "avx512";
    return readAvx512;
  }
  if (__builtin_cpu_supports("avx2")) {
    name = "avx2";
    return readAvx2;
  }
  name = "sse2";
#else
  name = "baseline";
#endif
  return readBaseline;
}

struct AlignedFree {
  void operator()(uint8_t* p) const { std::free(p); }
};

// ---- FMA peak --------------------------------------------------------------------------------------------
// acc = acc * b + c on `kChains` independent accumulators per step: the chains never depend on each other,
// so the loop runs at the FMA pipes' throughput when kChains >= latency x pipes (4 x 2 on current x86 cores;
// 16 and 12 leave room). b just below 1 and c tiny keep every value normal (no denormal slow path).
// Returns a sum of the accumulators so the work cannot be dropped. steps >= 1.

#if W4A8_PROBES_X86
constexpr int kAvx512Chains = 16, kAvx2Chains = 12;

__attribute__((target("avx512f"))) float fmaAvx512(long steps) {
  __m512 acc[kAvx512Chains];
  for (int j = 0; j < kAvx512Chains; ++j) acc[j] = _mm512_set1_ps(1.0f + 0.01f * j);
  const __m512 b = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-6f);
  for (long i = 0; i < steps; ++i)
    for (int j = 0; j < kAvx512Chains; ++j) acc[j] = _mm512_fmadd_ps(acc[j], b, c);
  __m512 s = acc[0];
  for (int j = 1; j < kAvx512Chains; ++j) s = _mm512_add_ps(s, acc[j]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, s);
  float r = 0;
  for (float v : lanes) r += v;
  return r;
}

__attribute__((target("avx2,fma"))) float fmaAvx2(long steps) {
  __m256 acc[kAvx2Chains];
  for (int j = 0; j < kAvx2Chains; ++j) acc[j] = _mm256_set1_ps(1.0f + 0.01f * j);
  const __m256 b = _mm256_set1_ps(0.999999f), c = _mm256_set1_ps(1e-6f);
  for (long i = 0; i < steps; ++i)
    for (int j = 0; j < kAvx2Chains; ++j) acc[j] = _mm256_fmadd_ps(acc[j], b, c);
  __m256 s = acc[0];
  for (int j = 1; j < kAvx2Chains; ++j) s = _mm256_add_ps(s, acc[j]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, s);
  float r = 0;
  for (float v : lanes) r += v;
  return r;
}

// vdpbf16ps: per FP32 lane, two BF16 products added to the accumulator (4 flops: what a BF16-dot backend's
// "FLOP" counts, 2·M·N·K, needs per instruction and lane). Products 1e-6, so the sums stay small and normal.
constexpr int kBf16Chains = 16;

__attribute__((target("avx512f,avx512bf16"))) float dotBf16Avx512(long steps) {
  __m512 acc[kBf16Chains];
  for (int j = 0; j < kBf16Chains; ++j) acc[j] = _mm512_set1_ps(1.0f + 0.01f * j);
  const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(1e-3f));
  const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_set1_ps(1e-3f), _mm512_set1_ps(1e-3f));
  for (long i = 0; i < steps; ++i)
    for (int j = 0; j < kBf16Chains; ++j) acc[j] = _mm512_dpbf16_ps(acc[j], a, b);
  __m512 s = acc[0];
  for (int j = 1; j < kBf16Chains; ++j) s = _mm512_add_ps(s, acc[j]);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, s);
  float r = 0;
  for (float v : lanes) r += v;
  return r;
}
#endif

constexpr int kBaselineChains = 12;

// No FMA in baseline x86-64: a multiply and an add per lane (counted as the 2 flops of one FMA).
float fmaBaseline(long steps) {
  typedef float V4 __attribute__((vector_size(16)));
  V4 acc[kBaselineChains];
  for (int j = 0; j < kBaselineChains; ++j) acc[j] = V4{1.0f, 1.0f, 1.0f, 1.0f} + 0.01f * j;
  const V4 b = {0.999999f, 0.999999f, 0.999999f, 0.999999f}, c = {1e-6f, 1e-6f, 1e-6f, 1e-6f};
  for (long i = 0; i < steps; ++i)
    for (int j = 0; j < kBaselineChains; ++j) acc[j] = acc[j] * b + c;
  V4 s = acc[0];
  for (int j = 1; j < kBaselineChains; ++j) s += acc[j];
  return s[0] + s[1] + s[2] + s[3];
}

struct FmaBody {
  const char* isa;
  float (*run)(long steps);
  int lanes;
  int chains;
  int flopsPerLane = 2;  // per instruction: 2 for an FMA, 4 for vdpbf16ps
};

std::vector<FmaBody> fmaBodies() {
  std::vector<FmaBody> bodies;
#if W4A8_PROBES_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) bodies.push_back({"avx512", fmaAvx512, 16, kAvx512Chains});
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) bodies.push_back({"avx2", fmaAvx2, 8, kAvx2Chains});
  bodies.push_back({"sse2", fmaBaseline, 4, kBaselineChains});
  // Not an FP32 FMA: listed last so that "" (the widest FP32 FMA) never picks it.
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16"))
    bodies.push_back({"avx512bf16", dotBf16Avx512, 16, kBf16Chains, 4});
#else
  bodies.push_back({"baseline", fmaBaseline, 4, kBaselineChains});
#endif
  return bodies;
}

volatile uint64_t gReadSink;  // keeps the probes' results observable
volatile float gFmaSink;

}  // namespace

BandwidthProbe probeReadBandwidth(size_t bytes, int threads, int passes) {
  if (bytes < (1u << 20) || threads < 1 || passes < 1)
    throw std::invalid_argument("probeReadBandwidth: bytes >= 1 MiB, threads >= 1, passes >= 1");
  // Whole pages per thread, so every slice is 4 KiB-aligned and a multiple of the 512-byte step.
  const size_t page = 4096;
  const size_t slice = bytes / threads / page * page;
  if (slice == 0) throw std::invalid_argument("probeReadBandwidth: bytes must be >= threads x 4 KiB");
  const size_t total = slice * threads;
  std::unique_ptr<uint8_t, AlignedFree> buffer(static_cast<uint8_t*>(std::aligned_alloc(page, total)));
  if (!buffer) throw std::runtime_error("probeReadBandwidth: cannot allocate " + std::to_string(total) + " bytes");
  uint8_t* base = buffer.get();

  BandwidthProbe r{0.0, 0.0, total, threads, passes, ""};
  const ReadFn read = widestRead(r.loads);
  // First touch by the thread that will read the slice (pages land on its NUMA node), nonzero so no page
  // stays the shared zero page.
  timeOnThreads(threads, [&](int t) { std::memset(base + slice * t, 0x5a + t, slice); });
  std::vector<uint64_t> sinks(threads);
  double best = 1e30;
  for (int pass = 0; pass < passes; ++pass)
    best = std::min(best, timeOnThreads(threads, [&](int t) { sinks[t] = read(base + slice * t, slice); }));
  uint64_t s = 0;
  for (uint64_t v : sinks) s ^= v;
  gReadSink = s;
  r.bestSeconds = best;
  r.gbPerSecond = (double)total / best / 1e9;
  return r;
}

std::vector<std::string> fmaIsas() {
  std::vector<std::string> names;
  for (const FmaBody& b : fmaBodies()) names.push_back(b.isa);
  return names;
}

FmaProbe probeFmaPeak(int threads, const std::string& isa) {
  if (threads < 1) throw std::invalid_argument("probeFmaPeak: threads must be >= 1");
  const std::vector<FmaBody> bodies = fmaBodies();
  const FmaBody* body = nullptr;
  for (const FmaBody& b : bodies)
    if (isa.empty() || isa == b.isa) {
      body = &b;
      break;
    }
  if (!body) throw std::invalid_argument("probeFmaPeak: this CPU cannot run FMA isa '" + isa + "'");

  // Calibrate on one thread: steps for about 0.1 s per pass.
  long steps = 1 << 14;
  for (;;) {
    const Clock::time_point start = Clock::now();
    gFmaSink = body->run(steps);
    const double s = secondsSince(start);
    if (s > 0.02 || steps > (1L << 40)) {
      steps = std::max(1L, (long)(steps * (0.1 / std::max(s, 1e-9))));
      break;
    }
    steps *= 4;
  }
  std::vector<float> sinks(threads);
  double best = 1e30;
  for (int pass = 0; pass < 3; ++pass)
    best = std::min(best, timeOnThreads(threads, [&](int t) { sinks[t] = body->run(steps); }));
  float s = 0;
  for (float v : sinks) s += v;
  gFmaSink = s;
  const double flops = (double)body->flopsPerLane * body->lanes * body->chains * (double)steps * threads;
  return {flops / best / 1e9, body->isa, threads, body->lanes, body->chains, best};
}

}  // namespace w4a8::bench
