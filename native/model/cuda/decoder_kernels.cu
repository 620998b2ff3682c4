// Kernels of the GPU decoder step (decoder_kernels.h). Each mirrors a CPU operation of model/llama.cpp or
// model/ops.cpp with the same FP32 arithmetic, only the order of the sums differs.
#include "model/cuda/decoder_kernels.h"

#include <cmath>

#include "fp8/fp8.h"

namespace w4a8::cudamodel {
namespace {

constexpr int kThreads = 256;      // element-wise kernels
constexpr int kRowThreads = 1024;  // one CTA per row (RMSNorm): a decode step has few rows, so wide CTAs

unsigned blocksFor(size_t items, int threads) { return (unsigned)((items + threads - 1) / threads); }

// KV cache elements: FP32, or BF16 rounded to nearest even (fp8.h's floatToBf16 and bf16ToFloat, as the CPU cache
// stores and reads them).
__device__ __forceinline__ void storeKv(float* p, float v) { *p = v; }
__device__ __forceinline__ void storeKv(uint16_t* p, float v) { *p = floatToBf16(v); }
__device__ __forceinline__ float loadKv(const float* p) { return *p; }
__device__ __forceinline__ float loadKv(const uint16_t* p) { return bf16ToFloat(*p); }

__device__ __forceinline__ float warpSum(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__global__ void embedKernel(const RowInfo* __restrict__ rows, const uint16_t* __restrict__ table, int dim,
                            float* __restrict__ x) {
  const uint16_t* src = table + (size_t)rows[blockIdx.x].token * dim;
  float* dst = x + (size_t)blockIdx.x * dim;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = bf16ToFloat(src[i]);
}

// One CTA per output row. The sum of squares in FP64, as ops.cpp's rmsNorm, so the scale differs from the
// CPU's by the order of an FP64 sum only.
__global__ void __launch_bounds__(kRowThreads) rmsNormKernel(float* __restrict__ x, const float* __restrict__ delta,
                                                          const float* __restrict__ weight,
                                                          const int* __restrict__ rowIndex, int dim, float eps,
                                                          float* __restrict__ out) {
  __shared__ double warpSums[kRowThreads / 32];
  __shared__ float inverseRms;
  const int source = rowIndex ? rowIndex[blockIdx.x] : blockIdx.x;
  float* row = x + (size_t)source * dim;
  double squares = 0;
  if (delta) {
    const float* d = delta + (size_t)source * dim;
    for (int i = threadIdx.x; i < dim; i += kRowThreads) {
      const float v = row[i] + d[i];
      row[i] = v;
      squares += (double)v * v;
    }
  } else {
    for (int i = threadIdx.x; i < dim; i += kRowThreads) squares += (double)row[i] * row[i];
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) squares += __shfl_xor_sync(0xffffffffu, squares, offset);
  if ((threadIdx.x & 31) == 0) warpSums[threadIdx.x >> 5] = squares;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0;
    for (int w = 0; w < kRowThreads / 32; ++w) total += warpSums[w];
    inverseRms = (float)(1.0 / sqrt(total / dim + (double)eps));
  }
  __syncthreads();
  const float scale = inverseRms;
  float* o = out + (size_t)blockIdx.x * dim;
  for (int i = threadIdx.x; i < dim; i += kRowThreads) o[i] = row[i] * scale * weight[i];
}

__global__ void addKernel(float* __restrict__ x, const float* __restrict__ delta, size_t count) {
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < count) x[i] += delta[i];
}

__global__ void padRowsKernel(const float* __restrict__ x, int width, int stride, int cols, float* __restrict__ out) {
  const float* src = x + (size_t)blockIdx.x * stride;
  float* dst = out + (size_t)blockIdx.x * cols;
  for (int i = threadIdx.x; i < cols; i += blockDim.x) dst[i] = i < width ? src[i] : 0.0f;
}

__global__ void addBiasKernel(float* __restrict__ y, const float* __restrict__ bias, int rows, int n) {
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < (size_t)rows * n) y[i] += bias[i % n];
}

// One CTA per row: the (head, i) rotations of q and k (i < headDim / 2 pairs element i with i + half), then
// the row's k and v into its caches.
template <typename T>
__global__ void ropeStoreKernel(const RowInfo* __restrict__ rows, float* __restrict__ q, float* __restrict__ k,
                                const float* __restrict__ v, int stride, int nHeads, int nKvHeads, int headDim,
                                const float* __restrict__ inverseFrequencies, int layer) {
  const RowInfo row = rows[blockIdx.x];
  const int half = headDim / 2, kvDim = nKvHeads * headDim;
  float* qr = q + (size_t)blockIdx.x * stride;
  float* kr = k + (size_t)blockIdx.x * stride;
  const float* vr = v + (size_t)blockIdx.x * stride;
  const size_t at = ((size_t)layer * row.capacity + row.position) * kvDim;
  for (int p = threadIdx.x; p < (nHeads + nKvHeads) * half; p += blockDim.x) {
    const bool isKey = p >= nHeads * half;
    const int pair = isKey ? p - nHeads * half : p;
    const int h = pair / half, i = pair % half;
    const float angle = (float)row.position * inverseFrequencies[i];
    const float c = cosf(angle), s = sinf(angle);
    float* head = (isKey ? kr : qr) + (size_t)h * headDim;
    const float x0 = head[i], x1 = head[i + half];
    const float y0 = x0 * c - x1 * s, y1 = x1 * c + x0 * s;
    head[i] = y0;
    head[i + half] = y1;
    if (isKey) {
      T* keys = static_cast<T*>(row.keys) + at + (size_t)h * headDim;
      storeKv(keys + i, y0);
      storeKv(keys + i + half, y1);
    }
  }
  for (int i = threadIdx.x; i < kvDim; i += blockDim.x) storeKv(static_cast<T*>(row.values) + at + i, vr[i]);
}

// One CTA of 16 warps per (head, row). Warp w takes positions w, w + 16, ...: lanes split the head's
// dimensions (element lane + 32 j), a warp sum gives the score, and an online softmax (running max, sum of
// exponentials, rescaled V accumulator) needs no score buffer; the 4 warps' partial results are merged at
// the end. The same function as the CPU's two-pass softmax, up to the order of the sums.
// (Simple, not flash-decoding: one CTA walks a row's whole context; fine for the short contexts measured.)
constexpr int kAttentionWarps = 16;  // positions interleaved over the warps: the loop is latency-bound

template <int kPerLane, typename T>
__global__ void __launch_bounds__(32 * kAttentionWarps) attentionKernel(const RowInfo* __restrict__ rows,
                                                                       const float* __restrict__ q, int qStride,
                                                                       int nHeads,
                                                                       int nKvHeads, int headDim, int layer,
                                                                       float scale, float* __restrict__ out) {
  __shared__ float warpMax[kAttentionWarps], warpSumExp[kAttentionWarps];
  __shared__ float warpAcc[kAttentionWarps][32 * kPerLane];
  const int h = blockIdx.x, r = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const RowInfo row = rows[r];
  const int kvDim = nKvHeads * headDim, qDim = nHeads * headDim;
  const size_t base = (size_t)layer * row.capacity * kvDim + (size_t)(h / (nHeads / nKvHeads)) * headDim;
  const T* keys = static_cast<const T*>(row.keys) + base;
  const T* values = static_cast<const T*>(row.values) + base;
  const float* qh = q + (size_t)r * qStride + (size_t)h * headDim;
  float qv[kPerLane], acc[kPerLane];
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) {
    const int d = lane + 32 * j;
    qv[j] = d < headDim ? qh[d] : 0.0f;
    acc[j] = 0.0f;
  }
  float runningMax = -INFINITY, sumExp = 0.0f;
  for (int t = warp; t <= row.position; t += kAttentionWarps) {
    const T* kt = keys + (size_t)t * kvDim;
    const T* vt = values + (size_t)t * kvDim;
    float partial = 0.0f, vv[kPerLane];
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) {
      const int d = lane + 32 * j;
      if (d < headDim) partial += qv[j] * loadKv(kt + d);
      vv[j] = d < headDim ? loadKv(vt + d) : 0.0f;
    }
    const float score = warpSum(partial) * scale;
    const float newMax = fmaxf(runningMax, score);
    const float correction = expf(runningMax - newMax), p = expf(score - newMax);
    sumExp = sumExp * correction + p;
#pragma unroll
    for (int j = 0; j < kPerLane; ++j) acc[j] = acc[j] * correction + p * vv[j];
    runningMax = newMax;
  }
  if (lane == 0) warpMax[warp] = runningMax, warpSumExp[warp] = sumExp;
#pragma unroll
  for (int j = 0; j < kPerLane; ++j) warpAcc[warp][lane + 32 * j] = acc[j];
  __syncthreads();
  float overallMax = warpMax[0];
  for (int w = 1; w < kAttentionWarps; ++w) overallMax = fmaxf(overallMax, warpMax[w]);
  float total = 0.0f, weight[kAttentionWarps];
  for (int w = 0; w < kAttentionWarps; ++w) {
    weight[w] = warpSumExp[w] > 0.0f ? expf(warpMax[w] - overallMax) : 0.0f;  // a warp without positions adds 0
    total += warpSumExp[w] * weight[w];
  }
  float* o = out + (size_t)r * qDim + (size_t)h * headDim;
  for (int d = threadIdx.x; d < headDim; d += blockDim.x) {
    float sum = 0.0f;
    for (int w = 0; w < kAttentionWarps; ++w) sum += warpAcc[w][d] * weight[w];
    o[d] = sum / total;
  }
}

__global__ void swiGluKernel(const float* __restrict__ gateUp, int rows, int hidden, float* __restrict__ out) {
  const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i < (size_t)rows * hidden) {
    const size_t r = i / hidden, j = i % hidden;
    const float g = gateUp[r * 2 * hidden + j];
    out[i] = g / (1.0f + expf(-g)) * gateUp[r * 2 * hidden + hidden + j];
  }
}

// lm_head: each warp computes 4 consecutive output rows for a tile of 8 tokens, lanes striding K by 8
// elements (16-byte BF16 loads, when K % 8 == 0), then one warp sum per output.
constexpr int kGemmWarps = 8, kRowsPerWarp = 4, kTokensPerTile = 8;

template <bool kVector>
__global__ void __launch_bounds__(32 * kGemmWarps) bf16GemmKernel(const float* __restrict__ x, int M,
                                                                 const uint16_t* __restrict__ w, int N, int K,
                                                                 float* __restrict__ y) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int n0 = (blockIdx.x * kGemmWarps + warp) * kRowsPerWarp, m0 = blockIdx.y * kTokensPerTile;
  if (n0 >= N) return;
  const int tokens = min(kTokensPerTile, M - m0);
  float acc[kRowsPerWarp][kTokensPerTile];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
    for (int m = 0; m < kTokensPerTile; ++m) acc[r][m] = 0.0f;
  if (kVector) {
    for (int k = lane * 8; k < K; k += 256) {
      float wv[kRowsPerWarp][8];
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        uint4 raw = make_uint4(0, 0, 0, 0);
        if (n0 + r < N) raw = *reinterpret_cast<const uint4*>(w + (size_t)(n0 + r) * K + k);
        const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          wv[r][2 * i] = __uint_as_float(words[i] << 16);
          wv[r][2 * i + 1] = __uint_as_float(words[i] & 0xFFFF0000u);
        }
      }
#pragma unroll
      for (int m = 0; m < kTokensPerTile; ++m) {
        if (m < tokens) {
          const float4* xp = reinterpret_cast<const float4*>(x + (size_t)(m0 + m) * K + k);
          const float4 a = xp[0], b = xp[1];
          const float xv[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
#pragma unroll
          for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
            for (int i = 0; i < 8; ++i) acc[r][m] += xv[i] * wv[r][i];
        }
      }
    }
  } else {
    for (int k = lane; k < K; k += 32) {
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        const float wk = n0 + r < N ? bf16ToFloat(w[(size_t)(n0 + r) * K + k]) : 0.0f;
#pragma unroll
        for (int m = 0; m < kTokensPerTile; ++m)
          if (m < tokens) acc[r][m] += x[(size_t)(m0 + m) * K + k] * wk;
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
    for (int m = 0; m < kTokensPerTile; ++m) {
      const float total = warpSum(acc[r][m]);
      if (lane == 0 && n0 + r < N && m < tokens) y[(size_t)(m0 + m) * N + n0 + r] = total;
    }
}

}  // namespace

cudaError_t launchEmbed(const RowInfo* rows, int count, const uint16_t* table, int dim, float* x, cudaStream_t s) {
  embedKernel<<<count, kThreads, 0, s>>>(rows, table, dim, x);
  return cudaGetLastError();
}

cudaError_t launchRmsNorm(float* x, const float* delta, const float* weight, const int* rowIndex, int rows, int dim,
                          float eps, float* out, cudaStream_t s) {
  rmsNormKernel<<<rows, kRowThreads, 0, s>>>(x, delta, weight, rowIndex, dim, eps, out);
  return cudaGetLastError();
}

cudaError_t launchAdd(float* x, const float* delta, size_t count, cudaStream_t s) {
  addKernel<<<blocksFor(count, kThreads), kThreads, 0, s>>>(x, delta, count);
  return cudaGetLastError();
}

cudaError_t launchPadRows(const float* x, int rows, int width, int stride, int cols, float* out, cudaStream_t s) {
  padRowsKernel<<<rows, kThreads, 0, s>>>(x, width, stride, cols, out);
  return cudaGetLastError();
}

cudaError_t launchAddBias(float* y, const float* bias, int rows, int n, cudaStream_t s) {
  addBiasKernel<<<blocksFor((size_t)rows * n, kThreads), kThreads, 0, s>>>(y, bias, rows, n);
  return cudaGetLastError();
}

cudaError_t launchRopeAndStore(const RowInfo* rows, int count, float* q, float* k, const float* v, int stride,
                               int nHeads, int nKvHeads, int headDim, const float* inverseFrequencies, int layer,
                               bool kvBf16, cudaStream_t s) {
  if (kvBf16)
    ropeStoreKernel<uint16_t><<<count, 256, 0, s>>>(rows, q, k, v, stride, nHeads, nKvHeads, headDim, inverseFrequencies, layer);
  else
    ropeStoreKernel<float><<<count, 256, 0, s>>>(rows, q, k, v, stride, nHeads, nKvHeads, headDim, inverseFrequencies, layer);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launchAttentionT(const RowInfo* rows, int count, const float* q, int qStride, int nHeads, int nKvHeads,
                             int headDim, int layer, float* out, cudaStream_t s) {
  const dim3 grid(nHeads, count);
  const float scale = 1.0f / std::sqrt((float)headDim);  // as the CPU step computes it
  const int threads = 32 * kAttentionWarps;
  if (headDim <= 64) attentionKernel<2, T><<<grid, threads, 0, s>>>(rows, q, qStride, nHeads, nKvHeads, headDim, layer, scale, out);
  else if (headDim <= 128) attentionKernel<4, T><<<grid, threads, 0, s>>>(rows, q, qStride, nHeads, nKvHeads, headDim, layer, scale, out);
  else if (headDim <= 256) attentionKernel<8, T><<<grid, threads, 0, s>>>(rows, q, qStride, nHeads, nKvHeads, headDim, layer, scale, out);
  else return cudaErrorInvalidValue;
  return cudaGetLastError();
}

cudaError_t launchAttention(const RowInfo* rows, int count, const float* q, int qStride, int nHeads, int nKvHeads,
                            int headDim, int layer, bool kvBf16, float* out, cudaStream_t s) {
  return kvBf16 ? launchAttentionT<uint16_t>(rows, count, q, qStride, nHeads, nKvHeads, headDim, layer, out, s)
                : launchAttentionT<float>(rows, count, q, qStride, nHeads, nKvHeads, headDim, layer, out, s);
}

cudaError_t launchSwiGlu(const float* gateUp, int rows, int hidden, float* out, cudaStream_t s) {
  swiGluKernel<<<blocksFor((size_t)rows * hidden, kThreads), kThreads, 0, s>>>(gateUp, rows, hidden, out);
  return cudaGetLastError();
}

cudaError_t launchBf16Gemm(const float* x, int M, const uint16_t* w, int N, int K, float* y, cudaStream_t s) {
  const dim3 grid((N + kGemmWarps * kRowsPerWarp - 1) / (kGemmWarps * kRowsPerWarp), (M + kTokensPerTile - 1) / kTokensPerTile);
  const bool vector = K % 8 == 0 && ((uintptr_t)x & 15) == 0 && ((uintptr_t)w & 15) == 0;
  if (vector) bf16GemmKernel<true><<<grid, 32 * kGemmWarps, 0, s>>>(x, M, w, N, K, y);
  else bf16GemmKernel<false><<<grid, 32 * kGemmWarps, 0, s>>>(x, M, w, N, K, y);
  return cudaGetLastError();
}

}  // namespace w4a8::cudamodel
