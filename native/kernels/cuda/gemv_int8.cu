// Integer W4A8 GEMV for 1-8 tokens: the same function as gemv.cu (DESIGN.md §1),
//   Y[M, N] = (s_x[m] * s_c[n]) * sum_k x8[m, k] * w8[n, k],   w8 = fp8(fl32(s_g (q - z))),
// with the products summed exactly in int32 on the int8 tensor cores (mma.sync m16n8k32 u8 x s8), then in FP32.
// Needs G = 128 and E4M3-family weights and activations. Fastest on weights packed with power-of-two group
// scales (the packer's "hardware-aligned" option), where it needs no table at all; cuda_backend.cu takes it then.
//
// Activations: three signed 7-bit limbs per code (integer_activations.cuh), columns 3m .. 3m + 2 of the MMA's B
// operand for token m, with their per-group sums, made by the quantization kernel or by this file's pre-pass.
//
// Weights, two kinds of group (a warp votes per round; every lane of a quad holds the same group):
//   - Linear groups (linearGroup, integer_activations.cuh): s = +-2^k, k >= -9, z <= 15, max(z, 15 - z) |s| <= the
//     format's max. Then every entry s (q - z) has at most 4 significant bits and lies on the FP8 grid without
//     saturating, so w8 = s (q - z) exactly and sum_k w8 x = s (sum_k q x - z sum_k x): the codes themselves are
//     the u8 operand (nibbles to bytes, 3 integer instructions per 8 weights). int4ChannelTarget
//     (quant/int4_pack.h) makes every group of a power-of-two RTN packing linear, save groups of scale below 2^-9.
//   - Other groups (tableRound): every entry fp8(fl32(s (q - z))), |q - z| <= 15, is a multiple
//     of 2^e, e = clamp(floor(log2 |s|) - 3, -9, cap) (4 significant bits; 2^-9 is the subnormal step; the
//     largest finite value, 448 = 7 * 2^6 or Gaudi-2's 240 = 15 * 2^4, is a multiple of 2^cap, cap 6 or 4, and a
//     group with e above the cap has only saturated entries and zero). In units of 2^e the entries n(q) are
//     integers, monotonic in q, spanning at most 15 * 16 * (1 + 2^-4) < 256 units: u(q) = n(q) - b, b = min n,
//     fits in 8 bits unsigned, and sum_k n x = sum_k u x + b sum_k x. The table of u is made per group (FP8
//     codes by the hardware conversion, then FP16 code * 2^-e + 1536 - b, whose low byte is u) and read with the
//     byte-permute lookup of gemv.cu.
// Sums: a round (one group per row) gives its sums exactly in int32 (|.| < 2^23), converted exactly to FP32 and
// added, times s or 2^e, into the FP32 accumulator of its column; at the end y = s_x s_c (c0 2^-9 + c1 2^-2 +
// c2 2^5). The only roundings are FP32 additions: within FP32 summation tolerance, as the contract asks.
// Non-finite values: a NaN activation code (or Gaudi-2 inf) makes its token's outputs NaN; a group whose table
// has a NaN entry (non-finite s) or a zero point above 15 makes NaN the outputs of rows whose codes reach it.
//
// Layout and loads as gemv.cu (one CTA per 16 output channels, K split over its warps, lane (g, t) holds k
// [128 r + 32 t, + 32) of rows g and g + 8, a 4-round ring of weight loads, activations one round ahead), but for
// one token tile at most 128 registers a thread (16 warps an SM; 8 warps a CTA on matrices of few CTAs, 4 on the
// rest and for more tokens): on the H200 the linear path ran at 0.40 of HBM bandwidth with 166 registers (3 CTAs an
// SM) and at 0.54-0.62 with 128 (RESULTS.md): the kernel waits on its loads, and more warps hide that wait.
#include <cstdint>
#include <type_traits>

#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/integer_activations.cuh"
#include "kernels/cuda/internal.h"

namespace w4a8::cudakern {
namespace {

constexpr int kDepth = 4;
constexpr int kPrepWarps = 8;  // pre-pass: one group of 128 k per warp
constexpr int kPrepThreads = 32 * kPrepWarps;
int prepBlocks(int K) { return (K / kIntRoundK + kPrepWarps - 1) / kPrepWarps; }

// ---- the pre-pass -----------------------------------------------------------------------------------------------
// CTA (b, m): token m, groups 8 b .. 8 b + 7, one per warp. Its NaN flag: flags[m * gridDim.x + b].
__global__ void __launch_bounds__(kPrepThreads) limbsKernel(const uint8_t* __restrict__ x8, int M, int K, bool gaudi,
                                                            uint8_t* __restrict__ limbs, int* __restrict__ sums,
                                                            float* __restrict__ flags) {
  pdlLaunchDependents();  // the GEMV may start loading weights; it waits for this grid before reading limbs
  pdlWaitForPrevious();   // x8 comes from the previous kernel; the scratch may still be read by the previous GEMV
  const int m = blockIdx.y, gi = blockIdx.x * kPrepWarps + (threadIdx.x >> 5);
  int nonFinite = 0;
  if (gi < K / kIntRoundK) nonFinite = limbGroup(x8 + (size_t)m * K, m, M, K, gi, gaudi, limbs, sums);
  nonFinite = __syncthreads_or(nonFinite);
  if (threadIdx.x == 0) flags[(size_t)m * gridDim.x + blockIdx.x] = nonFinite ? __int_as_float(0x7FC00000) : 0.0f;
}

// ---- building blocks ----------------------------------------------------------------------------------------------
__device__ __forceinline__ uint32_t hfma2(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t d;
  asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
  return d;
}

// Two FP32 values -> two E4M3 codes (lo in byte 0), as the table builder encodes them (Gaudi-2: capped at 0x77).
template <bool kCapped>
__device__ __forceinline__ uint32_t encodePair(float lo, float hi) {
  const uint32_t w = cvtPairE4M3fn(lo, hi);
  if (!kCapped) return w;
  return __vminu4(w & 0x7F7Fu, 0x7777u) | (w & 0x8080u);
}

// acc (int32, 16 x 8) += A (16 x 32, u8) * B (32 x 8, s8): fragments as mmaF16's (device_common.cuh), 4 bytes a slot.
__device__ __forceinline__ void mmaU8S8(int c[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                        uint32_t b1) {
  asm("mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// The integer form of one row's group table: entries n(q) = w8(q) / 2^e and the offset b = min n.
struct RowTable {
  uint32_t scale2;   // f16x2 (2^-e, 2^-e)
  uint32_t offset2;  // f16x2 (1536 - b, 1536 - b)
  int bias;          // b
  float step;        // 2^e
};

// e = clamp(floor(log2 |s|) - 3, -9, cap), from the FP32 exponent field (zero and FP32 subnormals give -9).
template <bool kCapped>
__device__ __forceinline__ int gridExponent(float s) {
  const int e = (int)((__float_as_uint(s) >> 23) & 0xFFu) - 130;
  return min(max(e, -9), kCapped ? 4 : 6);
}

// Both rows' tables from their exponents and the E4M3 codes of their smallest entries (byte 0: row g, byte 1:
// row g + 8). n = code * 2^-e is exact in FP16 (|n| < 256); 1536 - b lies in [1536, 1792), where FP16's step is
// 1, so its bits are 0x6400 + 512 - b.
__device__ __forceinline__ void rowTables(int e0, int e1, uint32_t minCodes, RowTable& t0, RowTable& t1) {
  uint32_t n, unused;
  fp8x4ToF16<false>(minCodes, n, unused);
  const uint32_t h0 = (uint32_t)(15 - e0) << 10, h1 = (uint32_t)(15 - e1) << 10;  // FP16 2^-e
  t0.scale2 = h0 | (h0 << 16);
  t1.scale2 = h1 | (h1 << 16);
  n = hfma2(n, h0 | (h1 << 16), 0u);                     // (n_min row g, n_min row g + 8)
  const uint32_t offsets = hfma2(n, 0xBC00BC00u, 0x66006600u);  // 1536 - n (0xBC00 = -1, 0x6600 = 1536)
  t0.offset2 = prmt(offsets, 0, 0x1010);
  t1.offset2 = prmt(offsets, 0, 0x3232);
  t0.bias = 512 - (int)(offsets & 0x3FFu);
  t1.bias = 512 - (int)((offsets >> 16) & 0x3FFu);
  t0.step = __uint_as_float((uint32_t)(127 + e0) << 23);
  t1.step = __uint_as_float((uint32_t)(127 + e1) << 23);
}

// Four E4M3 codes -> four u8 entries u = n - b: the low bytes of FP16 (code * 2^-e + 1536 - b).
__device__ __forceinline__ uint32_t toUnsigned(uint32_t codes, const RowTable& t) {
  uint32_t lo, hi;
  fp8x4ToF16<false>(codes, lo, hi);
  return prmt(hfma2(lo, t.scale2, t.offset2), hfma2(hi, t.scale2, t.offset2), 0x6420);
}

template <bool kCapped>
__device__ __forceinline__ uint32_t nonFiniteBytes(uint32_t codes) {  // nonzero when a code is NaN (or inf)
  return kCapped ? __vcmpeq4(codes & 0x78787878u, 0x78787878u) : __vcmpeq4(codes & 0x7F7F7F7Fu, 0x7F7F7F7Fu);
}


template <int NT>
struct RoundInputs {  // one round's limbs (B operand) and limb sums of this lane's output columns
  uint4 xa[NT][2];
  int2 sa[NT];
};
template <int NT>
struct RoundSums {  // the FP32 column accumulators, and NaN marks of rows g and g + 8
  float acc[NT][4];
  bool nan0, nan1;
};

// A round whose groups are not all linear, through the integer group tables (real power-of-two models need it for
// the rare group of scale below 2^-9; the fused path does not take this kernel for other models). Inline: out of
// line (__noinline__) the kernel spilled around the call and its linear rounds ran 10-20 % slower on the H200.
template <int NT, bool kCapped>
__device__ __forceinline__ RoundSums<NT> tableRound(const GemvPiece pc, const RoundInputs<NT> in, RoundSums<NT> out) {
  const int lane = threadIdx.x & 31, t = lane & 3;
  const int e0 = gridExponent<kCapped>(pc.s0), e1 = gridExponent<kCapped>(pc.s1);
  uint32_t lut0[4], lut1[4];
  RowTable t0, t1;
  if (__all_sync(0xffffffffu, fabsf(pc.s0) < 0x1p119f && fabsf(pc.s1) < 0x1p119f && (unsigned)(pc.z0 | pc.z1) <= 15u)) {
    // Each lane of the quad makes table word t (entries 4t .. 4t + 3) of both rows, then the quad swaps them.
    // Products as buildGroupLut's: fl32(s * (q - z)), then the FP8 rounding.
    const float zf0 = (float)pc.z0, zf1 = (float)pc.z1, q = (float)(4 * t);
    const float qMin0 = pc.s0 >= 0.0f ? 0.0f : 15.0f, qMin1 = pc.s1 >= 0.0f ? 0.0f : 15.0f;
    rowTables(e0, e1, encodePair<kCapped>(pc.s0 * (qMin0 - zf0), pc.s1 * (qMin1 - zf1)), t0, t1);
    const uint32_t mine0 = toUnsigned(encodePair<kCapped>(pc.s0 * (q - zf0), pc.s0 * (q + 1.0f - zf0)) |
                                          (encodePair<kCapped>(pc.s0 * (q + 2.0f - zf0), pc.s0 * (q + 3.0f - zf0)) << 16),
                                      t0);
    const uint32_t mine1 = toUnsigned(encodePair<kCapped>(pc.s1 * (q - zf1), pc.s1 * (q + 1.0f - zf1)) |
                                          (encodePair<kCapped>(pc.s1 * (q + 2.0f - zf1), pc.s1 * (q + 3.0f - zf1)) << 16),
                                      t1);
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      lut0[w] = __shfl_sync(0xffffffffu, mine0, (lane & ~3) | w);
      lut1[w] = __shfl_sync(0xffffffffu, mine1, (lane & ~3) | w);
    }
  } else {
    // A scale of 2^119 or more, inf or NaN, or a zero point above 15 (outside weights.h's 0..15, where the bounds
    // above do not hold) in the warp: the exact software tables, converted here; codes that reach a NaN entry, and
    // such zero points, make their row's outputs NaN.
    const Fp8Format f = kCapped ? Fp8Format::E4M3 : Fp8Format::E4M3FN;
    out.nan0 |= (unsigned)pc.z0 > 15u;
    out.nan1 |= (unsigned)pc.z1 > 15u;
    uint32_t fp0[4], fp1[4];
    buildGroupLut(pc.s0, pc.z0, f, fp0);
    buildGroupLut(pc.s1, pc.z1, f, fp1);
    // The smallest entry, at q = 0 (s >= 0) or 15; with an infinite s that entry is NaN when it is q = z (inf * 0),
    // and the smallest finite one is its neighbour.
    auto smallest = [](const uint32_t fp[4], float s, int z) {
      int q = s >= 0.0f ? 0 : 15;
      uint32_t code = (fp[q >> 2] >> (8 * (q & 3))) & 0xFFu;
      if (nonFiniteBytes<kCapped>(code) & 0xFFu) {
        q = q == z ? (q == 0 ? 1 : 14) : q;
        code = (fp[q >> 2] >> (8 * (q & 3))) & 0xFFu;
      }
      return code;
    };
    const uint32_t min0 = smallest(fp0, pc.s0, pc.z0), min1 = smallest(fp1, pc.s1, pc.z1);
    rowTables(e0, e1, min0 | (min1 << 8), t0, t1);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      uint32_t lo, hi;
      lookup8(word(pc.w0, i), fp0, lo, hi);
      out.nan0 |= (nonFiniteBytes<kCapped>(lo) | nonFiniteBytes<kCapped>(hi)) != 0;
      lookup8(word(pc.w1, i), fp1, lo, hi);
      out.nan1 |= (nonFiniteBytes<kCapped>(lo) | nonFiniteBytes<kCapped>(hi)) != 0;
    }
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      lut0[w] = toUnsigned(fp0[w], t0);
      lut1[w] = toUnsigned(fp1[w], t1);
    }
  }
  int sumA[NT][4], sumB[NT][4];  // two int32 chains (words 0, 2 and 1, 3)
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) sumA[nt][e] = sumB[nt][e] = 0;
#pragma unroll
  for (int i = 0; i < 4; ++i) {  // word i: k + 8 i .. k + 8 i + 7
    uint32_t lo0, hi0, lo1, hi1;
    lookup8(word(pc.w0, i), lut0, lo0, hi0);
    lookup8(word(pc.w1, i), lut1, lo1, hi1);
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const uint4& x = in.xa[nt][i >> 1];  // limbs at k + 8 i .. + 7: words 2 (i & 1) and 2 (i & 1) + 1
      mmaU8S8((i & 1) ? sumB[nt] : sumA[nt], lo0, lo1, hi0, hi1, word(x, 2 * (i & 1)), word(x, 2 * (i & 1) + 1));
    }
  }
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const RowTable& rt = e < 2 ? t0 : t1;
      const int exact = sumA[nt][e] + sumB[nt][e] + rt.bias * ((e & 1) ? in.sa[nt].y : in.sa[nt].x);
      out.acc[nt][e] = fmaf((float)exact, rt.step, out.acc[nt][e]);
    }
  return out;
}

// Registers: at most 128 a thread for one token tile (16 warps an SM: 4 CTAs of 4 warps, or 2 of 8 when the matrix
// has few CTAs); two or three tiles need more, and run 4 warps a CTA.
template <int NT, int kMaxWarps>
constexpr int minBlocks() { return kMaxWarps == 8 ? 2 : NT == 1 ? 4 : NT == 2 ? 3 : 2; }

template <int NT, bool kCapped, int kMaxWarps>
__global__ void __launch_bounds__(32 * kMaxWarps, minBlocks<NT, kMaxWarps>()) gemvInt8Kernel(const DecodeParams p) {
  __shared__ float partial[kMaxWarps - 1][NT * 4][32];  // warps 1..'s sums, read by warp 0
  __shared__ float columns[16][8 * NT + 1];  // warp 0's column sums, combined into tokens
  __shared__ float nanAdd[kIntMaxTokens];

  const int K = p.K, M = p.M;
  constexpr float kFp8Max = kCapped ? 240.0f : 448.0f;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int row0 = blockIdx.x * 16 + g, row1 = row0 + 8;
  const RowStreams w0 = rowStreams(p, row0), w1 = rowStreams(p, row1);
  const int rounds = K / kIntRoundK;
  const int r0 = (int)((long long)warp * rounds / warps), r1 = (int)((long long)(warp + 1) * rounds / warps);

  // Past the warp's range: scale 1, zero point 0, codes 0 (a linear round of zeros), zero limbs and sums.
  auto load = [&](int r, GemvPiece& pc) {
    const unsigned k = (unsigned)r * kIntRoundK + 32u * t;
    pc.w0 = pc.w1 = make_uint4(0, 0, 0, 0);
    pc.s0 = pc.s1 = 1.0f;
    pc.z0 = pc.z1 = 0;
    if (r < r1) {
      pc.w0 = loadStreaming(w0.codes + k / 2u);
      pc.w1 = loadStreaming(w1.codes + k / 2u);
      pc.s0 = __ldg(w0.scales + (unsigned)r);
      pc.s1 = __ldg(w1.scales + (unsigned)r);
      pc.z0 = __ldg(w0.zeros + (unsigned)r);
      pc.z1 = __ldg(w1.zeros + (unsigned)r);
    }
  };
  // Limbs of column 8 nt + g at this lane's 32 k (B operand), and the limb sums of its output columns 8 nt + 2t,
  // + 1: from L1, every CTA of the SM reads the same ones.
  const uint8_t* limbRow[NT];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) limbRow[nt] = 8 * nt + g < kLimbs * M ? p.xLimbs + (size_t)(8 * nt + g) * K : nullptr;
  auto loadX = [&](int r, RoundInputs<NT>& in) {
    const unsigned k = (unsigned)r * kIntRoundK + 32u * t;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      in.xa[nt][0] = in.xa[nt][1] = make_uint4(0, 0, 0, 0);
      in.sa[nt] = make_int2(0, 0);
      if (r < r1) {
        if (limbRow[nt]) {
          const uint4* src = reinterpret_cast<const uint4*>(limbRow[nt] + k);
          in.xa[nt][0] = __ldg(src);
          in.xa[nt][1] = __ldg(src + 1);
        }
        in.sa[nt] = __ldg(reinterpret_cast<const int2*>(p.xLimbSums + ((unsigned)r * kLimbColumns + 8 * nt + 2 * t)));
      }
    }
  };

  RoundSums<NT> sums;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) sums.acc[nt][e] = 0.0f;
  sums.nan0 = sums.nan1 = false;

  // A linear round: the codes are the A operand (even k of a word in one register, odd k in the other; the limbs,
  // in natural order, are permuted to match).
  auto linearRound = [&](const GemvPiece& pc, const RoundInputs<NT>& in) {
    int sumA[NT][4], sumB[NT][4];
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) sumA[nt][e] = sumB[nt][e] = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const uint32_t c0 = word(pc.w0, i), c1 = word(pc.w1, i);
      const uint32_t even0 = c0 & 0x0F0F0F0Fu, odd0 = (c0 >> 4) & 0x0F0F0F0Fu;
      const uint32_t even1 = c1 & 0x0F0F0F0Fu, odd1 = (c1 >> 4) & 0x0F0F0F0Fu;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const uint4& x = in.xa[nt][i >> 1];
        const uint32_t lo = word(x, 2 * (i & 1)), hi = word(x, 2 * (i & 1) + 1);  // limbs of k 0-3, 4-7
        mmaU8S8((i & 1) ? sumB[nt] : sumA[nt], even0, even1, odd0, odd1, prmt(lo, hi, 0x6420), prmt(lo, hi, 0x7531));
      }
    }
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int exact = sumA[nt][e] + sumB[nt][e] - (e < 2 ? pc.z0 : pc.z1) * ((e & 1) ? in.sa[nt].y : in.sa[nt].x);
        sums.acc[nt][e] = fmaf((float)exact, e < 2 ? pc.s0 : pc.s1, sums.acc[nt][e]);
      }
  };

  GemvPiece ring[kDepth];
  RoundInputs<NT> xbuf[2];
#pragma unroll
  for (int d = 0; d < kDepth; ++d) load(r0 + d, ring[d]);
  pdlWaitForPrevious();  // the limbs (pre-pass or quantization); the weights above were loaded before it finished
  pdlLaunchDependents();
  loadX(r0, xbuf[0]);
  static_assert(kDepth % 2 == 0, "xbuf parity");
  for (int r = r0; r < r1; r += kDepth) {
#pragma unroll
    for (int d = 0; d < kDepth; ++d) {
      loadX(r + d + 1, xbuf[(d + 1) & 1]);
      if (__all_sync(0xffffffffu, linearGroup(ring[d].s0, ring[d].z0, kFp8Max) && linearGroup(ring[d].s1, ring[d].z1, kFp8Max)))
        linearRound(ring[d], xbuf[d & 1]);
      else
        sums = tableRound<NT, kCapped>(ring[d], xbuf[d & 1], sums);
      load(r + d + kDepth, ring[d]);
    }
  }
  // A NaN mark belongs to the row, whose columns are spread over the quad's lanes.
  sums.nan0 |= __shfl_xor_sync(0xffffffffu, sums.nan0, 1);
  sums.nan0 |= __shfl_xor_sync(0xffffffffu, sums.nan0, 2);
  sums.nan1 |= __shfl_xor_sync(0xffffffffu, sums.nan1, 1);
  sums.nan1 |= __shfl_xor_sync(0xffffffffu, sums.nan1, 2);
  const float nan = __int_as_float(0x7FC00000);
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e)
      if (e < 2 ? sums.nan0 : sums.nan1) sums.acc[nt][e] = nan;

  if (!gatherWarpSums(partial, sums.acc, warp, warps, lane)) return;
  // Column c = 3 m + l holds limb l of token m: y = c0 2^-9 + c1 2^-2 + c2 2^5 (+ NaN for a non-finite token).
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) columns[g + (e < 2 ? 0 : 8)][8 * nt + 2 * t + (e & 1)] = sums.acc[nt][e];
  if (lane < M) {  // the token's NaN flags (0 or NaN each)
    float flag = 0.0f;
    for (int b = 0; b < p.nanFlagsPerToken; ++b) flag += p.xNanFlags[lane * p.nanFlagsPerToken + b];
    nanAdd[lane] = flag;
  }
  __syncwarp();
  for (int index = lane; index < 16 * M; index += 32) {
    const int r = index & 15, m = index >> 4, n = blockIdx.x * 16 + r;
    if (n >= p.N) continue;
    const float* c = columns[r] + kLimbs * m;
    storeOutput(p, m, n, (fmaf(c[1], 0x1p-2f, c[0] * 0x1p-9f) + c[2] * 0x1p5f) + nanAdd[m]);
  }
}

template <int NT, int kMaxWarps>
cudaError_t launchT(const DecodeParams& p, int warps, cudaStream_t stream) {
  const dim3 grid((p.N + 15) / 16), block(32 * warps);
  if (p.wFormat == Fp8Format::E4M3) return launchDependent(gemvInt8Kernel<NT, true, kMaxWarps>, grid, block, 0, stream, p);
  return launchDependent(gemvInt8Kernel<NT, false, kMaxWarps>, grid, block, 0, stream, p);
}

}  // namespace

bool gemvInt8Supported(const DecodeParams& p) {
  return p.G == kIntRoundK && p.K % kIntRoundK == 0 && e4m3Family(p.wFormat) && !p.actE5M2 && p.M >= 1 &&
         p.M <= kIntMaxTokens;
}

size_t gemvInt8ScratchBytes(int K) { return IntegerActivationsLayout(K, prepBlocks(K)).total; }


int gemvInt8PrepFlagsPerToken(int K) { return prepBlocks(K); }

cudaError_t launchLimbs(const uint8_t* x8, int M, int K, Fp8Format actFormat, void* buffer, cudaStream_t stream) {
  const IntegerParts parts = IntegerActivationsLayout(K, prepBlocks(K)).parts(buffer);
  return launchDependent(limbsKernel, dim3(prepBlocks(K), M), dim3(kPrepThreads), 0, stream, x8, M, K,
                         actFormat == Fp8Format::E4M3, parts.limbs, parts.sums, parts.flags);
}

cudaError_t launchGemvInt8(DecodeParams p, Fp8Format actFormat, int warps, void* scratch, bool prepared,
                           int flagsPerToken, cudaStream_t stream) {
  if (!gemvInt8Supported(p) || !e4m3Family(actFormat) || warps < 1 || warps > kGemvInt8MaxWarps)
    return cudaErrorInvalidValue;
  if (!prepared) flagsPerToken = prepBlocks(p.K);
  const IntegerParts parts = IntegerActivationsLayout(p.K, flagsPerToken).parts(scratch);
  p.xLimbs = parts.limbs;
  p.xLimbSums = parts.sums;
  p.xNanFlags = parts.flags;
  p.nanFlagsPerToken = flagsPerToken;
  if (!prepared) {
    const cudaError_t e = launchLimbs(p.x8, p.M, p.K, actFormat, scratch, stream);
    if (e != cudaSuccess) return e;
  }
  const int columns = kLimbs * p.M;
  if (columns <= 8) return warps > 4 ? launchT<1, 8>(p, warps, stream) : launchT<1, 4>(p, warps, stream);
  if (warps > 4) return cudaErrorInvalidValue;  // 3-8 tokens: at most 4 warps
  return columns <= 16 ? launchT<2, 4>(p, warps, stream) : launchT<3, 4>(p, warps, stream);
}

}  // namespace w4a8::cudakern
