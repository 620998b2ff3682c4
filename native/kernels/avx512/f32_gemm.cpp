// AVX-512 FP32 GEMM: Y[m, n] = sum_k x[m, k] * w[n, k], both operands K-contiguous. One 16-lane FP32
// accumulator per output, FMA over k in 16-wide chunks (masked tail), then a fixed horizontal sum: the
// same additions for every output whatever the tile, N split or M. Register tile 6 x 4 (24 accumulators).
// With several 6-row tiles of X, the 4 weight rows are first copied into one interleaved stream
// ([chunk][row][16], zero-padded): rows K * 4 bytes apart (a multiple of 4 KiB for the usual K) would
// otherwise share L1 sets with the 6 activation rows and evict each other.
#include <algorithm>

#include "kernels/avx512/simd.h"
#include "kernels/backends.h"

namespace w4a8::avx512 {
namespace {

constexpr int kRowsX = 6, kRowsW = 4;

// Weight element (r, k) is at w[r * rowStride + (k / 16) * chunkStride + k % 16].
struct WeightRows {
  const float* w;
  size_t rowStride, chunkStride;
};

template <int MR, int NR>
void tile(const F32GemmArgs& a, int m0, int n0, WeightRows wr) {
  const int K = a.K;
  const float* x = a.x + (size_t)m0 * K;
  __m512 acc[MR][NR];
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 16
    for (int r = 0; r < NR; ++r) acc[m][r] = _mm512_setzero_ps();
  auto step = [&](int k, auto load) {
    const float* w = wr.w + (size_t)(k / 16) * wr.chunkStride;
    __m512 wv[NR];
#pragma GCC unroll 16
    for (int r = 0; r < NR; ++r) wv[r] = load(w + (size_t)r * wr.rowStride);
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) {
      const __m512 xv = load(x + (size_t)m * K + k);
#pragma GCC unroll 16
      for (int r = 0; r < NR; ++r) acc[m][r] = _mm512_fmadd_ps(xv, wv[r], acc[m][r]);
    }
  };
  int k = 0;
  for (; k + 16 <= K; k += 16) step(k, [](const float* p) { return _mm512_loadu_ps(p); });
  if (k < K) {
    const __mmask16 mask = lane32Mask(K - k);
    step(k, [mask](const float* p) { return _mm512_maskz_loadu_ps(mask, p); });
  }
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 16
    for (int r = 0; r < NR; ++r) storeValue(a.y, m0 + m, n0 + r, horizontalSum(acc[m][r]));
}

template <int NR, int MR = 1>
void tileFor(int mr, const F32GemmArgs& a, int m0, int n0, WeightRows wr) {
  if constexpr (MR <= kRowsX) {
    if (mr == MR) return tile<MR, NR>(a, m0, n0, wr);
    tileFor<NR, MR + 1>(mr, a, m0, n0, wr);
  }
}

// Rows [n0, n0 + nr) of W -> ws: [chunks][nr][16], the tail chunk zero-padded.
void interleaveRows(const F32GemmArgs& a, int n0, int nr, float* ws) {
  const int chunks = (a.K + 15) / 16;
  for (int r = 0; r < nr; ++r) {
    const float* w = a.w + (size_t)(n0 + r) * a.K;
    for (int c = 0; c < chunks; ++c)
      _mm512_store_ps(ws + ((size_t)c * nr + r) * 16, _mm512_maskz_loadu_ps(lane32Mask(a.K - 16 * c), w + 16 * c));
  }
}

}  // namespace

void gemmF32(const F32GemmArgs& a, int nBegin, int nEnd) {
  const bool interleave = a.M > kRowsX;
  float* ws = interleave ? static_cast<float*>(fast::threadScratch(
                               fast::kScratchWeights, (size_t)kRowsW * ((a.K + 15) / 16) * 16 * sizeof(float)))
                         : nullptr;
  for (int n0 = nBegin; n0 < nEnd; n0 += kRowsW) {
    const int nr = std::min(kRowsW, nEnd - n0);
    WeightRows wr{a.w + (size_t)n0 * a.K, (size_t)a.K, 16};
    if (interleave) {
      interleaveRows(a, n0, nr, ws);
      wr = {ws, 16, (size_t)nr * 16};
    }
    for (int m0 = 0; m0 < a.M; m0 += kRowsX) {
      const int mr = std::min(kRowsX, a.M - m0);
      switch (nr) {
        case 1: tileFor<1>(mr, a, m0, n0, wr); break;
        case 2: tileFor<2>(mr, a, m0, n0, wr); break;
        case 3: tileFor<3>(mr, a, m0, n0, wr); break;
        default: tileFor<4>(mr, a, m0, n0, wr); break;
      }
    }
  }
}

}  // namespace w4a8::avx512
