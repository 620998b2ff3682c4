#include "kernels/fast_common.h"

#include <cmath>
#include <cstdlib>

#include "kernels/cpu_features.h"
#include "kernels/kernels.h"

namespace w4a8::fast {

const bool prefetchWeightsToL2 = cpuFeatures().amd;

Fp8Params fp8Params(Fp8Format f) {
  const Fp8Spec s = fp8Spec(f);
  Fp8Params p;
  p.mantissaShift = (uint32_t)(23 - s.mantissaBits);
  p.roundBias = (1u << (p.mantissaShift - 1)) - 1u;
  p.keepMask = ~((1u << p.mantissaShift) - 1u);
  p.maxFiniteBits = floatBits(s.maxFinite);
  p.minNormalBits = (uint32_t)(127 + 1 - s.bias) << 23;
  p.subnormalMagicBits = (uint32_t)(127 + 1 - s.bias - s.mantissaBits + 23) << 23;
  p.subnormalMagic = bitsFloat(p.subnormalMagicBits);
  p.rebias = (uint32_t)(127 - s.bias) << s.mantissaBits;
  p.maxFiniteCode = s.maxFiniteCode;
  p.maxFinite = s.maxFinite;
  return p;
}

namespace {
struct Bf16ByteTables {
  Fp8Bf16Bytes formats[kFp8FormatCount];
  Bf16ByteTables() {
    for (int f = 0; f < kFp8FormatCount; ++f)
      for (int c = 0; c < 128; ++c) {
        const uint16_t h = fp8DecodeTableBf16((Fp8Format)f)[c];
        formats[f].high[c] = (uint8_t)(h >> 8);
        formats[f].low[c] = (uint8_t)(h & 0xFF);
      }
  }
};

struct ThreadScratch {
  void* data[kScratchSlots] = {};
  size_t size[kScratchSlots] = {};
  ~ThreadScratch() {
    for (void* p : data) std::free(p);
  }
};
thread_local ThreadScratch tlsScratch;
}  // namespace

const Fp8Bf16Bytes& fp8Bf16Bytes(Fp8Format f) {
  static const Bf16ByteTables tables;
  return tables.formats[(int)f];
}

void* threadScratch(ScratchSlot slot, size_t bytes, bool* grown) {
  ThreadScratch& s = tlsScratch;
  if (grown) *grown = bytes > s.size[slot];
  if (bytes > s.size[slot]) {
    // Grow geometrically and round to 64 bytes; the contents are not kept.
    size_t size = s.size[slot] ? s.size[slot] : 4096;
    while (size < bytes) size *= 2;
    std::free(s.data[slot]);
    s.data[slot] = std::aligned_alloc(64, size);
    if (!s.data[slot]) std::abort();
    s.size[slot] = size;
  }
  return s.data[slot];
}

void lutDequantInt4ToFp8(const Int4WeightsView& w, uint8_t* out, int nBegin, int nEnd) {
  const int groups = w.groups(), G = w.groupSize, K = w.cols;
  for (int n = nBegin; n < nEnd; ++n) {
    const uint8_t* rowCodes = w.codes + (size_t)n * (K / 2);
    uint8_t* rowOut = out + (size_t)n * K;
    for (int g = 0; g < groups; ++g) {
      const float groupScale = w.groupScales[(size_t)n * groups + g];
      const int zero = w.zeros[(size_t)n * groups + g];
      uint8_t lut[16];  // FP8 code of each INT4 code of this group
      for (int q = 0; q < 16; ++q) lut[q] = fp8Encode(int4GroupValue(groupScale, zero, q), w.format);
      const uint8_t* groupCodes = rowCodes + g * G / 2;
      uint8_t* groupOut = rowOut + g * G;
      for (int i = 0; i < G / 2; ++i) {  // byte i holds k = 2i (low nibble) and 2i + 1 (high nibble)
        groupOut[2 * i] = lut[groupCodes[i] & 0x0F];
        groupOut[2 * i + 1] = lut[groupCodes[i] >> 4];
      }
    }
  }
}

void int4RowValues(const Int4WeightsView& w, int n, float* out) {
  const int groups = w.groups(), G = w.groupSize, K = w.cols;
  const float* table = fp8DecodeTable(w.format);
  const uint8_t* rowCodes = w.codes + (size_t)n * (K / 2);
  for (int g = 0; g < groups; ++g) {
    const float groupScale = w.groupScales[(size_t)n * groups + g];
    const int zero = w.zeros[(size_t)n * groups + g];
    for (int k = g * G; k < (g + 1) * G; ++k)
      out[k] = table[fp8Encode(int4GroupValue(groupScale, zero, int4Code(rowCodes, k)), w.format)];
  }
}

bool rowScalesWithin(const Int4WeightsView& w, int n, float lo, float hi) {
  const int groups = w.groups();
  const float* scales = w.groupScales + (size_t)n * groups;
  bool ok = true;
  for (int g = 0; g < groups; ++g) {
    const float a = std::fabs(scales[g]);
    ok &= (a >= lo) & (a <= hi);  // NaN compares false
  }
  return ok;
}

bool rowHasSubnormalScales(const Int4WeightsView& w, int n) {
  const int groups = w.groups();
  const float* scales = w.groupScales + (size_t)n * groups;
  bool any = false;
  for (int g = 0; g < groups; ++g) {
    const float a = std::fabs(scales[g]);
    any |= (a > 0.0f) & (a < 0x1p-126f);
  }
  return any;
}

}  // namespace w4a8::fast
