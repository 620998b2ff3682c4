// Small FP32 operations of the decoder step (compiled for AVX512 / AVX2 / baseline with target clones).
#pragma once
#include <cstdint>
#include <functional>

namespace w4a8 {

float dot(const float* a, const float* b, int n);
void axpy(float alpha, const float* x, float* y, int n);  // y += alpha * x
void softmax(float* x, int n);
// log Σ e^x[i] (the log-softmax of x[i] is x[i] minus it; e^x within 2e-8, sums in FP32 lanes, blocks in FP64), and
// the ids of the topCount largest x in topIds, largest first (ties: lower id first; NaN never listed). For log
// probabilities. (The vectorized bodies sum in their own lane orders: the last bit can differ between CPUs.)
double logSoftmaxTop(const float* x, int n, int topCount, int* topIds);
// out[r] = x[r] / rms(x[r]) * weight, rows of `dim` floats.
void rmsNorm(const float* x, const float* weight, float* out, int rows, int dim, float eps);
// x[r] += residual[r] (when residual is not null), then out[r] = x[r] / rms(x[r]) * weight, for rows
// [rowBegin, rowEnd) of `dim` floats: the residual add of one block fused with the next block's norm.
void addRmsNorm(float* x, const float* residual, const float* weight, float* out, int rowBegin, int rowEnd, int dim,
                float eps);
// Rotate-half RoPE (Hugging Face convention) on `heads` consecutive head vectors at one position (headDim <= 1024).
void rope(float* v, int heads, int headDim, int position, const float* inverseFrequencies);
// The same in two parts: the cosines and sines of one position (half = headDim / 2 of each), then the rotation
// of `heads` head vectors by them (a step takes the angles of each row once and rotates q and k in every layer).
void ropeAngles(int position, int half, const float* inverseFrequencies, float* cosines, float* sines);
void rotate(float* v, int heads, int headDim, const float* cosines, const float* sines);
// gate[i] = silu(gate[i]) * up[i] = gate[i] / (1 + e^-gate[i]) * up[i], with a vectorized e^x (relative
// error below 2 ulp; saturates to 0 / inf outside the FP32 range like expf).
void swiglu(float* gate, const float* up, size_t n);
// e^x of that vectorized body (tests compare it with std::exp).
float fastExp(float x);
void bf16RowToFloat(const uint16_t* in, float* out, int n);
// y [M, N] = x [M, K] · wᵀ with w [N, K] BF16, FP32 products and accumulation; split over output channels.
// The body follows the kernel backend (W4A8_ISA): scalar for reference, AVX2 or AVX-512 otherwise.
void gemmBf16Weights(const float* x, int M, const uint16_t* w, int N, int K, float* y);
// The same with a given body ("reference", "avx2", "avx512"); false when this CPU cannot run it (tests).
bool gemmBf16WeightsWith(const char* isa, const float* x, int M, const uint16_t* w, int N, int K, float* y);
// The keys of one KV head are stored in blocks of kKeyBlock positions, element-major within a block:
//   keyBlocks[(t / kKeyBlock) * headDim * kKeyBlock + i * kKeyBlock + t % kKeyBlock] = element i of key t,
// so that attention reads kKeyBlock positions' element i as one vector (a score per lane, no horizontal sums).
// Positions past those stored must hold zeros (finite values) up to the end of their block.
constexpr int kKeyBlock = 16;
void storeKey(float* keyBlocks, int headDim, int position, const float* key);
void storeKey(uint16_t* keyBlocks, int headDim, int position, const float* key);  // BF16, rounded to nearest even
// Attention of the `heads` query heads that share one KV head, at one position: for each head h,
//   out[h] = Σ_t softmax_t(q[h]·keys[t] * scale) values[t]   over t in [0, positions)
// q, out: [heads, headDim]; keyBlocks: the head's keys as above; values[t] are `valueStride` floats apart;
// scores: [heads * positions] scratch. The keys and the values are each read once per 4 heads.
void attendGroup(const float* q, int heads, int headDim, const float* keyBlocks, const float* values,
                 size_t valueStride, int positions, float scale, float* scores, float* out);
// The same over a BF16 cache (keys and values widened to FP32 as they are read; the arithmetic is the same).
void attendGroupBf16(const float* q, int heads, int headDim, const uint16_t* keyBlocks, const uint16_t* values,
                     size_t valueStride, int positions, float scale, float* scores, float* out);
// attendGroup (bf16: attendGroupBf16) with a given body: "reference" (the x86-64 baseline), "avx2" or "avx512";
// false when this CPU cannot run it (tests). The bodies above follow the kernel backend (W4A8_ISA).
bool attendGroupWith(const char* isa, const float* q, int heads, int headDim, const void* keyBlocks,
                     const void* values, bool bf16, size_t valueStride, int positions, float scale, float* scores,
                     float* out);
// Runs fn(begin, end) over [0, count) on the kernel thread pool.
void parallelFor(int count, const std::function<void(int, int)>& fn);

}  // namespace w4a8
