#include "kernels/dispatch.h"

#include <cstdlib>
#include <cstring>

#include "kernels/cpu_features.h"
#include "kernels/fast_common.h"
#if W4A8_X86_BACKENDS
#include "kernels/backends.h"
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
};

#endif  // W4A8_X86_BACKENDS

const char* const kNames[] = {"reference", "avx2", "avx512-fma", "avx512", "amx", nullptr};

// Best first: what "no request" picks.
const KernelTable* bestAvailable(const CpuFeatures& cpu) {
#if W4A8_X86_BACKENDS
  if (cpu.avx512Backend()) return cpu.avx512bf16 ? &kAvx512Bf16 : &kAvx512FmaAsAvx512;
  if (cpu.avx2Backend()) return &kAvx2;
#endif
  return &kReference;
}

std::string describeCpu(const CpuFeatures& cpu) {
#if !W4A8_X86_BACKENDS
  return "no x86 backends in this build";
#else
  if (cpu.avx512Backend())
    return cpu.avx512bf16 ? "AVX512 F/BW/VL/DQ/VBMI + AVX512-BF16" : "AVX512 F/BW/VL/DQ/VBMI, no AVX512-BF16";
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
  if (!std::strcmp(isa, "avx512"))
    return cpu.avx512Backend() ? (cpu.avx512bf16 ? &kAvx512Bf16 : &kAvx512FmaAsAvx512) : nullptr;
#endif
  // "amx": AMX-BF16 tiles. Slot kept for the AMX backend (kernels/amx/, built on an AMX machine);
  // until then it is unavailable everywhere and W4A8_ISA=amx falls back with a reason.
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
  } else if (!std::strcmp(requested, "amx")) {
    const std::string missing = missingFeatures("amx", cpu);
    why = missing.empty() ? "is not built yet (AMX-BF16 kernels are planned)"
                          : "is not built yet, and this CPU lacks " + missing;
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
