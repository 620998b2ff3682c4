// AVX2 building blocks shared by the files of kernels/avx2/ (built with -mavx2 -mfma -mf16c; include
// nowhere else). Everything is in an anonymous namespace, so no AVX2 code can be picked by the linker
// for a baseline caller (see fast_common.h).
#pragma once
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "kernels/fast_common.h"
#include "kernels/kernels.h"

// Hot helpers must inline into the kernel loops (a call would pass vectors through memory).
#define W4A8_ALWAYS_INLINE inline __attribute__((always_inline))

namespace w4a8::avx2 {
namespace {

// Software prefetch of the weight stream, into the cache level fast::prefetchWeightsToL2 chooses for this CPU.
W4A8_ALWAYS_INLINE void prefetchWeights(const void* p) {
  if (fast::prefetchWeightsToL2) _mm_prefetch((const char*)p, _MM_HINT_T1);
  else _mm_prefetch((const char*)p, _MM_HINT_T0);
}

// Fp8Params as vectors.
struct Fp8Vec {
  __m256i shift, roundBias, minNormalBits, rebias, maxFiniteCode, magicBits;
  __m256 magic;
  explicit Fp8Vec(const fast::Fp8Params& p)
      : shift(_mm256_set1_epi32((int)p.mantissaShift)),
        roundBias(_mm256_set1_epi32((int)p.roundBias)),
        minNormalBits(_mm256_set1_epi32((int)p.minNormalBits)),
        rebias(_mm256_set1_epi32((int)p.rebias)),
        maxFiniteCode(_mm256_set1_epi32((int)p.maxFiniteCode)),
        magicBits(_mm256_set1_epi32((int)p.subnormalMagicBits)),
        magic(_mm256_set1_ps(p.subnormalMagic)) {}
};

W4A8_ALWAYS_INLINE __m256i absBits(__m256i u) { return _mm256_and_si256(u, _mm256_set1_epi32(0x7FFFFFFF)); }

// Magnitudes are below 2^31, so signed compares order them like unsigned ones.
W4A8_ALWAYS_INLINE __m256i lessThan(__m256i a, __m256i b) { return _mm256_cmpgt_epi32(b, a); }
W4A8_ALWAYS_INLINE __m256i isNanMagnitude(__m256i mag) { return _mm256_cmpgt_epi32(mag, _mm256_set1_epi32(0x7F800000)); }

// fp8Encode(v) (saturating) for every input: 8 codes, one in the low byte of each dword.
W4A8_ALWAYS_INLINE __m256i encodeFp8(__m256 v, const Fp8Vec& c) {
  const __m256i u = _mm256_castps_si256(v), mag = absBits(u);
  const __m256i lsb = _mm256_and_si256(_mm256_srlv_epi32(mag, c.shift), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_srlv_epi32(_mm256_add_epi32(_mm256_add_epi32(mag, c.roundBias), lsb), c.shift);
  __m256i code = _mm256_min_epu32(_mm256_sub_epi32(rounded, c.rebias), c.maxFiniteCode);
  const __m256i quanta =
      _mm256_sub_epi32(_mm256_castps_si256(_mm256_add_ps(_mm256_castsi256_ps(mag), c.magic)), c.magicBits);
  code = _mm256_blendv_epi8(code, quanta, lessThan(mag, c.minNormalBits));
  code = _mm256_blendv_epi8(code, _mm256_set1_epi32(0x7F), isNanMagnitude(mag));
  return _mm256_or_si256(code, _mm256_and_si256(_mm256_srli_epi32(u, 24), _mm256_set1_epi32(0x80)));
}

// floatToBf16(v) as FP32 (the BF16 value, low half zero): round to nearest even, NaN stays quiet NaN.
W4A8_ALWAYS_INLINE __m256 roundToBf16(__m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), lsb);
  r = _mm256_blendv_epi8(r, _mm256_or_si256(u, _mm256_set1_epi32(0x00400000)), isNanMagnitude(absBits(u)));
  return _mm256_castsi256_ps(_mm256_and_si256(r, _mm256_set1_epi32((int)0xFFFF0000u)));
}

W4A8_ALWAYS_INLINE float horizontalSum(__m256 v) {
  const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(t, _mm_movehdup_ps(t)));
}

// floatToBf16 (fp8.h), repeated here so that no inline function of a shared header is compiled with
// AVX2 flags (see fast_common.h).
W4A8_ALWAYS_INLINE uint16_t toBf16(float x) {
  uint32_t u;
  __builtin_memcpy(&u, &x, 4);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40u);
  return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

W4A8_ALWAYS_INLINE void storeValue(const GemmOutput& y, int m, int n, float value) {
  const size_t index = (size_t)m * y.ldy + n;
  if (y.f32) y.f32[index] = value;
  else y.bf16[index] = toBf16(value);
}

// Lane mask for vmaskmovps: the first `lanes` of 8 (lanes may be <= 0 or >= 8).
W4A8_ALWAYS_INLINE __m256i laneMask(int lanes) {
  const __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), index);
}

}  // namespace
}  // namespace w4a8::avx2
