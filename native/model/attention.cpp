// Grouped-query attention over one sequence's KV cache (ops.h): the key-block layout, and one body written with
// GCC vector extensions for three vector widths, compiled for AVX-512 (16 floats), AVX2 (8) and the x86-64
// baseline (4). The width is a template argument, not target_clones: a 16-float vector type in an AVX2 body
// was lowered through the stack (9x slower than the previous attention on AVX2, measured), so each target gets
// the width of its registers. Which body runs follows the kernel backend, as the BF16 lm_head does (ops.cpp).
#include <algorithm>
#include <cstring>

#include "fp8/fp8.h"
#include "kernels/dispatch.h"
#include "model/exp_inline.h"
#include "model/ops.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define W4A8_ATTENTION_X86 1
#define W4A8_AVX512 __attribute__((target("avx512f,avx2,fma")))
#define W4A8_AVX2 __attribute__((target("avx2,fma")))
#endif
// Vector helpers take and return 64-byte vectors; GCC notes that the baseline target would pass those
// differently from an AVX-512 one, which never happens: they are always inlined into the bodies below.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace w4a8 {

void storeKey(float* keyBlocks, int headDim, int position, const float* key) {
  float* block = keyBlocks + (size_t)(position / kKeyBlock) * headDim * kKeyBlock + position % kKeyBlock;
  for (int i = 0; i < headDim; ++i) block[(size_t)i * kKeyBlock] = key[i];
}
void storeKey(uint16_t* keyBlocks, int headDim, int position, const float* key) {
  uint16_t* block = keyBlocks + (size_t)(position / kKeyBlock) * headDim * kKeyBlock + position % kKeyBlock;
  for (int i = 0; i < headDim; ++i) block[(size_t)i * kKeyBlock] = floatToBf16(key[i]);
}

namespace {

#define W4A8_INLINE inline __attribute__((always_inline))

// W floats (F), and W BF16 words (H) widened through W 32-bit words (U).
template <int W>
struct Vec;
template <>
struct Vec<16> {
  typedef float F __attribute__((vector_size(64)));
  typedef uint16_t H __attribute__((vector_size(32)));
  typedef uint32_t U __attribute__((vector_size(64)));
};
template <>
struct Vec<8> {
  typedef float F __attribute__((vector_size(32)));
  typedef uint16_t H __attribute__((vector_size(16)));
  typedef uint32_t U __attribute__((vector_size(32)));
};
template <>
struct Vec<4> {
  typedef float F __attribute__((vector_size(16)));
  typedef uint16_t H __attribute__((vector_size(8)));
  typedef uint32_t U __attribute__((vector_size(16)));
};

template <int W>
W4A8_INLINE typename Vec<W>::F load(const float* p) {
  typename Vec<W>::F v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <int W>
W4A8_INLINE typename Vec<W>::F load(const uint16_t* p) {  // exact: a BF16 value is the top half of an FP32
  typename Vec<W>::H h;
  std::memcpy(&h, p, sizeof(h));
  const typename Vec<W>::U u = __builtin_convertvector(h, typename Vec<W>::U) << 16;
  typename Vec<W>::F v;
  std::memcpy(&v, &u, sizeof(v));
  return v;
}
template <int W>
W4A8_INLINE void store(float* p, typename Vec<W>::F v) {
  std::memcpy(p, &v, sizeof(v));
}
W4A8_INLINE float scalar(float v) { return v; }
W4A8_INLINE float scalar(uint16_t v) { return bf16ToFloat(v); }

constexpr int kHeads = 4;           // query heads per pass over the keys and over the values
constexpr int kValuePrefetch = 16;  // positions ahead that the value pass prefetches

// row[0, n) = exp(row - max(row)); returns their sum (the softmax without its division, which the caller applies
// to the outputs). Max and sum over W lanes (independent chains), then the tail. Exponentials below e^-80 of the
// maximum are 0: their products would be subnormal, which costs a microcode assist per instruction (4x slower
// attention on a peaked softmax, measured), and their weight is far below the rounding of the sum (>= 1).
constexpr float kSmallestExponent = -80.0f;
template <int W>
W4A8_INLINE float expRow(float* row, int n) {
  using F = typename Vec<W>::F;
  float maxValue = row[0];
  int t = 0;
  if (n >= W) {
    F m = load<W>(row);
    for (t = W; t + W <= n; t += W) {
      const F v = load<W>(row + t);
      m = v > m ? v : m;
    }
    for (int l = 0; l < W; ++l) maxValue = std::max(maxValue, m[l]);
  }
  for (; t < n; ++t) maxValue = std::max(maxValue, row[t]);
  for (t = 0; t < n; ++t) {
    const float d = row[t] - maxValue;
    row[t] = d >= kSmallestExponent ? expInline(d) : 0.0f;
  }
  float sum = 0.0f;
  t = 0;
  if (n >= W) {
    F total = {};
    for (; t + W <= n; t += W) total += load<W>(row + t);
    for (int l = 0; l < W; ++l) sum += total[l];
  }
  for (; t < n; ++t) sum += row[t];
  return sum;
}

// The attention of attendGroup for vectors of W floats and cache elements T (float, or BF16 bits). Every pass
// keeps 8 (W = 4: 16) independent FMA chains: a chain per accumulator, and 4 would wait on the FMA latency.
template <int W, typename T>
W4A8_INLINE void attendBody(const float* q, int heads, int headDim, const T* keyBlocks, const T* values,
                            size_t valueStride, int positions, float scale, float* scores, float* out) {
  using F = typename Vec<W>::F;
  constexpr int P = kKeyBlock / W;        // vectors per key-block row
  constexpr int B = P == 1 ? 2 : 1;       // key blocks per pass
  constexpr int R = P == 1 ? 2 : 1;       // runs of kKeyBlock output elements per value pass
  const int blocks = (positions + kKeyBlock - 1) / kKeyBlock;
  const size_t blockElements = (size_t)headDim * kKeyBlock;

  // Scores, kKeyBlock positions per key-block row: row i holds the block's positions' element i, times q[h][i]
  // broadcast. No horizontal sums. A block past `positions` holds zeros (the cache is zeroed) and its lanes are
  // not stored; spare heads repeat the last one and are not stored.
  for (int h0 = 0; h0 < heads; h0 += kHeads) {
    const float* qh[kHeads];
    for (int h = 0; h < kHeads; ++h) qh[h] = q + (size_t)std::min(h0 + h, heads - 1) * headDim;
    const int validHeads = std::min(kHeads, heads - h0);
    for (int b = 0; b < blocks; b += B) {
      const T* block[B];
      for (int j = 0; j < B; ++j) block[j] = keyBlocks + (size_t)std::min(b + j, blocks - 1) * blockElements;
      F acc[B][kHeads][P] = {};
      for (int i = 0; i < headDim; ++i) {
        // The next pass's blocks: each block is a page of its own (4 KiB at headDim 64, FP32), where the hardware
        // prefetcher starts over (prefetches past the end never fault).
        for (int j = 0; j < B; ++j) __builtin_prefetch(keyBlocks + (size_t)(b + B + j) * blockElements + (size_t)i * kKeyBlock);
        F x[B][P];
        for (int j = 0; j < B; ++j)
          for (int p = 0; p < P; ++p) x[j][p] = load<W>(block[j] + (size_t)i * kKeyBlock + p * W);
        for (int h = 0; h < kHeads; ++h) {
          const float qi = qh[h][i];
          for (int j = 0; j < B; ++j)
            for (int p = 0; p < P; ++p) acc[j][h][p] += qi * x[j][p];
        }
      }
      for (int j = 0; j < B && b + j < blocks; ++j) {
        const int lanes = std::min(kKeyBlock, positions - (b + j) * kKeyBlock);
        for (int h = 0; h < validHeads; ++h) {
          float row[kKeyBlock];
          for (int p = 0; p < P; ++p) store<W>(row + p * W, acc[j][h][p] * scale);
          std::copy(row, row + lanes, scores + (size_t)(h0 + h) * positions + (b + j) * kKeyBlock);
        }
      }
    }
  }

  // out[h] = (sum_t p[h][t] values[t]) / sum_t p[h][t], for 4 heads and R runs of kKeyBlock elements at a time:
  // each value row is loaded once for the 4 heads.
  for (int h0 = 0; h0 < heads; h0 += kHeads) {
    const float* p[kHeads];
    for (int h = 0; h < kHeads; ++h) p[h] = scores + (size_t)std::min(h0 + h, heads - 1) * positions;
    const int validHeads = std::min(kHeads, heads - h0);
    float inverse[kHeads];
    for (int h = 0; h < validHeads; ++h) inverse[h] = 1.0f / expRow<W>(scores + (size_t)(h0 + h) * positions, positions);
    int i0 = 0;
    while (i0 + kKeyBlock <= headDim) {
      const int runs = std::min(R, (headDim - i0) / kKeyBlock);  // R, or 1 at the end (its twin repeats it)
      F acc[kHeads][R][P] = {};
      const T* v = values + i0;
      for (int t = 0; t < positions; ++t, v += valueStride) {
        __builtin_prefetch(v + kValuePrefetch * valueStride);
        F x[R][P];
        for (int r = 0; r < R; ++r)
          for (int e = 0; e < P; ++e) x[r][e] = load<W>(v + (r < runs ? r : 0) * kKeyBlock + e * W);
        for (int h = 0; h < kHeads; ++h) {
          const float ph = p[h][t];
          for (int r = 0; r < R; ++r)
            for (int e = 0; e < P; ++e) acc[h][r][e] += ph * x[r][e];
        }
      }
      for (int h = 0; h < validHeads; ++h)
        for (int r = 0; r < runs; ++r)
          for (int e = 0; e < P; ++e)
            store<W>(out + (size_t)(h0 + h) * headDim + i0 + r * kKeyBlock + e * W, acc[h][r][e] * inverse[h]);
      i0 += runs * kKeyBlock;
    }
    for (int i = i0; i < headDim; ++i)  // a head width that is not a multiple of kKeyBlock
      for (int h = 0; h < validHeads; ++h) {
        float acc = 0.0f;
        for (int t = 0; t < positions; ++t) acc += p[h][t] * scalar(values[(size_t)t * valueStride + i]);
        out[(size_t)(h0 + h) * headDim + i] = acc * inverse[h];
      }
  }
}

using AttendF32 = void (*)(const float*, int, int, const float*, const float*, size_t, int, float, float*, float*);
using AttendBf16 = void (*)(const float*, int, int, const uint16_t*, const uint16_t*, size_t, int, float, float*,
                            float*);

#define W4A8_ATTEND_BODIES(prefix, target, width)                                                                 \
  target void prefix##F32(const float* q, int heads, int headDim, const float* k, const float* v, size_t stride,   \
                          int positions, float scale, float* scores, float* out) {                                \
    attendBody<width>(q, heads, headDim, k, v, stride, positions, scale, scores, out);                            \
  }                                                                                                                \
  target void prefix##Bf16(const float* q, int heads, int headDim, const uint16_t* k, const uint16_t* v,            \
                           size_t stride, int positions, float scale, float* scores, float* out) {                \
    attendBody<width>(q, heads, headDim, k, v, stride, positions, scale, scores, out);                            \
  }

W4A8_ATTEND_BODIES(attendBase, , 4)
#ifdef W4A8_ATTENTION_X86
W4A8_ATTEND_BODIES(attendAvx2, W4A8_AVX2, 8)
W4A8_ATTEND_BODIES(attendAvx512, W4A8_AVX512, 16)
#endif

struct Bodies {
  AttendF32 f32;
  AttendBf16 bf16;
};

// The bodies for `isa` ("reference": the baseline, "avx2", "avx512"), or none when this CPU cannot run them.
bool bodiesFor(const char* isa, Bodies* out) {
#ifdef W4A8_ATTENTION_X86
  if (!std::strcmp(isa, "avx512") && __builtin_cpu_supports("avx512f")) return *out = {attendAvx512F32, attendAvx512Bf16}, true;
  if (!std::strcmp(isa, "avx2") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return *out = {attendAvx2F32, attendAvx2Bf16}, true;
#endif
  if (!std::strcmp(isa, "reference")) return *out = {attendBaseF32, attendBaseBf16}, true;
  return false;
}

// The bodies that match the kernel backend in use (W4A8_ISA=reference or avx2 force the narrower ones).
const Bodies& activeBodies() {
  static const Bodies chosen = [] {
    const char* backend = activeKernels().name;
    Bodies b{};
    if (!std::strcmp(backend, "reference")) bodiesFor("reference", &b);
    else if (!std::strcmp(backend, "avx2")) bodiesFor("avx2", &b);
    else if (!bodiesFor("avx512", &b) && !bodiesFor("avx2", &b)) bodiesFor("reference", &b);
    return b;
  }();
  return chosen;
}

}  // namespace

void attendGroup(const float* q, int heads, int headDim, const float* keyBlocks, const float* values,
                 size_t valueStride, int positions, float scale, float* scores, float* out) {
  activeBodies().f32(q, heads, headDim, keyBlocks, values, valueStride, positions, scale, scores, out);
}

void attendGroupBf16(const float* q, int heads, int headDim, const uint16_t* keyBlocks, const uint16_t* values,
                     size_t valueStride, int positions, float scale, float* scores, float* out) {
  activeBodies().bf16(q, heads, headDim, keyBlocks, values, valueStride, positions, scale, scores, out);
}

bool attendGroupWith(const char* isa, const float* q, int heads, int headDim, const void* keyBlocks,
                     const void* values, bool bf16, size_t valueStride, int positions, float scale, float* scores,
                     float* out) {
  Bodies b{};
  if (!bodiesFor(isa, &b)) return false;
  if (bf16)
    b.bf16(q, heads, headDim, static_cast<const uint16_t*>(keyBlocks), static_cast<const uint16_t*>(values),
           valueStride, positions, scale, scores, out);
  else
    b.f32(q, heads, headDim, static_cast<const float*>(keyBlocks), static_cast<const float*>(values), valueStride,
          positions, scale, scores, out);
  return true;
}

}  // namespace w4a8
