#include "model/ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "fp8/fp8.h"
#include "kernels/backends.h"
#include "kernels/cpu_features.h"
#include "kernels/dispatch.h"
#include "model/exp_inline.h"
#include "runtime/thread_pool.h"

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

namespace {
W4A8_CLONES void addInPlace(float* y, const float* x, int n) {
  for (int i = 0; i < n; ++i) y[i] += x[i];
}
}  // namespace

void softmax(float* x, int n) {
  const float maxValue = *std::max_element(x, x + n);
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) sum += (x[i] = std::exp(x[i] - maxValue));
  const float inverse = 1.0f / sum;
  for (int i = 0; i < n; ++i) x[i] *= inverse;
}

namespace {
W4A8_CLONES float maxOf(const float* x, int n) {
  float m[16];
  for (int j = 0; j < 16; ++j) m[j] = -INFINITY;
  int i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) m[j] = std::max(m[j], x[i + j]);
  float best = -INFINITY;
  for (int j = 0; j < 16; ++j) best = std::max(best, m[j]);
  for (; i < n; ++i) best = std::max(best, x[i]);
  return best;
}

// sum of e^(x[i] - shift), 16 FP32 lane sums per block of 4096, blocks added in FP64.
W4A8_CLONES double expSum(const float* x, int n, float shift) {
  double total = 0.0;
  for (int start = 0; start < n; start += 4096) {
    const int end = std::min(n, start + 4096);
    float lanes[16] = {};
    int i = start;
    for (; i + 16 <= end; i += 16)
      for (int j = 0; j < 16; ++j) lanes[j] += expInline(x[i + j] - shift);
    for (; i < end; ++i) lanes[0] += expInline(x[i] - shift);
    for (int j = 0; j < 16; ++j) total += lanes[j];
  }
  return total;
}
}  // namespace

double logSoftmaxTop(const float* x, int n, int topCount, int* topIds) {
  const float maxValue = maxOf(x, n);
  // Top ids by insertion below the current threshold (topCount <= 20): most elements fail one comparison.
  int count = 0;
  for (int i = 0; i < n && topCount > 0; ++i) {
    const float v = x[i];
    if (v != v) continue;  // NaN (the caller refuses such a row: its log Σ e^x is NaN); it would stop the comparisons below
    if (count == topCount && !(v > x[topIds[count - 1]])) continue;
    int at = count < topCount ? count++ : count - 1;
    while (at > 0 && x[topIds[at - 1]] < v) {
      topIds[at] = topIds[at - 1];
      --at;
    }
    topIds[at] = i;
  }
  return (double)maxValue + std::log(expSum(x, n, maxValue));
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

void addRmsNorm(float* x, const float* residual, const float* weight, float* out, int rowBegin, int rowEnd, int dim,
                float eps) {
  for (int r = rowBegin; r < rowEnd; ++r) {
    float* row = x + (size_t)r * dim;
    if (residual) addInPlace(row, residual + (size_t)r * dim, dim);
    rmsNorm(row, weight, out + (size_t)r * dim, 1, dim, eps);
  }
}

void ropeAngles(int position, int half, const float* inverseFrequencies, float* cosines, float* sines) {
  for (int i = 0; i < half; ++i) {
    const float angle = (float)position * inverseFrequencies[i];
    cosines[i] = std::cos(angle);
    sines[i] = std::sin(angle);
  }
}

W4A8_CLONES void rotate(float* v, int heads, int headDim, const float* cosines, const float* sines) {
  const int half = headDim / 2;
  for (int h = 0; h < heads; ++h) {
    float* head = v + (size_t)h * headDim;
    for (int i = 0; i < half; ++i) {
      const float x0 = head[i], x1 = head[i + half];
      head[i] = x0 * cosines[i] - x1 * sines[i];
      head[i + half] = x1 * cosines[i] + x0 * sines[i];
    }
  }
}

float fastExp(float x) { return expInline(x); }

W4A8_CLONES void swiglu(float* gate, const float* up, size_t n) {
  for (size_t i = 0; i < n; ++i) gate[i] = gate[i] / (1.0f + expInline(-gate[i])) * up[i];
}

void rope(float* v, int heads, int headDim, int position, const float* inverseFrequencies) {
  float cosines[512], sines[512];  // headDim <= 1024
  ropeAngles(position, headDim / 2, inverseFrequencies, cosines, sines);
  rotate(v, heads, headDim, cosines, sines);
}

W4A8_CLONES void bf16RowToFloat(const uint16_t* in, float* out, int n) {
  for (int i = 0; i < n; ++i) {
    const uint32_t bits = (uint32_t)in[i] << 16;
    std::memcpy(out + i, &bits, 4);
  }
}

// ---- y = x · wᵀ with BF16 weights (the lm_head) -------------------------------------------------------------
//
// The scalar body below is the definition; the AVX-512 and AVX2 bodies are register-blocked (MR activation rows x
// NR weight rows per tile, the weight rows widened to FP32 once per tile and used for all MR rows), so at batch
// 16 the matrix is read once per step and the FMA units, not the loads, set the pace. In every body each output
// is one FP32 accumulator per lane over k in increasing order, then a fixed horizontal sum: the tiling, the
// thread split and the batch size never change a result (batch invariance).
namespace {

W4A8_CLONES void bf16RowsScalar(const float* x, int M, const uint16_t* w, int K, float* y, int ldy, int nBegin, int nEnd) {
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

#if defined(__x86_64__) && defined(__GNUC__)
// GCC 12 reports the undefined first operand of some AVX-512 intrinsics as maybe-uninitialized (the kernel
// folders build with -Wno-maybe-uninitialized for the same reason).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#define W4A8_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))
#define W4A8_AVX2 __attribute__((target("avx2,fma")))

// 16 BF16 words -> 16 FP32 (exact: a BF16 value is the top half of its FP32 value).
W4A8_AVX512 inline __m512 widen16(__m256i words) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(words), 16)); }

template <int MR, int NR>
W4A8_AVX512 void bf16TileAvx512(const float* x, const uint16_t* w, int K, float* y, int ldy, int m0, int n0) {
  __m512 acc[MR][NR];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) acc[m][r] = _mm512_setzero_ps();
  const uint16_t* wRows = w + (size_t)n0 * K;
  const float* xRows = x + (size_t)m0 * K;
  // The next tile's NR rows (contiguous after these) are prefetched as this tile runs, NR * 32 bytes per
  // chunk: rows of a few KiB each restart the hardware prefetcher at every page, which left the 1B model's
  // lm_head at about 0.7 of the read bandwidth at batch 1. (Past the matrix's end the prefetches are harmless.)
  const char* next = reinterpret_cast<const char*>(wRows + (size_t)NR * K);
  // The k loop is written out, with the tail as a last masked pass of the same body: as a lambda taking acc
  // by reference, GCC stored all MR x NR accumulators to the stack after every chunk (24 zmm stores per 24
  // FMAs), which held the 16-token lm_head at a third of the FMA peak on Zen 4.
  for (int k = 0; k < K; k += 16) {
    const __mmask16 mask = K - k >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (K - k)) - 1);
    if (m0 == 0)
      for (int line = 0; line < NR * 32; line += 64) _mm_prefetch(next + (size_t)k * NR * 2 + line, _MM_HINT_T0);
    __m512 wv[NR];
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) wv[r] = widen16(_mm256_maskz_loadu_epi16(mask, wRows + (size_t)r * K + k));
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const __m512 xv = _mm512_maskz_loadu_ps(mask, xRows + (size_t)m * K + k);
#pragma GCC unroll 8
      for (int r = 0; r < NR; ++r) acc[m][r] = _mm512_fmadd_ps(xv, wv[r], acc[m][r]);
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) y[(size_t)(m0 + m) * ldy + n0 + r] = _mm512_reduce_add_ps(acc[m][r]);
}

template <int NR>
W4A8_AVX512 void bf16ColumnAvx512(const float* x, int M, const uint16_t* w, int K, float* y, int ldy, int n0) {
  constexpr int MR = 6;  // 6 x 4 accumulators + 4 weight vectors + 1 activation vector: 29 of 32 registers
  int m = 0;
  for (; m + MR <= M; m += MR) bf16TileAvx512<MR, NR>(x, w, K, y, ldy, m, n0);
  switch (M - m) {
    case 5: bf16TileAvx512<5, NR>(x, w, K, y, ldy, m, n0); break;
    case 4: bf16TileAvx512<4, NR>(x, w, K, y, ldy, m, n0); break;
    case 3: bf16TileAvx512<3, NR>(x, w, K, y, ldy, m, n0); break;
    case 2: bf16TileAvx512<2, NR>(x, w, K, y, ldy, m, n0); break;
    case 1: bf16TileAvx512<1, NR>(x, w, K, y, ldy, m, n0); break;
    default: break;
  }
}

W4A8_AVX512 void bf16RowsAvx512(const float* x, int M, const uint16_t* w, int K, float* y, int ldy, int nBegin, int nEnd) {
  int n = nBegin;
  for (; n + 4 <= nEnd; n += 4) bf16ColumnAvx512<4>(x, M, w, K, y, ldy, n);
  for (; n < nEnd; ++n) bf16ColumnAvx512<1>(x, M, w, K, y, ldy, n);
}

// AVX2: 8 lanes; the last K % 8 products are added after the horizontal sum, in k order, in every tile.
W4A8_AVX2 inline __m256 widen8(__m128i words) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(words), 16)); }

W4A8_AVX2 inline float sum8(__m256 v) {
  const __m128 quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
  return _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)));
}

template <int MR, int NR>
W4A8_AVX2 void bf16TileAvx2(const float* x, const uint16_t* w, int K, float* y, int ldy, int m0, int n0) {
  __m256 acc[MR][NR];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) acc[m][r] = _mm256_setzero_ps();
  const uint16_t* wRows = w + (size_t)n0 * K;
  const float* xRows = x + (size_t)m0 * K;
  const int whole = K / 8 * 8;
  const char* next = reinterpret_cast<const char*>(wRows + (size_t)NR * K);  // prefetched as in bf16TileAvx512
  for (int k = 0; k < whole; k += 8) {
    if (m0 == 0 && (k & 15) == 0) _mm_prefetch(next + (size_t)k * NR * 2, _MM_HINT_T0);  // NR * 32 bytes per 16 k
    __m256 wv[NR];
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) wv[r] = widen8(_mm_loadu_si128((const __m128i*)(wRows + (size_t)r * K + k)));
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const __m256 xv = _mm256_loadu_ps(xRows + (size_t)m * K + k);
#pragma GCC unroll 8
      for (int r = 0; r < NR; ++r) acc[m][r] = _mm256_fmadd_ps(xv, wv[r], acc[m][r]);
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) {
      float total = sum8(acc[m][r]);
      for (int k = whole; k < K; ++k) {
        const uint32_t bits = (uint32_t)wRows[(size_t)r * K + k] << 16;
        float wk;
        std::memcpy(&wk, &bits, 4);
        total = std::fma(xRows[(size_t)m * K + k], wk, total);
      }
      y[(size_t)(m0 + m) * ldy + n0 + r] = total;
    }
}

template <int NR>
W4A8_AVX2 void bf16ColumnAvx2(const float* x, int M, const uint16_t* w, int K, float* y, int ldy, int n0) {
  constexpr int MR = 6;  // 6 x 2 accumulators + 2 weight vectors + 1 activation vector: 15 of 16 registers
  int m = 0;
  for (; m + MR <= M; m += MR) bf16TileAvx2<MR, NR>(x, w, K, y, ldy, m, n0);
  switch (M - m) {
    case 5: bf16TileAvx2<5, NR>(x, w, K, y, ldy, m, n0); break;
    case 4: bf16TileAvx2<4, NR>(x, w, K, y, ldy, m, n0); break;
    case 3: bf16TileAvx2<3, NR>(x, w, K, y, ldy, m, n0); break;
    case 2: bf16TileAvx2<2, NR>(x, w, K, y, ldy, m, n0); break;
    case 1: bf16TileAvx2<1, NR>(x, w, K, y, ldy, m, n0); break;
    default: break;
  }
}

W4A8_AVX2 void bf16RowsAvx2(const float* x, int M, const uint16_t* w, int K, float* y, int ldy, int nBegin, int nEnd) {
  int n = nBegin;
  for (; n + 2 <= nEnd; n += 2) bf16ColumnAvx2<2>(x, M, w, K, y, ldy, n);
  for (; n < nEnd; ++n) bf16ColumnAvx2<1>(x, M, w, K, y, ldy, n);
}
#endif

using Bf16RowsFn = void (*)(const float*, int, const uint16_t*, int, float*, int, int, int);

Bf16RowsFn bf16RowsFor(const char* isa) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (!std::strcmp(isa, "avx512") && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl"))
    return bf16RowsAvx512;
  if (!std::strcmp(isa, "avx2") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return bf16RowsAvx2;
#endif
  if (!std::strcmp(isa, "reference")) return bf16RowsScalar;
  return nullptr;
}

// The body that matches the kernel backend in use (W4A8_ISA=reference keeps the scalar definition).
Bf16RowsFn activeBf16Rows() {
  static const Bf16RowsFn chosen = [] {
    const char* backend = activeKernels().name;
    if (!std::strcmp(backend, "reference")) return bf16RowsFor("reference");
    if (!std::strcmp(backend, "avx2")) return bf16RowsFor("avx2");
    if (Bf16RowsFn f = bf16RowsFor("avx512")) return f;  // avx512, amx: the widest the CPU runs
    if (Bf16RowsFn f = bf16RowsFor("avx2")) return f;
    return bf16RowsFor("reference");
  }();
  return chosen;
}

void runBf16Rows(Bf16RowsFn rows, const float* x, int M, const uint16_t* w, int N, int K, float* y) {
  // Output channels in tiles of 16 over the pool; a few chunks per thread so a thread that loses its core
  // is covered by the others. Small products stay on the calling thread.
  if ((double)M * N * K < (1 << 18)) return rows(x, M, w, K, y, N, 0, N);
  globalThreadPool().parallelFor(N, 16, [&](int begin, int end) { rows(x, M, w, K, y, N, begin, end); }, 4);
}

// From amx::kMinRows tokens on the amx backend, AMX tiles (the FP32 activations split exactly into three BF16
// planes, kernels/amx/mixed_gemm.cpp): at 16 tokens the FP32-FMA body is compute-bound (about a fifth of a
// batch-16 decode step of a 1B model on two cores). Below that, and when the tiles decline, FP32 FMA.
bool bf16WeightsOnTiles(const float* x, int M, const uint16_t* w, int N, int K, float* y) {
  return M >= amx::kMinRows && amx::gemmBf16WeightsPooled(globalThreadPool(), x, M, w, N, K, y);
}

}  // namespace

void gemmBf16Weights(const float* x, int M, const uint16_t* w, int N, int K, float* y) {
  if (!std::strcmp(activeKernels().name, "amx") && bf16WeightsOnTiles(x, M, w, N, K, y)) return;
  runBf16Rows(activeBf16Rows(), x, M, w, N, K, y);
}

bool gemmBf16WeightsWith(const char* isa, const float* x, int M, const uint16_t* w, int N, int K, float* y) {
  if (!std::strcmp(isa, "amx")) {  // tiles from kMinRows tokens (when the CPU has AMX), avx512 below
    if (!cpuFeatures().amxBackend()) return false;
    if (bf16WeightsOnTiles(x, M, w, N, K, y)) return true;
    isa = "avx512";
  }
  const Bf16RowsFn rows = bf16RowsFor(isa);
  if (!rows) return false;
  runBf16Rows(rows, x, M, w, N, K, y);
  return true;
}

}  // namespace w4a8
