// What the CPU and the operating system let us run, from cpuid and xgetbv (an instruction set counts
// only when the OS also saves its registers on context switch, which XCR0 reports). AMX also needs the
// process's permission to use tile data: on Linux, detection asks for it once (arch_prctl
// ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) and counts AMX only if it is granted.
#pragma once
#include <string>

namespace w4a8 {

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;                       // + OS support for YMM state
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512vbmi = false;
  bool avx512bf16 = false;                                             // vdpbf16ps, vcvtne2ps2bf16
  bool avx512vnni = false;                                             // vpdpwssd (W4A8 on int16 products)
  bool amxBf16 = false, amxTile = false;                               // + OS support for tile state
  bool amxPermission = false;  // the OS let this process use tile data (AMX counts only with it)
  // cpuid vendor "AuthenticAMD": tunes where the avx512 backend's W4A8 switches from VNNI to vdpbf16ps (dispatch.cpp)
  bool amd = false;
  bool avx2Backend() const { return avx2 && fma && f16c; }
  bool avx512Backend() const { return avx2Backend() && avx512f && avx512bw && avx512vl && avx512dq && avx512vbmi; }
  // AMX tiles for M >= 16 and the AVX-512 vdpbf16ps path below (kernels/amx/).
  bool amxBackend() const { return avx512Backend() && avx512bf16 && amxTile && amxBf16 && amxPermission; }
  // Names of the features the backend `isa` needs but this CPU lacks, e.g. "AVX512VBMI AVX512DQ".
  std::string missingFor(const char* isa) const;
};

const CpuFeatures& cpuFeatures();  // detected once

}  // namespace w4a8
