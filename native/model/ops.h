// Small FP32 operations of the decoder step (compiled for AVX512 / AVX2 / baseline with target clones).
#pragma once
#include <cstdint>
#include <functional>

namespace w4a8 {

float dot(const float* a, const float* b, int n);
void axpy(float alpha, const float* x, float* y, int n);  // y += alpha * x
void softmax(float* x, int n);
// out[r] = x[r] / rms(x[r]) * weight, rows of `dim` floats.
void rmsNorm(const float* x, const float* weight, float* out, int rows, int dim, float eps);
// Rotate-half RoPE (Hugging Face convention) on `heads` consecutive head vectors at one position.
void rope(float* v, int heads, int headDim, int position, const float* inverseFrequencies);
void bf16RowToFloat(const uint16_t* in, float* out, int n);
// y [M, N] = x [M, K] · wᵀ with w [N, K] BF16, FP32 accumulation; split over output channels.
void gemmBf16Weights(const float* x, int M, const uint16_t* w, int N, int K, float* y);
// Runs fn(begin, end) over [0, count) on the kernel thread pool.
void parallelFor(int count, const std::function<void(int, int)>& fn);

}  // namespace w4a8
