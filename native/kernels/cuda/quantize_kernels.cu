// Element-wise kernels of the CUDA backend: activation quantization (bit-exact with the reference: same
// NaN-ignoring amax, IEEE FP32 division, fp8.h's fp8Encode), INT4 -> FP8 dequantization (the prefill path's
// weights, through the same group table as the fused GEMM), the scale epilogue of the prefill fallback, and
// the conversion test hook.
#include "kernels/cuda/device_common.cuh"
#include "kernels/cuda/integer_activations.cuh"
#include "kernels/cuda/internal.h"

namespace w4a8::cudakern {
namespace {

constexpr int kRowThreads = 1024;  // one CTA per token row: decode steps have few rows, so wide CTAs

// std::max(amax, |x|) as the reference writes it: a NaN never compares greater, so it is ignored.
__device__ __forceinline__ float maxIgnoringNaN(float a, float b) { return a < b ? b : a; }

// One CTA per token row. x: [M, K] FP32; x8: [M, K]; xScales: [M]. With `integer` set (E4M3-family f, M <= 8,
// K % 128 == 0), also the integer GEMV's limbs, limb sums and one NaN flag per token (integer_activations.cuh).
__global__ void __launch_bounds__(kRowThreads) quantizeRowsKernel(const float* __restrict__ x, int M, int K, Fp8Format f,
                                                                  bool dynamic, float staticScale,
                                                                  uint8_t* __restrict__ x8,
                                                                  float* __restrict__ xScales, IntegerParts integer) {
  __shared__ float warpMax[kRowThreads / 32];
  pdlLaunchDependents();  // the GEMV after it may start now and load its weights (it waits before reading x8)
  const int m = blockIdx.x;
  const float* row = x + (size_t)m * K;
  float scale = staticScale;
  if (dynamic) {
    float amax = 0.0f;
    for (int k = threadIdx.x; k < K; k += kRowThreads) amax = maxIgnoringNaN(amax, fabsf(row[k]));
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, offset));
    if ((threadIdx.x & 31) == 0) warpMax[threadIdx.x >> 5] = amax;
    __syncthreads();
    amax = warpMax[0];
#pragma unroll
    for (int w = 1; w < kRowThreads / 32; ++w) amax = fmaxf(amax, warpMax[w]);
    scale = amax > 0.0f ? amax / fp8Spec(f).maxFinite : 1.0f;
  }
  if (threadIdx.x == 0) xScales[m] = scale;
  uint8_t* out = x8 + (size_t)m * K;
  for (int k = threadIdx.x; k < K; k += kRowThreads) out[k] = fp8Encode(row[k] / scale, f);
  if (!integer.limbs) return;
  __syncthreads();  // this row's codes, written by every thread, are read back by warps a group at a time
  int nonFinite = 0;
  for (int gi = threadIdx.x >> 5; gi < K / kIntRoundK; gi += kRowThreads / 32)
    nonFinite |= limbGroup(out, m, M, K, gi, f == Fp8Format::E4M3, integer.limbs, integer.sums);
  nonFinite = __syncthreads_or(nonFinite);
  if (threadIdx.x == 0) integer.flags[m] = nonFinite ? __int_as_float(0x7FC00000) : 0.0f;
}

// One thread per 32 weights (16 bytes of codes, inside one group since G >= 32): table, lookup, 32 bytes out.
__global__ void dequantKernel(const Int4WeightsView w, uint8_t* __restrict__ out) {
  const int piecesPerRow = w.cols / 32;
  const size_t index = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (index >= (size_t)w.rows * piecesPerRow) return;
  const int n = (int)(index / piecesPerRow), k = 32 * (int)(index % piecesPerRow);
  const int groups = w.cols / w.groupSize;
  const size_t group = (size_t)n * groups + k / w.groupSize;
  uint32_t lut[4];
  buildGroupLut(w.groupScales[group], w.zeros[group], w.format, lut);
  const uint4 c = *reinterpret_cast<const uint4*>(w.codes + (size_t)n * (w.cols / 2) + k / 2);
  uint4 lo, hi;
  lookup8(c.x, lut, lo.x, lo.y);
  lookup8(c.y, lut, lo.z, lo.w);
  lookup8(c.z, lut, hi.x, hi.y);
  lookup8(c.w, lut, hi.z, hi.w);
  uint4* dst = reinterpret_cast<uint4*>(out + (size_t)n * w.cols + k);
  dst[0] = lo;
  dst[1] = hi;
}

__global__ void scaleEpilogueKernel(const float* __restrict__ acc, int ldAcc, const float* __restrict__ xScales,
                                    const float* __restrict__ channelScales, int M, int N, float* yF32,
                                    uint16_t* yBf16, int ldy) {
  const size_t index = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (index >= (size_t)M * N) return;
  const int m = (int)(index / N), n = (int)(index % N);
  const float value = (xScales[m] * channelScales[n]) * acc[(size_t)m * ldAcc + n];
  if (yF32) yF32[(size_t)m * ldy + n] = value;
  else yBf16[(size_t)m * ldy + n] = floatToBf16(value);
}

__global__ void encodeKernel(const float* __restrict__ in, uint8_t* __restrict__ out, size_t count, Fp8Format f) {
  const size_t index = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (index < count) out[index] = encodeOne(in[index], f);
}

unsigned blocksFor(size_t items, int threads) { return (unsigned)((items + threads - 1) / threads); }

}  // namespace

cudaError_t launchQuantize(const float* x, int M, int K, bool dynamic, float scale, Fp8Format f, uint8_t* x8,
                           float* xScales, void* integerBuffer, cudaStream_t stream) {
  const IntegerParts integer =
      integerBuffer ? IntegerActivationsLayout(K, 1).parts(integerBuffer) : IntegerParts{nullptr, nullptr, nullptr};
  quantizeRowsKernel<<<M, kRowThreads, 0, stream>>>(x, M, K, f, dynamic, scale, x8, xScales, integer);
  return cudaGetLastError();
}

cudaError_t launchDequantInt4ToFp8(const Int4WeightsView& w, uint8_t* out, cudaStream_t stream) {
  const size_t pieces = (size_t)w.rows * (w.cols / 32);
  dequantKernel<<<blocksFor(pieces, 256), 256, 0, stream>>>(w, out);
  return cudaGetLastError();
}

cudaError_t launchScaleEpilogue(const float* acc, int ldAcc, const float* xScales, const float* channelScales, int M,
                                int N, float* yF32, uint16_t* yBf16, int ldy, cudaStream_t stream) {
  scaleEpilogueKernel<<<blocksFor((size_t)M * N, 256), 256, 0, stream>>>(acc, ldAcc, xScales, channelScales, M, N,
                                                                          yF32, yBf16, ldy);
  return cudaGetLastError();
}

cudaError_t launchEncodeFp8(const float* in, uint8_t* out, size_t count, Fp8Format f, cudaStream_t stream) {
  encodeKernel<<<blocksFor(count, 256), 256, 0, stream>>>(in, out, count, f);
  return cudaGetLastError();
}

}  // namespace w4a8::cudakern
