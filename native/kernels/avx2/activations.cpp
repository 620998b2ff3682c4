// AVX2 activation quantization, bit-exact with reference/activations.cpp: the same amax (max is exact
// and order-free; NaN is skipped like std::max does), the same scalar scale, the same FP32 division
// (vdivps is correctly rounded), and encodeFp8 (simd.h) reproduces fp8Encode for every input.
#include "kernels/avx2/simd.h"
#include "kernels/backends.h"

namespace w4a8::avx2 {
namespace {

// 8 codes (low bytes of the dwords of `codes`) -> 8 bytes at out.
W4A8_ALWAYS_INLINE uint64_t packCodes(__m256i codes) {
  const __m256i bytes = _mm256_shuffle_epi8(
      codes, _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1,
                              -1, -1, -1, -1, -1, -1, -1, -1, -1));
  return (uint64_t)(uint32_t)_mm256_extract_epi32(bytes, 0) | ((uint64_t)(uint32_t)_mm256_extract_epi32(bytes, 4) << 32);
}

void quantizeRow(const float* x, int K, float scale, const Fp8Vec& c, uint8_t* out) {
  const __m256 s = _mm256_set1_ps(scale);
  int k = 0;
  for (; k + 8 <= K; k += 8) {
    const uint64_t codes = packCodes(encodeFp8(_mm256_div_ps(_mm256_loadu_ps(x + k), s), c));
    __builtin_memcpy(out + k, &codes, 8);
  }
  if (k < K) {
    const __m256i mask = laneMask(K - k);
    const uint64_t codes = packCodes(encodeFp8(_mm256_div_ps(_mm256_maskload_ps(x + k, mask), s), c));
    __builtin_memcpy(out + k, &codes, (size_t)(K - k));
  }
}

float rowAmax(const float* x, int K) {
  __m256 amax = _mm256_setzero_ps();
  const __m256 absMask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  int k = 0;
  // max(a, b) returns b when either is NaN: NaN inputs leave amax unchanged, as std::max(amax, NaN).
  for (; k + 8 <= K; k += 8) amax = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(x + k), absMask), amax);
  if (k < K) amax = _mm256_max_ps(_mm256_and_ps(_mm256_maskload_ps(x + k, laneMask(K - k)), absMask), amax);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, amax);
  float m = 0.0f;
  for (float v : lanes) m = v > m ? v : m;
  return m;
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

}  // namespace w4a8::avx2
