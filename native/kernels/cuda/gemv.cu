// Fused W4A8 GEMV for 1-16 tokens (decode at batch 1-16):
//   Y[M, N] = (s_x[m] * s_c[n]) * sum_k x8[m, k] * w8[n, k],   w8 = fp8(fl32(s_g (q - z))) from INT4 codes.
// Memory-bound: every weight byte is read once, so the kernel's job is to keep enough loads in flight and to
// spend few instructions per byte. Compared with decode_gemm.cuh (which stages activations per 512-k chunk
// behind two barriers and splits K over CTAs with FP32 partials in global memory), this kernel:
//   - gives each CTA 16 output channels (one m16 MMA tile) and ALL of K, split over its warps in contiguous
//     ranges; the warps' sums meet in shared memory at the end, in warp order (deterministic), so there is
//     no split-K scratch, ticket or second pass;
//   - streams each lane's weights through a ring of kDepth rounds of registers: as soon as a round is
//     computed its registers are reloaded with the round kDepth ahead, so about kDepth rounds per lane are
//     always in flight (with the L2::256B hint the next rounds of a row are already on their way to L2);
//   - builds each group's 16-entry FP8 table once per group and lane quad (G = 128: each of the 4 lanes
//     that share the group converts 4 of the 16 entries and the quad swaps them with shuffles);
//   - reads activations straight from global memory (L1-resident: all CTAs of an SM read the same x).
// Lanes: (g, t) = (lane / 4, lane % 4). Round r of a warp = 128 k; lane t holds k [128 r + 32 t, + 32) of
// rows g and g + 8 of the tile: one 16-byte load per row (the quad's loads cover 64 contiguous bytes of a
// row, a warp's 8 rows x 64 bytes), one group per row (G >= 32), four 32-bit words of 8 k each. Word i
// feeds two m16n8k16 FP16 MMAs (FP8 -> FP16 is exact, products exact, FP32 sums) whose k slots hold this
// lane's k in both A (weights) and B (activations of token g, and g + 8 for the second token tile): any
// consistent assignment of k to slots gives the same sum (device_common.cuh).
//
// Status (H200, 2026-12-01, native/tests/cuda/RESULTS.md): within 5.3e-8 of the reference, deterministic.
// 0.20-0.35 of HBM bandwidth at 1-16 tokens (0.43 on 8192x28672); against the split-K kernel 12-35 % faster on
// 4096x4096, even on 8192x8192 at 2-16 tokens, 2-4 % slower on 8192x28672, so Auto ran it on rows of
// K <= 4096 only (since the fourth session's changes below also up to 8 tokens on rows of K <= 12288:
// cuda_backend.cu). Not memory-bound: its loads alone stream at 0.87 of HBM bandwidth, and with the
// weights resident in L2 it is no faster. Nsight Compute: ~280 instructions per warp and 1 KiB round (~4.4
// per weight and lane: the table lookup, 11 integer ops per 8 weights; FP8 -> FP16 conversions, which run
// at a quarter of the FP32 rate; table building; addressing), 0.45 instructions issued per scheduler and
// cycle, stalls on the math pipes and fixed-latency dependencies. (2026-12-02, gemv_int8.cu: the same layout
// with 36 % fewer instructions per round ran no faster at 3 CTAs an SM, and 1.4x faster than this kernel at 4,
// this kernel's own occupancy: fewer instructions pay only with enough warps to hide the loads.)
// Reaching 0.7 of HBM needs fewer
// instructions per weight, not more bytes in flight: ring depth, warps per CTA, register caps (more warps
// per SM) and activations converted to FP16 once per call (a pre-pass) did not help; nor did each CTA
// converting all of x into shared memory first (2026-12-01: 4-12 % slower at 1-2 tokens, the weight loads
// start later). What did help (same day): the Gaudi-2 cap as a template argument and unsigned offsets,
// 280 -> 244 instructions per e4m3fn round, 6-8 % faster; and (fourth session) a programmatic dependent
// launch whose first weight loads overlap the previous kernel, 3-16 % faster back to back, and two MMA
// accumulator chains per round, 3-4 % more. Tried and not kept (RESULTS.md): FP8 mma.sync (emulated on sm_90
// by the same conversions and FP16 MMAs), a cp.async ring in shared memory (slower), an exact FP16 decode for
// power-of-two scales (0-15 %, rarely applicable).
#include <cstdint>
#include <type_traits>

#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/internal.h"

namespace w4a8::cudakern {
namespace {

constexpr int kRoundK = 128;
// Rounds of weights in flight per lane. Measured on the H200 (2026-12-01): a 2-round ring is as fast, a
// 6-round ring or a register cap of 85 (more warps per SM, some spills) slower: the kernel is bound by its
// arithmetic (see the status note at the top), not by loads in flight.
constexpr int kDepth = 4;

// Four table entries of weight format kE5M2 / e4m3 family: e4m3fn's codes, and for Gaudi-2 e4m3 (kCapped)
// the magnitudes capped at 0x77, its largest finite code, as encode4 does. (The cap is a template argument:
// __vminu4 is a dozen integer instructions on sm_90, about a tenth of an e4m3fn round when it was computed
// with a cap of 0x7F for every format.)
template <bool kE5M2, bool kCapped>
__device__ __forceinline__ uint32_t encode4Fast(float v0, float v1, float v2, float v3) {
  if (kE5M2) return cvtPairE5M2(v0, v1) | (cvtPairE5M2(v2, v3) << 16);
  const uint32_t w = cvtPairE4M3fn(v0, v1) | (cvtPairE4M3fn(v2, v3) << 16);
  if (!kCapped) return w;
  return __vminu4(w & 0x7F7F7F7Fu, 0x77777777u) | (w & 0x80808080u);
}

// The group table of (s, z) for the kShare lanes of a quad that hold the same group (kShare = G / 32):
// this lane converts table words [u * kWords, (u + 1) * kWords), u = its index among them, then gathers
// all four words from its partners. The values of buildGroupLut's fast path (fl32(s * (q - z)), then the
// FP8 rounding); the caller has checked that |s| < 2^119 for every lane of the warp.
template <int kShare, bool kE5M2, bool kCapped>
__device__ __forceinline__ void sharedGroupLut(float s, int z, int lane, uint32_t lut[4]) {
  constexpr int kWords = 4 / kShare;
  const int u = lane & (kShare - 1);
  const float zf = (float)z;
  uint32_t mine[kWords];
#pragma unroll
  for (int j = 0; j < kWords; ++j) {
    const float q = (float)(4 * (u * kWords + j));
    mine[j] = encode4Fast<kE5M2, kCapped>(s * (q - zf), s * (q + 1.0f - zf), s * (q + 2.0f - zf), s * (q + 3.0f - zf));
  }
#pragma unroll
  for (int w = 0; w < 4; ++w)
    lut[w] = kShare == 1 ? mine[w % kWords] : __shfl_sync(0xffffffffu, mine[w % kWords], (lane & ~(kShare - 1)) | (w / kWords));
}

// kWeightsE5M2 / kActE5M2: the FP8 -> FP16 conversions of the two operands (e4m3fn and Gaudi-2 e4m3 share
// codes for every finite value, so one conversion serves both); kCapped: Gaudi-2 e4m3 weights (table entries
// capped at its largest finite value).
template <int NT, int G, bool kWeightsE5M2, bool kCapped, bool kActE5M2>
__global__ void __launch_bounds__(256) gemvKernel(const DecodeParams p) {
  constexpr int kShare = G / 32;
  __shared__ float partial[7][NT * 4][32];  // warps 1..7's sums, read by warp 0

  const int K = p.K, M = p.M;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int row0 = blockIdx.x * 16 + g, row1 = row0 + 8;
  const RowStreams w0 = rowStreams(p, row0), w1 = rowStreams(p, row1);

  // This warp's contiguous range of rounds.
  const int rounds = (K + kRoundK - 1) / kRoundK;
  const int r0 = (int)((long long)warp * rounds / warps), r1 = (int)((long long)(warp + 1) * rounds / warps);

  // Pieces past K (or past the warp's range) read nothing: scale 0 and zero point 0 make an all-zero table.
  // Offsets are unsigned 32-bit (k >= 0, and a row's codes, scales and x are far below 4 GiB), so k / 2 and
  // k / G are plain shifts: with signed ints the address arithmetic of the six loads per round took about
  // 40 instructions, a sixth of a round.
  auto load = [&](int r, GemvPiece& pc) {
    const unsigned k = (unsigned)r * kRoundK + 32u * t;
    const bool in = r < r1 && k < (unsigned)K;
    pc.w0 = pc.w1 = make_uint4(0, 0, 0, 0);
    pc.s0 = pc.s1 = 0.0f;
    pc.z0 = pc.z1 = 0;
    if (in) {
      pc.w0 = loadStreaming(w0.codes + k / 2u);
      pc.w1 = loadStreaming(w1.codes + k / 2u);
      const unsigned gi = k / (unsigned)G;
      pc.s0 = __ldg(w0.scales + gi);
      pc.s1 = __ldg(w1.scales + gi);
      pc.z0 = __ldg(w0.zeros + gi);
      pc.z1 = __ldg(w1.zeros + gi);
    }
  };
  // Activations of tokens g (+ 8 nt) at this lane's 32 k of round r, FP8 (two 16-byte loads each), from
  // L1: every CTA of the SM reads the same x. (Converting them to FP16 once per call in a pre-pass, so that
  // no CTA converts them, measured no faster on the H200 and costs a launch.)
  const uint8_t* xRow[NT];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) xRow[nt] = g + 8 * nt < M ? p.x8 + (size_t)(g + 8 * nt) * K : nullptr;
  auto loadX = [&](int r, uint4 xa[NT][2]) {
    const unsigned k = (unsigned)r * kRoundK + 32u * t;
    const bool in = r < r1 && k < (unsigned)K;
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      xa[nt][0] = xa[nt][1] = make_uint4(0, 0, 0, 0);
      if (xRow[nt] && in) {
        const uint4* src = reinterpret_cast<const uint4*>(xRow[nt] + k);
        xa[nt][0] = __ldg(src);
        xa[nt][1] = __ldg(src + 1);
      }
    }
  };

  // Two accumulator sets, k 0-3 and k 4-7 of every word (added together at the end): the MMAs of a round form
  // two dependent chains of 4 instead of one of 8.
  float acc[NT][4], acc2[NT][4];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[nt][e] = acc2[nt][e] = 0.0f;

  // kFast: every scale of the warp's ring is below 2^119 (the tables need no software encoder).
  auto compute = [&](const GemvPiece& pc, const uint4 xa[NT][2], auto fast) {
    uint32_t lut0[4], lut1[4];
    if constexpr (decltype(fast)::value) {
      sharedGroupLut<kShare, kWeightsE5M2, kCapped>(pc.s0, pc.z0, lane, lut0);
      sharedGroupLut<kShare, kWeightsE5M2, kCapped>(pc.s1, pc.z1, lane, lut1);
    } else {
      buildGroupLut(pc.s0, pc.z0, p.wFormat, lut0);
      buildGroupLut(pc.s1, pc.z1, p.wFormat, lut1);
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {  // word i: k + 8 i .. k + 8 i + 7
      uint32_t lo0, hi0, lo1, hi1;
      lookup8(word(pc.w0, i), lut0, lo0, hi0);
      lookup8(word(pc.w1, i), lut1, lo1, hi1);
      uint32_t a[8];
      wordToF16<kWeightsE5M2>(lo0, lo1, hi0, hi1, a);
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const uint4& x = xa[nt][i >> 1];  // FP8 x at k + 8 i .. + 7: words 2 (i & 1) and 2 (i & 1) + 1
        uint32_t b01, b23, b45, b67;
        fp8x4ToF16<kActE5M2>(word(x, 2 * (i & 1)), b01, b23);
        fp8x4ToF16<kActE5M2>(word(x, 2 * (i & 1) + 1), b45, b67);
        mmaF16(acc[nt], a[0], a[1], a[2], a[3], b01, b23);
        mmaF16(acc2[nt], a[4], a[5], a[6], a[7], b45, b67);
      }
    }
  };

  // The ring: after computing slot d, refill it with the round kDepth ahead. Activations run one round
  // ahead (xbuf[d & 1] holds round r + d; kDepth is even, so the parity carries over between passes).
  static_assert(kDepth % 2 == 0, "xbuf parity");
  GemvPiece ring[kDepth];
  uint4 xbuf[2][NT][2];
#pragma unroll
  for (int d = 0; d < kDepth; ++d) load(r0 + d, ring[d]);
  // Launched as a programmatic dependent (launchGemv): the first rounds of weights, which no kernel writes,
  // are on their way while the previous kernel (the activation quantization) finishes; x8, xScales and y only
  // after it has. The next kernel may start its own weight loads as this one's CTAs leave.
  pdlWaitForPrevious();
  pdlLaunchDependents();
  loadX(r0, xbuf[0]);
  for (int r = r0; r < r1; r += kDepth) {
#pragma unroll
    for (int d = 0; d < kDepth; ++d) {
      loadX(r + d + 1, xbuf[(d + 1) & 1]);
      // One vote per round on scales loaded kDepth rounds ago (a vote on fresher loads would wait for them).
      if (__all_sync(0xffffffffu, fabsf(ring[d].s0) < 0x1p119f && fabsf(ring[d].s1) < 0x1p119f))
        compute(ring[d], xbuf[d & 1], std::true_type());
      else  // a scale of 2^119 or more, inf or NaN in the warp: each lane builds its tables in full
        compute(ring[d], xbuf[d & 1], std::false_type());
      load(r + d + kDepth, ring[d]);
    }
  }

#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[nt][e] += acc2[nt][e];

  if (gatherWarpSums(partial, acc, warp, warps, lane)) storeFragments<NT>(p, acc, row0, t);
}

template <int NT, int G, bool kWeightsE5M2, bool kCapped>
cudaError_t launchT(const DecodeParams& p, int warps, cudaStream_t stream) {
  // A programmatic dependent launch (device_common.cuh): the kernel's prologue overlaps the previous kernel.
  const dim3 grid((p.N + 15) / 16), block(32 * warps);
  if (p.actE5M2) return launchDependent(gemvKernel<NT, G, kWeightsE5M2, kCapped, true>, grid, block, 0, stream, p);
  return launchDependent(gemvKernel<NT, G, kWeightsE5M2, kCapped, false>, grid, block, 0, stream, p);
}

template <int NT, int G>
cudaError_t launchW(const DecodeParams& p, int warps, cudaStream_t stream) {
  switch (p.wFormat) {
    case Fp8Format::E5M2: return launchT<NT, G, true, false>(p, warps, stream);
    case Fp8Format::E4M3: return launchT<NT, G, false, true>(p, warps, stream);
    default: return launchT<NT, G, false, false>(p, warps, stream);
  }
}

template <int NT>
cudaError_t launchG(const DecodeParams& p, int warps, cudaStream_t stream) {
  switch (p.G) {
    case 32: return launchW<NT, 32>(p, warps, stream);
    case 64: return launchW<NT, 64>(p, warps, stream);
    case 128: return launchW<NT, 128>(p, warps, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

cudaError_t launchGemv(const DecodeParams& p, int warps, cudaStream_t stream) {
  if (p.M < 1 || p.M > kGemvMaxTokens || warps < 1 || warps > 8) return cudaErrorInvalidValue;
  return p.M <= 8 ? launchG<1>(p, warps, stream) : launchG<2>(p, warps, stream);
}

}  // namespace w4a8::cudakern
