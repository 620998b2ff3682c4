// Device building blocks shared by the CUDA kernels: FP8 conversions, the INT4 -> FP8 group table and its
// byte-permute lookup, and the mma.sync wrappers. Needs sm_89+ (cvt to/from FP8 pairs); built for sm_90a.
#pragma once
#include <cstdint>
#include <utility>

#include <cuda_runtime.h>

#include "fp8/fp8.h"

namespace w4a8::cudakern {

// ---- FP32 -> FP8 ---------------------------------------------------------------------------------------
// Hardware conversion of two FP32 values, round to nearest even with saturation to the largest finite
// value (cvt ... satfinite): the same as fp8Encode(x, f, saturate = true) for every non-NaN x of e4m3fn and
// e5m2 (checked over random and boundary inputs by the tests). `lo` lands in the low byte. The PTX
// instruction puts its first source operand in the upper byte.
__device__ __forceinline__ uint32_t cvtPairE4M3fn(float lo, float hi) {
  uint16_t r;
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(r) : "f"(hi), "f"(lo));
  return r;
}
__device__ __forceinline__ uint32_t cvtPairE5M2(float lo, float hi) {
  uint16_t r;
  asm("cvt.rn.satfinite.e5m2x2.f32 %0, %1, %2;" : "=h"(r) : "f"(hi), "f"(lo));
  return r;
}

// Four non-NaN FP32 values -> four FP8 codes of format f (byte i = value i). Gaudi-2 e4m3 shares e4m3fn's
// codes for every finite value up to its max 240 (0x77); larger magnitudes saturate there, as fp8Encode does.
__device__ __forceinline__ uint32_t encode4(float v0, float v1, float v2, float v3, Fp8Format f) {
  if (f == Fp8Format::E5M2) return cvtPairE5M2(v0, v1) | (cvtPairE5M2(v2, v3) << 16);
  uint32_t w = cvtPairE4M3fn(v0, v1) | (cvtPairE4M3fn(v2, v3) << 16);
  if (f == Fp8Format::E4M3) w = __vminu4(w & 0x7F7F7F7Fu, 0x77777777u) | (w & 0x80808080u);
  return w;
}

// One value, as the table builder below converts: the hardware path for finite values, the software
// fp8Encode for inf and NaN (whose sign the hardware drops). Used by the conversion test hook.
__device__ __forceinline__ uint8_t encodeOne(float v, Fp8Format f) {
  if (!(fabsf(v) <= 3.402823466e38f)) return fp8Encode(v, f);
  return (uint8_t)(encode4(v, 0.0f, 0.0f, 0.0f, f) & 0xFFu);
}

// ---- the 16-entry group table ---------------------------------------------------------------------------
// lut[q / 4] byte (q % 4) = fp8(fl32(s * (q - z))) for q = 0..15: the 16 dequantized weights of one group
// (DESIGN.md §1, weights.h). (float)(q - z) is exact, so one rounding of the product, then the FP8 rounding.
// Scales whose products could overflow or are not finite (|s| >= 2^119 with |q - z| <= 255, inf, NaN) take
// the software encoder, which handles inf and NaN exactly as the reference does; real weights never do.
static __device__ __noinline__ uint4 groupLutSoftware(float s, int z, Fp8Format f) {
  uint32_t word[4];
#pragma unroll
  for (int w = 0; w < 4; ++w) {
    word[w] = 0;
#pragma unroll
    for (int b = 0; b < 4; ++b) word[w] |= (uint32_t)fp8Encode(s * (float)(4 * w + b - z), f) << (8 * b);
  }
  return make_uint4(word[0], word[1], word[2], word[3]);
}

__device__ __forceinline__ void buildGroupLut(float s, int z, Fp8Format f, uint32_t lut[4]) {
  if (fabsf(s) < 0x1p119f) {
    const float zf = (float)z;
#pragma unroll
    for (int w = 0; w < 4; ++w)
      lut[w] = encode4(s * ((float)(4 * w + 0) - zf), s * ((float)(4 * w + 1) - zf), s * ((float)(4 * w + 2) - zf),
                       s * ((float)(4 * w + 3) - zf), f);
  } else {
    const uint4 v = groupLutSoftware(s, z, f);  // out of line: never taken by real weights
    lut[0] = v.x, lut[1] = v.y, lut[2] = v.z, lut[3] = v.w;
  }
}

// ---- programmatic dependent launch (sm_90) ---------------------------------------------------------------
// A kernel launched with cudaLaunchAttributeProgrammaticStreamSerialization may start while the kernel before
// it in the stream is still running, once that kernel has called pdlLaunchDependents() in every CTA (or its
// CTAs have exited). It must call pdlWaitForPrevious() before it reads anything the previous kernel writes or
// writes anything the previous kernel reads: the wait returns when the previous grid has completed and its
// writes are visible. Both are no-ops for kernels launched without the attribute.
__device__ __forceinline__ void pdlLaunchDependents() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }
__device__ __forceinline__ void pdlWaitForPrevious() { asm volatile("griddepcontrol.wait;" ::: "memory"); }

// Launches `kernel` as a programmatic dependent of the stream's previous kernel.
template <typename... Params, typename... Args>
cudaError_t launchDependent(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                            Args&&... args) {
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = &attribute;
  config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

__device__ __forceinline__ uint32_t prmt(uint32_t a, uint32_t b, uint32_t selector) {
  uint32_t d;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(selector));
  return d;
}

// Eight INT4 codes (nibble i of `codes` = code of weight i, the canonical byte order: low nibble = even k)
// -> their FP8 codes: lo = weights 0..3 (byte i = weight i), hi = weights 4..7. Two 8-entry byte lookups
// (prmt on entries 0-7 and 8-15 with the low 3 bits of each code) and a third prmt that takes each byte
// from the upper table when bit 3 of its code is set: 11 integer instructions for 8 weights.
__device__ __forceinline__ void lookup8(uint32_t codes, const uint32_t lut[4], uint32_t& lo, uint32_t& hi) {
  const uint32_t sel = codes & 0x77777777u;
  const uint32_t pick = ((codes >> 1) & 0x44444444u) | 0x32103210u;
  lo = prmt(prmt(lut[0], lut[1], sel), prmt(lut[2], lut[3], sel), pick);
  const uint32_t selHi = sel >> 16, pickHi = pick >> 16;
  hi = prmt(prmt(lut[0], lut[1], selHi), prmt(lut[2], lut[3], selHi), pickHi);
}

// ---- FP8 -> FP16 (exact: FP16 holds every e4m3 / e5m2 value) --------------------------------------------
// Four FP8 codes (byte i = value i) -> two f16x2: lo = values 0, 1; hi = values 2, 3. Gaudi-2 e4m3 codes of
// finite values are e4m3fn codes, so kE5M2 = false serves E4M3FN and E4M3.
template <bool kE5M2>
__device__ __forceinline__ void fp8x4ToF16(uint32_t v, uint32_t& lo, uint32_t& hi) {
  if (kE5M2)
    asm("{\n .reg .b16 l, h;\n mov.b32 {l, h}, %2;\n cvt.rn.f16x2.e5m2x2 %0, l;\n cvt.rn.f16x2.e5m2x2 %1, h;\n}"
        : "=r"(lo), "=r"(hi) : "r"(v));
  else
    asm("{\n .reg .b16 l, h;\n mov.b32 {l, h}, %2;\n cvt.rn.f16x2.e4m3x2 %0, l;\n cvt.rn.f16x2.e4m3x2 %1, h;\n}"
        : "=r"(lo), "=r"(hi) : "r"(v));
}

// ---- the GEMVs' weight stream (gemv.cu, gemv_int8.cu) ------------------------------------------------------
struct GemvPiece {  // one lane's share of one round: codes, group scale and zero point of rows g and g + 8
  uint4 w0, w1;
  float s0, s1;
  int z0, z1;
};

// 16-byte streaming load: weights are read once (no L1 allocation); the hint asks L2 to fetch the whole
// 256-byte block, i.e. this row's next three rounds too.
__device__ __forceinline__ uint4 loadStreaming(const uint8_t* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

__device__ __forceinline__ uint32_t word(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

// The GEMVs' end: warps 1.. of a CTA hand their FP32 fragments to warp 0 through `partial`, which adds them in
// warp order (deterministic). Every thread calls it; true for warp 0, which then holds the CTA's sums.
template <int NT, int kSlots>
__device__ __forceinline__ bool gatherWarpSums(float (&partial)[kSlots][NT * 4][32], float (&acc)[NT][4], int warp,
                                               int warps, int lane) {
  if (warp > 0) {
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) partial[warp - 1][4 * nt + e][lane] = acc[nt][e];
  }
  __syncthreads();
  if (warp > 0) return false;
  for (int w = 1; w < warps; ++w)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[nt][e] += partial[w - 1][4 * nt + e][lane];
  return true;
}

// ---- tensor-core MMA (warp-wide) --------------------------------------------------------------------------
// Fragments, g = lane / 4, t = lane % 4 (PTX ISA, mma.m16n8k16 .f16 and mma.m16n8k32 .e4m3):
//   A (16 x K): a0 row g, k-slots 0; a1 row g+8, slots 0; a2 row g, slots 1; a3 row g+8, slots 1
//               f16:  slots 0 = k 2t, 2t+1;      slots 1 = k 2t+8, 2t+9
//               e4m3: slots 0 = k 4t .. 4t+3;    slots 1 = k 4t+16 .. 4t+19
//   B (K x 8):  b0 column g, slots 0; b1 column g, slots 1
//   C (16 x 8): c0, c1 row g, columns 2t, 2t+1; c2, c3 row g+8
// Since a sum over k does not care which k sits in which slot, a lane may put any k of its own in its
// slots as long as A and B agree: the GEMM gives each lane a contiguous run of k (see decode_gemm.cuh).
__device__ __forceinline__ void mmaF16(float c[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                       uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// FP8 MMA from zero; the caller adds the result into its FP32 accumulators (one FP22 sum of 32 products per
// call, then FP32: the two-level accumulation of DeepGEMM, which keeps the FP22 error from compounding).
__device__ __forceinline__ void mmaE4M3(float d[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                        uint32_t b1) {
  const float z = 0.0f;
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%10, %10, %10, %10};"
      : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1), "f"(z));
}

// The FP16 A operands of one 32-bit word of codes per row (8 k): lo / hi = FP8 weights k 0..3 / 4..7 of rows
// g (suffix 0) and g + 8 (suffix 1), as lookup8 gives them; a[0..3] feed the MMA of k 0..3, a[4..7] k 4..7.
template <bool kE5M2>
__device__ __forceinline__ void wordToF16(uint32_t lo0, uint32_t lo1, uint32_t hi0, uint32_t hi1, uint32_t a[8]) {
  fp8x4ToF16<kE5M2>(lo0, a[0], a[2]);
  fp8x4ToF16<kE5M2>(lo1, a[1], a[3]);
  fp8x4ToF16<kE5M2>(hi0, a[4], a[6]);
  fp8x4ToF16<kE5M2>(hi1, a[5], a[7]);
}

// acc += the word's 16 x 8 products: two m16n8k16 MMAs with x (FP16 pairs) of k 0-1, 2-3 and 4-5, 6-7.
__device__ __forceinline__ void mmaWordF16(float acc[4], const uint32_t a[8], uint32_t b01, uint32_t b23, uint32_t b45,
                                           uint32_t b67) {
  mmaF16(acc, a[0], a[1], a[2], a[3], b01, b23);
  mmaF16(acc, a[4], a[5], a[6], a[7], b45, b67);
}

}  // namespace w4a8::cudakern
