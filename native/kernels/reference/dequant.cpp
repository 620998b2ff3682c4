#include "kernels/kernels.h"

namespace w4a8 {

void dequantInt4ToFp8(const Int4WeightsView& w, uint8_t* out, int nBegin, int nEnd) {
  const int groups = w.groups();
  for (int n = nBegin; n < nEnd; ++n) {
    const uint8_t* rowCodes = w.codes + (size_t)n * (w.cols / 2);
    for (int g = 0; g < groups; ++g) {
      const float groupScale = w.groupScales[(size_t)n * groups + g];
      const int zero = w.zeros[(size_t)n * groups + g];
      for (int k = g * w.groupSize; k < (g + 1) * w.groupSize; ++k)
        out[(size_t)n * w.cols + k] = fp8Encode(int4GroupValue(groupScale, zero, int4Code(rowCodes, k)), w.format);
    }
  }
}

}  // namespace w4a8
