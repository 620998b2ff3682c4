// Round-to-nearest INT4 packing of FP32 weights (the RTN method of DESIGN.md §4).
#pragma once
#include "quant/weights.h"

namespace w4a8 {

struct Int4PackOptions {
  int groupSize = 128;       // 32, 64 or 128; must divide K
  bool symmetric = false;    // symmetric: z = 8, s_g = amax / 7; asymmetric: s_g = (max - min) / 15
  bool pow2Scales = false;   // round s_g up to a power of two ("hardware-aligned", exact in E4M3)
  Fp8Format format = Fp8Format::E4M3FN;
};

// The INT4 grid of one group of channel-scaled weights (W / s_c): asymmetric s_g = (max - min) / 15 over a
// range that always holds 0, z = round(-min / s_g); symmetric s_g = amax / 7, z = 8; pow2 rounds s_g up to
// a power of two. An all-zero group gets s_g = 1. Shared by RTN and the GPTQ / DPQ sweep (gptq.h).
struct Int4GroupParams {
  float scale;
  int zero;
};
Int4GroupParams chooseInt4GroupParams(const float* scaled, int count, const Int4PackOptions& options);
float roundUpToPowerOfTwo(float x);  // smallest power of two >= x (x > 0, finite)

// The value a row's largest |w| maps to: s_c = amax / target. FP8_MAX, except with power-of-two group scales in
// the E4M3 formats: there FP8_MAX / 2^j, the largest such that every entry s_g (q - z) of every group stays
// within +-FP8_MAX (symmetric: e4m3fn 224, e4m3 60; asymmetric: e4m3fn 112, e4m3 120), so that the group's
// FP8 weights are exactly s_g (q - z) (DESIGN.md §1), never saturated (packInt4Rows moves s_c up by an ulp
// where amax / s_c rounds above the target). Since the divisor is a power of two, RTN's codes are those of the
// FP8_MAX target; s_g shrinks and s_c grows by 2^j (DPQ's composite grid changes where entries used to saturate).
float int4ChannelTarget(const Int4PackOptions& options);

// w: [rows, cols] FP32 row-major. Packs rows [rowBegin, rowEnd) into `out` (canonical layout).
// s_c[n] = amax(W[n,:]) / int4ChannelTarget (1 for an all-zero row).
void packInt4Rows(const float* w, int rows, int cols, const Int4PackOptions& options, Int4WeightsMut out,
                  int rowBegin, int rowEnd);

// codes [rows, cols/2] -> one code (0..15) per byte, [rows, cols].
void unpackInt4Codes(const uint8_t* packed, size_t count, uint8_t* codes);

}  // namespace w4a8
