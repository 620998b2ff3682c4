#include <cmath>
#include <vector>

#include "kernels/cuda/integer_activations.cuh"  // linearGroup: host code, no CUDA needed
#include "kernels/kernels.h"
#include "quant/fp8_pack.h"
#include "quant/int4_pack.h"
#include "tests/check.h"

using namespace w4a8;

namespace {

struct PackedInt4 {
  std::vector<uint8_t> codes, zeros;
  std::vector<float> groupScales, channelScales;
  Int4WeightsView view;
};

PackedInt4 pack(const std::vector<float>& w, int rows, int cols, const Int4PackOptions& options) {
  PackedInt4 p;
  const int groups = cols / options.groupSize;
  p.codes.assign((size_t)rows * cols / 2, 0);
  p.zeros.assign((size_t)rows * groups, 0);
  p.groupScales.assign((size_t)rows * groups, 0);
  p.channelScales.assign(rows, 0);
  packInt4Rows(w.data(), rows, cols, options,
               {p.codes.data(), p.groupScales.data(), p.zeros.data(), p.channelScales.data()}, 0, rows);
  p.view = {p.codes.data(), p.groupScales.data(), p.zeros.data(), p.channelScales.data(),
            rows, cols, options.groupSize, options.format};
  return p;
}

// Power-of-two group scales in format f.
Int4PackOptions pow2Options(Fp8Format f, bool symmetric, int groupSize) {
  Int4PackOptions options;
  options.groupSize = groupSize;
  options.pow2Scales = true;
  options.symmetric = symmetric;
  options.format = f;
  return options;
}

}  // namespace

TEST(int4_pack_reconstructs_within_half_a_step) {
  w4a8test::Rng rng(11);
  const int rows = 7, cols = 256;
  std::vector<float> w((size_t)rows * cols);
  for (float& v : w) v = rng.uniform(-2.0f, 2.0f);
  for (int groupSize : {32, 64, 128})
    for (bool symmetric : {false, true})
      for (bool pow2 : {false, true}) {
        Int4PackOptions options;
        options.groupSize = groupSize;
        options.symmetric = symmetric;
        options.pow2Scales = pow2;
        PackedInt4 p = pack(w, rows, cols, options);
        std::vector<uint8_t> q((size_t)rows * cols);
        unpackInt4Codes(p.codes.data(), q.size(), q.data());
        const int groups = cols / groupSize;
        for (int n = 0; n < rows; ++n)
          for (int k = 0; k < cols; ++k) {
            const int g = k / groupSize;
            const float s = p.groupScales[n * groups + g];
            const int z = p.zeros[n * groups + g];
            CHECK(q[(size_t)n * cols + k] == int4Code(p.codes.data() + (size_t)n * cols / 2, k), "unpack");
            if (symmetric) CHECK(z == 8, "symmetric zero point");
            int exponent;
            if (pow2) CHECK(std::frexp(s, &exponent) == 0.5f, "power-of-two scale %g", s);
            const float scaled = w[(size_t)n * cols + k] / p.channelScales[n];
            const float back = s * (float)(q[(size_t)n * cols + k] - z);
            CHECK(std::fabs(back - scaled) <= 0.5f * s * 1.0001f, "G=%d sym=%d pow2=%d n=%d k=%d: %g vs %g",
                  groupSize, symmetric, pow2, n, k, back, scaled);
          }
      }
}

TEST(int4_pow2_scales_dequantize_exactly_in_e4m3) {
  // Power-of-two group scales and integer zero points make s_g * (q - z) exact in E4M3 (DESIGN.md §1), and the
  // channel scale (int4ChannelTarget) keeps every entry of every group table within the format's range.
  w4a8test::Rng rng(12);
  const int rows = 5, cols = 128;
  std::vector<float> w((size_t)rows * cols);
  for (float& v : w) v = rng.uniform(-1.0f, 1.0f) * (1 + rng.below(4));
  for (float& v : w) v = rng.below(3) == 0 ? std::fabs(v) : v;  // some one-signed stretches: z near 0 or 15
  // Rows whose amax / s_c rounds one ulp above the target (found by a review): amax alone, and +-amax in one group.
  const float edges[] = {0x1.474768p+5f, 0x1.e66cbp+8f};
  for (int r = 0; r < 2; ++r) {
    float* row = w.data() + (size_t)(3 + r) * cols;
    row[0] = edges[r];
    row[1] = r == 1 ? -edges[r] : 0.5f;
    for (int k = 2; k < cols; ++k) row[k] = std::fmin(std::fabs(row[k]), 1.0f) * (k % 2 ? 1.0f : -1.0f);
  }
  for (Fp8Format f : {Fp8Format::E4M3FN, Fp8Format::E4M3})
    for (bool symmetric : {false, true}) {
      PackedInt4 p = pack(w, rows, cols, pow2Options(f, symmetric, 32));
      for (int n = 0; n < rows; ++n)
        for (int g = 0; g < 4; ++g) {
          const float s = p.groupScales[n * 4 + g];
          const int z = p.zeros[n * 4 + g];
          for (int q = 0; q < 16; ++q) {
            const float exact = s * (float)(q - z);
            const float got = fp8Decode(fp8Encode(exact, f), f);
            CHECK(got == exact, "%s sym=%d n=%d g=%d q=%d: s=%g z=%d gives %g, FP8 %g", f == Fp8Format::E4M3 ? "e4m3" : "e4m3fn",
                  symmetric, n, g, q, s, z, exact, got);
          }
        }
    }
}

TEST(int4_pow2_rtn_packing_makes_every_group_linear_for_the_integer_gemv) {
  // The GPU's integer GEMV takes weights whose groups are (nearly) all linear (gemv_int8.cu): with RTN and
  // power-of-two scales, bell-shaped rows (sums of uniforms, a few large outliers) give no other kind of group.
  w4a8test::Rng rng(21);
  const int rows = 64, cols = 1024;
  std::vector<float> w((size_t)rows * cols);
  for (float& v : w) v = (rng.uniform(-1.0f, 1.0f) + rng.uniform(-1.0f, 1.0f) + rng.uniform(-1.0f, 1.0f)) * 0.02f;
  for (int n = 0; n < rows; ++n) w[(size_t)n * cols + rng.below(cols)] *= 8.0f;
  for (Fp8Format f : {Fp8Format::E4M3FN, Fp8Format::E4M3})
    for (bool symmetric : {false, true}) {
      PackedInt4 p = pack(w, rows, cols, pow2Options(f, symmetric, 128));
      int nonLinear = 0;
      for (size_t g = 0; g < p.groupScales.size(); ++g)
        nonLinear += !w4a8::cudakern::linearGroup(p.groupScales[g], p.zeros[g], fp8Spec(f).maxFinite);
      CHECK(nonLinear == 0, "%s sym=%d: %d of %zu groups not linear", f == Fp8Format::E4M3 ? "e4m3" : "e4m3fn", symmetric,
            nonLinear, p.groupScales.size());
    }
}

TEST(fp8_pack_uses_the_full_range) {
  std::vector<float> w = {0.5f, -3.0f, 1.0f, 0.0f, 0.0f, 0.0f};
  std::vector<uint8_t> codes(6);
  std::vector<float> scales(2);
  packFp8Rows(w.data(), 2, 3, Fp8Format::E4M3FN, codes.data(), scales.data(), 0, 2);
  CHECK(codes[1] == 0xFE, "amax maps to -448, got %#x", codes[1]);
  CHECK(scales[0] == 3.0f / 448.0f, "scale");
  CHECK(scales[1] == 1.0f && codes[3] == 0 && codes[5] == 0, "zero row");
}
