// The whole GEMM on the backend chosen at load time (dispatch.h), split over the thread pool.
#include "kernels/gemm_runner.h"

#include "kernels/parallel.h"

namespace w4a8 {

void runGemmW4A8(const W4A8GemmArgs& a) { gemmW4A8Parallel(a); }
void runGemmW8A8(const W8A8GemmArgs& a) { gemmW8A8Parallel(a); }
void runGemmW4A16(const W4A16GemmArgs& a) { gemmW4A16Parallel(a); }
void runGemmF32(const F32GemmArgs& a) { gemmF32Parallel(a); }
void runQuantizeActivationsDynamic(const float* x, int M, int K, Fp8Format f, uint8_t* x8, float* xScales) {
  quantizeActivationsDynamicParallel(x, M, K, f, x8, xScales);
}
void runQuantizeActivationsStatic(const float* x, int M, int K, float scale, Fp8Format f, uint8_t* x8, float* xScales) {
  quantizeActivationsStaticParallel(x, M, K, scale, f, x8, xScales);
}
const char* gemmBackendName() { return backendName(); }
const char* gemmBackendReason() { return backendReason(); }

}  // namespace w4a8
