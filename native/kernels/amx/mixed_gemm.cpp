// AMX-BF16 mixed-input GEMMs (W4A8, W8A8, W4A16) for calls of M >= kMinRows tokens; smaller calls (decode)
// run the avx512bf16 bodies, which decode the weights into registers and stream them at DRAM speed, where the
// tile path is bound by decoding into memory. (Measured on one Xeon core, 4096 x 4096 W4A8: at M = 1
// avx512 1.3 ms, amx 2.1 ms; M = 4 2.6 / 2.3 ms; M = 8 4.5 / 2.2 ms; M = 16 7.8 / 2.4 ms.)
//
// Exactness (DESIGN.md §1): both operands become BF16 before the multiply, which loses nothing: FP8 values are
// normal BF16 values, and INT4 -> FP8 goes through the group's 16-entry table exactly as in avx512/ (the same
// decoders, avx512/mixed_gemm.h). tdpbf16ps multiplies BF16 pairs exactly and accumulates in FP32, so only the
// order of the FP32 additions differs from the reference. Its flushing of subnormals cannot touch W4A8 or W8A8
// (FP8 x FP8 products are >= 2^-32 and their sums multiples of it); W4A16 calls whose BF16 activations hold a
// subnormal run the FP32-FMA body instead, and so do rows whose group scales are below 2^-126.
//
// Layout and loops (tiles.h for the tile shapes):
//   activations  converted once per call, per pass of kRowsPerPass tokens, into B tiles: xv =
//                [mBlocks][chunks] tiles of 1 KiB, m-block b = tokens 16b..16b+15 (zero past M), chunk c =
//                k 32c..32c+31 in the weight decoder's k order; tile row p, dword j = the k pair (2p, 2p+1) of
//                token 16b + j. (Decoded to BF16 rows in decoder order as in avx512/, then 16 x 16 dword
//                transposes.) The pooled entries build xv once for all threads; a range entry builds its own.
//   weights      per panel of kPanelRows output channels (16 up to 32 tokens), k-block of kKChunks chunks (1024 k) and pair of A
//                tiles (32 rows), decoded right before use into a per-thread ws = [32 rows][chunk][32 BF16]
//                (A tiles: 16 rows, 2 KiB apart), 64 KiB. Row-major, so each row's decode stores one
//                contiguous run: 5-10 % faster at 16-64 tokens than [chunk][row], whose stores were 2 KiB apart.
//   products     for each pair of A tiles and 32-token pair of B tiles, 2 x 2 C tiles accumulate over the
//                k-block's chunks: ws is reused by every token pair, xv's k-block (L2) by every row pair of the
//                panel. Partial sums live in a per-thread FP32 buffer acc = [panel row][token] between k-blocks.
//                Up to 32 tokens (one token pair) nothing reuses ws, so interleavedTile decodes the 16 rows of
//                one A tile (32 rows, two A tiles, up to 16 tokens) one block (4 chunks) at a time through all of
//                K into two small buffers in turn, issuing the previous block's tile products in between: the
//                decode runs while the tile unit multiplies (10-23 % faster). W4A8 at G = 128 takes each
//                group's BF16 table from the weights' prepared tables (kernels/int4_tables.h) when they exist.
//   output       y[m][n] = (s_x[m] * s_c[n]) * acc[n][m] (W4A16: s_c[n] * acc[n][m]), as the reference rounds
//                it, through 16 x 16 transposes of acc.
// Every output element is one C element whose sum runs over k in increasing chunk order, whatever the N split,
// the panel or the other tokens of the call: results are bit-identical for any split of N and any batch of
// M >= kMinRows. Across kMinRows they differ in summation order (avx512 below), within the FP32 tolerance.
#include <algorithm>
#include <atomic>

#include "kernels/amx/tiles.h"
#include "kernels/avx512/mixed_gemm.h"
#include "kernels/backends.h"
#include "kernels/parallel.h"

namespace w4a8::amx {
namespace {

using avx512::kChunkK;             // BF16 words per chunk: one A tile row, 16 B tile k pairs
constexpr int kPanelRows = 256;    // weight rows whose sums stay in acc across the k-blocks (a multiple of 32)
// Up to 32 tokens: weight rows per panel, one A tile, which runs through all of K before the next (multiplyRows).
constexpr int kInterleavedRows = kTileBytes / 64;  // an A tile's rows
constexpr int kKChunks = 32;       // chunks per k-block: 1024 k (a multiple of every decoder's chunks per block)
constexpr int kRowsPerPass = 256;  // tokens converted and multiplied per pass (bounds xv and acc)
// N chunks per pool thread: fewer than kernels/parallel.cpp's 4, since every chunk streams all of xv again
// (once per k-block and panel) and pays the tile set-up.
constexpr int kChunksPerThread = 2;

inline int roundUp(int v, int to) { return (v + to - 1) / to * to; }

// The B tiles of one pass.
struct ActivationTiles {
  const uint8_t* data;
  int mBlocks;  // 16 tokens each
  int chunks;   // Kp / 32
  size_t blockBytes() const { return (size_t)chunks * kTileBytes; }
  const uint8_t* tile(int block, int chunk) const { return data + block * blockBytes() + (size_t)chunk * kTileBytes; }
};

// rows <= 16 token rows of BF16 words in decoder k order (xRowStride(Kp) words apart) -> the m-block's tiles.
void transposeToTiles(const uint16_t* ordered, int rows, int Kp, uint8_t* out) {
  const int stride = avx512::xRowStride(Kp);
  for (int c = 0; c < Kp / kChunkK; ++c) {
    __m512i r[16];
#pragma GCC unroll 16
    for (int m = 0; m < 16; ++m)
      r[m] = m < rows ? _mm512_load_si512(ordered + (size_t)m * stride + (size_t)c * kChunkK) : _mm512_setzero_si512();
    transpose16x16(r);
#pragma GCC unroll 16
    for (int p = 0; p < 16; ++p) _mm512_store_si512(out + (size_t)c * kTileBytes + p * 64, r[p]);
  }
}

// Block b of one row into its CPB chunks at out, one after the other: the decoder's short or full table
// rounding chosen for this block (the same tables either way), masked loads in the row's tail block.
template <class Source>
W4A8_ALWAYS_INLINE void decodeBlockTo(const Source& src, const typename Source::Row& row, int b, uint16_t* out) {
  constexpr int CPB = Source::kChunksPerBlock;
  __m512i w[CPB];
  const bool tail = b >= src.fullBlocks;
  if (src.blockShort(row, b)) {
    if (tail) src.template decode<true, true>(row, b, w);
    else src.template decode<true, false>(row, b, w);
  } else {
    if (tail) src.template decode<false, true>(row, b, w);
    else src.template decode<false, false>(row, b, w);
  }
#pragma GCC unroll 8
  for (int c = 0; c < CPB; ++c) _mm512_store_si512(out + (size_t)c * kChunkK, w[c]);
}

// Decodes rows [n0, n0 + nr) of blocks [b0, b1) into ws = [nPad][chunk - b0 * CPB][32] words; rows nr..nPad-1
// are zero. Each row's next k-block is prefetched (a panel's rows are too many streams for the hardware
// prefetcher, and the row comes back only after the tiles of the whole batch). The decoder's short or full
// table rounding is chosen per block (the same tables either way): a scan of each row's scales up front
// took about a sixth of a 16-token call's time outside the decode (4096 x 11008, 2 cores).
template <class Source>
void decodeRows(const Source& src, int n0, int nr, int nPad, int b0, int b1, uint16_t* ws) {
  constexpr int CPB = Source::kChunksPerBlock;
  const int rowChunks = (b1 - b0) * CPB;
  for (int r = 0; r < nr; ++r) {
    const typename Source::Row row = src.row(n0 + r);
    src.prefetchGroups(row, b1, 0);  // the row's scales and zero points of the next k-block
    for (int b = b0; b < b1; ++b) {
      _mm_prefetch((const char*)(row.codes + (size_t)(b + (b1 - b0)) * 64), _MM_HINT_T0);
      decodeBlockTo(src, row, b, ws + ((size_t)r * rowChunks + (b - b0) * CPB) * kChunkK);
    }
  }
  for (int r = nr; r < nPad; ++r)
    for (int c = 0; c < rowChunks; ++c) _mm512_store_si512(ws + ((size_t)r * rowChunks + c) * kChunkK, _mm512_setzero_si512());
}

// Block b of the panel's rows (their streams in panel[0, nr)) into wb = [kRows][CPB chunks][32] words (rows
// past nr zero), prefetching each row's codes kAheadBlocks blocks further on and, every kAheadBlocks blocks, its
// group scales and zero points (or prepared table indices and exponents) as far ahead. (Prefetches past the
// matrix are harmless: they never fault.)
constexpr int kAheadBlocks = 8;
template <int kRows, class Source>
W4A8_ALWAYS_INLINE void decodeBlockRows(const Source& src, const typename Source::Row* panel, int nr, int b,
                                         uint16_t* wb) {
  constexpr int CPB = Source::kChunksPerBlock;
  for (int r = 0; r < nr; ++r) {
    const typename Source::Row& row = panel[r];
    _mm_prefetch((const char*)(row.codes + (size_t)(b + kAheadBlocks) * 64), _MM_HINT_T0);
    // The first blocks of a panel have no earlier block to have prefetched them: the next panel's are fetched
    // one panel ahead (the hardware prefetcher does not follow rows read a line at a time; without this, rows of
    // K = 2048 ran 5-13 % slower than the general path).
    if (b < kAheadBlocks) _mm_prefetch((const char*)(row.codes + kRows * src.rowBytes() + (size_t)b * 64), _MM_HINT_T0);
    // Scales and zero points likewise (other streams of every row, which the hardware prefetcher does not follow
    // either: 8-10 % of a 16-token call waited for them).
    if (b % kAheadBlocks == 0) {
      src.prefetchGroups(row, b + kAheadBlocks, 0);
      if (b == 0) src.prefetchGroups(row, 0, kRows);
    }
    decodeBlockTo(src, row, b, wb + (size_t)r * CPB * kChunkK);
  }
  for (int r = nr; r < kRows; ++r)
    for (int c = 0; c < CPB; ++c) _mm512_store_si512(wb + ((size_t)r * CPB + c) * kChunkK, _mm512_setzero_si512());
}

// Up to two token blocks (M <= 32) and NA A tiles (rows <= 16 NA) through all of K: the C tiles stay in tile
// registers for the whole row, and the decode of block b + 1 runs while the tile unit works on block b (two
// small buffers in turn, L1-resident) instead of after all of the tile products (about a third of a 16-token
// call was tile work that the decode of the next rows did not overlap). With one token block, two A tiles
// (32 rows) give the tile unit two independent accumulator chains instead of one (two token blocks already give
// two). (Measured, 2 threads, 8 and 16 tokens, 8192x2048, 2048x8192, 2048x2048, 2026-12-01: the whole row in one
// pass was 3-20 % faster than passes of 1024 k, which stored and reloaded C and drained the decode pipeline at
// each pass's end; passes of 256 or 512 k were slower still.) Every C element sums its k in chunk order, as in
// the general path.
template <class Source, int NA, int NB>
void interleavedTile(const Source& src, const ActivationTiles& x, int n0, int rows, uint16_t* wb, float* acc,
                     size_t accRowBytes) {
  constexpr int CPB = Source::kChunksPerBlock, kRows = kInterleavedRows * NA;
  const int blocks = x.chunks / CPB;
  const size_t bufferWords = (size_t)kRows * CPB * kChunkK;
  // The rows' streams, once per panel rather than once per block and row (their address arithmetic was about a
  // quarter of the decode's instructions).
  typename Source::Row panel[kRows];
  for (int r = 0; r < rows; ++r) panel[r] = src.row(n0 + r);
  tileStart<NA, NB>(acc, accRowBytes, true);
  for (int b = 0; b <= blocks; ++b) {
    if (b < blocks) decodeBlockRows<kRows>(src, panel, rows, b, wb + (size_t)(b & 1) * bufferWords);
    if (b > 0)
      tileSteps<NA, NB>(reinterpret_cast<const uint8_t*>(wb + (size_t)((b - 1) & 1) * bufferWords), CPB * 64,
                        x.tile(0, (b - 1) * CPB), x.blockBytes(), CPB);
  }
  tileStore<NA, NB>(acc, accRowBytes);
}

// y[m][n0 + r] = scale * acc[r][m] for r < nr, m < M; scale = rowScales[m] * channelScales[n] (the reference's
// rounding), or channelScales[n] when rowScales is null, or 1 when both are (an exact product). acc rows are mPad floats apart. Token-major, so that
// the stores of one output row are adjacent.
void storePanel(const float* acc, int mPad, int n0, int nr, int M, const GemmOutput& y, const float* rowScales,
                const float* channelScales) {
  for (int m0 = 0; m0 < M; m0 += 16) {
    for (int r0 = 0; r0 < nr; r0 += 16) {
      const __mmask16 nMask = avx512::lane32Mask(nr - r0);
      const __m512 cs = channelScales ? _mm512_maskz_loadu_ps(nMask, channelScales + n0 + r0) : _mm512_set1_ps(1.0f);
      __m512i t[16];
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i) t[i] = _mm512_load_si512(acc + (size_t)(r0 + i) * mPad + m0);
      transpose16x16(t);  // t[j]: the 16 channels of token m0 + j
      for (int j = 0; j < std::min(16, M - m0); ++j) {
        const int m = m0 + j;
        const __m512 s = rowScales ? _mm512_mul_ps(_mm512_set1_ps(rowScales[m]), cs) : cs;
        const __m512 v = _mm512_mul_ps(s, _mm512_castsi512_ps(t[j]));
        const size_t at = (size_t)m * y.ldy + n0 + r0;
        if (y.f32) {
          _mm512_mask_storeu_ps(y.f32 + at, nMask, v);
        } else {
          const __m512i high = _mm512_srli_epi32(avx512::roundToBf16High(v), 16);
          _mm256_mask_storeu_epi16(y.bf16 + at, nMask, _mm512_cvtepi32_epi16(high));
        }
      }
    }
  }
}

// The tile products of rows [nBegin, nEnd) for the M tokens of xv; outputs as storePanel.
template <class Source>
void multiplyRows(const Source& src, const ActivationTiles& x, int M, int nBegin, int nEnd, const GemmOutput& y,
                  const float* rowScales, const float* channelScales) {
  constexpr int CPB = Source::kChunksPerBlock;
  const int mPad = x.mBlocks * 16;
  const size_t accRowBytes = (size_t)mPad * 4;
  uint16_t* ws = static_cast<uint16_t*>(fast::threadScratch(fast::kScratchWeights, (size_t)32 * kKChunks * 64));
  float* acc = static_cast<float*>(fast::threadScratch(fast::kScratchAccumulators, (size_t)kPanelRows * accRowBytes));
  const TileScope tiles;
  if (x.mBlocks <= 2) {
    // Panels of one or two A tiles, each through all of K before the next: its 16 or 32 rows are then sequential
    // streams, which the hardware prefetchers follow, where a 256-row panel interleaved 256 (A/B at 16 tokens, 2
    // threads, 4096x11008, 8192x2048, 2048x8192, 2048x2048: 4-10 % faster with 32-row panels than 256-row ones).
    // Its activation tiles (K / 16 KiB per token block) stream from L2 once per panel.
    // (Two A tiles with two token blocks, four chains, measured no better than one A tile on three shapes and
    // two CPUs, 2026-12-01: mixed, within the noise.)
    const int panelRows = x.mBlocks == 1 ? 2 * kInterleavedRows : kInterleavedRows;
    for (int n0 = nBegin; n0 < nEnd; n0 += panelRows) {
      const int rows = std::min(panelRows, nEnd - n0);
      if (x.mBlocks == 2) interleavedTile<Source, 1, 2>(src, x, n0, rows, ws, acc, accRowBytes);
      else if (rows > kInterleavedRows) interleavedTile<Source, 2, 1>(src, x, n0, rows, ws, acc, accRowBytes);
      else interleavedTile<Source, 1, 1>(src, x, n0, rows, ws, acc, accRowBytes);
      storePanel(acc, mPad, n0, rows, M, y, rowScales, channelScales);
    }
    return;
  }
  for (int n0 = nBegin; n0 < nEnd; n0 += kPanelRows) {
    const int nr = std::min(kPanelRows, nEnd - n0);
    for (int c0 = 0; c0 < x.chunks; c0 += kKChunks) {
      const int kc = std::min(kKChunks, x.chunks - c0);
      for (int r0 = 0; r0 < nr; r0 += 32) {
        // One pair of A tiles' rows (16 with a lone last tile), decoded right before use: ws stays in L1/L2.
        const int rows = std::min(32, nr - r0), rowsPad = rows > 16 ? 32 : 16;
        decodeRows(src, n0 + r0, rows, rowsPad, c0 / CPB, (c0 + kc) / CPB, ws);
        const uint8_t* weights = reinterpret_cast<const uint8_t*>(ws);
        const size_t weightRowBytes = (size_t)kc * 64;
        const bool twoA = rowsPad == 32, first = c0 == 0;
        for (int b = 0; b < x.mBlocks; b += 2) {
          const bool twoB = x.mBlocks - b >= 2;
          float* c = acc + (size_t)r0 * mPad + b * 16;
          const uint8_t* xt = x.tile(b, c0);
          if (twoA && twoB) tileBlock<2, 2>(weights, weightRowBytes, xt, x.blockBytes(), kc, c, accRowBytes, first);
          else if (twoA) tileBlock<2, 1>(weights, weightRowBytes, xt, x.blockBytes(), kc, c, accRowBytes, first);
          else if (twoB) tileBlock<1, 2>(weights, weightRowBytes, xt, x.blockBytes(), kc, c, accRowBytes, first);
          else tileBlock<1, 1>(weights, weightRowBytes, xt, x.blockBytes(), kc, c, accRowBytes, first);
        }
      }
    }
    storePanel(acc, mPad, n0, nr, M, y, rowScales, channelScales);
  }
}

inline GemmOutput rowsFrom(const GemmOutput& y, int m0) {
  return {y.f32 ? y.f32 + (size_t)m0 * y.ldy : nullptr, y.bf16 ? y.bf16 + (size_t)m0 * y.ldy : nullptr, y.ldy};
}

// ---- the three GEMMs as policies: activation order, weight source, scales, exceptions -------------------
//   prepare(m0, rows, Kp, out)  tokens [m0, m0 + rows) to BF16 rows in decoder order; true if one is a
//                               BF16 subnormal that tdpbf16ps would flush (then the whole call falls back)
//   multiply(x, m0, rows, nBegin, nEnd)   tile products of one pass
//   fallback(nBegin, nEnd)      the whole call for rows [nBegin, nEnd) without tiles (FP32 FMA)
//   fixRows(nBegin, nEnd)       after the last pass (if kFixesRows): recompute rows tdpbf16ps cannot do exactly

template <class Fn>
void withInt4Source(const Int4WeightsView& w, Fn fn) {
  switch (w.groupSize) {
    case 128: return fn(avx512::Int4Source<128, avx512::Int4Table::Fp8>(w));
    case 64: return fn(avx512::Int4Source<64, avx512::Int4Table::Fp8>(w));
    default: return fn(avx512::Int4Source<32, avx512::Int4Table::Fp8>(w));
  }
}

template <class Fn>
void withBf16Int4Source(const Int4WeightsView& w, Fn fn) {
  switch (w.groupSize) {
    case 128: return fn(avx512::Int4Source<128, avx512::Int4Table::Bf16>(w));
    case 64: return fn(avx512::Int4Source<64, avx512::Int4Table::Bf16>(w));
    default: return fn(avx512::Int4Source<32, avx512::Int4Table::Bf16>(w));
  }
}

struct W4A8Policy {
  const W4A8GemmArgs& a;
  static constexpr int kBlockK = 128;
  static constexpr bool kFixesRows = false;
  int M() const { return a.M; }
  int N() const { return a.w.rows; }
  int K() const { return a.w.cols; }
  bool prepare(int m0, int rows, int Kp, uint16_t* out) const {
    avx512::prepareInt4OrderFromFp8(a.x8 + (size_t)m0 * K(), a.actFormat, rows, K(), Kp, out);
    return false;
  }
  void multiply(const ActivationTiles& x, int m0, int rows, int nBegin, int nEnd) const {
    withInt4Source(a.w, [&](const auto& src) {
      multiplyRows(src, x, rows, nBegin, nEnd, rowsFrom(a.y, m0), a.xScales + m0, a.w.channelScales);
    });
  }
  void fallback(int, int) const {}
  void fixRows(int, int) const {}
};

struct W8A8Policy {
  const W8A8GemmArgs& a;
  static constexpr int kBlockK = 64;
  static constexpr bool kFixesRows = false;
  int M() const { return a.M; }
  int N() const { return a.w.rows; }
  int K() const { return a.w.cols; }
  bool prepare(int m0, int rows, int Kp, uint16_t* out) const {
    avx512::prepareFp8Order(a.x8 + (size_t)m0 * K(), a.actFormat, rows, K(), Kp, out);
    return false;
  }
  void multiply(const ActivationTiles& x, int m0, int rows, int nBegin, int nEnd) const {
    const avx512::Fp8Source src(a.w);
    multiplyRows(src, x, rows, nBegin, nEnd, rowsFrom(a.y, m0), a.xScales + m0, a.w.channelScales);
  }
  void fallback(int, int) const {}
  void fixRows(int, int) const {}
};

struct W4A16Policy {
  const W4A16GemmArgs& a;
  static constexpr int kBlockK = 128;
  static constexpr bool kFixesRows = true;
  int M() const { return a.M; }
  int N() const { return a.w.rows; }
  int K() const { return a.w.cols; }
  bool prepare(int m0, int rows, int Kp, uint16_t* out) const {
    return avx512::prepareInt4OrderFromBf16(a.x16 + (size_t)m0 * K(), rows, K(), Kp, out);
  }
  void multiply(const ActivationTiles& x, int m0, int rows, int nBegin, int nEnd) const {
    withBf16Int4Source(a.w, [&](const auto& src) {
      multiplyRows(src, x, rows, nBegin, nEnd, rowsFrom(a.y, m0), nullptr, a.w.channelScales);
    });
  }
  void fallback(int nBegin, int nEnd) const { avx512::gemmW4A16(a, nBegin, nEnd); }
  // A group scale below 2^-126 makes BF16-subnormal weights, which tdpbf16ps flushes: such a row is computed
  // again alone (all M tokens) by the FP32-FMA body. Per row, so the result does not depend on the N split.
  void fixRows(int nBegin, int nEnd) const {
    for (int n = nBegin; n < nEnd; ++n)
      if (fast::rowHasSubnormalScales(a.w, n)) avx512::gemmW4A16(a, n, n + 1);
  }
};

// BF16 weights [N, K] (the lm_head) times FP32 activations, exactly: each x splits into three BF16 planes,
// x = hi + mid + lo (each plane truncates what the planes before it left, 8 of x's 24 significant bits at a
// time, so the split is exact), side by side along k in the B tiles; every weight tile meets all three
// planes, so one FP32 accumulator sums hi w + mid w + lo w, products tdpbf16ps makes exactly. Three times
// the tile work of a BF16 x BF16 product, but the weights need no decoding (multiplyBf16Direct below).
constexpr int kBf16Planes = 3;

struct Bf16PlanesPolicy {
  const float* x;
  int m, n, k;  // M, N, K of the product
  const uint16_t* w;
  float* y;     // [M, N]
  static constexpr int kBlockK = 128;
  static constexpr bool kFixesRows = false;
  int M() const { return m; }
  int N() const { return n; }
  int K() const { return kBf16Planes * roundUp(k, kBlockK); }  // the planes side by side
  // Rows of [hi | mid | lo] in natural k order; true (fall back) when a plane holds a BF16 subnormal, which
  // tdpbf16ps would flush, or x is not finite (inf - inf would make the lower planes NaN).
  bool prepare(int m0, int rows, int Kp, uint16_t* out) const {
    const int planeK = Kp / kBf16Planes;
    bool bad = false;
    for (int r = 0; r < rows; ++r) {
      const float* in = x + (size_t)(m0 + r) * k;
      uint16_t* o = out + (size_t)r * avx512::xRowStride(Kp);
      for (int kk = 0; kk < planeK; kk += 16) {
        const __mmask16 mask = avx512::lane32Mask(k - kk);
        __m512 rest = _mm512_maskz_loadu_ps(mask, in + kk);
        const __m512i bits = _mm512_castps_si512(rest);
        bad |= _mm512_cmpeq_epi32_mask(_mm512_and_si512(bits, _mm512_set1_epi32(0x7F800000)), _mm512_set1_epi32(0x7F800000)) != 0;
        for (int p = 0; p < kBf16Planes; ++p) {
          const __m512i top = _mm512_and_si512(_mm512_castps_si512(rest), _mm512_set1_epi32((int)0xFFFF0000u));
          const __m512i exponent = _mm512_and_si512(top, _mm512_set1_epi32(0x7F800000));
          bad |= _mm512_mask_cmpeq_epi32_mask(_mm512_test_epi32_mask(top, _mm512_set1_epi32(0x007F0000)), exponent,
                                              _mm512_setzero_si512()) != 0;
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + p * planeK + kk), _mm512_cvtepi32_epi16(_mm512_srli_epi32(top, 16)));
          rest = _mm512_sub_ps(rest, _mm512_castsi512_ps(top));  // exact: the bits below the plane's
        }
        // Nothing left over, unless x was so small that a remainder went FP32-subnormal (bits the planes
        // cannot hold): fall back rather than drop them.
        bad |= _mm512_cmpneq_ps_mask(rest, _mm512_setzero_ps()) != 0;
      }
    }
    return bad;
  }
};

// Converts m-block `block` of a pass starting at token m0 into its tiles (scratch: the weights slot, free
// until the products start). Returns prepare()'s subnormal flag.
template <class Policy>
bool prepareBlock(const Policy& p, int m0, int passRows, int block, int Kp, uint8_t* xv) {
  const int rows = std::min(16, passRows - 16 * block);
  uint16_t* ordered = static_cast<uint16_t*>(
      fast::threadScratch(fast::kScratchWeights, (size_t)16 * avx512::xRowStride(Kp) * 2));
  const bool subnormal = p.prepare(m0 + 16 * block, rows, Kp, ordered);
  transposeToTiles(ordered, rows, Kp, xv + (size_t)block * (Kp / kChunkK) * kTileBytes);
  return subnormal;
}

// Rows [nBegin, nEnd), on this thread: the per-range table entries (M >= kMinRows).
template <class Policy>
void rangeGemm(const Policy& p, int nBegin, int nEnd) {
  if (nBegin >= nEnd) return;
  const int M = p.M(), Kp = roundUp(p.K(), Policy::kBlockK), chunks = Kp / kChunkK;
  for (int m0 = 0; m0 < M; m0 += kRowsPerPass) {
    const int rows = std::min(kRowsPerPass, M - m0), mBlocks = (rows + 15) / 16;
    uint8_t* xv = static_cast<uint8_t*>(
        fast::threadScratch(fast::kScratchActivations, (size_t)mBlocks * chunks * kTileBytes));
    bool subnormal = false;
    for (int b = 0; b < mBlocks; ++b) subnormal |= prepareBlock(p, m0, rows, b, Kp, xv);
    if (subnormal) return p.fallback(nBegin, nEnd);  // overwrites every output of the range
    p.multiply({xv, mBlocks, chunks}, m0, rows, nBegin, nEnd);
  }
  p.fixRows(nBegin, nEnd);
}

// Builds the B tiles of tokens [m0, m0 + rows) into xv, m-blocks spread over the pool. Returns prepare()'s
// subnormal flag.
template <class Policy>
bool prepareTilesPooled(ThreadPool& pool, const Policy& p, int m0, int rows, int Kp, uint8_t* xv) {
  struct PrepareJob {
    const Policy* p;
    int m0, rows, Kp;
    uint8_t* xv;
    std::atomic<bool> subnormal{false};
  } prepare{&p, m0, rows, Kp, xv};
  pool.run((rows + 15) / 16, 1, [](void* context, int begin, int end) {
    PrepareJob& job = *static_cast<PrepareJob*>(context);
    bool subnormal = false;
    for (int b = begin; b < end; ++b) subnormal |= prepareBlock(*job.p, job.m0, job.rows, b, job.Kp, job.xv);
    if (subnormal) job.subnormal.store(true, std::memory_order_relaxed);
  }, &prepare);
  return prepare.subnormal.load();
}

// The call on a pool in passes of passRows tokens: each pass's tiles built once (m-blocks over the pool) in the
// caller's scratch, then multiply(x, m0, rows, nBegin, nEnd) with N split over the pool as kernels/parallel.cpp
// does. False, at once, when prepare() declines a pass's activations.
template <class Policy, class Multiply>
bool tilePasses(ThreadPool& pool, const Policy& p, int passRows, const Multiply& multiply) {
  const int M = p.M(), N = p.N(), Kp = roundUp(p.K(), Policy::kBlockK), chunks = Kp / kChunkK;
  for (int m0 = 0; m0 < M; m0 += passRows) {
    const int rows = std::min(passRows, M - m0), mBlocks = (rows + 15) / 16;
    uint8_t* xv = static_cast<uint8_t*>(
        fast::threadScratch(fast::kScratchActivations, (size_t)mBlocks * chunks * kTileBytes));
    if (prepareTilesPooled(pool, p, m0, rows, Kp, xv)) return false;
    struct Job {
      const Multiply* multiply;
      ActivationTiles x;
      int m0, rows;
    } job{&multiply, {xv, mBlocks, chunks}, m0, rows};
    pool.run(N, kParallelRowTile, [](void* context, int begin, int end) {
      const Job& j = *static_cast<const Job*>(context);
      (*j.multiply)(j.x, j.m0, j.rows, begin, end);
    }, &job, kChunksPerThread);
  }
  return true;
}

// The whole call on a pool (tilePasses), or fallbackCall's when prepare() declines x.
template <class Policy>
void pooledGemm(ThreadPool& pool, const Policy& p, void (*fallbackCall)(ThreadPool&, const Policy&)) {
  const bool tiled = tilePasses(pool, p, kRowsPerPass, [&p](const ActivationTiles& x, int m0, int rows, int begin, int end) {
    p.multiply(x, m0, rows, begin, end);
  });
  if (!tiled) return fallbackCall(pool, p);
  // Only once every thread is done with xv: the FP32-FMA body uses the caller's activation scratch too.
  if constexpr (Policy::kFixesRows)
    pool.run(p.N(), kParallelRowTile, [](void* context, int begin, int end) {
      static_cast<const Policy*>(context)->fixRows(begin, end);
    }, const_cast<Policy*>(&p), kChunksPerThread);
}

// ---- BF16 weights, A tiles straight from the matrix (decode batches: the lm_head) ------------------------
// A BF16 weight row is already an A tile row (32 consecutive k), so up to kDirectMaxTokens tokens the weights
// need no copy into ws: tiles load from the matrix itself (rows 2K bytes apart), the C tiles stay in
// registers over all of K, and each chunk's A tiles meet the hi, mid and lo activation planes in turn. Every
// weight byte is read from memory once (a second pair of token blocks, M > 32, finds the row pair in L2).
// Through ws (multiplyRows) the 1B model's lm_head took 18.6 ms at 16 tokens on 2 cores, about 3.5 times the
// time its bytes take to read. Per output the sum runs over chunks in k order and, within a chunk, planes hi,
// mid, lo: the same for every M and N split.
constexpr int kDirectMaxTokens = 64;  // xv (3 planes x 64 tokens) stays in L2 for K up to a few thousand
constexpr int kDirectAheadChunks = 8;  // software prefetch distance along each weight row (512 bytes)

// Where the A tile of weight rows [n, n + 16) at chunk c loads from (returns the row stride in bytes): the
// matrix itself when the tile lies inside rows [0, nEnd) and k [0, K), else a zero-padded copy in stage
// (1 KiB). (GCC's tile intrinsics take literal tile numbers, so the caller does the load.)
W4A8_ALWAYS_INLINE size_t weightTile(const uint16_t* w, int K, int n, int nEnd, int c, uint16_t* stage,
                                     const void*& from) {
  const int k = kChunkK * c;
  if (n + 16 <= nEnd && k + kChunkK <= K) {
    from = w + (size_t)n * K + k;
    return (size_t)K * 2;
  }
  for (int r = 0; r < 16; ++r) {
    const __m512i v = n + r < nEnd ? _mm512_maskz_loadu_epi16(avx512::lane16Mask(K - k), w + (size_t)(n + r) * K + k)
                                   : _mm512_setzero_si512();
    _mm512_store_si512(stage + r * kChunkK, v);
  }
  from = stage;
  return 64;
}

// C(i, j) = sum over all chunks and planes of A_i . B_j for weight rows n0 + 16 i and token block b + j,
// stored into acc (C(i, j) at 16 i rows and 16 (b + j) floats; rows accRowBytes apart).
template <int NA, int NB>
void directBlock(const uint16_t* w, int K, int n0, int nEnd, const ActivationTiles& x, int b, int planeChunks,
                 uint16_t* stage, float* acc, size_t accRowBytes) {
  const int chunks = (K + kChunkK - 1) / kChunkK, prefetchRows = std::min(16 * NA, nEnd - n0);
  _tile_zero(0);
  if constexpr (NB > 1) _tile_zero(1);
  if constexpr (NA > 1) _tile_zero(2);
  if constexpr (NA > 1 && NB > 1) _tile_zero(3);
  for (int c = 0; c < chunks; ++c) {
    if (c + kDirectAheadChunks < chunks)
      for (int r = 0; r < prefetchRows; ++r)
        _mm_prefetch((const char*)(w + (size_t)(n0 + r) * K + kChunkK * (c + kDirectAheadChunks)), _MM_HINT_T0);
    const void* a0;
    const size_t stride0 = weightTile(w, K, n0, nEnd, c, stage, a0);
    _tile_loadd(4, a0, stride0);
    if constexpr (NA > 1) {
      const void* a1;
      const size_t stride1 = weightTile(w, K, n0 + 16, nEnd, c, stage + 16 * kChunkK, a1);
      _tile_loadd(5, a1, stride1);
    }
    for (int p = 0; p < kBf16Planes; ++p) {
      const uint8_t* bt = x.tile(b, p * planeChunks + c);
      _tile_loadd(6, bt, 64);
      _tile_dpbf16ps(0, 4, 6);
      if constexpr (NA > 1) _tile_dpbf16ps(2, 5, 6);
      if constexpr (NB > 1) {
        _tile_loadd(7, bt + x.blockBytes(), 64);
        _tile_dpbf16ps(1, 4, 7);
        if constexpr (NA > 1) _tile_dpbf16ps(3, 5, 7);
      }
    }
  }
  uint8_t* cp = reinterpret_cast<uint8_t*>(acc) + (size_t)b * 16 * 4;
  const size_t c1 = 64, c2 = 16 * accRowBytes;
  _tile_stored(0, cp, accRowBytes);
  if constexpr (NB > 1) _tile_stored(1, cp + c1, accRowBytes);
  if constexpr (NA > 1) _tile_stored(2, cp + c2, accRowBytes);
  if constexpr (NA > 1 && NB > 1) _tile_stored(3, cp + c2 + c1, accRowBytes);
}

// y[m][n] for rows [nBegin, nEnd) of the weights and the M tokens of x (y rows ldy floats apart).
void multiplyBf16Direct(const uint16_t* w, int K, const ActivationTiles& x, int planeChunks, int M, int nBegin,
                        int nEnd, float* y, int ldy) {
  const int mPad = x.mBlocks * 16;
  const size_t accRowBytes = (size_t)mPad * 4;
  float* acc = static_cast<float*>(fast::threadScratch(fast::kScratchAccumulators, 32 * accRowBytes));
  uint16_t* stage = static_cast<uint16_t*>(fast::threadScratch(fast::kScratchWeights, 2 * kTileBytes));
  const TileScope tiles;
  for (int n0 = nBegin; n0 < nEnd; n0 += 32) {
    const bool twoA = nEnd - n0 > 16;
    for (int b = 0; b < x.mBlocks; b += 2) {
      const bool twoB = x.mBlocks - b >= 2;
      if (twoA && twoB) directBlock<2, 2>(w, K, n0, nEnd, x, b, planeChunks, stage, acc, accRowBytes);
      else if (twoA) directBlock<2, 1>(w, K, n0, nEnd, x, b, planeChunks, stage, acc, accRowBytes);
      else if (twoB) directBlock<1, 2>(w, K, n0, nEnd, x, b, planeChunks, stage, acc, accRowBytes);
      else directBlock<1, 1>(w, K, n0, nEnd, x, b, planeChunks, stage, acc, accRowBytes);
    }
    storePanel(acc, mPad, n0, std::min(32, nEnd - n0), M, {y, nullptr, ldy}, nullptr, nullptr);
  }
}

// The whole BF16-weights call on the pool, in passes of kDirectMaxTokens tokens. False when prepare()
// declines x: the caller then computes every output again without tiles.
bool directBf16Pooled(ThreadPool& pool, const Bf16PlanesPolicy& p) {
  return tilePasses(pool, p, kDirectMaxTokens, [&p](const ActivationTiles& x, int m0, int rows, int begin, int end) {
    multiplyBf16Direct(p.w, p.k, x, x.chunks / kBf16Planes, rows, begin, end, p.y + (size_t)m0 * p.n, p.n);
  });
}

template <class Policy>
void noFallback(ThreadPool&, const Policy&) {}

void w4a16Fallback(ThreadPool& pool, const W4A16Policy& p) { gemmW4A16Parallel(*kernelsFor("avx512-fma"), pool, p.a); }

}  // namespace

void gemmW4A8(const W4A8GemmArgs& a, int nBegin, int nEnd) {
  if (a.M < kMinRows) return avx512bf16::gemmW4A8(a, nBegin, nEnd);
  rangeGemm(W4A8Policy{a}, nBegin, nEnd);
}

void gemmW8A8(const W8A8GemmArgs& a, int nBegin, int nEnd) {
  if (a.M < kMinRows) return avx512bf16::gemmW8A8(a, nBegin, nEnd);
  rangeGemm(W8A8Policy{a}, nBegin, nEnd);
}

void gemmW4A16(const W4A16GemmArgs& a, int nBegin, int nEnd) {
  if (a.M < kMinRows) return avx512bf16::gemmW4A16(a, nBegin, nEnd);
  rangeGemm(W4A16Policy{a}, nBegin, nEnd);
}

void gemmW4A8Pooled(ThreadPool& pool, const W4A8GemmArgs& a) { pooledGemm(pool, W4A8Policy{a}, noFallback<W4A8Policy>); }
void gemmW8A8Pooled(ThreadPool& pool, const W8A8GemmArgs& a) { pooledGemm(pool, W8A8Policy{a}, noFallback<W8A8Policy>); }
void gemmW4A16Pooled(ThreadPool& pool, const W4A16GemmArgs& a) { pooledGemm(pool, W4A16Policy{a}, w4a16Fallback); }

bool gemmBf16WeightsPooled(ThreadPool& pool, const float* x, int M, const uint16_t* w, int N, int K, float* y) {
  const Bf16PlanesPolicy p{x, M, N, K, w, y};
  return directBf16Pooled(pool, p);
}

}  // namespace w4a8::amx
