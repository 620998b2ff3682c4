// Entry points of the fast CPU backends, one namespace per instruction set (same signatures as
// kernels.h). Only dispatch.cpp and tests should name these; everyone else goes through KernelTable.
#pragma once
#include "kernels/kernels.h"

namespace w4a8 {

class ThreadPool;  // runtime/thread_pool.h

// kernels/avx2/: AVX2 + FMA + F16C. W4A8 multiplies exact int16 operands (w4a8_int16.cpp), the rest FP32 FMA.
namespace avx2 {
void gemmW4A8(const W4A8GemmArgs& a, int nBegin, int nEnd);
void gemmW8A8(const W8A8GemmArgs& a, int nBegin, int nEnd);
void gemmW4A16(const W4A16GemmArgs& a, int nBegin, int nEnd);
void gemmF32(const F32GemmArgs& a, int nBegin, int nEnd);
void quantizeActivationsDynamic(const float* x, int M, int K, Fp8Format f, uint8_t* x8, float* xScales);
void quantizeActivationsStatic(const float* x, int M, int K, float scale, Fp8Format f, uint8_t* x8,
                               float* xScales);
}  // namespace avx2

// kernels/avx512/: AVX512 F/BW/VL/DQ/VBMI. The mixed-input GEMMs exist twice: avx512:: multiplies with
// FP32 FMA, avx512bf16:: with vdpbf16ps (AVX512-BF16); both consume the same BF16 operands.
namespace avx512 {
void gemmW4A8(const W4A8GemmArgs& a, int nBegin, int nEnd);
void gemmW8A8(const W8A8GemmArgs& a, int nBegin, int nEnd);
void gemmW4A16(const W4A16GemmArgs& a, int nBegin, int nEnd);
void gemmF32(const F32GemmArgs& a, int nBegin, int nEnd);
void quantizeActivationsDynamic(const float* x, int M, int K, Fp8Format f, uint8_t* x8, float* xScales);
void quantizeActivationsStatic(const float* x, int M, int K, float scale, Fp8Format f, uint8_t* x8,
                               float* xScales);
}  // namespace avx512
namespace avx512bf16 {
void gemmW4A8(const W4A8GemmArgs& a, int nBegin, int nEnd);
void gemmW8A8(const W8A8GemmArgs& a, int nBegin, int nEnd);
void gemmW4A16(const W4A16GemmArgs& a, int nBegin, int nEnd);
}  // namespace avx512bf16

// kernels/avx512/w4a8_vnni.cpp: W4A8 on exact int16 products with AVX512-VNNI vpdpwssd (any M, batch-invariant;
// the avx512 and amx tables use it below 8 tokens (avx512: 3 on AMD) where the CPU has AVX512-VNNI).
namespace avx512vnni {
void gemmW4A8(const W4A8GemmArgs& a, int nBegin, int nEnd);
}  // namespace avx512vnni

// kernels/amx/: AMX-BF16 tiles (tdpbf16ps) for M >= kMinRows tokens; below, the avx512bf16 bodies. The
// *Pooled entries run a whole call on a pool (see KernelTable::pooledMinRows in dispatch.h).
namespace amx {
constexpr int kMinRows = 8;  // where tiles overtake the avx512 bodies (measured: kernels/amx/mixed_gemm.cpp)
void gemmW4A8(const W4A8GemmArgs& a, int nBegin, int nEnd);
void gemmW8A8(const W8A8GemmArgs& a, int nBegin, int nEnd);
void gemmW4A16(const W4A16GemmArgs& a, int nBegin, int nEnd);
void gemmW4A8Pooled(ThreadPool& pool, const W4A8GemmArgs& a);
void gemmW8A8Pooled(ThreadPool& pool, const W8A8GemmArgs& a);
void gemmW4A16Pooled(ThreadPool& pool, const W4A16GemmArgs& a);
// y [M, N] = x [M, K] (FP32) times BF16 weights w [N, K]ᵀ, FP32 sums (the lm_head), on tiles. False when it
// could not (an activation that is not finite or would split into BF16 subnormals): y is then incomplete and
// the caller runs an FP32-FMA body.
bool gemmBf16WeightsPooled(ThreadPool& pool, const float* x, int M, const uint16_t* w, int N, int K, float* y);
}  // namespace amx

}  // namespace w4a8
