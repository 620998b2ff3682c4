#include "model/ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "fp8/fp8.h"

// These loops are simple enough for the compiler to vectorize; target_clones builds an AVX512, an AVX2
// and a baseline body and picks one at load time, as the rest of the library is compiled for x86-64.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define W4A8_CLONES __attribute__((target_clones("avx512f", "avx2,fma", "default")))
#else
#define W4A8_CLONES
#endif

namespace w4a8 {

W4A8_CLONES float dot(const float* a, const float* b, int n) {
  float sum[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // 8 partial sums so the loop vectorizes without -ffast-math
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) sum[j] += a[i + j] * b[i + j];
  float total = ((sum[0] + sum[1]) + (sum[2] + sum[3])) + ((sum[4] + sum[5]) + (sum[6] + sum[7]));
  for (; i < n; ++i) total += a[i] * b[i];
  return total;
}

W4A8_CLONES void axpy(float alpha, const float* x, float* y, int n) {
  for (int i = 0; i < n; ++i) y[i] += alpha * x[i];
}

void softmax(float* x, int n) {
  const float maxValue = *std::max_element(x, x + n);
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) sum += (x[i] = std::exp(x[i] - maxValue));
  const float inverse = 1.0f / sum;
  for (int i = 0; i < n; ++i) x[i] *= inverse;
}

void rmsNorm(const float* x, const float* weight, float* out, int rows, int dim, float eps) {
  for (int r = 0; r < rows; ++r) {
    const float* row = x + (size_t)r * dim;
    double squares = 0;
    for (int i = 0; i < dim; ++i) squares += (double)row[i] * row[i];
    const float inverseRms = (float)(1.0 / std::sqrt(squares / dim + eps));
    for (int i = 0; i < dim; ++i) out[(size_t)r * dim + i] = row[i] * inverseRms * weight[i];
  }
}

void rope(float* v, int heads, int headDim, int position, const float* inverseFrequencies) {
  const int half = headDim / 2;
  for (int i = 0; i < half; ++i) {
    const float angle = (float)position * inverseFrequencies[i];
    const float c = std::cos(angle), s = std::sin(angle);
    for (int h = 0; h < heads; ++h) {
      float* head = v + (size_t)h * headDim;
      const float x0 = head[i], x1 = head[i + half];
      head[i] = x0 * c - x1 * s;
      head[i + half] = x1 * c + x0 * s;
    }
  }
}

W4A8_CLONES void bf16RowToFloat(const uint16_t* in, float* out, int n) {
  for (int i = 0; i < n; ++i) {
    const uint32_t bits = (uint32_t)in[i] << 16;
    std::memcpy(out + i, &bits, 4);
  }
}

namespace {
W4A8_CLONES void bf16Rows(const float* x, int M, const uint16_t* w, int K, float* y, int ldy, int nBegin, int nEnd) {
  float row[4096];
  for (int n = nBegin; n < nEnd; ++n) {
    const uint16_t* wRow = w + (size_t)n * K;
    for (int k0 = 0; k0 < K; k0 += 4096) {
      const int len = std::min(4096, K - k0);
      bf16RowToFloat(wRow + k0, row, len);
      for (int m = 0; m < M; ++m) {
        const float* xRow = x + (size_t)m * K + k0;
        float sum[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int k = 0;
        for (; k + 8 <= len; k += 8)
          for (int j = 0; j < 8; ++j) sum[j] += xRow[k + j] * row[k + j];
        float total = ((sum[0] + sum[1]) + (sum[2] + sum[3])) + ((sum[4] + sum[5]) + (sum[6] + sum[7]));
        for (; k < len; ++k) total += xRow[k] * row[k];
        y[(size_t)m * ldy + n] = (k0 == 0 ? 0.0f : y[(size_t)m * ldy + n]) + total;
      }
    }
  }
}
}  // namespace

void gemmBf16Weights(const float* x, int M, const uint16_t* w, int N, int K, float* y) {
  parallelFor(N, [&](int begin, int end) { bf16Rows(x, M, w, K, y, N, begin, end); });
}

}  // namespace w4a8
