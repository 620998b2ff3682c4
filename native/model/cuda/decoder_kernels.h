// Kernels of the GPU decoder step (everything but the W4A8 linears, which are kernels/cuda's): simple,
// one job each, FP32 like the CPU step (model/llama.cpp, model/ops.cpp), so that the logits of the two
// differ by summation order only. All launches are asynchronous on `stream`.
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

namespace w4a8::cudamodel {

// Where one row (token) of a step reads and writes: 32 bytes, uploaded once per step.
struct RowInfo {
  int token;        // id in [0, vocab)
  int position;     // its position in its sequence (the KV cache slot it writes)
  int capacity;     // its sequence's KV cache capacity (the stride between layers)
  int pad;
  void* keys;       // its sequence's caches [nLayers][capacity][kvDim], FP32 or BF16 (the launches' kvBf16)
  void* values;
};

// x [rows, dim] = embedding rows of each row's token; table BF16 [vocab, dim].
cudaError_t launchEmbed(const RowInfo* rows, int count, const uint16_t* table, int dim, float* x, cudaStream_t s);

// out [rows, dim] = x[r] / rms(x[r]) * weight (FP64 sum of squares, as ops.cpp). With `delta`, first
// x[r] += delta[r] (the residual add) and the sum is taken over the new x. rowIndex (optional): out row r
// normalises x row rowIndex[r].
cudaError_t launchRmsNorm(float* x, const float* delta, const float* weight, const int* rowIndex, int rows, int dim,
                          float eps, float* out, cudaStream_t s);

// x [rows, n] += delta [rows, n].
cudaError_t launchAdd(float* x, const float* delta, size_t count, cudaStream_t s);

// out [rows, cols] = x [rows, width] (row stride `stride`) padded with zeros to cols >= width.
cudaError_t launchPadRows(const float* x, int rows, int width, int stride, int cols, float* out, cudaStream_t s);

// y [rows, n] += bias [n].
cudaError_t launchAddBias(float* y, const float* bias, int rows, int n, cudaStream_t s);

// Rotate-half RoPE of q [rows, nHeads * headDim] and k [rows, nKvHeads * headDim] at each row's position,
// then k and v [rows, kvDim] stored into the row's caches at (layer, position). q, k and v rows are
// `stride` floats apart (columns of one [rows, qDim + 2 kvDim] buffer). kvBf16: the caches hold BF16 (rounded to
// nearest even, as the CPU's), else FP32.
cudaError_t launchRopeAndStore(const RowInfo* rows, int count, float* q, float* k, const float* v, int stride,
                               int nHeads, int nKvHeads, int headDim, const float* inverseFrequencies, int layer,
                               bool kvBf16, cudaStream_t s);

// out [rows, nHeads * headDim] = softmax(q · Kᵀ / sqrt(headDim)) · V over positions 0..position of each row's
// cache, grouped-query (head h reads KV head h / (nHeads / nKvHeads)). q rows `qStride` apart. headDim <= 256.
cudaError_t launchAttention(const RowInfo* rows, int count, const float* q, int qStride, int nHeads, int nKvHeads,
                            int headDim, int layer, bool kvBf16, float* out, cudaStream_t s);

// out [rows, hidden] = silu(gate) * up, gateUp [rows, 2 hidden] = (gate, up) columns.
cudaError_t launchSwiGlu(const float* gateUp, int rows, int hidden, float* out, cudaStream_t s);

// y [M, N] = x [M, K] · wᵀ, w BF16 [N, K], FP32 products and sums (the lm_head).
cudaError_t launchBf16Gemm(const float* x, int M, const uint16_t* w, int N, int K, float* y, cudaStream_t s);

}  // namespace w4a8::cudamodel
