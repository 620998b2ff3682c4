#include "kernels/gemm_runner.h"

namespace w4a8 {

void runGemmW4A8(const W4A8GemmArgs& a) { reference::gemmW4A8(a, 0, a.w.rows); }
void runGemmW8A8(const W8A8GemmArgs& a) { reference::gemmW8A8(a, 0, a.w.rows); }
void runGemmW4A16(const W4A16GemmArgs& a) { reference::gemmW4A16(a, 0, a.w.rows); }
void runGemmF32(const F32GemmArgs& a) { reference::gemmF32(a, 0, a.N); }
const char* gemmBackendName() { return "reference"; }
const char* gemmBackendReason() { return "scalar reference (no fast backend compiled yet)"; }

}  // namespace w4a8
