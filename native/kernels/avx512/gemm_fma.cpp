// AVX-512 mixed-input GEMMs with FP32 FMA (CPUs without AVX512-BF16). Method and exactness:
// mixed_gemm.h. Built with AVX-512 F/BW/VL/DQ/VBMI flags, without -mavx512bf16.
#include "kernels/avx512/mixed_gemm.h"
#include "kernels/backends.h"

namespace w4a8::avx512 {

void gemmW4A8(const W4A8GemmArgs& a, int nBegin, int nEnd) { gemmW4A8Impl<DotFma>(a, nBegin, nEnd); }
void gemmW8A8(const W8A8GemmArgs& a, int nBegin, int nEnd) { gemmW8A8Impl<DotFma>(a, nBegin, nEnd); }
void gemmW4A16(const W4A16GemmArgs& a, int nBegin, int nEnd) { gemmW4A16Impl<DotFma>(a, nBegin, nEnd); }

}  // namespace w4a8::avx512
