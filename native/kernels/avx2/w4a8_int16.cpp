// AVX2 W4A8 GEMM on exact integer dot products (vpmaddwd): Y[m, n] = s_x[m] s_c[n] sum_k x8[m, k] w8[n, k].
//
// Why integers: with FP32 FMA, every FP8 weight must be widened to an FP32 lane (two unpacks more per 16
// weights) and one FMA does 8 multiply-adds, so at M = 1 the kernel is compute-bound far below memory
// bandwidth on a 2-core AVX2 machine. vpmaddwd does 16 int16 products per instruction and the weights stay
// 16-bit. Both operands are made exact integers, so the group sums are exact and only their FP32
// accumulation rounds: the result is within the FP32 summation-order tolerance of DESIGN.md §1 (it rounds
// less often than the reference, which rounds after every product).
//
// Weights, per group g of row n (scale s, zero z, weight format with p mantissa bits):
//   w8[q] = fp8(fl32(s (q - z))) is an FP8 value. Let base = 2^e with e = clamp(exponent(|s|) - p,
//   exponent of the format's quantum, exponent of the ulp of the largest finite value). Every nonzero
//   |w8[q]| >= fp8(|s|) has an ulp that is a multiple of base, so w8[q] = base * W[q] with W an integer,
//   |W| <= 240 (|s| / base < 2^(p+1), |q - z| <= 15). W is computed exactly, without fp8Encode:
//   t = fl32((|s| / base) |q - z|) equals fl32(|s| |q - z|) / base (a power-of-two scaling), and in base
//   units the FP8 grid near t has spacing max(1, 2^(exponent(t) - p)) (subnormals and the smallest
//   normal binade have spacing 1 = quantum / base, or base = 2^(exponent(|s|) - p) makes t >= 2^p).
//   Rows whose scales are all 0 or at least the smallest normal round t to p + 1 significant bits with
//   Veltkamp's split (h = t (2^(23-p) + 1), h - (h - t)), which equals fp8Encode's round-to-nearest-even
//   for every such t (checked exhaustively over all scale mantissas and |q - z|); other rows add and
//   subtract C = max(2^23, 2^(exponent(t) + 23 - p)). Saturation is min(t, maxFinite / base) first, in
//   rows where some |s| > maxFinite / 16. Adding 2^23 + 2^16 to +-W leaves the
//   int16 of W in the low 16 bits of the FP32 bits; vpshufb turns them into the group's two 16-entry byte
//   tables (low and high bytes), which decode the INT4 codes 32 at a time.
//   Rows with a non-finite group scale or a zero point above 15 take a generic FP32 path.
// Activations, per group of row m (FP8 value v = M 2^(E - bias - p), mantissa M < 2^(p+1)):
//   plane 0 counts in units of 2^(E0 - bias - p) with E0 = E_max - (14 - p): the largest value is
//   < 2^15 units, every value with E >= E0 is an exact integer number of units. A group whose smallest
//   nonzero value is below 2^E0 also gets plane 1 (units 2^-15 of plane 0's: the exact remainders
//   v - trunc(v)), and plane 2 for e5m2's widest groups; most groups need one plane. The plane sums are
//   exact in int32 (|W x| < 240 * 2^15 and at most 16 products per lane and group).
//   Rows with a NaN or inf activation take the generic FP32 path (NaN and inf propagate as the reference's).
// Accumulation: per block (a group; two groups of 32 side by side for G = 32) and plane, the int32 lane sums
// are converted to FP32 and FMA-added with the unit base_w * base_x (a power of two, so exact) into 8 FP32
// lanes: plane 0 of every block in block order, then plane 1 of the blocks that have one, then plane 2; the
// lanes are summed at the end. Every path (fused for M = 1, fused on one decode for M = 2..4, tiles for larger
// M, where a token whose block has fewer planes adds exact zeros) does exactly these operations per output, so
// the result does not depend on M, the N split or the thread count.
//
// Operands in the kernel's k order: 32 code bytes (64 k) decode to 4 int16 vectors; vector v, 128-bit lane
// L, word i holds k = 2 (16 L + 8 (v % 2) + i) + v / 2 (low nibbles are even k, vpunpckl/hbw split the
// bytes). Activations are stored in that order, so one vpmaddwd pairs the right operands.
#include <algorithm>
#include <cstring>

#include "kernels/avx2/simd.h"
#include "kernels/backends.h"
#include "kernels/int16_common.h"
#include "kernels/int4_tables.h"

namespace w4a8::avx2 {
namespace {

using int16::FormatInfo, int16::formatInfo, int16::pow2, int16::groupMagnitudes;

constexpr int kSubBlockK = 64;   // k per 32 code bytes
constexpr int kChunkK = 16;      // k per int16 vector
constexpr int kMaxPlanes = 3;    // activation planes (e5m2 needs 3 at most, e4m3 2)
constexpr int kPlaneBits = 15;   // plane p + 1 counts in units 2^-15 of plane p's
constexpr int kRowsPerPass = 256;  // rows of X prepared at once (bounds the per-thread buffer)
// Software prefetch distance in the code stream (rows are contiguous, so it runs into the next row): the
// hardware prefetcher alone leaves the M = 1 decode waiting for DRAM about a third of the time.
// 4096 bytes measured 3-5 % faster than 2048 at M = 1 on the 2-core Xeon (A/B runs on the same weights,
// 4096x11008, 2 threads, 2026-12-01), and the same at M = 4.
constexpr int kPrefetchBytes = 4096;

// ---- formats ------------------------------------------------------------------------------------

// Per zero point z and sign of s (index z | 16 * (s < 0)): |q - z| and the sign of (q - z) * s, q = 0..15.
struct GroupTable {
  float absQMinusZ[16];
  float sign[16];
};
constexpr int kGroupTableShift = 7;  // sizeof(GroupTable) == 1 << 7
// Entries in the order the table code wants them: q = 0-3, 8-11 (one FP32 vector), then 4-7, 12-15.
struct GroupTables {
  alignas(64) GroupTable t[32];
  constexpr GroupTables() : t() {
    const int order[16] = {0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15};
    for (int i = 0; i < 32; ++i) {
      const int z = i & 15;
      for (int j = 0; j < 16; ++j) {
        const int q = order[j];
        t[i].absQMinusZ[j] = (float)(q > z ? q - z : z - q);
        t[i].sign[j] = (q < z) == (i < 16) ? -1.0f : 1.0f;
      }
    }
  }
};
static_assert(sizeof(GroupTable) == 1 << kGroupTableShift, "GroupTable size");
constexpr GroupTables kGroupTables{};

// ---- activations --------------------------------------------------------------------------------

// Rows [0, M) of X in the kernel's form. A block is max(G, 64) k: one group, or two groups of 32.
//   planes   [M][planeCount][Kp] int16, k order as above, zero where a block uses fewer planes
//   blockPlanes [M][blocks]      planes block b of row m uses (1..planeCount)
//   unit     [M][kMaxPlanes][unitStride] value of one unit of plane p of group g (then padding: 1.0; the
//                                    stride, >= groups + 1, is a whole number of vectors)
//   generic  [M]                 1 when the row has a NaN or inf activation (planes are zero then)
//   extra    [M + 1] offsets into extraBlocks, which lists row m's blocks with more than one plane, ascending
struct Activations {
  int M = 0, K = 0, Kp = 0, G = 0, groups = 0, blocks = 0, planeCount = 1, unitStride = 8;
  int16_t* planes = nullptr;
  uint8_t* blockPlanes = nullptr;
  float* unit = nullptr;
  uint8_t* generic = nullptr;
  int32_t* extra = nullptr;
  int32_t* extraBlocks = nullptr;
  const int16_t* row(int m, int p) const { return planes + ((size_t)m * planeCount + p) * Kp; }
  const float* units(int m, int p) const { return unit + ((size_t)m * kMaxPlanes + p) * unitStride; }
  int planesOf(int m, int b) const { return blockPlanes[(size_t)m * blocks + b]; }
};

// 16 codes -> 16 FP16 words with the code's value (e5m2) or value * 2^-8 (e4m3 formats); finite codes only.
W4A8_ALWAYS_INLINE __m256i codesToFp16(__m128i codes, bool e5m2) {
  const __m256i c = _mm256_cvtepu8_epi16(codes);
  if (e5m2) return _mm256_slli_epi16(c, 8);
  const __m256i magnitude = _mm256_slli_epi16(_mm256_and_si256(c, _mm256_set1_epi16(0x7F)), 7);
  return _mm256_or_si256(magnitude, _mm256_slli_epi16(_mm256_and_si256(c, _mm256_set1_epi16(0x80)), 8));
}

// 16 values in plane-0 units (8 of group a, 8 of group b) -> up to 3 planes of 16 int16 each, stored at
// out[p * stride]. Plane p + 1 holds the remainder of plane p scaled by 2^15 (exact: see the top).
W4A8_ALWAYS_INLINE void storePlanes(__m256 a, __m256 b, int planes, int planeCount, int16_t* out, size_t stride) {
  const __m256 next = _mm256_set1_ps((float)(1 << kPlaneBits));
  for (int p = 0; p < planeCount; ++p) {
    __m256i words = _mm256_setzero_si256();
    if (p < planes) {
      const __m256i ia = _mm256_cvttps_epi32(a), ib = _mm256_cvttps_epi32(b);
      words = _mm256_permute4x64_epi64(_mm256_packs_epi32(ia, ib), 0xD8);
      if (p + 1 < planes) {
        a = _mm256_mul_ps(_mm256_sub_ps(a, _mm256_cvtepi32_ps(ia)), next);
        b = _mm256_mul_ps(_mm256_sub_ps(b, _mm256_cvtepi32_ps(ib)), next);
      }
    }
    _mm256_store_si256((__m256i*)(out + p * stride), words);
  }
}

// Prepares rows [0, M) of x8 ([M][K] FP8 codes) for weights of group size G. Allocates nothing once the
// thread's scratch has grown to the largest shape.
void prepareActivations(const uint8_t* x8, int M, int K, int G, Fp8Format format, Activations& a) {
  const FormatInfo f = formatInfo(format);
  const int blockK = std::max(G, kSubBlockK);
  a.M = M, a.K = K, a.G = G, a.groups = K / G;
  a.Kp = (K + kSubBlockK - 1) / kSubBlockK * kSubBlockK;
  a.blocks = a.Kp / blockK;
  a.unitStride = (a.groups + 7) / 8 * 8 + 16;  // vector reads of a panel's units may run 12 past the end
  const size_t unitCount = (size_t)M * a.unitStride * kMaxPlanes;
  const size_t unitBytes = (unitCount * 4 + 63) / 64 * 64, listBytes = ((size_t)M * (a.blocks + 1) + 1) * 4;
  const size_t infoBytes = unitBytes + listBytes + (size_t)M * a.blocks + M;
  char* info = static_cast<char*>(fast::threadScratch(fast::kScratchActivationInfo, infoBytes));
  a.unit = reinterpret_cast<float*>(info);
  a.extra = reinterpret_cast<int32_t*>(info + unitBytes);
  a.extraBlocks = a.extra + M + 1;
  a.blockPlanes = reinterpret_cast<uint8_t*>(info + unitBytes + listBytes);
  a.generic = a.blockPlanes + (size_t)M * a.blocks;

  // Pass 1: per group, the plane-0 unit and the planes needed; rows with NaN or inf are generic.
  const int span = 14 - f.mantissaBits;  // E_max - E0: largest value < 2^15 plane-0 units
  a.planeCount = 1;
  a.extra[0] = 0;
  for (int m = 0; m < M; ++m) {
    const uint8_t* row = x8 + (size_t)m * K;
    bool generic = false;
    std::fill(a.blockPlanes + (size_t)m * a.blocks, a.blockPlanes + (size_t)(m + 1) * a.blocks, 1);
    for (int g = 0; g < a.groups; ++g) {
      int largest, smallest;
      groupMagnitudes(row + (size_t)g * G, G, largest, smallest);
      generic |= largest > f.maxFiniteCode;
      const int eMax = std::max(largest >> f.mantissaBits, 1), eMin = std::max(smallest >> f.mantissaBits, 1);
      const int e0 = eMax - span;
      const int planes = smallest == 255 || eMin >= e0 ? 1 : eMin >= e0 - kPlaneBits ? 2 : 3;
      for (int p = 0; p < kMaxPlanes; ++p)
        a.unit[((size_t)m * kMaxPlanes + p) * a.unitStride + g] = pow2(e0 - f.bias - f.mantissaBits - kPlaneBits * p);
      uint8_t& bp = a.blockPlanes[(size_t)m * a.blocks + g * G / blockK];
      bp = (uint8_t)std::max<int>(bp, planes);
    }
    for (int p = 0; p < kMaxPlanes; ++p)  // any finite unit: the padding's values are zero
      std::fill(a.unit + ((size_t)m * kMaxPlanes + p) * a.unitStride + a.groups,
                a.unit + ((size_t)m * kMaxPlanes + p + 1) * a.unitStride, 1.0f);
    a.generic[m] = generic;
    if (generic) std::fill(a.blockPlanes + (size_t)m * a.blocks, a.blockPlanes + (size_t)(m + 1) * a.blocks, 1);
    int count = a.extra[m];
    for (int b = 0; b < a.blocks; ++b) {
      const int planes = a.blockPlanes[(size_t)m * a.blocks + b];
      a.planeCount = std::max(a.planeCount, planes);
      if (planes > 1) a.extraBlocks[count++] = b;
    }
    a.extra[m + 1] = count;
  }

  // Pass 2: the planes, in the kernel's k order.
  a.planes = static_cast<int16_t*>(
      fast::threadScratch(fast::kScratchActivationPlanes, (size_t)M * a.planeCount * a.Kp * sizeof(int16_t)));
  const __m256i evenOdd = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0, 2, 4, 6, 8, 10, 12,
                                           14, 1, 3, 5, 7, 9, 11, 13, 15);
  // FP16 value -> plane-0 units: e4m3 FP16 words hold value * 2^-8.
  const int fp16Exp = f.e5m2 ? 0 : 8;
  for (int m = 0; m < M; ++m) {
    const uint8_t* row = x8 + (size_t)m * K;
    int16_t* out = a.planes + (size_t)m * a.planeCount * a.Kp;
    const size_t stride = a.Kp;
    if (a.generic[m]) {
      std::memset(out, 0, (size_t)a.planeCount * a.Kp * sizeof(int16_t));
      continue;
    }
    for (int k0 = 0; k0 < a.Kp; k0 += kSubBlockK) {
      // Codes in the kernel order: [v0 | v1] and [v2 | v3], 16 codes each (zero past K).
      const __m256i A = _mm256_loadu_si256((const __m256i*)(row + k0));
      const __m256i B = k0 + 32 < K ? _mm256_loadu_si256((const __m256i*)(row + k0 + 32)) : _mm256_setzero_si256();
      const __m256i a2 = _mm256_shuffle_epi8(A, evenOdd), b2 = _mm256_shuffle_epi8(B, evenOdd);
      const __m256i v01 = _mm256_unpacklo_epi64(a2, b2), v23 = _mm256_unpackhi_epi64(a2, b2);
      // Groups of the two halves (k0 .. k0 + 31 and k0 + 32 .. k0 + 63) and their planes.
      const int ga = k0 / G, gb = std::min((k0 + 32) / G, a.groups);
      const float* u = a.units(m, 0);
      const int planes = a.planesOf(m, k0 / std::max(G, kSubBlockK));
      const __m256 toUnitsA = _mm256_set1_ps(pow2(fp16Exp) / u[ga]), toUnitsB = _mm256_set1_ps(pow2(fp16Exp) / u[gb]);
      int16_t* dst = out + k0;
      for (int v = 0; v < 4; ++v) {
        const __m256i src = v < 2 ? v01 : v23;
        const __m128i codes = (v & 1) ? _mm256_extracti128_si256(src, 1) : _mm256_castsi256_si128(src);
        const __m256i h = codesToFp16(codes, f.e5m2);
        const __m256 lo = _mm256_mul_ps(_mm256_cvtph_ps(_mm256_castsi256_si128(h)), toUnitsA);
        const __m256 hi = _mm256_mul_ps(_mm256_cvtph_ps(_mm256_extracti128_si256(h, 1)), toUnitsB);
        storePlanes(lo, hi, planes, a.planeCount, dst + kChunkK * v, stride);
      }
    }
  }
}

// The thread pool runs a GEMM as several ranges of N per thread, and a model runs several GEMMs on the same
// activations (q/k/v, gate/up): each thread keeps its last prepared activations with a copy of the FP8
// codes they came from, and prepares again only when codes, shape, group size or format differ.
struct PreparedCache {
  bool valid = false;
  int M = 0, K = 0, G = 0;
  Fp8Format format = Fp8Format::E4M3FN;
  Activations a;
};
thread_local PreparedCache tlsPrepared;

const Activations& preparedActivations(const uint8_t* x8, int M, int K, int G, Fp8Format format) {
  PreparedCache& c = tlsPrepared;
  const size_t bytes = (size_t)M * K;
  uint8_t* copy = static_cast<uint8_t*>(fast::threadScratch(fast::kScratchActivationCopy, bytes));
  if (c.valid && c.M == M && c.K == K && c.G == G && c.format == format && std::memcmp(copy, x8, bytes) == 0) return c.a;
  c.valid = false;
  prepareActivations(x8, M, K, G, format, c.a);
  std::memcpy(copy, x8, bytes);
  c.M = M, c.K = K, c.G = G, c.format = format, c.valid = true;
  return c.a;
}

// ---- weights ------------------------------------------------------------------------------------

// Per group g of one weight row: the table inputs and the unit of W.
//   scaled[g] = |s| / base, limit[g] = maxFinite / base, base[g],
//   table[g] = byte offset of kGroupTables.t[z | 16 * (s < 0)]
// Two padding groups follow the last (all zero), so the tables of one block past the end can be built.
// (one padding group after the last, base 0, so a half block of G = 32 reads a zero unit).
struct WeightRow {
  float* scaled;
  float* limit;
  float* base;
  int32_t* table;
  float* unit;  // fused path: base[g] times the unit of activation plane 0 (filled by the caller), g <= groups
};

// How a weight row's tables are built. generic: a non-finite scale or a zero point above 15, the FP32
// path. subnormal: some 0 < |s| < the FP8 format's smallest normal, so some W lie on the fixed subnormal
// grid (rounding with a spacing floor of one unit; otherwise Veltkamp's split rounds to p + 1 bits, which
// is exactly fp8's round-to-nearest-even on every t = fl32(s' |q - z|), s' in [2^p, 2^(p+1)): checked
// exhaustively). saturating: some |s| > maxFinite / 16, so some |s (q - z)| may reach the largest value.
struct RowKind {
  bool generic, subnormal, saturating;
};

// Fills t for row n and says how to decode it.
RowKind prepareWeightRow(const Int4WeightsView& w, int n, const FormatInfo& f, const WeightRow& t) {
  const int groups = w.groups();
  const float* scales = w.groupScales + (size_t)n * groups;
  const uint8_t* zeros = w.zeros + (size_t)n * groups;
  const __m256i absMask = _mm256_set1_epi32(0x7FFFFFFF), largestFinite = _mm256_set1_epi32(0x7F7FFFFF);
  const __m256i lowest = _mm256_set1_epi32(f.quantumExp), highest = _mm256_set1_epi32(f.ulpMaxExp);
  const __m256i expOffset = _mm256_set1_epi32(127 + f.mantissaBits), bias = _mm256_set1_epi32(127);
  const __m256i fifteen = _mm256_set1_epi32(15), zero = _mm256_setzero_si256();
  const __m256 maxFinite = _mm256_set1_ps(f.maxFinite);
  const __m256i saturatingAbove = _mm256_castps_si256(_mm256_set1_ps(f.maxFinite / 16));
  const __m256i minNormal = _mm256_set1_epi32((f.quantumExp + f.mantissaBits + 127) << 23);
  __m256i bad = zero, saturating = zero, subnormal = zero;
  int g = 0;
  auto eight = [&](__m256i s, __m256i z) {
    const __m256i a = _mm256_and_si256(s, absMask);
    bad = _mm256_or_si256(bad, _mm256_or_si256(_mm256_cmpgt_epi32(a, largestFinite), _mm256_cmpgt_epi32(z, fifteen)));
    saturating = _mm256_or_si256(saturating, _mm256_cmpgt_epi32(a, saturatingAbove));
    subnormal = _mm256_or_si256(subnormal, _mm256_andnot_si256(_mm256_cmpeq_epi32(a, zero), _mm256_cmpgt_epi32(minNormal, a)));
    __m256i e = _mm256_sub_epi32(_mm256_srli_epi32(a, 23), expOffset);
    e = _mm256_min_epi32(_mm256_max_epi32(e, lowest), highest);
    const __m256 inverse = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_sub_epi32(bias, e), 23));
    _mm256_storeu_ps(t.scaled + g, _mm256_mul_ps(_mm256_castsi256_ps(a), inverse));
    _mm256_storeu_ps(t.limit + g, _mm256_mul_ps(maxFinite, inverse));
    _mm256_storeu_ps(t.base + g, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(e, bias), 23)));
    const __m256i index = _mm256_or_si256(z, _mm256_slli_epi32(_mm256_srli_epi32(s, 31), 4));
    _mm256_storeu_si256((__m256i*)(t.table + g), _mm256_slli_epi32(index, kGroupTableShift));
  };
  for (; g + 8 <= groups; g += 8)
    eight(_mm256_loadu_si256((const __m256i*)(scales + g)), _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(zeros + g))));
  if (g < groups) {  // last 1..7 groups through a zero-padded copy
    alignas(32) float s[8] = {};
    alignas(32) int32_t z[8] = {};
    for (int i = 0; g + i < groups; ++i) s[i] = scales[g + i], z[i] = zeros[g + i];
    eight(_mm256_load_si256((const __m256i*)s), _mm256_load_si256((const __m256i*)z));
  }
  for (int i = groups; i < groups + 2; ++i) t.scaled[i] = t.limit[i] = t.base[i] = 0.0f, t.table[i] = 0;
  return {!_mm256_testz_si256(bad, bad), !_mm256_testz_si256(subnormal, subnormal),
          !_mm256_testz_si256(saturating, saturating)};
}

struct TableConstants {
  __m256i expMask = _mm256_set1_epi32(0x7F800000), two23 = _mm256_set1_epi32(0x4B000000), step;
  __m256 veltkamp;                                                // 2^(23 - p)
  __m256 lowWordOffset = _mm256_set1_ps(8388608.0f + 65536.0f);  // 2^23 + 2^16: int16 of +-W in the low bits
  // Low and high byte of each dword: from a (q 0-3 | 8-11) to dwords 0, 2 | 4, 6, from b (q 4-7 | 12-15)
  // to dwords 1, 3 | 5, 7, so the blend is [L0-7, H0-7 | L8-15, H8-15].
  __m256i gatherA = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, 1, 5, 9, 13, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1,
                                     -1, 1, 5, 9, 13, -1, -1, -1, -1);
  __m256i gatherB = _mm256_setr_epi8(-1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1, -1, 1, 5, 9, 13, -1, -1, -1, -1, 0, 4, 8,
                                     12, -1, -1, -1, -1, 1, 5, 9, 13);
  explicit TableConstants(const FormatInfo& f)
      : step(_mm256_set1_epi32((23 - f.mantissaBits) << 23)), veltkamp(_mm256_set1_ps((float)(1 << (23 - f.mantissaBits)))) {}
};

// 8 entries of a group table rounded to the FP8 grid, as FP32 bits with the int16 of W in the low half.
template <bool kSubnormal, bool kSaturate>
W4A8_ALWAYS_INLINE __m256i roundedEntries(__m256 scaled, __m256 limit, const float* absQz, const float* sign,
                                          const TableConstants& c) {
  __m256 t = _mm256_mul_ps(scaled, _mm256_load_ps(absQz));
  if constexpr (kSaturate) t = _mm256_min_ps(t, limit);
  __m256 r;
  if constexpr (kSubnormal) {  // + and - C = max(2^23, 2^(exponent(t) + 23 - p)): spacing max(1, ulp)
    const __m256i binade = _mm256_add_epi32(_mm256_and_si256(_mm256_castps_si256(t), c.expMask), c.step);
    const __m256 C = _mm256_castsi256_ps(_mm256_max_epu32(binade, c.two23));
    r = _mm256_sub_ps(_mm256_add_ps(t, C), C);
  } else {  // Veltkamp: h = t (2^(23-p) + 1), r = h - (h - t) has p + 1 significant bits
    const __m256 h = _mm256_fmadd_ps(t, c.veltkamp, t);
    r = _mm256_sub_ps(h, _mm256_sub_ps(h, t));
  }
  return _mm256_castps_si256(_mm256_fmadd_ps(_mm256_load_ps(sign), r, c.lowWordOffset));
}

// Group g's byte table: [L0..L15 | H0..H15], the low and high bytes of W[q], q = 0..15.
template <bool kSubnormal, bool kSaturate>
W4A8_ALWAYS_INLINE __m256i groupBytes(const WeightRow& t, int g, const TableConstants& c) {
  const __m256 scaled = _mm256_broadcast_ss(t.scaled + g);
  const __m256 limit = kSaturate ? _mm256_broadcast_ss(t.limit + g) : scaled;
  const GroupTable& table =
      *reinterpret_cast<const GroupTable*>(reinterpret_cast<const char*>(kGroupTables.t) + t.table[g]);
  const __m256i a = roundedEntries<kSubnormal, kSaturate>(scaled, limit, table.absQMinusZ, table.sign, c);
  const __m256i b = roundedEntries<kSubnormal, kSaturate>(scaled, limit, table.absQMinusZ + 8, table.sign + 8, c);
  const __m256i v = _mm256_blend_epi32(_mm256_shuffle_epi8(a, c.gatherA), _mm256_shuffle_epi8(b, c.gatherB), 0xAA);
  return _mm256_permute4x64_epi64(v, 0xD8);
}

// The byte tables of a whole row, built before the decode in a loop of independent iterations (each has a
// dependency chain of about 30 cycles, which the decode loop could not hide). For G >= 64, tables[g] is
// group g's [L | H], which the decode broadcasts to both 128-bit lanes; for G = 32, tables[2b] and
// tables[2b + 1] are block b's [L(2b) | L(2b + 1)] and [H(2b) | H(2b + 1)]. (Padding groups make the last
// odd group's partner zero.)
template <int G, bool kSubnormal, bool kSaturate>
void buildTables(const WeightRow& t, int groups, const TableConstants& constants, __m256i* tables) {
  // Locals, not references: the stores through __m256i* may alias anything, which would make the compiler
  // reload every constant after each store.
  const TableConstants c = constants;
  const WeightRow row = t;
  if constexpr (G >= kSubBlockK) {
    for (int g = 0; g < groups; ++g) _mm256_store_si256(tables + g, groupBytes<kSubnormal, kSaturate>(row, g, c));
  } else {
    for (int g = 0; g < groups; g += 2) {
      const __m256i a = groupBytes<kSubnormal, kSaturate>(row, g, c), b = groupBytes<kSubnormal, kSaturate>(row, g + 1, c);
      _mm256_store_si256(tables + g, _mm256_permute2x128_si256(a, b, 0x20));
      _mm256_store_si256(tables + g + 1, _mm256_permute2x128_si256(a, b, 0x31));
    }
  }
}

template <int G>
void buildRowTables(RowKind kind, const WeightRow& t, int groups, const TableConstants& c, __m256i* tables) {
  if (kind.subnormal) {
    if (kind.saturating) buildTables<G, true, true>(t, groups, c, tables);
    else buildTables<G, true, false>(t, groups, c, tables);
  } else {
    if (kind.saturating) buildTables<G, false, true>(t, groups, c, tables);
    else buildTables<G, false, false>(t, groups, c, tables);
  }
}

// Block b's vpshufb tables: low and high bytes of W, one group per 128-bit lane.
template <int G>
W4A8_ALWAYS_INLINE void blockTables(const __m256i* tables, int b, __m256i& low, __m256i& high);

// Where a row finds its block tables (fused and tile paths alike): built for the row (buildRowTables), or prepared with the
// weights (kernels/int4_tables.h: the entry of each group, broadcast to the lanes by the loads themselves).
template <int G>
struct BuiltTables {
  const __m256i* tables;
  W4A8_ALWAYS_INLINE void block(int b, __m256i& low, __m256i& high) const { blockTables<G>(tables, b, low, high); }
};
template <int G>
struct PreparedTables {
  const Int4TableEntry* entries;
  const uint16_t* index;  // the row's groups
  int groups;
  W4A8_ALWAYS_INLINE void block(int b, __m256i& low, __m256i& high) const {
    if constexpr (G >= kSubBlockK) {
      if (b + kEntryPrefetchGroups < groups)  // (int4_tables.h)
        _mm_prefetch((const char*)entries[index[b + kEntryPrefetchGroups]].low, _MM_HINT_T0);
      const Int4TableEntry& e = entries[index[b]];
      low = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i*)e.low));
      high = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i*)e.high));
    } else {  // [group 2b | group 2b + 1]; past the last group, zeros (as the built tables' padding group)
      const Int4TableEntry& a = entries[index[2 * b]];
      if (__builtin_expect(2 * b + 1 < groups, 1)) {
        const Int4TableEntry& c = entries[index[2 * b + 1]];
        low = _mm256_loadu2_m128i((const __m128i*)c.low, (const __m128i*)a.low);
        high = _mm256_loadu2_m128i((const __m128i*)c.high, (const __m128i*)a.high);
      } else {
        low = _mm256_zextsi128_si256(_mm_load_si128((const __m128i*)a.low));
        high = _mm256_zextsi128_si256(_mm_load_si128((const __m128i*)a.high));
      }
    }
  }
};

template <int G>
W4A8_ALWAYS_INLINE void blockTables(const __m256i* tables, int b, __m256i& low, __m256i& high) {
  if constexpr (G >= kSubBlockK) {
    const __m128i* p = reinterpret_cast<const __m128i*>(tables + b);
    low = _mm256_broadcastsi128_si256(_mm_load_si128(p));
    high = _mm256_broadcastsi128_si256(_mm_load_si128(p + 1));
  } else {
    low = _mm256_load_si256(tables + 2 * b);
    high = _mm256_load_si256(tables + 2 * b + 1);
  }
}

// 32 code bytes -> 4 int16 vectors of W (vector v as above), handed to use(v, words).
template <class Use>
W4A8_ALWAYS_INLINE void decodeSubBlock(__m256i codes, __m256i low, __m256i high, Use use) {
  const __m256i nibble = _mm256_set1_epi8(0x0F);
  const __m256i even = _mm256_and_si256(codes, nibble), odd = _mm256_and_si256(_mm256_srli_epi16(codes, 4), nibble);
  const __m256i el = _mm256_shuffle_epi8(low, even), eh = _mm256_shuffle_epi8(high, even);
  use(0, _mm256_unpacklo_epi8(el, eh));
  use(1, _mm256_unpackhi_epi8(el, eh));
  const __m256i ol = _mm256_shuffle_epi8(low, odd), oh = _mm256_shuffle_epi8(high, odd);
  use(2, _mm256_unpacklo_epi8(ol, oh));
  use(3, _mm256_unpackhi_epi8(ol, oh));
}

// Codes of sub-block j of a row (the last one may be half: G = 32 with an odd group count).
template <int G>
W4A8_ALWAYS_INLINE __m256i loadCodes(const uint8_t* rowCodes, int j, int K) {
  const uint8_t* p = rowCodes + (size_t)j * 32;
  if (G >= kSubBlockK || (j + 1) * kSubBlockK <= K) return _mm256_loadu_si256((const __m256i*)p);
  return _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i*)p));
}

// The FP32 unit of plane p of block b: base_w * base_x per group (two halves for G = 32).
template <int G>
W4A8_ALWAYS_INLINE __m256 blockUnit(const WeightRow& t, const Activations& x, int m, int b, int p) {
  if constexpr (G >= kSubBlockK) {
    return _mm256_mul_ps(_mm256_broadcast_ss(t.base + b), _mm256_broadcast_ss(x.units(m, p) + b));
  } else {
    const int g = 2 * b, h = std::min(2 * b + 1, x.groups);
    const __m256 w = _mm256_setr_m128(_mm_broadcast_ss(t.base + g), _mm_broadcast_ss(t.base + h));
    const __m256 u = _mm256_setr_m128(_mm_broadcast_ss(x.units(m, p) + g), _mm_broadcast_ss(x.units(m, p) + h));
    return _mm256_mul_ps(w, u);
  }
}

// ---- the generic path (rare rows) ---------------------------------------------------------------

// FP32 sum in k order of exact products, for weight rows or activation rows the integer path does not take.
float genericDot(const uint8_t* x8Row, const float* xTable, const float* wValues, int K) {
  float sum = 0.0f;
  for (int k = 0; k < K; ++k) sum += xTable[x8Row[k]] * wValues[k];
  return sum;
}

// ---- kernels ------------------------------------------------------------------------------------

struct Problem {
  const W4A8GemmArgs& a;
  const Activations& x;
  int m0;  // first row of X in this pass
  FormatInfo wf;
  TableConstants tc;
};

W4A8_ALWAYS_INLINE void storeResult(const Problem& pr, int m, int n, float sum) {
  const W4A8GemmArgs& a = pr.a;
  storeValue(a.y, m, n, (a.xScales[pr.m0 + m] * a.w.channelScales[n]) * sum);
}

// The generic path for output (m, n) of this pass; wValues: row n's FP32 weights (filled on first use).
float genericOutput(const Problem& pr, int m, int n, float* wValues, bool& filled) {
  if (!filled) fast::int4RowValues(pr.a.w, n, wValues), filled = true;
  const int K = pr.a.w.cols;
  return genericDot(pr.a.x8 + (size_t)(pr.m0 + m) * K, fp8DecodeTable(pr.a.actFormat), wValues, K);
}

// M = 1: the int32 lane sums of one block of one weight row against one activation plane; codes and xs
// point at the block's first code byte and activation, j0 is its first sub-block.
template <int G>
W4A8_ALWAYS_INLINE __m256i fusedBlockSums(const uint8_t* codes, const int16_t* xs, int j0, int K, __m256i low,
                                          __m256i high) {
  constexpr int kSubBlocks = std::max(G, kSubBlockK) / kSubBlockK;
  __m256i sums = _mm256_setzero_si256();
#pragma GCC unroll 2
  for (int sb = 0; sb < kSubBlocks; ++sb) {
    prefetchWeights(codes + 32 * sb + kPrefetchBytes);
    const __m256i c = G >= kSubBlockK || (j0 + sb + 1) * kSubBlockK <= K
                          ? _mm256_loadu_si256((const __m256i*)(codes + 32 * sb))
                          : _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i*)codes));
    decodeSubBlock(c, low, high, [&](int v, __m256i w) {
      sums = _mm256_add_epi32(sums, _mm256_madd_epi16(w, _mm256_load_si256((const __m256i*)(xs + kSubBlockK * sb + kChunkK * v))));
    });
  }
  return sums;
}

// Blocks of token m that need activation planes 1 and 2 (rare), after all blocks' plane 0: the order of the
// FP32 additions that the tile path uses too.
template <int G, class Tables>
__attribute__((noinline)) __m256 fusedExtraPlanes(const Problem& pr, const WeightRow& t, const uint8_t* rowCodes,
                                                  const Tables tables, int m, __m256 total) {
  constexpr int kBlockK = std::max(G, kSubBlockK), kSubBlocks = kBlockK / kSubBlockK;
  const Activations& x = pr.x;
  for (int p = 1; p < x.planeCount; ++p)
    for (int i = x.extra[m]; i < x.extra[m + 1]; ++i) {
      const int b = x.extraBlocks[i];
      if (x.planesOf(m, b) <= p) continue;
      __m256i low, high;
      tables.block(b, low, high);
      const __m256i sums = fusedBlockSums<G>(rowCodes + (size_t)b * kBlockK / 2, x.row(m, p) + (size_t)b * kBlockK,
                                             b * kSubBlocks, x.K, low, high);
      total = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), blockUnit<G>(t, x, m, b, p), total);
    }
  return total;
}

// M = 1: one weight row, with its block tables (built or prepared). Per output, 8 FP32 lanes add the blocks'
// plane-0 sums in block order, then those of plane 1, then plane 2 (every path adds in this order).
template <int G, class Tables>
float fusedRow(const Problem& pr, const WeightRow& t, const uint8_t* rowCodes, const Tables tables) {
  constexpr int kBlockK = std::max(G, kSubBlockK), kSubBlocks = kBlockK / kSubBlockK;
  const Activations& x = pr.x;
  const int blocks = x.blocks, K = x.K;
  const uint8_t* codes = rowCodes;
  const int16_t* xs = x.row(0, 0);
  __m256 total = _mm256_setzero_ps();
  for (int b = 0; b < blocks; ++b) {
    __m256i low, high;
    tables.block(b, low, high);
    const __m256i sums = fusedBlockSums<G>(codes, xs, b * kSubBlocks, K, low, high);
    const __m256 unit = G >= kSubBlockK ? _mm256_broadcast_ss(t.unit + b)
                                        : _mm256_setr_m128(_mm_broadcast_ss(t.unit + 2 * b), _mm_broadcast_ss(t.unit + 2 * b + 1));
    total = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), unit, total);
    codes += kBlockK / 2, xs += kBlockK;
  }
  if (x.planeCount > 1) total = fusedExtraPlanes<G>(pr, t, rowCodes, tables, 0, total);
  return horizontalSum(total);
}

// A few tokens (2 to kFusedTokens per call): fusedRow for tokens [m0, m0 + MR) on one decode of the row,
// the FP32 additions of each token in fusedRow's order (the units base_w * unit_x are made here, the same
// exact products as fillUnits's). Why not tiles: they store every decoded weight and read it back per token
// pair, which at M = 2 took 2.8 times the M = 1 time on 2 cores (4096 x 11008, G = 128).
template <int G, int MR, class Tables>
__attribute__((noinline)) void fusedTokens(const Problem& pr, const WeightRow& t, const uint8_t* rowCodes,
                                           const Tables tables, int m0, float* out) {
  constexpr int kBlockK = std::max(G, kSubBlockK), kSubBlocks = kBlockK / kSubBlockK;
  const Activations& x = pr.x;
  const int blocks = x.blocks, K = x.K;
  const int16_t* xs[MR];
  const float* xUnit[MR];
  __m256 total[MR];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) xs[m] = x.row(m0 + m, 0), xUnit[m] = x.units(m0 + m, 0), total[m] = _mm256_setzero_ps();
  const uint8_t* codes = rowCodes;
  for (int b = 0; b < blocks; ++b) {
    __m256i low, high;
    tables.block(b, low, high);
    __m256i sums[MR];
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) sums[m] = _mm256_setzero_si256();
#pragma GCC unroll 2
    for (int sb = 0; sb < kSubBlocks; ++sb) {
      const int j = b * kSubBlocks + sb;
      prefetchWeights(codes + 32 * sb + kPrefetchBytes);
      const __m256i c = G >= kSubBlockK || (j + 1) * kSubBlockK <= K
                            ? _mm256_loadu_si256((const __m256i*)(codes + 32 * sb))
                            : _mm256_zextsi128_si256(_mm_loadu_si128((const __m128i*)codes));
      decodeSubBlock(c, low, high, [&](int v, __m256i w) {
#pragma GCC unroll 8
        for (int m = 0; m < MR; ++m) {
          sums[m] = _mm256_add_epi32(
              sums[m], _mm256_madd_epi16(w, _mm256_load_si256((const __m256i*)(xs[m] + (size_t)j * kSubBlockK + kChunkK * v))));
          __asm__("" : "+x"(sums[m]));  // as in tileBlockSums: else GCC hoists all products and spills them
        }
      });
    }
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const __m256 unit =
          G >= kSubBlockK
              ? _mm256_mul_ps(_mm256_broadcast_ss(t.base + b), _mm256_broadcast_ss(xUnit[m] + b))
              : _mm256_mul_ps(_mm256_setr_m128(_mm_broadcast_ss(t.base + 2 * b), _mm_broadcast_ss(t.base + 2 * b + 1)),
                              _mm256_setr_m128(_mm_broadcast_ss(xUnit[m] + 2 * b), _mm_broadcast_ss(xUnit[m] + 2 * b + 1)));
      total[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[m]), unit, total[m]);
    }
    codes += kBlockK / 2;
  }
  for (int m = 0; m < MR; ++m) {
    if (x.planeCount > 1) total[m] = fusedExtraPlanes<G>(pr, t, rowCodes, tables, m0 + m, total[m]);
    out[m] = horizontalSum(total[m]);
  }
}

// Tokens per fusedTokens call: their 2 x MR accumulators and the decode's 6 registers fit AVX2's 16.
constexpr int kFusedTokens = 4;
// Calls of up to this many tokens decode each row once for all (fusedRows); larger ones take the tiles.
constexpr int kFusedMaxTokens = 4;

template <int G, class Tables, int MR = 2>
void fusedTokensFor(int mr, const Problem& pr, const WeightRow& t, const uint8_t* rowCodes, const Tables tables,
                    int m0, float* out) {
  if constexpr (MR <= kFusedTokens) {
    if (mr != MR) return fusedTokensFor<G, Tables, MR + 1>(mr, pr, t, rowCodes, tables, m0, out);
    fusedTokens<G, MR>(pr, t, rowCodes, tables, m0, out);
  }
}

// out[m] for tokens [0, M), M >= 2, of one weight row: fusedTokens on groups of 2 to kFusedTokens tokens, as
// even as can be (M = 5: 3 + 2).
template <int G, class Tables>
W4A8_ALWAYS_INLINE void fusedOutputs(const Problem& pr, int M, const WeightRow& t, const uint8_t* rowCodes,
                                     const Tables tables, float* out) {
  const int calls = (M + kFusedTokens - 1) / kFusedTokens;
  for (int i = 0, m0 = 0; i < calls; ++i) {
    const int mr = M / calls + (i < M % calls);
    fusedTokensFor<G>(mr, pr, t, rowCodes, tables, m0, out + m0);
    m0 += mr;
  }
}

// Scratch of one thread for the weight side: row tables for kTileRows rows and their decoded W.
constexpr int kTileRows = 4;     // weight rows per tile (NR)
constexpr int kTileTokens = 2;   // activation rows per micro-kernel (MR)
constexpr int kPanelBlocks = 16;  // blocks per panel of the tile path (2048 k for G = 128)

struct WeightScratch {
  WeightRow rows[kTileRows];
  __m256i* tables;   // byte tables of one row (buildTables)
  int16_t* decoded;  // [Kp / 16][kTileRows][16]
  float* values;     // [K] FP32 weights of a generic row
};

WeightScratch weightScratch(int groups, int Kp, int K) {
  // Per array, padded to 64 bytes: vector reads of a panel's units may run 12 past the last group.
  const size_t tableFloats = (size_t)(groups + 16 + 15) / 16 * 16;
  const size_t tableBytes = 5 * tableFloats * 4 * kTileRows;
  const size_t decodedBytes = (size_t)Kp * kTileRows * sizeof(int16_t);
  const size_t valueBytes = ((size_t)K * 4 + 63) / 64 * 64;
  const size_t byteTableBytes = (size_t)(groups + 2) * 32;
  char* s = static_cast<char*>(
      fast::threadScratch(fast::kScratchWeights, tableBytes + decodedBytes + valueBytes + byteTableBytes));
  WeightScratch w;
  float* f = reinterpret_cast<float*>(s);
  for (int r = 0; r < kTileRows; ++r, f += 5 * tableFloats)
    w.rows[r] = {f, f + tableFloats, f + 2 * tableFloats, reinterpret_cast<int32_t*>(f + 3 * tableFloats), f + 4 * tableFloats};
  w.decoded = reinterpret_cast<int16_t*>(s + tableBytes);
  w.values = reinterpret_cast<float*>(s + tableBytes + decodedBytes);
  w.tables = reinterpret_cast<__m256i*>(s + tableBytes + decodedBytes + valueBytes);
  return w;
}

// base[g] = 2^e[g] for the row's groups, zero past them (the padding group and the rest of its vector).
void preparedBases(const int8_t* e, int groups, float* base) {
  const __m256i bias = _mm256_set1_epi32(127);
  int g = 0;
  for (; g + 8 <= groups; g += 8) {
    const __m256i v = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(e + g)));
    _mm256_storeu_ps(base + g, _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(v, bias), 23)));
  }
  for (; g < groups; ++g) base[g] = pow2(e[g]);
  for (; g < (groups + 1 + 7) / 8 * 8; ++g) base[g] = 0.0f;
}

// unit[g] = base[g] times the unit of activation plane 0, for the groups and the padding group.
W4A8_ALWAYS_INLINE void fillUnits(const Problem& pr, int groups, const WeightRow& t) {
  const float* xUnit = pr.x.units(0, 0);
  for (int g = 0; g < groups + 1; g += 8)  // (the arrays are padded to whole vectors past the padding group)
    _mm256_storeu_ps(t.unit + g, _mm256_mul_ps(_mm256_loadu_ps(t.base + g), _mm256_loadu_ps(xUnit + g)));
}

template <int G>
void fusedRows(const Problem& pr, int nBegin, int nEnd) {
  const Int4WeightsView& w = pr.a.w;
  WeightScratch s = weightScratch(w.groups(), pr.x.Kp, w.cols);
  const bool genericX = pr.x.generic[0];
  const int groups = w.groups();
  const Int4Tables* prepared = w.tables && w.tables->describes(w) ? w.tables : nullptr;
  for (int n = nBegin; n < nEnd; ++n) {
    if (n + 1 < nEnd) prefetchRowGroups(w, prepared, n + 1, 1);  // (the codes are prefetched in fusedRow)
    const uint8_t* rowCodes = w.codes + (size_t)n * (w.cols / 2);
    if (prepared) {  // the row's bases from the prepared form; tables are read from it block by block
      if (genericX || prepared->rowGeneric[n]) {
        bool filled = false;
        storeResult(pr, 0, n, genericOutput(pr, 0, n, s.values, filled));
        continue;
      }
      preparedBases(prepared->baseRow(n), groups, s.rows[0].base);
      fillUnits(pr, groups, s.rows[0]);
      const PreparedTables<G> tables{prepared->entries.data(), prepared->indexRow(n), groups};
      storeResult(pr, 0, n, fusedRow<G>(pr, s.rows[0], rowCodes, tables));
      continue;
    }
    const RowKind kind = genericX ? RowKind{true, false, false} : prepareWeightRow(w, n, pr.wf, s.rows[0]);
    bool filled = false;
    if (kind.generic) {
      storeResult(pr, 0, n, genericOutput(pr, 0, n, s.values, filled));
      continue;
    }
    fillUnits(pr, groups, s.rows[0]);
    buildRowTables<G>(kind, s.rows[0], groups, pr.tc, s.tables);
    storeResult(pr, 0, n, fusedRow<G>(pr, s.rows[0], rowCodes, BuiltTables<G>{s.tables}));
  }
}

// 2 to kFusedMaxTokens tokens: one weight row at a time, decoded once for all tokens (fusedOutputs). (fusedRows
// is the one-token version, kept apart so that its tuned loop stays as it was.)
template <int G>
void fewTokenRows(const Problem& pr, int M, int nBegin, int nEnd) {
  const Int4WeightsView& w = pr.a.w;
  WeightScratch s = weightScratch(w.groups(), pr.x.Kp, w.cols);
  bool genericX = true;
  for (int m = 0; m < M; ++m) genericX &= pr.x.generic[m] != 0;
  const int groups = w.groups();
  const Int4Tables* prepared = w.tables && w.tables->describes(w) ? w.tables : nullptr;
  float out[kFusedMaxTokens];
  for (int n = nBegin; n < nEnd; ++n) {
    if (n + 1 < nEnd) prefetchRowGroups(w, prepared, n + 1, 1);  // (the codes are prefetched in fusedTokens)
    const uint8_t* rowCodes = w.codes + (size_t)n * (w.cols / 2);
    bool genericRow;
    if (prepared) {  // the row's bases from the prepared form; tables are read from it block by block
      genericRow = genericX || prepared->rowGeneric[n];
      if (!genericRow) {
        preparedBases(prepared->baseRow(n), groups, s.rows[0].base);
        fusedOutputs<G>(pr, M, s.rows[0], rowCodes, PreparedTables<G>{prepared->entries.data(), prepared->indexRow(n), groups}, out);
      }
    } else {
      const RowKind kind = genericX ? RowKind{true, false, false} : prepareWeightRow(w, n, pr.wf, s.rows[0]);
      genericRow = kind.generic;
      if (!genericRow) {
        buildRowTables<G>(kind, s.rows[0], groups, pr.tc, s.tables);
        fusedOutputs<G>(pr, M, s.rows[0], rowCodes, BuiltTables<G>{s.tables}, out);
      }
    }
    bool filled = false;
    for (int m = 0; m < M; ++m)
      storeResult(pr, m, n, genericRow || pr.x.generic[m] ? genericOutput(pr, m, n, s.values, filled) : out[m]);
  }
}

// Decodes row r of a tile into decoded[c][r][16] for every chunk c, with the row's block tables (BuiltTables
// after buildRowTables, or PreparedTables); a generic row decodes to zeros.
template <int G, class Tables>
void decodeTileRow(const Problem& pr, bool generic, const uint8_t* rowCodes, int r, const Tables tables,
                   int16_t* decoded) {
  constexpr int kSubBlocks = std::max(G, kSubBlockK) / kSubBlockK;
  const Activations& x = pr.x;
  for (int b = 0; b < x.blocks; ++b) {
    __m256i low = _mm256_setzero_si256(), high = low;
    if (!generic) tables.block(b, low, high);
    for (int sb = 0; sb < kSubBlocks; ++sb) {
      const int j = b * kSubBlocks + sb;
      int16_t* out = decoded + ((size_t)j * 4 * kTileRows + r) * kChunkK;
      prefetchWeights(rowCodes + (size_t)j * 32 + kPrefetchBytes);
      decodeSubBlock(loadCodes<G>(rowCodes, j, x.K), low, high, [&](int v, __m256i words) {
        _mm256_store_si256((__m256i*)(out + (size_t)v * kTileRows * kChunkK), words);
      });
    }
  }
}

// The int32 lane sums of tokens x MR rows (xr[m], rows of one plane at the block's first k) times NR
// decoded weight rows (wb: the block's [chunk][kTileRows][16]), over one block.
template <int G, int MR, int NR>
W4A8_ALWAYS_INLINE void tileBlockSums(const int16_t* const* xr, const int16_t* wb, __m256i (&sums)[MR][NR]) {
  constexpr int kChunks = std::max(G, kSubBlockK) / kChunkK;
  // Every loop is unrolled, so that the sums stay in registers.
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) sums[m][r] = _mm256_setzero_si256();
#pragma GCC unroll 8
  for (int c = 0; c < kChunks; ++c) {
    __m256i xv[MR];
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) xv[m] = _mm256_load_si256((const __m256i*)(xr[m] + c * kChunkK));
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) {
      __m256i wv = _mm256_load_si256((const __m256i*)(wb + (c * kTileRows + r) * kChunkK));
      // One load per weight vector: else GCC folds it into every token's vpmaddwd, and the loads (MR per
      // weight vector) become the limit.
      __asm__("" : "+x"(wv));
#pragma GCC unroll 8
      for (int m = 0; m < MR; ++m) {
        sums[m][r] = _mm256_add_epi32(sums[m][r], _mm256_madd_epi16(xv[m], wv));
        // Keeps GCC from hoisting all products ahead of their adds, which needs more registers than AVX2
        // has and spills the sums (measured: 40 against 28 flop/cycle).
        __asm__("" : "+x"(sums[m][r]));
      }
    }
  }
}

// acc[m][r] (8 floats, rows kTileRows apart) += sums[m][r] * unit(m, r).
template <int MR, int NR, class Unit>
W4A8_ALWAYS_INLINE void addTileSums(const __m256i (&sums)[MR][NR], float* acc, Unit unit) {
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 8
    for (int r = 0; r < NR; ++r) {
      float* a = acc + ((size_t)m * kTileRows + r) * 8;
      // An opaque address: otherwise GCC keeps all MR * NR accumulators in registers across blocks and
      // spills the sums instead.
      __asm__("" : "+r"(a));
      _mm256_store_ps(a, _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[m][r]), unit(m, r), _mm256_load_ps(a)));
    }
}

// Tokens [m0, m0 + MR) x tile rows [0, NR), plane 0 of blocks [b0, b1).
template <int G, int MR, int NR>
__attribute__((noinline)) void microKernel(const Problem& pr, int m0, int b0, int b1, const WeightScratch& s,
                                           float* acc) {
  constexpr int kBlockK = std::max(G, kSubBlockK), kChunks = kBlockK / kChunkK;
  const Activations& x = pr.x;
  const int16_t* xr[MR];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) xr[m] = x.row(m0 + m, 0) + (size_t)b0 * kBlockK;
  // Units of plane 0: G >= 64, unit[m][r][b - b0] = base_w(r, b) * unit_x(m, b); G = 32, units[m][r][b - b0]
  // = the 8 lanes' units of block b, [group 2b x 4 | group 2b + 1 x 4].
  alignas(32) float unit[MR][NR][kPanelBlocks + 8];
  alignas(32) float units[G >= kSubBlockK ? 1 : MR][G >= kSubBlockK ? 1 : NR][G >= kSubBlockK ? 1 : kPanelBlocks + 4][8];
  for (int m = 0; m < MR; ++m)
    for (int r = 0; r < NR; ++r) {
      const float* wBase = s.rows[r].base;
      const float* xUnit = x.units(m0 + m, 0);
      if constexpr (G >= kSubBlockK) {
        for (int b = b0; b < b1; b += 8)
          _mm256_store_ps(&unit[m][r][b - b0], _mm256_mul_ps(_mm256_loadu_ps(wBase + b), _mm256_loadu_ps(xUnit + b)));
      } else {
        for (int b = b0; b < b1; b += 4) {  // 8 groups = 4 blocks at a time
          const __m256 u = _mm256_mul_ps(_mm256_loadu_ps(wBase + 2 * b), _mm256_loadu_ps(xUnit + 2 * b));
          for (int i = 0; i < 4; ++i) {
            const __m256i lanes = _mm256_setr_epi32(2 * i, 2 * i, 2 * i, 2 * i, 2 * i + 1, 2 * i + 1, 2 * i + 1, 2 * i + 1);
            _mm256_store_ps(units[m][r][b - b0 + i], _mm256_permutevar8x32_ps(u, lanes));
          }
        }
      }
    }
  const int16_t* wb = s.decoded + (size_t)b0 * kChunks * kTileRows * kChunkK;
  for (int b = b0; b < b1; ++b) {
    __m256i sums[MR][NR];
    tileBlockSums<G, MR, NR>(xr, wb, sums);
    addTileSums<MR, NR>(sums, acc, [&](int m, int r) {
      if constexpr (G >= kSubBlockK) return _mm256_broadcast_ss(&unit[m][r][b - b0]);
      else return _mm256_load_ps(units[m][r][b - b0]);
    });
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) xr[m] += kBlockK;
    wb += kChunks * kTileRows * kChunkK;
  }
}

// Activation planes 1 and 2 of tokens [m0, m0 + MR) (rare), after plane 0 of every block: the blocks in any
// of the rows' lists, ascending (a row whose block has fewer planes adds exact zeros).
template <int G, int MR, int NR>
__attribute__((noinline)) void microKernelExtraPlanes(const Problem& pr, int m0, const WeightScratch& s, float* acc) {
  constexpr int kBlockK = std::max(G, kSubBlockK), kChunks = kBlockK / kChunkK;
  const Activations& x = pr.x;
  for (int p = 1; p < x.planeCount; ++p) {
    int next[MR];
    for (int m = 0; m < MR; ++m) next[m] = x.extra[m0 + m];
    for (;;) {
      int b = x.blocks;
      for (int m = 0; m < MR; ++m)
        if (next[m] < x.extra[m0 + m + 1]) b = std::min(b, (int)x.extraBlocks[next[m]]);
      if (b == x.blocks) break;
      int planes = 1;
      for (int m = 0; m < MR; ++m) {
        if (next[m] < x.extra[m0 + m + 1] && x.extraBlocks[next[m]] == b) ++next[m];
        planes = std::max(planes, x.planesOf(m0 + m, b));
      }
      if (planes <= p) continue;
      const int16_t* xr[MR];
      for (int m = 0; m < MR; ++m) xr[m] = x.row(m0 + m, p) + (size_t)b * kBlockK;
      __m256i sums[MR][NR];
      tileBlockSums<G, MR, NR>(xr, s.decoded + (size_t)b * kChunks * kTileRows * kChunkK, sums);
      addTileSums<MR, NR>(sums, acc, [&](int m, int r) { return blockUnit<G>(s.rows[r], x, m0 + m, b, p); });
    }
  }
}

// microKernel (b1 > b0) or microKernelExtraPlanes (b1 == b0) for a tile of mr tokens and nr rows.
template <int G, int NR, int MR = 1>
void microKernelFor(int mr, const Problem& pr, int m0, int b0, int b1, const WeightScratch& s, float* acc) {
  if constexpr (MR <= kTileTokens) {
    if (mr != MR) return microKernelFor<G, NR, MR + 1>(mr, pr, m0, b0, b1, s, acc);
    if (b1 > b0) microKernel<G, MR, NR>(pr, m0, b0, b1, s, acc);
    else microKernelExtraPlanes<G, MR, NR>(pr, m0, s, acc);
  }
}

template <int G, int NR = 1>
void microKernelForRows(int nr, int mr, const Problem& pr, int m0, int b0, int b1, const WeightScratch& s, float* acc) {
  if constexpr (NR <= kTileRows) {
    if (nr == NR) return microKernelFor<G, NR>(mr, pr, m0, b0, b1, s, acc);
    microKernelForRows<G, NR + 1>(nr, mr, pr, m0, b0, b1, s, acc);
  }
}

// M >= 2: kTileRows weight rows at a time are decoded into s.decoded, then multiplied by all M tokens,
// kPanelK k at a time (the decoded panel stays in L1 while the tokens stream through), kTileTokens tokens
// at a time; the FP32 lane sums of every (token, row) live in a per-thread [M][kTileRows][8] buffer.
// Where the weights have prepared tables (kernels/int4_tables.h), rows decode from them instead of building
// their tables on every call (measured, 4096 x 11008, G = 128, 2 cores: M = 2 3.7 against 4.4 ms).
template <int G>
void tileRows(const Problem& pr, int M, int nBegin, int nEnd) {
  const Int4WeightsView& w = pr.a.w;
  const int blocks = pr.x.blocks;
  WeightScratch s = weightScratch(w.groups(), pr.x.Kp, w.cols);
  float* acc = static_cast<float*>(fast::threadScratch(fast::kScratchAccumulators, (size_t)M * kTileRows * 8 * 4));
  const int groups = w.groups();
  const Int4Tables* prepared = w.tables && w.tables->describes(w) ? w.tables : nullptr;
  for (int n0 = nBegin; n0 < nEnd; n0 += kTileRows) {
    const int nr = std::min(kTileRows, nEnd - n0);
    bool ok[kTileRows];
    for (int r = 0; r < nr; ++r) {
      const int n = n0 + r;
      const uint8_t* rowCodes = w.codes + (size_t)n * (w.cols / 2);
      if (prepared) {  // the bases and tables from the prepared form (the same W and bases as built ones)
        ok[r] = !prepared->rowGeneric[n];
        if (ok[r]) preparedBases(prepared->baseRow(n), groups, s.rows[r].base);
        decodeTileRow<G>(pr, !ok[r], rowCodes, r, PreparedTables<G>{prepared->entries.data(), prepared->indexRow(n), groups},
                         s.decoded);
        continue;
      }
      const RowKind kind = prepareWeightRow(w, n, pr.wf, s.rows[r]);
      ok[r] = !kind.generic;
      if (ok[r]) buildRowTables<G>(kind, s.rows[r], groups, pr.tc, s.tables);
      decodeTileRow<G>(pr, kind.generic, rowCodes, r, BuiltTables<G>{s.tables}, s.decoded);
    }
    std::memset(acc, 0, (size_t)M * kTileRows * 8 * 4);
    for (int b0 = 0; b0 < blocks; b0 += kPanelBlocks) {
      const int b1 = std::min(blocks, b0 + kPanelBlocks);
      for (int m0 = 0; m0 < M; m0 += kTileTokens)
        microKernelForRows<G>(nr, std::min(kTileTokens, M - m0), pr, m0, b0, b1, s, acc + (size_t)m0 * kTileRows * 8);
    }
    if (pr.x.planeCount > 1)  // then planes 1 and 2, in the order of the fused path
      for (int m0 = 0; m0 < M; m0 += kTileTokens)
        microKernelForRows<G>(nr, std::min(kTileTokens, M - m0), pr, m0, 0, 0, s, acc + (size_t)m0 * kTileRows * 8);
    for (int r = 0; r < nr; ++r) {
      bool filled = false;
      for (int m = 0; m < M; ++m) {
        const bool generic = !ok[r] || pr.x.generic[m];
        const float sum = generic ? genericOutput(pr, m, n0 + r, s.values, filled)
                                  : horizontalSum(_mm256_load_ps(acc + ((size_t)m * kTileRows + r) * 8));
        storeResult(pr, m, n0 + r, sum);
      }
    }
  }
}

template <int G>
void gemmRows(const Problem& pr, int M, int nBegin, int nEnd) {
  if (M == 1) fusedRows<G>(pr, nBegin, nEnd);
  else if (M <= kFusedMaxTokens) fewTokenRows<G>(pr, M, nBegin, nEnd);
  else tileRows<G>(pr, M, nBegin, nEnd);
}

}  // namespace

void gemmW4A8(const W4A8GemmArgs& a, int nBegin, int nEnd) {
  const int K = a.w.cols, G = a.w.groupSize;
  const FormatInfo wf = formatInfo(a.w.format);
  for (int m0 = 0; m0 < a.M && nBegin < nEnd; m0 += kRowsPerPass) {
    const int rows = std::min(kRowsPerPass, a.M - m0);
    const Activations& x = preparedActivations(a.x8 + (size_t)m0 * K, rows, K, G, a.actFormat);
    W4A8GemmArgs pass = a;
    pass.y = {a.y.f32 ? a.y.f32 + (size_t)m0 * a.y.ldy : nullptr, a.y.bf16 ? a.y.bf16 + (size_t)m0 * a.y.ldy : nullptr,
              a.y.ldy};
    const Problem pr{pass, x, m0, wf, TableConstants(wf)};
    switch (G) {
      case 128: gemmRows<128>(pr, rows, nBegin, nEnd); break;
      case 64: gemmRows<64>(pr, rows, nBegin, nEnd); break;
      default: gemmRows<32>(pr, rows, nBegin, nEnd); break;
    }
  }
}

}  // namespace w4a8::avx2
