// AMX-BF16 building blocks for kernels/amx/ (built with -mamx-tile -mamx-bf16 and the AVX-512 flags;
// include nowhere else). Everything is in an anonymous namespace, like avx512/simd.h, so no AMX or
// AVX-512 code can be picked by the linker for a baseline caller.
//
// One tdpbf16ps C += A . B works on three tiles of 16 rows x 64 bytes:
//   A  [16 rows][32 BF16]       row i: 32 consecutive k of one operand row
//   B  [16 k-pairs][16][2 BF16] "VNNI" layout: row p, dword j = the k pair (2p, 2p+1) of column j
//   C  [16 rows][16 FP32]       C[i][j] += sum over p of A[i][2p] * B[p][j].lo + A[i][2p+1] * B[p][j].hi
// Products of BF16 values are exact in FP32 and accumulate in FP32 (round to nearest even); BF16 and FP32
// subnormal inputs and outputs are flushed to zero (which FP8 values and FP8 x FP8 sums never are).
//
// Here A is always weights (16 output channels x 32 k, the row-major layout the avx512 decoders already
// write), B activations (16 tokens, transposed once per call), so C holds Y transposed: [16 n][16 m].
#pragma once
#include <immintrin.h>

#include <cstdint>

#include "kernels/avx512/simd.h"

namespace w4a8::amx {
namespace {

constexpr int kTileBytes = 1024;  // 16 rows x 64 bytes

// LDTILECFG's 64-byte operand (palette 1): every tile 16 rows x 64 bytes.
//   byte 0 palette, byte 1 start row, bytes 16..47 bytes per row of tiles 0..15, bytes 48..63 rows
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t startRow = 0;
  uint8_t reserved[14] = {};
  uint16_t bytesPerRow[16] = {};
  uint8_t rows[16] = {};
  TileConfig() {
    for (int t = 0; t < 8; ++t) {
      bytesPerRow[t] = 64;
      rows[t] = 16;
    }
  }
};
static_assert(sizeof(TileConfig) == 64, "LDTILECFG reads 64 bytes");

// Tile numbers (GCC's tile intrinsics paste them into the assembly, so they are written as literals below):
//   tmm0 C(0, 0), tmm1 C(0, 1), tmm2 C(1, 0), tmm3 C(1, 1), tmm4 A_0, tmm5 A_1, tmm6 B_0, tmm7 B_1
// where C(i, j) accumulates weights tile A_i times activations tile B_j.

// Loads the tile configuration for this thread on construction and releases the tiles (back to the
// init state, so the OS saves no tile data on a context switch) on destruction.
struct TileScope {
  TileScope() {
    static const TileConfig config;
    _tile_loadconfig(&config);
  }
  ~TileScope() { _tile_release(); }
  TileScope(const TileScope&) = delete;
  TileScope& operator=(const TileScope&) = delete;
};

// In place transpose of a 16 x 16 matrix of dwords held in 16 zmm (row i = r[i]). Four stages, b = 8,
// 4, 2, 1: each swaps the off-diagonal b x b blocks of every 2b x 2b block, one vpermt2d per row.
struct TransposeIndex {
  alignas(64) int32_t low[4][16];   // row i of a pair (i, i + b): [r_i's own columns, r_{i+b}'s]
  alignas(64) int32_t high[4][16];  // row i + b
  constexpr TransposeIndex() : low(), high() {
    for (int s = 0; s < 4; ++s) {
      const int b = 8 >> s;
      for (int p = 0; p < 16; ++p) {
        low[s][p] = (p & b) ? 16 + p - b : p;
        high[s][p] = (p & b) ? 16 + p : p + b;
      }
    }
  }
};
constexpr TransposeIndex kTransposeIndex{};

W4A8_ALWAYS_INLINE void transpose16x16(__m512i r[16]) {
#pragma GCC unroll 4
  for (int s = 0; s < 4; ++s) {
    const int b = 8 >> s;
    const __m512i low = _mm512_load_si512(kTransposeIndex.low[s]);
    const __m512i high = _mm512_load_si512(kTransposeIndex.high[s]);
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) {
      if (i & b) continue;
      const __m512i top = _mm512_permutex2var_epi32(r[i], low, r[i + b]);
      const __m512i bottom = _mm512_permutex2var_epi32(r[i], high, r[i + b]);
      r[i] = top;
      r[i + b] = bottom;
    }
  }
}

// The three parts of tileBlock, for callers that keep the C tiles across several calls of tileSteps.
// C(i, j) at acc + 16 i rows + 16 j floats, rows accRowBytes apart: zeroed when `first`, else loaded.
template <int NA, int NB>
W4A8_ALWAYS_INLINE void tileStart(float* acc, size_t accRowBytes, bool first) {
  uint8_t* c = reinterpret_cast<uint8_t*>(acc);
  const size_t c1 = 64, c2 = 16 * accRowBytes;  // byte offsets of C(0, 1) and C(1, 0)
  if (first) {
    _tile_zero(0);
    if constexpr (NB > 1) _tile_zero(1);
    if constexpr (NA > 1) _tile_zero(2);
    if constexpr (NA > 1 && NB > 1) _tile_zero(3);
  } else {
    _tile_loadd(0, c, accRowBytes);
    if constexpr (NB > 1) _tile_loadd(1, c + c1, accRowBytes);
    if constexpr (NA > 1) _tile_loadd(2, c + c2, accRowBytes);
    if constexpr (NA > 1 && NB > 1) _tile_loadd(3, c + c2 + c1, accRowBytes);
  }
}

// C(i, j) += A_i . B_j over `chunks` chunks of 32 k:
//   weights      row-major, rows weightRowBytes apart: A_0 of chunk c at weights + 64 c (16 rows), A_1 16 rows after
//   activations  B_0 of chunk c at activations + c * kTileBytes, B_1 activationBlockBytes after
template <int NA, int NB>
W4A8_ALWAYS_INLINE void tileSteps(const uint8_t* weights, size_t weightRowBytes, const uint8_t* activations,
                                  size_t activationBlockBytes, int chunks) {
  for (int k = 0; k < chunks; ++k) {
    const uint8_t* a = weights + (size_t)k * 64;
    const uint8_t* b = activations + (size_t)k * kTileBytes;
    _tile_loadd(4, a, weightRowBytes);
    _tile_loadd(6, b, 64);
    _tile_dpbf16ps(0, 4, 6);
    if constexpr (NB > 1) {
      _tile_loadd(7, b + activationBlockBytes, 64);
      _tile_dpbf16ps(1, 4, 7);
    }
    if constexpr (NA > 1) {
      _tile_loadd(5, a + 16 * weightRowBytes, weightRowBytes);
      _tile_dpbf16ps(2, 5, 6);
      if constexpr (NB > 1) _tile_dpbf16ps(3, 5, 7);
    }
  }
}

template <int NA, int NB>
W4A8_ALWAYS_INLINE void tileStore(float* acc, size_t accRowBytes) {
  uint8_t* c = reinterpret_cast<uint8_t*>(acc);
  const size_t c1 = 64, c2 = 16 * accRowBytes;
  _tile_stored(0, c, accRowBytes);
  if constexpr (NB > 1) _tile_stored(1, c + c1, accRowBytes);
  if constexpr (NA > 1) _tile_stored(2, c + c2, accRowBytes);
  if constexpr (NA > 1 && NB > 1) _tile_stored(3, c + c2 + c1, accRowBytes);
}

// C(i, j) += A_i . B_j over `chunks` chunks of 32 k, for NA weight tiles and NB activation tiles (tileSteps),
// with C(i, j) zeroed first when `first`, else loaded from acc, and stored there at the end.
template <int NA, int NB>
W4A8_ALWAYS_INLINE void tileBlock(const uint8_t* weights, size_t weightRowBytes, const uint8_t* activations,
                                  size_t activationBlockBytes, int chunks, float* acc, size_t accRowBytes, bool first) {
  tileStart<NA, NB>(acc, accRowBytes, first);
  tileSteps<NA, NB>(weights, weightRowBytes, activations, activationBlockBytes, chunks);
  tileStore<NA, NB>(acc, accRowBytes);
}

}  // namespace
}  // namespace w4a8::amx
