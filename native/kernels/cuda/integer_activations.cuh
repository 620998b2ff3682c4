// Activations in the integer GEMV's form (gemv_int8.cu): each E4M3 code as three signed 7-bit limbs, with the
// limb sums of every group of 128 k and a NaN flag per token part. Made by the GEMV's own pre-pass or, for free,
// by the activation quantization (quantize_kernels.cu) when the caller asks for it (cuda_backend.h,
// IntegerActivations). Why limbs: an E4M3 value times 2^9 is an integer below 448 * 2^9 < 2^18, and three 7-bit
// limbs X = X0 + 2^7 X1 + 2^14 X2 hold it exactly, each fit for an s8 MMA operand.
#pragma once
#include <cstddef>
#include <cstdint>

#include "fp8/fp8.h"

namespace w4a8::cudakern {

constexpr int kIntRoundK = 128;  // k per group (the integer GEMV takes G = 128 only)
constexpr int kLimbs = 3;
constexpr int kIntMaxTokens = 8;
constexpr int kLimbColumns = 8 * ((kLimbs * kIntMaxTokens + 7) / 8);  // limb sums per group, padded: 24

struct IntegerParts {  // the three parts of one buffer (IntegerActivationsLayout); limbs null: none
  uint8_t* limbs;
  int* sums;
  float* flags;
};

// Where the parts lie in one buffer, for rows of K: limbs [3 * 8, K] bytes (row 3m + l: limb l of token m),
// sums [K / 128, 24] int32 (column 3m + l; columns past 3M zero), flags [8, flagsPerToken] floats (0 or NaN).
// The offsets do not depend on flagsPerToken, only the total does.
struct IntegerActivationsLayout {
  size_t limbs, sums, flags, total;
  IntegerActivationsLayout(int K, int flagsPerToken) {
    auto round256 = [](size_t x) { return (x + 255) / 256 * 256; };
    limbs = 0;
    sums = round256((size_t)kLimbs * kIntMaxTokens * K);
    flags = sums + round256((size_t)(K / kIntRoundK) * kLimbColumns * sizeof(int));
    total = flags + round256((size_t)kIntMaxTokens * flagsPerToken * sizeof(float));
  }
  IntegerParts parts(void* buffer) const {
    uint8_t* base = static_cast<uint8_t*>(buffer);
    return {base + limbs, reinterpret_cast<int*>(base + sums), reinterpret_cast<float*>(base + flags)};
  }
};

W4A8_HD bool e4m3Family(Fp8Format f) { return f == Fp8Format::E4M3FN || f == Fp8Format::E4M3; }

// A linear group (host and device): s = +-2^k with k >= -9 (every multiple of s up to 15 s has at most 4
// significant bits and lies on or above the subnormal step 2^-9), z <= 15 and max(z, 15 - z) |s| within the format's
// largest finite value fp8Max (no saturation): then fp8(fl32(s (q - z))) = s (q - z) for every code q.
W4A8_HD bool linearGroup(float s, int z, float fp8Max) {
  const uint32_t bits = floatBits(s);
  return (unsigned)z <= 15u && (bits & 0x007FFFFFu) == 0 && ((bits >> 23) & 0xFFu) >= 118u &&
         (float)(z > 15 - z ? z : 15 - z) * (s < 0.0f ? -s : s) <= fp8Max;
}

#ifdef __CUDACC__
// One warp: token m's group gi (lane l: k 4l .. 4l + 3) of x8Row -> its limbs and limb sums; M tokens in all (the
// last one's warps zero the padding columns). Returns nonzero when a code is NaN (or Gaudi-2 inf).
__device__ __forceinline__ int limbGroup(const uint8_t* x8Row, int m, int M, int K, int gi, bool gaudi,
                                         uint8_t* limbs, int* sums) {
  const int lane = threadIdx.x & 31, k = gi * kIntRoundK + 4 * lane;
  const uint32_t codes = *reinterpret_cast<const uint32_t*>(x8Row + k);
  uint32_t word[kLimbs] = {0, 0, 0};
  int sum[kLimbs] = {0, 0, 0};
  int nonFinite = 0;
#pragma unroll
  for (int b = 0; b < 4; ++b) {
    const uint32_t c = (codes >> (8 * b)) & 0xFFu, e = (c >> 3) & 15u, mantissa = c & 7u;
    nonFinite |= gaudi ? e == 15u : (c & 0x7Fu) == 0x7Fu;
    const int x = e ? (int)((8u | mantissa) << (e - 1)) : (int)mantissa;  // |x8| * 2^9
#pragma unroll
    for (int l = 0; l < kLimbs; ++l) {
      int v = (x >> (7 * l)) & 127;
      if (c & 0x80u) v = -v;
      sum[l] += v;
      word[l] |= (uint32_t)(v & 0xFF) << (8 * b);
    }
  }
#pragma unroll
  for (int l = 0; l < kLimbs; ++l) {
    *reinterpret_cast<uint32_t*>(limbs + (size_t)(kLimbs * m + l) * K + k) = word[l];
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) sum[l] += __shfl_xor_sync(0xffffffffu, sum[l], offset);
  }
  if (lane < kLimbs) sums[(size_t)gi * kLimbColumns + kLimbs * m + lane] = sum[lane];
  if (m == M - 1)
    for (int c = kLimbs * M + lane; c < kLimbColumns; c += 32) sums[(size_t)gi * kLimbColumns + c] = 0;
  return nonFinite;
}
#endif

}  // namespace w4a8::cudakern
