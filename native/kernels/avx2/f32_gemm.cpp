// AVX2 FP32 GEMM: Y[m, n] = sum_k x[m, k] * w[n, k], both operands K-contiguous. One 8-lane FP32
// accumulator per output, FMA over k in 8-wide chunks (masked tail), then a fixed horizontal sum: the
// same additions for every output whatever the tile, N split or M. Register tile 4 x 3 (12 accumulators).
#include <algorithm>

#include "kernels/avx2/simd.h"
#include "kernels/backends.h"

namespace w4a8::avx2 {
namespace {

constexpr int kRowsX = 4, kRowsW = 3;

template <int MR, int NR>
void tile(const F32GemmArgs& a, int m0, int n0) {
  const int K = a.K;
  const float* x = a.x + (size_t)m0 * K;
  const float* w = a.w + (size_t)n0 * K;
  __m256 acc[MR][NR];
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 16
    for (int r = 0; r < NR; ++r) acc[m][r] = _mm256_setzero_ps();
  auto step = [&](int k, auto load) {
    __m256 wv[NR];
#pragma GCC unroll 16
    for (int r = 0; r < NR; ++r) wv[r] = load(w + (size_t)r * K + k);
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) {
      const __m256 xv = load(x + (size_t)m * K + k);
#pragma GCC unroll 16
      for (int r = 0; r < NR; ++r) acc[m][r] = _mm256_fmadd_ps(xv, wv[r], acc[m][r]);
    }
  };
  int k = 0;
  for (; k + 8 <= K; k += 8) step(k, [](const float* p) { return _mm256_loadu_ps(p); });
  if (k < K) {
    const __m256i mask = laneMask(K - k);
    step(k, [mask](const float* p) { return _mm256_maskload_ps(p, mask); });
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
        default: tileFor<3>(mr, a, m0, n0); break;
      }
    }
  }
}

}  // namespace w4a8::avx2
