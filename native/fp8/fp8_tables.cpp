#include "fp8/fp8.h"

namespace w4a8 {
namespace {

struct DecodeTables {
  float f32[kFp8FormatCount][256];
  uint16_t bf16[kFp8FormatCount][256];
  DecodeTables() {
    for (int f = 0; f < kFp8FormatCount; ++f)
      for (int code = 0; code < 256; ++code) {
        f32[f][code] = fp8Decode((uint8_t)code, (Fp8Format)f);
        bf16[f][code] = (uint16_t)(floatBits(f32[f][code]) >> 16);  // exact: FP8 fits in BF16
      }
  }
};

const DecodeTables& tables() {
  static const DecodeTables instance;  // thread-safe one-time initialisation
  return instance;
}

}  // namespace

const float* fp8DecodeTable(Fp8Format f) { return tables().f32[(int)f]; }
const uint16_t* fp8DecodeTableBf16(Fp8Format f) { return tables().bf16[(int)f]; }

void fp8EncodeArray(const float* in, uint8_t* out, size_t count, Fp8Format f, bool saturate) {
  for (size_t i = 0; i < count; ++i) out[i] = fp8Encode(in[i], f, saturate);
}

void fp8EncodeBf16Array(const uint16_t* in, uint8_t* out, size_t count, Fp8Format f, bool saturate) {
  for (size_t i = 0; i < count; ++i) out[i] = fp8Encode(bf16ToFloat(in[i]), f, saturate);
}

void fp8DecodeArray(const uint8_t* in, float* out, size_t count, Fp8Format f) {
  const float* table = fp8DecodeTable(f);
  for (size_t i = 0; i < count; ++i) out[i] = table[in[i]];
}

void fp8DecodeBf16Array(const uint8_t* in, uint16_t* out, size_t count, Fp8Format f) {
  const uint16_t* table = fp8DecodeTableBf16(f);
  for (size_t i = 0; i < count; ++i) out[i] = table[in[i]];
}

}  // namespace w4a8
