// AVX-512 building blocks shared by the files of kernels/avx512/ (built with AVX-512 flags; include
// nowhere else). Everything is in an anonymous namespace: each object file keeps its own copy, so no
// AVX-512 code can be picked by the linker for a baseline caller.
#pragma once
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "kernels/fast_common.h"
#include "kernels/kernels.h"

// Hot helpers must inline into the kernel loops (a call would pass vectors through memory).
#define W4A8_ALWAYS_INLINE inline __attribute__((always_inline))

namespace w4a8::avx512 {
namespace {

// Software prefetch of the weight stream, into the cache level fast::prefetchWeightsToL2 chooses for this CPU.
W4A8_ALWAYS_INLINE void prefetchWeights(const void* p) {
  if (fast::prefetchWeightsToL2) _mm_prefetch((const char*)p, _MM_HINT_T1);
  else _mm_prefetch((const char*)p, _MM_HINT_T0);
}

// Fp8Params as vectors.
struct Fp8Vec {
  __m512i shift, roundBias, keepMask, maxFiniteBits, minNormalBits, rebias, maxFiniteCode;
  __m512 magic, maxFinite;
  __m512i magicBits, binadeToQuantumStep;
  explicit Fp8Vec(const fast::Fp8Params& p)
      : shift(_mm512_set1_epi32((int)p.mantissaShift)),
        roundBias(_mm512_set1_epi32((int)p.roundBias)),
        keepMask(_mm512_set1_epi32((int)p.keepMask)),
        maxFiniteBits(_mm512_set1_epi32((int)p.maxFiniteBits)),
        minNormalBits(_mm512_set1_epi32((int)p.minNormalBits)),
        rebias(_mm512_set1_epi32((int)p.rebias)),
        maxFiniteCode(_mm512_set1_epi32((int)p.maxFiniteCode)),
        magic(_mm512_set1_ps(p.subnormalMagic)),
        maxFinite(_mm512_set1_ps(p.maxFinite)),
        magicBits(_mm512_set1_epi32((int)p.subnormalMagicBits)),
        binadeToQuantumStep(_mm512_set1_epi32((int)(p.mantissaShift << 23))) {}
};

W4A8_ALWAYS_INLINE __m512i absBits(__m512i u) { return _mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF)); }

// bits(|v|) rounded to the FP8 mantissa width, ties to even, clamped to the largest finite value:
// the normal-range half of fp8Encode, in FP32 bit form (a carry moves into the exponent by itself).
W4A8_ALWAYS_INLINE __m512i roundMagnitudeNormal(__m512i mag, const Fp8Vec& c) {
  const __m512i lsb = _mm512_and_si512(_mm512_srlv_epi32(mag, c.shift), _mm512_set1_epi32(1));
  const __m512i r = _mm512_add_epi32(_mm512_add_epi32(mag, c.roundBias), lsb);
  return _mm512_min_epu32(_mm512_and_si512(r, c.keepMask), c.maxFiniteBits);
}

// OR the sign bit of `from` into `bits`.
W4A8_ALWAYS_INLINE __m512i withSignOf(__m512i bits, __m512i from) {
  return _mm512_ternarylogic_epi32(bits, from, _mm512_set1_epi32((int)0x80000000u), 0xF8);  // a | (b & c)
}

// The FP32 value of fp8(v), i.e. fp8Decode(fp8Encode(v)) (saturating), for every input.
W4A8_ALWAYS_INLINE __m512i roundToFp8Value(__m512 v, const Fp8Vec& c) {
  const __m512i u = _mm512_castps_si512(v), mag = absBits(u);
  __m512i r = roundMagnitudeNormal(mag, c);
  // Below the smallest normal: round |v| to a multiple of the FP8 quantum with one FP32 add.
  const __m512 sub = _mm512_sub_ps(_mm512_add_ps(_mm512_castsi512_ps(mag), c.magic), c.magic);
  r = _mm512_mask_mov_epi32(r, _mm512_cmplt_epu32_mask(mag, c.minNormalBits), _mm512_castps_si512(sub));
  r = _mm512_mask_mov_epi32(r, _mm512_cmpgt_epu32_mask(mag, _mm512_set1_epi32(0x7F800000)),
                            _mm512_set1_epi32(0x7FC00000));
  return withSignOf(r, u);
}

// Same for inputs |v| <= 2^104 (so not NaN or inf), in 6 operations: with C = +-2^(e + mantissaShift)
// for v's binade 2^e, raised to the smallest normal's binade below it (where FP8 subnormals have that
// binade's quantum), the FP32 add v + C has a unit in the last place of exactly one FP8 quantum
// 2^(e - mantissaBits) and rounds to nearest even like fp8Encode; subtracting C is exact. vrangeps then
// clamps |r| to the largest finite value, keeping the sign (saturation). (A zero comes out as +0, where
// fp8Encode keeps -0: the same value in every product and sum.)
W4A8_ALWAYS_INLINE __m512i roundToFp8ValueShort(__m512 v, const Fp8Vec& c) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i binade = _mm512_max_epu32(_mm512_and_si512(u, _mm512_set1_epi32(0x7F800000)), c.minNormalBits);
  const __m512 offset = _mm512_castsi512_ps(
      withSignOf(_mm512_add_epi32(binade, c.binadeToQuantumStep), u));
  const __m512 r = _mm512_sub_ps(_mm512_add_ps(v, offset), offset);
  return _mm512_castps_si512(_mm512_range_ps(r, c.maxFinite, 0x02));  // min |.|, sign of r
}

// fp8Encode(v) (saturating) for every input: 16 codes, one in the low byte of each dword.
W4A8_ALWAYS_INLINE __m512i encodeFp8(__m512 v, const Fp8Vec& c) {
  const __m512i u = _mm512_castps_si512(v), mag = absBits(u);
  const __m512i lsb = _mm512_and_si512(_mm512_srlv_epi32(mag, c.shift), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_srlv_epi32(_mm512_add_epi32(_mm512_add_epi32(mag, c.roundBias), lsb), c.shift);
  __m512i code = _mm512_min_epu32(_mm512_sub_epi32(rounded, c.rebias), c.maxFiniteCode);
  // Below the smallest normal the code is the number of quanta; it is never negative there.
  const __m512i quanta =
      _mm512_sub_epi32(_mm512_castps_si512(_mm512_add_ps(_mm512_castsi512_ps(mag), c.magic)), c.magicBits);
  code = _mm512_mask_mov_epi32(code, _mm512_cmplt_epu32_mask(mag, c.minNormalBits), quanta);
  code = _mm512_mask_mov_epi32(code, _mm512_cmpgt_epu32_mask(mag, _mm512_set1_epi32(0x7F800000)),
                               _mm512_set1_epi32(0x7F));
  return _mm512_or_si512(code, _mm512_and_si512(_mm512_srli_epi32(u, 24), _mm512_set1_epi32(0x80)));
}

// floatToBf16(v) in the high word of each dword (the low word is garbage): round to nearest even,
// NaN stays a quiet NaN. Integer arithmetic, so FP32 subnormals round like the scalar code
// (vcvtneps2bf16 would flush them).
W4A8_ALWAYS_INLINE __m512i roundToBf16High(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i r = _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), lsb);
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(absBits(u), _mm512_set1_epi32(0x7F800000));
  return _mm512_mask_or_epi32(r, nan, u, _mm512_set1_epi32(0x00400000));
}

// Two vectors of 16 dwords -> one of 32 words: the high word of each dword, a's then b's.
W4A8_ALWAYS_INLINE __m512i packHighWords(__m512i a, __m512i b) {
  alignas(64) static const uint16_t idx[32] = {1,  3,  5,  7,  9,  11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31,
                                               33, 35, 37, 39, 41, 43, 45, 47, 49, 51, 53, 55, 57, 59, 61, 63};
  return _mm512_permutex2var_epi16(a, _mm512_load_si512(idx), b);
}

W4A8_ALWAYS_INLINE float horizontalSum(__m512 v) { return _mm512_reduce_add_ps(v); }

// floatToBf16 (fp8.h), repeated here so that no inline function of a shared header is compiled with
// AVX-512 flags (see fast_common.h).
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

W4A8_ALWAYS_INLINE __mmask64 byteMask(int bytes) {
  return bytes >= 64 ? ~0ull : bytes <= 0 ? 0ull : ((1ull << bytes) - 1);
}
W4A8_ALWAYS_INLINE __mmask32 lane16Mask(int lanes) {
  return (__mmask32)(lanes >= 32 ? 0xFFFFFFFFu : lanes <= 0 ? 0u : ((1u << lanes) - 1));
}
W4A8_ALWAYS_INLINE __mmask16 lane32Mask(int lanes) {
  return (__mmask16)(lanes >= 16 ? 0xFFFFu : lanes <= 0 ? 0u : ((1u << lanes) - 1));
}

}  // namespace
}  // namespace w4a8::avx512
