#include <cmath>
#include <vector>

#include "fp8/fp8.h"
#include "tests/check.h"

using namespace w4a8;

namespace {
const Fp8Format kFormats[] = {Fp8Format::E4M3FN, Fp8Format::E4M3, Fp8Format::E5M2};

bool isNanCode(uint8_t code, Fp8Format f) { return std::isnan(fp8Decode(code, f)); }

// Positive finite codes in increasing value order (codes of one sign are monotonic in value).
std::vector<uint8_t> positiveFiniteCodes(Fp8Format f) {
  std::vector<uint8_t> codes;
  for (int c = 0; c <= fp8Spec(f).maxFiniteCode; ++c) codes.push_back((uint8_t)c);
  return codes;
}
}  // namespace

TEST(fp8_decode_matches_table_and_roundtrips_every_code) {
  for (Fp8Format f : kFormats) {
    const float* table = fp8DecodeTable(f);
    for (int c = 0; c < 256; ++c) {
      const float v = fp8Decode((uint8_t)c, f);
      CHECK(floatBits(v) == floatBits(table[c]) || (std::isnan(v) && std::isnan(table[c])), "code %d", c);
      if (std::isnan(v) || std::isinf(v)) continue;
      CHECK(fp8Encode(v, f) == c, "format %d code %d value %g encodes to %d", (int)f, c, v, fp8Encode(v, f));
      CHECK(fp8DecodeTableBf16(f)[c] == floatToBf16(v), "bf16 table, code %d", c);
    }
  }
}

TEST(fp8_known_values) {
  CHECK(fp8Decode(0x7E, Fp8Format::E4M3FN) == 448.0f, "e4m3fn max");
  CHECK(fp8Decode(0x77, Fp8Format::E4M3) == 240.0f, "e4m3 max");
  CHECK(fp8Decode(0x7B, Fp8Format::E5M2) == 57344.0f, "e5m2 max");
  CHECK(std::isinf(fp8Decode(0x78, Fp8Format::E4M3)), "e4m3 inf");
  CHECK(std::isinf(fp8Decode(0xFC, Fp8Format::E5M2)) && fp8Decode(0xFC, Fp8Format::E5M2) < 0, "e5m2 -inf");
  CHECK(isNanCode(0x7F, Fp8Format::E4M3FN) && isNanCode(0xFF, Fp8Format::E4M3FN), "e4m3fn NaN");
  CHECK(fp8Decode(0x01, Fp8Format::E4M3FN) == std::ldexp(1.0f, -9), "e4m3fn min subnormal");
  CHECK(fp8Decode(0x01, Fp8Format::E5M2) == std::ldexp(1.0f, -16), "e5m2 min subnormal");
  CHECK(fp8Encode(464.0f, Fp8Format::E4M3FN) == 0x7E, "464 ties to even 448");
  CHECK(fp8Encode(464.0f, Fp8Format::E4M3FN, false) == 0x7E, "464 is not an overflow");
  CHECK(fp8Encode(465.0f, Fp8Format::E4M3FN, false) == 0x7F, "465 overflows to NaN");
  CHECK(fp8Encode(248.0f, Fp8Format::E4M3, false) == 0x78, "248 ties up to inf in e4m3");
  CHECK(fp8Encode(-1e9f, Fp8Format::E5M2) == 0xFB, "saturation keeps the sign");
  CHECK(fp8Encode(-INFINITY, Fp8Format::E4M3FN) == 0xFE, "-inf saturates");
  CHECK(fp8Encode(-INFINITY, Fp8Format::E5M2, false) == 0xFC, "-inf stays -inf");
  CHECK(fp8Encode(NAN, Fp8Format::E4M3) == 0x7F, "NaN");
  CHECK(fp8Encode(-0.0f, Fp8Format::E4M3FN) == 0x80, "-0");
  CHECK(fp8Encode(std::ldexp(1.0f, -10), Fp8Format::E4M3FN) == 0x00, "half min subnormal ties to 0");
  CHECK(fp8Encode(std::ldexp(3.0f, -10), Fp8Format::E4M3FN) == 0x02, "1.5 quanta ties to 2");
}

TEST(fp8_encode_ties_to_even_at_every_midpoint) {
  for (Fp8Format f : kFormats) {
    const std::vector<uint8_t> codes = positiveFiniteCodes(f);
    for (size_t i = 0; i + 1 < codes.size(); ++i) {
      const double lo = fp8Decode(codes[i], f), hi = fp8Decode(codes[i + 1], f);
      const float mid = (float)((lo + hi) / 2);  // exact: FP8 midpoints have few bits
      const uint8_t even = (codes[i] & 1) ? codes[i + 1] : codes[i];
      CHECK(fp8Encode(mid, f) == even, "format %d midpoint %g", (int)f, mid);
      CHECK(fp8Encode(std::nextafter(mid, 0.0f), f) == codes[i], "below midpoint %g", mid);
      CHECK(fp8Encode(std::nextafter(mid, INFINITY), f) == codes[i + 1], "above midpoint %g", mid);
      CHECK(fp8Encode(-mid, f) == (even | 0x80), "negative midpoint %g", mid);
    }
  }
}

TEST(fp8_bulk_conversions_match_scalar) {
  w4a8test::Rng rng(7);
  std::vector<float> values(4099);
  for (float& v : values) v = rng.uniform(-600.0f, 600.0f) * std::ldexp(1.0f, rng.below(30) - 20);
  std::vector<uint16_t> bf16(values.size());
  for (size_t i = 0; i < values.size(); ++i) bf16[i] = floatToBf16(values[i]);
  for (Fp8Format f : kFormats) {
    std::vector<uint8_t> codes(values.size()), codesFromBf16(values.size());
    std::vector<float> decoded(values.size());
    std::vector<uint16_t> decodedBf16(values.size());
    fp8EncodeArray(values.data(), codes.data(), values.size(), f, true);
    fp8EncodeBf16Array(bf16.data(), codesFromBf16.data(), values.size(), f, true);
    fp8DecodeArray(codes.data(), decoded.data(), values.size(), f);
    fp8DecodeBf16Array(codes.data(), decodedBf16.data(), values.size(), f);
    for (size_t i = 0; i < values.size(); ++i) {
      CHECK(codes[i] == fp8Encode(values[i], f), "i=%zu", i);
      CHECK(codesFromBf16[i] == fp8Encode(bf16ToFloat(bf16[i]), f), "bf16 i=%zu", i);
      CHECK(decoded[i] == fp8Decode(codes[i], f), "decode i=%zu", i);
      CHECK(bf16ToFloat(decodedBf16[i]) == decoded[i], "decode bf16 i=%zu", i);
    }
  }
}

TEST(bf16_rounds_to_nearest_even) {
  CHECK(floatToBf16(1.0f) == 0x3F80, "1");
  CHECK(floatToBf16(bitsFloat(0x3F808000u)) == 0x3F80, "tie to even down");
  CHECK(floatToBf16(bitsFloat(0x3F818000u)) == 0x3F82, "tie to even up");
  CHECK(floatToBf16(bitsFloat(0x3F808001u)) == 0x3F81, "above tie");
  CHECK(std::isnan(bf16ToFloat(floatToBf16(NAN))), "NaN stays NaN");
}
