// Prepared group tables (kernels/int4_tables.h): their integers are the reference's FP8 weights exactly, and
// every backend gives the same outputs with them as without, bit for bit, on every path that reads them
// (avx2: every M and G; VNNI: every M and G) and every path that does not.
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/backends.h"
#include "kernels/cpu_features.h"
#include "kernels/dispatch.h"
#include "kernels/int4_tables.h"
#include "tests/check.h"
#include "tests/int4_layer.h"

using namespace w4a8;
using w4a8test::Int4Layer, w4a8test::formatName, w4a8test::makeInt4Layer;

namespace {

const Fp8Format kFormats[] = {Fp8Format::E4M3FN, Fp8Format::E4M3, Fp8Format::E5M2};

std::vector<float> gemm(const KernelTable& t, const Int4Layer& l, const Int4Tables* tables) {
  Int4WeightsView w = l.view();
  w.tables = tables;
  std::vector<float> y((size_t)l.M * l.N);
  t.gemmW4A8({l.x8.data(), l.xScales.data(), l.actFormat, l.M, w, {y.data(), nullptr, l.N}}, 0, l.N);
  return y;
}

// Scales that exercise every table case: FP8-subnormal products, products at and past the largest finite
// value (saturation), zero and negative scales, and one row with a NaN scale (the FP32 path).
void extremeScales(Int4Layer& l, uint64_t seed) {
  w4a8test::Rng rng(seed);
  const int groups = l.K / l.G;
  const int minExp = l.weightFormat == Fp8Format::E5M2 ? -14 : -6;
  const float maxFinite = l.weightFormat == Fp8Format::E4M3FN ? 448.0f : l.weightFormat == Fp8Format::E4M3 ? 240.0f : 57344.0f;
  for (int n = 0; n < l.N; ++n)
    for (int g = 0; g < groups; ++g) {
      float& s = l.groupScales[(size_t)n * groups + g];
      switch ((n + g) % 5) {
        case 0: s = std::ldexp(rng.uniform(1.0f, 2.0f), minExp - 5 - (int)rng.below(6)); break;  // subnormal products
        case 1: s = maxFinite / rng.uniform(6.0f, 16.0f); break;                                 // saturating
        case 2: s = g % 2 ? 0.0f : -0.0f; break;
        default: break;                                                                          // as packed
      }
      if (rng.below(3) == 0) s = -s;
      l.zeros[(size_t)n * groups + g] = (uint8_t)rng.below(16);
    }
  if (l.N > 2) l.groupScales[(size_t)2 * groups] = std::nanf("");
  dequantInt4ToFp8(l.view(), l.w8.data(), 0, l.N);
}

}  // namespace

TEST(int4_tables_hold_the_reference_fp8_weights_exactly) {
  for (Fp8Format wf : kFormats)
    for (int G : {32, 64, 128}) {
      Int4Layer l = makeInt4Layer(700 + G, 1, 7, 3 * G, G, wf, Fp8Format::E4M3FN, false, false);
      extremeScales(l, 701);
      const auto t = prepareInt4Tables(l.view());
      CHECK(t != nullptr, "%s G=%d: no tables", formatName(wf), G);
      if (!t) continue;
      CHECK(t->describes(l.view()), "%s G=%d: tables do not describe their view", formatName(wf), G);
      Int4WeightsView other = l.view();
      other.zeros = nullptr;
      CHECK(!t->describes(other), "%s G=%d: tables describe another view", formatName(wf), G);
      const float* decode = fp8DecodeTable(wf);
      const int groups = l.K / G;
      for (int n = 0; n < l.N; ++n) {
        CHECK(t->rowGeneric[n] == (n == 2), "%s G=%d row %d: generic %d", formatName(wf), G, n, t->rowGeneric[n]);
        if (t->rowGeneric[n]) continue;
        for (int g = 0; g < groups; ++g) {
          const Int4TableEntry& e = t->entries[t->indexRow(n)[g]];
          for (int k = g * G; k < (g + 1) * G; ++k) {
            const int q = int4Code(l.codes.data() + (size_t)n * l.K / 2, k);
            const double value = std::ldexp((double)e.words[q], t->baseRow(n)[g]);
            const int16_t fromBytes = (int16_t)(e.low[q] | (e.high[q] << 8));
            const uint32_t bf16Bits = (uint32_t)e.bf16[q] << 16;
            float fromBf16;
            std::memcpy(&fromBf16, &bf16Bits, 4);
            CHECK(value == decode[l.w8[(size_t)n * l.K + k]] && fromBytes == e.words[q] &&
                      fromBf16 == (float)e.words[q],
                  "%s G=%d n=%d k=%d: %g vs %g", formatName(wf), G, n, k, value, decode[l.w8[(size_t)n * l.K + k]]);
          }
        }
      }
    }
}

TEST(int4_tables_give_the_same_outputs_bit_for_bit_on_every_backend) {
  // Odd and even N, K of 1 to 7 groups (odd and even counts, whole and part blocks), M = 1..7 (one-token and
  // batched paths, all read the tables on avx2 and VNNI) and 9 (avx2's tiles; AMX and vdpbf16ps, which read
  // them at G = 128), every format, packed and extreme scales, activations of one and of several planes.
  std::vector<const KernelTable*> backends;
  for (const char* const* name = kernelNames(); *name; ++name)
    if (const KernelTable* t = kernelsFor(*name)) backends.push_back(t);
#if defined(__x86_64__)
  // The VNNI kernel itself at every M (the avx512 backend takes it below 3 tokens on AMD, 8 elsewhere).
  KernelTable vnniEveryM{};
  if (const KernelTable* avx512 = kernelsFor("avx512"); avx512 && cpuFeatures().avx512vnni) {
    vnniEveryM = *avx512;
    vnniEveryM.name = "vnni (every M)";
    vnniEveryM.gemmW4A8 = avx512vnni::gemmW4A8;
    backends.push_back(&vnniEveryM);
  }
#endif
  int i = 0;
  for (Fp8Format wf : kFormats)
    for (int G : {32, 64, 128})
      for (int M : {1, 2, 3, 4, 5, 6, 7, 9})
        for (bool extreme : {false, true}) {
          ++i;
          const int N = 5 + i % 4, K = G * (1 + i % 7);
          const Fp8Format af = kFormats[i % 3];
          Int4Layer l = makeInt4Layer(800 + i, M, N, K, G, wf, af, i % 2, i % 4 == 0);
          if (extreme) extremeScales(l, 900 + i);
          if (i % 3 == 0)  // codes of every magnitude: several activation planes
            for (size_t j = 0; j < l.x8.size(); j += 5) l.x8[j] = (uint8_t)(j * 37 % 0x70 | (j % 2 ? 0x80 : 0));
          const auto t = prepareInt4Tables(l.view());
          CHECK(t != nullptr, "no tables");
          if (!t) continue;
          for (const KernelTable* k : backends) {
            const std::vector<float> without = gemm(*k, l, nullptr), with = gemm(*k, l, t.get());
            for (size_t j = 0; j < with.size(); ++j) {
              const bool same = std::memcmp(&with[j], &without[j], 4) == 0 || (std::isnan(with[j]) && std::isnan(without[j]));
              CHECK(same, "%s M=%d N=%d K=%d G=%d w=%s x=%s %s seed=%d out %zu: %a with tables, %a without", k->name, M, N,
                    K, G, formatName(wf), formatName(af), extreme ? "extreme" : "packed", 800 + i, j, with[j], without[j]);
            }
          }
        }
}

TEST(int4_tables_stay_small) {
  // The documented bound: 3 bytes per group and 1 per row, plus 128 bytes per distinct table.
  Int4Layer l = makeInt4Layer(990, 1, 256, 1024, 128, Fp8Format::E4M3FN, Fp8Format::E4M3FN, false, false);
  const auto t = prepareInt4Tables(l.view());
  CHECK(t != nullptr, "no tables");
  if (!t) return;
  const size_t groups = (size_t)l.N * l.K / l.G, packed = l.codes.size() + l.zeros.size() + 4 * l.groupScales.size();
  CHECK(t->bytes() == 3 * groups + l.N + 128 * t->entries.size(), "bytes %zu", t->bytes());
  CHECK(t->entries.size() <= 32 * 130, "%zu distinct tables", t->entries.size());
  CHECK(3 * groups + l.N < 0.05 * packed, "per-group part %zu of %zu packed bytes", 3 * groups + l.N, packed);
}
