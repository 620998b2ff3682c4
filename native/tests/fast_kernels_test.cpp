// Every fast backend this CPU can run (kernelsFor over kernelNames()) against the scalar reference:
// GEMMs within FP32 summation-order tolerance, |y - y_ref| <= 1e-5 * s_x * s_c * sum_k |x8 * w8|
// (products are exact, only the order of additions differs), BF16 outputs equal to the rounded FP32
// outputs, and activation quantization and INT4 -> FP8 dequantization bit for bit.
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/backends.h"
#include "kernels/cpu_features.h"
#include "kernels/dispatch.h"
#include "kernels/int4_tables.h"
#include "kernels/parallel.h"
#include "quant/fp8_pack.h"
#include "quant/int4_pack.h"
#include "tests/check.h"
#include "tests/int4_layer.h"

using namespace w4a8;
using w4a8test::Int4Layer, w4a8test::formatName, w4a8test::makeInt4Layer;

namespace {

const Fp8Format kFormats[] = {Fp8Format::E4M3FN, Fp8Format::E4M3, Fp8Format::E5M2};

// The fast backends available here (everything kernelsFor knows except the reference itself).
std::vector<const KernelTable*> fastBackends() {
  std::vector<const KernelTable*> tables;
  for (const char* const* name = kernelNames(); *name; ++name)
    if (std::strcmp(*name, "reference"))
      if (const KernelTable* t = kernelsFor(*name)) tables.push_back(t);
  return tables;
}

// Checks got (FP32 [M, N]) against ref within `bound(m, n)`; NaN must match NaN.
template <class Bound>
int checkClose(const std::vector<float>& got, const std::vector<float>& ref, int M, int N, Bound bound,
               const std::string& what) {
  int bad = 0;
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      const float g = got[(size_t)m * N + n], r = ref[(size_t)m * N + n];
      const bool ok = std::isnan(r) ? std::isnan(g) : std::fabs((double)g - r) <= bound(m, n);
      if (!ok && ++bad <= 3)
        CHECK(false, "%s: m=%d n=%d got %.9g ref %.9g bound %.3g", what.c_str(), m, n, g, r, bound(m, n));
    }
  return bad;
}

void checkBf16MatchesF32(const std::vector<uint16_t>& bf16, const std::vector<float>& f32, const std::string& what) {
  int bad = 0;
  for (size_t i = 0; i < f32.size(); ++i) {
    const bool ok = bf16[i] == floatToBf16(f32[i]);
    if (!ok && ++bad <= 3) CHECK(false, "%s: BF16 output %zu is %#x, FP32 output rounds to %#x", what.c_str(), i,
                                 bf16[i], floatToBf16(f32[i]));
  }
}

// sum_k |a[m, k] * b[n, k]| with FP8/BF16 decoded operands, for the tolerance.
template <class A, class B>
double magnitude(A a, B b, int m, int n, int K) {
  double sum = 0;
  for (int k = 0; k < K; ++k) sum += std::fabs((double)a(m, k) * b(n, k));
  return sum;
}

// DESIGN.md §1's tolerance for W4A8 output (m, n) of layer l: 1e-5 s_x s_c sum_k |x8 w8|, with w8 the layer's
// FP8 weights as the reference dequantizes them. Keeps references to l and w8.
auto w4a8Bound(const Int4Layer& l, const std::vector<uint8_t>& w8) {
  const float* xTable = fp8DecodeTable(l.actFormat);
  const float* wTable = fp8DecodeTable(l.weightFormat);
  return [&l, &w8, xTable, wTable](int m, int n) {
    const double mag = magnitude([&](int mm, int k) { return xTable[l.x8[(size_t)mm * l.K + k]]; },
                                 [&](int nn, int k) { return wTable[w8[(size_t)nn * l.K + k]]; }, m, n, l.K);
    return 1e-5 * l.xScales[m] * l.channelScales[n] * mag + 1e-37;
  };
}

// Every fast backend's W4A8 on l, whose group scales or zero points the test set after packing, against the
// reference (messages: the backend's name, then `what`). Returns the FP8 weights the reference dequantizes
// them to.
std::vector<uint8_t> checkEditedW4A8Layer(const Int4Layer& l, const std::string& what) {
  const int M = l.M, N = l.N;
  std::vector<float> ref((size_t)M * N);
  reference::gemmW4A8({l.x8.data(), l.xScales.data(), l.actFormat, M, l.view(), {ref.data(), nullptr, N}}, 0, N);
  std::vector<uint8_t> w8((size_t)N * l.K);
  dequantInt4ToFp8(l.view(), w8.data(), 0, N);
  for (const KernelTable* t : fastBackends()) {
    std::vector<float> y((size_t)M * N);
    t->gemmW4A8({l.x8.data(), l.xScales.data(), l.actFormat, M, l.view(), {y.data(), nullptr, N}}, 0, N);
    checkClose(y, ref, M, N, w4a8Bound(l, w8), std::string(t->name) + " " + what);
  }
  return w8;
}

// The sampled shape grid: every M, N and K multiple appears with every G, format and packing.
const int kMs[] = {1, 2, 3, 5, 16, 17, 64};
const int kNs[] = {1, 7, 16, 33, 50, 8, 19};
const int kGroups[] = {32, 64, 128};

struct Case {
  int M, N, K, G;
  Fp8Format wf, af;
  bool symmetric, pow2;
  uint64_t seed;
  std::string name() const {
    char buf[160];
    std::snprintf(buf, sizeof buf, "M=%d N=%d K=%d G=%d w=%s x=%s %s %s seed=%llu", M, N, K, G, formatName(wf),
                  formatName(af), symmetric ? "sym" : "asym", pow2 ? "pow2" : "float", (unsigned long long)seed);
    return buf;
  }
};

std::vector<Case> int4Cases() {
  std::vector<Case> cases;
  int i = 0;
  for (Fp8Format wf : kFormats)
    for (int G : kGroups)
      for (int packing = 0; packing < 4; ++packing, ++i) {
        Case c;
        c.M = kMs[i % 7];
        c.N = kNs[(i / 2) % 7];
        c.K = G * (1 + i % 3);
        c.G = G;
        c.wf = wf;
        c.af = kFormats[(i / 3) % 3];
        c.symmetric = packing & 1;
        c.pow2 = packing & 2;
        c.seed = 1000 + i;
        cases.push_back(c);
      }
  return cases;
}

void runW4A8Case(const Case& c, const std::vector<const KernelTable*>& backends) {
  const Int4Layer l = makeInt4Layer(c.seed, c.M, c.N, c.K, c.G, c.wf, c.af, c.symmetric, c.pow2);
  const int M = c.M, N = c.N;
  std::vector<float> ref((size_t)M * N);
  reference::gemmW4A8({l.x8.data(), l.xScales.data(), c.af, M, l.view(), {ref.data(), nullptr, N}}, 0, N);
  const auto bound = w4a8Bound(l, l.w8);
  for (const KernelTable* t : backends) {
    std::vector<float> y((size_t)M * N, -1.0f);
    std::vector<uint16_t> y16((size_t)M * N);
    t->gemmW4A8({l.x8.data(), l.xScales.data(), c.af, M, l.view(), {y.data(), nullptr, N}}, 0, N);
    t->gemmW4A8({l.x8.data(), l.xScales.data(), c.af, M, l.view(), {nullptr, y16.data(), N}}, 0, N);
    checkClose(y, ref, M, N, bound, std::string(t->name) + " W4A8 " + c.name());
    checkBf16MatchesF32(y16, y, std::string(t->name) + " W4A8 " + c.name());
  }
}

void runW4A16Case(const Case& c, const std::vector<const KernelTable*>& backends) {
  const Int4Layer l = makeInt4Layer(c.seed + 7, c.M, c.N, c.K, c.G, c.wf, c.af, c.symmetric, c.pow2);
  const int M = c.M, N = c.N, K = c.K, groups = K / c.G;
  std::vector<float> ref((size_t)M * N);
  reference::gemmW4A16({l.x16.data(), M, l.view(), {ref.data(), nullptr, N}}, 0, N);
  auto weight = [&](int n, int k) {
    const int g = k / c.G;
    const float v = int4GroupValue(l.groupScales[(size_t)n * groups + g], l.zeros[(size_t)n * groups + g],
                                   int4Code(l.codes.data() + (size_t)n * K / 2, k));
    return bf16ToFloat(floatToBf16(v));
  };
  auto bound = [&](int m, int n) {
    const double mag = magnitude([&](int mm, int k) { return bf16ToFloat(l.x16[(size_t)mm * K + k]); }, weight, m, n, K);
    return 1e-5 * l.channelScales[n] * mag + 1e-37;
  };
  for (const KernelTable* t : backends) {
    std::vector<float> y((size_t)M * N, -1.0f);
    std::vector<uint16_t> y16((size_t)M * N);
    t->gemmW4A16({l.x16.data(), M, l.view(), {y.data(), nullptr, N}}, 0, N);
    t->gemmW4A16({l.x16.data(), M, l.view(), {nullptr, y16.data(), N}}, 0, N);
    checkClose(y, ref, M, N, bound, std::string(t->name) + " W4A16 " + c.name());
    checkBf16MatchesF32(y16, y, std::string(t->name) + " W4A16 " + c.name());
  }
}

}  // namespace

TEST(fast_backends_are_available_as_cpuid_says) {
  // The reference is always there; a name that is not known gives nullptr.
  CHECK(kernelsFor("reference") != nullptr, "reference table");
  CHECK(kernelsFor("no-such-isa") == nullptr, "unknown name");
  // amx exactly when cpuid, the OS and the tile-data permission allow it (kernels/cpu_features.h).
  CHECK((kernelsFor("amx") != nullptr) == cpuFeatures().amxBackend(), "amx table vs cpuid");
  std::string names;
  for (const KernelTable* t : fastBackends()) names += std::string(" ") + t->name;
  std::printf("        fast backends here:%s\n", names.empty() ? " (none)" : names.c_str());
}

TEST(w4a8_gemm_matches_reference_on_every_backend) {
  const auto backends = fastBackends();
  for (const Case& c : int4Cases()) runW4A8Case(c, backends);
}

TEST(w4a16_gemm_matches_reference_on_every_backend) {
  const auto backends = fastBackends();
  for (const Case& c : int4Cases()) runW4A16Case(c, backends);
}

TEST(w8a8_gemm_matches_reference_on_every_backend) {
  const auto backends = fastBackends();
  const int Ks[] = {32, 96, 200, 37, 128, 384, 64};
  int i = 0;
  for (Fp8Format wf : kFormats)
    for (Fp8Format af : kFormats)
      for (int rep = 0; rep < 2; ++rep, ++i) {
        const int M = kMs[i % 7], N = kNs[(i / 2) % 7], K = Ks[i % 7];
        w4a8test::Rng rng(2000 + i);
        std::vector<float> w((size_t)N * K), x((size_t)M * K);
        for (float& v : w) v = rng.uniform(-1.0f, 1.0f) * std::ldexp(1.0f, rng.below(10) - 5);
        for (float& v : x) v = rng.uniform(-1.0f, 1.0f) * std::ldexp(1.0f, rng.below(10) - 5);
        std::vector<uint8_t> codes((size_t)N * K), x8((size_t)M * K);
        std::vector<float> channelScales(N), xScales(M);
        packFp8Rows(w.data(), N, K, wf, codes.data(), channelScales.data(), 0, N);
        quantizeActivationsDynamic(x.data(), M, K, af, x8.data(), xScales.data());
        const Fp8WeightsView view{codes.data(), channelScales.data(), N, K, wf};
        std::vector<float> ref((size_t)M * N);
        reference::gemmW8A8({x8.data(), xScales.data(), af, M, view, {ref.data(), nullptr, N}}, 0, N);
        const float* xTable = fp8DecodeTable(af);
        const float* wTable = fp8DecodeTable(wf);
        auto bound = [&](int m, int n) {
          const double mag = magnitude([&](int mm, int k) { return xTable[x8[(size_t)mm * K + k]]; },
                                       [&](int nn, int k) { return wTable[codes[(size_t)nn * K + k]]; }, m, n, K);
          return 1e-5 * xScales[m] * channelScales[n] * mag + 1e-37;
        };
        char name[96];
        std::snprintf(name, sizeof name, "W8A8 M=%d N=%d K=%d w=%s x=%s seed=%d", M, N, K, formatName(wf),
                      formatName(af), 2000 + i);
        for (const KernelTable* t : backends) {
          std::vector<float> y((size_t)M * N, -1.0f);
          std::vector<uint16_t> y16((size_t)M * N);
          t->gemmW8A8({x8.data(), xScales.data(), af, M, view, {y.data(), nullptr, N}}, 0, N);
          t->gemmW8A8({x8.data(), xScales.data(), af, M, view, {nullptr, y16.data(), N}}, 0, N);
          checkClose(y, ref, M, N, bound, std::string(t->name) + " " + name);
          checkBf16MatchesF32(y16, y, std::string(t->name) + " " + name);
        }
      }
}

TEST(f32_gemm_matches_reference_on_every_backend) {
  const auto backends = fastBackends();
  const int Ks[] = {1, 15, 16, 17, 96, 200, 384};
  for (int i = 0; i < 14; ++i) {
    const int M = kMs[i % 7], N = kNs[(i / 2) % 7], K = Ks[(i + 3) % 7];
    w4a8test::Rng rng(3000 + i);
    std::vector<float> w((size_t)N * K), x((size_t)M * K);
    for (float& v : w) v = rng.uniform(-1.0f, 1.0f);
    for (float& v : x) v = rng.uniform(-4.0f, 4.0f);
    std::vector<float> ref((size_t)M * N);
    reference::gemmF32({x.data(), w.data(), M, N, K, {ref.data(), nullptr, N}}, 0, N);
    // FP32 products round (in the reference; FMA does not), so the bound is on the exact products.
    auto bound = [&](int m, int n) {
      return 1e-5 * magnitude([&](int mm, int k) { return x[(size_t)mm * K + k]; },
                              [&](int nn, int k) { return w[(size_t)nn * K + k]; }, m, n, K) + 1e-37;
    };
    char name[64];
    std::snprintf(name, sizeof name, "F32 M=%d N=%d K=%d seed=%d", M, N, K, 3000 + i);
    for (const KernelTable* t : backends) {
      std::vector<float> y((size_t)M * N, -1.0f);
      std::vector<uint16_t> y16((size_t)M * N);
      t->gemmF32({x.data(), w.data(), M, N, K, {y.data(), nullptr, N}}, 0, N);
      t->gemmF32({x.data(), w.data(), M, N, K, {nullptr, y16.data(), N}}, 0, N);
      checkClose(y, ref, M, N, bound, std::string(t->name) + " " + name);
      checkBf16MatchesF32(y16, y, std::string(t->name) + " " + name);
    }
  }
}

TEST(gemm_outputs_honour_ldy_and_leave_other_columns_alone) {
  // Y written into a wider matrix (ldy > N) and over a sub-range of N: nothing else may change.
  const Int4Layer l = makeInt4Layer(77, 3, 21, 256, 64, Fp8Format::E4M3FN, Fp8Format::E4M3FN, false, false);
  const int ldy = 40, nBegin = 5, nEnd = 18;
  std::vector<float> ref((size_t)3 * ldy, 123.0f);
  reference::gemmW4A8({l.x8.data(), l.xScales.data(), l.actFormat, 3, l.view(), {ref.data(), nullptr, ldy}}, nBegin,
                      nEnd);
  for (const KernelTable* t : fastBackends()) {
    std::vector<float> y((size_t)3 * ldy, 123.0f);
    t->gemmW4A8({l.x8.data(), l.xScales.data(), l.actFormat, 3, l.view(), {y.data(), nullptr, ldy}}, nBegin, nEnd);
    for (int m = 0; m < 3; ++m)
      for (int n = 0; n < ldy; ++n) {
        const float g = y[(size_t)m * ldy + n], r = ref[(size_t)m * ldy + n];
        if (n < nBegin || n >= nEnd) CHECK(g == 123.0f, "%s wrote outside [nBegin, nEnd): m=%d n=%d", t->name, m, n);
        else CHECK(std::fabs(g - r) <= 1e-4f * std::fabs(r) + 1e-6f, "%s m=%d n=%d %g vs %g", t->name, m, n, g, r);
      }
  }
}

TEST(w4a8_group_tables_match_reference_on_extreme_scales) {
  // Group scales that push s_g * (q - z) into FP8 subnormals, to saturation, to zero, and to NaN/inf,
  // and dyadic scales whose products sit exactly on FP8 rounding midpoints (ties to even). Rows 0..3
  // and 4..7 stay in the range of the short table path (saturation and ties included); rows 8..11
  // mix everything and take the full encoder.
  const int N = 12, K = 256, G = 32, groups = K / G;
  for (int M : {2, 9})  // fused and scratch-tile paths
  for (Fp8Format wf : kFormats) {
    Int4Layer l = makeInt4Layer(55, M, N, K, G, wf, Fp8Format::E4M3FN, false, false);
    w4a8test::Rng rng(56);
    const float dyadic[] = {1.0625f, 1.5625f, 1.1875f, 1.03125f, 1.09375f, 1.75f, 1.3125f, 1.0f};
    for (int n = 0; n < N; ++n)
      for (int g = 0; g < groups; ++g) {
        float& s = l.groupScales[(size_t)n * groups + g];
        const int kind = (n / 4) % 3;  // whole 4-row tiles of one kind
        if (kind == 0) {  // short path: saturating and large values
          s = std::ldexp(rng.uniform(1.0f, 2.0f), rng.below(20) - 2);
        } else if (kind == 1) {  // short path: ties
          s = std::ldexp(dyadic[rng.below(8)], rng.below(6) - 2) * (rng.below(2) ? 1.0f : -1.0f);
        } else {
          switch ((n + g) % 9) {
            case 0: s = std::ldexp(rng.uniform(1.0f, 2.0f), -12 - rng.below(8)); break;  // FP8 subnormals
            case 1: s = std::ldexp(rng.uniform(1.0f, 2.0f), 4 + rng.below(12)); break;    // saturates
            case 2: s = 0.0f; break;
            case 3: s = std::ldexp(1.0f, -9); break;                                        // exact subnormals
            case 4: s = -rng.uniform(0.01f, 1.0f); break;                                   // negative scale
            case 5: s = (n == 9 && g == 5) ? NAN : rng.uniform(0.01f, 1.0f); break;
            case 6: s = (n == 11 && g == 2) ? INFINITY : rng.uniform(0.01f, 1.0f); break;
            case 7: s = 0x1p110f; break;                                                    // beyond the short path
            default: s = rng.uniform(0.001f, 1.0f); break;
          }
        }
        l.zeros[(size_t)n * groups + g] = (uint8_t)rng.below(16);
      }
    const std::vector<uint8_t> w8 = checkEditedW4A8Layer(l, std::string("extreme scales ") + formatName(wf));
    for (const KernelTable* t : fastBackends()) {
      std::vector<uint8_t> fast((size_t)N * K);
      t->dequantInt4ToFp8(l.view(), fast.data(), 0, N);
      CHECK(fast == w8, "%s dequantInt4ToFp8 differs on extreme scales (%s)", t->name, formatName(wf));
    }
  }
}

TEST(w4a8_group_tables_match_reference_at_the_saturation_edge) {
  // Group scales whose largest product |s| max|q - z| lands on, just below and just above the largest
  // finite FP8 value, and on the midpoints past it: a row takes the table path without the clamp only when
  // no product of any of its groups exceeds that value (the kernels decide it per row from s and z).
  // M = 1 and 3 (the avx512 VNNI path below 8 tokens; on AMD, M = 3 is past its switch), every group size.
  const int N = 8, K = 256;
  for (int G : {32, 64, 128})
  for (int M : {1, 3})
  for (Fp8Format wf : kFormats) {
    const float* wTable = fp8DecodeTable(wf);
    float maxFinite = 0.0f;
    for (int c = 0; c < 256; ++c)
      if (std::isfinite(wTable[c])) maxFinite = std::max(maxFinite, wTable[c]);
    Int4Layer l = makeInt4Layer(57 + G, M, N, K, G, wf, Fp8Format::E4M3FN, false, false);
    w4a8test::Rng rng(58);
    const int groups = K / G;
    const float factors[] = {1.0f, 1.0f - 0x1p-24f, 1.0f + 0x1p-23f, 1.0f + 0x1p-5f, 1.0f + 0x1p-4f, 0.97f, 1.2f};
    for (int n = 0; n < N; ++n)
      for (int g = 0; g < groups; ++g) {
        const int z = n % 2 ? 8 : rng.below(16), largest = std::max(z, 15 - z);
        l.zeros[(size_t)n * groups + g] = (uint8_t)z;
        // Rows 0..5: every group at or below the edge in half of them; rows 6, 7: one group past it.
        const float f = n < 6 ? factors[rng.below(2)] : (g == 1 ? factors[2 + n % 5] : 0.5f);
        const float s = maxFinite / (float)largest * f;
        l.groupScales[(size_t)n * groups + g] = rng.below(2) ? s : -s;
      }
    for (int n = 2; n < 6; ++n) l.groupScales[(size_t)n * groups + (n % groups)] = maxFinite / 15 * factors[2 + n % 5];  // n = 5 wraps to the first factor past the edge
    checkEditedW4A8Layer(l, "saturation edge G=" + std::to_string(G) + " " + formatName(wf));
  }
}

TEST(w4a16_handles_bf16_subnormal_activations_and_scales) {
  // vdpbf16ps flushes BF16 subnormals to zero; the avx512 backend must notice them and compute exactly.
  // Row 0 of X is all subnormal (its outputs are sums of subnormal products only, which a flush would
  // zero), row 1 mixed; weight row 2 has a group scale of 2^-130 (BF16-subnormal weights).
  const int M = 3, N = 9, K = 128, G = 32, groups = K / G;
  Int4Layer l = makeInt4Layer(91, M, N, K, G, Fp8Format::E4M3FN, Fp8Format::E4M3FN, false, false);
  for (int k = 0; k < K; ++k) l.x16[k] = (uint16_t)((1 + k % 127) | (k & 8 ? 0x8000 : 0));
  for (int k = 0; k < K; k += 3) l.x16[(size_t)K + k] = (uint16_t)(0x0040 + k);
  l.groupScales[(size_t)2 * groups + 1] = 0x1p-130f;
  std::vector<float> ref((size_t)M * N);
  reference::gemmW4A16({l.x16.data(), M, l.view(), {ref.data(), nullptr, N}}, 0, N);
  auto weight = [&](int n, int k) {
    const int g = k / G;
    return bf16ToFloat(floatToBf16(int4GroupValue(l.groupScales[(size_t)n * groups + g], l.zeros[(size_t)n * groups + g],
                                                  int4Code(l.codes.data() + (size_t)n * K / 2, k))));
  };
  auto bound = [&](int m, int n) {
    const double mag = magnitude([&](int mm, int k) { return bf16ToFloat(l.x16[(size_t)mm * K + k]); }, weight, m, n, K);
    // Products in the FP32 subnormal range round in the reference (not in an FMA): K * 2^-149 at most.
    return l.channelScales[n] * (1e-5 * mag + K * 0x1p-149);
  };
  for (const KernelTable* t : fastBackends()) {
    std::vector<float> y((size_t)M * N);
    t->gemmW4A16({l.x16.data(), M, l.view(), {y.data(), nullptr, N}}, 0, N);
    checkClose(y, ref, M, N, bound, std::string(t->name) + " W4A16 with subnormals");
    for (int n = 0; n < N; ++n) CHECK(y[n] != 0.0f || ref[n] == 0.0f, "%s: subnormal row flushed, n=%d", t->name, n);
  }
}

TEST(quantize_activations_is_bit_exact_on_every_backend) {
  w4a8test::Rng rng(4000);
  const int M = 7, K = 203;  // K not a multiple of any vector width
  std::vector<float> x((size_t)M * K);
  for (size_t i = 0; i < x.size(); ++i) {
    switch (rng.below(12)) {
      case 0: x[i] = 0.0f; break;
      case 1: x[i] = -0.0f; break;
      case 2: x[i] = std::ldexp(rng.uniform(-1.0f, 1.0f), -140); break;  // FP32 subnormal
      case 3: x[i] = std::ldexp(rng.uniform(-1.0f, 1.0f), rng.below(40) - 20); break;
      default: x[i] = rng.uniform(-5.0f, 5.0f) * std::ldexp(1.0f, rng.below(16) - 8); break;
    }
  }
  x[5] = NAN;                 // row 0: a NaN must not change amax
  x[K + 3] = INFINITY;        // row 1: inf amax
  for (int k = 0; k < K; ++k) x[(size_t)2 * K + k] = 0.0f;  // row 2: all zero -> scale 1
  x[(size_t)3 * K + 9] = -INFINITY;
  // Row 4: FP8 midpoints times the scale the row will get (ties to even must agree).
  for (int k = 0; k < K; ++k) x[(size_t)4 * K + k] = (float)(k % 64) * 0.0625f + 0.03125f;
  for (Fp8Format f : kFormats) {
    std::vector<uint8_t> ref((size_t)M * K), got((size_t)M * K);
    std::vector<float> refScales(M), gotScales(M);
    quantizeActivationsDynamic(x.data(), M, K, f, ref.data(), refScales.data());
    for (const KernelTable* t : fastBackends()) {
      std::fill(got.begin(), got.end(), 0xAA);
      t->quantizeActivationsDynamic(x.data(), M, K, f, got.data(), gotScales.data());
      CHECK(got == ref, "%s dynamic codes differ (%s)", t->name, formatName(f));
      for (int m = 0; m < M; ++m)
        CHECK(floatBits(gotScales[m]) == floatBits(refScales[m]), "%s dynamic scale of row %d (%s): %g vs %g",
              t->name, m, formatName(f), gotScales[m], refScales[m]);
      for (float scale : {1.0f, 0.001f, 1e-30f, 3.7e5f, 0.0f}) {  // saturating, subnormal, division by zero
        std::vector<uint8_t> refStatic((size_t)M * K), gotStatic((size_t)M * K);
        std::vector<float> refStaticScales(M), gotStaticScales(M);
        quantizeActivationsStatic(x.data(), M, K, scale, f, refStatic.data(), refStaticScales.data());
        t->quantizeActivationsStatic(x.data(), M, K, scale, f, gotStatic.data(), gotStaticScales.data());
        CHECK(gotStatic == refStatic, "%s static codes differ (%s, scale %g)", t->name, formatName(f), scale);
        CHECK(gotStaticScales == refStaticScales, "%s static scales (%s)", t->name, formatName(f));
      }
    }
  }
  // Every FP32 bit pattern class through the encoder: a sweep of exponents and mantissas.
  std::vector<float> sweep;
  for (uint32_t e = 0; e < 256; ++e)
    for (uint32_t m : {0u, 1u, 0x7FFFFu, 0x80000u, 0x80001u, 0xFFFFFu, 0x100000u, 0x180000u, 0x280000u, 0x7FFFFFu})
      for (uint32_t s : {0u, 0x80000000u}) sweep.push_back(bitsFloat(s | (e << 23) | m));
  for (Fp8Format f : kFormats) {
    std::vector<uint8_t> ref(sweep.size()), got(sweep.size());
    std::vector<float> scales(1);
    quantizeActivationsStatic(sweep.data(), 1, (int)sweep.size(), 1.0f, f, ref.data(), scales.data());
    for (const KernelTable* t : fastBackends()) {
      t->quantizeActivationsStatic(sweep.data(), 1, (int)sweep.size(), 1.0f, f, got.data(), scales.data());
      for (size_t i = 0; i < sweep.size(); ++i)
        CHECK(got[i] == ref[i], "%s encode %s of %#x: %#x vs %#x", t->name, formatName(f), floatBits(sweep[i]), got[i],
              ref[i]);
    }
  }
}

TEST(dequant_int4_to_fp8_is_bit_exact_on_every_backend) {
  for (const Case& c : int4Cases()) {
    const Int4Layer l = makeInt4Layer(c.seed + 11, 1, c.N, c.K, c.G, c.wf, c.af, c.symmetric, c.pow2);
    for (const KernelTable* t : fastBackends()) {
      std::vector<uint8_t> got((size_t)c.N * c.K, 0xAA);
      t->dequantInt4ToFp8(l.view(), got.data(), 0, c.N);
      CHECK(got == l.w8, "%s %s", t->name, c.name().c_str());
    }
  }
}

TEST(parallel_and_split_results_equal_single_threaded_bit_for_bit) {
  ThreadPool pool(3);
  const Int4Layer l = makeInt4Layer(5000, 17, 203, 384, 128, Fp8Format::E4M3FN, Fp8Format::E5M2, false, false);
  const int M = l.M, N = l.N, K = l.K;
  std::vector<uint8_t> w8((size_t)N * K);
  dequantInt4ToFp8(l.view(), w8.data(), 0, N);
  const Fp8WeightsView fp8View{w8.data(), l.channelScales.data(), N, K, l.weightFormat};
  std::vector<float> wf32((size_t)N * K);
  for (size_t i = 0; i < wf32.size(); ++i) wf32[i] = fp8DecodeTable(l.weightFormat)[w8[i]];
  std::vector<const KernelTable*> all = fastBackends();
  all.push_back(kernelsFor("reference"));
  for (const KernelTable* t : all) {
    for (int kind = 0; kind < 4; ++kind) {
      std::vector<float> single((size_t)M * N), threaded((size_t)M * N, -1.0f), split((size_t)M * N, -1.0f);
      auto run = [&](float* y, int nBegin, int nEnd, bool parallel) {
        const GemmOutput out{y, nullptr, N};
        const W4A8GemmArgs a8{l.x8.data(), l.xScales.data(), l.actFormat, M, l.view(), out};
        const W8A8GemmArgs a88{l.x8.data(), l.xScales.data(), l.actFormat, M, fp8View, out};
        const W4A16GemmArgs a16{l.x16.data(), M, l.view(), out};
        const F32GemmArgs a32{l.x.data(), wf32.data(), M, N, K, out};
        if (parallel) {
          if (kind == 0) gemmW4A8Parallel(*t, pool, a8);
          if (kind == 1) gemmW8A8Parallel(*t, pool, a88);
          if (kind == 2) gemmW4A16Parallel(*t, pool, a16);
          if (kind == 3) gemmF32Parallel(*t, pool, a32);
          return;
        }
        if (kind == 0) t->gemmW4A8(a8, nBegin, nEnd);
        if (kind == 1) t->gemmW8A8(a88, nBegin, nEnd);
        if (kind == 2) t->gemmW4A16(a16, nBegin, nEnd);
        if (kind == 3) t->gemmF32(a32, nBegin, nEnd);
      };
      run(single.data(), 0, N, false);
      run(threaded.data(), 0, N, true);
      // Ranges that cut through every row tile (1, 2, 4, 16) must not change a single bit either.
      const int cuts[] = {0, 1, 6, 13, 30, 31, 101, 150, N};
      for (int i = 0; i + 1 < (int)(sizeof cuts / sizeof cuts[0]); ++i) run(split.data(), cuts[i], cuts[i + 1], false);
      CHECK(std::memcmp(single.data(), threaded.data(), single.size() * 4) == 0, "%s kind %d: pool result differs",
            t->name, kind);
      CHECK(std::memcmp(single.data(), split.data(), single.size() * 4) == 0, "%s kind %d: split result differs",
            t->name, kind);
    }
  }
}

TEST(outputs_do_not_depend_on_batch_size) {
  // Row m of an M-row call equals the same row computed in another batch: tiles and paths (fused at small M,
  // scratch tiles at large M) add in the same order. A backend with a separate large-M path (amx: tiles from
  // pooledMinRows tokens on, avx512 below) is batch-invariant on each side of that threshold, not across it:
  // there the other batch is the pooledMinRows rows that start at row m (wrapping around), else row m alone.
  const Int4Layer l = makeInt4Layer(6000, 17, 37, 256, 64, Fp8Format::E4M3, Fp8Format::E4M3FN, true, false);
  const int M = l.M, N = l.N, K = l.K;
  std::vector<const KernelTable*> all = fastBackends();
  all.push_back(kernelsFor("reference"));
  for (const KernelTable* t : all) {
    const int rows = t->gemmW4A8Pooled && M >= t->pooledMinRows ? t->pooledMinRows : 1;
    std::vector<float> batch((size_t)M * N), other((size_t)rows * N), batch16((size_t)M * N), other16((size_t)rows * N);
    t->gemmW4A8({l.x8.data(), l.xScales.data(), l.actFormat, M, l.view(), {batch.data(), nullptr, N}}, 0, N);
    t->gemmW4A16({l.x16.data(), M, l.view(), {batch16.data(), nullptr, N}}, 0, N);
    for (int m = 0; m < M; m += 4) {
      std::vector<uint8_t> x8((size_t)rows * K);
      std::vector<uint16_t> x16((size_t)rows * K);
      std::vector<float> xScales(rows);
      for (int r = 0; r < rows; ++r) {
        const int from = (m + r) % M;
        std::memcpy(x8.data() + (size_t)r * K, l.x8.data() + (size_t)from * K, K);
        std::memcpy(x16.data() + (size_t)r * K, l.x16.data() + (size_t)from * K, K * 2);
        xScales[r] = l.xScales[from];
      }
      t->gemmW4A8({x8.data(), xScales.data(), l.actFormat, rows, l.view(), {other.data(), nullptr, N}}, 0, N);
      t->gemmW4A16({x16.data(), rows, l.view(), {other16.data(), nullptr, N}}, 0, N);
      CHECK(std::memcmp(other.data(), batch.data() + (size_t)m * N, N * 4) == 0, "%s W4A8 row %d", t->name, m);
      CHECK(std::memcmp(other16.data(), batch16.data() + (size_t)m * N, N * 4) == 0, "%s W4A16 row %d", t->name, m);
    }
  }
}

TEST(long_k_runs_in_panels_with_the_results_of_one_pass) {
  // K past two panels of the avx512 scratch path (2048 k each; the grid above stays below one), at M = 6 and 7 (that
  // path, 5+ tokens; tiles on avx2): a partial last panel (K = 4480: 35 blocks of 128), INT4 tail blocks (4416 = 34.5
  // blocks, 4448 = 34.75) and an FP8 one (W8A8, K = 4433: 69 blocks of 64 and 17), against the reference; and row m
  // bit for bit equal to the same row in a batch small enough for the fused path (the accumulators are carried
  // between panels exactly). The batch sizes follow outputs_do_not_depend_on_batch_size.
  const auto backends = fastBackends();
  runW4A8Case({7, 5, 4480, 128, Fp8Format::E4M3FN, Fp8Format::E4M3FN, false, false, 9100}, backends);
  runW4A8Case({6, 3, 4416, 32, Fp8Format::E5M2, Fp8Format::E4M3FN, true, false, 9101}, backends);
  runW4A16Case({7, 5, 4416, 64, Fp8Format::E4M3FN, Fp8Format::E4M3FN, false, true, 9102}, backends);
  const Int4Layer l = makeInt4Layer(9103, 7, 5, 4448, 32, Fp8Format::E4M3FN, Fp8Format::E4M3, false, false);
  const int M = l.M, N = l.N, K = l.K, K8 = 4433;  // W8A8 on the first K8 columns of the layer's FP8 weights
  std::vector<uint8_t> w8((size_t)N * K8), x8((size_t)M * K8);
  for (int n = 0; n < N; ++n) std::memcpy(w8.data() + (size_t)n * K8, l.w8.data() + (size_t)n * K, K8);
  for (int m = 0; m < M; ++m) std::memcpy(x8.data() + (size_t)m * K8, l.x8.data() + (size_t)m * K, K8);
  const Fp8WeightsView fp8View{w8.data(), l.channelScales.data(), N, K8, l.weightFormat};
  std::vector<float> ref((size_t)M * N);
  reference::gemmW8A8({x8.data(), l.xScales.data(), l.actFormat, M, fp8View, {ref.data(), nullptr, N}}, 0, N);
  const float* xTable = fp8DecodeTable(l.actFormat);
  const float* wTable = fp8DecodeTable(l.weightFormat);
  auto bound = [&](int m, int n) {
    const double mag = magnitude([&](int mm, int k) { return xTable[x8[(size_t)mm * K8 + k]]; },
                                 [&](int nn, int k) { return wTable[w8[(size_t)nn * K8 + k]]; }, m, n, K8);
    return 1e-5 * l.xScales[m] * l.channelScales[n] * mag + 1e-37;
  };
  for (const KernelTable* t : backends) {
    std::vector<float> y8((size_t)M * N), y88((size_t)M * N), y16((size_t)M * N);
    t->gemmW4A8({l.x8.data(), l.xScales.data(), l.actFormat, M, l.view(), {y8.data(), nullptr, N}}, 0, N);
    t->gemmW8A8({x8.data(), l.xScales.data(), l.actFormat, M, fp8View, {y88.data(), nullptr, N}}, 0, N);
    t->gemmW4A16({l.x16.data(), M, l.view(), {y16.data(), nullptr, N}}, 0, N);
    checkClose(y88, ref, M, N, bound, std::string(t->name) + " W8A8 K=4433");
    const int rows = t->gemmW4A8Pooled && M >= t->pooledMinRows ? t->pooledMinRows : 1;
    for (int m : {0, 3, 6}) {
      std::vector<uint8_t> r8((size_t)rows * K), r88((size_t)rows * K8);
      std::vector<uint16_t> r16((size_t)rows * K);
      std::vector<float> xScales(rows), o8((size_t)rows * N), o88((size_t)rows * N), o16((size_t)rows * N);
      for (int r = 0; r < rows; ++r) {
        const int from = (m + r) % M;
        std::memcpy(r8.data() + (size_t)r * K, l.x8.data() + (size_t)from * K, K);
        std::memcpy(r88.data() + (size_t)r * K8, x8.data() + (size_t)from * K8, K8);
        std::memcpy(r16.data() + (size_t)r * K, l.x16.data() + (size_t)from * K, K * 2);
        xScales[r] = l.xScales[from];
      }
      t->gemmW4A8({r8.data(), xScales.data(), l.actFormat, rows, l.view(), {o8.data(), nullptr, N}}, 0, N);
      t->gemmW8A8({r88.data(), xScales.data(), l.actFormat, rows, fp8View, {o88.data(), nullptr, N}}, 0, N);
      t->gemmW4A16({r16.data(), rows, l.view(), {o16.data(), nullptr, N}}, 0, N);
      CHECK(std::memcmp(o8.data(), y8.data() + (size_t)m * N, N * 4) == 0, "%s W4A8 row %d", t->name, m);
      CHECK(std::memcmp(o88.data(), y88.data() + (size_t)m * N, N * 4) == 0, "%s W8A8 row %d", t->name, m);
      CHECK(std::memcmp(o16.data(), y16.data() + (size_t)m * N, N * 4) == 0, "%s W4A16 row %d", t->name, m);
    }
  }
}

TEST(a_call_with_k_0_writes_zeros_on_every_path) {
  // No k at all: every output is an empty sum, whatever the path (fused below 5 tokens, scratch tiles from 5).
  for (const KernelTable* t : fastBackends())
    for (int M : {1, 4, 5, 9}) {
      const int N = 3;
      const float xScales[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1}, channelScales[3] = {1, 1, 1};
      const Fp8WeightsView view{nullptr, channelScales, N, 0, Fp8Format::E4M3FN};
      std::vector<float> y((size_t)M * N, 123.0f);
      t->gemmW8A8({nullptr, xScales, Fp8Format::E4M3FN, M, view, {y.data(), nullptr, N}}, 0, N);
      for (float v : y) CHECK(v == 0.0f, "%s W8A8 K=0 M=%d: %g", t->name, M, v);
    }
}

TEST(nan_activations_give_nan_outputs_like_the_reference) {
  Int4Layer l = makeInt4Layer(7000, 2, 5, 128, 32, Fp8Format::E4M3FN, Fp8Format::E4M3FN, false, false);
  l.x8[17] = 0x7F;  // NaN in row 0 only
  std::vector<float> ref(10);
  reference::gemmW4A8({l.x8.data(), l.xScales.data(), l.actFormat, 2, l.view(), {ref.data(), nullptr, 5}}, 0, 5);
  for (const KernelTable* t : fastBackends()) {
    std::vector<float> y(10);
    t->gemmW4A8({l.x8.data(), l.xScales.data(), l.actFormat, 2, l.view(), {y.data(), nullptr, 5}}, 0, 5);
    for (int i = 0; i < 10; ++i)
      CHECK(std::isnan(y[i]) == std::isnan(ref[i]), "%s output %d: %g vs %g", t->name, i, y[i], ref[i]);
  }
}

TEST(long_prompts_run_in_row_passes_with_the_same_results) {
  // M above the backends' rows-per-pass (256): later passes must read and write the right rows.
  const int M = 300, N = 9, K = 192, G = 64;
  const Int4Layer l = makeInt4Layer(8000, M, N, K, G, Fp8Format::E4M3FN, Fp8Format::E4M3FN, false, true);
  std::vector<uint8_t> w8((size_t)N * K);
  dequantInt4ToFp8(l.view(), w8.data(), 0, N);
  const Fp8WeightsView fp8View{w8.data(), l.channelScales.data(), N, K, l.weightFormat};
  std::vector<float> ref((size_t)M * N), ref88((size_t)M * N), ref16((size_t)M * N);
  reference::gemmW4A8({l.x8.data(), l.xScales.data(), l.actFormat, M, l.view(), {ref.data(), nullptr, N}}, 0, N);
  reference::gemmW8A8({l.x8.data(), l.xScales.data(), l.actFormat, M, fp8View, {ref88.data(), nullptr, N}}, 0, N);
  reference::gemmW4A16({l.x16.data(), M, l.view(), {ref16.data(), nullptr, N}}, 0, N);
  for (const KernelTable* t : fastBackends()) {
    std::vector<float> y((size_t)M * N), y88((size_t)M * N), y16((size_t)M * N), one(N);
    t->gemmW4A8({l.x8.data(), l.xScales.data(), l.actFormat, M, l.view(), {y.data(), nullptr, N}}, 0, N);
    t->gemmW8A8({l.x8.data(), l.xScales.data(), l.actFormat, M, fp8View, {y88.data(), nullptr, N}}, 0, N);
    t->gemmW4A16({l.x16.data(), M, l.view(), {y16.data(), nullptr, N}}, 0, N);
    for (size_t i = 0; i < y.size(); ++i) {
      CHECK(std::fabs(y[i] - ref[i]) <= 1e-4f * std::fabs(ref[i]) + 1e-4f, "%s W4A8 %zu: %g vs %g", t->name, i, y[i], ref[i]);
      CHECK(std::fabs(y88[i] - ref88[i]) <= 1e-4f * std::fabs(ref88[i]) + 1e-4f, "%s W8A8 %zu", t->name, i);
      CHECK(std::fabs(y16[i] - ref16[i]) <= 1e-4f * std::fabs(ref16[i]) + 1e-4f, "%s W4A16 %zu", t->name, i);
    }
    for (int m : {0, 255, 256, 299}) {
      t->gemmW4A8({l.x8.data() + (size_t)m * K, l.xScales.data() + m, l.actFormat, 1, l.view(), {one.data(), nullptr, N}},
                  0, N);
      CHECK(std::memcmp(one.data(), y.data() + (size_t)m * N, N * 4) == 0, "%s row %d differs from its pass", t->name, m);
    }
  }
}

TEST(w4a8_tiny_group_scales_round_to_fp8_subnormals_like_the_reference) {
  // Rows whose group scales are all small (s_g * (q - z) in the FP8 subnormal range, ties included: dyadic
  // scales put products on subnormal midpoints) but finite: the fast table paths must round them exactly
  // like fp8Encode. Every weight of such a row is a few FP8 quanta, so one wrong rounding is far outside
  // the tolerance. M = 1 takes the fused one-token paths (tables built inside the block loop for G >= 64),
  // 2 and 9 the avx512 fused and scratch paths, 17 the amx tiles.
  const int N = 8, K = 256;
  for (int G : {64, 128})
  for (int M : {1, 2, 9, 17})
    for (Fp8Format wf : kFormats) {
      const int groups = K / G;
      Int4Layer l = makeInt4Layer(57, M, N, K, G, wf, Fp8Format::E4M3FN, false, false);
      w4a8test::Rng rng(58);
      const int minExp = wf == Fp8Format::E5M2 ? -14 : -6;  // exponent of the smallest normal
      for (int n = 0; n < N; ++n)
        for (int g = 0; g < groups; ++g) {
          const float mantissa = n % 2 ? 1.0f + rng.below(8) / 8.0f : rng.uniform(1.0f, 2.0f);
          l.groupScales[(size_t)n * groups + g] = std::ldexp(mantissa, minExp - 5 - rng.below(6)) * (g % 3 ? 1.0f : -1.0f);
          l.zeros[(size_t)n * groups + g] = (uint8_t)rng.below(16);
        }
      checkEditedW4A8Layer(l, "tiny scales M=" + std::to_string(M) + " G=" + std::to_string(G) + " " + formatName(wf));
    }
}

namespace {

// A layer whose activations are random finite FP8 codes of every magnitude (subnormals included), so that
// groups span the whole exponent range: the VNNI W4A8 path then needs 2 (E4M3) or 3 (E5M2) activation planes.
Int4Layer makeWideCodeLayer(uint64_t seed, int M, int N, int K, int G, Fp8Format wf, Fp8Format af) {
  Int4Layer l = makeInt4Layer(seed, M, N, K, G, wf, af, seed % 2, seed % 3 == 0);
  w4a8test::Rng rng(seed + 99);
  const float* table = fp8DecodeTable(af);
  for (size_t i = 0; i < l.x8.size(); ++i) {
    if (i % 7 == 3) continue;  // keep some quantized values
    uint8_t c;
    do c = (uint8_t)rng.below(256);
    while (!std::isfinite(table[c]));
    l.x8[i] = c;
  }
  return l;
}

}  // namespace

// ---- the avx2 W4A8 kernel: exact integer products (kernels/avx2/w4a8_int16.cpp) -------------------------

namespace {

// Activation codes over every finite magnitude of the format, so that groups span the whole exponent range
// and need the second and third int16 planes (e5m2), with random signs and row scales.
void fillWideActivations(Int4Layer& l, uint64_t seed) {
  w4a8test::Rng rng(seed);
  const int maxCode = fp8Spec(l.actFormat).maxFiniteCode;
  for (uint8_t& c : l.x8) c = (uint8_t)(rng.below(maxCode + 1) | (rng.below(2) << 7));
  for (float& s : l.xScales) s = rng.uniform(0.001f, 2.0f);
}

// sum_k x8 * w8 in double (products of FP8 values are exact in double; the sum's error is far below FP32's),
// and sum_k |x8 * w8|.
void exactDot(const Int4Layer& l, int m, int n, double& sum, double& magnitude) {
  const float* xTable = fp8DecodeTable(l.actFormat);
  const float* wTable = fp8DecodeTable(l.weightFormat);
  sum = magnitude = 0;
  for (int k = 0; k < l.K; ++k) {
    const double p = (double)xTable[l.x8[(size_t)m * l.K + k]] * wTable[l.w8[(size_t)n * l.K + k]];
    sum += p;
    magnitude += std::fabs(p);
  }
}

std::vector<float> runW4A8(const KernelTable& t, const Int4Layer& l) {
  std::vector<float> y((size_t)l.M * l.N, -1.0f);
  t.gemmW4A8({l.x8.data(), l.xScales.data(), l.actFormat, l.M, l.view(), {y.data(), nullptr, l.N}}, 0, l.N);
  return y;
}

}  // namespace

TEST(w4a8_vnni_matches_reference_on_odd_shapes_planes_and_batches) {
  // The AVX512-VNNI W4A8 kernel (kernels/avx512/w4a8_vnni.cpp) called directly: K not a multiple of its
  // 128-k block (G = 32 and 64 with an odd group count), odd and even N, M = 1..13 (its token chunks of 8 and
  // their remainders), every weight and activation format, activations with one to three planes. Against the
  // reference within the tolerance, and every row of an M-row call equal bit for bit to a 1-row call.
#if !defined(__x86_64__)
  std::printf("        SKIP not x86-64\n");
#else
  const CpuFeatures& cpu = cpuFeatures();
  if (!(cpu.avx512Backend() && cpu.avx512vnni)) {
    std::printf("        SKIP no AVX512-VNNI here\n");
    return;
  }
  const int kTokenCounts[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 13};
  int i = 0;
  for (Fp8Format wf : kFormats)
    for (Fp8Format af : kFormats)
      for (int G : kGroups) {
        const int M = kTokenCounts[i % 10], N = 1 + (i * 7) % 20, K = G * (1 + (i % 5) * 2 + (G == 128 ? i % 2 : 0));
        const bool wide = i % 2 == 0;
        const uint64_t seed = 9000 + i++;
        const Int4Layer l = wide ? makeWideCodeLayer(seed, M, N, K, G, wf, af)
                                 : makeInt4Layer(seed, M, N, K, G, wf, af, seed % 2, seed % 3 == 0);
        const std::string name = "vnni M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) +
                                 " G=" + std::to_string(G) + " w=" + formatName(wf) + " x=" + formatName(af) +
                                 (wide ? " wide" : "");
        std::vector<float> ref((size_t)M * N), y((size_t)M * N, -1.0f), one(N), withTables((size_t)M * N, -1.0f);
        reference::gemmW4A8({l.x8.data(), l.xScales.data(), af, M, l.view(), {ref.data(), nullptr, N}}, 0, N);
        avx512vnni::gemmW4A8({l.x8.data(), l.xScales.data(), af, M, l.view(), {y.data(), nullptr, N}}, 0, N);
        checkClose(y, ref, M, N, w4a8Bound(l, l.w8), name);
        // With the weights' prepared tables (G = 128 reads them in its own multi-token loop): the same bits.
        const auto tables = prepareInt4Tables(l.view());
        Int4WeightsView prepared = l.view();
        prepared.tables = tables.get();
        avx512vnni::gemmW4A8({l.x8.data(), l.xScales.data(), af, M, prepared, {withTables.data(), nullptr, N}}, 0, N);
        CHECK(std::memcmp(withTables.data(), y.data(), y.size() * 4) == 0, "%s: differs with prepared tables", name.c_str());
        for (int m = 0; m < M; ++m) {
          avx512vnni::gemmW4A8({l.x8.data() + (size_t)m * K, l.xScales.data() + m, af, 1, l.view(), {one.data(), nullptr, N}},
                               0, N);
          CHECK(std::memcmp(one.data(), y.data() + (size_t)m * N, N * 4) == 0, "%s: row %d differs from a 1-row call",
                name.c_str(), m);
        }
      }
#endif
}

TEST(w4a8_vnni_is_used_where_the_cpu_has_it_and_not_elsewhere) {
  // The public avx512 and amx tables take the VNNI W4A8 (below 8 tokens) only on a CPU with AVX512-VNNI; without
  // it they keep the vdpbf16ps (or FP32 FMA) W4A8, and avx512-bf16 is always the vdpbf16ps one.
  CpuFeatures cpu;
  cpu.avx2 = cpu.fma = cpu.f16c = true;
  cpu.avx512f = cpu.avx512bw = cpu.avx512vl = cpu.avx512dq = cpu.avx512vbmi = cpu.avx512bf16 = true;
#if defined(__x86_64__)
  CpuFeatures vnni = cpu;
  vnni.avx512vnni = true;
  const KernelTable* withVnni = kernelsFor("avx512", vnni);
  CHECK(withVnni->gemmW4A8 != kernelsFor("avx512-bf16", vnni)->gemmW4A8 && withVnni->gemmW4A8Pooled &&
            withVnni->pooledMinRows > 1,
        "avx512 with VNNI: %s", withVnni->detail);
  CHECK(kernelsFor("avx512", cpu)->gemmW4A8 == kernelsFor("avx512-bf16", cpu)->gemmW4A8 &&
            !kernelsFor("avx512", cpu)->gemmW4A8Pooled,
        "avx512 without VNNI");
  CHECK(kernelsFor("avx512-bf16", vnni)->gemmW4A8 != avx512vnni::gemmW4A8, "avx512-bf16 never takes VNNI");
  CpuFeatures amd = vnni;  // where avx512 switches from VNNI to vdpbf16ps: 8 tokens, 3 on AMD (dispatch.cpp)
  amd.amd = true;
  CHECK(withVnni->pooledMinRows == 8 && kernelsFor("avx512", amd)->pooledMinRows == 3 &&
            kernelsFor("avx512", amd)->gemmW4A8Pooled == withVnni->gemmW4A8Pooled,
        "avx512 switch: %d (Intel), %d (AMD)", withVnni->pooledMinRows, kernelsFor("avx512", amd)->pooledMinRows);
  CpuFeatures noBf16 = vnni;
  noBf16.avx512bf16 = false;
  CHECK(kernelsFor("avx512-bf16", noBf16) == nullptr, "avx512-bf16 needs AVX512-BF16");
  CHECK(kernelsFor("avx512", noBf16)->gemmW4A8Pooled != nullptr, "VNNI without BF16");
  CpuFeatures amx = vnni, amxNoVnni = cpu;
  amx.amxTile = amx.amxBf16 = amx.amxPermission = amxNoVnni.amxTile = amxNoVnni.amxBf16 = amxNoVnni.amxPermission = true;
  CHECK(kernelsFor("amx", amx)->gemmW4A8 != kernelsFor("amx", amxNoVnni)->gemmW4A8, "amx: VNNI below kMinRows");
  CHECK(kernelsFor("amx", amx)->gemmW4A8Pooled == kernelsFor("amx", amxNoVnni)->gemmW4A8Pooled, "amx tiles either way");
  // On this CPU, where it has VNNI: the avx512 and amx W4A8 below their switch (pooledMinRows: 8 tokens, 3 on
  // AMD for avx512) equal the VNNI kernel bit for bit, and avx512 from there on equals avx512-bf16.
  if (cpuFeatures().avx512Backend() && cpuFeatures().avx512vnni) {
    const Int4Layer l = makeInt4Layer(77, 9, 21, 384, 128, Fp8Format::E4M3FN, Fp8Format::E4M3FN, false, false);
    for (const char* name : {"avx512", "amx"}) {
      const KernelTable* t = kernelsFor(name);
      if (!t) continue;
      for (int M : {1, 2, 3, 7, 8, 9}) {
        std::vector<float> got((size_t)M * l.N), want((size_t)M * l.N);
        const W4A8GemmArgs a{l.x8.data(), l.xScales.data(), l.actFormat, M, l.view(), {got.data(), nullptr, l.N}};
        W4A8GemmArgs b = a;
        b.y.f32 = want.data();
        t->gemmW4A8(a, 0, l.N);
        if (M < t->pooledMinRows) avx512vnni::gemmW4A8(b, 0, l.N);
        else if (!std::strcmp(name, "avx512")) kernelsFor("avx512-bf16")->gemmW4A8(b, 0, l.N);
        else continue;
        CHECK(std::memcmp(got.data(), want.data(), got.size() * 4) == 0, "%s W4A8 M=%d: not the expected body", name, M);
      }
    }
  }
#endif
}

TEST(avx2_w4a8_products_are_exact_across_activation_planes) {
  // Integer group sums are exact, so the only roundings are one FP32 conversion and one FMA per group and
  // plane per lane, the lane sum and the scaling: error <= (3 * groups + 16) * 2^-24 * s_x s_c sum |x w|,
  // much tighter than the reference tolerance. A plane dropped or misplaced would be off by 2^-11 or more.
  const KernelTable* avx2 = kernelsFor("avx2");
  if (!avx2) return;  // not an x86 CPU with AVX2
  int i = 0;
  for (Fp8Format af : kFormats)
    for (Fp8Format wf : kFormats)
      for (int G : kGroups) {
        const int M = 1 + 2 * (i % 2), N = 5 + i % 3, K = G * (3 + i % 2);  // G = 32: odd and even group counts
        Int4Layer l = makeInt4Layer(9000 + i, M, N, K, G, wf, af, i % 3 == 0, false);
        fillWideActivations(l, 9100 + i);
        const std::vector<float> y = runW4A8(*avx2, l);
        for (int m = 0; m < M; ++m)
          for (int n = 0; n < N; ++n) {
            double sum, magnitude;
            exactDot(l, m, n, sum, magnitude);
            const double scale = (double)l.xScales[m] * l.channelScales[n];
            const double bound = (3.0 * (K / G) + 16) * 0x1p-24 * scale * magnitude + 1e-37;
            const double error = std::fabs(y[(size_t)m * N + n] - scale * sum);
            if (!(error <= bound) && ++i < 1000)
              CHECK(false, "w=%s x=%s G=%d K=%d m=%d n=%d: error %.3g > bound %.3g (seed %d)", formatName(wf),
                    formatName(af), G, K, m, n, error, bound, 9000 + i);
          }
        ++i;
      }
}

TEST(avx2_w4a8_outputs_do_not_depend_on_batch_size_with_wide_activations) {
  // M = 1 runs the fused path, M = 2..4 the fused path on one decode for all tokens, larger M the tile path; all
  // add the planes in the same order (plane 0 of every block, then plane 1, then plane 2), so row m of a batch
  // equals row m alone, bit for bit. Tables that switch bodies at pooledMinRows (avx512 and amx) are
  // batch-invariant on each side of it only: a batch at or past it is left to outputs_do_not_depend_on_batch_size,
  // which covers both sides.
  std::vector<const KernelTable*> all = fastBackends();
  all.push_back(kernelsFor("reference"));
  for (Fp8Format af : {Fp8Format::E5M2, Fp8Format::E4M3FN})
    for (int G : kGroups)
      for (int M : {2, 3, 4, 5, 7}) {
        Int4Layer l = makeInt4Layer(9200 + G + M, M, 23, 5 * G, G, Fp8Format::E4M3FN, af, false, false);
        fillWideActivations(l, 9300 + G + M);
        for (const KernelTable* t : all) {
          if (t->gemmW4A8Pooled && M >= t->pooledMinRows) continue;
          const std::vector<float> batch = runW4A8(*t, l);
          for (int m = 0; m < l.M; ++m) {
            std::vector<float> one(l.N);
            t->gemmW4A8({l.x8.data() + (size_t)m * l.K, l.xScales.data() + m, af, 1, l.view(), {one.data(), nullptr, l.N}},
                        0, l.N);
            CHECK(std::memcmp(one.data(), batch.data() + (size_t)m * l.N, l.N * 4) == 0, "%s x=%s G=%d M=%d row %d",
                  t->name, formatName(af), G, M, m);
          }
        }
      }
}

TEST(w4a8_sees_activations_changed_in_place_between_calls) {
  // The avx2 kernel keeps each thread's last prepared activations and reuses them when the FP8 codes are
  // the same: a caller that rewrites its buffer between calls (as a decode loop does) must get new results.
  ThreadPool pool(2);
  for (int M : {1, 5}) {
    Int4Layer l = makeInt4Layer(9400 + M, M, 40, 256, 64, Fp8Format::E4M3FN, Fp8Format::E4M3FN, false, false);
    for (const KernelTable* t : fastBackends())
      for (int round = 0; round < 3; ++round) {
        w4a8test::Rng rng(9500 + round);
        for (int j = 0; j < 1 + round; ++j) l.x8[rng.below((int)l.x8.size())] ^= (uint8_t)(1 + rng.below(0x3F));
        std::vector<float> ref((size_t)M * l.N), y((size_t)M * l.N), threaded((size_t)M * l.N);
        const GemmOutput out{y.data(), nullptr, l.N};
        reference::gemmW4A8({l.x8.data(), l.xScales.data(), l.actFormat, M, l.view(), {ref.data(), nullptr, l.N}}, 0, l.N);
        t->gemmW4A8({l.x8.data(), l.xScales.data(), l.actFormat, M, l.view(), out}, 0, l.N);
        gemmW4A8Parallel(*t, pool, {l.x8.data(), l.xScales.data(), l.actFormat, M, l.view(), {threaded.data(), nullptr, l.N}});
        for (size_t i = 0; i < ref.size(); ++i) {
          CHECK(std::fabs(y[i] - ref[i]) <= 1e-4f * std::fabs(ref[i]) + 1e-5f, "%s M=%d round %d: %g vs %g", t->name, M,
                round, y[i], ref[i]);
          CHECK(y[i] == threaded[i], "%s M=%d round %d: pool result differs", t->name, M, round);
        }
      }
  }
}

TEST(w4a8_rows_outside_the_integer_path_match_the_reference) {
  // Activations that are inf or NaN (every backend), and on avx2 a zero point above 15 (which lib/ and the
  // file readers reject, but the avx2 kernel computes anyway), take the FP32 path of the avx2 kernel;
  // infinities must come out as the reference's.
  for (Fp8Format af : kFormats)
    for (int M : {1, 3})
      for (bool badZero : {false, true}) {
        Int4Layer l = makeInt4Layer(9600 + M, M, 9, 128, 32, Fp8Format::E4M3FN, af, false, false);
        if (badZero) {
          l.zeros[1 * 4 + 2] = 20;  // row 1, group 2
          dequantInt4ToFp8(l.view(), l.w8.data(), 0, l.N);
        } else {
          const uint8_t special = af == Fp8Format::E4M3FN ? 0x7F : af == Fp8Format::E4M3 ? 0xF8 : 0x7C;  // NaN, -inf, inf
          l.x8[(size_t)(M - 1) * l.K + 77] = special;
        }
        std::vector<float> ref((size_t)M * l.N);
        reference::gemmW4A8({l.x8.data(), l.xScales.data(), af, M, l.view(), {ref.data(), nullptr, l.N}}, 0, l.N);
        for (const KernelTable* t : fastBackends()) {
          if (badZero && std::strcmp(t->name, "avx2")) continue;
          const std::vector<float> y = runW4A8(*t, l);
          for (int m = 0; m < M; ++m)
            for (int n = 0; n < l.N; ++n) {
              const float g = y[(size_t)m * l.N + n], r = ref[(size_t)m * l.N + n];
              double sum, magnitude;
              exactDot(l, m, n, sum, magnitude);
              const double bound = 1e-5 * l.xScales[m] * l.channelScales[n] * magnitude + 1e-37;
              const bool ok = std::isnan(r) ? std::isnan(g) : std::isinf(r) ? g == r : std::fabs((double)g - r) <= bound;
              CHECK(ok, "%s x=%s M=%d %s m=%d n=%d: %g vs %g", t->name, formatName(af), M, badZero ? "zero 20" : "inf/NaN",
                    m, n, g, r);
            }
        }
      }
}
