// What the addon and the model runtime call: the whole GEMM (all N output channels) and activation
// quantization (bit-exact with the reference), on the backend chosen at load time, over all threads.
#pragma once
#include "kernels/kernels.h"

namespace w4a8 {

void runGemmW4A8(const W4A8GemmArgs& a);
void runGemmW8A8(const W8A8GemmArgs& a);
void runGemmW4A16(const W4A16GemmArgs& a);
void runGemmF32(const F32GemmArgs& a);
void runQuantizeActivationsDynamic(const float* x, int M, int K, Fp8Format f, uint8_t* x8, float* xScales);
void runQuantizeActivationsStatic(const float* x, int M, int K, float scale, Fp8Format f, uint8_t* x8, float* xScales);
const char* gemmBackendName();
const char* gemmBackendReason();

}  // namespace w4a8
