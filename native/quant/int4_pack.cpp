#include "quant/int4_pack.h"

#include <algorithm>
#include <cmath>

namespace w4a8 {
namespace {

int clampCode(float x) { return (int)std::min(15.0f, std::max(0.0f, x)); }

}  // namespace

// Smallest power of two >= x (x > 0, finite).
float roundUpToPowerOfTwo(float x) {
  int exponent;
  const float mantissa = std::frexp(x, &exponent);  // x = mantissa * 2^exponent, mantissa in [0.5, 1)
  return mantissa == 0.5f ? x : std::ldexp(1.0f, exponent);
}

Int4GroupParams chooseInt4GroupParams(const float* scaled, int count, const Int4PackOptions& options) {
  float lo = 0.0f, hi = 0.0f;  // the range always holds 0 so that 0 stays representable
  for (int i = 0; i < count; ++i) {
    lo = std::min(lo, scaled[i]);
    hi = std::max(hi, scaled[i]);
  }
  float scale;
  if (options.symmetric) scale = std::max(-lo, hi) / 7.0f;
  else scale = (hi - lo) / 15.0f;
  scale = usableScale(scale);  // (an all-zero group: any scale works)
  if (options.pow2Scales) scale = roundUpToPowerOfTwo(scale);
  const int zero = options.symmetric ? 8 : clampCode(std::nearbyint(-lo / scale));
  return {scale, zero};
}

float int4ChannelTarget(const Int4PackOptions& options) {
  const float fp8Max = fp8Spec(options.format).maxFinite;
  if (!options.pow2Scales || options.format == Fp8Format::E5M2) return fp8Max;
  // The widest group a target T allows: symmetric s = pow2(T / 7) with |q - z| <= 8; asymmetric s = pow2(2T / 15)
  // (a range from -T to T) with |q - z| <= 15.
  for (float target = fp8Max;; target *= 0.5f) {
    const float widest = options.symmetric ? 8.0f * roundUpToPowerOfTwo(target / 7.0f)
                                           : 15.0f * roundUpToPowerOfTwo(2.0f * target / 15.0f);
    if (widest <= fp8Max) return target;
  }
}

void packInt4Rows(const float* w, int rows, int cols, const Int4PackOptions& options, Int4WeightsMut out,
                  int rowBegin, int rowEnd) {
  const int groups = cols / options.groupSize;
  const float target = int4ChannelTarget(options);
  float* scaled = new float[options.groupSize];
  for (int n = rowBegin; n < rowEnd; ++n) {
    const float* row = w + (size_t)n * cols;
    float amax = 0.0f;
    for (int k = 0; k < cols; ++k) amax = std::max(amax, std::fabs(row[k]));
    float channelScale = usableScale(amax / target);
    // Power-of-two scales: amax / s_c may round one ulp above the target, which would double the widest group's
    // scale (32 + ulp rounds up to 64) and saturate its table; the next scale up keeps it at or below.
    if (target < fp8Spec(options.format).maxFinite)
      while (amax / channelScale > target) channelScale = std::nextafter(channelScale, INFINITY);
    out.channelScales[n] = channelScale;
    uint8_t* rowCodes = out.codes + (size_t)n * (cols / 2);
    for (int g = 0; g < groups; ++g) {
      const float* groupWeights = row + (size_t)g * options.groupSize;
      for (int i = 0; i < options.groupSize; ++i) scaled[i] = groupWeights[i] / channelScale;
      const Int4GroupParams params = chooseInt4GroupParams(scaled, options.groupSize, options);
      out.groupScales[(size_t)n * groups + g] = params.scale;
      out.zeros[(size_t)n * groups + g] = (uint8_t)params.zero;
      for (int i = 0; i < options.groupSize; ++i) {
        const int q = clampCode(std::nearbyint(scaled[i] / params.scale) + (float)params.zero);
        const int k = g * options.groupSize + i;
        uint8_t& byte = rowCodes[k >> 1];
        byte = (k & 1) ? (uint8_t)((byte & 0x0F) | (q << 4)) : (uint8_t)((byte & 0xF0) | q);
      }
    }
  }
  delete[] scaled;
}

void unpackInt4Codes(const uint8_t* packed, size_t count, uint8_t* codes) {
  for (size_t i = 0; i < count; ++i) codes[i] = (uint8_t)((packed[i >> 1] >> ((i & 1) * 4)) & 0x0F);
}

}  // namespace w4a8
