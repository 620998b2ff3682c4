// FP8 formats and exact conversions, shared by every backend (host C++ and CUDA device code).
//
// Three 8-bit float formats (DESIGN.md §1), all with a sign bit on top:
//   e4m3fn  1-4-3, bias 7,  max 448,   no infinities; S.1111.111 is NaN        (OCP, Hopper, Gaudi 3)
//   e4m3    1-4-3, bias 7,  max 240,   exponent 1111 is inf (mantissa 0) / NaN (IEEE-style, Gaudi 2)
//   e5m2    1-5-2, bias 15, max 57344, exponent 11111 is inf / NaN             (IEEE)
// Code 0x7F (with either sign) is a NaN in all three formats, so NaN inputs encode to sign|0x7F.
//
// encode(): FP32 -> FP8 with round-to-nearest-even, gradual underflow (subnormals), and by default
// saturation of finite overflow and of +-inf to +-max finite. With saturate = false, overflow gives
// +-inf where the format has it and NaN for e4m3fn, as the OCP spec's non-saturating mode does.
// decode(): FP8 -> FP32, exact (every FP8 value is an FP32, and a BF16, value).
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define W4A8_HD __host__ __device__ __forceinline__
#else
#define W4A8_HD inline
#endif

namespace w4a8 {

enum class Fp8Format : uint8_t { E4M3FN = 0, E4M3 = 1, E5M2 = 2 };
constexpr int kFp8FormatCount = 3;

struct Fp8Spec {
  int exponentBits;
  int mantissaBits;
  int bias;
  bool ieeeSpecials;     // true: the all-ones exponent holds inf/NaN (e4m3, e5m2)
  uint8_t maxFiniteCode; // largest finite positive code
  uint8_t overflowCode;  // non-saturating overflow result: inf, or NaN where the format has no inf
  float maxFinite;
};

W4A8_HD Fp8Spec fp8Spec(Fp8Format f) {
  switch (f) {
    case Fp8Format::E4M3: return {4, 3, 7, true, 0x77, 0x78, 240.0f};
    case Fp8Format::E5M2: return {5, 2, 15, true, 0x7B, 0x7C, 57344.0f};
    default:              return {4, 3, 7, false, 0x7E, 0x7F, 448.0f};
  }
}

W4A8_HD uint32_t floatBits(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
W4A8_HD float bitsFloat(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }

// Shifts `value` right by `shift` (1..31) bits, rounding to nearest with ties to even.
W4A8_HD uint32_t shiftRightRne(uint32_t value, int shift) {
  uint32_t kept = value >> shift;
  uint32_t rest = value & ((1u << shift) - 1u);
  uint32_t half = 1u << (shift - 1);
  return kept + ((rest > half || (rest == half && (kept & 1u))) ? 1u : 0u);
}

W4A8_HD uint8_t fp8Encode(float x, Fp8Format f, bool saturate = true) {
  const Fp8Spec s = fp8Spec(f);
  const uint32_t u = floatBits(x);
  const uint8_t sign = (uint8_t)((u >> 24) & 0x80u);
  const uint32_t magnitude = u & 0x7FFFFFFFu;
  if (magnitude > 0x7F800000u) return sign | 0x7F;  // NaN stays NaN
  if (magnitude == 0x7F800000u) return sign | (saturate ? s.maxFiniteCode : s.overflowCode);

  const int exp32 = (int)(magnitude >> 23);  // biased FP32 exponent
  const int minNormalExp32 = 127 + 1 - s.bias;
  if (exp32 < minNormalExp32) {
    // Below the smallest FP8 normal: count subnormal quanta of 2^(1 - bias - mantissaBits).
    // FP32 zeros and subnormals (exp32 == 0) are far below half a quantum and give 0.
    if (exp32 == 0) return sign;
    const uint32_t mantissa = (magnitude & 0x7FFFFFu) | 0x800000u;  // value = mantissa * 2^(exp32-150)
    const int shift = (1 - s.bias - s.mantissaBits) + 150 - exp32;   // > mantissaBits + 0
    if (shift > 25) return sign;  // mantissa < 2^24: below half a quantum
    // The result may round up to 2^mantissaBits quanta, which is exactly the code of the smallest normal.
    return sign | (uint8_t)shiftRightRne(mantissa, shift);
  }
  // Normal range: keep mantissaBits of the FP32 mantissa; a carry moves into the exponent naturally.
  const uint32_t rounded = shiftRightRne(magnitude, 23 - s.mantissaBits);
  const uint32_t rebias = (uint32_t)(127 - s.bias) << s.mantissaBits;
  const uint32_t code = rounded - rebias;
  if (code > s.maxFiniteCode) return sign | (saturate ? s.maxFiniteCode : s.overflowCode);
  return sign | (uint8_t)code;
}

W4A8_HD float fp8Decode(uint8_t code, Fp8Format f) {
  const Fp8Spec s = fp8Spec(f);
  const uint32_t sign = (uint32_t)(code & 0x80) << 24;
  const uint32_t exponentField = (code & 0x7F) >> s.mantissaBits;
  const uint32_t mantissa = code & ((1u << s.mantissaBits) - 1u);
  const uint32_t allOnes = (1u << s.exponentBits) - 1u;
  if (s.ieeeSpecials && exponentField == allOnes)
    return bitsFloat(sign | 0x7F800000u | (mantissa ? 0x400000u : 0u));  // inf or quiet NaN
  if (!s.ieeeSpecials && (code & 0x7F) == 0x7F) return bitsFloat(sign | 0x7FC00000u);
  if (exponentField == 0) {
    // Subnormal: mantissa * 2^(1 - bias - mantissaBits), exact in FP32.
    const float quantum = bitsFloat((uint32_t)(127 + 1 - s.bias - s.mantissaBits) << 23);
    return bitsFloat(sign | floatBits((float)mantissa * quantum));
  }
  const uint32_t exp32 = exponentField - (uint32_t)s.bias + 127u;
  return bitsFloat(sign | (exp32 << 23) | (mantissa << (23 - s.mantissaBits)));
}

// BF16 <-> FP32. BF16 is the top half of an FP32; rounding is to nearest even, NaN stays quiet NaN.
W4A8_HD uint16_t floatToBf16(float x) {
  const uint32_t u = floatBits(x);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40u);
  return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
W4A8_HD float bf16ToFloat(uint16_t h) { return bitsFloat((uint32_t)h << 16); }

// Host-side 256-entry decode tables, built once (fp8_tables.cpp): decodeTable(f)[code] == fp8Decode(code, f).
const float* fp8DecodeTable(Fp8Format f);
const uint16_t* fp8DecodeTableBf16(Fp8Format f);

// Bulk conversions over contiguous arrays.
void fp8EncodeArray(const float* in, uint8_t* out, size_t count, Fp8Format f, bool saturate);
void fp8EncodeBf16Array(const uint16_t* in, uint8_t* out, size_t count, Fp8Format f, bool saturate);
void fp8DecodeArray(const uint8_t* in, float* out, size_t count, Fp8Format f);
void fp8DecodeBf16Array(const uint8_t* in, uint16_t* out, size_t count, Fp8Format f);

}  // namespace w4a8
