// Kernel dispatch: one table of function pointers per CPU backend, chosen once from cpuid.
//
//   reference  scalar C++, the definition (kernels/reference/)
//   avx2       AVX2 + FMA + F16C: W4A8 on exact int16 products, the rest FP32 FMA (kernels/avx2/)
//   avx512     AVX512 F/BW/VL/VBMI(/DQ); vdpbf16ps where the CPU has AVX512-BF16 (kernels/avx512/), and W4A8
//              below 8 tokens (3 on AMD) on vpdpwssd int16 products where it has AVX512-VNNI
//              (kernels/avx512/w4a8_vnni.cpp)
//   amx        AMX-BF16 tiles (tdpbf16ps) for calls of M >= 8 tokens, avx512 (VNNI W4A8, vdpbf16ps) below (kernels/amx/)
//
// The active table is chosen at first use: the best backend this CPU and OS support, or the one named
// by the environment variable W4A8_ISA=reference|avx2|avx512|amx. A name the CPU cannot run (or an
// unknown name) falls back to the best available one, and backendReason() says so.
#pragma once
#include <string>

#include "kernels/kernels.h"

namespace w4a8 {

struct CpuFeatures;  // kernels/cpu_features.h
class ThreadPool;    // runtime/thread_pool.h

// Same signatures as kernels.h. Every backend fills every entry (reusing another backend's function
// where it has no faster one). GEMMs compute output channels [nBegin, nEnd) and give bit-identical
// results for any split of N (see kernels/parallel.h for the threaded entry points).
struct KernelTable {
  const char* name;     // "reference", "avx2", "avx512", ...
  const char* detail;   // arithmetic used, e.g. "AVX-512 vdpbf16ps (BF16 products, FP32 accumulation)"
  void (*gemmW4A8)(const W4A8GemmArgs& a, int nBegin, int nEnd);
  void (*gemmW8A8)(const W8A8GemmArgs& a, int nBegin, int nEnd);
  void (*gemmW4A16)(const W4A16GemmArgs& a, int nBegin, int nEnd);
  void (*gemmF32)(const F32GemmArgs& a, int nBegin, int nEnd);
  // Bit-exact with the reference functions of kernels.h.
  void (*quantizeActivationsDynamic)(const float* x, int M, int K, Fp8Format f, uint8_t* x8, float* xScales);
  void (*quantizeActivationsStatic)(const float* x, int M, int K, float scale, Fp8Format f, uint8_t* x8,
                                    float* xScales);
  void (*dequantInt4ToFp8)(const Int4WeightsView& w, uint8_t* out, int nBegin, int nEnd);
  // Optional whole-call GEMMs (nullptr: none), used by the *Parallel functions (parallel.h) for calls with
  // M >= pooledMinRows: the backend converts the activations once per call into a buffer that every pool
  // thread reads, then splits N over the pool itself (amx: the tile layout of the activations costs too much
  // to redo per N-chunk). Results equal the per-range entries' above, bit for bit.
  int pooledMinRows;
  void (*gemmW4A8Pooled)(ThreadPool& pool, const W4A8GemmArgs& a);
  void (*gemmW8A8Pooled)(ThreadPool& pool, const W8A8GemmArgs& a);
  void (*gemmW4A16Pooled)(ThreadPool& pool, const W4A16GemmArgs& a);
};

// The table every caller should use: chosen once (thread-safe) from cpuid and W4A8_ISA.
const KernelTable& activeKernels();
const char* backendName();    // activeKernels().name
const char* backendReason();  // why, e.g. "W4A8_ISA=avx512 needs AVX512VBMI, which this CPU/OS lacks; using avx2 (...)"

// The table for one backend name, or nullptr when this CPU/OS cannot run it (or this build lacks it:
// only x86-64 builds have avx2, avx512 and amx). Besides the public names, "avx512-fma" names the AVX-512 variant without
// vdpbf16ps (what a CPU without AVX512-BF16 runs), so tests can check it on any AVX-512 machine, and "avx512-bf16" the
// vdpbf16ps variant without the VNNI W4A8 (what a CPU with AVX512-BF16 but no AVX512-VNNI runs).
const KernelTable* kernelsFor(const char* isa);

// Every name kernelsFor() knows, nullptr-terminated, best last: reference, avx2, avx512-fma, avx512-bf16, avx512, amx.
const char* const* kernelNames();

// The choice activeKernels() makes, as a pure function of the requested name (nullptr or "" = none,
// meaning "best available"), so tests can check the W4A8_ISA rules without touching the environment.
struct KernelChoice {
  const KernelTable* table;
  std::string reason;
};
KernelChoice chooseKernels(const char* requested);
// The same two for a given CPU (tests: what a CPU without AVX-512 would run).
KernelChoice chooseKernels(const char* requested, const CpuFeatures& cpu);
const KernelTable* kernelsFor(const char* isa, const CpuFeatures& cpu);

}  // namespace w4a8
