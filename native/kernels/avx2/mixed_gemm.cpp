// AVX2 mixed-input GEMMs W4A16 and W8A8 with FP32 FMA. (W4A8 is w4a8_int16.cpp: exact int16 products.)
//
// Every FP8 and BF16 value is exact in FP32 and so is every product of two of them (at most 8 + 8
// significant bits), so FP32 FMA loses nothing but summation order.
//
// Operands (one ymm = 8 FP32 = one "chunk" of k):
//   INT4 weights, decoded per 64-k sub-block (32 code bytes, one ymm) through the group's 16-entry
//     table split into BF16 low and high bytes: vpshufb looks both up for the low nibbles (even k) and
//     the high nibbles (odd k) with a table per 128-bit lane (so G = 32 puts two groups side by side),
//     vpunpckl/hbw join the bytes to BF16 words and vpunpckl/hwd with zero make them FP32. Vector v of
//     a sub-block, float 4L + u (lane L, u = 0..3), holds k = 2 * (16L + 4 * (v % 4) + u) + v / 4.
//   FP8 weights (W8A8): 16 codes -> 16 FP16 words by bit operations (e5m2 is the top byte of FP16;
//     e4m3 maps exactly to FP16 times 2^-8, inf/NaN codes patched), then F16C vcvtph2ps; natural k
//     order. The 2^-8 comes back exactly at the end as a factor 2^8 on the sum.
//   Activations are converted once per call to FP32 in the weights' k order ("xp": [M][Kp], zero
//   padded to whole sub-blocks).
// Tiling: M <= 2 runs fused (each weight row decoded into registers, used by the M activation rows);
// larger M decodes 3 weight rows into a per-thread FP32 buffer and runs a 4 x 3 register-blocked FMA
// micro-kernel. One accumulator per output, chunks added in increasing k order on every path, so the
// result does not depend on the path, the N split or M.
#include <algorithm>
#include <type_traits>

#include "kernels/avx2/simd.h"
#include "kernels/backends.h"

namespace w4a8::avx2 {
namespace {

constexpr int kChunkK = 8;        // FP32 per ymm
constexpr int kFusedMaxRows = 2;  // M up to this: fused path
constexpr int kScratchRows = 3;   // micro-kernel width (weight rows)
constexpr int kMicroRows = 4;     // micro-kernel height (activation rows)

struct QMinusZ {
  alignas(64) float v[16][16];
  constexpr QMinusZ() : v() {
    for (int z = 0; z < 16; ++z)
      for (int q = 0; q < 16; ++q) v[z][q] = (float)(q - z);
  }
};
constexpr QMinusZ kQMinusZ{};

// INT4 weights with BF16 group tables (W4A16). A block is one group for G >= 64 (G / 64 sub-blocks) and
// two groups for G = 32.
template <int G>
struct Int4Source {
  static constexpr int kBlockK = G >= 64 ? G : 64, kSubBlocks = kBlockK / 64;
  static constexpr int kChunksPerBlock = kBlockK / kChunkK;
  struct Row {
    const uint8_t* codes;
    const float* scales;
    const uint8_t* zeros;
  };

  const Int4WeightsView& w;
  int groups, fullBlocks, blocks, tailBytes;
  float outputFactor = 1.0f;

  explicit Int4Source(const Int4WeightsView& view) : w(view) {
    groups = view.groups();
    fullBlocks = view.cols / kBlockK;
    tailBytes = (view.cols % kBlockK) / 2;  // only G = 32 with an odd group count has a tail
    blocks = fullBlocks + (tailBytes ? 1 : 0);
  }

  W4A8_ALWAYS_INLINE Row row(int n) const {
    const size_t g0 = (size_t)n * groups;
    return {w.codes + (size_t)n * (w.cols / 2), w.groupScales + g0, w.zeros + g0};
  }
  // The group's table as bytes: [low bytes of the 16 BF16 entries | high bytes], one per 128-bit lane.
  W4A8_ALWAYS_INLINE __m256i groupBytes(const Row& r, int g) const {
    const __m256 s = _mm256_set1_ps(r.scales[g]);
    const float* qz = kQMinusZ.v[r.zeros[g] & 15];
    const __m256 v0 = roundToBf16(_mm256_mul_ps(_mm256_load_ps(qz), s));
    const __m256 v1 = roundToBf16(_mm256_mul_ps(_mm256_load_ps(qz + 8), s));
    // High words (the BF16) of q = 0..7 and 8..15, packed per lane: [q0-3, q8-11 | q4-7, q12-15].
    __m256i words = _mm256_packus_epi32(_mm256_srli_epi32(_mm256_castps_si256(v0), 16),
                                        _mm256_srli_epi32(_mm256_castps_si256(v1), 16));
    words = _mm256_permute4x64_epi64(words, 0xD8);  // [q0-7 | q8-15]
    const __m256i split = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10,
                                           12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
    const __m256i bytes = _mm256_shuffle_epi8(words, split);  // [lo0-7, hi0-7 | lo8-15, hi8-15]
    return _mm256_permute4x64_epi64(bytes, 0xD8);            // [lo0-15 | hi0-15]
  }

  // 32 code bytes (64 k) with the low-byte and high-byte tables of each lane -> 8 FP32 vectors, handed
  // to use(v, vector) as soon as each is made (so that few registers stay live: AVX2 has 16).
  template <class Use>
  W4A8_ALWAYS_INLINE static void decodeSubBlock(__m256i codes, __m256i low, __m256i high, int v0, Use use) {
    const __m256i nibble = _mm256_set1_epi8(0x0F), zero = _mm256_setzero_si256();
#pragma GCC unroll 2
    for (int parity = 0; parity < 2; ++parity) {  // even k (low nibbles), then odd k (high nibbles)
      const __m256i index = parity ? _mm256_and_si256(_mm256_srli_epi16(codes, 4), nibble) : _mm256_and_si256(codes, nibble);
      const __m256i lowBytes = _mm256_shuffle_epi8(low, index), highBytes = _mm256_shuffle_epi8(high, index);
#pragma GCC unroll 2
      for (int half = 0; half < 2; ++half) {
        const __m256i words = half ? _mm256_unpackhi_epi8(lowBytes, highBytes) : _mm256_unpacklo_epi8(lowBytes, highBytes);
        const int v = v0 + 4 * parity + 2 * half;
        use(v, _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, words)));
        use(v + 1, _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, words)));
      }
    }
  }

  template <bool kTail, class Use>
  W4A8_ALWAYS_INLINE void decode(const Row& r, int b, Use use) const {
    const uint8_t* p = r.codes + (size_t)b * (kBlockK / 2);
    if constexpr (G >= 64) {
      const __m256i t = groupBytes(r, b);
      const __m256i low = _mm256_permute2x128_si256(t, t, 0x00), high = _mm256_permute2x128_si256(t, t, 0x11);
#pragma GCC unroll 2
      for (int sb = 0; sb < kSubBlocks; ++sb)
        decodeSubBlock(_mm256_loadu_si256((const __m256i*)(p + 32 * sb)), low, high, 8 * sb, use);
    } else {
      const __m256i a = groupBytes(r, 2 * b);
      const __m256i c = (kTail && 2 * b + 1 >= groups) ? _mm256_setzero_si256() : groupBytes(r, 2 * b + 1);
      __m256i codes;
      if constexpr (kTail) {
        alignas(32) uint8_t buffer[32] = {};
        __builtin_memcpy(buffer, p, (size_t)tailBytes);
        codes = _mm256_load_si256((const __m256i*)buffer);
      } else {
        codes = _mm256_loadu_si256((const __m256i*)p);
      }
      decodeSubBlock(codes, _mm256_permute2x128_si256(a, c, 0x20), _mm256_permute2x128_si256(a, c, 0x31), 0, use);
    }
  }
};

// FP8 weights, 32 codes per block, natural k order. e4m3 formats decode to value * 2^-8.
struct Fp8Source {
  static constexpr int kBlockK = 32, kChunksPerBlock = 4;
  struct Row {
    const uint8_t* codes;
  };
  const Fp8WeightsView& w;
  int fullBlocks, blocks, tailBytes;
  bool e5m2;
  __m256i specialAbove;  // e4m3: magnitudes above this are inf/NaN codes
  float outputFactor;
  explicit Fp8Source(const Fp8WeightsView& view) : w(view) {
    fullBlocks = view.cols / kBlockK;
    tailBytes = view.cols % kBlockK;
    blocks = fullBlocks + (tailBytes ? 1 : 0);
    e5m2 = view.format == Fp8Format::E5M2;
    specialAbove = _mm256_set1_epi16(view.format == Fp8Format::E4M3 ? 0x77 : 0x7E);
    outputFactor = e5m2 ? 1.0f : 256.0f;
  }
  W4A8_ALWAYS_INLINE Row row(int n) const { return {w.codes + (size_t)n * w.cols}; }

  // 16 codes -> 16 FP16 words: e5m2 is the top byte of FP16; an e4m3 code's magnitude bits shifted
  // left by 7 are FP16 bits of value * 2^-8 (normals and subnormals alike), and setting bit 14 turns
  // the all-ones exponent of an inf/NaN code into FP16 inf/NaN.
  W4A8_ALWAYS_INLINE __m256i toFp16(__m128i codes) const {
    const __m256i c = _mm256_cvtepu8_epi16(codes);
    if (e5m2) return _mm256_slli_epi16(c, 8);
    const __m256i magnitude = _mm256_and_si256(c, _mm256_set1_epi16(0x7F));
    const __m256i sign = _mm256_and_si256(_mm256_slli_epi16(c, 8), _mm256_set1_epi16((short)0x8000));
    const __m256i special = _mm256_and_si256(_mm256_cmpgt_epi16(magnitude, specialAbove), _mm256_set1_epi16(0x4000));
    return _mm256_or_si256(_mm256_or_si256(_mm256_slli_epi16(magnitude, 7), sign), special);
  }

  template <bool kTail, class Use>
  W4A8_ALWAYS_INLINE void decode(const Row& r, int b, Use use) const {
    const uint8_t* p = r.codes + (size_t)b * kBlockK;
    alignas(32) uint8_t buffer[32] = {};
    if constexpr (kTail) {
      __builtin_memcpy(buffer, p, (size_t)tailBytes);
      p = buffer;
    }
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      const __m256i f16 = toFp16(_mm_loadu_si128((const __m128i*)(p + 16 * h)));
      use(2 * h, _mm256_cvtph_ps(_mm256_castsi256_si128(f16)));
      use(2 * h + 1, _mm256_cvtph_ps(_mm256_extracti128_si256(f16, 1)));
    }
  }
};

// ---- activations: FP32 in the weight source's k order, [M][Kp], zero padded -----------------------

// INT4 order, per 64-k sub-block: xp[64b + 8v + 4L + u] = x[64b + 2 * (16L + 4 * (v % 4) + u) + v / 4].
template <class ValueAt>
void prepareInt4Order(int M, int K, int Kp, float* xp, ValueAt valueAt) {
  for (int m = 0; m < M; ++m) {
    float* row = xp + (size_t)m * Kp;
    for (int b = 0; b < Kp / 64; ++b)
      for (int v = 0; v < 8; ++v)
        for (int e = 0; e < 8; ++e) {
          const int L = e / 4, u = e % 4;
          const int k = 64 * b + 2 * (16 * L + 4 * (v % 4) + u) + v / 4;
          row[64 * b + 8 * v + e] = k < K ? valueAt(m, k) : 0.0f;
        }
  }
}

template <class ValueAt>
void prepareNaturalOrder(int M, int K, int Kp, float* xp, ValueAt valueAt) {
  for (int m = 0; m < M; ++m)
    for (int k = 0; k < Kp; ++k) xp[(size_t)m * Kp + k] = k < K ? valueAt(m, k) : 0.0f;
}

// ---- tiling -------------------------------------------------------------------------------------

template <class Scale>
W4A8_ALWAYS_INLINE void storeSums(const GemmOutput& y, int m0, int n0, int mr, int nr, const float* sums, int ldSums,
                                  float factor, Scale scale) {
  for (int m = 0; m < mr; ++m)
    for (int r = 0; r < nr; ++r)
      storeValue(y, m0 + m, n0 + r, scale(m0 + m, n0 + r) * (sums[m * ldSums + r] * factor));
}

template <int MR, int NR, class Source>
void fusedTile(const Source& src, int n0, const float* xp, int Kp, float* sums /* [MR][NR] */) {
  constexpr int CPB = Source::kChunksPerBlock;
  typename Source::Row rows[NR];
#pragma GCC unroll 8
  for (int r = 0; r < NR; ++r) rows[r] = src.row(n0 + r);
  __m256 acc[MR][NR];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) acc[m][r] = _mm256_setzero_ps();
  auto block = [&](int b, auto tail) {
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r)
      src.template decode<decltype(tail)::value>(rows[r], b, [&](int c, __m256 w) {
#pragma GCC unroll 8
        for (int m = 0; m < MR; ++m)
          acc[m][r] = _mm256_fmadd_ps(_mm256_load_ps(xp + (size_t)m * Kp + (b * CPB + c) * kChunkK), w, acc[m][r]);
      });
  };
  for (int b = 0; b < src.fullBlocks; ++b) block(b, std::false_type{});
  if (src.blocks > src.fullBlocks) block(src.fullBlocks, std::true_type{});
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < NR; ++r) sums[m * NR + r] = horizontalSum(acc[m][r]);
}

template <int MR, class Source, class Scale>
void fusedRows(const Source& src, int nBegin, int nEnd, const float* xp, int Kp, const GemmOutput& y, Scale scale) {
  constexpr int NR = MR == 1 ? 4 : 2;  // enough independent FMA chains to cover the FMA latency
  float sums[MR * NR];
  int n = nBegin;
  for (; n + NR <= nEnd; n += NR) {
    fusedTile<MR, NR>(src, n, xp, Kp, sums);
    storeSums(y, 0, n, MR, NR, sums, NR, src.outputFactor, scale);
  }
  for (; n < nEnd; ++n) {
    fusedTile<MR, 1>(src, n, xp, Kp, sums);
    storeSums(y, 0, n, MR, 1, sums, 1, src.outputFactor, scale);
  }
}

// acc[m][r] += x[m] . w[r] over all chunks; w: [chunks][NR][8] floats, x rows Kp floats apart.
template <int MR, int NR>
void microKernel(const float* xp, int Kp, const float* ws, int chunks, float* sums /* [MR][NR] */) {
  __m256 acc[MR][NR];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) acc[m][r] = _mm256_setzero_ps();
  for (int c = 0; c < chunks; ++c) {
    __m256 w[NR];
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) w[r] = _mm256_load_ps(ws + ((size_t)c * NR + r) * kChunkK);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const __m256 x = _mm256_load_ps(xp + (size_t)m * Kp + (size_t)c * kChunkK);
#pragma GCC unroll 8
      for (int r = 0; r < NR; ++r) acc[m][r] = _mm256_fmadd_ps(x, w[r], acc[m][r]);
    }
  }
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < NR; ++r) sums[m * NR + r] = horizontalSum(acc[m][r]);
}

template <int NR, int MR = 1>
void microKernelFor(int mr, const float* xp, int Kp, const float* ws, int chunks, float* sums) {
  if constexpr (MR <= kMicroRows) {
    if (mr == MR) return microKernel<MR, NR>(xp, Kp, ws, chunks, sums);
    microKernelFor<NR, MR + 1>(mr, xp, Kp, ws, chunks, sums);
  }
}

// Decodes weight row n into column r of the scratch tile ws: [chunks][nr][8] floats.
template <class Source>
void decodeRow(const Source& src, int n, int nr, int r, float* ws) {
  constexpr int CPB = Source::kChunksPerBlock;
  const typename Source::Row row = src.row(n);
  auto block = [&](int b, auto tail) {
    src.template decode<decltype(tail)::value>(
        row, b, [&](int c, __m256 w) { _mm256_store_ps(ws + ((size_t)(b * CPB + c) * nr + r) * kChunkK, w); });
  };
  for (int b = 0; b < src.fullBlocks; ++b) block(b, std::false_type{});
  if (src.blocks > src.fullBlocks) block(src.fullBlocks, std::true_type{});
}

template <class Source, class Scale>
void scratchRows(const Source& src, int M, int nBegin, int nEnd, const float* xp, int Kp, const GemmOutput& y,
                 Scale scale) {
  const int chunks = Kp / kChunkK;
  float* ws = static_cast<float*>(fast::threadScratch(fast::kScratchWeights, (size_t)kScratchRows * Kp * 4));
  float sums[kMicroRows * kScratchRows];
  for (int n0 = nBegin; n0 < nEnd; n0 += kScratchRows) {
    const int nr = std::min(kScratchRows, nEnd - n0);
    for (int r = 0; r < nr; ++r) {
      decodeRow(src, n0 + r, nr, r, ws);
    }
    for (int m0 = 0; m0 < M; m0 += kMicroRows) {
      const int mr = std::min(kMicroRows, M - m0);
      const float* x = xp + (size_t)m0 * Kp;
      switch (nr) {
        case 1: microKernelFor<1>(mr, x, Kp, ws, chunks, sums); break;
        case 2: microKernelFor<2>(mr, x, Kp, ws, chunks, sums); break;
        default: microKernelFor<3>(mr, x, Kp, ws, chunks, sums); break;
      }
      storeSums(y, m0, n0, mr, nr, sums, nr, src.outputFactor, scale);
    }
  }
}

template <class Source, class Scale>
void runGemm(const Source& src, int M, int nBegin, int nEnd, const float* xp, int Kp, const GemmOutput& y,
             Scale scale) {
  if (M == 1) fusedRows<1>(src, nBegin, nEnd, xp, Kp, y, scale);
  else if (M == 2) fusedRows<2>(src, nBegin, nEnd, xp, Kp, y, scale);
  else scratchRows(src, M, nBegin, nEnd, xp, Kp, y, scale);
  static_assert(kFusedMaxRows == 2, "runGemm dispatches M = 1 and 2 to the fused path");
}

int roundUp(int k, int block) { return (k + block - 1) / block * block; }

template <class Scale>
void int4Gemm(const Int4WeightsView& w, int M, int nBegin, int nEnd, const float* xp, int Kp, const GemmOutput& y,
              Scale scale) {
  switch (w.groupSize) {
    case 128: return runGemm(Int4Source<128>(w), M, nBegin, nEnd, xp, Kp, y, scale);
    case 64: return runGemm(Int4Source<64>(w), M, nBegin, nEnd, xp, Kp, y, scale);
    default: return runGemm(Int4Source<32>(w), M, nBegin, nEnd, xp, Kp, y, scale);
  }
}

float* activationScratch(int M, int Kp) {
  return static_cast<float*>(fast::threadScratch(fast::kScratchActivations, (size_t)M * Kp * 4));
}

// Rows of X are converted and multiplied kRowsPerPass at a time, which bounds the per-thread activation
// buffer (long prompts) and changes no result: every output is computed the same way in any pass.
constexpr int kRowsPerPass = 256;

GemmOutput rowsFrom(const GemmOutput& y, int m0) {
  return {y.f32 ? y.f32 + (size_t)m0 * y.ldy : nullptr, y.bf16 ? y.bf16 + (size_t)m0 * y.ldy : nullptr, y.ldy};
}

}  // namespace

void gemmW4A16(const W4A16GemmArgs& a, int nBegin, int nEnd) {
  const int K = a.w.cols, Kp = roundUp(K, 64);
  for (int m0 = 0; m0 < a.M && nBegin < nEnd; m0 += kRowsPerPass) {
    const int rows = std::min(kRowsPerPass, a.M - m0);
    float* xp = activationScratch(rows, Kp);
    const uint16_t* x16 = a.x16 + (size_t)m0 * K;
    prepareInt4Order(rows, K, Kp, xp, [&](int m, int k) {
      const uint32_t bits = (uint32_t)x16[(size_t)m * K + k] << 16;
      float v;
      __builtin_memcpy(&v, &bits, 4);
      return v;
    });
    int4Gemm(a.w, rows, nBegin, nEnd, xp, Kp, rowsFrom(a.y, m0),
                              [&](int, int n) { return a.w.channelScales[n]; });
  }
}

void gemmW8A8(const W8A8GemmArgs& a, int nBegin, int nEnd) {
  const int K = a.w.cols, Kp = roundUp(K, 32);
  const float* table = fp8DecodeTable(a.actFormat);
  const Fp8Source src(a.w);
  for (int m0 = 0; m0 < a.M && nBegin < nEnd; m0 += kRowsPerPass) {
    const int rows = std::min(kRowsPerPass, a.M - m0);
    float* xp = activationScratch(rows, Kp);
    const uint8_t* x8 = a.x8 + (size_t)m0 * K;
    prepareNaturalOrder(rows, K, Kp, xp, [&](int m, int k) { return table[x8[(size_t)m * K + k]]; });
    runGemm(src, rows, nBegin, nEnd, xp, Kp, rowsFrom(a.y, m0),
            [&](int m, int n) { return a.xScales[m0 + m] * a.w.channelScales[n]; });
  }
}

}  // namespace w4a8::avx2
