// W4A8_ISA rules (kernels/dispatch.h): a name the CPU can run is used, anything else falls back to
// the best available backend with a reason that says what happened.
#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels/cpu_features.h"
#include "kernels/dispatch.h"
#include "tests/check.h"

using namespace w4a8;

namespace {
bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }
}  // namespace

TEST(isa_choice_without_request_is_the_best_available) {
  const KernelChoice best = chooseKernels(nullptr);
  CHECK(best.table != nullptr, "a table");
  CHECK(chooseKernels("").table == best.table, "empty W4A8_ISA means no request");
  // Best means the last runnable public name in kernelNames() order (reference < avx2 < avx512 < amx).
  const KernelTable* expected = kernelsFor("reference");
  for (const char* name : {"avx2", "avx512", "amx"})
    if (const KernelTable* t = kernelsFor(name)) expected = t;
  CHECK(best.table == expected, "best is %s, expected %s", best.table->name, expected->name);
  CHECK(contains(best.reason, "best"), "reason: %s", best.reason.c_str());
}

TEST(isa_request_for_a_runnable_backend_is_honoured) {
  for (const char* const* name = kernelNames(); *name; ++name) {
    const KernelTable* t = kernelsFor(*name);
    if (!t) continue;
    const KernelChoice c = chooseKernels(*name);
    CHECK(c.table == t, "W4A8_ISA=%s chose %s", *name, c.table->name);
    CHECK(contains(c.reason, "forced by W4A8_ISA="), "reason: %s", c.reason.c_str());
  }
}

TEST(isa_request_for_a_missing_backend_falls_back_and_says_so) {
  const KernelTable* best = chooseKernels(nullptr).table;
  const KernelChoice bogus = chooseKernels("sse9");
  CHECK(bogus.table == best && contains(bogus.reason, "not a backend"), "reason: %s", bogus.reason.c_str());
  for (const char* name : {"avx2", "avx512", "amx"})
    if (!kernelsFor(name)) {
      const KernelChoice c = chooseKernels(name);
      CHECK(c.table == best && contains(c.reason, "lacks") && contains(c.reason, "using"), "W4A8_ISA=%s: %s", name,
            c.reason.c_str());
    }
  // The same on a CPU like this one without AMX (or without the OS permission for tile data).
  CpuFeatures noAmx = cpuFeatures();
  noAmx.amxTile = noAmx.amxBf16 = false;
  const KernelChoice amx = chooseKernels("amx", noAmx);
  CHECK(amx.table == chooseKernels(nullptr, noAmx).table && std::strcmp(amx.table->name, "amx"), "amx fell back to %s",
        amx.table->name);
  CHECK(contains(amx.reason, "W4A8_ISA=amx") && contains(amx.reason, "using"), "reason: %s", amx.reason.c_str());
  CpuFeatures noPermission = cpuFeatures();
  noPermission.amxTile = noPermission.amxBf16 = true;
  noPermission.amxPermission = false;
  CHECK(kernelsFor("amx", noPermission) == nullptr, "amx without the tile-data permission");
#if defined(__x86_64__)
  if (noPermission.avx512Backend() && noPermission.avx512bf16)
    CHECK(contains(chooseKernels("amx", noPermission).reason, "permission"), "reason: %s",
          chooseKernels("amx", noPermission).reason.c_str());
#endif
}

TEST(active_kernels_follow_the_environment) {
  const KernelChoice expected = chooseKernels(std::getenv("W4A8_ISA"));
  CHECK(&activeKernels() == expected.table, "active %s, expected %s", backendName(), expected.table->name);
  CHECK(backendReason() == expected.reason, "reason %s vs %s", backendReason(), expected.reason.c_str());
  std::printf("        active backend: %s (%s)\n", backendName(), backendReason());
}

TEST(every_table_is_complete) {
  for (const char* const* name = kernelNames(); *name; ++name) {
    const KernelTable* t = kernelsFor(*name);
    if (!t) continue;
    CHECK(t->name && t->detail && t->gemmW4A8 && t->gemmW8A8 && t->gemmW4A16 && t->gemmF32 &&
              t->quantizeActivationsDynamic && t->quantizeActivationsStatic && t->dequantInt4ToFp8,
          "%s has an empty entry", *name);
  }
}

TEST(isa_choice_on_other_cpus_falls_back_with_a_reason) {
  // The same rules for CPUs this machine is not: AVX2 only, AVX-512 without BF16, nothing.
  CpuFeatures avx2Only;
  avx2Only.avx2 = avx2Only.fma = avx2Only.f16c = true;
  CpuFeatures avx512NoBf16 = avx2Only;
  avx512NoBf16.avx512f = avx512NoBf16.avx512bw = avx512NoBf16.avx512vl = avx512NoBf16.avx512dq = true;
  avx512NoBf16.avx512vbmi = true;
  const CpuFeatures none;
#if defined(__x86_64__)
  const KernelChoice a = chooseKernels("avx512", avx2Only);
  CHECK(a.table == kernelsFor("avx2", avx2Only) && !std::strcmp(a.table->name, "avx2"), "fell back to %s",
        a.table->name);
  CHECK(contains(a.reason, "AVX512F") && contains(a.reason, "using avx2"), "reason: %s", a.reason.c_str());
  CHECK(chooseKernels(nullptr, avx2Only).table == a.table, "best on an AVX2 CPU is avx2");
  const KernelChoice b = chooseKernels(nullptr, avx512NoBf16);
  CHECK(!std::strcmp(b.table->name, "avx512") && b.table->gemmW4A8 == kernelsFor("avx512-fma", avx512NoBf16)->gemmW4A8,
        "AVX-512 without BF16 runs the FMA variant under the name avx512 (%s)", b.table->detail);
  CpuFeatures amxCpu = avx512NoBf16;
  amxCpu.avx512bf16 = amxCpu.amxTile = amxCpu.amxBf16 = amxCpu.amxPermission = true;
  const KernelChoice d = chooseKernels(nullptr, amxCpu);
  CHECK(!std::strcmp(d.table->name, "amx") && contains(d.reason, "AMX") && d.table->pooledMinRows > 1,
        "best with AMX: %s (%s)", d.table->name, d.reason.c_str());
  const KernelChoice e = chooseKernels("avx512", amxCpu);
  CHECK(!std::strcmp(e.table->name, "avx512") && !e.table->gemmW4A8Pooled, "W4A8_ISA=avx512 on an AMX CPU: %s",
        e.table->name);
  const KernelChoice c = chooseKernels("avx2", none);
  CHECK(!std::strcmp(c.table->name, "reference") && contains(c.reason, "AVX2"), "reason: %s", c.reason.c_str());
#endif
  CHECK(kernelsFor("avx2", none) == nullptr && kernelsFor("reference", none) != nullptr, "no AVX2, no avx2 table");
}
