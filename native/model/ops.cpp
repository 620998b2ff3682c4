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
#include "runtime/thread_pool.h"

// These loops are simple enough for the compiler to vectorize; target_clones builds an AVX512, an AVX2
// and a baseline body and picks one at load time, as the rest of the library is compiled for x86-64.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define W4A8_CLONES __attribute__((target_clones("avx512f", "avx2,fma", "default")))
// Helpers of W4A8_CLONES functions: always inlined, so each clone compiles them for its own target.
#define W4A8_CLONES_INLINE inline __attribute__((always_inline))
#else
#define W4A8_CLONES
#define W4A8_CLONES_INLINE inline
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

namespace {
// e^x = 2^n * e^f with n = round(x / ln 2), f = x - n ln 2 (two-part ln 2, Cody-Waite), |f| <= ln 2 / 2, and e^f
// by its degree-6 Taylor polynomial (error < 2e-8 relative on that interval). Branch-free, so the loops that call
// it vectorize; 2^n is built in two halves so that n down to -150 gives subnormals / zero and n up to 128 inf.
inline float expInline(float x) {
  x = std::min(std::max(x, -104.0f), 89.0f);
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23: adding and subtracting it rounds to an integer, ties to even
  const float n = (x * 1.44269504088896341f + kRound) - kRound;
  const float f = (x - n * 0.693145751953125f) - n * 1.42860682030941723212e-6f;
  float p = 1.0f / 720;
  p = p * f + 1.0f / 120;
  p = p * f + 1.0f / 24;
  p = p * f + 1.0f / 6;
  p = p * f + 0.5f;
  p = p * f + 1.0f;
  p = p * f + 1.0f;
  const int ni = (int)n;
  const int n1 = ni / 2, n2 = ni - n1;  // 2^n = 2^n1 * 2^n2, each factor a normal float for n in [-150, 128]
  uint32_t b1 = (uint32_t)(n1 + 127) << 23, b2 = (uint32_t)(n2 + 127) << 23;
  float s1, s2;
  std::memcpy(&s1, &b1, 4);
  std::memcpy(&s2, &b2, 4);
  return p * s1 * s2;
}
}  // namespace

float fastExp(float x) { return expInline(x); }

namespace {
// The dot product of dot(), inlined (same partial sums, same order).
inline float dotInline(const float* a, const float* b, int n) {
  float sum[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) sum[j] += a[i + j] * b[i + j];
  float total = ((sum[0] + sum[1]) + (sum[2] + sum[3])) + ((sum[4] + sum[5]) + (sum[6] + sum[7]));
  for (; i < n; ++i) total += a[i] * b[i];
  return total;
}
}  // namespace

void storeKey(float* keyBlocks, int headDim, int position, const float* key) {
  float* block = keyBlocks + (size_t)(position / kKeyBlock) * headDim * kKeyBlock + position % kKeyBlock;
  for (int i = 0; i < headDim; ++i) block[(size_t)i * kKeyBlock] = key[i];
}
void storeKey(uint16_t* keyBlocks, int headDim, int position, const float* key) {
  uint16_t* block = keyBlocks + (size_t)(position / kKeyBlock) * headDim * kKeyBlock + position % kKeyBlock;
  for (int i = 0; i < headDim; ++i) block[(size_t)i * kKeyBlock] = floatToBf16(key[i]);
}

// The Lanes helpers return 64-byte vectors; GCC notes that the baseline target passes those differently from an
// AVX-512 one, which does not matter: they are always inlined into their caller, never called across targets.
#pragma GCC diagnostic ignored "-Wpsabi"
namespace {
constexpr int kValuePrefetch = 16;  // positions ahead that attention prefetches value rows
constexpr int kScoreHeads = 4;  // query heads per pass over the keys: 4 accumulators of kKeyBlock lanes
// kKeyBlock floats as one value (GCC vector extension), so that accumulators stay in registers in every clone:
// one zmm with AVX-512, two ymm with AVX2 (arrays of floats were kept on the stack, a store and reload per FMA).
typedef float Lanes __attribute__((vector_size(kKeyBlock * sizeof(float))));
W4A8_CLONES_INLINE Lanes loadLanes(const float* p) {
  Lanes v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
// kKeyBlock BF16 values widened to FP32 (exact: a BF16 is the upper half of an FP32).
typedef uint16_t Halves __attribute__((vector_size(kKeyBlock * sizeof(uint16_t))));
typedef uint32_t Words __attribute__((vector_size(kKeyBlock * sizeof(uint32_t))));
W4A8_CLONES_INLINE Lanes loadLanes(const uint16_t* p) {
  Halves h;
  std::memcpy(&h, p, sizeof(h));
  const Words w = __builtin_convertvector(h, Words) << 16;
  Lanes v;
  std::memcpy(&v, &w, sizeof(v));
  return v;
}
W4A8_CLONES_INLINE float scalarValue(float v) { return v; }
W4A8_CLONES_INLINE float scalarValue(uint16_t v) { return bf16ToFloat(v); }
W4A8_CLONES_INLINE void storeLanes(float* p, Lanes v) { std::memcpy(p, &v, sizeof(v)); }

// row[0, n) = exp(row - max(row)), and returns their sum (the softmax without its division, which attendGroup
// applies to the outputs). The maximum and the sum run over kKeyBlock lanes (independent chains; a scalar max or
// sum is one dependent chain through every position), then the scalar tail. Exponentials below e^-80 (of a
// maximum of 1) are set to 0: their products would be subnormal, which costs the FPU a microcode assist per
// instruction (4x slower attention on a peaked softmax, measured), and their weight is far below the FP32
// rounding of the sum, which is at least 1.
constexpr float kSmallestExponent = -80.0f;
W4A8_CLONES_INLINE float expRow(float* row, int n) {
  float maxValue = row[0];
  int t = 0;
  if (n >= kKeyBlock) {
    Lanes m = loadLanes(row);
    for (t = kKeyBlock; t + kKeyBlock <= n; t += kKeyBlock) {
      const Lanes v = loadLanes(row + t);
      m = v > m ? v : m;
    }
    for (int l = 0; l < kKeyBlock; ++l) maxValue = std::max(maxValue, m[l]);
  }
  for (; t < n; ++t) maxValue = std::max(maxValue, row[t]);
  for (t = 0; t < n; ++t) {
    const float d = row[t] - maxValue;
    row[t] = d >= kSmallestExponent ? expInline(d) : 0.0f;
  }
  float sum = 0.0f;
  t = 0;
  if (n >= kKeyBlock) {
    Lanes total = {};
    for (; t + kKeyBlock <= n; t += kKeyBlock) total += loadLanes(row + t);
    for (int l = 0; l < kKeyBlock; ++l) sum += total[l];
  }
  for (; t < n; ++t) sum += row[t];
  return sum;
}
}  // namespace

// The body of attendGroup and attendGroupBf16; T: the cache's element type (float or BF16 bits).
template <typename T>
W4A8_CLONES_INLINE void attendGroupBody(const float* q, int heads, int headDim, const T* keyBlocks, const T* values,
                                        size_t valueStride, int positions, float scale, float* scores, float* out) {
  // Scores, kKeyBlock positions per vector: for each element i of the head, one key-block row (the blocks'
  // positions' element i, contiguous) times q[h][i] broadcast. No horizontal sums. Two blocks x 4 heads per
  // pass: 8 independent FMA chains (4 would wait on the FMA latency). A block past `positions` holds zeros
  // (the cache is zeroed) and its lanes are not stored; spare heads repeat the last one and are not stored.
  const int blocks = (positions + kKeyBlock - 1) / kKeyBlock;
  const size_t blockFloats = (size_t)headDim * kKeyBlock;  // elements of one key block
  for (int h0 = 0; h0 < heads; h0 += kScoreHeads) {
    const float* qh[kScoreHeads];
    for (int h = 0; h < kScoreHeads; ++h) qh[h] = q + (size_t)std::min(h0 + h, heads - 1) * headDim;
    const int validHeads = std::min(kScoreHeads, heads - h0);
    for (int b = 0; b < blocks; b += 2) {
      const T* first = keyBlocks + (size_t)b * blockFloats;
      const T* second = b + 1 < blocks ? first + blockFloats : first;
      Lanes a0 = {}, a1 = {}, a2 = {}, a3 = {}, b0 = {}, b1 = {}, b2 = {}, b3 = {};
      for (int i = 0; i < headDim; ++i) {
        // The next pair of blocks: each block is a page of its own (4 KiB at headDim 64), where the hardware
        // prefetcher starts over; without this the loop waits on DRAM (prefetches past the end never fault).
        __builtin_prefetch(first + 2 * blockFloats + (size_t)i * kKeyBlock);
        __builtin_prefetch(first + 3 * blockFloats + (size_t)i * kKeyBlock);
        const Lanes x = loadLanes(first + (size_t)i * kKeyBlock), y = loadLanes(second + (size_t)i * kKeyBlock);
        const float q0 = qh[0][i], q1 = qh[1][i], q2 = qh[2][i], q3 = qh[3][i];
        a0 += q0 * x, a1 += q1 * x, a2 += q2 * x, a3 += q3 * x;
        b0 += q0 * y, b1 += q1 * y, b2 += q2 * y, b3 += q3 * y;
      }
      const Lanes acc[2][kScoreHeads] = {{a0, a1, a2, a3}, {b0, b1, b2, b3}};
      for (int j = 0; j < 2 && b + j < blocks; ++j) {
        const int lanes = std::min(kKeyBlock, positions - (b + j) * kKeyBlock);
        for (int h = 0; h < validHeads; ++h) {
          float* dst = scores + (size_t)(h0 + h) * positions + (b + j) * kKeyBlock;
          const Lanes v = acc[j][h] * scale;
          if (lanes == kKeyBlock) storeLanes(dst, v);
          else
            for (int l = 0; l < lanes; ++l) dst[l] = v[l];
        }
      }
    }
  }
  // out[h] = (sum_t p[h][t] values[t]) / sum_t p[h][t], for 4 heads and 2 kKeyBlock runs of elements at a time: each value row
  // is loaded once for the 4 heads, 8 independent FMA chains.
  for (int h0 = 0; h0 < heads; h0 += kScoreHeads) {
    const float* p[kScoreHeads];
    for (int h = 0; h < kScoreHeads; ++h) p[h] = scores + (size_t)std::min(h0 + h, heads - 1) * positions;
    const int validHeads = std::min(kScoreHeads, heads - h0);
    float inverse[kScoreHeads];
    for (int h = 0; h < validHeads; ++h) inverse[h] = 1.0f / expRow(scores + (size_t)(h0 + h) * positions, positions);
    int i0 = 0;
    for (; i0 + kKeyBlock <= headDim; i0 += 2 * kKeyBlock) {
      const bool pair = i0 + 2 * kKeyBlock <= headDim;  // else one run (its twin repeats it and is not stored)
      Lanes a0 = {}, a1 = {}, a2 = {}, a3 = {}, b0 = {}, b1 = {}, b2 = {}, b3 = {};
      const T* v = values + i0;
      const size_t twin = pair ? kKeyBlock : 0;
      for (int t = 0; t < positions; ++t, v += valueStride) {
        __builtin_prefetch(v + kValuePrefetch * valueStride);
        __builtin_prefetch(v + kValuePrefetch * valueStride + twin);
        const Lanes x = loadLanes(v), y = loadLanes(v + twin);
        const float p0 = p[0][t], p1 = p[1][t], p2 = p[2][t], p3 = p[3][t];
        a0 += p0 * x, a1 += p1 * x, a2 += p2 * x, a3 += p3 * x;
        b0 += p0 * y, b1 += p1 * y, b2 += p2 * y, b3 += p3 * y;
      }
      const Lanes acc[2][kScoreHeads] = {{a0, a1, a2, a3}, {b0, b1, b2, b3}};
      for (int h = 0; h < validHeads; ++h) {
        storeLanes(out + (size_t)(h0 + h) * headDim + i0, acc[0][h] * inverse[h]);
        if (pair) storeLanes(out + (size_t)(h0 + h) * headDim + i0 + kKeyBlock, acc[1][h] * inverse[h]);
      }
      if (!pair) i0 -= kKeyBlock;  // one run done, not two
    }
    for (int i = i0; i < headDim; ++i)  // a head width that is not a multiple of kKeyBlock
      for (int h = 0; h < validHeads; ++h) {
        float acc = 0.0f;
        for (int t = 0; t < positions; ++t) acc += p[h][t] * scalarValue(values[(size_t)t * valueStride + i]);
        out[(size_t)(h0 + h) * headDim + i] = acc * inverse[h];
      }
  }
}

W4A8_CLONES void attendGroup(const float* q, int heads, int headDim, const float* keyBlocks, const float* values,
                             size_t valueStride, int positions, float scale, float* scores, float* out) {
  attendGroupBody(q, heads, headDim, keyBlocks, values, valueStride, positions, scale, scores, out);
}

W4A8_CLONES void attendGroupBf16(const float* q, int heads, int headDim, const uint16_t* keyBlocks,
                                 const uint16_t* values, size_t valueStride, int positions, float scale, float* scores,
                                 float* out) {
  attendGroupBody(q, heads, headDim, keyBlocks, values, valueStride, positions, scale, scores, out);
}

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
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < NR; ++r) acc[m][r] = _mm512_setzero_ps();
  const uint16_t* wRows = w + (size_t)n0 * K;
  const float* xRows = x + (size_t)m0 * K;
  // The next tile's NR rows (contiguous after these) are prefetched as this tile runs, NR * 32 bytes per
  // chunk: rows of a few KiB each restart the hardware prefetcher at every page, which left the 1B model's
  // lm_head at about 0.7 of the read bandwidth at batch 1. (Past the matrix's end the prefetches are harmless.)
  const char* next = reinterpret_cast<const char*>(wRows + (size_t)NR * K);
  auto chunk = [&](int k, __mmask16 mask) W4A8_AVX512 {
    if (m0 == 0)
      for (int line = 0; line < NR * 32; line += 64) _mm_prefetch(next + (size_t)k * NR * 2 + line, _MM_HINT_T0);
    __m512 wv[NR];
    for (int r = 0; r < NR; ++r) wv[r] = widen16(_mm256_maskz_loadu_epi16(mask, wRows + (size_t)r * K + k));
    for (int m = 0; m < MR; ++m) {
      const __m512 xv = _mm512_maskz_loadu_ps(mask, xRows + (size_t)m * K + k);
      for (int r = 0; r < NR; ++r) acc[m][r] = _mm512_fmadd_ps(xv, wv[r], acc[m][r]);
    }
  };
  int k = 0;
  for (; k + 16 <= K; k += 16) chunk(k, 0xFFFF);
  if (k < K) chunk(k, (__mmask16)((1u << (K - k)) - 1));
  for (int m = 0; m < MR; ++m)
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
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < NR; ++r) acc[m][r] = _mm256_setzero_ps();
  const uint16_t* wRows = w + (size_t)n0 * K;
  const float* xRows = x + (size_t)m0 * K;
  const int whole = K / 8 * 8;
  const char* next = reinterpret_cast<const char*>(wRows + (size_t)NR * K);  // prefetched as in bf16TileAvx512
  for (int k = 0; k < whole; k += 8) {
    if (m0 == 0 && (k & 15) == 0) _mm_prefetch(next + (size_t)k * NR * 2, _MM_HINT_T0);  // NR * 32 bytes per 16 k
    __m256 wv[NR];
    for (int r = 0; r < NR; ++r) wv[r] = widen8(_mm_loadu_si128((const __m128i*)(wRows + (size_t)r * K + k)));
    for (int m = 0; m < MR; ++m) {
      const __m256 xv = _mm256_loadu_ps(xRows + (size_t)m * K + k);
      for (int r = 0; r < NR; ++r) acc[m][r] = _mm256_fmadd_ps(xv, wv[r], acc[m][r]);
    }
  }
  for (int m = 0; m < MR; ++m)
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
