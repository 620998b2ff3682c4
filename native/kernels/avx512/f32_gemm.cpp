// AVX-512 FP32 GEMM: Y[m, n] = sum_k x[m, k] * w[n, k], both operands K-contiguous. One 16-lane FP32
// accumulator per output, FMA over k in 16-wide chunks (masked tail), then a fixed horizontal sum: the
// same additions for every output whatever the tile, N split or M. Register tile 6 x 4 (24 accumulators).
#include <algorithm>

#include "kernels/avx512/simd.h"
#include "kernels/backends.h"

namespace w4a8::avx512 {
namespace {

constexpr int kRowsX = 6, kRowsW = 4;

template <int MR, int NR>
void tile(const F32GemmArgs& a, int m0, int n0) {
  const int K = a.K;
  const float* x = a.x + (size_t)m0 * K;
  const float* w = a.w + (size_t)n0 * K;
  __m512 acc[MR][NR];
  #pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
    #pragma GCC unroll 16
    for (int r = 0; r < NR; ++r) acc[m][r] = _mm512_setzero_ps();
  for (int k = 0; k < K; k += 16) {
    const __mmask16 mask = lane32Mask(K - k);
    __m512 wv[NR];
    #pragma GCC unroll 16
    for (int r = 0; r < NR; ++r) wv[r] = _mm512_maskz_loadu_ps(mask, w + (size_t)r * K + k);
    #pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) {
      const __m512 xv = _mm512_maskz_loadu_ps(mask, x + (size_t)m * K + k);
      #pragma GCC unroll 16
      for (int r = 0; r < NR; ++r) acc[m][r] = _mm512_fmadd_ps(xv, wv[r], acc[m][r]);
    }
  }
  #pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
    #pragma GCC unroll 16
    for (int r = 0; r < NR; ++r) storeValue(a.y, m0 + m, n0 + r, horizontalSum(acc[m][r]));
}

template <int NR, int MR = 1>
void tileFor(int mr, const F32GemmArgs& a, int m0, int n0) {
  if constexpr (MR <= kRowsX) {
    if (mr == MR) return tile<MR, NR>(a, m0, n0);
    tileFor<NR, MR + 1>(mr, a, m0, n0);
  }
}

}  // namespace

void gemmF32(const F32GemmArgs& a, int nBegin, int nEnd) {
  for (int n0 = nBegin; n0 < nEnd; n0 += kRowsW) {
    const int nr = std::min(kRowsW, nEnd - n0);
    for (int m0 = 0; m0 < a.M; m0 += kRowsX) {
      const int mr = std::min(kRowsX, a.M - m0);
      switch (nr) {
        case 1: tileFor<1>(mr, a, m0, n0); break;
        case 2: tileFor<2>(mr, a, m0, n0); break;
        case 3: tileFor<3>(mr, a, m0, n0); break;
        default: tileFor<4>(mr, a, m0, n0); break;
      }
    }
  }
}

}  // namespace w4a8::avx512
