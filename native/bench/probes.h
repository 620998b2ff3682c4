// Machine-limit probes for the kernel benchmark (bench/kernels.mjs): what the CPU can do at best, measured
// in the same run as the kernels, so a kernel's GB/s and GFLOP/s can be printed as a fraction of a limit.
//
//   probeReadBandwidth  DRAM read bandwidth: every thread streams its own slice of a buffer much larger than
//                       the caches with the widest vector loads the CPU has; best of several passes.
//   probeFmaPeak        FP32 FMA peak: every thread runs many independent FMA chains (enough accumulators to
//                       cover FMA latency x FMA pipes) in registers, no memory traffic.
//
// Both start their own std::threads (not the kernel pool: the probes must not depend on the code they judge)
// and block the caller for about a second.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

namespace w4a8::bench {

struct BandwidthProbe {
  double gbPerSecond;  // 1e9 bytes / s, best pass
  double bestSeconds;  // time of the best pass
  size_t bytes;        // bytes read per pass (the buffer size rounded down to whole 4 KiB pages per thread)
  int threads;
  int passes;
  std::string loads;   // vector loads used: "avx512", "avx2" or "sse2"
};

// bytes >= 1 MiB, threads >= 1, passes >= 1.
BandwidthProbe probeReadBandwidth(size_t bytes, int threads, int passes);

struct FmaProbe {
  double gflops;       // flops / 1e9 / s, best pass: 2 per FMA lane (4 per vdpbf16ps lane: two products)
  std::string isa;     // "avx512", "avx2", "sse2" (mul + add, no FMA), or "avx512bf16" (vdpbf16ps)
  int threads;
  int lanes;           // FP32 lanes per vector
  int accumulators;    // independent FMA chains per thread
  double seconds;      // time of the best pass
};

// The FP32 FMA instruction sets this CPU and OS can run, widest first ("avx512", "avx2", "sse2"), then
// "avx512bf16" where the CPU has it: the peak of the BF16 dot product (vdpbf16ps, FP32 accumulation) that the
// avx512 backend uses, for which the FP32 FMA peak is not the limit.
std::vector<std::string> fmaIsas();

// isa: one of fmaIsas(), or "" for the widest FP32 FMA. Throws std::invalid_argument for an unsupported name.
FmaProbe probeFmaPeak(int threads, const std::string& isa);

}  // namespace w4a8::bench
