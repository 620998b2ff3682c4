// Scalar reference GEMMs: the definition every fast backend is tested against.
// Accumulation is sequential in k, in FP32; the FP8 and BF16 products are exact in FP32.
#include <algorithm>
#include <vector>

#include "kernels/kernels.h"

namespace w4a8::reference {

void gemmW4A8(const W4A8GemmArgs& a, int nBegin, int nEnd) {
  const Int4WeightsView& w = a.w;
  const int K = w.cols, G = w.groupSize, groups = w.groups();
  const float* wTable = fp8DecodeTable(w.format);
  const float* xTable = fp8DecodeTable(a.actFormat);
  std::vector<float> acc(a.M);
  float lut[16];  // fused dequant: the 16 FP8 values of one group, never the whole FP8 matrix
  for (int n = nBegin; n < nEnd; ++n) {
    const uint8_t* rowCodes = w.codes + (size_t)n * (K / 2);
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int g = 0; g < groups; ++g) {
      const float groupScale = w.groupScales[(size_t)n * groups + g];
      const int zero = w.zeros[(size_t)n * groups + g];
      for (int q = 0; q < 16; ++q) lut[q] = wTable[fp8Encode(int4GroupValue(groupScale, zero, q), w.format)];
      for (int m = 0; m < a.M; ++m) {
        const uint8_t* xRow = a.x8 + (size_t)m * K;
        float sum = acc[m];
        for (int k = g * G; k < (g + 1) * G; ++k) sum += xTable[xRow[k]] * lut[int4Code(rowCodes, k)];
        acc[m] = sum;
      }
    }
    for (int m = 0; m < a.M; ++m) storeOutput(a.y, m, n, (a.xScales[m] * w.channelScales[n]) * acc[m]);
  }
}

void gemmW8A8(const W8A8GemmArgs& a, int nBegin, int nEnd) {
  const int K = a.w.cols;
  const float* wTable = fp8DecodeTable(a.w.format);
  const float* xTable = fp8DecodeTable(a.actFormat);
  for (int n = nBegin; n < nEnd; ++n) {
    const uint8_t* wRow = a.w.codes + (size_t)n * K;
    for (int m = 0; m < a.M; ++m) {
      const uint8_t* xRow = a.x8 + (size_t)m * K;
      float sum = 0.0f;
      for (int k = 0; k < K; ++k) sum += xTable[xRow[k]] * wTable[wRow[k]];
      storeOutput(a.y, m, n, (a.xScales[m] * a.w.channelScales[n]) * sum);
    }
  }
}

void gemmW4A16(const W4A16GemmArgs& a, int nBegin, int nEnd) {
  const Int4WeightsView& w = a.w;
  const int K = w.cols, G = w.groupSize, groups = w.groups();
  std::vector<float> acc(a.M);
  float lut[16];
  for (int n = nBegin; n < nEnd; ++n) {
    const uint8_t* rowCodes = w.codes + (size_t)n * (K / 2);
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int g = 0; g < groups; ++g) {
      const float groupScale = w.groupScales[(size_t)n * groups + g];
      const int zero = w.zeros[(size_t)n * groups + g];
      for (int q = 0; q < 16; ++q) lut[q] = bf16ToFloat(floatToBf16(int4GroupValue(groupScale, zero, q)));
      for (int m = 0; m < a.M; ++m) {
        const uint16_t* xRow = a.x16 + (size_t)m * K;
        float sum = acc[m];
        for (int k = g * G; k < (g + 1) * G; ++k) sum += bf16ToFloat(xRow[k]) * lut[int4Code(rowCodes, k)];
        acc[m] = sum;
      }
    }
    for (int m = 0; m < a.M; ++m) storeOutput(a.y, m, n, w.channelScales[n] * acc[m]);
  }
}

void gemmF32(const F32GemmArgs& a, int nBegin, int nEnd) {
  for (int n = nBegin; n < nEnd; ++n) {
    const float* wRow = a.w + (size_t)n * a.K;
    for (int m = 0; m < a.M; ++m) {
      const float* xRow = a.x + (size_t)m * a.K;
      float sum = 0.0f;
      for (int k = 0; k < a.K; ++k) sum += xRow[k] * wRow[k];
      storeOutput(a.y, m, n, sum);
    }
  }
}

}  // namespace w4a8::reference
