// Host side of the CUDA backend (cuda_backend.h): context, device memory, argument checks and the choice of
// GEMM path, split-K and token tile.
#include "kernels/cuda/cuda_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "kernels/cuda/integer_activations.cuh"
#include "kernels/cuda/internal.h"

namespace w4a8::cuda {
using namespace w4a8::cudakern;

struct Context {
  int device = 0;
  cudaStream_t stream = nullptr;
  int multiprocessors = 1;
  std::string error;
  // Decode split-K: FP32 partial sums [splits, M, N] and one ticket per 128-row tile (kept zeroed).
  float* partials = nullptr;
  size_t partialsBytes = 0;
  unsigned* counters = nullptr;
  size_t counterCount = 0;
  // Prefill: FP8 weights dequantized per call (no cached copy), FP32 accumulators of the epilogue fallback.
  uint8_t* w8Scratch = nullptr;
  size_t w8ScratchBytes = 0;
  float* accScratch = nullptr;
  size_t accScratchBytes = 0;
  // Integer GEMV: the activations' limbs, limb sums and NaN addends its pre-pass makes.
  uint8_t* int8Scratch = nullptr;
  size_t int8ScratchBytes = 0;
  uint64_t scratchGeneration = 0;  // bumped on every reallocation of the buffers above
#if W4A8_HAVE_CUBLASLT
  std::unique_ptr<LtGemm> lt;
  bool outerVectorScales = true;  // cleared once cuBLASLt refuses per-channel x per-token scale vectors
#endif
};

namespace {

#if W4A8_HAVE_CUBLASLT
constexpr size_t kLtWorkspaceBytes = 32u << 20;
#endif

thread_local std::string gNoContextError;  // lastError(nullptr): failures before a context exists

Status fail(Context* ctx, Status s, const char* format, ...) {
  char message[512];
  va_list args;
  va_start(args, format);
  std::vsnprintf(message, sizeof(message), format, args);
  va_end(args);
  (ctx ? ctx->error : gNoContextError) = message;
  return s;
}

#define W4A8_CUDA_TRY(ctx, call)                                                                    \
  do {                                                                                              \
    const cudaError_t e_ = (call);                                                                  \
    if (e_ != cudaSuccess) return fail(ctx, Status::CudaError, "%s: %s", #call, cudaGetErrorString(e_)); \
  } while (0)

// Grows a scratch buffer to at least `bytes` (contents are not kept).
template <typename T>
Status ensureScratch(Context* ctx, T** buffer, size_t* have, size_t bytes) {
  if (*have >= bytes) return Status::Ok;
  if (*buffer) {
    W4A8_CUDA_TRY(ctx, cudaStreamSynchronize(ctx->stream));
    cudaFree(*buffer);
    *buffer = nullptr;
    *have = 0;
  }
  W4A8_CUDA_TRY(ctx, cudaMalloc((void**)buffer, bytes));
  *have = bytes;
  ++ctx->scratchGeneration;
  return Status::Ok;
}

bool aligned16(const void* p) { return ((uintptr_t)p & 15u) == 0; }
bool validFormat(Fp8Format f) { return (unsigned)f < (unsigned)kFp8FormatCount; }

Status checkWeights(Context* ctx, const Int4WeightsView& w) {
  if (w.rows < 1 || w.cols < 1) return fail(ctx, Status::InvalidArgument, "weights: rows and cols must be >= 1 (got %d x %d)", w.rows, w.cols);
  if (w.groupSize != 32 && w.groupSize != 64 && w.groupSize != 128)
    return fail(ctx, Status::InvalidArgument, "weights: groupSize must be 32, 64 or 128 (got %d)", w.groupSize);
  if (w.cols % w.groupSize != 0)
    return fail(ctx, Status::InvalidArgument, "weights: cols (%d) must be a multiple of groupSize (%d)", w.cols, w.groupSize);
  if (!validFormat(w.format)) return fail(ctx, Status::InvalidArgument, "weights: unknown FP8 format %d", (int)w.format);
  if (!w.codes || !w.groupScales || !w.zeros || !w.channelScales)
    return fail(ctx, Status::InvalidArgument, "weights: codes, groupScales, zeros and channelScales must be set");
  if (!aligned16(w.codes)) return fail(ctx, Status::InvalidArgument, "weights: codes must be 16-byte aligned");
  return Status::Ok;
}

Status checkOutput(Context* ctx, const GemmOutput& y, int N) {
  if ((y.f32 == nullptr) == (y.bf16 == nullptr))
    return fail(ctx, Status::InvalidArgument, "output: exactly one of y.f32 and y.bf16 must be set");
  if (y.ldy < N) return fail(ctx, Status::InvalidArgument, "output: ldy (%d) must be >= N (%d)", y.ldy, N);
  return Status::Ok;
}

int tokenTilesFor(int m) { return m <= 8 ? 1 : m <= 16 ? 2 : m <= 32 ? 4 : 8; }

// Splits of K over CTAs for the decode GEMM: the fewest waves of CTAs x the bytes each CTA moves (its
// weights, plus its FP32 partials when split), minimised over S. slots = CTAs the GPU runs at once.
int chooseSplits(int tiles, int chunks, int slots, int M, int K) {
  int best = 1;
  double bestCost = 0;
  for (int s = 1; s <= chunks && s <= 32; ++s) {
    const double waves = std::ceil((double)tiles * s / slots);
    const double cost = waves * (64.0 * K / s + (s > 1 ? 1024.0 * M : 0.0));
    if (s == 1 || cost < bestCost * 0.999) best = s, bestCost = cost;
  }
  return best;
}

#if W4A8_HAVE_CUBLASLT
cudaDataType_t ltType(Fp8Format f) { return f == Fp8Format::E5M2 ? CUDA_R_8F_E5M2 : CUDA_R_8F_E4M3; }
#endif

// The fused kernels' operands for tokens [m0, m0 + mTile) of a (split-K fields left for the caller).
DecodeParams fusedParams(const W4A8GemmArgs& a, int m0, int mTile) {
  const Int4WeightsView& w = a.w;
  DecodeParams p{};
  p.x8 = a.x8 + (size_t)m0 * w.cols;
  p.xScales = a.xScales + m0;
  p.M = mTile;
  p.actE5M2 = a.actFormat == Fp8Format::E5M2;
  p.codes = w.codes;
  p.groupScales = w.groupScales;
  p.zeros = w.zeros;
  p.channelScales = w.channelScales;
  p.N = w.rows, p.K = w.cols, p.G = w.groupSize;
  p.wFormat = w.format;
  p.yF32 = a.y.f32 ? a.y.f32 + (size_t)m0 * a.y.ldy : nullptr;
  p.yBf16 = a.y.bf16 ? a.y.bf16 + (size_t)m0 * a.y.ldy : nullptr;
  p.ldy = a.y.ldy;
  return p;
}

Status runDecode(Context* ctx, const W4A8GemmArgs& a, int m0, int mTile, bool fp8Mma, int splitK,
                 GemmPlanInfo* info) {
  const Int4WeightsView& w = a.w;
  const int N = w.rows, K = w.cols;
  const int tiles = (N + kDecodeRowsPerCta - 1) / kDecodeRowsPerCta;
  const int chunks = (K + kDecodeChunkK - 1) / kDecodeChunkK;
  const int tokenTiles = tokenTilesFor(mTile);
  int splits = splitK;
  if (splits <= 0) {
    const int slots = ctx->multiprocessors * decodeGemmBlocksPerSm(tokenTiles, fp8Mma, w.format == Fp8Format::E5M2);
    splits = chooseSplits(tiles, chunks, slots, mTile, K);
  }
  splits = splits < 1 ? 1 : splits > chunks ? chunks : splits;

  DecodeParams p = fusedParams(a, m0, mTile);
  p.splits = splits;
  if (splits > 1) {
    Status s = ensureScratch(ctx, &ctx->partials, &ctx->partialsBytes, (size_t)splits * mTile * N * sizeof(float));
    if (s != Status::Ok) return s;
    if (ctx->counterCount < (size_t)tiles) {  // tickets start at zero; each launch leaves them zero
      W4A8_CUDA_TRY(ctx, cudaStreamSynchronize(ctx->stream));
      cudaFree(ctx->counters);
      ctx->counters = nullptr;
      ctx->counterCount = 0;
      W4A8_CUDA_TRY(ctx, cudaMalloc((void**)&ctx->counters, (size_t)tiles * sizeof(unsigned)));
      W4A8_CUDA_TRY(ctx, cudaMemsetAsync(ctx->counters, 0, (size_t)tiles * sizeof(unsigned), ctx->stream));
      ctx->counterCount = tiles;
      ++ctx->scratchGeneration;
    }
    p.partials = ctx->partials;
    p.counters = ctx->counters;
  }
  W4A8_CUDA_TRY(ctx, launchDecodeGemm(p, tokenTiles, fp8Mma, ctx->stream));
  if (info) {
    info->path = fp8Mma ? GemmPath::DecodeFp8Mma : GemmPath::DecodeF16Mma;
    info->splitK = splits;
    info->tokenTile = 8 * tokenTiles;
    info->fusedScales = true;
  }
  return Status::Ok;
}

// Warps per CTA of the GEMV (one CTA per 16 channels, K split over its warps). Measured on the H200 over
// 2..8 warps (W4A8_GEMV_SWEEP=1 w4a8_cuda_tests --bench): 4 is best with at least 3 CTAs per SM and
// moderate K (8192x8192, 11008x4096), 8 with fewer CTAs (4096 channels) or long rows (K = 28672); odd
// counts pack worse. Above 8 tokens (two token tiles, ~168 registers a thread) 8 warps would leave one CTA
// per SM: 4. At most one warp per 128-k round.
int chooseGemvWarps(int M, int N, int K, int multiprocessors) {
  const int ctas = (N + 15) / 16, rounds = (K + 127) / 128;
  const int warps = M > 8 || (ctas >= 3 * multiprocessors && K < 16384) ? 4 : 8;
  return warps < rounds ? warps : rounds;
}

Status runGemv(Context* ctx, const W4A8GemmArgs& a, int m0, int mTile, int warpsOverride, GemmPlanInfo* info) {
  const Int4WeightsView& w = a.w;
  const int N = w.rows, K = w.cols;
  int warps = warpsOverride > 0 ? warpsOverride : chooseGemvWarps(mTile, N, K, ctx->multiprocessors);
  warps = warps > 8 ? 8 : warps;
  DecodeParams p = fusedParams(a, m0, mTile);
  p.splits = 1;
  W4A8_CUDA_TRY(ctx, launchGemv(p, warps, ctx->stream));
  if (info) *info = {GemmPath::Gemv, warps, kGemvMaxTokens, true};
  return Status::Ok;
}

Status runGemvInt8(Context* ctx, const W4A8GemmArgs& a, int m0, int mTile, const GemmOptions& options,
                   GemmPlanInfo* info) {
  const Int4WeightsView& w = a.w;
  // 16 warps an SM at 128 registers: 4 CTAs of 4 warps when the matrix has CTAs for that (3 an SM or more), else
  // 8-warp CTAs (1-2 tokens; more tokens run 4).
  const int ctas = (w.rows + 15) / 16, rounds = w.cols / 128;
  int warps = options.splitK > 0 ? options.splitK : ctas >= 3 * ctx->multiprocessors ? 4 : 8;
  warps = std::min(std::min(warps, mTile <= 2 ? kGemvInt8MaxWarps : 4), rounds);
  // Activations the quantization already made for exactly these codes (the whole call in one tile), else its
  // own pre-pass into the context's scratch.
  const IntegerActivations* made = options.integerActivations;
  const bool prepared = made && made->ready && made->x8 == a.x8 && made->M == a.M && made->K == w.cols &&
                        made->format == a.actFormat && m0 == 0 && mTile == a.M;
  void* scratch = prepared ? made->buffer : nullptr;
  if (!prepared) {
    Status s = ensureScratch(ctx, &ctx->int8Scratch, &ctx->int8ScratchBytes, gemvInt8ScratchBytes(w.cols));
    if (s != Status::Ok) return s;
    scratch = ctx->int8Scratch;
  }
  DecodeParams p = fusedParams(a, m0, mTile);
  p.splits = 1;
  W4A8_CUDA_TRY(ctx, launchGemvInt8(p, a.actFormat, warps, scratch, prepared, prepared ? made->flagsPerToken : 0,
                                    ctx->stream));
  if (info) *info = {GemmPath::GemvInt8, warps, kGemvInt8MaxTokens, true};
  return Status::Ok;
}

// The integer GEMV takes G = 128 with E4M3-family weights and activations (gemv_int8.cu says why).
bool gemvInt8Takes(const W4A8GemmArgs& a) {
  return a.w.groupSize == 128 && e4m3Family(a.w.format) && e4m3Family(a.actFormat);
}

// Measured on the H200 (RESULTS.md, 2026-12-02), on linear weights with the activations made by the quantization:
// the integer GEMV beats the FP16 kernels at 1-2 tokens (4096x4096 5.7 against 6.8-7.0 us, 8192x28672 43-49 against
// 61-75); at 3-8 tokens (two or three token tiles, more registers, fewer warps an SM) they are faster.
bool integerGemvPays(const W4A8GemmArgs& a, const GemmOptions& options) {
  return options.linearGroups && a.M <= 2 && gemvInt8Takes(a);
}

// run(m0, mTile) for tiles of at most `tile` of M tokens, in order; stops at the first failure.
template <typename Run>
Status overTokenTiles(int M, int tile, Run run) {
  for (int m0 = 0; m0 < M; m0 += tile) {
    const Status s = run(m0, M - m0 < tile ? M - m0 : tile);
    if (s != Status::Ok) return s;
  }
  return Status::Ok;
}

Status runPrefill(Context* ctx, const W4A8GemmArgs& a, const uint8_t* fp8Weights, GemmPlanInfo* info) {
#if W4A8_HAVE_CUBLASLT
  if (!ctx->lt) return fail(ctx, Status::Unsupported, "prefill: cuBLASLt did not initialise");
  const Int4WeightsView& w = a.w;
  const int M = a.M, N = w.rows, K = w.cols;
  if (w.format == Fp8Format::E5M2 && a.actFormat == Fp8Format::E5M2)
    return fail(ctx, Status::Unsupported, "prefill: cuBLASLt has no e5m2 x e5m2 GEMM");
  const uint8_t* w8 = fp8Weights;
  if (!w8) {
    Status s = ensureScratch(ctx, &ctx->w8Scratch, &ctx->w8ScratchBytes, (size_t)N * K);
    if (s != Status::Ok) return s;
    W4A8_CUDA_TRY(ctx, launchDequantInt4ToFp8(w, ctx->w8Scratch, ctx->stream));
    w8 = ctx->w8Scratch;
  }
  LtCall call{};
  call.a = w8;
  call.aType = ltType(w.format);
  call.b = a.x8;
  call.bType = ltType(a.actFormat);
  call.M = M, call.N = N, call.K = K;
  if (ctx->outerVectorScales) {
    // Scales inside cuBLASLt: D[m, n] = s_c[n] * s_x[m] * sum, written straight into Y.
    call.d = a.y.f32 ? (void*)a.y.f32 : (void*)a.y.bf16;
    call.dType = a.y.f32 ? CUDA_R_32F : CUDA_R_16BF;
    call.ldd = a.y.ldy;
    call.aScale = w.channelScales;
    call.bScale = a.xScales;
    call.outerVectorScales = true;
    const cublasStatus_t s = ctx->lt->run(call, ctx->stream);
    if (s == CUBLAS_STATUS_SUCCESS) {
      if (info) *info = {GemmPath::PrefillLt, 0, M, true};
      return Status::Ok;
    }
    if (s != CUBLAS_STATUS_NOT_SUPPORTED) return fail(ctx, Status::CublasError, "prefill: cublasLtMatmul failed (status %d)", (int)s);
    // Not for this shape or not on this cuBLASLt: the FP32 + epilogue form below.
  }
  // FP32 accumulators from cuBLASLt (unit scales), then y = (s_x[m] * s_c[n]) * acc like the other paths.
  const int ldAcc = (N + 3) / 4 * 4;
  Status st = ensureScratch(ctx, &ctx->accScratch, &ctx->accScratchBytes, (size_t)M * ldAcc * sizeof(float));
  if (st != Status::Ok) return st;
  call.d = ctx->accScratch;
  call.dType = CUDA_R_32F;
  call.ldd = ldAcc;
  call.aScale = nullptr;
  call.bScale = nullptr;
  call.outerVectorScales = false;
  const cublasStatus_t s = ctx->lt->run(call, ctx->stream);
  if (s == CUBLAS_STATUS_NOT_SUPPORTED) return fail(ctx, Status::Unsupported, "prefill: cuBLASLt has no FP8 algorithm for M=%d N=%d K=%d", M, N, K);
  if (s != CUBLAS_STATUS_SUCCESS) return fail(ctx, Status::CublasError, "prefill: cublasLtMatmul failed (status %d)", (int)s);
  W4A8_CUDA_TRY(ctx, launchScaleEpilogue(ctx->accScratch, ldAcc, a.xScales, w.channelScales, M, N, a.y.f32, a.y.bf16,
                                         a.y.ldy, ctx->stream));
  if (info) *info = {GemmPath::PrefillLt, 0, M, false};
  return Status::Ok;
#else
  (void)a, (void)fp8Weights, (void)info;
  return fail(ctx, Status::Unsupported, "prefill: built without cuBLASLt");
#endif
}

}  // namespace

const char* statusName(Status s) {
  switch (s) {
    case Status::Ok: return "ok";
    case Status::NoDevice: return "no-device";
    case Status::InvalidArgument: return "invalid-argument";
    case Status::Unsupported: return "unsupported";
    case Status::CudaError: return "cuda-error";
    case Status::CublasError: return "cublas-error";
  }
  return "unknown";
}

const char* gemmPathName(GemmPath p) {
  switch (p) {
    case GemmPath::Auto: return "auto";
    case GemmPath::DecodeF16Mma: return "decode-f16mma";
    case GemmPath::DecodeFp8Mma: return "decode-fp8mma";
    case GemmPath::Gemv: return "gemv-f16mma";
    case GemmPath::GemvInt8: return "gemv-int8";
    case GemmPath::Fused: return "fused";
    case GemmPath::PrefillLt: return "prefill-cublaslt";
  }
  return "unknown";
}

bool deviceAvailable(DeviceInfo* info) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count < 1) return false;
  if (info) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return false;
    std::snprintf(info->name, sizeof(info->name), "%s", prop.name);
    info->computeMajor = prop.major;
    info->computeMinor = prop.minor;
    info->multiprocessors = prop.multiProcessorCount;
    info->globalMemoryBytes = prop.totalGlobalMem;
    info->l2CacheBytes = prop.l2CacheSize;
    info->cublasLt = W4A8_HAVE_CUBLASLT != 0;
  }
  return true;
}

Status createContext(Context** out, int device) {
  *out = nullptr;
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count <= device)
    return fail(nullptr, Status::NoDevice, "no CUDA device %d", device);
  auto ctx = std::make_unique<Context>();
  ctx->device = device;
  W4A8_CUDA_TRY(ctx.get(), cudaSetDevice(device));
  cudaDeviceProp prop{};
  W4A8_CUDA_TRY(ctx.get(), cudaGetDeviceProperties(&prop, device));
  if (prop.major < 9) return fail(nullptr, Status::Unsupported, "device %d is sm_%d%d; the kernels are built for sm_90a", device, prop.major, prop.minor);
  ctx->multiprocessors = prop.multiProcessorCount;
  W4A8_CUDA_TRY(ctx.get(), cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking));
#if W4A8_HAVE_CUBLASLT
  ctx->lt = std::make_unique<LtGemm>();
  if (ctx->lt->init(kLtWorkspaceBytes) != CUBLAS_STATUS_SUCCESS) ctx->lt.reset();
#endif
  *out = ctx.release();
  return Status::Ok;
}

void destroyContext(Context* ctx) {
  if (!ctx) return;
  cudaSetDevice(ctx->device);
  if (ctx->stream) cudaStreamSynchronize(ctx->stream);
#if W4A8_HAVE_CUBLASLT
  ctx->lt.reset();
#endif
  cudaFree(ctx->partials);
  cudaFree(ctx->counters);
  cudaFree(ctx->w8Scratch);
  cudaFree(ctx->accScratch);
  cudaFree(ctx->int8Scratch);
  if (ctx->stream) cudaStreamDestroy(ctx->stream);
  delete ctx;
}

Status synchronize(Context* ctx) {
  W4A8_CUDA_TRY(ctx, cudaStreamSynchronize(ctx->stream));
  return Status::Ok;
}

const char* lastError(Context* ctx) { return ctx ? ctx->error.c_str() : gNoContextError.c_str(); }
void* streamHandle(Context* ctx) { return ctx->stream; }
uint64_t scratchGeneration(Context* ctx) { return ctx->scratchGeneration; }

Status deviceAlloc(Context* ctx, void** devicePtr, size_t bytes) {
  *devicePtr = nullptr;
  W4A8_CUDA_TRY(ctx, cudaMalloc(devicePtr, bytes ? bytes : 1));
  return Status::Ok;
}
void deviceFree(void* devicePtr) { cudaFree(devicePtr); }

Status copyToDevice(Context* ctx, void* devicePtr, const void* hostPtr, size_t bytes) {
  W4A8_CUDA_TRY(ctx, cudaMemcpyAsync(devicePtr, hostPtr, bytes, cudaMemcpyHostToDevice, ctx->stream));
  W4A8_CUDA_TRY(ctx, cudaStreamSynchronize(ctx->stream));
  return Status::Ok;
}
Status copyToHost(Context* ctx, void* hostPtr, const void* devicePtr, size_t bytes) {
  W4A8_CUDA_TRY(ctx, cudaMemcpyAsync(hostPtr, devicePtr, bytes, cudaMemcpyDeviceToHost, ctx->stream));
  W4A8_CUDA_TRY(ctx, cudaStreamSynchronize(ctx->stream));
  return Status::Ok;
}
Status fillDevice(Context* ctx, void* devicePtr, int byteValue, size_t bytes) {
  W4A8_CUDA_TRY(ctx, cudaMemsetAsync(devicePtr, byteValue, bytes, ctx->stream));
  return Status::Ok;
}

double int4LinearFraction(const Int4WeightsView& host) {
  if (host.groupSize != 128 || !e4m3Family(host.format)) return 0.0;
  const float fp8Max = fp8Spec(host.format).maxFinite;
  const size_t groups = (size_t)host.rows * (host.cols / host.groupSize);
  size_t linear = 0;
  for (size_t i = 0; i < groups; ++i) linear += linearGroup(host.groupScales[i], host.zeros[i], fp8Max);
  return groups ? (double)linear / groups : 0.0;
}

Status uploadInt4Weights(Context* ctx, const Int4WeightsView& host, DeviceInt4Weights* out) {
  *out = DeviceInt4Weights{};
  Status s = checkWeights(ctx, host);
  if (s != Status::Ok) return s;
  const size_t N = host.rows, K = host.cols, groups = K / host.groupSize;
  auto round256 = [](size_t x) { return (x + 255) / 256 * 256; };
  // One block: [codes N*K/2][groupScales N*groups*4][zeros N*groups][channelScales N*4], 256-byte aligned parts.
  const size_t codesBytes = N * K / 2, scalesBytes = N * groups * 4, zerosBytes = N * groups, channelBytes = N * 4;
  const size_t offScales = round256(codesBytes), offZeros = offScales + round256(scalesBytes),
               offChannel = offZeros + round256(zerosBytes), total = offChannel + round256(channelBytes);
  uint8_t* block = nullptr;
  W4A8_CUDA_TRY(ctx, cudaMalloc((void**)&block, total));
  out->ownedBlock = block;
  W4A8_CUDA_TRY(ctx, cudaMemcpyAsync(block, host.codes, codesBytes, cudaMemcpyHostToDevice, ctx->stream));
  W4A8_CUDA_TRY(ctx, cudaMemcpyAsync(block + offScales, host.groupScales, scalesBytes, cudaMemcpyHostToDevice, ctx->stream));
  W4A8_CUDA_TRY(ctx, cudaMemcpyAsync(block + offZeros, host.zeros, zerosBytes, cudaMemcpyHostToDevice, ctx->stream));
  W4A8_CUDA_TRY(ctx, cudaMemcpyAsync(block + offChannel, host.channelScales, channelBytes, cudaMemcpyHostToDevice, ctx->stream));
  W4A8_CUDA_TRY(ctx, cudaStreamSynchronize(ctx->stream));
  out->view = host;
  out->view.codes = block;
  out->view.groupScales = reinterpret_cast<const float*>(block + offScales);
  out->view.zeros = block + offZeros;
  out->view.channelScales = reinterpret_cast<const float*>(block + offChannel);
  out->linearGroups = int4LinearFraction(host) >= 0.99;
  return Status::Ok;
}

Status prepareFp8Weights(Context* ctx, DeviceInt4Weights* w) {
  Status s = checkWeights(ctx, w->view);
  if (s != Status::Ok) return s;
  if (w->fp8Codes) return Status::Ok;
  uint8_t* codes = nullptr;
  W4A8_CUDA_TRY(ctx, cudaMalloc((void**)&codes, (size_t)w->view.rows * w->view.cols));
  w->ownedFp8 = codes;
  w->fp8Codes = codes;
  W4A8_CUDA_TRY(ctx, launchDequantInt4ToFp8(w->view, codes, ctx->stream));
  return Status::Ok;
}

void freeInt4Weights(DeviceInt4Weights* w) {
  if (!w) return;
  cudaFree(w->ownedBlock);
  cudaFree(w->ownedFp8);
  *w = DeviceInt4Weights{};
}

namespace {
// The buffer an IntegerActivations brings: integerActivationsBytes(K) bytes, 16-byte aligned.
Status checkIntegerBuffer(Context* ctx, const IntegerActivations& a, int K) {
  if (a.buffer && a.bytes >= integerActivationsBytes(K) && aligned16(a.buffer)) return Status::Ok;
  return fail(ctx, Status::InvalidArgument, "integer activations need %zu bytes, 16-byte aligned (got %zu)",
              integerActivationsBytes(K), a.bytes);
}

// Both quantizations: checks, then the kernel, with the integer GEMV's activations when asked and possible.
Status quantize(Context* ctx, const float* x, int M, int K, bool dynamic, float scale, Fp8Format f, uint8_t* x8,
                float* xScales, IntegerActivations* integer) {
  if (M < 0 || K < 1 || !validFormat(f)) return fail(ctx, Status::InvalidArgument, "quantize: need M >= 0, K >= 1 and a known format (M=%d K=%d)", M, K);
  if (integer) integer->ready = false;
  if (M == 0) return Status::Ok;
  if (!x || !x8 || !xScales) return fail(ctx, Status::InvalidArgument, "quantize: x, x8 and xScales must be set");
  void* integerBuffer = nullptr;
  if (integer && e4m3Family(f) && M <= kGemvInt8MaxTokens && K % 128 == 0 && aligned16(x8)) {
    Status s = checkIntegerBuffer(ctx, *integer, K);
    if (s != Status::Ok) return s;
    integerBuffer = integer->buffer;
  }
  W4A8_CUDA_TRY(ctx, launchQuantize(x, M, K, dynamic, scale, f, x8, xScales, integerBuffer, ctx->stream));
  if (integerBuffer) *integer = {integer->buffer, integer->bytes, x8, M, K, f, 1, true};
  return Status::Ok;
}
}  // namespace

size_t integerActivationsBytes(int K) { return std::max(IntegerActivationsLayout(K, 1).total, gemvInt8ScratchBytes(K)); }

Status makeIntegerActivations(Context* ctx, const uint8_t* x8, int M, int K, Fp8Format f, IntegerActivations* out) {
  if (!out) return fail(ctx, Status::InvalidArgument, "integer activations: out must be set");
  out->ready = false;
  if (!x8 || !aligned16(x8) || M < 1 || M > kGemvInt8MaxTokens || K < 128 || K % 128 != 0 || !e4m3Family(f))
    return fail(ctx, Status::InvalidArgument, "integer activations: need aligned x8, 1-8 tokens, K a multiple of 128 "
                "and e4m3fn / e4m3 codes (M=%d K=%d)", M, K);
  Status s = checkIntegerBuffer(ctx, *out, K);
  if (s != Status::Ok) return s;
  W4A8_CUDA_TRY(ctx, launchLimbs(x8, M, K, f, out->buffer, ctx->stream));
  *out = {out->buffer, out->bytes, x8, M, K, f, gemvInt8PrepFlagsPerToken(K), true};
  return Status::Ok;
}

Status quantizeActivationsDynamic(Context* ctx, const float* x, int M, int K, Fp8Format f, uint8_t* x8,
                                  float* xScales, IntegerActivations* integer) {
  return quantize(ctx, x, M, K, true, 1.0f, f, x8, xScales, integer);
}

Status quantizeActivationsStatic(Context* ctx, const float* x, int M, int K, float scale, Fp8Format f, uint8_t* x8,
                                 float* xScales, IntegerActivations* integer) {
  return quantize(ctx, x, M, K, false, scale, f, x8, xScales, integer);
}

Status dequantInt4ToFp8(Context* ctx, const Int4WeightsView& w, uint8_t* out) {
  Status s = checkWeights(ctx, w);
  if (s != Status::Ok) return s;
  if (!out || !aligned16(out)) return fail(ctx, Status::InvalidArgument, "dequant: out must be set and 16-byte aligned");
  W4A8_CUDA_TRY(ctx, launchDequantInt4ToFp8(w, out, ctx->stream));
  return Status::Ok;
}

Status gemmW4A8(Context* ctx, const W4A8GemmArgs& a, const uint8_t* fp8Weights, const GemmOptions& options,
                GemmPlanInfo* info) {
  Status s = checkWeights(ctx, a.w);
  if (s != Status::Ok) return s;
  if (a.M < 0) return fail(ctx, Status::InvalidArgument, "gemm: M must be >= 0 (got %d)", a.M);
  s = checkOutput(ctx, a.y, a.w.rows);
  if (s != Status::Ok) return s;
  if (!validFormat(a.actFormat)) return fail(ctx, Status::InvalidArgument, "gemm: unknown activation format %d", (int)a.actFormat);
  if (a.M == 0) return Status::Ok;
  if (!a.x8 || !a.xScales) return fail(ctx, Status::InvalidArgument, "gemm: x8 and xScales must be set");
  if (!aligned16(a.x8)) return fail(ctx, Status::InvalidArgument, "gemm: x8 must be 16-byte aligned");
  if (fp8Weights && !aligned16(fp8Weights)) return fail(ctx, Status::InvalidArgument, "gemm: fp8Weights must be 16-byte aligned");

  GemmPath path = options.path;
  const bool fp8Pair = e4m3Family(a.w.format) && e4m3Family(a.actFormat);
  if (path == GemmPath::Auto) {
    const bool ltPossible = W4A8_HAVE_CUBLASLT && !(a.w.format == Fp8Format::E5M2 && a.actFormat == Fp8Format::E5M2);
    if (a.M > 64 && ltPossible) {
      s = runPrefill(ctx, a, fp8Weights, info);
      if (s != Status::Unsupported) return s;
      // cuBLASLt declined (shape or alignment): the fused kernel over token tiles.
    }
    path = GemmPath::Fused;
  }
  // Measured on the H200 (RESULTS.md, 2026-12-01, both kernels as programmatic launches, the GEMV with two MMA
  // chains): on rows of K <= 4096 the GEMV beats the split-K kernel at 1-16 tokens (4096x4096: 7.0 against 7.7-11.6
  // us); up to K = 11008 it does at 1-8 tokens (4096x11008 at 8: 15.3 against 17.0 us; 8192x8192 at 8: 20.3
  // against 21.8), while at 16 tokens or on K = 28672 the split-K kernel is as fast or faster (0-33 %).
  if (path == GemmPath::Fused) {
    const bool gemv = a.M <= kGemvMaxTokens && (a.w.cols <= 4096 || (a.M <= 8 && a.w.cols <= 12288));
    path = integerGemvPays(a, options) ? GemmPath::GemvInt8
           : gemv                                         ? GemmPath::Gemv
                                                          : GemmPath::DecodeF16Mma;
  }
  if (path == GemmPath::PrefillLt) return runPrefill(ctx, a, fp8Weights, info);
  if (path == GemmPath::GemvInt8) {
    if (!gemvInt8Takes(a))
      return fail(ctx, Status::Unsupported, "gemv-int8: needs groupSize 128 and e4m3fn / e4m3 weights and activations");
    return overTokenTiles(a.M, kGemvInt8MaxTokens,
                          [&](int m0, int mTile) { return runGemvInt8(ctx, a, m0, mTile, options, info); });
  }
  if (path == GemmPath::Gemv) {
    return overTokenTiles(a.M, kGemvMaxTokens,
                          [&](int m0, int mTile) { return runGemv(ctx, a, m0, mTile, options.splitK, info); });
  }
  if (path == GemmPath::DecodeFp8Mma && !fp8Pair)
    return fail(ctx, Status::Unsupported, "decode-fp8mma: needs e4m3fn / e4m3 weights and activations");
  const bool fp8Mma = path == GemmPath::DecodeFp8Mma;
  return overTokenTiles(a.M, 64,
                        [&](int m0, int mTile) { return runDecode(ctx, a, m0, mTile, fp8Mma, options.splitK, info); });
}

Status gemmW8A8(Context* ctx, const W8A8GemmArgs& a, GemmPlanInfo* info) {
#if W4A8_HAVE_CUBLASLT
  if (!ctx->lt) return fail(ctx, Status::Unsupported, "w8a8: cuBLASLt did not initialise");
  const int M = a.M, N = a.w.rows, K = a.w.cols;
  if (M < 0 || N < 1 || K < 1 || !validFormat(a.actFormat) || !validFormat(a.w.format))
    return fail(ctx, Status::InvalidArgument, "w8a8: bad shape or format (M=%d N=%d K=%d)", M, N, K);
  Status s = checkOutput(ctx, a.y, N);
  if (s != Status::Ok) return s;
  if (M == 0) return Status::Ok;
  if (!a.x8 || !a.xScales || !a.w.codes || !a.w.channelScales)
    return fail(ctx, Status::InvalidArgument, "w8a8: x8, xScales, w.codes and w.channelScales must be set");
  if (a.w.format == Fp8Format::E5M2 && a.actFormat == Fp8Format::E5M2)
    return fail(ctx, Status::Unsupported, "w8a8: cuBLASLt has no e5m2 x e5m2 GEMM");
  // Same call as the prefill path with the FP8 weights given.
  Int4WeightsView fake{};
  fake.rows = N, fake.cols = K, fake.groupSize = 32, fake.format = a.w.format;
  fake.channelScales = a.w.channelScales;
  fake.codes = a.w.codes;  // unused: fp8Weights below is set
  W4A8GemmArgs args{a.x8, a.xScales, a.actFormat, M, fake, a.y};
  return runPrefill(ctx, args, a.w.codes, info);
#else
  (void)a, (void)info;
  return fail(ctx, Status::Unsupported, "w8a8: built without cuBLASLt");
#endif
}

Status encodeFp8ForTest(Context* ctx, const float* in, uint8_t* out, size_t count, Fp8Format f) {
  if (!validFormat(f)) return fail(ctx, Status::InvalidArgument, "encode: unknown format");
  if (count == 0) return Status::Ok;
  W4A8_CUDA_TRY(ctx, launchEncodeFp8(in, out, count, f, ctx->stream));
  return Status::Ok;
}

}  // namespace w4a8::cuda

#if W4A8_HAVE_CUBLASLT
namespace w4a8::cudakern {
LtGemm* contextLt(w4a8::cuda::Context* ctx) { return ctx->lt.get(); }
}  // namespace w4a8::cudakern
#endif
