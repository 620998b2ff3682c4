// AVX-512 activation quantization, bit-exact with reference/activations.cpp: the same amax (max is
// exact and order-free; NaN is skipped like std::max does), the same scalar scale, the same FP32
// division (vdivps is correctly rounded), and encodeFp8 (simd.h) reproduces fp8Encode for every input.
#include <algorithm>

#include "kernels/avx512/simd.h"
#include "kernels/backends.h"

namespace w4a8::avx512 {
namespace {

void quantizeRow(const float* x, int K, float scale, const Fp8Vec& c, uint8_t* out) {
  const __m512 s = _mm512_set1_ps(scale);
  for (int k = 0; k < K; k += 16) {
    const __mmask16 mask = lane32Mask(K - k);
    const __m512i codes = encodeFp8(_mm512_div_ps(_mm512_maskz_loadu_ps(mask, x + k), s), c);
    _mm_mask_storeu_epi8(out + k, mask, _mm512_cvtepi32_epi8(codes));
  }
}

float rowAmax(const float* x, int K) {
  __m512 amax = _mm512_setzero_ps();
  const __m512i absMask = _mm512_set1_epi32(0x7FFFFFFF);
  for (int k = 0; k < K; k += 16) {
    const __m512 v = _mm512_maskz_loadu_ps(lane32Mask(K - k), x + k);
    // max(a, b) returns b when either is NaN: NaN inputs leave amax unchanged, as std::max(amax, NaN).
    amax = _mm512_max_ps(_mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), absMask)), amax);
  }
  return _mm512_reduce_max_ps(amax);
}

}  // namespace

void quantizeActivationsStatic(const float* x, int M, int K, float scale, Fp8Format f, uint8_t* x8,
                               float* xScales) {
  const Fp8Vec c(fast::fp8Params(f));
  for (int m = 0; m < M; ++m) {
    xScales[m] = scale;
    quantizeRow(x + (size_t)m * K, K, scale, c, x8 + (size_t)m * K);
  }
}

void quantizeActivationsDynamic(const float* x, int M, int K, Fp8Format f, uint8_t* x8, float* xScales) {
  const fast::Fp8Params p = fast::fp8Params(f);
  const Fp8Vec c(p);
  for (int m = 0; m < M; ++m) {
    const float amax = rowAmax(x + (size_t)m * K, K);
    const float scale = amax > 0.0f ? amax / p.maxFinite : 1.0f;
    xScales[m] = scale;
    quantizeRow(x + (size_t)m * K, K, scale, c, x8 + (size_t)m * K);
  }
}

}  // namespace w4a8::avx512
