// AVX-512 W4A8 GEMM on exact int16 dot products with AVX512-VNNI (vpdpwssd):
// Y[m, n] = s_x[m] s_c[n] sum_k x8[m, k] w8[n, k]. The method of the AVX2 kernel (kernels/avx2/w4a8_int16.cpp
// on helper/kernels), widened to 512 bits, with vpdpwssd doing multiply and add of 32 int16 pairs at once.
//
// Why integers: the vdpbf16ps path (mixed_gemm.h) must build a 16-entry FP8 table per group with FP32
// rounding and look every weight up with vpermw before its vdpbf16ps; at M = 1 that is compute-bound at
// 0.4-0.46 of the read bandwidth of the device's 16-core Xeon (bench/results/xeon-amx.md). Here the weights
// of a group are small integers times one power of two, decoded by one vpermw per 32 nibbles (G = 128) or two
// in-lane byte shuffles per 64 (G = 32, 64), and one vpdpwssd does 32 multiply-adds straight into int32
// lanes. Measured on the device's Xeon (bench/results/xeon-vnni.md): 1.19x the vdpbf16ps path at M = 1.
//
// Exactness (DESIGN.md §1: products exact, FP32 accumulation). Both operands are exact integers in units
// that are powers of two, so every group sum is exact and only its FP32 accumulation rounds: the result is
// within the FP32 summation-order tolerance (it rounds less often than the reference).
// Weights, per group g of row n (scale s, zero z, weight format with p mantissa bits):
//   w8[q] = fp8(fl32(s (q - z))). Let base = 2^e with e = clamp(exponent(|s|) - p, exponent of the format's
//   quantum, exponent of the ulp of the largest finite value). Every nonzero |w8[q]| >= fp8(|s|) has an ulp
//   that is a multiple of base, so w8[q] = base * W[q] with W an integer, |W| <= 240 (|s| / base < 2^(p+1),
//   |q - z| <= 15). W is computed exactly without fp8Encode: t = fl32((|s| / base) |q - z|) equals
//   fl32(|s| |q - z|) / base (a power-of-two scaling), and in base units the FP8 grid near t has spacing
//   max(1, 2^(exponent(t) - p)); adding and subtracting C = max(2^23, 2^(exponent(t) + 23 - p)) rounds t to
//   it, ties to even, exactly as fp8Encode (rows without subnormal scales use Veltkamp's split to p + 1 bits,
//   which is the same rounding there); saturation is min(t, maxFinite / base) first. 2^23 + 2^16 + W leaves
//   the int16 of W in the low 16 bits of the FP32 bits. G = 128: vpermw gathers them into a 32-word table
//   (W twice), which vpermw then indexes with the nibbles directly. G = 32 and 64: vpermt2b gathers the low
//   and high bytes of 4 groups' tables into one vpshufb table per byte (one group per 128-bit lane).
//   Rows with a non-finite group scale or a zero point above 15 take the generic FP32 path.
// Activations, per group (FP8 value v = sig 2^(E - bias - p), E >= 1, sig < 2^(p+1)):
//   plane 0 counts in units 2^(E0 - bias - p), E0 = E_max - (14 - p): the largest value is < 2^15 units,
//   every value with E >= E0 is an exact integer number of units. Plane j counts units 2^-15j of plane 0's
//   and holds the bits of sig 2^(E - E0 + 15 j) below 2^15 (variable word shifts, vpsllvw/vpsrlvw): the
//   planes add up to v exactly; E4M3 needs at most 2 planes, E5M2 3, most blocks one. Plane sums are exact in
//   int32: 8 products per lane and block, |W x| < 240 * 2^15.
//   Rows with a NaN or inf activation take the generic FP32 path (NaN and inf propagate like the reference).
// Accumulation: per 128-k block, token and plane, the 16 int32 lanes (one group per 4 lanes for G = 32, 8 for
// G = 64, all 16 for G = 128) are converted to FP32 and FMA-added with the unit base_w * base_x (a power of
// two, so exact: units are >= 2^-90 for every format and plane, far from FP32 underflow) into 16 FP32 lanes, in block order, planes of a block in order; the lanes are summed at the
// end by a fixed tree. Every M takes this same code (tokens are processed kMaxTokens at a time on the same
// decoded weights), so the result depends neither on M, nor on the N split, nor on the thread count.
//
// Operand order within a 128-k block (64 code bytes -> 4 int16 vectors; activations are stored in the same
// order, so vpdpwssd pairs the right operands, and a pair never crosses a group boundary):
//   G = 128: the codes read as 32 words hold k = 4 i + j in bits 4 j .. 4 j + 3 of word i; vector j, word i
//            is k = 4 i + j (one vpermw per 32 weights; two shifts and one byte shift make the indices).
//   G = 32, 64: vector v, 128-bit lane L, word i holds k = 32 L + 16 (v % 2) + 2 i + v / 2 (even and odd
//            nibbles, vpshufb on the low and high table bytes, vpunpckl/hbw); a lane covers 32 consecutive k.
// Tokens: up to 8 share each decoded block (accumulators in registers); above 8, 4 weight rows and 8-block
// panels at a time, so that the activations of a panel are read from L1 for the 4 rows.
#include <algorithm>
#include <cstring>

#include "kernels/avx512/simd.h"
#include "kernels/backends.h"
#include "kernels/int16_common.h"
#include "kernels/int4_tables.h"

namespace w4a8::avx512vnni {
namespace {

using int16::FormatInfo, int16::formatInfo, int16::pow2, int16::groupMagnitudes;
using avx512::prefetchWeights;

constexpr int kBlockK = 128;       // k per 64 code bytes
constexpr int kChunkK = 32;        // k per int16 vector
constexpr int kMaxPlanes = 3;      // activation planes (e5m2 needs 3 at most, e4m3 2)
constexpr int kPlaneBits = 15;     // plane j + 1 counts in units 2^-15 of plane j's
constexpr int kMaxTokens = 8;      // tokens per pass over a row's blocks (their accumulators stay in registers)
constexpr int kRowsPerPass = 64;   // rows of X prepared at once (bounds the per-thread buffers)
// Software prefetch distance in the code stream (rows are contiguous, so it runs into the next row).
// 4096 bytes measured 3-5 % faster than 2048 at M = 1 on the 2-core Xeon (A/B runs on the same weights,
// 4096x11008, 2 threads, 2026-12-01), and the same at M = 4.
constexpr int kPrefetchBytes = 4096;

// Per-thread scratch: the VNNI slots of fast::threadScratch (the other slots hold other kernels' data).
enum Slot { kSlotInfo, kSlotPlanes, kSlotCopy, kSlotWeights };
W4A8_ALWAYS_INLINE void* scratch(Slot slot, size_t bytes, bool* grown = nullptr) {
  constexpr fast::ScratchSlot kSlots[] = {fast::kScratchVnniInfo, fast::kScratchVnniPlanes, fast::kScratchVnniCopy,
                                          fast::kScratchVnniWeights};
  return fast::threadScratch(kSlots[slot], bytes, grown);
}

// ---- formats ------------------------------------------------------------------------------------------

// Per zero point z and sign of s (index z | 16 * (s < 0)): |q - z| and the sign of (q - z) * s, q = 0..15.
struct GroupTable {
  float absQMinusZ[16];
  float sign[16];
};
constexpr int kGroupTableShift = 7;  // sizeof(GroupTable) == 1 << 7
struct GroupTables {
  alignas(64) GroupTable t[32];
  constexpr GroupTables() : t() {
    for (int i = 0; i < 32; ++i) {
      const int z = i & 15;
      for (int q = 0; q < 16; ++q) {
        t[i].absQMinusZ[q] = (float)(q > z ? q - z : z - q);
        t[i].sign[q] = (q < z) == (i < 16) ? -1.0f : 1.0f;
      }
    }
  }
};
static_assert(sizeof(GroupTable) == 1 << kGroupTableShift, "GroupTable size");
constexpr GroupTables kGroupTables{};

// Per-group arrays hold groupsPadded entries: whole vectors, and 16 past the last group (zero), so that
// 16-wide reads at any group index stay inside.
int paddedGroups(int groups) { return (groups + 15) / 16 * 16 + 16; }

// ---- activations ---------------------------------------------------------------------------------------

// Rows [0, M) of X in the kernel's form (blocks of 128 k, Kp = blocks * 128).
//   planes      [M][planeCount][Kp] int16 in kernel order; plane j of block b is written when the block of
//               that row needs more than j planes, and read only then
//   blockPlanes [M][blocks]  planes of block b (1..3)
//   unit        [M][stride]  value of one plane-0 unit of group g (padding: 0)
//   e0          [M][stride]  E0 of group g (padding: 0)
//   generic     [M]          1 when the row has a NaN or inf activation (the FP32 path then)
struct Activations {
  int M = 0, K = 0, Kp = 0, G = 0, groups = 0, blocks = 0, planeCount = 1, stride = 16;
  int16_t* planes = nullptr;
  uint8_t* blockPlanes = nullptr;
  float* unit = nullptr;
  int16_t* e0 = nullptr;
  uint8_t* generic = nullptr;
  uint8_t* multiPlane = nullptr;  // [M] 1 when some block of the row needs more than one plane
  const int16_t* row(int m, int p) const { return planes + ((size_t)m * planeCount + p) * Kp; }
  const float* units(int m) const { return unit + (size_t)m * stride; }
  const uint8_t* planesOf(int m) const { return blockPlanes + (size_t)m * blocks; }
};

// Byte indices that put 128 natural-order codes (two zmm) into kernel order. G = 32 and 64 (vpshufb decode):
// position P = 32 v + 8 L + i takes k = 32 L + 16 (v % 2) + 2 i + v / 2. G = 128 (vpermw decode, see
// decodeBlock128): position P = 32 j + i takes k = 4 i + j.
template <int G>
struct KernelOrder {
  alignas(64) uint8_t index[128];
  constexpr KernelOrder() : index() {
    for (int P = 0; P < 128; ++P) {
      const int v = P / 32, L = (P % 32) / 8, i = P % 8;
      index[P] = G == 128 ? (uint8_t)(4 * (P % 32) + P / 32) : (uint8_t)(32 * L + 16 * (v % 2) + 2 * i + v / 2);
    }
  }
};
template <int G>
constexpr KernelOrder<G> kKernelOrder{};

// Word w of a block's vectors lies in group (block's first group) + groupOfWord(w): word w is in lane w / 8.
template <int G>
W4A8_ALWAYS_INLINE __m512i wordGroupIndex() {
  alignas(64) int16_t idx[32];
  for (int w = 0; w < 32; ++w) idx[w] = (int16_t)(w / 8 * 32 / G);
  return _mm512_load_si512(idx);
}

// Rows of x8 ([M][K] FP8 codes) prepared for weights of group size G.
template <int G>
void prepareActivations(const uint8_t* x8, int M, int K, Fp8Format format, Activations& a) {
  const FormatInfo f = formatInfo(format);
  const int p = f.mantissaBits;
  a.M = M, a.K = K, a.G = G, a.groups = K / G;
  a.blocks = (K + kBlockK - 1) / kBlockK;
  a.Kp = a.blocks * kBlockK;
  a.stride = paddedGroups(a.groups);
  const size_t unitBytes = (size_t)M * a.stride * 4, e0Bytes = (size_t)M * a.stride * 2;
  const size_t infoBytes = unitBytes + e0Bytes + ((size_t)M * a.blocks + 2 * M + 63) / 64 * 64;
  char* info = static_cast<char*>(scratch(kSlotInfo, infoBytes));
  a.unit = reinterpret_cast<float*>(info);
  a.e0 = reinterpret_cast<int16_t*>(info + unitBytes);
  a.blockPlanes = reinterpret_cast<uint8_t*>(info + unitBytes + e0Bytes);
  a.generic = a.blockPlanes + (size_t)M * a.blocks;
  a.multiPlane = a.generic + M;

  // Pass 1: per group, E0 and the planes its smallest nonzero value needs; rows with NaN or inf are generic.
  const int span = 14 - p;  // E_max - E0: the largest value is < 2^15 plane-0 units
  a.planeCount = 1;
  for (int m = 0; m < M; ++m) {
    const uint8_t* row = x8 + (size_t)m * K;
    uint8_t* bp = a.blockPlanes + (size_t)m * a.blocks;
    float* unit = a.unit + (size_t)m * a.stride;
    int16_t* e0s = a.e0 + (size_t)m * a.stride;
    std::fill(bp, bp + a.blocks, 1);
    bool generic = false;
    for (int g = 0; g < a.groups; ++g) {
      int largest, smallest;
      groupMagnitudes(row + (size_t)g * G, G, largest, smallest);
      generic |= largest > f.maxFiniteCode;
      const int eMax = std::max(largest >> p, 1), eMin = std::max(smallest >> p, 1);
      const int e0 = eMax - span;
      const int planes = smallest == 255 || eMin >= e0 ? 1 : eMin >= e0 - kPlaneBits ? 2 : 3;
      unit[g] = pow2(e0 - f.bias - p);
      e0s[g] = (int16_t)e0;
      uint8_t& b = bp[g * G / kBlockK];
      b = (uint8_t)std::max<int>(b, planes);
    }
    std::fill(unit + a.groups, unit + a.stride, 0.0f);
    std::fill(e0s + a.groups, e0s + a.stride, (int16_t)0);
    a.generic[m] = generic;
    if (generic) std::fill(bp, bp + a.blocks, 1);
    int rowPlanes = 1;
    for (int b = 0; b < a.blocks; ++b) rowPlanes = std::max<int>(rowPlanes, bp[b]);
    a.multiPlane[m] = rowPlanes > 1;
    a.planeCount = std::max(a.planeCount, rowPlanes);
  }

  // Pass 2: the planes, block by block, in kernel order.
  const size_t planeBytes = (size_t)M * a.planeCount * a.Kp * 2;
  a.planes = static_cast<int16_t*>(scratch(kSlotPlanes, planeBytes));
  const __m512i orderLo = _mm512_load_si512(kKernelOrder<G>.index), orderHi = _mm512_load_si512(kKernelOrder<G>.index + 64);
  const __m512i groupIndex = wordGroupIndex<G>();
  const __m512i mag7 = _mm512_set1_epi16(0x7F), mantissaMask = _mm512_set1_epi16((1 << p) - 1);
  const __m512i implicit = _mm512_set1_epi16(1 << p), one = _mm512_set1_epi16(1), zero = _mm512_setzero_si512();
  const __m512i signBit = _mm512_set1_epi16(0x80), low15 = _mm512_set1_epi16(0x7FFF);
  for (int m = 0; m < M; ++m) {
    const uint8_t* row = x8 + (size_t)m * K;
    if (a.generic[m]) {
      std::memset(a.planes + (size_t)m * a.planeCount * a.Kp, 0, (size_t)a.planeCount * a.Kp * 2);
      continue;
    }
    const uint8_t* bp = a.planesOf(m);
    const int16_t* e0s = a.e0 + (size_t)m * a.stride;
    for (int b = 0; b < a.blocks; ++b) {
      const int k0 = b * kBlockK, avail = K - k0;
      const __m512i A = avail >= 64 ? _mm512_loadu_si512(row + k0)
                                    : _mm512_maskz_loadu_epi8(_cvtu64_mask64((1ull << avail) - 1), row + k0);
      const __m512i B = avail >= 128  ? _mm512_loadu_si512(row + k0 + 64)
                        : avail <= 64 ? zero
                                      : _mm512_maskz_loadu_epi8(_cvtu64_mask64((1ull << (avail - 64)) - 1), row + k0 + 64);
      const __m512i P0 = _mm512_permutex2var_epi8(A, orderLo, B), P1 = _mm512_permutex2var_epi8(A, orderHi, B);
      const __m512i e0v = _mm512_permutexvar_epi16(groupIndex, _mm512_castsi128_si512(_mm_loadl_epi64((const __m128i*)(e0s + k0 / G))));
      const int planes = bp[b];
      for (int v = 0; v < 4; ++v) {
        const __m512i src = v < 2 ? P0 : P1;
        const __m512i c = _mm512_cvtepu8_epi16(v & 1 ? _mm512_extracti64x4_epi64(src, 1) : _mm512_castsi512_si256(src));
        const __m512i mag = _mm512_and_si512(c, mag7);
        const __m512i E = _mm512_srli_epi16(mag, p);
        const __m512i mt = _mm512_and_si512(mag, mantissaMask);
        const __mmask32 normal = _mm512_test_epi16_mask(E, E);
        const __m512i sigv = _mm512_or_si512(mt, _mm512_maskz_mov_epi16(normal, implicit));
        const __m512i sh = _mm512_sub_epi16(_mm512_max_epi16(E, one), e0v);
        const __mmask32 negative = _mm512_test_epi16_mask(c, signBit);
        for (int j = 0; j < planes; ++j) {
          const __m512i shift = _mm512_add_epi16(sh, _mm512_set1_epi16((int16_t)(kPlaneBits * j)));
          const __m512i left = _mm512_sllv_epi16(sigv, _mm512_max_epi16(shift, zero));
          __m512i value = _mm512_and_si512(_mm512_srlv_epi16(left, _mm512_max_epi16(_mm512_sub_epi16(zero, shift), zero)), low15);
          value = _mm512_mask_sub_epi16(value, negative, zero, value);
          _mm512_store_si512(a.planes + ((size_t)m * a.planeCount + j) * a.Kp + k0 + kChunkK * v, value);
        }
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

template <int G>
const Activations& preparedActivations(const uint8_t* x8, int M, int K, Fp8Format format) {
  PreparedCache& c = tlsPrepared;
  const size_t bytes = (size_t)M * K;
  bool grown;
  uint8_t* copy = static_cast<uint8_t*>(scratch(kSlotCopy, bytes, &grown));
  if (!grown && c.valid && c.M == M && c.K == K && c.G == G && c.format == format && std::memcmp(copy, x8, bytes) == 0)
    return c.a;
  c.valid = false;
  prepareActivations<G>(x8, M, K, format, c.a);
  std::memcpy(copy, x8, bytes);
  c.M = M, c.K = K, c.G = G, c.format = format, c.valid = true;
  return c.a;
}

// ---- weights ---------------------------------------------------------------------------------------------

// Per group g of one weight row (paddedGroups entries, zero past the last group):
//   scaled[g] = |s| / base, limit[g] = maxFinite / base, base[g], table[g] = byte offset of kGroupTables.t[z | 16 (s < 0)]
struct WeightRow {
  float* scaled;
  float* limit;
  float* base;
  int32_t* table;
};

// How a row's tables are built. generic: a non-finite scale or a zero point above 15 (the FP32 path).
// subnormal: some 0 < |s| < the format's smallest normal (rounding with a spacing floor of one unit; else
// Veltkamp's split to p + 1 bits, which is fp8's rounding on every t = fl32(s' |q - z|), s' in [2^p, 2^(p+1))).
// saturating: some group's largest |s (q - z)| (in base units, as the table computes it) exceeds the largest finite value.
struct RowKind {
  bool generic, subnormal, saturating;
};

// Inlined: a call per row (vzeroupper, spills, the packed return value) cost as much as the work at K = 2048.
W4A8_ALWAYS_INLINE RowKind prepareWeightRow(const Int4WeightsView& w, int n, const FormatInfo& f, const WeightRow& t) {
  const int groups = w.groups(), padded = paddedGroups(groups);
  const float* scales = w.groupScales + (size_t)n * groups;
  const uint8_t* zeros = w.zeros + (size_t)n * groups;
  const __m512i absMask = _mm512_set1_epi32(0x7FFFFFFF), largestFinite = _mm512_set1_epi32(0x7F7FFFFF);
  const __m512i lowest = _mm512_set1_epi32(f.quantumExp), highest = _mm512_set1_epi32(f.ulpMaxExp);
  const __m512i expOffset = _mm512_set1_epi32(127 + f.mantissaBits), bias = _mm512_set1_epi32(127);
  const __m512i fifteen = _mm512_set1_epi32(15), zero = _mm512_setzero_si512();
  const __m512 maxFinite = _mm512_set1_ps(f.maxFinite);
  const __m512i minNormal = _mm512_set1_epi32((f.quantumExp + f.mantissaBits + 127) << 23);
  __mmask16 bad = 0, saturating = 0, subnormal = 0;
  const int liveEnd = (groups + 15) / 16 * 16;  // vectors holding a group; past them, padding only
  for (int g = 0; g < liveEnd; g += 16) {
    const int left = groups - g;
    const __mmask16 live = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1);
    const __m512i s = _mm512_castps_si512(_mm512_maskz_loadu_ps(live, scales + g));
    const __m512i z = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(live, zeros + g));
    const __m512i a = _mm512_and_si512(s, absMask);
    bad |= _mm512_cmpgt_epi32_mask(a, largestFinite) | _mm512_cmpgt_epi32_mask(z, fifteen);
    subnormal |= _mm512_mask_cmplt_epi32_mask(_mm512_cmpneq_epi32_mask(a, zero), a, minNormal);
    __m512i e = _mm512_sub_epi32(_mm512_srli_epi32(a, 23), expOffset);
    e = _mm512_min_epi32(_mm512_max_epi32(e, lowest), highest);
    const __m512 inverse = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_sub_epi32(bias, e), 23));
    const __m512 scaled = _mm512_mul_ps(_mm512_castsi512_ps(a), inverse), limit = _mm512_maskz_mul_ps(live, maxFinite, inverse);
    // The table's largest entry before the clamp is fl32(scaled max|q - z|) (fl32 products are monotonic in
    // |q - z|): when it is within the limit, min(v, limit) = v for every entry and the clamp can go.
    const __m512 largestDistance = _mm512_cvtepi32_ps(_mm512_max_epi32(z, _mm512_sub_epi32(fifteen, z)));
    saturating |= _mm512_cmp_ps_mask(_mm512_mul_ps(scaled, largestDistance), limit, _CMP_NLE_UQ);
    _mm512_store_ps(t.scaled + g, scaled);
    _mm512_store_ps(t.limit + g, limit);
    _mm512_store_ps(t.base + g, _mm512_maskz_mov_ps(live, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(e, bias), 23))));
    const __m512i index = _mm512_or_si512(z, _mm512_slli_epi32(_mm512_srli_epi32(s, 31), 4));
    _mm512_store_si512(t.table + g, _mm512_slli_epi32(index, kGroupTableShift));
  }
  for (int g = liveEnd; g < padded; g += 16) {  // padding: what the masked loop above would store there
    _mm512_store_ps(t.scaled + g, _mm512_setzero_ps());
    _mm512_store_ps(t.limit + g, _mm512_setzero_ps());
    _mm512_store_ps(t.base + g, _mm512_setzero_ps());
    _mm512_store_si512(t.table + g, zero);
  }
  return {bad != 0, subnormal != 0, saturating != 0};
}

struct TableConstants {
  __m512i expMask = _mm512_set1_epi32(0x7F800000), two23 = _mm512_set1_epi32(0x4B000000), step;
  __m512 veltkamp;                                                // 2^(23 - p)
  __m512 lowWordOffset = _mm512_set1_ps(8388608.0f + 65536.0f);  // 2^23 + 2^16: int16 of +-W in the low bits
  // Bytes 0 and 1 of the 16 dwords of two groups a, b: [a low | b low | a high | b high].
  __m512i pack;
  explicit TableConstants(const FormatInfo& f)
      : step(_mm512_set1_epi32((23 - f.mantissaBits) << 23)), veltkamp(_mm512_set1_ps((float)(1 << (23 - f.mantissaBits)))) {
    alignas(64) uint8_t idx[64];
    for (int i = 0; i < 16; ++i) idx[i] = (uint8_t)(4 * i), idx[16 + i] = (uint8_t)(64 + 4 * i),
                                 idx[32 + i] = (uint8_t)(4 * i + 1), idx[48 + i] = (uint8_t)(64 + 4 * i + 1);
    pack = _mm512_load_si512(idx);
  }
};

// The 16 entries of group g's table rounded to the FP8 grid, as FP32 bits with the int16 of W in the low half.
template <bool kSubnormal, bool kSaturate>
W4A8_ALWAYS_INLINE __m512i groupEntries(const WeightRow& t, int g, const TableConstants& c) {
  const GroupTable& table =
      *reinterpret_cast<const GroupTable*>(reinterpret_cast<const char*>(kGroupTables.t) + t.table[g]);
  __m512 v = _mm512_mul_ps(_mm512_set1_ps(t.scaled[g]), _mm512_load_ps(table.absQMinusZ));
  if constexpr (kSaturate) v = _mm512_min_ps(v, _mm512_set1_ps(t.limit[g]));
  __m512 r;
  if constexpr (kSubnormal) {  // + and - C = max(2^23, 2^(exponent(t) + 23 - p)): spacing max(1, ulp)
    const __m512i binade = _mm512_add_epi32(_mm512_and_si512(_mm512_castps_si512(v), c.expMask), c.step);
    const __m512 C = _mm512_castsi512_ps(_mm512_max_epu32(binade, c.two23));
    r = _mm512_sub_ps(_mm512_add_ps(v, C), C);
  } else {  // Veltkamp: h = t (2^(23-p) + 1), r = h - (h - t) has p + 1 significant bits
    const __m512 h = _mm512_fmadd_ps(v, c.veltkamp, v);
    r = _mm512_sub_ps(h, _mm512_sub_ps(h, v));
  }
  return _mm512_castps_si512(_mm512_fmadd_ps(_mm512_load_ps(table.sign), r, c.lowWordOffset));
}

// The vpshufb tables of a whole row, built before the decode in a loop of independent iterations:
// tables[2b] and tables[2b + 1] hold the low and high bytes of W of block b, one group per 128-bit lane
// (G = 32: groups 4b..4b+3; G = 64: 2b, 2b, 2b+1, 2b+1; G = 128: b in all four lanes).
template <int G, bool kSubnormal, bool kSaturate>
void buildTables(const WeightRow& t, int groups, int blocks, const TableConstants& constants, __m512i* tables) {
  // Locals, not references: the stores through __m512i* may alias anything.
  const TableConstants c = constants;
  const WeightRow row = t;
  for (int g = 0, q = 0; g < groups; g += 4, ++q) {
    const __m512i A = groupEntries<kSubnormal, kSaturate>(row, g, c), B = groupEntries<kSubnormal, kSaturate>(row, g + 1, c);
    const __m512i C = groupEntries<kSubnormal, kSaturate>(row, g + 2, c), D = groupEntries<kSubnormal, kSaturate>(row, g + 3, c);
    const __m512i AB = _mm512_permutex2var_epi8(A, c.pack, B), CD = _mm512_permutex2var_epi8(C, c.pack, D);
    const __m512i low = _mm512_shuffle_i32x4(AB, CD, 0x44), high = _mm512_shuffle_i32x4(AB, CD, 0xEE);
    if constexpr (G == 32) {
      _mm512_store_si512(tables + 2 * q, low);
      _mm512_store_si512(tables + 2 * q + 1, high);
    } else if constexpr (G == 64) {
      _mm512_store_si512(tables + 4 * q, _mm512_shuffle_i32x4(low, low, 0x50));
      _mm512_store_si512(tables + 4 * q + 1, _mm512_shuffle_i32x4(high, high, 0x50));
      if (2 * q + 1 < blocks) {
        _mm512_store_si512(tables + 4 * q + 2, _mm512_shuffle_i32x4(low, low, 0xFA));
        _mm512_store_si512(tables + 4 * q + 3, _mm512_shuffle_i32x4(high, high, 0xFA));
      }
    } else {  // G = 128: the 16 words of W twice (vpermw reads 5 index bits), one zmm per group = block
      const __m512i twice = _mm512_set_epi16(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0, 30, 28, 26, 24, 22,
                                             20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
      const __m512i* e[4] = {&A, &B, &C, &D};
      for (int i = 0; i < 4 && 4 * q + i < blocks; ++i)
        _mm512_store_si512(tables + 4 * q + i, _mm512_permutexvar_epi16(twice, *e[i]));
      (void)AB, (void)CD, (void)low, (void)high;
    }
  }
}

template <int G>
void buildRowTables(RowKind kind, const WeightRow& t, int groups, int blocks, const TableConstants& c, __m512i* tables) {
  if (kind.subnormal) {
    if (kind.saturating) buildTables<G, true, true>(t, groups, blocks, c, tables);
    else buildTables<G, true, false>(t, groups, blocks, c, tables);
  } else {
    if (kind.saturating) buildTables<G, false, true>(t, groups, blocks, c, tables);
    else buildTables<G, false, false>(t, groups, blocks, c, tables);
  }
}

// Where rowTokens finds block b's tables: built for the row (buildRowTables), or made in the block loop from
// the weights' prepared tables (kernels/int4_tables.h), the same W in the same layout as buildTables's:
//   table128(b) (G = 128): the vpermw table, the group's 16 words twice;
//   block(b, low, high) (G = 32, 64): the vpshufb tables of the low and high bytes, one group per 128-bit lane.
// Made in the loop rather than copied into the row's tables: at M = 1, G = 64 the copy's 16-byte stores (4 per
// group) cost more than computing the tables (measured: 2.0 against 1.7 ms for 4096 x 11008 on 2 cores).
struct BuiltRowTables {
  const __m512i* tables;
  W4A8_ALWAYS_INLINE __m512i table128(int b) const { return _mm512_load_si512(tables + b); }
  W4A8_ALWAYS_INLINE void block(int b, __m512i& low, __m512i& high) const {
    low = _mm512_load_si512(tables + 2 * b);
    high = _mm512_load_si512(tables + 2 * b + 1);
  }
};

alignas(64) constexpr Int4TableEntry kZeroEntry{};  // the padding groups past the last one (W = 0)

template <int G>
struct PreparedRowTables {
  const Int4TableEntry* entries;
  const uint16_t* index;  // the row's groups
  int groups;
  W4A8_ALWAYS_INLINE const Int4TableEntry& entry(int g) const { return g < groups ? entries[index[g]] : kZeroEntry; }
  // (Every block of G = 128 is a whole group, so no padding check: with it, GCC loaded the words and broadcast
  // them with a port-5 shuffle instead of one vbroadcasti64x4 from memory, 7% of the M = 4 loop's samples.)
  W4A8_ALWAYS_INLINE __m512i table128(int b) const {
    return _mm512_broadcast_i64x4(_mm256_load_si256((const __m256i*)entries[index[b]].words));
  }
  W4A8_ALWAYS_INLINE void block(int b, __m512i& low, __m512i& high) const {
    if constexpr (G == 64) {  // groups 2b, 2b, 2b + 1, 2b + 1: broadcast loads and one insert per table
      const Int4TableEntry &a = entry(2 * b), &c = entry(2 * b + 1);
      low = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_broadcastsi128_si256(_mm_load_si128((const __m128i*)a.low))),
                               _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i*)c.low)), 1);
      high = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_broadcastsi128_si256(_mm_load_si128((const __m128i*)a.high))),
                                _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i*)c.high)), 1);
    } else {  // groups 4b .. 4b + 3: [L | H] of two groups per zmm (low and high are adjacent), then two shuffles
      const Int4TableEntry &a = entry(4 * b), &c = entry(4 * b + 1), &d = entry(4 * b + 2), &e = entry(4 * b + 3);
      const __m512i ac = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_load_si256((const __m256i*)a.low)),
                                            _mm256_load_si256((const __m256i*)c.low), 1);  // [La, Ha, Lc, Hc]
      const __m512i de = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_load_si256((const __m256i*)d.low)),
                                            _mm256_load_si256((const __m256i*)e.low), 1);  // [Ld, Hd, Le, He]
      low = _mm512_shuffle_i32x4(ac, de, 0x88);   // lanes 0, 2 of each
      high = _mm512_shuffle_i32x4(ac, de, 0xDD);  // lanes 1, 3 of each
    }
  }
};

// 64 code bytes -> the 4 int16 vectors of W of one block (vector v as at the top).
W4A8_ALWAYS_INLINE void decodeBlock(__m512i codes, __m512i low, __m512i high, __m512i (&w)[4]) {
  const __m512i nibble = _mm512_set1_epi8(0x0F);
  const __m512i even = _mm512_and_si512(codes, nibble), odd = _mm512_and_si512(_mm512_srli_epi16(codes, 4), nibble);
  const __m512i el = _mm512_shuffle_epi8(low, even), eh = _mm512_shuffle_epi8(high, even);
  const __m512i ol = _mm512_shuffle_epi8(low, odd), oh = _mm512_shuffle_epi8(high, odd);
  w[0] = _mm512_unpacklo_epi8(el, eh);
  w[1] = _mm512_unpackhi_epi8(el, eh);
  w[2] = _mm512_unpacklo_epi8(ol, oh);
  w[3] = _mm512_unpackhi_epi8(ol, oh);
}

// G = 128: 64 code bytes read as 32 words hold k = 4 i + j in bits 4 j .. 4 j + 3 of word i; vpermw looks
// nibble j up in the group's word table (index bits above 4 ignored, the table is there twice): vector j,
// word i = W of k = 4 i + j. One shuffle per 32 weights instead of two.
W4A8_ALWAYS_INLINE void decodeBlock128(__m512i codes, __m512i table, __m512i (&w)[4]) {
  w[0] = _mm512_permutexvar_epi16(codes, table);
  w[1] = _mm512_permutexvar_epi16(_mm512_srli_epi16(codes, 4), table);
  // Nibbles 2 and 3 from the word's high byte: a byte shift within 128-bit lanes (port 5, where the shifts
  // would compete with vpdpwssd for port 0) puts it in the low byte (the byte shifted in is never used).
  const __m512i high = _mm512_bsrli_epi128(codes, 1);
  w[2] = _mm512_permutexvar_epi16(high, table);
  w[3] = _mm512_permutexvar_epi16(_mm512_srli_epi16(high, 4), table);
}

// Sum over one block of the 4 weight vectors times one activation plane (xs at the block's first k).
// (Two chains of two: a chain of four vpdpwssd per block made the M = 1 loop latency-bound.)
W4A8_ALWAYS_INLINE __m512i blockSums(const __m512i (&w)[4], const int16_t* xs) {
  const __m512i zero = _mm512_setzero_si512();
  const __m512i a = _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(zero, w[0], _mm512_load_si512(xs)), w[1],
                                        _mm512_load_si512(xs + kChunkK));
  const __m512i b = _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(zero, w[2], _mm512_load_si512(xs + 2 * kChunkK)), w[3],
                                        _mm512_load_si512(xs + 3 * kChunkK));
  return _mm512_add_epi32(a, b);
}

// The 16 lanes' units of block b from per-group units u (lane L of the block is in group 4b * 32 / G + L * 32 / G).
template <int G>
W4A8_ALWAYS_INLINE __m512 blockUnit(const float* u, int b) {
  if constexpr (G == 128) {
    return _mm512_set1_ps(u[b]);
  } else {
    const __m512i lanes = G == 64 ? _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1)
                                  : _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    return _mm512_permutexvar_ps(lanes, _mm512_loadu_ps(u + b * (kBlockK / G)));
  }
}

// ---- kernels ---------------------------------------------------------------------------------------------

struct Problem {
  const W4A8GemmArgs& a;
  const Activations& x;
  int m0;  // first row of X in this pass
  FormatInfo wf;
  TableConstants tc;
};

// FP32 sum in k order of exact products, for rows the integer path does not take.
float genericOutput(const Problem& pr, int m, int n, uint8_t* w8Row, bool& filled) {
  const Int4WeightsView& w = pr.a.w;
  const int K = w.cols, groups = w.groups();
  if (!filled) {
    Int4WeightsView one = w;
    one.codes += (size_t)n * (K / 2);
    one.groupScales += (size_t)n * groups;
    one.zeros += (size_t)n * groups;
    one.channelScales += n;
    one.rows = 1;
    fast::lutDequantInt4ToFp8(one, w8Row, 0, 1);
    filled = true;
  }
  const float* xTable = fp8DecodeTable(pr.a.actFormat);
  const float* wTable = fp8DecodeTable(w.format);
  const uint8_t* x8 = pr.a.x8 + (size_t)(pr.m0 + m) * K;
  float sum = 0.0f;
  for (int k = 0; k < K; ++k) sum += xTable[x8[k]] * wTable[w8Row[k]];
  return sum;
}

// Planes 1 and 2 of one block for one token (rare), right after its plane 0.
W4A8_ALWAYS_INLINE __m512 extraPlanes(const Activations& x, int m, int b, int planes, const __m512i (&w)[4], __m512 unit,
                                      __m512 acc) {
  const __m512 next = _mm512_set1_ps(1.0f / (1 << kPlaneBits));
  for (int j = 1; j < planes; ++j) {
    unit = _mm512_mul_ps(unit, next);
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(blockSums(w, x.row(m, j) + (size_t)b * kBlockK)), unit, acc);
  }
  return acc;
}

// Tokens [m0, m0 + MR) of the pass times one weight row (tables built), blocks [b0, b1): acc (one 16-lane FP32
// accumulator per token) is loaded, advanced block by block and stored back, so that splitting the blocks
// into panels does not change a bit. units: [MR][stride] base_w * unit_x per group.
template <int G, int MR, bool kPlanes, class Tables>
__attribute__((noinline)) void rowTokens(const Activations& x, const uint8_t* rowCodes, const Tables tables,
                                         const float* units, int m0, int b0, int b1, __m512* accIO) {
  const int fullBlocks = x.K / kBlockK, stride = x.stride;
  __m512 acc[MR];
  const int16_t* xs[MR];
  const uint8_t* bp[MR];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
    acc[m] = _mm512_load_ps(accIO + m), xs[m] = x.row(m0 + m, 0), bp[m] = x.planesOf(m0 + m);
  for (int b = b0; b < b1; ++b) {
    prefetchWeights(rowCodes + (size_t)b * 64 + kPrefetchBytes);
    const __m512i codes = b < fullBlocks ? _mm512_loadu_si512(rowCodes + (size_t)b * 64)
                                         : _mm512_maskz_loadu_epi8(_cvtu64_mask64((1ull << ((x.K - b * kBlockK) / 2)) - 1),
                                                                   rowCodes + (size_t)b * 64);
    __m512i w[4];
    if constexpr (G == 128) {
      decodeBlock128(codes, tables.table128(b), w);
    } else {
      __m512i low, high;
      tables.block(b, low, high);
      decodeBlock(codes, low, high, w);
    }
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const __m512 unit = blockUnit<G>(units + (size_t)m * stride, b);
      acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(blockSums(w, xs[m] + (size_t)b * kBlockK)), unit, acc[m]);
      if (kPlanes && __builtin_expect(bp[m][b] > 1, 0)) acc[m] = extraPlanes(x, m0 + m, b, bp[m][b], w, unit, acc[m]);
    }
  }
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) _mm512_store_ps(accIO + m, acc[m]);
}

template <int G, class Tables, int MR = 1>
void rowTokensFor(int mr, const Activations& x, const uint8_t* rowCodes, const Tables tables, const float* units,
                  int m0, int b0, int b1, __m512* acc) {
  if constexpr (MR <= kMaxTokens) {
    if (mr != MR) return rowTokensFor<G, Tables, MR + 1>(mr, x, rowCodes, tables, units, m0, b0, b1, acc);
    // Most tokens need one plane in every block: their loop does not look at the plane counts.
    bool planes = false;
    for (int m = m0; m < m0 + MR; ++m) planes |= x.multiPlane[m] != 0;
    if (planes) rowTokens<G, MR, true, Tables>(x, rowCodes, tables, units, m0, b0, b1, acc);
    else rowTokens<G, MR, false, Tables>(x, rowCodes, tables, units, m0, b0, b1, acc);
  }
}

// One token, G = 128 (decode): each block's table is built right before its decode instead of in a pass of its
// own over the row (no table stores and loads, and the table's FP32 work overlaps the block's vpdpwssd). The
// same operations as buildTables + rowTokens<128, 1, kPlanes>, in the same order for every output.
template <bool kSubnormal, bool kSaturate, bool kPlanes>
__attribute__((noinline)) void rowFused128(const Activations& x, const uint8_t* rowCodes, const WeightRow& t,
                                           const TableConstants& constants, const float* units, int m0, __m512* accIO) {
  const TableConstants c = constants;
  const WeightRow row = t;
  const __m512i twice = _mm512_set_epi16(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0, 30, 28, 26, 24, 22, 20,
                                         18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const int blocks = x.blocks;  // K is a multiple of G = 128: every block is whole and is one group
  const int16_t* xs = x.row(m0, 0);
  const uint8_t* bp = x.planesOf(m0);
  __m512 acc = _mm512_setzero_ps();  // one token, one panel: the row's sum starts here
  for (int b = 0; b < blocks; ++b) {
    prefetchWeights(rowCodes + (size_t)b * 64 + kPrefetchBytes);
    const __m512i table = _mm512_permutexvar_epi16(twice, groupEntries<kSubnormal, kSaturate>(row, b, c));
    __m512i w[4];
    decodeBlock128(_mm512_loadu_si512(rowCodes + (size_t)b * 64), table, w);
    const __m512 unit = blockUnit<128>(units, b);
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(blockSums(w, xs + (size_t)b * kBlockK)), unit, acc);
    if (kPlanes && __builtin_expect(bp[b] > 1, 0)) acc = extraPlanes(x, m0, b, bp[b], w, unit, acc);
  }
  _mm512_store_ps(accIO, acc);
}

void rowFused128For(RowKind kind, const Activations& x, const uint8_t* rowCodes, const WeightRow& t,
                    const TableConstants& c, const float* units, int m0, __m512* acc) {
  const bool planes = x.multiPlane[m0] != 0;
  const int which = (kind.subnormal ? 4 : 0) | (kind.saturating ? 2 : 0) | (planes ? 1 : 0);
  switch (which) {
    case 0: return rowFused128<false, false, false>(x, rowCodes, t, c, units, m0, acc);
    case 1: return rowFused128<false, false, true>(x, rowCodes, t, c, units, m0, acc);
    case 2: return rowFused128<false, true, false>(x, rowCodes, t, c, units, m0, acc);
    case 3: return rowFused128<false, true, true>(x, rowCodes, t, c, units, m0, acc);
    case 4: return rowFused128<true, false, false>(x, rowCodes, t, c, units, m0, acc);
    case 5: return rowFused128<true, false, true>(x, rowCodes, t, c, units, m0, acc);
    case 6: return rowFused128<true, true, false>(x, rowCodes, t, c, units, m0, acc);
    default: return rowFused128<true, true, true>(x, rowCodes, t, c, units, m0, acc);
  }
}

// MR tokens (1..8), G = 128, with the weights' prepared tables (kernels/int4_tables.h; how a loaded model holds
// its weights): each block's vpermw table is its group's 16 words, which one load broadcasts to both 256-bit
// halves (W twice, as the built table), decoded once for the MR tokens. Rows [nBegin, nEnd) run in one loop and
// each block's unit is made in it (2^e times the activation unit, the product fillUnits makes): the same W, units
// and operations per token as rowFused128 and rowTokens, so the same bits at every M. (Per-row passes over bases
// and units around a per-row call took about a fifth of the time on rows of K = 2048, 15-20 ns a row on one core;
// at 2 tokens, where that per-row path ran until 2026-12-02, this loop is 1.3-1.6x faster on 8192x2048 and up to
// 1.27x on 4096x11008, Zen 4, 2 threads.) Rows with a non-finite scale, and tokens with NaN or inf, take the FP32
// path. (Two rows per iteration, sharing each block's activation loads: 10-40 % slower from DRAM on 2
// threads, 4096x11008 and 2048x8192, 2026-12-01; two interleaved code streams per thread. Not kept.)
template <int MR, bool kPlanes>
__attribute__((noinline)) void rowsPrepared128(const Problem& pr, const Int4Tables& prepared, int nBegin, int nEnd,
                                               uint8_t* w8Row) {
  const Activations& x = pr.x;
  const Int4WeightsView& w = pr.a.w;
  const int blocks = x.blocks, K = w.cols;
  const int16_t* xs[MR];
  const uint8_t* bp[MR];
  const float* xu[MR];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) xs[m] = x.row(m, 0), bp[m] = x.planesOf(m), xu[m] = x.units(m);
  const Int4TableEntry* entries = prepared.entries.data();
  const uint16_t* indexEnd = prepared.tableIndex.data() + prepared.tableIndex.size();
  for (int n = nBegin; n < nEnd; ++n) {
    if (n + 1 < nEnd) prefetchRowGroups(w, &prepared, n + 1, 1);
    __m512 acc[MR];
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) acc[m] = _mm512_setzero_ps();
    const bool rowGeneric = prepared.rowGeneric[n] != 0;
    if (!rowGeneric) {
      const uint8_t* rowCodes = w.codes + (size_t)n * (K / 2);
      const uint16_t* index = prepared.indexRow(n);
      const int8_t* e = prepared.baseRow(n);
      // (entries kEntryPrefetchGroups ahead, int4_tables.h, running into the next row's: indices are contiguous)
      const int ahead = std::min(blocks, (int)(indexEnd - index) - kEntryPrefetchGroups);
      for (int b = 0; b < blocks; ++b) {
        prefetchWeights(rowCodes + (size_t)b * 64 + kPrefetchBytes);
        if (b < ahead) _mm_prefetch((const char*)entries[index[b + kEntryPrefetchGroups]].words, _MM_HINT_T0);
        const __m512i table = _mm512_broadcast_i64x4(_mm256_load_si256((const __m256i*)entries[index[b]].words));
        __m512i wv[4];
        decodeBlock128(_mm512_loadu_si512(rowCodes + (size_t)b * 64), table, wv);
        float base;
        const uint32_t bits = (uint32_t)(e[b] + 127) << 23;
        std::memcpy(&base, &bits, 4);
#pragma GCC unroll 8
        for (int m = 0; m < MR; ++m) {
          const __m512 unit = _mm512_set1_ps(base * xu[m][b]);
          acc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(blockSums(wv, xs[m] + (size_t)b * kBlockK)), unit, acc[m]);
          if (kPlanes && __builtin_expect(bp[m][b] > 1, 0)) acc[m] = extraPlanes(x, m, b, bp[m][b], wv, unit, acc[m]);
        }
      }
    }
    bool filled = false;
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {  // a non-finite scale, or NaN / inf in x: the FP32 path
      const float sum = rowGeneric || x.generic[m] ? genericOutput(pr, m, n, w8Row, filled) : _mm512_reduce_add_ps(acc[m]);
      storeOutput(pr.a.y, m, n, (pr.a.xScales[pr.m0 + m] * w.channelScales[n]) * sum);
    }
  }
}

// rowsPrepared128 for the pass's M tokens (1 .. kMaxTokens).
template <int MR = 1>
void rowsPrepared128For(int M, bool planes, const Problem& pr, const Int4Tables& prepared, int nBegin, int nEnd,
                        uint8_t* w8Row) {
  if constexpr (MR <= kMaxTokens) {
    if (M != MR) return rowsPrepared128For<MR + 1>(M, planes, pr, prepared, nBegin, nEnd, w8Row);
    if (planes) rowsPrepared128<MR, true>(pr, prepared, nBegin, nEnd, w8Row);
    else rowsPrepared128<MR, false>(pr, prepared, nBegin, nEnd, w8Row);
  }
}

// base[g] = 2^e[g] for the row's groups, zero past them (padded entries in all).
W4A8_ALWAYS_INLINE void preparedBases(const int8_t* e, int groups, int padded, float* base) {
  const __m512i bias = _mm512_set1_epi32(127);
  for (int g = 0; g < padded; g += 16) {
    const int left = groups - g;
    const __mmask16 live = left >= 16 ? (__mmask16)0xFFFF : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1);
    const __m512i v = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(live, e + g));
    _mm512_store_ps(base + g, _mm512_maskz_mov_ps(live, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(v, bias), 23))));
  }
}

// Up to kMaxTokens tokens: one weight row at a time, all blocks in one go (the activations stay in L1/L2).
// More tokens: kTileRows rows at a time and kPanelBlocks blocks at a time, so that a panel of the activations
// is read from L1 for all the tile's rows instead of from L3 for every row. Every output sees the same
// FP32 operations in the same order either way.
constexpr int kTileRows = 4;
constexpr int kPanelBlocks = 8;

template <int G>
void gemmRows(const Problem& pr, int M, int nBegin, int nEnd) {
  const Int4WeightsView& w = pr.a.w;
  const Activations& x = pr.x;
  const int K = w.cols, groups = w.groups(), padded = x.stride, blocks = x.blocks;
  const int tileRows = M <= kMaxTokens ? 1 : kTileRows, panel = M <= kMaxTokens ? blocks : kPanelBlocks;
  // Scratch per tile row: the per-group arrays, the tables, the units of the M tokens; then the accumulators
  // [tileRows][M] and the FP8 codes of a generic row.
  const size_t arrayBytes = (size_t)padded * 4 * 4, tableBytes = (size_t)blocks * 128, unitBytes = (size_t)M * padded * 4;
  const size_t rowBytes = arrayBytes + tableBytes + unitBytes, accBytes = (size_t)tileRows * M * 64;
  const size_t w8Bytes = ((size_t)K + 63) / 64 * 64;
  char* s = static_cast<char*>(scratch(kSlotWeights, rowBytes * tileRows + accBytes + w8Bytes));
  WeightRow rows[kTileRows];
  __m512i* tables[kTileRows];
  float* units[kTileRows];
  for (int r = 0; r < tileRows; ++r) {
    char* base = s + rowBytes * r;
    float* f = reinterpret_cast<float*>(base);
    rows[r] = {f, f + padded, f + 2 * padded, reinterpret_cast<int32_t*>(f + 3 * padded)};
    tables[r] = reinterpret_cast<__m512i*>(base + arrayBytes);
    units[r] = reinterpret_cast<float*>(base + arrayBytes + tableBytes);
  }
  __m512* acc = reinterpret_cast<__m512*>(s + rowBytes * tileRows);
  uint8_t* w8Row = reinterpret_cast<uint8_t*>(s + rowBytes * tileRows + accBytes);
  bool allGeneric = true;
  for (int m = 0; m < M; ++m) allGeneric &= x.generic[m] != 0;
  // The weights' prepared tables where they have them (kernels/int4_tables.h), read in the block loop
  // (rowsPrepared128 for up to kMaxTokens tokens at G = 128, rowTokens with PreparedRowTables otherwise).
  const Int4Tables* prepared = w.tables && w.tables->describes(w) ? w.tables : nullptr;
  if (G == 128 && prepared && M <= kMaxTokens) {  // tables read inside the block loop (rowsPrepared128)
    bool planes = false;
    for (int m = 0; m < M; ++m) planes |= x.multiPlane[m] != 0;
    rowsPrepared128For(M, planes, pr, *prepared, nBegin, nEnd, w8Row);
    return;
  }
  const bool fused = G == 128 && M == 1;  // tables made inside the block loop (rowFused128)
  for (int n0 = nBegin; n0 < nEnd; n0 += tileRows) {
    const int nr = std::min(tileRows, nEnd - n0);
    if (n0 + nr < nEnd)  // the next tile's (its codes are prefetched by the block loop)
      prefetchRowGroups(w, prepared, n0 + nr, std::min(tileRows, nEnd - n0 - nr));
    bool generic[kTileRows];
    RowKind kinds[kTileRows];
    for (int r = 0; r < nr; ++r) {
      RowKind kind;
      if (prepared) {  // the bases and tables from the prepared form
        kind = {allGeneric || prepared->rowGeneric[n0 + r] != 0, false, false};
        if (!kind.generic) preparedBases(prepared->baseRow(n0 + r), groups, padded, rows[r].base);
      } else {
        kind = allGeneric ? RowKind{true, false, false} : prepareWeightRow(w, n0 + r, pr.wf, rows[r]);
        if (!kind.generic && !fused) buildRowTables<G>(kind, rows[r], groups, blocks, pr.tc, tables[r]);
      }
      generic[r] = kind.generic;
      kinds[r] = kind;
      if (kind.generic) continue;
      for (int m = 0; m < M; ++m) {
        const float* xu = x.units(m);
        float* u = units[r] + (size_t)m * padded;
        for (int g = 0; g < padded; g += 16)
          _mm512_store_ps(u + g, _mm512_mul_ps(_mm512_load_ps(rows[r].base + g), _mm512_loadu_ps(xu + g)));
      }
      if (!fused)  // (rowFused128 starts from zero: a variable-length zeroing here became a rep stos per row)
        for (int m = 0; m < M; ++m) acc[(size_t)r * M + m] = _mm512_setzero_ps();
    }
    for (int b0 = 0; b0 < blocks; b0 += panel) {
      const int b1 = std::min(blocks, b0 + panel);
      for (int m0 = 0; m0 < M; m0 += kMaxTokens)
        for (int r = 0; r < nr; ++r)
          if (generic[r]) continue;
          else if (fused) rowFused128For(kinds[r], x, w.codes + (size_t)(n0 + r) * (K / 2), rows[r], pr.tc, units[r], m0, acc + (size_t)r * M + m0);
          else if (prepared)
            rowTokensFor<G>(std::min(kMaxTokens, M - m0), x, w.codes + (size_t)(n0 + r) * (K / 2),
                            PreparedRowTables<G>{prepared->entries.data(), prepared->indexRow(n0 + r), groups},
                            units[r] + (size_t)m0 * padded, m0, b0, b1, acc + (size_t)r * M + m0);
          else
            rowTokensFor<G>(std::min(kMaxTokens, M - m0), x, w.codes + (size_t)(n0 + r) * (K / 2), BuiltRowTables{tables[r]},
                            units[r] + (size_t)m0 * padded, m0, b0, b1, acc + (size_t)r * M + m0);
    }
    for (int r = 0; r < nr; ++r) {
      const int n = n0 + r;
      const float cs = w.channelScales[n];
      bool filled = false;
      for (int m = 0; m < M; ++m) {
        const float sum = generic[r] || x.generic[m] ? genericOutput(pr, m, n, w8Row, filled)
                                                     : _mm512_reduce_add_ps(acc[(size_t)r * M + m]);
        storeOutput(pr.a.y, m, n, (pr.a.xScales[pr.m0 + m] * cs) * sum);
      }
    }
  }
}

template <int G>
void gemmPasses(const W4A8GemmArgs& a, int nBegin, int nEnd) {
  const int K = a.w.cols;
  const FormatInfo wf = formatInfo(a.w.format);
  for (int m0 = 0; m0 < a.M && nBegin < nEnd; m0 += kRowsPerPass) {
    const int rows = std::min(kRowsPerPass, a.M - m0);
    const Activations& x = preparedActivations<G>(a.x8 + (size_t)m0 * K, rows, K, a.actFormat);
    W4A8GemmArgs pass = a;
    pass.y = {a.y.f32 ? a.y.f32 + (size_t)m0 * a.y.ldy : nullptr, a.y.bf16 ? a.y.bf16 + (size_t)m0 * a.y.ldy : nullptr,
              a.y.ldy};
    const Problem pr{pass, x, m0, wf, TableConstants(wf)};
    gemmRows<G>(pr, rows, nBegin, nEnd);
  }
}

}  // namespace

void gemmW4A8(const W4A8GemmArgs& a, int nBegin, int nEnd) {
  switch (a.w.groupSize) {
    case 128: gemmPasses<128>(a, nBegin, nEnd); break;
    case 64: gemmPasses<64>(a, nBegin, nEnd); break;
    default: gemmPasses<32>(a, nBegin, nEnd); break;
  }
}

}  // namespace w4a8::avx512vnni
