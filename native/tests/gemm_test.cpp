// Reference GEMMs against float64 sums of the same quantized operands, and W4A8 == W8A8 on the
// dequantized weights bit for bit (same operands, same summation order).
#include <cmath>
#include <vector>

#include "kernels/kernels.h"
#include "quant/int4_pack.h"
#include "tests/check.h"

using namespace w4a8;

namespace {

struct Layer {
  int M, N, K, G;
  std::vector<float> x, w;
  std::vector<uint8_t> codes, zeros, x8;
  std::vector<float> groupScales, channelScales, xScales;
  Int4WeightsView view;
};

Layer makeLayer(uint64_t seed, int M, int N, int K, int G, Fp8Format f) {
  w4a8test::Rng rng(seed);
  Layer l;
  l.M = M, l.N = N, l.K = K, l.G = G;
  l.x.resize((size_t)M * K);
  l.w.resize((size_t)N * K);
  for (float& v : l.x) v = rng.uniform(-3.0f, 3.0f);
  for (float& v : l.w) v = rng.uniform(-0.2f, 0.2f);
  l.codes.resize((size_t)N * K / 2);
  l.zeros.resize((size_t)N * K / G);
  l.groupScales.resize((size_t)N * K / G);
  l.channelScales.resize(N);
  Int4PackOptions options;
  options.groupSize = G;
  options.format = f;
  packInt4Rows(l.w.data(), N, K, options, {l.codes.data(), l.groupScales.data(), l.zeros.data(), l.channelScales.data()},
               0, N);
  l.view = {l.codes.data(), l.groupScales.data(), l.zeros.data(), l.channelScales.data(), N, K, G, f};
  l.x8.resize((size_t)M * K);
  l.xScales.resize(M);
  quantizeActivationsDynamic(l.x.data(), M, K, f, l.x8.data(), l.xScales.data());
  return l;
}

}  // namespace

TEST(w4a8_reference_matches_float64_on_odd_shapes) {
  const Fp8Format formats[] = {Fp8Format::E4M3FN, Fp8Format::E4M3, Fp8Format::E5M2};
  int caseIndex = 0;
  for (Fp8Format f : formats)
    for (int M : {1, 3, 8})
      for (int N : {1, 7, 33}) {
        const int G = 32 << (caseIndex % 3), K = G * (1 + caseIndex % 3);
        Layer l = makeLayer(100 + caseIndex++, M, N, K, G, f);
        std::vector<uint8_t> w8((size_t)N * K);
        dequantInt4ToFp8(l.view, w8.data(), 0, N);
        std::vector<float> y((size_t)M * N), yW8A8((size_t)M * N);
        reference::gemmW4A8({l.x8.data(), l.xScales.data(), f, M, l.view, {y.data(), nullptr, N}}, 0, N);
        Fp8WeightsView fp8View{w8.data(), l.channelScales.data(), N, K, f};
        reference::gemmW8A8({l.x8.data(), l.xScales.data(), f, M, fp8View, {yW8A8.data(), nullptr, N}}, 0, N);
        for (int m = 0; m < M; ++m)
          for (int n = 0; n < N; ++n) {
            double sum = 0, magnitude = 0;
            for (int k = 0; k < K; ++k) {
              const double p = (double)fp8Decode(l.x8[(size_t)m * K + k], f) * fp8Decode(w8[(size_t)n * K + k], f);
              sum += p;
              magnitude += std::fabs(p);
            }
            const double scale = (double)l.xScales[m] * l.channelScales[n];
            const double got = y[(size_t)m * N + n];
            CHECK(std::fabs(got - scale * sum) <= 1e-5 * scale * magnitude + 1e-30, "M=%d N=%d K=%d m=%d n=%d", M, N,
                  K, m, n);
            CHECK(floatBits(yW8A8[(size_t)m * N + n]) == floatBits(y[(size_t)m * N + n]), "W8A8 == W4A8");
          }
      }
}

TEST(w4a16_and_f32_reference_match_float64) {
  Layer l = makeLayer(5, 5, 9, 96, 32, Fp8Format::E4M3FN);
  std::vector<uint16_t> x16(l.x.size());
  floatToBf16Array(l.x.data(), l.x.size(), x16.data());
  std::vector<float> y(5 * 9), yF32(5 * 9);
  std::vector<uint16_t> yBf16(5 * 9);
  reference::gemmW4A16({x16.data(), 5, l.view, {y.data(), nullptr, 9}}, 0, 9);
  reference::gemmW4A16({x16.data(), 5, l.view, {nullptr, yBf16.data(), 9}}, 0, 9);
  reference::gemmF32({l.x.data(), l.w.data(), 5, 9, 96, {yF32.data(), nullptr, 9}}, 0, 9);
  for (int m = 0; m < 5; ++m)
    for (int n = 0; n < 9; ++n) {
      double sum = 0, magnitude = 0, sum32 = 0, magnitude32 = 0;
      for (int k = 0; k < 96; ++k) {
        const int g = k / 32;
        const int q = int4Code(l.codes.data() + (size_t)n * 48, k);
        const float wq = bf16ToFloat(floatToBf16(l.groupScales[n * 3 + g] * (float)(q - l.zeros[n * 3 + g])));
        const double p = (double)bf16ToFloat(x16[m * 96 + k]) * wq;
        sum += p;
        magnitude += std::fabs(p);
        sum32 += (double)l.x[m * 96 + k] * l.w[n * 96 + k];
        magnitude32 += std::fabs((double)l.x[m * 96 + k] * l.w[n * 96 + k]);
      }
      const double s = l.channelScales[n];
      CHECK(std::fabs(y[m * 9 + n] - s * sum) <= 1e-5 * s * magnitude, "W4A16 m=%d n=%d", m, n);
      CHECK(yBf16[m * 9 + n] == floatToBf16(y[m * 9 + n]), "BF16 output is the rounded FP32 output");
      CHECK(std::fabs(yF32[m * 9 + n] - sum32) <= 1e-5 * magnitude32, "F32 m=%d n=%d", m, n);
    }
}

TEST(activation_quantization_static_and_dynamic) {
  std::vector<float> x = {1.0f, -2.0f, 0.5f, 0.0f, 0.0f, 0.0f};
  std::vector<uint8_t> x8(6);
  std::vector<float> scales(2);
  quantizeActivationsDynamic(x.data(), 2, 3, Fp8Format::E4M3FN, x8.data(), scales.data());
  CHECK(scales[0] == 2.0f / 448.0f && scales[1] == 1.0f, "scales");
  CHECK(x8[1] == 0xFE, "amax maps to -max");
  quantizeActivationsStatic(x.data(), 2, 3, 0.001f, Fp8Format::E4M3FN, x8.data(), scales.data());
  CHECK(x8[0] == 0x7E && x8[1] == 0xFE && scales[1] == 0.001f, "static scale saturates");
}
