#include "kernels/backends.h"
namespace w4a8::avx2 {
void gemmW4A8(const W4A8GemmArgs& a, int b, int e) { reference::gemmW4A8(a, b, e); }
void gemmW8A8(const W8A8GemmArgs& a, int b, int e) { reference::gemmW8A8(a, b, e); }
void gemmW4A16(const W4A16GemmArgs& a, int b, int e) { reference::gemmW4A16(a, b, e); }
void gemmF32(const F32GemmArgs& a, int b, int e) { reference::gemmF32(a, b, e); }
void quantizeActivationsDynamic(const float* x, int M, int K, Fp8Format f, uint8_t* x8, float* s) { w4a8::quantizeActivationsDynamic(x, M, K, f, x8, s); }
void quantizeActivationsStatic(const float* x, int M, int K, float sc, Fp8Format f, uint8_t* x8, float* s) { w4a8::quantizeActivationsStatic(x, M, K, sc, f, x8, s); }
}
