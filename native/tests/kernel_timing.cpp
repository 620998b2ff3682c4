// Kernel timing for tuning the CPU backends (not a test): for every backend this CPU runs and 1..T
// threads, M = 1 decode figures in GB/s of weight traffic and M = 64 figures in GFLOP/s, each beside
// its limit, measured here: streaming read bandwidth and the FMA peak.
//
// Usage: w4a8_kernel_timing [--quick] [--hot] [--backend NAME] [--kernel w4a8|w8a8|w4a16|f32] [--threads T]
//                           [--shape NxK]   (default 11008x4096: N outputs, K inputs)
//   Weights rotate over enough copies to exceed the last-level cache, so M = 1 reads come from DRAM.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/dispatch.h"
#include "kernels/parallel.h"
#include "tests/check.h"

using namespace w4a8;

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// Fastest single call of `fn` over at least `minSeconds` of calls (and `minCalls` calls): on a shared
// machine the minimum is the figure least disturbed by other processes.
template <class Fn>
double bestSeconds(Fn fn, double minSeconds, int minCalls = 5) {
  fn();  // warm-up: scratch buffers, pool threads, page faults
  double best = 1e30;
  const double start = now();
  for (int calls = 0; calls < minCalls || now() - start < minSeconds; ++calls) {
    const double t0 = now();
    fn();
    best = std::min(best, now() - t0);
  }
  return best;
}

// Sums `count` floats with 256-bit loads (4 independent accumulators): a read stream that is not
// limited by the core, so its speed is the memory's.
__attribute__((target("avx2"))) float sumFloats(const float* p, size_t count) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  for (size_t i = 0; i + 32 <= count; i += 32) {
    s0 = _mm256_add_ps(s0, _mm256_loadu_ps(p + i));
    s1 = _mm256_add_ps(s1, _mm256_loadu_ps(p + i + 8));
    s2 = _mm256_add_ps(s2, _mm256_loadu_ps(p + i + 16));
    s3 = _mm256_add_ps(s3, _mm256_loadu_ps(p + i + 24));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  return lanes[0] + lanes[7];
}

// Streaming read bandwidth (GB/s) over `bytes`, split over the pool.
double measureReadBandwidth(ThreadPool& pool, size_t bytes) {
  std::vector<float> buffer(bytes / 4, 1.0f);
  volatile float sink = 0;
  const int blocks = 1024;
  const double t = bestSeconds(
      [&] {
        pool.parallelFor(blocks, 1, [&](int b, int e) {
          const size_t per = buffer.size() / blocks;
          sink = sink + sumFloats(buffer.data() + (size_t)b * per, (size_t)(e - b) * per);
        });
      },
      0.3);
  return bytes / t / 1e9;
}

// 12 independent chains of 512-bit FMAs, register-only: the FP32 FMA peak of one core.
__attribute__((target("avx512f"))) float fmaLoopAvx512(long iters) {
  __m512 a[12];
  for (int i = 0; i < 12; ++i) a[i] = _mm512_set1_ps(1.0f + i * 1e-7f);
  const __m512 m = _mm512_set1_ps(0.9999999f), c = _mm512_set1_ps(1e-7f);
  for (long it = 0; it < iters; ++it)
    for (int i = 0; i < 12; ++i) a[i] = _mm512_fmadd_ps(a[i], m, c);
  alignas(64) float lanes[16];
  float sink = 0;
  for (int i = 0; i < 12; ++i) {
    _mm512_store_ps(lanes, a[i]);
    sink += lanes[0];
  }
  return sink;
}

// FP32 FMA peak (GFLOP/s) of the pool's threads together.
double fmaPeakAvx512(ThreadPool& pool) {
  const long iters = 1000000;
  volatile float sink = 0;
  const double t = bestSeconds(
      [&] { pool.parallelFor(pool.size(), 1, [&](int, int) { sink = sink + fmaLoopAvx512(iters); }); }, 0.3, 3);
  return 12.0 * 16 * 2 * iters * pool.size() / t / 1e9;
}

struct Int4Weights {
  std::vector<uint8_t> codes, zeros;
  std::vector<float> groupScales, channelScales;
  Int4WeightsView view(int N, int K, int G, Fp8Format f) const {
    return {codes.data(), groupScales.data(), zeros.data(), channelScales.data(), N, K, G, f};
  }
  size_t bytes() const { return codes.size() + zeros.size() + 4 * (groupScales.size() + channelScales.size()); }
};

Int4Weights randomInt4(w4a8test::Rng& rng, int N, int K, int G) {
  Int4Weights w;
  w.codes.resize((size_t)N * K / 2);
  w.zeros.resize((size_t)N * K / G);
  w.groupScales.resize((size_t)N * K / G);
  w.channelScales.resize(N);
  for (uint8_t& c : w.codes) c = (uint8_t)rng.next();
  for (uint8_t& z : w.zeros) z = (uint8_t)rng.below(16);
  for (float& s : w.groupScales) s = rng.uniform(0.5f, 30.0f);
  for (float& s : w.channelScales) s = rng.uniform(0.001f, 0.01f);
  return w;
}

struct Options {
  bool quick = false;
  bool hot = false;  // one weight copy: M = 1 reads come from the last-level cache where it fits
  std::string backend, kernel;
  int maxThreads = 0;
  int N = 11008, K = 4096;  // --shape NxK: outputs x inputs
};

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--quick") opt.quick = true;
    else if (a == "--hot") opt.hot = true;
    else if (a == "--backend" && i + 1 < argc) opt.backend = argv[++i];
    else if (a == "--kernel" && i + 1 < argc) opt.kernel = argv[++i];
    else if (a == "--threads" && i + 1 < argc) opt.maxThreads = std::atoi(argv[++i]);
    else if (a == "--shape" && i + 1 < argc) std::sscanf(argv[++i], "%dx%d", &opt.N, &opt.K);
  }
  const int hw = std::max(1, (int)std::thread::hardware_concurrency());
  const int maxThreads = opt.maxThreads > 0 ? opt.maxThreads : hw;
  const int N = opt.N, K = opt.K, G = 128, Mbig = 64;
  const Fp8Format f = Fp8Format::E4M3FN;
  w4a8test::Rng rng(1);

  // Enough weight copies to exceed the last-level cache (32 MiB here) so M = 1 reads hit DRAM.
  const int copies = opt.hot ? 1 : opt.quick ? 2 : 4;
  std::vector<Int4Weights> int4(copies);
  for (auto& w : int4) w = randomInt4(rng, N, K, G);
  std::vector<std::vector<uint8_t>> fp8(opt.hot ? 1 : opt.quick ? 2 : 3);
  for (auto& w : fp8) {
    w.resize((size_t)N * K);
    for (auto& c : w) c = (uint8_t)(rng.below(0x7E) | (rng.next() & 0x80));
  }
  std::vector<float> fp8Scales(N, 0.01f);
  std::vector<float> wf32((size_t)N * K);
  for (float& v : wf32) v = rng.uniform(-1, 1);
  // Activations as a model makes them: FP32 values quantized per token (random FP8 codes would give every
  // exponent in every group, which no real activation does).
  std::vector<uint8_t> x8((size_t)Mbig * K);
  std::vector<float> xScales(Mbig), x((size_t)Mbig * K);
  for (float& v : x) v = rng.uniform(-1, 1);
  quantizeActivationsDynamic(x.data(), Mbig, K, f, x8.data(), xScales.data());
  std::vector<uint16_t> x16((size_t)Mbig * K);
  floatToBf16Array(x.data(), x.size(), x16.data());
  std::vector<float> y((size_t)Mbig * N);

  std::printf("shape: N=%d outputs x K=%d inputs, G=%d, %s; M=1 in GB/s of weight bytes, M=%d in GFLOP/s\n", N, K,
              G, "e4m3fn", Mbig);
  std::printf("%-11s %-6s %3s %12s %12s %10s %10s\n", "backend", "kernel", "thr", "M=1 GB/s", "(limit)", "M=64 GF/s",
              "(fma peak)");
  for (int threads = 1; threads <= maxThreads; ++threads) {
    ThreadPool pool(threads);
    const double bandwidth = measureReadBandwidth(pool, (size_t)256 << 20);
    const double peak = __builtin_cpu_supports("avx512f") ? fmaPeakAvx512(pool) : 0.0;
    for (const char* const* name = kernelNames(); *name; ++name) {
      const KernelTable* t = kernelsFor(*name);
      if (!t || (!opt.backend.empty() && opt.backend != *name)) continue;
      const bool slow = !std::strcmp(*name, "reference");
      for (const char* kernel : {"w4a8", "w8a8", "w4a16", "f32"}) {
        if (!opt.kernel.empty() && opt.kernel != kernel) continue;
        int copy = 0;
        size_t weightBytes = 0;
        auto call = [&](int M) {
          const GemmOutput out{y.data(), nullptr, N};
          if (!std::strcmp(kernel, "w4a8")) {
            const Int4Weights& w = int4[copy++ % int4.size()];
            weightBytes = w.bytes();
            gemmW4A8Parallel(*t, pool, {x8.data(), xScales.data(), f, M, w.view(N, K, G, f), out});
          } else if (!std::strcmp(kernel, "w8a8")) {
            const auto& w = fp8[copy++ % fp8.size()];
            weightBytes = w.size() + 4 * N;
            gemmW8A8Parallel(*t, pool, {x8.data(), xScales.data(), f, M, {w.data(), fp8Scales.data(), N, K, f}, out});
          } else if (!std::strcmp(kernel, "w4a16")) {
            const Int4Weights& w = int4[copy++ % int4.size()];
            weightBytes = w.bytes();
            gemmW4A16Parallel(*t, pool, {x16.data(), M, w.view(N, K, G, f), out});
          } else {
            weightBytes = wf32.size() * 4;
            gemmF32Parallel(*t, pool, {x.data(), wf32.data(), M, N, K, out});
          }
        };
        const double t1 = bestSeconds([&] { call(1); }, slow ? 0.05 : opt.quick ? 0.3 : 1.0, slow ? 1 : 5);
        const double gbs = weightBytes / t1 / 1e9;
        double gflops = 0;
        if (!slow) {
          const double t64 = bestSeconds([&] { call(Mbig); }, opt.quick ? 0.3 : 1.0, 3);
          gflops = 2.0 * Mbig * N * K / t64 / 1e9;
        }
        std::printf("%-11s %-6s %3d %12.2f %12.2f %10.1f %10.1f\n", *name, kernel, threads, gbs, bandwidth, gflops,
                    peak);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}
