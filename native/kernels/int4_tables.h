// The call-invariant half of the int16 W4A8 kernels' weight work (avx2/w4a8_int16.cpp, avx512/w4a8_vnni.cpp),
// done once per weight matrix instead of once per call: each group's integer weight table and its base.
//
// Why: at batch 1 those kernels rebuilt every group's 16-entry table (an FP32 rounding per entry) and
// analysed every row's scales on each call: a third of the avx2 kernel's M = 1 time. The tables repeat a
// lot (a table depends only on the scale's significand, the zero point and the sign), so a matrix keeps
// one small dictionary of distinct tables and, per group, a 2-byte index into it and its 1-byte base.
//
// Per group g of row n (scale s, zero z): w8[q] = fp8(fl32(s (q - z))) = W[q] 2^e, with
//   e = clamp(exponent(|s|) - p, exponent of the format's quantum, exponent of the ulp of the largest finite
//   value) (p mantissa bits), the kernels' base; W[q] is an integer with |W| <= 240 (the kernels' headers
//   give the argument; prepareInt4Tables computes W from fp8Encode itself and checks it).
// Layout:
//   tableIndex [rows][groups] uint16  entry of `entries` that holds group g's W
//   baseExp    [rows][groups] int8    e
//   rowGeneric [rows]         uint8   1: a non-finite scale or a zero point above 15 (the FP32 path)
//   entries    [count]        Int4TableEntry, 128 bytes each
// Memory: 3 bytes per group + 1 per row + 128 per distinct table. Packed weights take G/2 + 5 bytes per
// group, so the overhead is 4.3% (G = 128), 8.1% (G = 64), 14.3% (G = 32), plus the dictionary: 16 zero
// points x 2 signs x the distinct significand classes (a table rounds s' d, s' in [2^p, 2^(p+1)), d = 0..15,
// to p + 1 bits: about 8 steps per d, so some 120 classes for E4M3 and 60 for E5M2; more only where
// products saturate or scales are FP8-subnormal), about 500 KiB per matrix, at most 8 MiB (65536 entries).
// Making them costs 16 fp8Encode per group (about 75 ms per 45M weights on one core).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "quant/weights.h"

namespace w4a8 {

// One distinct group table: W[q] for q = 0..15 as int16 words (vpermw), as low / high bytes (vpshufb; adjacent:
// kernels load both at once), and as BF16 bits (exact: |W| <= 240 has at most 8 significant bits), to which the
// AMX path adds the base exponent e.
struct alignas(64) Int4TableEntry {
  int16_t words[16];
  uint8_t low[16];
  uint8_t high[16];
  uint16_t bf16[16];
};

struct Int4Tables {
  int rows = 0, cols = 0, groupSize = 0;
  int groupsPerRow = 0;  // cols / groupSize, kept so that the per-row accessors below need no division
  Fp8Format format = Fp8Format::E4M3FN;
  // The arrays the tables were made from (a view whose pointers differ does not use them).
  const uint8_t* codes = nullptr;
  const float* groupScales = nullptr;
  const uint8_t* zeros = nullptr;
  std::vector<uint16_t> tableIndex;
  std::vector<int8_t> baseExp;
  std::vector<uint8_t> rowGeneric;
  std::vector<Int4TableEntry> entries;
  // (Kernels call these once a row: with a division each, an idiv a row cost the VNNI GEMV 5-10 % at K = 4096.)
  const uint16_t* indexRow(int n) const { return tableIndex.data() + (size_t)n * groupsPerRow; }
  const int8_t* baseRow(int n) const { return baseExp.data() + (size_t)n * groupsPerRow; }
  size_t bytes() const {
    return tableIndex.size() * 2 + baseExp.size() + rowGeneric.size() + entries.size() * sizeof(Int4TableEntry);
  }
  // True when these tables were made from exactly w's arrays and shape.
  bool describes(const Int4WeightsView& w) const;
};

// Groups ahead at which the int16 W4A8 kernels prefetch a group's entry of `entries`: the entries are random reads
// into the dictionary (some 500 KiB a matrix), cold at the start of a call when the weights rotate (models, the
// bench); a row's indices are sequential and in cache. Measured on Zen 4, 2 threads, 4096x11008 with the bench's 12
// rotating copies, interleaved A/B: avx2 M = 1 1.69 -> 1.51 ms and M = 4 4.80 -> 4.44 ms (medians); VNNI p10
// 0.90-0.96 against 1.07-1.11 ms, medians 0-10 % faster (8 and 32 groups ahead alike).
constexpr int kEntryPrefetchGroups = 16;

// Prefetches what the int16 W4A8 kernels read of weight rows [n, n + rows) besides their codes (rows are
// contiguous): the tables' indices and exponents when the kernel has prepared tables, else the group scales
// and zero points. Called one row or tile ahead of the row loop.
inline void prefetchRowGroups(const Int4WeightsView& w, const Int4Tables* prepared, int n, int rows) {
  const int groups = w.groups() * rows;
  if (prepared) {
    for (int g = 0; g < groups; g += 32) __builtin_prefetch(prepared->indexRow(n) + g);
    for (int g = 0; g < groups; g += 64) __builtin_prefetch(prepared->baseRow(n) + g);
  } else {
    for (int g = 0; g < groups; g += 16) __builtin_prefetch(w.groupScales + (size_t)n * w.groups() + g);
    for (int g = 0; g < groups; g += 64) __builtin_prefetch(w.zeros + (size_t)n * w.groups() + g);
  }
}

// The tables of w, or nullptr when its groups have more than 65536 distinct tables (the kernels then build
// them per call, as without). The result describes w's arrays as they are now: change them, prepare again.
std::shared_ptr<const Int4Tables> prepareInt4Tables(const Int4WeightsView& w);

}  // namespace w4a8
