// Prepared group tables of the int16 W4A8 kernels (int4_tables.h). Portable C++: runs once per matrix.
#include "kernels/int4_tables.h"

#include <cmath>
#include <cstring>
#include <string>
#include <unordered_map>

#include "kernels/fast_common.h"

namespace w4a8 {

bool Int4Tables::describes(const Int4WeightsView& w) const {
  return w.codes == codes && w.groupScales == groupScales && w.zeros == zeros && w.rows == rows && w.cols == cols &&
         w.groupSize == groupSize && w.format == format;
}

namespace {

// The kernels' base exponent of scale s (int16_common.h FormatInfo, as prepareWeightRow computes it).
int baseExponent(float s, int mantissaBits, int quantumExp, int ulpMaxExp) {
  uint32_t bits;
  std::memcpy(&bits, &s, 4);
  const int e = (int)((bits & 0x7FFFFFFF) >> 23) - 127 - mantissaBits;
  return e < quantumExp ? quantumExp : e > ulpMaxExp ? ulpMaxExp : e;
}

}  // namespace

std::shared_ptr<const Int4Tables> prepareInt4Tables(const Int4WeightsView& w) {
  const fast::Fp8Params params = fast::fp8Params(w.format);
  const int p = 23 - (int)params.mantissaShift, bias = 128 - (int)(params.minNormalBits >> 23);
  const int quantumExp = 1 - bias - p, ulpMaxExp = (int)(params.maxFiniteBits >> 23) - 127 - p;
  const float* decode = fp8DecodeTable(w.format);

  auto t = std::make_shared<Int4Tables>();
  const int groups = w.groups();
  t->rows = w.rows, t->cols = w.cols, t->groupSize = w.groupSize, t->format = w.format;
  t->groupsPerRow = w.groups();
  t->codes = w.codes, t->groupScales = w.groupScales, t->zeros = w.zeros;
  t->tableIndex.assign((size_t)w.rows * groups, 0);
  t->baseExp.assign((size_t)w.rows * groups, 0);
  t->rowGeneric.assign(w.rows, 0);
  std::unordered_map<std::string, uint16_t> known;  // the 32 bytes of W -> entry
  for (int n = 0; n < w.rows; ++n) {
    const float* scales = w.groupScales + (size_t)n * groups;
    const uint8_t* zeros = w.zeros + (size_t)n * groups;
    bool generic = false;
    for (int g = 0; g < groups && !generic; ++g) generic = !std::isfinite(scales[g]) || zeros[g] > 15;
    if (generic) {  // the kernels' FP32 path, as without tables; index 0 and base 0 are never read
      t->rowGeneric[n] = 1;
      continue;
    }
    for (int g = 0; g < groups; ++g) {
      const float s = scales[g];
      const int z = zeros[g], e = baseExponent(s, p, quantumExp, ulpMaxExp);
      const double inverse = std::ldexp(1.0, -e);
      int16_t W[16];
      for (int q = 0; q < 16; ++q) {
        // The exact FP8 weight in units of 2^e (a power-of-two scaling in double, exact): an integer below
        // 2^15 by the kernels' argument, checked here all the same.
        const double units = (double)decode[fp8Encode(int4GroupValue(s, z, q), w.format)] * inverse;
        const int rounded = (int)units;
        if (units != (double)rounded || rounded > 32767 || rounded < -32767) return nullptr;  // (cannot happen)
        W[q] = (int16_t)rounded;
      }
      const std::string key(reinterpret_cast<const char*>(W), sizeof W);
      auto it = known.find(key);
      if (it == known.end()) {
        if (known.size() == 65536) return nullptr;
        Int4TableEntry entry;
        for (int q = 0; q < 16; ++q) {
          entry.words[q] = W[q];
          entry.low[q] = (uint8_t)((uint16_t)W[q] & 0xFF);
          entry.high[q] = (uint8_t)((uint16_t)W[q] >> 8);
          const float value = (float)W[q];
          uint32_t bits;
          std::memcpy(&bits, &value, 4);
          if (bits & 0xFFFFu) return nullptr;  // more than 8 significant bits (cannot happen: |W| <= 240)
          entry.bf16[q] = (uint16_t)(bits >> 16);
        }
        it = known.emplace(key, (uint16_t)t->entries.size()).first;
        t->entries.push_back(entry);
      }
      t->tableIndex[(size_t)n * groups + g] = it->second;
      t->baseExp[(size_t)n * groups + g] = (int8_t)e;
    }
  }
  return t;
}

}  // namespace w4a8
