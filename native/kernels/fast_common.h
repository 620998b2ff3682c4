// Plain data and helpers shared by the fast CPU backends (avx2/, avx512/), compiled for baseline x86-64.
//
// The ISA folders are built with their own -m flags. Anything they share must therefore be either a
// plain struct or a non-inline function defined here: an inline function or template instantiated in an
// AVX-512 object would be emitted as a weak symbol that the linker may pick for baseline callers too.
#pragma once
#include <cstddef>
#include <cstdint>

#include "fp8/fp8.h"
#include "quant/weights.h"

namespace w4a8::fast {

// Constants of one FP8 format for the vectorized encoders. Rounding an FP32 `v` to FP8 works on
// mag = bits(|v|) (DESIGN.md §1, fp8Encode):
//   normal range  (mag >= minNormalBits): keep the top mantissaBits of the FP32 mantissa, ties to even,
//                 rounded = (mag + roundBias + ((mag >> mantissaShift) & 1)) & keepMask, then clamp
//                 to maxFiniteBits (saturation; +-inf saturates the same way);
//   below normal: quanta = bits(|v| + subnormalMagic) - bits(subnormalMagic), an FP32 add that
//                 rounds |v| to a multiple of the FP8 quantum, ties to even, exactly as fp8Encode;
//   NaN          (mag > 0x7F800000): code sign|0x7F, value sign|0x7FC00000.
struct Fp8Params {
  uint32_t mantissaShift;   // 23 - mantissaBits
  uint32_t roundBias;       // (1 << (mantissaShift - 1)) - 1
  uint32_t keepMask;        // ~((1 << mantissaShift) - 1)
  uint32_t maxFiniteBits;   // FP32 bits of the largest finite value
  uint32_t minNormalBits;   // FP32 bits of the smallest normal value, 2^(1 - bias)
  float subnormalMagic;     // 2^23 * quantum, quantum = 2^(1 - bias - mantissaBits)
  uint32_t subnormalMagicBits;
  uint32_t rebias;          // ((127 - bias) << mantissaBits): FP32 rounded bits >> shift, minus this, is the code
  uint32_t maxFiniteCode;
  float maxFinite;
};
Fp8Params fp8Params(Fp8Format f);

// FP8 code -> BF16 split into bytes, for byte-shuffle decoders (vpermi2b): indexed by code & 0x7F,
// the sign is ORed into the high byte afterwards (decode(c) = sign(c) | decode(c & 0x7F) bitwise).
//   high[c] = bf16(decode(c)) >> 8, low[c] = bf16(decode(c)) & 0xFF, c in 0..127
struct Fp8Bf16Bytes {
  alignas(64) uint8_t high[128];
  alignas(64) uint8_t low[128];
};
const Fp8Bf16Bytes& fp8Bf16Bytes(Fp8Format f);

// Whether the fast kernels' software prefetches of their weight stream (the INT4 or FP8 codes a few KiB ahead)
// fill L2 only (prefetcht1) instead of L1 too (prefetcht0). True on AMD: on Zen 4 (2 threads, M = 1, 4096x11008,
// interleaved A/B) prefetcht1 made the VNNI W4A8 GEMV 1.36x faster (1.40 -> 1.03 ms median), W8A8 1.1-1.3x and
// the AVX2 W4A8 GEMV 1.05x; on the device's Xeon it was the same or up to 5 % slower, so Intel keeps prefetcht0.
extern const bool prefetchWeightsToL2;

// Per-thread scratch memory, 64-byte aligned, grown on demand and kept for the thread's lifetime, so a
// kernel call allocates nothing once the thread has seen its largest shape. Slots are independent buffers.
enum ScratchSlot {
  kScratchActivations = 0,
  kScratchWeights = 1,
  kScratchAccumulators = 2,
  kScratchActivationInfo = 3,  // avx2 W4A8: per-row, per-group data about the prepared activations
  kScratchActivationPlanes = 4,  // avx2 W4A8: the prepared activations
  kScratchActivationCopy = 5,    // avx2 W4A8: the FP8 activations they were prepared from
  kScratchVnniInfo = 6,          // avx512 VNNI W4A8: the same three for its own layout,
  kScratchVnniPlanes = 7,
  kScratchVnniCopy = 8,
  kScratchVnniWeights = 9,       // and its per-row weight tables and accumulators
  kScratchSlots = 10
};
// `grown` (optional) is set when the slot was reallocated: its old contents are gone.
void* threadScratch(ScratchSlot slot, size_t bytes, bool* grown = nullptr);

// INT4 -> FP8 codes through the 16-entry per-group code table (16 encodes per group instead of G):
// the same result as dequantInt4ToFp8 (reference/dequant.cpp), byte for byte. Portable C++.
void lutDequantInt4ToFp8(const Int4WeightsView& w, uint8_t* out, int nBegin, int nEnd);

// Row n as FP32 values of its FP8 weights: out[k] = fp8Decode(fp8(fl32(s_g * (q - z)))), k = 0..K-1 (the
// generic path of fast kernels, for rows with non-finite scales). Portable C++.
void int4RowValues(const Int4WeightsView& w, int n, float* out);

// True when every group scale s of row n has lo <= |s| <= hi (false for NaN). With lo = the FP8
// format's smallest normal and hi = 2^100, every s * (q - z) is zero or a normal FP8-or-larger value
// far from FP32 overflow, so the short table path (no subnormal, NaN or inf handling) is exact.
bool rowScalesWithin(const Int4WeightsView& w, int n, float lo, float hi);

// True when some group scale of row n has 0 < |s| < 2^-126, i.e. a BF16 weight s * (q - z) may be an
// FP32/BF16 subnormal, which vdpbf16ps would flush to zero.
bool rowHasSubnormalScales(const Int4WeightsView& w, int n);

}  // namespace w4a8::fast
