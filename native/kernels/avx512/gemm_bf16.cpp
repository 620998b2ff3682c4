// AVX-512 mixed-input GEMMs with vdpbf16ps (AVX512-BF16): 32 exact BF16 products per instruction,
// accumulated in FP32. Method and operand layouts: mixed_gemm.h.
//
// Exactness: FP8 values are normal BF16 values, and FP8 x FP8 products (>= 2^-32 in magnitude) and
// their sums (multiples of 2^-32) are never FP32 subnormals, so the subnormal flushing of vdpbf16ps
// (inputs and outputs) cannot change W4A8 or W8A8 results. W4A16 can meet BF16 subnormals: a call whose
// activations hold one, or whose rows have a group scale below 2^-126, runs the FP32-FMA version
// instead. (A product of two normal BF16 values below 2^-126 is flushed, where the reference rounds it
// to an FP32 subnormal: an absolute difference under 2^-126 per product, far below the tolerance.)
#include "kernels/avx512/mixed_gemm.h"
#include "kernels/backends.h"

namespace w4a8::avx512bf16 {
namespace {

struct DotBf16 {
  static constexpr int kMicroRows = 6;  // 6 x 4 accumulators + 4 weights + 1 activation = 29 registers
  static constexpr bool kFlushesSubnormals = true;
  static W4A8_ALWAYS_INLINE __m512 dot(__m512 acc, __m512i x, __m512i w) {
    return _mm512_dpbf16_ps(acc, (__m512bh)x, (__m512bh)w);
  }
};

bool rangeHasSubnormalScales(const Int4WeightsView& w, int nBegin, int nEnd) {
  for (int n = nBegin; n < nEnd; ++n)
    if (fast::rowHasSubnormalScales(w, n)) return true;
  return false;
}

}  // namespace

void gemmW4A8(const W4A8GemmArgs& a, int nBegin, int nEnd) { avx512::gemmW4A8Impl<DotBf16>(a, nBegin, nEnd); }
void gemmW8A8(const W8A8GemmArgs& a, int nBegin, int nEnd) { avx512::gemmW8A8Impl<DotBf16>(a, nBegin, nEnd); }

void gemmW4A16(const W4A16GemmArgs& a, int nBegin, int nEnd) {
  if (!rangeHasSubnormalScales(a.w, nBegin, nEnd) && avx512::gemmW4A16Impl<DotBf16>(a, nBegin, nEnd)) return;
  avx512::gemmW4A16Impl<avx512::DotFma>(a, nBegin, nEnd);
}

}  // namespace w4a8::avx512bf16
