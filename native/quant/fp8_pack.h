// FP8 weights for W8A8: per-output-channel scale, then round-to-nearest-even into the FP8 format.
#pragma once
#include "quant/weights.h"

namespace w4a8 {

// w: [rows, cols] FP32. s_c[n] = amax(W[n,:]) / FP8_MAX (1 for an all-zero row); codes = fp8(W / s_c).
void packFp8Rows(const float* w, int rows, int cols, Fp8Format format, uint8_t* codes, float* channelScales,
                 int rowBegin, int rowEnd);

}  // namespace w4a8
