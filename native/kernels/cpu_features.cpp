#include "kernels/cpu_features.h"

#include <cstdint>
#include <cstring>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define W4A8_HAVE_CPUID 1
#endif
#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace w4a8 {
namespace {

#if W4A8_HAVE_CPUID
uint64_t readXcr0() {
  uint32_t eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return ((uint64_t)edx << 32) | eax;
}

// Linux keeps AMX tile data (8 KiB of state) off until a process asks for it; without the permission
// the first tile instruction faults (SIGILL). The permission is per process, so once is enough.
bool requestAmxPermission() {
#if defined(__linux__) && defined(__x86_64__)
  constexpr int kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;  // other systems: no tile use (their AMX support is not tested)
#endif
}

CpuFeatures detect() {
  CpuFeatures f;
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return f;
  const bool osxsave = ecx & (1u << 27), avx = ecx & (1u << 28);
  const bool fma = ecx & (1u << 12), f16c = ecx & (1u << 29);
  if (!osxsave || !avx) return f;
  const uint64_t xcr0 = readXcr0();
  const bool osYmm = (xcr0 & 0x6) == 0x6;           // SSE and AVX state
  const bool osZmm = (xcr0 & 0xE6) == 0xE6;         // + opmask, ZMM_Hi256, Hi16_ZMM
  const bool osTile = (xcr0 & 0x60000) == 0x60000;  // XTILECFG, XTILEDATA
  const unsigned maxLeaf = __get_cpuid_max(0, nullptr);
  unsigned vendor[3];
  __cpuid(0, eax, vendor[0], vendor[2], vendor[1]);  // the vendor string is ebx, edx, ecx
  f.amd = !std::memcmp(vendor, "AuthenticAMD", 12);
  if (maxLeaf < 7 || !osYmm) return f;
  __cpuid_count(7, 0, eax, ebx, ecx, edx);
  f.avx2 = ebx & (1u << 5);
  f.fma = fma;
  f.f16c = f16c;
  if (osZmm) {
    f.avx512f = ebx & (1u << 16);
    f.avx512dq = ebx & (1u << 17);
    f.avx512bw = ebx & (1u << 30);
    f.avx512vl = ebx & (1u << 31);
    f.avx512vbmi = ecx & (1u << 1);
    f.avx512vnni = ecx & (1u << 11);
  }
  if (osTile) {
    f.amxBf16 = edx & (1u << 22);
    f.amxTile = edx & (1u << 24);
  }
  const unsigned subleaves = eax;
  if (subleaves >= 1 && osZmm) {
    __cpuid_count(7, 1, eax, ebx, ecx, edx);
    f.avx512bf16 = eax & (1u << 5);
  }
  if (f.amxTile && f.amxBf16) f.amxPermission = requestAmxPermission();
  return f;
}
#else
CpuFeatures detect() { return {}; }  // not x86: only the reference backend
#endif

}  // namespace

std::string CpuFeatures::missingFor(const char* isa) const {
  struct Need { const char* name; bool have; };
  const Need avx2Needs[] = {{"AVX2", avx2}, {"FMA", fma}, {"F16C", f16c}};
  const Need avx512Needs[] = {{"AVX512F", avx512f}, {"AVX512BW", avx512bw}, {"AVX512VL", avx512vl},
                              {"AVX512DQ", avx512dq}, {"AVX512VBMI", avx512vbmi}};
  std::string missing;
  auto add = [&](const Need* needs, int count) {
    for (int i = 0; i < count; ++i)
      if (!needs[i].have) missing += (missing.empty() ? "" : " ") + std::string(needs[i].name);
  };
  if (!std::strcmp(isa, "avx2") || !std::strncmp(isa, "avx512", 6) || !std::strcmp(isa, "amx")) add(avx2Needs, 3);
  if (!std::strncmp(isa, "avx512", 6) || !std::strcmp(isa, "amx")) add(avx512Needs, 5);
  // avx512 also runs without AVX512-BF16 (FP32 FMA instead of vdpbf16ps), so BF16 is never "missing" for it,
  // nor VNNI (W4A8 then runs on BF16 or FP32 products).
  if (!std::strcmp(isa, "avx512-bf16") && !avx512bf16) missing += (missing.empty() ? "" : " ") + std::string("AVX512-BF16");
  if (!std::strcmp(isa, "amx")) {
    const Need amxNeeds[] = {{"AVX512-BF16", avx512bf16}, {"AMX-TILE", amxTile}, {"AMX-BF16", amxBf16}};
    add(amxNeeds, 3);
    if (amxTile && amxBf16 && !amxPermission)
      missing += (missing.empty() ? "" : " ") + std::string("the OS permission for AMX tile data (arch_prctl)");
  }
  return missing;
}

const CpuFeatures& cpuFeatures() {
  static const CpuFeatures features = detect();
  return features;
}

}  // namespace w4a8
