// Views of packed weights of one linear layer: W is [rows = N outputs, cols = K inputs].
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>
#include "fp8/fp8.h"

namespace w4a8 {

// INT4 weights, canonical layout (DESIGN.md §1), G = groupSize, K % G == 0, K even:
//   codes[n * K/2 + k/2]       uint8, low nibble = q[n, k] for even k, high nibble = q[n, k + 1]
//   groupScales[n * K/G + g]   FP32 s_g of group g = inputs [g*G, (g+1)*G)
//   zeros[n * K/G + g]         uint8 z in 0..15 (8 for symmetric packing)
//   channelScales[n]           FP32 s_c
// Dequantized weight: w8[n, k] = fp8(fl32(s_g * (q - z))), the product rounded to FP32 first.
// The real weight it stands for is s_c[n] * w8[n, k].
struct Int4Tables;  // kernels/int4_tables.h

struct Int4WeightsView {
  const uint8_t* codes;
  const float* groupScales;
  const uint8_t* zeros;
  const float* channelScales;
  int rows;
  int cols;
  int groupSize;
  Fp8Format format;  // FP8 format the INT4 codes dequantize into
  // Optional, owned elsewhere: the group tables prepared from these arrays (prepareInt4Tables), which the
  // int16 W4A8 kernels read instead of building them per call. Results are the same with or without.
  const Int4Tables* tables = nullptr;
  int groups() const { return cols / groupSize; }
};

struct Int4WeightsMut {
  uint8_t* codes;
  float* groupScales;
  uint8_t* zeros;
  float* channelScales;
};

// FP8 weights for W8A8:
//   codes[n * K + k]   FP8 code of W[n, k] / s_c[n]
//   channelScales[n]   FP32 s_c
struct Fp8WeightsView {
  const uint8_t* codes;
  const float* channelScales;
  int rows;
  int cols;
  Fp8Format format;
};

// The value of INT4 code q in a group, in FP32 before the FP8 rounding: fl32(s_g * (q - z)).
// `scale` where it is usable (finite and > 0), else 1: an all-zero row or group, or amax so small (subnormal) that
// amax / max underflows to 0 (a scale of 0 would be refused when the weights are wrapped again: fromParts).
inline float usableScale(float scale) { return scale > 0.0f && std::isfinite(scale) ? scale : 1.0f; }

inline float int4GroupValue(float groupScale, int zero, int q) { return groupScale * (float)(q - zero); }

inline int int4Code(const uint8_t* rowCodes, int k) {
  const uint8_t byte = rowCodes[k >> 1];
  return (k & 1) ? (byte >> 4) : (byte & 0x0F);
}

}  // namespace w4a8
