// What the addon and the model runtime call: the whole GEMM (all N output channels), on the backend
// chosen at load time. Until the fast backends land this runs the scalar reference on one thread.
#pragma once
#include "kernels/kernels.h"

namespace w4a8 {

void runGemmW4A8(const W4A8GemmArgs& a);
void runGemmW8A8(const W8A8GemmArgs& a);
void runGemmW4A16(const W4A16GemmArgs& a);
void runGemmF32(const F32GemmArgs& a);
const char* gemmBackendName();
const char* gemmBackendReason();

}  // namespace w4a8
