// The amx backend (kernels/amx/) against the scalar reference, at batches where it uses tiles (M >= 8):
// odd and even M, N and K around its tile (16), tile-pair (32), panel (128 rows), k-block (512) and pass
// (256 tokens) sizes, every FP8 format and both group-scale kinds, within the FP32 summation-order tolerance
// |y - y_ref| <= 1e-5 * s_x * s_c * sum_k |x8 * w8|; the whole-call (pooled) entries bit-identical to the
// per-range ones for any split of N; NaN, extreme group scales and BF16 subnormals as the reference has them.
// On a machine without AMX (or without the OS permission for tile data) every test says SKIP and passes.
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

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

// The amx table, or nullptr after printing why the test is skipped.
const KernelTable* amxOrSkip(const char* test) {
  const KernelTable* t = kernelsFor("amx");
  if (!t) std::printf("        SKIP %s: no AMX here (missing %s)\n", test, cpuFeatures().missingFor("amx").c_str());
  return t;
}


// 1e-5 * scale(m, n) * sum_k |a(m, k) * b(n, k)|, the bound of every check here.
template <class A, class B, class Scale>
std::vector<double> bounds(int M, int N, int K, A a, B b, Scale scale) {
  std::vector<double> out((size_t)M * N);
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double sum = 0;
      for (int k = 0; k < K; ++k) sum += std::fabs((double)a(m, k) * b(n, k));
      out[(size_t)m * N + n] = 1e-5 * scale(m, n) * sum + 1e-37;
    }
  return out;
}

void checkClose(const std::vector<float>& got, const std::vector<float>& ref, const std::vector<double>& bound,
                const std::string& what) {
  int bad = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const bool ok = std::isnan(ref[i]) ? std::isnan(got[i]) : std::fabs((double)got[i] - ref[i]) <= bound[i];
    if (!ok && ++bad <= 3) CHECK(false, "%s: index %zu got %.9g ref %.9g bound %.3g", what.c_str(), i, got[i], ref[i], bound[i]);
  }
}

void checkBf16(const std::vector<uint16_t>& bf16, const std::vector<float>& f32, const std::string& what) {
  int bad = 0;
  for (size_t i = 0; i < f32.size(); ++i)
    if (bf16[i] != floatToBf16(f32[i]) && ++bad <= 3)
      CHECK(false, "%s: BF16 output %zu is %#x, the FP32 output rounds to %#x", what.c_str(), i, bf16[i],
            floatToBf16(f32[i]));
}

// Runs gemm(nBegin, nEnd, y) over the whole range, over ranges cut at odd places, and the whole call on a
// pool (pooled(y)); all three must agree bit for bit. Returns the whole-range FP32 result.
template <class Range, class Pooled>
std::vector<float> runEveryWay(int M, int N, Range range, Pooled pooled, const std::string& what) {
  std::vector<float> whole((size_t)M * N, -1.0f), split((size_t)M * N, -2.0f), onPool((size_t)M * N, -3.0f);
  range(0, N, GemmOutput{whole.data(), nullptr, N});
  const int cuts[] = {0, 1, 15, 16, 31, 50, 128, 129, 270, N};
  for (int i = 0, begin = 0; i < 10 && begin < N; ++i) {
    const int end = i == 9 ? N : std::min(N, std::max(begin, cuts[i + 1]));
    if (end > begin) range(begin, end, GemmOutput{split.data(), nullptr, N});
    begin = end;
  }
  pooled(GemmOutput{onPool.data(), nullptr, N});
  CHECK(std::memcmp(whole.data(), split.data(), whole.size() * 4) == 0, "%s: split ranges differ", what.c_str());
  CHECK(std::memcmp(whole.data(), onPool.data(), whole.size() * 4) == 0, "%s: pooled call differs", what.c_str());
  return whole;
}

struct Int4Case {
  int M, N, K, G;
  Fp8Format wf, af;
  bool symmetric, pow2;
};

// Around the tile sizes: M 8/9/12/16/17/31/33/48/100 and two passes (257, 300); N 1..300 across row pairs of
// 32 and panels of 256; K across k-blocks of 1024 with every group size.
const Int4Case kInt4Cases[] = {
    {8, 50, 256, 64, Fp8Format::E4M3FN, Fp8Format::E4M3FN, false, true},
    {9, 300, 128, 32, Fp8Format::E5M2, Fp8Format::E4M3, true, false},
    {12, 17, 1280, 128, Fp8Format::E4M3, Fp8Format::E4M3FN, false, false},
    {16, 33, 128, 128, Fp8Format::E4M3FN, Fp8Format::E4M3FN, false, false},
    {17, 129, 640, 128, Fp8Format::E4M3, Fp8Format::E5M2, true, false},
    {31, 16, 544, 32, Fp8Format::E5M2, Fp8Format::E4M3FN, false, true},
    {33, 47, 1024, 64, Fp8Format::E4M3FN, Fp8Format::E4M3, true, true},
    {48, 1, 256, 64, Fp8Format::E4M3, Fp8Format::E4M3FN, false, false},
    {64, 100, 1152, 128, Fp8Format::E4M3FN, Fp8Format::E5M2, false, false},
    {100, 31, 96, 32, Fp8Format::E5M2, Fp8Format::E5M2, true, false},
    {257, 40, 384, 128, Fp8Format::E4M3FN, Fp8Format::E4M3FN, false, true},
    {300, 17, 160, 32, Fp8Format::E4M3, Fp8Format::E4M3, false, false},
};

std::string caseName(const char* kernel, const Int4Case& c, uint64_t seed) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "amx %s M=%d N=%d K=%d G=%d w=%s x=%s %s %s seed=%llu", kernel, c.M, c.N, c.K, c.G,
                formatName(c.wf), formatName(c.af), c.symmetric ? "sym" : "asym", c.pow2 ? "pow2" : "float",
                (unsigned long long)seed);
  return buf;
}

}  // namespace

TEST(amx_w4a8_and_w4a16_match_reference_on_odd_and_even_shapes) {
  const KernelTable* t = amxOrSkip("amx_w4a8_and_w4a16_match_reference_on_odd_and_even_shapes");
  if (!t) return;
  ThreadPool pool(3);
  uint64_t seed = 9000;
  for (const Int4Case& c : kInt4Cases) {
    const Int4Layer l = makeInt4Layer(++seed, c.M, c.N, c.K, c.G, c.wf, c.af, c.symmetric, c.pow2);
    const int M = c.M, N = c.N, K = c.K;
    {  // W4A8
      const std::string what = caseName("W4A8", c, seed);
      auto args = [&](GemmOutput y) { return W4A8GemmArgs{l.x8.data(), l.xScales.data(), c.af, M, l.view(), y}; };
      std::vector<float> ref((size_t)M * N);
      reference::gemmW4A8(args({ref.data(), nullptr, N}), 0, N);
      const std::vector<float> y = runEveryWay(
          M, N, [&](int b, int e, GemmOutput out) { t->gemmW4A8(args(out), b, e); },
          [&](GemmOutput out) { gemmW4A8Parallel(*t, pool, args(out)); }, what);
      const float* xt = fp8DecodeTable(c.af);
      const float* wt = fp8DecodeTable(c.wf);
      checkClose(y, ref,
                 bounds(M, N, K, [&](int m, int k) { return xt[l.x8[(size_t)m * K + k]]; },
                        [&](int n, int k) { return wt[l.w8[(size_t)n * K + k]]; },
                        [&](int m, int n) { return (double)l.xScales[m] * l.channelScales[n]; }),
                 what);
      std::vector<uint16_t> y16((size_t)M * N);
      t->gemmW4A8(args({nullptr, y16.data(), N}), 0, N);
      checkBf16(y16, y, what);
      // With the weights' prepared tables (read at G = 128): the same bits.
      if (const auto tables = prepareInt4Tables(l.view())) {
        Int4WeightsView view = l.view();
        view.tables = tables.get();
        std::vector<float> withTables((size_t)M * N);
        t->gemmW4A8(W4A8GemmArgs{l.x8.data(), l.xScales.data(), c.af, M, view, {withTables.data(), nullptr, N}}, 0, N);
        CHECK(std::memcmp(withTables.data(), y.data(), y.size() * 4) == 0, "%s: prepared tables change the outputs",
              what.c_str());
      }
    }
    {  // W4A16
      const std::string what = caseName("W4A16", c, seed);
      auto args = [&](GemmOutput y) { return W4A16GemmArgs{l.x16.data(), M, l.view(), y}; };
      std::vector<float> ref((size_t)M * N);
      reference::gemmW4A16(args({ref.data(), nullptr, N}), 0, N);
      const std::vector<float> y = runEveryWay(
          M, N, [&](int b, int e, GemmOutput out) { t->gemmW4A16(args(out), b, e); },
          [&](GemmOutput out) { gemmW4A16Parallel(*t, pool, args(out)); }, what);
      const int groups = K / c.G;
      auto weight = [&](int n, int k) {
        const int g = k / c.G;
        return bf16ToFloat(floatToBf16(int4GroupValue(l.groupScales[(size_t)n * groups + g],
                                                      l.zeros[(size_t)n * groups + g],
                                                      int4Code(l.codes.data() + (size_t)n * K / 2, k))));
      };
      checkClose(y, ref,
                 bounds(M, N, K, [&](int m, int k) { return bf16ToFloat(l.x16[(size_t)m * K + k]); }, weight,
                        [&](int, int n) { return (double)l.channelScales[n]; }),
                 what);
      std::vector<uint16_t> y16((size_t)M * N);
      t->gemmW4A16(args({nullptr, y16.data(), N}), 0, N);
      checkBf16(y16, y, what);
    }
  }
}

TEST(amx_w8a8_matches_reference_on_odd_and_even_shapes) {
  const KernelTable* t = amxOrSkip("amx_w8a8_matches_reference_on_odd_and_even_shapes");
  if (!t) return;
  ThreadPool pool(3);
  struct Shape { int M, N, K; };
  const Shape shapes[] = {{16, 33, 37},  {17, 129, 513}, {40, 50, 1000}, {257, 19, 200},
                          {33, 64, 64},  {18, 7, 1},     {8, 270, 1100}, {11, 40, 2049}};
  const Fp8Format formats[] = {Fp8Format::E4M3FN, Fp8Format::E4M3, Fp8Format::E5M2};
  int i = 0;
  for (const Shape& s : shapes) {
    const int M = s.M, N = s.N, K = s.K;
    const Fp8Format wf = formats[i % 3], af = formats[(i / 3 + i) % 3];
    const uint64_t seed = 9500 + i++;
    w4a8test::Rng rng(seed);
    std::vector<float> w((size_t)N * K), x((size_t)M * K);
    for (float& v : w) v = rng.uniform(-1.0f, 1.0f) * std::ldexp(1.0f, rng.below(10) - 5);
    for (float& v : x) v = rng.uniform(-1.0f, 1.0f) * std::ldexp(1.0f, rng.below(10) - 5);
    std::vector<uint8_t> codes((size_t)N * K), x8((size_t)M * K);
    std::vector<float> channelScales(N), xScales(M);
    packFp8Rows(w.data(), N, K, wf, codes.data(), channelScales.data(), 0, N);
    quantizeActivationsDynamic(x.data(), M, K, af, x8.data(), xScales.data());
    const Fp8WeightsView view{codes.data(), channelScales.data(), N, K, wf};
    auto args = [&](GemmOutput y) { return W8A8GemmArgs{x8.data(), xScales.data(), af, M, view, y}; };
    char what[128];
    std::snprintf(what, sizeof what, "amx W8A8 M=%d N=%d K=%d w=%s x=%s seed=%llu", M, N, K, formatName(wf),
                  formatName(af), (unsigned long long)seed);
    std::vector<float> ref((size_t)M * N);
    reference::gemmW8A8(args({ref.data(), nullptr, N}), 0, N);
    const std::vector<float> y = runEveryWay(
        M, N, [&](int b, int e, GemmOutput out) { t->gemmW8A8(args(out), b, e); },
        [&](GemmOutput out) { gemmW8A8Parallel(*t, pool, args(out)); }, what);
    const float* xt = fp8DecodeTable(af);
    const float* wt = fp8DecodeTable(wf);
    checkClose(y, ref,
               bounds(M, N, K, [&](int m, int k) { return xt[x8[(size_t)m * K + k]]; },
                      [&](int n, int k) { return wt[codes[(size_t)n * K + k]]; },
                      [&](int m, int n) { return (double)xScales[m] * channelScales[n]; }),
               what);
    std::vector<uint16_t> y16((size_t)M * N);
    t->gemmW8A8(args({nullptr, y16.data(), N}), 0, N);
    checkBf16(y16, y, what);
  }
}

TEST(amx_handles_nan_and_extreme_group_scales_like_the_reference) {
  const KernelTable* t = amxOrSkip("amx_handles_nan_and_extreme_group_scales_like_the_reference");
  if (!t) return;
  // Group scales that send s_g * (q - z) to FP8 subnormals, saturation, zero, NaN and inf (the full encoder
  // path), and a NaN activation in row 3: the same outputs as the reference, NaN where it has NaN.
  const int M = 19, N = 21, K = 256, G = 32, groups = K / G;
  for (Fp8Format wf : {Fp8Format::E4M3FN, Fp8Format::E4M3, Fp8Format::E5M2}) {
    Int4Layer l = makeInt4Layer(9700, M, N, K, G, wf, Fp8Format::E4M3FN, false, false);
    w4a8test::Rng rng(9701);
    for (int n = 0; n < N; ++n)
      for (int g = 0; g < groups; ++g) {
        float& s = l.groupScales[(size_t)n * groups + g];
        switch ((n + 3 * g) % 8) {
          case 0: s = std::ldexp(rng.uniform(1.0f, 2.0f), -12 - rng.below(8)); break;
          case 1: s = std::ldexp(rng.uniform(1.0f, 2.0f), 4 + rng.below(12)); break;
          case 2: s = 0.0f; break;
          case 3: s = -rng.uniform(0.01f, 1.0f); break;
          case 4: s = (n == 5 && g == 1) ? NAN : rng.uniform(0.01f, 1.0f); break;
          case 5: s = (n == 12 && g == 4) ? INFINITY : rng.uniform(0.01f, 1.0f); break;
          case 6: s = 0x1p110f; break;
          default: break;
        }
        l.zeros[(size_t)n * groups + g] = (uint8_t)rng.below(16);
      }
    l.x8[(size_t)3 * K + 100] = 0x7F;  // e4m3fn NaN
    dequantInt4ToFp8(l.view(), l.w8.data(), 0, N);
    auto args = [&](GemmOutput y) { return W4A8GemmArgs{l.x8.data(), l.xScales.data(), l.actFormat, M, l.view(), y}; };
    std::vector<float> ref((size_t)M * N), y((size_t)M * N);
    reference::gemmW4A8(args({ref.data(), nullptr, N}), 0, N);
    t->gemmW4A8(args({y.data(), nullptr, N}), 0, N);
    const float* xt = fp8DecodeTable(l.actFormat);
    const float* wt = fp8DecodeTable(wf);
    checkClose(y, ref,
               bounds(M, N, K, [&](int m, int k) { return xt[l.x8[(size_t)m * K + k]]; },
                      [&](int n, int k) { return wt[l.w8[(size_t)n * K + k]]; },
                      [&](int m, int n) { return (double)l.xScales[m] * l.channelScales[n]; }),
               std::string("amx extreme scales ") + formatName(wf));
    int nans = 0;
    for (float v : ref) nans += std::isnan(v);
    CHECK(nans >= N, "the NaN row and column are there (%d NaN outputs)", nans);
  }
}

TEST(amx_w4a16_computes_bf16_subnormals_exactly) {
  const KernelTable* t = amxOrSkip("amx_w4a16_computes_bf16_subnormals_exactly");
  if (!t) return;
  // tdpbf16ps flushes BF16 subnormals. Weight row 2 has group scales of 2^-130 (subnormal BF16 weights, whose
  // outputs a flush would zero): that row must be computed without tiles. In the second call, token 0 is all subnormal: the whole call must be.
  ThreadPool pool(3);
  const int M = 20, N = 9, K = 128, G = 32, groups = K / G;
  Int4Layer l = makeInt4Layer(9800, M, N, K, G, Fp8Format::E4M3FN, Fp8Format::E4M3FN, false, false);
  for (int g = 0; g < groups; ++g) l.groupScales[(size_t)2 * groups + g] = 0x1p-130f;  // all of row 2
  auto weight = [&](int n, int k) {
    const int g = k / G;
    return bf16ToFloat(floatToBf16(int4GroupValue(l.groupScales[(size_t)n * groups + g], l.zeros[(size_t)n * groups + g],
                                                  int4Code(l.codes.data() + (size_t)n * K / 2, k))));
  };
  for (int pass = 0; pass < 2; ++pass) {
    if (pass == 1)
      for (int k = 0; k < K; ++k) l.x16[k] = (uint16_t)((1 + k % 127) | (k & 8 ? 0x8000 : 0));
    auto args = [&](GemmOutput y) { return W4A16GemmArgs{l.x16.data(), M, l.view(), y}; };
    std::vector<float> ref((size_t)M * N);
    reference::gemmW4A16(args({ref.data(), nullptr, N}), 0, N);
    const std::string what = pass ? "amx W4A16 subnormal activations" : "amx W4A16 subnormal weights";
    const std::vector<float> y = runEveryWay(
        M, N, [&](int b, int e, GemmOutput out) { t->gemmW4A16(args(out), b, e); },
        [&](GemmOutput out) { gemmW4A16Parallel(*t, pool, args(out)); }, what);
    // Products in the FP32 subnormal range round in the reference (not in an FMA): K * 2^-149 at most.
    std::vector<double> bound = bounds(M, N, K, [&](int m, int k) { return bf16ToFloat(l.x16[(size_t)m * K + k]); },
                                       weight, [&](int, int n) { return (double)l.channelScales[n]; });
    for (int m = 0; m < M; ++m)
      for (int n = 0; n < N; ++n) bound[(size_t)m * N + n] += l.channelScales[n] * K * 0x1p-149;
    checkClose(y, ref, bound, what);
    for (int i = 0; i < (pass ? N : M); ++i) {
      const size_t at = pass ? (size_t)i : (size_t)i * N + 2;  // token 0's outputs, or row 2's
      CHECK(y[at] != 0.0f || ref[at] == 0.0f, "%s: flushed to zero at %zu", what.c_str(), at);
    }
  }
}

// Up to 32 tokens the tiles take the interleaved decode (kernels/amx/mixed_gemm.cpp), beyond that the general
// path; both add the same products in the same order, so the first rows of any batch of 8 or more give the same
// bits (two k-blocks, a lone 16-row tile at the end of N, e4m3fn and e5m2 weights).
TEST(amx_w4a8_gives_the_same_bits_for_any_batch_of_8_or_more) {
  const KernelTable* t = amxOrSkip("amx_w4a8_gives_the_same_bits_for_any_batch_of_8_or_more");
  if (!t) return;
  const int Mmax = 72, N = 47, K = 1280;
  const Fp8Format weightFormats[] = {Fp8Format::E4M3FN, Fp8Format::E5M2};
  uint64_t seed = 9700;
  for (const Fp8Format wf : weightFormats) {
    const Int4Layer l = makeInt4Layer(++seed, Mmax, N, K, 128, wf, Fp8Format::E4M3FN, false, false);
    auto run = [&](int M) {
      std::vector<float> y((size_t)M * N);
      t->gemmW4A8(W4A8GemmArgs{l.x8.data(), l.xScales.data(), Fp8Format::E4M3FN, M, l.view(), {y.data(), nullptr, N}}, 0, N);
      return y;
    };
    const std::vector<float> first = run(8);
    for (const int M : {9, 16, 31, 32, 33, 40, 72}) {
      const std::vector<float> y = run(M);
      CHECK(std::memcmp(y.data(), first.data(), first.size() * 4) == 0, "w=%s: M=%d's first 8 rows differ from M=8's",
            formatName(wf), M);
    }
  }
}
