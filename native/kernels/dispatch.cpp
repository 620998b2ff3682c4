#include "kernels/dispatch.h"

#include <cstdlib>
#include <cstring>

#include "kernels/cpu_features.h"
#include "kernels/fast_common.h"
#if W4A8_X86_BACKENDS
#include "kernels/backends.h"
#include "kernels/parallel.h"
#endif

namespace w4a8 {
namespace {

const KernelTable kReference = {
    "reference",
    "scalar C++, sequential FP32 accumulation (the definition)",
    reference::gemmW4A8,
    reference::gemmW8A8,
    reference::gemmW4A16,
    reference::gemmF32,
    quantizeActivationsDynamic,
    quantizeActivationsStatic,
    dequantInt4ToFp8,
    0, nullptr, nullptr, nullptr,
};

#if W4A8_X86_BACKENDS
const KernelTable kAvx2 = {
    "avx2",
    "AVX2: W4A8 on exact int16 products (vpmaddwd), others FP32 FMA (exact FP8/BF16 products, FP32 accumulation)",
    avx2::gemmW4A8,
    avx2::gemmW8A8,
    avx2::gemmW4A16,
    avx2::gemmF32,
    avx2::quantizeActivationsDynamic,
    avx2::quantizeActivationsStatic,
    fast::lutDequantInt4ToFp8,
    0, nullptr, nullptr, nullptr,
};

const KernelTable kAvx512Fma = {
    "avx512-fma",
    "AVX-512 FP32 FMA (exact FP8/BF16 products, FP32 accumulation)",
    avx512::gemmW4A8,
    avx512::gemmW8A8,
    avx512::gemmW4A16,
    avx512::gemmF32,
    avx512::quantizeActivationsDynamic,
    avx512::quantizeActivationsStatic,
    fast::lutDequantInt4ToFp8,
    0, nullptr, nullptr, nullptr,
};

const KernelTable kAvx512Bf16 = {
    "avx512",
    "AVX-512 vdpbf16ps (exact BF16 products, FP32 accumulation)",
    avx512bf16::gemmW4A8,
    avx512bf16::gemmW8A8,
    avx512bf16::gemmW4A16,
    avx512::gemmF32,
    avx512::quantizeActivationsDynamic,
    avx512::quantizeActivationsStatic,
    fast::lutDequantInt4ToFp8,
    0, nullptr, nullptr, nullptr,
};

// The public "avx512" name on a CPU without AVX512-BF16: the FP32-FMA variant under the public name,
// so backendName() stays "avx512". (Spelled out, not copied, so that it is constant-initialized.)
const KernelTable kAvx512FmaAsAvx512 = {
    "avx512",
    "AVX-512 FP32 FMA, no AVX512-BF16 on this CPU (exact FP8/BF16 products, FP32 accumulation)",
    avx512::gemmW4A8,
    avx512::gemmW8A8,
    avx512::gemmW4A16,
    avx512::gemmF32,
    avx512::quantizeActivationsDynamic,
    avx512::quantizeActivationsStatic,
    fast::lutDequantInt4ToFp8,
    0, nullptr, nullptr, nullptr,
};

// The same as kAvx512Bf16 under its own name: what "avx512" is on a CPU with AVX512-BF16 but without
// AVX512-VNNI, so that tests and benches can run it next to the VNNI W4A8 on any AVX-512 machine.
const KernelTable kAvx512Bf16Named = {
    "avx512-bf16",
    "AVX-512 vdpbf16ps (exact BF16 products, FP32 accumulation)",
    avx512bf16::gemmW4A8,
    avx512bf16::gemmW8A8,
    avx512bf16::gemmW4A16,
    avx512::gemmF32,
    avx512::quantizeActivationsDynamic,
    avx512::quantizeActivationsStatic,
    fast::lutDequantInt4ToFp8,
    0, nullptr, nullptr, nullptr,
};

// "avx512" on a CPU with AVX512-VNNI: W4A8 on exact int16 products (vpdpwssd) below kMaxRows tokens, where it
// is faster; from there on the vdpbf16ps (or FP32 FMA) body, which is as fast for activations needing one int16
// plane and twice as fast for wide ones (two planes; measured: bench/results/xeon-vnni.md). Like amx, the W4A8
// entry switches at that M, and the pooled entry (from pooledMinRows = kMaxRows) is the other body split over
// the pool, so that a batch is processed by one body whatever the split.
// Where it switches: 8 tokens on Intel (Xeon measurements above). AMD Zen 4 runs vpermw and vdpbf16ps at one zmm
// a cycle, and there vdpbf16ps is as fast from 2 tokens and faster from 3 (W4A8 8192x2048, 2 threads: 0.750 ms
// both at M = 2; 0.780 against 0.955 at 3; 0.811 against 1.258 at 4; 1.318 against 1.879 at 7; 2026-12-02), so
// on AMD the switch is at 3. (Since the VNNI kernel's multi-token loop reads the prepared tables, 2026-12-02, its
// 2-token calls measure 0.40-0.54 ms against vdpbf16ps's 0.45-0.58 on 8192x2048, but 1.56-1.60 against 1.39-1.41 on
// 4096x11008, where two tokens' int16 activations, 44 KiB, no longer stay in L1: interleaved, 2 threads, Zen 4.)
constexpr int kVnniMaxRows = 8, kVnniMaxRowsAmd = 3;
template <int kMaxRows>
void avx512VnniW4A8(const W4A8GemmArgs& a, int nBegin, int nEnd) {
  if (a.M < kMaxRows) avx512vnni::gemmW4A8(a, nBegin, nEnd);
  else avx512bf16::gemmW4A8(a, nBegin, nEnd);
}
void avx512FmaVnniW4A8(const W4A8GemmArgs& a, int nBegin, int nEnd) {
  if (a.M < kVnniMaxRows) avx512vnni::gemmW4A8(a, nBegin, nEnd);
  else avx512::gemmW4A8(a, nBegin, nEnd);
}
void avx512Bf16W4A8Pooled(ThreadPool& pool, const W4A8GemmArgs& a) { gemmW4A8Parallel(kAvx512Bf16Named, pool, a); }
void avx512FmaW4A8Pooled(ThreadPool& pool, const W4A8GemmArgs& a) { gemmW4A8Parallel(kAvx512Fma, pool, a); }

// The avx512 table of a CPU with AVX512-BF16 and AVX512-VNNI, switching at kMaxRows tokens (a constexpr function:
// its tables are constant-initialized like the others).
template <int kMaxRows>
constexpr KernelTable avx512VnniTable(const char* detail) {
  return {"avx512", detail, avx512VnniW4A8<kMaxRows>, avx512bf16::gemmW8A8, avx512bf16::gemmW4A16, avx512::gemmF32,
          avx512::quantizeActivationsDynamic, avx512::quantizeActivationsStatic, fast::lutDequantInt4ToFp8,
          kMaxRows, avx512Bf16W4A8Pooled, nullptr, nullptr};
}
const KernelTable kAvx512Vnni = avx512VnniTable<kVnniMaxRows>(
    "AVX-512 VNNI vpdpwssd for W4A8 below 8 tokens (exact int16 products of FP8 group tables and activation "
    "planes), vdpbf16ps otherwise (exact BF16 products); FP32 accumulation");
const KernelTable kAvx512VnniAmd = avx512VnniTable<kVnniMaxRowsAmd>(
    "AVX-512 VNNI vpdpwssd for W4A8 below 3 tokens (exact int16 products of FP8 group tables and activation "
    "planes), vdpbf16ps otherwise (exact BF16 products); FP32 accumulation");

const KernelTable kAvx512FmaVnniAsAvx512 = {
    "avx512",
    "AVX-512 VNNI vpdpwssd for W4A8 below 8 tokens (exact int16 products), FP32 FMA otherwise, no AVX512-BF16 on "
    "this CPU; FP32 accumulation",
    avx512FmaVnniW4A8,
    avx512::gemmW8A8,
    avx512::gemmW4A16,
    avx512::gemmF32,
    avx512::quantizeActivationsDynamic,
    avx512::quantizeActivationsStatic,
    fast::lutDequantInt4ToFp8,
    kVnniMaxRows, avx512FmaW4A8Pooled, nullptr, nullptr,
};

// AMX tiles from M = amx::kMinRows tokens on; below, the "avx512" (vdpbf16ps) bodies, called from the amx
// entries so that one table serves every M.
const KernelTable kAmxNoVnni = {
    "amx",
    "AMX-BF16 tdpbf16ps tiles for M >= 8 tokens, AVX-512 vdpbf16ps below (exact BF16 products, FP32 accumulation)",
    amx::gemmW4A8,
    amx::gemmW8A8,
    amx::gemmW4A16,
    avx512::gemmF32,
    avx512::quantizeActivationsDynamic,
    avx512::quantizeActivationsStatic,
    fast::lutDequantInt4ToFp8,
    amx::kMinRows,
    amx::gemmW4A8Pooled,
    amx::gemmW8A8Pooled,
    amx::gemmW4A16Pooled,
};

// W4A8 below amx::kMinRows tokens on VNNI (the amx entry would run the vdpbf16ps body there); tiles above.
// (The pooled entry, used from pooledMinRows = kMinRows tokens, is the tile path either way.)
void amxW4A8(const W4A8GemmArgs& a, int nBegin, int nEnd) {
  if (a.M < amx::kMinRows) avx512vnni::gemmW4A8(a, nBegin, nEnd);
  else amx::gemmW4A8(a, nBegin, nEnd);
}

const KernelTable kAmx = {
    "amx",
    "AMX-BF16 tdpbf16ps tiles for M >= 8 tokens, below: AVX-512 VNNI vpdpwssd for W4A8 (exact int16 products), "
    "vdpbf16ps for W8A8/W4A16 (exact BF16 products); FP32 accumulation",
    amxW4A8,
    amx::gemmW8A8,
    amx::gemmW4A16,
    avx512::gemmF32,
    avx512::quantizeActivationsDynamic,
    avx512::quantizeActivationsStatic,
    fast::lutDequantInt4ToFp8,
    amx::kMinRows,
    amx::gemmW4A8Pooled,
    amx::gemmW8A8Pooled,
    amx::gemmW4A16Pooled,
};

#endif  // W4A8_X86_BACKENDS

const char* const kNames[] = {"reference", "avx2", "avx512-fma", "avx512-bf16", "avx512", "amx", nullptr};

#if W4A8_X86_BACKENDS
// What the public name "avx512" runs on an AVX-512 CPU.
const KernelTable* avx512Table(const CpuFeatures& cpu) {
  if (cpu.avx512bf16) return cpu.avx512vnni ? (cpu.amd ? &kAvx512VnniAmd : &kAvx512Vnni) : &kAvx512Bf16;
  return cpu.avx512vnni ? &kAvx512FmaVnniAsAvx512 : &kAvx512FmaAsAvx512;
}
#endif

// Best first: what "no request" picks.
const KernelTable* bestAvailable(const CpuFeatures& cpu) {
#if W4A8_X86_BACKENDS
  if (cpu.amxBackend()) return cpu.avx512vnni ? &kAmx : &kAmxNoVnni;
  if (cpu.avx512Backend()) return avx512Table(cpu);
  if (cpu.avx2Backend()) return &kAvx2;
#endif
  return &kReference;
}

std::string describeCpu(const CpuFeatures& cpu) {
#if !W4A8_X86_BACKENDS
  return "no x86 backends in this build";
#else
  const std::string vnni = cpu.avx512vnni ? " + AVX512-VNNI" : "";
  if (cpu.amxBackend())
    return "AVX512 F/BW/VL/DQ/VBMI + AVX512-BF16" + vnni + " + AMX-TILE/AMX-BF16 with OS permission: AMX tiles for M >= " +
           std::to_string(amx::kMinRows) + " tokens, AVX-512 " +
           std::string(cpu.avx512vnni ? "vpdpwssd (W4A8) / " : "") + "vdpbf16ps below";
  const std::string amxNote = cpu.amxTile && cpu.amxBf16 ? "; AMX present but " + cpu.missingFor("amx") + " missing"
                                                          : "; no AMX";
  if (cpu.avx512Backend())
    return std::string(cpu.avx512bf16 ? "AVX512 F/BW/VL/DQ/VBMI + AVX512-BF16" : "AVX512 F/BW/VL/DQ/VBMI, no AVX512-BF16") +
           (cpu.avx512vnni ? " + AVX512-VNNI (W4A8 below " + std::to_string(avx512Table(cpu)->pooledMinRows) +
                                  " tokens on vpdpwssd)"
                            : ", no AVX512-VNNI") +
           amxNote;
  if (cpu.avx2Backend()) return "AVX2+FMA+F16C, no AVX512 F/BW/VL/DQ/VBMI";
  return "no AVX2+FMA+F16C";
#endif
}

std::string missingFeatures(const char* isa, const CpuFeatures& cpu) {
#if !W4A8_X86_BACKENDS
  return "an x86-64 build";
#else
  return cpu.missingFor(isa);
#endif
}

}  // namespace

const KernelTable* kernelsFor(const char* isa, const CpuFeatures& cpu) {
  if (!isa) return nullptr;
  if (!std::strcmp(isa, "reference")) return &kReference;
#if W4A8_X86_BACKENDS
  if (!std::strcmp(isa, "avx2")) return cpu.avx2Backend() ? &kAvx2 : nullptr;
  if (!std::strcmp(isa, "avx512-fma")) return cpu.avx512Backend() ? &kAvx512Fma : nullptr;
  if (!std::strcmp(isa, "avx512-bf16")) return cpu.avx512Backend() && cpu.avx512bf16 ? &kAvx512Bf16Named : nullptr;
  if (!std::strcmp(isa, "avx512")) return cpu.avx512Backend() ? avx512Table(cpu) : nullptr;
  if (!std::strcmp(isa, "amx")) return cpu.amxBackend() ? (cpu.avx512vnni ? &kAmx : &kAmxNoVnni) : nullptr;
#endif
  return nullptr;
}

const KernelTable* kernelsFor(const char* isa) { return kernelsFor(isa, cpuFeatures()); }

const char* const* kernelNames() { return kNames; }

KernelChoice chooseKernels(const char* requested, const CpuFeatures& cpu) {
  const KernelTable* best = bestAvailable(cpu);
  const std::string cpuText = describeCpu(cpu);
  if (!requested || !*requested) return {best, std::string(best->name) + ": best for this CPU (" + cpuText + ")"};
  if (const KernelTable* t = kernelsFor(requested, cpu))
    return {t, std::string(t->name) + ": forced by W4A8_ISA=" + requested + " (" + t->detail + ")"};
  std::string why;
  bool known = false;
  for (const char* const* n = kNames; *n; ++n) known |= !std::strcmp(*n, requested);
  if (!known) {
    why = "is not a backend (reference|avx2|avx512|amx)";
  } else {
    why = "needs " + missingFeatures(requested, cpu) + ", which this CPU/OS lacks";
  }
  return {best, std::string("W4A8_ISA=") + requested + " " + why + "; using " + best->name + " (" + cpuText + ")"};
}

KernelChoice chooseKernels(const char* requested) { return chooseKernels(requested, cpuFeatures()); }

namespace {
const KernelChoice& activeChoice() {
  static const KernelChoice choice = chooseKernels(std::getenv("W4A8_ISA"));
  return choice;
}
}  // namespace

const KernelTable& activeKernels() { return *activeChoice().table; }
const char* backendName() { return activeChoice().table->name; }
const char* backendReason() { return activeChoice().reason.c_str(); }

}  // namespace w4a8
