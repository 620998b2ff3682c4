// Kernel signatures shared by every backend (reference/, avx2/, avx512/, amx/, cuda/).
// Each GEMM computes output channels [nBegin, nEnd) for all M tokens, so a caller can split N over threads.
#pragma once
#include <cstddef>
#include <cstdint>
#include "quant/weights.h"

namespace w4a8 {

// Y: [M, N], row-major with leading dimension ldy (>= N). Exactly one of f32 / bf16 is set.
struct GemmOutput {
  float* f32;
  uint16_t* bf16;
  int ldy;
};

inline void storeOutput(const GemmOutput& y, int m, int n, float value) {
  const size_t index = (size_t)m * y.ldy + n;
  if (y.f32) y.f32[index] = value;
  else y.bf16[index] = floatToBf16(value);
}

// Y[m, n] = (s_x[m] * s_c[n]) * sum_k x8[m, k] * w8[n, k]   (DESIGN.md §1)
// x8: [M, K] FP8 codes in actFormat, xScales: [M]; products exact, FP32 accumulation.
struct W4A8GemmArgs {
  const uint8_t* x8;
  const float* xScales;
  Fp8Format actFormat;
  int M;
  Int4WeightsView w;
  GemmOutput y;
};

// Same contract with FP8 weights.
struct W8A8GemmArgs {
  const uint8_t* x8;
  const float* xScales;
  Fp8Format actFormat;
  int M;
  Fp8WeightsView w;
  GemmOutput y;
};

// Y[m, n] = s_c[n] * sum_k x16[m, k] * bf16(fl32(s_g * (q - z)))   (BF16 activations, exact products)
struct W4A16GemmArgs {
  const uint16_t* x16;  // [M, K] BF16
  int M;
  Int4WeightsView w;
  GemmOutput y;
};

// Y[m, n] = sum_k x[m, k] * w[n, k], all FP32.
struct F32GemmArgs {
  const float* x;  // [M, K]
  const float* w;  // [N, K]
  int M;
  int N;
  int K;
  GemmOutput y;
};

// Activations, per token (dynamic): s_x[m] = amax(X[m,:]) / FP8_MAX (1 for an all-zero row),
// x8[m, k] = fp8(X[m, k] / s_x[m]) with an FP32 division. Per tensor (static): one given s_x for all rows.
void quantizeActivationsDynamic(const float* x, int M, int K, Fp8Format f, uint8_t* x8, float* xScales);
void quantizeActivationsStatic(const float* x, int M, int K, float scale, Fp8Format f, uint8_t* x8,
                               float* xScales);
void floatToBf16Array(const float* x, size_t count, uint16_t* out);

// INT4 -> FP8 codes for rows [nBegin, nEnd): out[n * K + k] = fp8(fl32(s_g * (q - z))).
void dequantInt4ToFp8(const Int4WeightsView& w, uint8_t* out, int nBegin, int nEnd);

namespace reference {
void gemmW4A8(const W4A8GemmArgs& a, int nBegin, int nEnd);
void gemmW8A8(const W8A8GemmArgs& a, int nBegin, int nEnd);
void gemmW4A16(const W4A16GemmArgs& a, int nBegin, int nEnd);
void gemmF32(const F32GemmArgs& a, int nBegin, int nEnd);
}  // namespace reference

}  // namespace w4a8
