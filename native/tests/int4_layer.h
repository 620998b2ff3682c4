// A random INT4 layer for the kernel tests: weights packed by RTN, activations quantized per token, and the
// reference's FP8 dequantization of the weights (w8) for the error bounds. Shared by fast_kernels_test.cpp and
// amx_test.cpp.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/dispatch.h"
#include "kernels/kernels.h"
#include "quant/fp8_pack.h"
#include "quant/int4_pack.h"
#include "tests/check.h"

namespace w4a8test {

using namespace w4a8;

inline const char* formatName(Fp8Format f) { return f == Fp8Format::E4M3FN ? "e4m3fn" : f == Fp8Format::E4M3 ? "e4m3" : "e5m2"; }

struct Int4Layer {
  int M, N, K, G;
  Fp8Format weightFormat, actFormat;
  std::vector<float> x;
  std::vector<uint8_t> codes, zeros, x8, w8;  // w8: reference dequantization, for the tolerance only
  std::vector<uint16_t> x16;
  std::vector<float> groupScales, channelScales, xScales;
  Int4WeightsView view() const {
    return {codes.data(), groupScales.data(), zeros.data(), channelScales.data(), N, K, G, weightFormat};
  }
};

inline Int4Layer makeInt4Layer(uint64_t seed, int M, int N, int K, int G, Fp8Format wf, Fp8Format af, bool symmetric,
                        bool pow2) {
  w4a8test::Rng rng(seed);
  Int4Layer l;
  l.M = M, l.N = N, l.K = K, l.G = G, l.weightFormat = wf, l.actFormat = af;
  std::vector<float> w((size_t)N * K);
  for (float& v : w) v = rng.uniform(-0.2f, 0.2f) * (1 + rng.below(3));
  l.x.resize((size_t)M * K);
  for (float& v : l.x) v = rng.uniform(-3.0f, 3.0f) * std::ldexp(1.0f, rng.below(12) - 6);  // wide range
  l.codes.assign((size_t)N * K / 2, 0);
  l.zeros.assign((size_t)N * K / G, 0);
  l.groupScales.assign((size_t)N * K / G, 0);
  l.channelScales.assign(N, 0);
  Int4PackOptions options;
  options.groupSize = G;
  options.symmetric = symmetric;
  options.pow2Scales = pow2;
  options.format = wf;
  packInt4Rows(w.data(), N, K, options, {l.codes.data(), l.groupScales.data(), l.zeros.data(), l.channelScales.data()},
               0, N);
  l.x8.resize((size_t)M * K);
  l.xScales.resize(M);
  quantizeActivationsDynamic(l.x.data(), M, K, af, l.x8.data(), l.xScales.data());
  l.x16.resize(l.x.size());
  floatToBf16Array(l.x.data(), l.x.size(), l.x16.data());
  l.w8.resize((size_t)N * K);
  dequantInt4ToFp8(l.view(), l.w8.data(), 0, N);
  return l;
}

}  // namespace w4a8test
