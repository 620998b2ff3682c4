// CUDA backend (Hopper, sm_90a): the host API a runtime calls. Plain C++ types only, so the addon and the
// model code can include it without CUDA headers; every pointer named `device...` or held in a Device*
// struct is a device pointer (from deviceAlloc or cudaMalloc), 16-byte aligned.
//
// Kernels (DESIGN.md §1, same contract as kernels.h):
//   quantizeActivations*  per-token (dynamic) or per-tensor (static) FP32 -> FP8, bit-exact with the reference
//   dequantInt4ToFp8      INT4 -> FP8 codes [N, K], bit-exact with the reference (the prefill path's weights)
//   gemmW4A8              Y = (s_x[m] * s_c[n]) * sum_k x8[m,k] * w8[n,k], paths (and Gemv, at GemmPath below):
//     DecodeF16Mma   fused: INT4 codes -> FP8 through the group's 16-entry table (prmt) -> exact FP16 ->
//                    mma.sync m16n8k16 with FP32 accumulation, split-K over CTAs; M <= 64 per launch.
//                    Products exact, FP32-class accumulation: the numeric contract. All formats.
//     DecodeFp8Mma   fused, same dequant, FP8 mma.sync m16n8k32 (e4m3 x e4m3). Hopper's FP8 tensor cores
//                    add the 32 products of one instruction with ~14-bit alignment (an "FP22" sum, not
//                    FP32): faster, but outside FP32 summation tolerance. E4M3FN / E4M3 only.
//     PrefillLt      dequantize to FP8 once (or use a cached copy), cuBLASLt FP8 GEMM with per-channel x
//                    per-token outer-vector scales (same FP22 tensor-core sums). Large M.
//     GemvInt8       fused, 1-8 tokens: exact int32 sums on the int8 tensor cores (mma.sync u8 x s8) of the
//                    weights as integers (the codes themselves for linear groups, i.e. power-of-two scales;
//                    else an integer group table) and the activations as three 7-bit limbs, then FP32.
//                    Products exact, FP32 accumulation. G = 128, E4M3-family weights and activations.
//   Auto picks the fused kernels (GemvInt8 / Gemv / DecodeF16Mma, see GemmPath below) for M <= 64 and PrefillLt
//   above (when cuBLASLt is built in and takes the formats), else the fused kernels over tiles of 64 tokens.
// All work is asynchronous on the context's stream; call synchronize() before reading results on the host.
// Status: tested on an H100 / H200 and correct (native/tests/cuda/RESULTS.md); the decode GEMMs do not reach the
// issue's bandwidth targets yet (0.35-0.47 of HBM at 1-2 tokens, 0.51-0.65 with the integer GEMV on power-of-two
// weights), and the prefill path reaches 0.55-0.87 x cuBLASLt FP8. Used by the GPU decoder step
// (native/model/cuda), which the addon loads as a plugin (model/cuda_plugin.h).
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels/kernels.h"

namespace w4a8::cuda {

enum class Status : int {
  Ok = 0,
  NoDevice,         // no CUDA device, or the driver is missing
  InvalidArgument,  // shape, pointer or option the kernels cannot take (message says which)
  Unsupported,      // valid, but this path / format / build cannot do it (e.g. no cuBLASLt)
  CudaError,        // a CUDA runtime call or a launch failed
  CublasError,      // a cuBLASLt call failed
};
const char* statusName(Status s);

struct DeviceInfo {
  char name[256];
  int computeMajor, computeMinor;
  int multiprocessors;
  size_t globalMemoryBytes;
  int l2CacheBytes;
  bool cublasLt;  // built with cuBLASLt (the prefill path and W8A8)
};

// True when a CUDA device can be used (and fills *info when given).
bool deviceAvailable(DeviceInfo* info = nullptr);

// A context owns a stream, the cuBLASLt handle and workspace, and the split-K scratch of the decode GEMM.
// One context is used by one host thread at a time.
struct Context;
Status createContext(Context** out, int device = 0);
void destroyContext(Context* ctx);
Status synchronize(Context* ctx);
const char* lastError(Context* ctx);  // message of the last failing call on this context ("" if none)
void* streamHandle(Context* ctx);     // the cudaStream_t, for callers that mix in their own kernels
// Changes whenever the context reallocates its scratch (split-K partials, prefill buffers): CUDA graphs that
// captured calls on this context before then point at freed memory and must be dropped.
uint64_t scratchGeneration(Context* ctx);

// Device memory, for callers without CUDA headers. Copies are synchronous with respect to the host.
Status deviceAlloc(Context* ctx, void** devicePtr, size_t bytes);
void deviceFree(void* devicePtr);
Status copyToDevice(Context* ctx, void* devicePtr, const void* hostPtr, size_t bytes);
Status copyToHost(Context* ctx, void* hostPtr, const void* devicePtr, size_t bytes);
Status fillDevice(Context* ctx, void* devicePtr, int byteValue, size_t bytes);

// INT4 weights on the device: `view` is the canonical layout of weights.h with device pointers, and
// fp8Codes an optional dequantized copy [rows, cols] (one byte per weight) that the prefill path reads
// instead of dequantizing on every call. A plain view: uploadInt4Weights() allocates (one buffer) and
// freeInt4Weights() releases what upload/prepare allocated; a caller may also build views of its own.
struct DeviceInt4Weights {
  Int4WeightsView view;
  uint8_t* fp8Codes;
  void* ownedBlock;  // allocation owned by this struct (upload), or nullptr
  void* ownedFp8;    // fp8Codes when prepareFp8Weights allocated it, or nullptr
  bool linearGroups; // found by upload: int4LinearFraction(host view) >= 0.99; pass it on in GemmOptions
};
// The fraction of groups that are "linear" (G = 128, E4M3-family format, s_g = +-2^k with k >= -9, z <= 15 and
// max(z, 15 - z) |s_g| within the format's max, so every FP8 weight is exactly s_g (q - z)), which power-of-two
// packing gives (quant/int4_pack.h) save for groups of tiny weights: the integer GEMV needs no tables for them.
double int4LinearFraction(const Int4WeightsView& host);
Status uploadInt4Weights(Context* ctx, const Int4WeightsView& host, DeviceInt4Weights* out);
Status prepareFp8Weights(Context* ctx, DeviceInt4Weights* w);  // fills fp8Codes (dequantized once)
void freeInt4Weights(DeviceInt4Weights* w);

// ---- kernels (device pointers) -----------------------------------------------------------------------
// Activations in the integer GEMV's form, made by the quantization alongside the FP8 codes so that GEMMs on those
// codes skip the GEMV's own pre-pass (one launch). For 1-8 tokens of E4M3-family activations and K a multiple of
// 128 (else left not ready); buffer: integerActivationsBytes(K) bytes of device memory, 16-byte aligned. Valid
// until the codes are written again.
struct IntegerActivations {
  void* buffer = nullptr;
  size_t bytes = 0;
  // Set by quantizeActivations* or makeIntegerActivations: what they were made for.
  const uint8_t* x8 = nullptr;
  int M = 0, K = 0;
  Fp8Format format = Fp8Format::E4M3FN;
  int flagsPerToken = 1;
  bool ready = false;
};
size_t integerActivationsBytes(int K);
// The same from FP8 codes already made (one launch), for callers that quantize elsewhere.
Status makeIntegerActivations(Context* ctx, const uint8_t* x8, int M, int K, Fp8Format f, IntegerActivations* out);

// x: [M, K] FP32 row-major; x8: [M, K] FP8 codes; xScales: [M]. Bit-exact with kernels.h's functions. With
// `integer`: also the integer GEMV's activations, when the shape and format allow (integer->ready says).
Status quantizeActivationsDynamic(Context* ctx, const float* x, int M, int K, Fp8Format f, uint8_t* x8,
                                  float* xScales, IntegerActivations* integer = nullptr);
Status quantizeActivationsStatic(Context* ctx, const float* x, int M, int K, float scale, Fp8Format f,
                                 uint8_t* x8, float* xScales, IntegerActivations* integer = nullptr);
// out: [rows, cols] FP8 codes, out[n * cols + k] = fp8(fl32(s_g * (q - z))). Bit-exact with dequantInt4ToFp8.
Status dequantInt4ToFp8(Context* ctx, const Int4WeightsView& w, uint8_t* out);

// Fused: the FP32-accumulating fused kernels, chosen by shape: GemvInt8 at 1-2 tokens on weights with linear
// groups (GemmOptions::linearGroups, G = 128, E4M3 family), else Gemv up to 16 tokens on rows of K <= 4096 and up
// to 8 tokens on rows of K <= 12288, else DecodeF16Mma. Auto: Fused up to 64 tokens, PrefillLt above (when
// cuBLASLt takes the call).
// Gemv and the decode paths take any M (in tiles of 16 and 64 tokens).
// GemvInt8: the integer GEMV (gemv_int8.cu), G = 128 and E4M3-family weights and activations, tiles of 8 tokens.
enum class GemmPath : int { Auto = 0, DecodeF16Mma, DecodeFp8Mma, PrefillLt, Gemv, Fused, GemvInt8 };
constexpr int kGemvMaxTokens = 16;  // tokens per GEMV launch
const char* gemmPathName(GemmPath p);

struct GemmOptions {
  GemmPath path = GemmPath::Auto;
  int splitK = 0;  // decode paths: CTAs along K; gemv: warps per CTA (0 = chosen from the shape and the device)
  // (Nearly) every group of the weights is linear (DeviceInt4Weights::linearGroups): Fused (and Auto) take the
  // integer GEMV at 1-2 tokens. A hint for speed: both paths give the same function within FP32 summation tolerance,
  // save two inputs outside the formats' contract, where the integer GEMV gives NaN: zero points above 15 (weights.h:
  // 0..15; packed models are checked at load) and Gaudi-2 e4m3 activation codes of inf (quantization saturates).
  bool linearGroups = false;
  // Integer GEMV: the activations the quantization made for a.x8 (used when made for exactly these codes, M and K).
  const IntegerActivations* integerActivations = nullptr;
};
// What a call did, for tests and the bench.
struct GemmPlanInfo {
  GemmPath path;
  int splitK;        // decode: splits used; gemv: warps per CTA; prefill: 0
  int tokenTile;     // decode: tokens per launch (8, 16, 32 or 64); gemv: 16; prefill: M
  bool fusedScales;  // prefill: scales applied by cuBLASLt (outer vectors) rather than by an epilogue kernel
};

// Y = W4A8 GEMM of device operands: a.x8 [M, K], a.xScales [M], a.w (device view), a.y (device; ldy >= N).
// fp8Weights: optional [N, K] dequantized copy for the prefill path (else it dequantizes into scratch).
Status gemmW4A8(Context* ctx, const W4A8GemmArgs& a, const uint8_t* fp8Weights = nullptr,
                const GemmOptions& options = GemmOptions(), GemmPlanInfo* info = nullptr);
// Y = W8A8 GEMM through cuBLASLt (Unsupported when built without it, or for e5m2 x e5m2).
Status gemmW8A8(Context* ctx, const W8A8GemmArgs& a, GemmPlanInfo* info = nullptr);

// ---- test hooks --------------------------------------------------------------------------------------
// The FP32 -> FP8 conversion the kernels use for weight tables (hardware cvt with the format's saturation,
// the software fp8Encode for inf and NaN), element-wise: tests expect out[i] = fp8Encode(in[i], f).
Status encodeFp8ForTest(Context* ctx, const float* in, uint8_t* out, size_t count, Fp8Format f);

}  // namespace w4a8::cuda
