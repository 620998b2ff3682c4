// Activation quantization (scalar; the definition the fast paths reproduce bit for bit).
#include <algorithm>
#include <cmath>

#include "kernels/kernels.h"

namespace w4a8 {

void quantizeActivationsStatic(const float* x, int M, int K, float scale, Fp8Format f, uint8_t* x8,
                               float* xScales) {
  for (int m = 0; m < M; ++m) {
    xScales[m] = scale;
    const float* row = x + (size_t)m * K;
    uint8_t* out = x8 + (size_t)m * K;
    for (int k = 0; k < K; ++k) out[k] = fp8Encode(row[k] / scale, f);
  }
}

void quantizeActivationsDynamic(const float* x, int M, int K, Fp8Format f, uint8_t* x8, float* xScales) {
  const float fp8Max = fp8Spec(f).maxFinite;
  for (int m = 0; m < M; ++m) {
    const float* row = x + (size_t)m * K;
    float amax = 0.0f;
    for (int k = 0; k < K; ++k) amax = std::max(amax, std::fabs(row[k]));
    const float scale = amax > 0.0f ? amax / fp8Max : 1.0f;
    quantizeActivationsStatic(row, 1, K, scale, f, x8 + (size_t)m * K, xScales + m);
  }
}

void floatToBf16Array(const float* x, size_t count, uint16_t* out) {
  for (size_t i = 0; i < count; ++i) out[i] = floatToBf16(x[i]);
}

}  // namespace w4a8
