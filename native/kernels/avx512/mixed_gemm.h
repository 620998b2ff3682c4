// AVX-512 mixed-input GEMMs (W4A8, W4A16, W8A8), written once over a dot-product policy `Dot` and
// compiled twice: gemm_bf16.cpp (vdpbf16ps) and gemm_fma.cpp (FP32 FMA, for CPUs without AVX512-BF16).
//
// Both operands become BF16 before the multiply; that is exact, because every FP8 value is a BF16
// value and W4A16 weights are BF16 by definition (DESIGN.md §1). A Dot step adds, in each of 16 FP32
// lanes, the exact products of one pair of adjacent BF16 words: products are exact, only the order of
// the FP32 additions differs from the reference (16 lane sums over k, then a fixed horizontal tree).
//
// Operands (one zmm = 32 BF16 words = one "chunk" of k):
//   weights  decoded on the fly from the canonical packed layout, 128 k (INT4) or 64 k (FP8) per
//            64-byte load; the FP8 weight matrix is never materialized.
//     INT4:  code byte i of a 64-byte block holds k = 2i (low nibble) and 2i+1 (high nibble). Read as
//            32 words, word j holds k = 4j+s in bits 4s..4s+3 (s = 0..3). Bringing nibble s to bits
//            0..3 and looking it up with vpermw in the group's 16-entry BF16 table (the table is
//            repeated in both halves, so index bit 4 does not matter) gives chunk s: word j = w[4j+s].
//            G = 64 and 32 put 2 or 4 groups' tables in the index space (vpermw 5 bits, vpermt2w 6).
//     FP8:   vpermi2b looks up the high and low BF16 bytes of 128-entry tables (code & 0x7F), the sign
//            is ORed in, and vpunpckl/hbw interleave them: chunk h (0, 1), word 8L+i = w[16L + 8h + i].
//   activations  converted once per call to BF16 in the same k order ("xp": [M][Kp] words, zero padded
//            to whole blocks), so a Dot pairs every weight with its own activation.
//   The table of each group, lut[q] = fp8(fl32(s_g * (q - z))) as BF16, is built with 16-lane FP32
//   arithmetic that reproduces fp8Encode exactly (simd.h), once per group and row.
//
// Tiling: M <= kFusedMaxRows runs "fused": each row's weights are decoded into registers and used for
// all M activations. Larger M decodes kScratchRows weight rows, one K panel at a time, into a small
// per-thread BF16 buffer (L1-resident, never the whole matrix) and runs an Mr x 4 register-blocked
// micro-kernel over all M, its accumulators kept exactly from panel to panel. Both paths keep one
// accumulator per output and add chunks in increasing k order, so every output is bit-identical whatever
// the path, the N split or M (batch invariance).
#pragma once
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/avx512/simd.h"
#include "kernels/int4_tables.h"

namespace w4a8::avx512 {
namespace {

constexpr int kChunkK = 32;        // BF16 words per zmm
constexpr int kFusedMaxRows = 4;   // M up to this: fused path
constexpr int kFusedTileN = 4;     // weight rows decoded together in the fused path
constexpr int kScratchRows = 4;    // weight rows per scratch tile (micro-kernel width)

// Words between rows of the converted activations: Kp, plus one cache line when Kp * 2 bytes is a
// multiple of 4 KiB, so that the micro-kernel's activation rows do not all land in the same L1 sets.
constexpr int xRowStride(int Kp) { return (Kp * 2) % 4096 == 0 ? Kp + 32 : Kp; }

// (q - z) as FP32 for every zero point z: row z is the vector lut arithmetic starts from.
struct QMinusZ {
  alignas(64) float v[16][16];
  constexpr QMinusZ() : v() {
    for (int z = 0; z < 16; ++z)
      for (int q = 0; q < 16; ++q) v[z][q] = (float)(q - z);
  }
};
constexpr QMinusZ kQMinusZ{};

// ---- weight sources: decode one block of one row into kChunksPerBlock BF16 vectors --------------

// The 16 FP32 values fl32(s_g * (q - z)) of one group (q - z is exact; the product rounds once, as in
// the reference). Zero points are 0..15 by contract; the mask only keeps the table index in bounds.
W4A8_ALWAYS_INLINE __m512 groupValues(const float* scales, const uint8_t* zeros, int g) {
  return _mm512_mul_ps(_mm512_load_ps(kQMinusZ.v[zeros[g] & 15]), _mm512_set1_ps(scales[g]));
}

// W4A8: table entries are fp8(s_g * (q - z)); rows whose scales all satisfy |s_g| <= 2^100 ("short"
// rows: no entry is NaN, inf or near FP32 overflow) use the 6-operation rounding of simd.h instead of
// the full encoder. W4A16: table entries are bf16(s_g * (q - z)).
enum class Int4Table { Fp8, Bf16 };

template <int G, Int4Table kTable>
struct Int4Source {
  static constexpr int kBlockK = 128, kChunksPerBlock = 4;
  struct Row {
    const uint8_t* codes;
    const float* scales;
    const uint8_t* zeros;
    // The row's groups in the weights' prepared tables (kernels/int4_tables.h), when the source uses them and
    // the row is not generic; else null.
    const uint16_t* tableIndex;
    const int8_t* baseExp;
    const Int4TableEntry* entries;  // the prepared tables' dictionary (with tableIndex)
  };

  const Int4WeightsView& w;
  Fp8Vec fp8;
  int groups, fullBlocks, blocks, tailBytes;
  // W4A8 with G = 128 reads each group's table from the prepared tables when the weights have them: a BF16
  // table is then a 32-byte load and an exponent add, where building it from the scale is an FP32 rounding
  // chain of some ten operations per group and row. (Fewer instructions; alone it measured within the noise at
  // 16 tokens on the AMX path, 2026-12-01, which is bound by more than the decode's instruction count.)
  const Int4Tables* prepared = nullptr;

  explicit Int4Source(const Int4WeightsView& view) : w(view), fp8(fast::fp8Params(view.format)) {
    groups = view.groups();
    fullBlocks = view.cols / kBlockK;
    tailBytes = (view.cols % kBlockK) / 2;
    blocks = fullBlocks + (tailBytes ? 1 : 0);
    if (G == 128 && kTable == Int4Table::Fp8 && view.tables && view.tables->describes(view)) prepared = view.tables;
  }

  size_t rowBytes() const { return (size_t)w.cols / 2; }  // code bytes from one row to the next
  W4A8_ALWAYS_INLINE Row row(int n) const {
    const size_t g0 = (size_t)n * groups;
    const bool fromTables = prepared && !prepared->rowGeneric[n];
    return {w.codes + (size_t)n * (w.cols / 2), w.groupScales + g0, w.zeros + g0,
            fromTables ? prepared->indexRow(n) : nullptr, fromTables ? prepared->baseRow(n) : nullptr,
            fromTables ? prepared->entries.data() : nullptr};
  }
  bool shortPath(int n) const {
    return kTable == Int4Table::Bf16 || fast::rowScalesWithin(w, n, 0.0f, 0x1p100f);
  }
  // shortPath for the groups of block b alone (the decoder loads these scales right after, so a row needs no
  // scan of its own ahead of the decode).
  W4A8_ALWAYS_INLINE bool blockShort(const Row& r, int b) const {
    if constexpr (kTable == Int4Table::Bf16) return true;
    if (r.tableIndex) return true;  // (the prepared table serves both roundings)
    constexpr int kGroups = kBlockK / G;
    bool ok = true;
#pragma GCC unroll 4
    for (int i = 0; i < kGroups; ++i) {
      const int g = b * kGroups + i;
      const float a = g < groups ? std::fabs(r.scales[g]) : 0.0f;
      ok &= (a >= 0.0f) & (a <= 0x1p100f);  // NaN compares false
    }
    return ok;
  }
  // Prefetch block b of the row `rows` rows further down (the next tile's), and its scales once.
  W4A8_ALWAYS_INLINE void prefetchAhead(const Row& r, int b, int rows) const {
    prefetchWeights(r.codes + (size_t)rows * rowBytes() + (size_t)b * 64);
    if ((b & 15) == 0) _mm_prefetch((const char*)(r.scales + (size_t)rows * groups + b * (kBlockK / G)), _MM_HINT_T0);
  }

  // Prefetch the dictionary entry of block b of the next row (n + 1), whose table indices are in cache by then
  // (they follow this row's; prefetchGroups fetched them a tile ahead). An entry is a random access into the
  // dictionary (some 500 KiB per matrix, often out of L2), and the decode of its block waited for it: about a
  // sixth of a 16-token call on Zen 4.
  W4A8_ALWAYS_INLINE void prefetchNextEntry(const Row& r, int b) const {
    if (r.tableIndex) _mm_prefetch((const char*)(r.entries + r.tableIndex[(size_t)groups + b]), _MM_HINT_T0);
  }

  // Prefetch the group scales and zero points of block b of the row `rows` rows further down (one line each:
  // a block's groups never span more than 4 scales).
  W4A8_ALWAYS_INLINE void prefetchGroups(const Row& r, int b, int rows) const {
    const size_t g = (size_t)rows * groups + (size_t)b * (kBlockK / G);
    if (r.tableIndex) {  // (rows further down are assumed to use the tables too; a generic one only misses)
      _mm_prefetch((const char*)(r.tableIndex + g), _MM_HINT_T0);
      _mm_prefetch((const char*)(r.baseExp + g), _MM_HINT_T0);
      return;
    }
    _mm_prefetch((const char*)(r.scales + g), _MM_HINT_T0);
    _mm_prefetch((const char*)(r.zeros + g), _MM_HINT_T0);
  }

  // The 16 values s_g * (q - z) of group g; in the tail block, zero past the row's end.
  template <bool kTail>
  W4A8_ALWAYS_INLINE __m512 values(const Row& r, int g) const {
    if (kTail && g >= groups) return _mm512_setzero_ps();
    return groupValues(r.scales, r.zeros, g);
  }

  // The BF16 tables of groups a (words 0..15) and b (words 16..31).
  template <bool kShort, bool kTail>
  W4A8_ALWAYS_INLINE __m512i lut(const Row& r, int a, int b) const {
    const __m512 va = values<kTail>(r, a), vb = a == b ? va : values<kTail>(r, b);
    if constexpr (kTable == Int4Table::Bf16) {
#ifdef __AVX512BF16__
      // vcvtne2ps2bf16 rounds like floatToBf16 except that it flushes FP32 subnormals, which cannot
      // occur here: calls with group scales below 2^-126 take the FP32-FMA version (gemm_bf16.cpp).
      return (__m512i)_mm512_cvtne2ps_pbh(vb, va);
#else
      return packHighWords(roundToBf16High(va), a == b ? roundToBf16High(va) : roundToBf16High(vb));
#endif
    } else if constexpr (kShort) {
      const __m512i ta = roundToFp8ValueShort(va, fp8);
      return packHighWords(ta, a == b ? ta : roundToFp8ValueShort(vb, fp8));
    } else {
      const __m512i ta = roundToFp8Value(va, fp8);
      return packHighWords(ta, a == b ? ta : roundToFp8Value(vb, fp8));
    }
  }

  // The group tables block b needs: G = 128 and 64 one (the table repeated, or two groups' halves), 32 two.
  static constexpr int kTablesPerBlock = G == 32 ? 2 : 1;
  template <bool kShort, bool kTail>
  W4A8_ALWAYS_INLINE void tables(const Row& r, int b, __m512i* t) const {
    if constexpr (G == 128 && kTable == Int4Table::Fp8) {
      if (r.tableIndex) {  // prepared: bf16(W) 2^e, e added to the exponent of the nonzero entries (all stay normal)
        const __m512i table =
            _mm512_broadcast_i64x4(_mm256_load_si256((const __m256i*)r.entries[r.tableIndex[b]].bf16));
        t[0] = _mm512_mask_add_epi16(table, _mm512_test_epi16_mask(table, table), table,
                                     _mm512_set1_epi16((int16_t)(r.baseExp[b] * 128)));
        return;
      }
    }
    if constexpr (G == 128) {
      t[0] = lut<kShort, kTail>(r, b, b);  // same table in both halves: index bit 4 is ignored
    } else if constexpr (G == 64) {
      t[0] = lut<kShort, kTail>(r, 2 * b, 2 * b + 1);
    } else {
      t[0] = lut<kShort, kTail>(r, 4 * b, 4 * b + 1);
      t[1] = lut<kShort, kTail>(r, 4 * b + 2, 4 * b + 3);
    }
  }

  template <bool kShort, bool kTail>
  W4A8_ALWAYS_INLINE void decode(const Row& r, int b, __m512i* out) const {
    __m512i t[kTablesPerBlock];
    tables<kShort, kTail>(r, b, t);
    decodeWith<kTail>(r, b, t, out);
  }

  // decode() with the block's tables given (t from tables()).
  template <bool kTail>
  W4A8_ALWAYS_INLINE void decodeWith(const Row& r, int b, const __m512i* t, __m512i* out) const {
    const uint8_t* p = r.codes + (size_t)b * 64;
    // Word j of the block holds k = 4j..4j+3; read again one byte later, its low byte holds 4j+2, 4j+3.
    // So chunk s's nibble sits in bits 0..3 of: codes, codes >> 4, codesPlus1, codesPlus1 >> 4 (a load
    // is cheaper than a shift; the masked load never reads past the row's last code byte).
    const __m512i codes = kTail ? _mm512_maskz_loadu_epi8(byteMask(tailBytes), p) : _mm512_loadu_si512(p);
    const __m512i codesPlus1 = _mm512_maskz_loadu_epi8(byteMask((kTail ? tailBytes : 64) - 1), p + 1);
    const __m512i shifted[4] = {codes, _mm512_srli_epi16(codes, 4), codesPlus1, _mm512_srli_epi16(codesPlus1, 4)};
    if constexpr (G == 128) {
      const __m512i table = t[0];
#pragma GCC unroll 4
      for (int s = 0; s < 4; ++s) out[s] = _mm512_permutexvar_epi16(shifted[s], table);
    } else if constexpr (G == 64) {
      // Words 0..15 of the block belong to group 2b, words 16..31 to 2b+1: index = nibble | 16 * half.
      const __m512i table = t[0];
      const __m512i half = _mm512_set_epi64(0x0010001000100010ll, 0x0010001000100010ll, 0x0010001000100010ll,
                                            0x0010001000100010ll, 0, 0, 0, 0);
      const __m512i nibble = _mm512_set1_epi16(0x000F);
#pragma GCC unroll 16
      for (int s = 0; s < 4; ++s)
        out[s] = _mm512_permutexvar_epi16(_mm512_ternarylogic_epi32(shifted[s], nibble, half, 0xEA), table);
    } else {
      // Words 8q..8q+7 belong to group 4b+q: index = nibble | 16 * q over two 32-entry tables.
      const __m512i lut01 = t[0], lut23 = t[1];
      const __m512i quarter = _mm512_set_epi64(0x0030003000300030ll, 0x0030003000300030ll, 0x0020002000200020ll,
                                               0x0020002000200020ll, 0x0010001000100010ll, 0x0010001000100010ll,
                                               0, 0);
      const __m512i nibble = _mm512_set1_epi16(0x000F);
#pragma GCC unroll 16
      for (int s = 0; s < 4; ++s)
        out[s] = _mm512_permutex2var_epi16(lut01, _mm512_ternarylogic_epi32(shifted[s], nibble, quarter, 0xEA),
                                           lut23);
    }
  }
};

// FP8 codes -> BF16, 64 codes per block (weights of W8A8, and activations of W8A8/W4A8).
struct Fp8Decoder {
  __m512i high0, high1, low0, low1;  // 128-entry byte tables, two zmm each
  explicit Fp8Decoder(Fp8Format f) {
    const fast::Fp8Bf16Bytes& t = fast::fp8Bf16Bytes(f);
    high0 = _mm512_load_si512(t.high);
    high1 = _mm512_load_si512(t.high + 64);
    low0 = _mm512_load_si512(t.low);
    low1 = _mm512_load_si512(t.low + 64);
  }
  W4A8_ALWAYS_INLINE void decode(__m512i codes, __m512i* out) const {
    __m512i high = _mm512_permutex2var_epi8(high0, codes, high1);  // index bit 7 (the sign) is ignored
    const __m512i low = _mm512_permutex2var_epi8(low0, codes, low1);
    high = _mm512_ternarylogic_epi32(high, codes, _mm512_set1_epi8((char)0x80), 0xF8);  // | sign
    out[0] = _mm512_unpacklo_epi8(low, high);
    out[1] = _mm512_unpackhi_epi8(low, high);
  }
};

struct Fp8Source {
  static constexpr int kBlockK = 64, kChunksPerBlock = 2, kTablesPerBlock = 0;
  struct Row {
    const uint8_t* codes;
  };
  const Fp8WeightsView& w;
  Fp8Decoder decoder;
  int fullBlocks, blocks, tailBytes;
  explicit Fp8Source(const Fp8WeightsView& view) : w(view), decoder(view.format) {
    fullBlocks = view.cols / kBlockK;
    tailBytes = view.cols % kBlockK;
    blocks = fullBlocks + (tailBytes ? 1 : 0);
  }
  size_t rowBytes() const { return (size_t)w.cols; }
  W4A8_ALWAYS_INLINE Row row(int n) const { return {w.codes + (size_t)n * w.cols}; }
  bool shortPath(int) const { return true; }
  W4A8_ALWAYS_INLINE bool blockShort(const Row&, int) const { return true; }
  W4A8_ALWAYS_INLINE void prefetchAhead(const Row& r, int b, int rows) const {
    prefetchWeights(r.codes + (size_t)rows * w.cols + (size_t)b * 64);
  }
  W4A8_ALWAYS_INLINE void prefetchGroups(const Row&, int, int) const {}  // no group data
  W4A8_ALWAYS_INLINE void prefetchNextEntry(const Row&, int) const {}
  template <bool kShort, bool kTail>
  W4A8_ALWAYS_INLINE void decode(const Row& r, int b, __m512i* out) const {
    const uint8_t* p = r.codes + (size_t)b * 64;
    decoder.decode(kTail ? _mm512_maskz_loadu_epi8(byteMask(tailBytes), p) : _mm512_loadu_si512(p), out);
  }
};

// ---- activations: BF16 in the weight source's k order, [M][Kp], zero padded ---------------------

// INT4 order: xp[128b + 32s + j] = x[128b + 4j + s], from FP8 codes. vpermt2b gathers the codes of
// chunks (0, 1) and (2, 3) of a 128-k block so that the FP8 decoder (whose output word 8L+i of its
// first/second vector comes from byte 16L+i / 16L+8+i) writes them in INT4 order.
inline void prepareInt4OrderFromFp8(const uint8_t* x8, Fp8Format f, int M, int K, int Kp, uint16_t* xp) {
  alignas(64) uint8_t gather[2][64];
  for (int pair = 0; pair < 2; ++pair)
    for (int L = 0; L < 4; ++L)
      for (int i = 0; i < 8; ++i) {
        gather[pair][16 * L + i] = (uint8_t)(32 * L + 4 * i + 2 * pair);
        gather[pair][16 * L + 8 + i] = (uint8_t)(32 * L + 4 * i + 2 * pair + 1);
      }
  const __m512i gather01 = _mm512_load_si512(gather[0]), gather23 = _mm512_load_si512(gather[1]);
  const Fp8Decoder decoder(f);
  for (int m = 0; m < M; ++m) {
    const uint8_t* in = x8 + (size_t)m * K;
    uint16_t* out = xp + (size_t)m * xRowStride(Kp);
    for (int k = 0; k < Kp; k += 128) {
      const __m512i lo = _mm512_maskz_loadu_epi8(byteMask(K - k), in + k);
      const __m512i hi = _mm512_maskz_loadu_epi8(byteMask(K - k - 64), in + k + 64);
      __m512i w[4];
      decoder.decode(_mm512_permutex2var_epi8(lo, gather01, hi), w);
      decoder.decode(_mm512_permutex2var_epi8(lo, gather23, hi), w + 2);
#pragma GCC unroll 4
      for (int c = 0; c < 4; ++c) _mm512_store_si512(out + k + 32 * c, w[c]);
    }
  }
}

// INT4 order from BF16 words: chunk s = x16[128b + 4j + s] for j = 0..31, gathered from words 0..63
// (j < 16) and 64..127 (j >= 16) with the same index 4j + s. Returns true when some activation is a
// BF16 subnormal (exponent 0, mantissa not 0).
inline bool prepareInt4OrderFromBf16(const uint16_t* x16, int M, int K, int Kp, uint16_t* xp) {
  alignas(64) uint16_t gather[4][32] = {};
  for (int s = 0; s < 4; ++s)
    for (int j = 0; j < 16; ++j) gather[s][j] = (uint16_t)(4 * j + s);
  __mmask32 subnormal = 0;
  for (int m = 0; m < M; ++m) {
    const uint16_t* in = x16 + (size_t)m * K;
    uint16_t* out = xp + (size_t)m * xRowStride(Kp);
    for (int k = 0; k < Kp; k += 128) {
      __m512i v[4];
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q) {
        v[q] = _mm512_maskz_loadu_epi16(lane16Mask(K - k - 32 * q), in + k + 32 * q);
        subnormal |= _mm512_testn_epi16_mask(v[q], _mm512_set1_epi16(0x7F80)) &
                     _mm512_test_epi16_mask(v[q], _mm512_set1_epi16(0x007F));
      }
#pragma GCC unroll 4
      for (int s = 0; s < 4; ++s) {
        const __m512i idx = _mm512_load_si512(gather[s]);
        const __m512i low = _mm512_permutex2var_epi16(v[0], idx, v[1]);
        const __m512i high = _mm512_permutex2var_epi16(v[2], idx, v[3]);
        _mm512_store_si512(out + k + 32 * s, _mm512_shuffle_i64x2(low, high, 0x44));  // low[0..15], high[0..15]
      }
    }
  }
  return subnormal != 0;
}

// FP8 order, by running the weight decoder itself over the activation codes.
inline void prepareFp8Order(const uint8_t* x8, Fp8Format f, int M, int K, int Kp, uint16_t* xp) {
  const Fp8Decoder decoder(f);
  for (int m = 0; m < M; ++m) {
    const uint8_t* in = x8 + (size_t)m * K;
    uint16_t* out = xp + (size_t)m * xRowStride(Kp);
    for (int k = 0; k < Kp; k += 64) {
      __m512i w[2];
      decoder.decode(_mm512_maskz_loadu_epi8(byteMask(K - k), in + k), w);
      _mm512_store_si512(out + k, w[0]);
      _mm512_store_si512(out + k + 32, w[1]);
    }
  }
}

// ---- the two tiling paths ---------------------------------------------------------------------

// Output scaling and store for one tile: y[m, n] = scale(m, n) * sum.
template <class Scale>
inline void storeSums(const GemmOutput& y, int m0, int n0, int mr, int nr, const float* sums, int ldSums,
                      Scale scale) {
  for (int m = 0; m < mr; ++m)
    for (int r = 0; r < nr; ++r) storeValue(y, m0 + m, n0 + r, scale(m0 + m, n0 + r) * sums[m * ldSums + r]);
}

// tables: scratch for the tiles' group tables, [blocks][NR][kTablesPerBlock] vectors (INT4 sources). They
// are all built first, in a loop of independent iterations, rather than in the block loop, where each
// table's chain of dependent operations (scale load, multiply, FP8 rounding, pack) held up its block.
template <class Dot, int MR, int NR, bool kShort, class Source>
void fusedTile(const Source& src, int n0, const uint16_t* xp, int Kp, __m512i* tables, float* sums /* [MR][NR] */) {
  constexpr int CPB = Source::kChunksPerBlock, T = Source::kTablesPerBlock;
  typename Source::Row rows[NR];
#pragma GCC unroll 16
  for (int r = 0; r < NR; ++r) rows[r] = src.row(n0 + r);
  if constexpr (T > 0) {
    for (int b = 0; b < src.fullBlocks; ++b)
#pragma GCC unroll 16
      for (int r = 0; r < NR; ++r) src.template tables<kShort, false>(rows[r], b, tables + ((size_t)b * NR + r) * T);
    if (src.blocks > src.fullBlocks)
      for (int r = 0; r < NR; ++r)
        src.template tables<kShort, true>(rows[r], src.fullBlocks, tables + ((size_t)src.fullBlocks * NR + r) * T);
  }
  __m512 acc[MR][NR];
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 16
    for (int r = 0; r < NR; ++r) acc[m][r] = _mm512_setzero_ps();
  auto block = [&](int b, auto tail) {
#pragma GCC unroll 16
    for (int r = 0; r < NR; ++r) {
      __m512i w[CPB];
      if constexpr (T > 0) src.template decodeWith<decltype(tail)::value>(rows[r], b, tables + ((size_t)b * NR + r) * T, w);
      else src.template decode<kShort, decltype(tail)::value>(rows[r], b, w);
      src.prefetchAhead(rows[r], b, NR);  // the next tile's rows, one tile ahead (GEMV is DRAM-bound)
#pragma GCC unroll 16
      for (int c = 0; c < CPB; ++c)
#pragma GCC unroll 16
        for (int m = 0; m < MR; ++m)
          acc[m][r] = Dot::dot(acc[m][r], _mm512_load_si512(xp + (size_t)m * xRowStride(Kp) + (b * CPB + c) * kChunkK), w[c]);
    }
  };
  for (int b = 0; b < src.fullBlocks; ++b) block(b, std::false_type{});
  if (src.blocks > src.fullBlocks) block(src.fullBlocks, std::true_type{});
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 16
    for (int r = 0; r < NR; ++r) sums[m * NR + r] = horizontalSum(acc[m][r]);
}

template <class Dot, int MR, int NR, class Source>
void fusedTileAnyPath(const Source& src, int n0, const uint16_t* xp, int Kp, __m512i* tables, float* sums) {
  bool allShort = true;
#pragma GCC unroll 16
  for (int r = 0; r < NR; ++r) allShort &= src.shortPath(n0 + r);
  if (allShort) fusedTile<Dot, MR, NR, true>(src, n0, xp, Kp, tables, sums);
  else fusedTile<Dot, MR, NR, false>(src, n0, xp, Kp, tables, sums);
}

template <class Dot, int MR, class Source, class Scale>
void fusedRows(const Source& src, int nBegin, int nEnd, const uint16_t* xp, int Kp, int m0, const GemmOutput& y,
               Scale scale) {
  float sums[MR * kFusedTileN];
  __m512i* tables = static_cast<__m512i*>(fast::threadScratch(
      fast::kScratchWeights, (size_t)src.blocks * kFusedTileN * std::max(1, Source::kTablesPerBlock) * 64));
  int n = nBegin;
  for (; n + kFusedTileN <= nEnd; n += kFusedTileN) {
    fusedTileAnyPath<Dot, MR, kFusedTileN>(src, n, xp, Kp, tables, sums);
    storeSums(y, m0, n, MR, kFusedTileN, sums, kFusedTileN, scale);
  }
  for (; n < nEnd; ++n) {
    fusedTileAnyPath<Dot, MR, 1>(src, n, xp, Kp, tables, sums);
    storeSums(y, m0, n, MR, 1, sums, 1, scale);
  }
}

// acc[m][r] += x[m] . w[r] over the chunks of one panel; w: [chunks][NR][32] words, x rows Kp words apart
// (xp at the panel's first chunk). The 16-lane accumulators start at zero on the first panel and are kept
// in acc ([MR][NR][16] floats) between panels; after the last, sums gets their horizontal sums. (Stored and
// reloaded exactly, so every lane adds its chunks in k order as in one pass: the result is that of the fused
// path.)
template <class Dot, int MR, int NR>
void microKernel(const uint16_t* xp, int Kp, const uint16_t* ws, int chunks, bool first, bool last, float* acc,
                 float* sums /* [MR][NR] */) {
  __m512 a[MR][NR];
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 16
    for (int r = 0; r < NR; ++r) a[m][r] = first ? _mm512_setzero_ps() : _mm512_load_ps(acc + (m * NR + r) * 16);
  for (int c = 0; c < chunks; ++c) {
    __m512i w[NR];
#pragma GCC unroll 16
    for (int r = 0; r < NR; ++r) w[r] = _mm512_load_si512(ws + ((size_t)c * NR + r) * kChunkK);
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) {
      const __m512i x = _mm512_load_si512(xp + (size_t)m * xRowStride(Kp) + (size_t)c * kChunkK);
#pragma GCC unroll 16
      for (int r = 0; r < NR; ++r) a[m][r] = Dot::dot(a[m][r], x, w[r]);
    }
  }
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 16
    for (int r = 0; r < NR; ++r) {
      if (last) sums[m * NR + r] = horizontalSum(a[m][r]);
      else _mm512_store_ps(acc + (m * NR + r) * 16, a[m][r]);
    }
}

template <class Dot, int NR, int MR = 1>
void microKernelFor(int mr, const uint16_t* xp, int Kp, const uint16_t* ws, int chunks, bool first, bool last,
                    float* acc, float* sums) {
  if constexpr (MR <= Dot::kMicroRows) {
    if (mr == MR) return microKernel<Dot, MR, NR>(xp, Kp, ws, chunks, first, last, acc, sums);
    microKernelFor<Dot, NR, MR + 1>(mr, xp, Kp, ws, chunks, first, last, acc, sums);
  }
}

// Decodes blocks [b0, b1) of weight row n into column r of the scratch panel ws: [chunks][nr][32] words.
template <bool kShort, class Source>
void decodeRow(const Source& source, int n, int nr, int r, int b0, int b1, uint16_t* ws) {
  constexpr int CPB = Source::kChunksPerBlock;
  // A local copy: the stores into ws may alias anything the caller's object holds, which made the loop
  // reload the source's fields after every block.
  const Source src = source;
  const typename Source::Row row = src.row(n);
  const bool nextRow = n + 1 < src.w.rows;
  auto block = [&](int b, auto tail) {
    __m512i w[CPB];
    src.template decode<kShort, decltype(tail)::value>(row, b, w);
    // The same row of the next scratch tile: decoded after this tile's micro-kernels, by which time these
    // lines have arrived (without it, the decode waited on its code and table loads: about a quarter of a
    // 16-token call, 4096 x 2048 on Zen 4). Its group data every 4 blocks: 4 blocks' take 64 bytes at most,
    // which may straddle two lines; a line this misses comes with the next prefetch, still a tile ahead.
    src.prefetchAhead(row, b, kScratchRows);
    if ((b & 3) == 0) src.prefetchGroups(row, b, kScratchRows);
    if (nextRow) src.prefetchNextEntry(row, b);
#pragma GCC unroll 16
    for (int c = 0; c < CPB; ++c) _mm512_store_si512(ws + ((size_t)((b - b0) * CPB + c) * nr + r) * kChunkK, w[c]);
  };
  for (int b = b0; b < std::min(b1, src.fullBlocks); ++b) block(b, std::false_type{});
  if (b1 > src.fullBlocks && src.blocks > src.fullBlocks) block(src.fullBlocks, std::true_type{});
}

// Chunks of k per panel of the scratch path: the decoded panel (kScratchRows x 64 chunks x 64 bytes = 16 KiB)
// stays in L1 while every group of tokens runs over it, and 2048 k (the K of every 1B-model matrix but down_proj)
// is one panel.
// Measured on Zen 4 against 32 and 128 chunks (interleaved A/B, 16 tokens, 2 threads): 32 was 5-12 % slower on
// K = 2048 and 8192 and equal on 11008; 128 was 11-22 % slower on K = 8192 and 11008. A multiple of every
// source's chunks per block.
constexpr int kPanelChunks = 64;

template <class Dot, class Source, class Scale>
void scratchRows(const Source& src, int M, int nBegin, int nEnd, const uint16_t* xp, int Kp, const GemmOutput& y,
                 Scale scale) {
  constexpr int CPB = Source::kChunksPerBlock, kPanelBlocks = kPanelChunks / CPB;
  static_assert(kPanelChunks % CPB == 0, "a panel holds whole blocks");
  const int chunks = Kp / kChunkK;
  uint16_t* ws = static_cast<uint16_t*>(fast::threadScratch(fast::kScratchWeights, (size_t)kScratchRows * kPanelChunks * 64));
  // 16-lane accumulators of every token and tile row between panels: [M][kScratchRows][16] floats.
  float* acc = static_cast<float*>(fast::threadScratch(fast::kScratchAccumulators, (size_t)M * kScratchRows * 64));
  float sums[Dot::kMicroRows * kScratchRows];
  for (int n0 = nBegin; n0 < nEnd; n0 += kScratchRows) {
    const int nr = std::min(kScratchRows, nEnd - n0);
    bool shortRow[kScratchRows];
    for (int r = 0; r < nr; ++r) shortRow[r] = src.shortPath(n0 + r);
    // (K = 0 still takes one empty panel, so that its outputs are written: zeros.)
    for (int b0 = 0; b0 == 0 || b0 < src.blocks; b0 += kPanelBlocks) {
      const int b1 = std::min(src.blocks, b0 + kPanelBlocks), c0 = b0 * CPB, panelChunks = std::min(chunks, b1 * CPB) - c0;
      const bool first = b0 == 0, last = b1 == src.blocks;
      for (int r = 0; r < nr; ++r) {
        if (shortRow[r]) decodeRow<true>(src, n0 + r, nr, r, b0, b1, ws);
        else decodeRow<false>(src, n0 + r, nr, r, b0, b1, ws);
      }
      for (int m0 = 0; m0 < M; m0 += Dot::kMicroRows) {
        const int mr = std::min(Dot::kMicroRows, M - m0);
        const uint16_t* x = xp + (size_t)m0 * xRowStride(Kp) + (size_t)c0 * kChunkK;
        float* a = acc + (size_t)m0 * kScratchRows * 16;
        switch (nr) {
          case 1: microKernelFor<Dot, 1>(mr, x, Kp, ws, panelChunks, first, last, a, sums); break;
          case 2: microKernelFor<Dot, 2>(mr, x, Kp, ws, panelChunks, first, last, a, sums); break;
          case 3: microKernelFor<Dot, 3>(mr, x, Kp, ws, panelChunks, first, last, a, sums); break;
          default: microKernelFor<Dot, 4>(mr, x, Kp, ws, panelChunks, first, last, a, sums); break;
        }
        if (last) storeSums(y, m0, n0, mr, nr, sums, nr, scale);
      }
    }
  }
}

template <class Dot, class Source, class Scale>
void runGemm(const Source& src, int M, int nBegin, int nEnd, const uint16_t* xp, int Kp, const GemmOutput& y,
             Scale scale) {
  if (M > kFusedMaxRows) return scratchRows<Dot>(src, M, nBegin, nEnd, xp, Kp, y, scale);
  for (int m0 = 0; m0 < M; m0 += kFusedMaxRows) {  // (one pass today: M <= kFusedMaxRows)
    const uint16_t* x = xp + (size_t)m0 * xRowStride(Kp);
    switch (std::min(kFusedMaxRows, M - m0)) {
      case 1: fusedRows<Dot, 1>(src, nBegin, nEnd, x, Kp, m0, y, scale); break;
      case 2: fusedRows<Dot, 2>(src, nBegin, nEnd, x, Kp, m0, y, scale); break;
      case 3: fusedRows<Dot, 3>(src, nBegin, nEnd, x, Kp, m0, y, scale); break;
      default: fusedRows<Dot, 4>(src, nBegin, nEnd, x, Kp, m0, y, scale); break;
    }
  }
}

inline int roundUp(int k, int block) { return (k + block - 1) / block * block; }

// ---- the three GEMMs --------------------------------------------------------------------------

template <class Dot, int G, Int4Table kTable, class Scale>
void int4GemmG(const Int4WeightsView& w, int M, int nBegin, int nEnd, const uint16_t* xp, int Kp,
               const GemmOutput& y, Scale scale) {
  const Int4Source<G, kTable> src(w);
  runGemm<Dot>(src, M, nBegin, nEnd, xp, Kp, y, scale);
}

template <class Dot, Int4Table kTable, class Scale>
void int4Gemm(const Int4WeightsView& w, int M, int nBegin, int nEnd, const uint16_t* xp, int Kp,
              const GemmOutput& y, Scale scale) {
  switch (w.groupSize) {
    case 128: return int4GemmG<Dot, 128, kTable>(w, M, nBegin, nEnd, xp, Kp, y, scale);
    case 64: return int4GemmG<Dot, 64, kTable>(w, M, nBegin, nEnd, xp, Kp, y, scale);
    default: return int4GemmG<Dot, 32, kTable>(w, M, nBegin, nEnd, xp, Kp, y, scale);
  }
}

// Rows of X are converted and multiplied kRowsPerPass at a time, which bounds the per-thread activation
// buffer (long prompts) and changes no result: every output is computed the same way in any pass.
constexpr int kRowsPerPass = 256;

inline GemmOutput rowsFrom(const GemmOutput& y, int m0) {
  return {y.f32 ? y.f32 + (size_t)m0 * y.ldy : nullptr, y.bf16 ? y.bf16 + (size_t)m0 * y.ldy : nullptr, y.ldy};
}

template <class Dot>
void gemmW4A8Impl(const W4A8GemmArgs& a, int nBegin, int nEnd) {
  const int K = a.w.cols, Kp = roundUp(K, 128);
  for (int m0 = 0; m0 < a.M && nBegin < nEnd; m0 += kRowsPerPass) {
    const int rows = std::min(kRowsPerPass, a.M - m0);
    uint16_t* xp = static_cast<uint16_t*>(fast::threadScratch(fast::kScratchActivations, (size_t)rows * xRowStride(Kp) * 2));
    prepareInt4OrderFromFp8(a.x8 + (size_t)m0 * K, a.actFormat, rows, K, Kp, xp);
    int4Gemm<Dot, Int4Table::Fp8>(a.w, rows, nBegin, nEnd, xp, Kp, rowsFrom(a.y, m0),
                                  [&](int m, int n) { return a.xScales[m0 + m] * a.w.channelScales[n]; });
  }
}

// Returns false when an activation is a BF16 subnormal and Dot flushes those; the caller then runs the
// whole call again with a Dot that does not (outputs written so far are all overwritten).
template <class Dot>
bool gemmW4A16Impl(const W4A16GemmArgs& a, int nBegin, int nEnd) {
  const int K = a.w.cols, Kp = roundUp(K, 128);
  for (int m0 = 0; m0 < a.M && nBegin < nEnd; m0 += kRowsPerPass) {
    const int rows = std::min(kRowsPerPass, a.M - m0);
    uint16_t* xp = static_cast<uint16_t*>(fast::threadScratch(fast::kScratchActivations, (size_t)rows * xRowStride(Kp) * 2));
    const bool subnormal = prepareInt4OrderFromBf16(a.x16 + (size_t)m0 * K, rows, K, Kp, xp);
    if (subnormal && Dot::kFlushesSubnormals) return false;
    int4Gemm<Dot, Int4Table::Bf16>(a.w, rows, nBegin, nEnd, xp, Kp, rowsFrom(a.y, m0),
                                   [&](int, int n) { return a.w.channelScales[n]; });
  }
  return true;
}

template <class Dot>
void gemmW8A8Impl(const W8A8GemmArgs& a, int nBegin, int nEnd) {
  const int K = a.w.cols, Kp = roundUp(K, 64);
  const Fp8Source src(a.w);
  for (int m0 = 0; m0 < a.M && nBegin < nEnd; m0 += kRowsPerPass) {
    const int rows = std::min(kRowsPerPass, a.M - m0);
    uint16_t* xp = static_cast<uint16_t*>(fast::threadScratch(fast::kScratchActivations, (size_t)rows * xRowStride(Kp) * 2));
    prepareFp8Order(a.x8 + (size_t)m0 * K, a.actFormat, rows, K, Kp, xp);
    runGemm<Dot>(src, rows, nBegin, nEnd, xp, Kp, rowsFrom(a.y, m0),
                 [&](int m, int n) { return a.xScales[m0 + m] * a.w.channelScales[n]; });
  }
}

// FP32 FMA on BF16 pairs: the exact products of the odd then the even words, each added with one
// rounding (the order Intel documents for vdpbf16ps).
struct DotFma {
  static constexpr int kMicroRows = 4;  // 4 x 4 accumulators + split operands fit 32 registers
  static constexpr bool kFlushesSubnormals = false;
  static W4A8_ALWAYS_INLINE __m512 dot(__m512 acc, __m512i x, __m512i w) {
    const __m512i high = _mm512_set1_epi32((int)0xFFFF0000u);
    const __m512 xOdd = _mm512_castsi512_ps(_mm512_and_si512(x, high));
    const __m512 wOdd = _mm512_castsi512_ps(_mm512_and_si512(w, high));
    const __m512 xEven = _mm512_castsi512_ps(_mm512_slli_epi32(x, 16));
    const __m512 wEven = _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
    return _mm512_fmadd_ps(xEven, wEven, _mm512_fmadd_ps(xOdd, wOdd, acc));
  }
};

}  // namespace
}  // namespace w4a8::avx512
