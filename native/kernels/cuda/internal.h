// Internal interface between the CUDA backend's translation units (and its bench): kernel launchers and
// the cuBLASLt wrapper. Uses CUDA types; not for code outside native/kernels/cuda and native/tests/cuda.
#pragma once
#include <cstdint>
#include <map>
#include <tuple>

#include <cuda_runtime.h>

#include "fp8/fp8.h"
#include "kernels/cuda/cuda_backend.h"

#if W4A8_HAVE_CUBLASLT
#include <cublasLt.h>
#endif

namespace w4a8::cudakern {

// ---- fused decode GEMM (decode_gemm.cuh) ---------------------------------------------------------------
constexpr int kDecodeWarps = 8;
constexpr int kDecodeThreads = 32 * kDecodeWarps;
constexpr int kDecodeRowsPerCta = 16 * kDecodeWarps;  // one m16 MMA tile of output channels per warp
constexpr int kDecodeChunkK = 512;                    // k per CTA step: 4 lanes x 128 contiguous k each

struct DecodeParams {
  const uint8_t* x8;  // [M, K] FP8 codes
  const float* xScales;
  int M;              // tokens of this launch, <= 8 * tokenTiles
  bool actE5M2;       // activation format is E5M2 (else E4M3FN / E4M3, which share codes)
  const uint8_t* codes;
  const float* groupScales;
  const uint8_t* zeros;
  const float* channelScales;
  int N, K, G;
  Fp8Format wFormat;
  float* yF32;        // exactly one of yF32 / yBf16
  uint16_t* yBf16;
  int ldy;
  int splits;         // CTAs along K (gridDim.y)
  float* partials;    // [splits, M, N] FP32, when splits > 1
  unsigned* counters; // [ceil(N / 128)] zero-initialised tickets, when splits > 1 (left zeroed)
  // The integer GEMV's activations (gemv_int8.cu), made from x8 by its pre-pass: limbs [3 M, K], limb sums
  // [K / 128, 24] and NaN flags [M, nanFlagsPerToken].
  const uint8_t* xLimbs;
  const int* xLimbSums;
  const float* xNanFlags;
  int nanFlagsPerToken;
};

// One output row's streams in a fused kernel: its INT4 codes, group scales and zero points. Rows past N read
// row N - 1 (finite values, never stored), so the kernels' loads need no row check.
struct RowStreams {
  const uint8_t* codes;
  const float* scales;
  const uint8_t* zeros;
};
__device__ __forceinline__ RowStreams rowStreams(const DecodeParams& p, int row) {
  const size_t n = (size_t)min(row, p.N - 1), groups = (size_t)(p.K / p.G);
  return {p.codes + n * (p.K / 2), p.groupScales + n * groups, p.zeros + n * groups};
}

// Writes output (m, n) of a fused kernel: y = (s_x[m] * s_c[n]) * sum, as the reference rounds it, as FP32 or BF16.
__device__ __forceinline__ void storeOutput(const DecodeParams& p, int m, int n, float sum) {
  const float value = (p.xScales[m] * p.channelScales[n]) * sum;
  const size_t index = (size_t)m * p.ldy + n;
  if (p.yF32) p.yF32[index] = value;
  else p.yBf16[index] = floatToBf16(value);
}

// A lane's finished C fragments: acc[nt][e] is output (8 nt + 2 t + (e & 1), e < 2 ? row0 : row0 + 8), stored
// where inside [M, N].
template <int NT>
__device__ __forceinline__ void storeFragments(const DecodeParams& p, const float (&acc)[NT][4], int row0, int t) {
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int m = 8 * nt + 2 * t + (e & 1), n = e < 2 ? row0 : row0 + 8;
      if (m < p.M && n < p.N) storeOutput(p, m, n, acc[nt][e]);
    }
}

// tokenTiles: 1, 2, 4 or 8 (tiles of 8 tokens). fp8Mma: the e4m3 x e4m3 FP8 MMA variant.
cudaError_t launchDecodeGemm(const DecodeParams& p, int tokenTiles, bool fp8Mma, cudaStream_t stream);
int decodeGemmBlocksPerSm(int tokenTiles, bool fp8Mma, bool weightsE5M2);
cudaError_t launchDecodeF16(const DecodeParams& p, int tokenTiles, cudaStream_t stream);
cudaError_t launchDecodeFp8(const DecodeParams& p, int tokenTiles, cudaStream_t stream);
int blocksPerSmF16(int tokenTiles, bool weightsE5M2);
int blocksPerSmFp8(int tokenTiles);

// ---- fused GEMV for 1-16 tokens (gemv.cu) ----------------------------------------------------------------
// One CTA of `warps` warps (1..8) per 16 output channels, K split over its warps; p.splits, p.partials and
// p.counters are not used.
using cuda::kGemvMaxTokens;
cudaError_t launchGemv(const DecodeParams& p, int warps, cudaStream_t stream);

// ---- integer GEMV for 1-8 tokens (gemv_int8.cu) ----------------------------------------------------------
// Needs G = 128 and E4M3-family weights and activations (gemvInt8Supported), 1-8 warps. Its activations come
// from `scratch`: made there by its own pre-pass (a programmatic dependent launch before it), or, with `prepared`,
// already made by the quantization kernel (IntegerActivations, flagsPerToken NaN flags a token).
constexpr int kGemvInt8MaxTokens = 8;
constexpr int kGemvInt8MaxWarps = 8;  // 1-2 tokens; 3-8 tokens run at most 4
bool gemvInt8Supported(const DecodeParams& p);
size_t gemvInt8ScratchBytes(int K);  // its own pre-pass's buffer
int gemvInt8PrepFlagsPerToken(int K);  // NaN flags a token its pre-pass writes
// The pre-pass alone: x8 [M <= 8, K] -> the activations in `buffer` (gemvInt8ScratchBytes(K) bytes).
cudaError_t launchLimbs(const uint8_t* x8, int M, int K, Fp8Format actFormat, void* buffer, cudaStream_t stream);
cudaError_t launchGemvInt8(DecodeParams p, Fp8Format actFormat, int warps, void* scratch, bool prepared,
                           int flagsPerToken, cudaStream_t stream);

// ---- element-wise kernels (quantize_kernels.cu) --------------------------------------------------------
// Dynamic (per-token scales) or static (`scale`) FP32 -> FP8. integerBuffer: also the integer GEMV's activations
// there (integer_activations.cuh layout with one NaN flag a token; E4M3-family f, M <= 8, K % 128 == 0), or null.
cudaError_t launchQuantize(const float* x, int M, int K, bool dynamic, float scale, Fp8Format f, uint8_t* x8,
                           float* xScales, void* integerBuffer, cudaStream_t stream);
cudaError_t launchDequantInt4ToFp8(const Int4WeightsView& w, uint8_t* out, cudaStream_t stream);
// y[m, n] = (xScales[m] * channelScales[n]) * acc[m * ldAcc + n], stored as FP32 or BF16.
cudaError_t launchScaleEpilogue(const float* acc, int ldAcc, const float* xScales, const float* channelScales, int M,
                                int N, float* yF32, uint16_t* yBf16, int ldy, cudaStream_t stream);
cudaError_t launchEncodeFp8(const float* in, uint8_t* out, size_t count, Fp8Format f, cudaStream_t stream);

#if W4A8_HAVE_CUBLASLT
// ---- cuBLASLt (cublaslt_gemm.cu) ------------------------------------------------------------------------
// One "TN" GEMM in row-major terms: D[m, n] (row-major, leading dimension ldd) = sum_k A[n, k] * B[m, k],
// A = weights [N, K] row-major, B = activations [M, K] row-major. In cuBLASLt's column-major view that is
// D (N x M, ld ldd) = op(A) op(B) with A stored K x N transposed, B stored K x M: the layout FP8 needs.
// FP8 inputs take scales: per tensor (aScale, bScale point at one float each, or null for 1), or outer
// vectors (aScale [N] per channel, bScale [M] per token: D[m, n] = aScale[n] * bScale[m] * sum).
struct LtCall {
  const void* a;
  cudaDataType_t aType;
  const void* b;
  cudaDataType_t bType;
  void* d;
  cudaDataType_t dType;
  int M, N, K, ldd;
  const float* aScale;
  const float* bScale;
  bool outerVectorScales;
};

class LtGemm {
 public:
  LtGemm() = default;
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;
  cublasStatus_t init(size_t workspaceBytes);
  // CUBLAS_STATUS_NOT_SUPPORTED when no algorithm takes the call (types, alignment, scale mode).
  cublasStatus_t run(const LtCall& call, cudaStream_t stream);

 private:
  struct Plan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
    cublasLtMatmulAlgo_t algo;
    size_t workspace = 0;
    bool ok = false;
  };
  using Key = std::tuple<int, int, int, int, int, int, int, bool>;
  Plan* plan(const LtCall& call);
  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspaceBytes_ = 0;
  std::map<Key, Plan> plans_;
};
LtGemm* contextLt(w4a8::cuda::Context* ctx);  // the context's instance (bench baselines share its plans and workspace)
#endif

}  // namespace w4a8::cudakern
