// Helpers shared by the two W4A8 kernels on exact int16 products (avx2/w4a8_int16.cpp, avx512/w4a8_vnni.cpp):
// the FP8 format's integer parameters, exact powers of two, and the code range of an activation group.
// Everything sits in an unnamed namespace on purpose: the two files compile with different ISA flags, so
// each must get its own copy (one inline definition shared by the linker could carry AVX-512 code into the
// AVX2 path). Include it after the file's SIMD header, inside no namespace.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/fast_common.h"

namespace w4a8::int16 {
namespace {

struct FormatInfo {
  int mantissaBits, bias;
  int quantumExp;     // exponent of the smallest subnormal
  int ulpMaxExp;      // exponent of the ulp of the largest finite value
  int maxFiniteCode;  // largest finite magnitude code
  float maxFinite;
  bool e5m2;          // FP16 bits of a code: e5m2 code << 8; e4m3 formats (mag << 7) | sign = value * 2^-8
};

inline FormatInfo formatInfo(Fp8Format f) {
  const fast::Fp8Params p = fast::fp8Params(f);
  FormatInfo i;
  i.mantissaBits = 23 - (int)p.mantissaShift;
  i.bias = 128 - (int)(p.minNormalBits >> 23);
  i.quantumExp = 1 - i.bias - i.mantissaBits;
  i.ulpMaxExp = (int)(p.maxFiniteBits >> 23) - 127 - i.mantissaBits;
  i.maxFiniteCode = (int)p.maxFiniteCode;
  i.maxFinite = p.maxFinite;
  i.e5m2 = f == Fp8Format::E5M2;
  return i;
}

__attribute__((always_inline)) inline float pow2(int e) {  // -126 <= e <= 127
  const uint32_t bits = (uint32_t)(e + 127) << 23;
  float v;
  std::memcpy(&v, &bits, 4);
  return v;
}

__attribute__((always_inline)) inline int horizontalMaxU8(__m256i v) {
  __m128i m = _mm_max_epu8(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  m = _mm_max_epu8(m, _mm_srli_si128(m, 8));
  m = _mm_max_epu8(m, _mm_srli_si128(m, 4));
  m = _mm_max_epu8(m, _mm_srli_si128(m, 2));
  m = _mm_max_epu8(m, _mm_srli_si128(m, 1));
  return _mm_cvtsi128_si32(m) & 0xFF;
}

// Largest and smallest nonzero magnitude code of one group (G codes, G a multiple of 32; 255: none).
inline void groupMagnitudes(const uint8_t* codes, int G, int& largest, int& smallestNonzero) {
  const __m256i magnitude = _mm256_set1_epi8(0x7F), zero = _mm256_setzero_si256();
  __m256i hi = zero, lo = _mm256_set1_epi8(-1);
  for (int i = 0; i < G; i += 32) {
    const __m256i c = _mm256_and_si256(_mm256_loadu_si256((const __m256i*)(codes + i)), magnitude);
    hi = _mm256_max_epu8(hi, c);
    lo = _mm256_min_epu8(lo, _mm256_or_si256(c, _mm256_cmpeq_epi8(c, zero)));  // zero codes count as 0xFF
  }
  largest = horizontalMaxU8(hi);
  smallestNonzero = 255 - horizontalMaxU8(_mm256_xor_si256(lo, _mm256_set1_epi8(-1)));
}

}  // namespace
}  // namespace w4a8::int16
