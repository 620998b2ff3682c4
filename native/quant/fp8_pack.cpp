#include "quant/fp8_pack.h"

#include <algorithm>
#include <cmath>

namespace w4a8 {

void packFp8Rows(const float* w, int rows, int cols, Fp8Format format, uint8_t* codes, float* channelScales,
                 int rowBegin, int rowEnd) {
  const float fp8Max = fp8Spec(format).maxFinite;
  for (int n = rowBegin; n < rowEnd; ++n) {
    const float* row = w + (size_t)n * cols;
    float amax = 0.0f;
    for (int k = 0; k < cols; ++k) amax = std::max(amax, std::fabs(row[k]));
    const float channelScale = usableScale(amax / fp8Max);
    channelScales[n] = channelScale;
    for (int k = 0; k < cols; ++k) codes[(size_t)n * cols + k] = fp8Encode(row[k] / channelScale, format);
  }
}

}  // namespace w4a8
