// Packing (FP32 weights -> INT4 or FP8), unpacking, dequantization and activation quantization.
#include "addon/bindings.h"
#include "quant/fp8_pack.h"
#include "quant/int4_pack.h"

namespace w4a8::addon {
namespace {

// (weights: Float32Array [rows*cols], target: Int4 weights object with allocated arrays, symmetric, pow2)
Napi::Value packInt4(const Napi::CallbackInfo& info, bool async) {
  const Int4WeightsView target = int4Weights(info[1], "target");
  const float* w = typedArray<float>(info[0], "weights", (size_t)target.rows * target.cols);
  Int4PackOptions options;
  options.groupSize = target.groupSize;
  options.format = target.format;
  options.symmetric = boolean(info[2], "symmetric");
  options.pow2Scales = boolean(info[3], "pow2Scales");
  // The target's arrays were allocated by lib/ for this call: writing through the view is intended.
  const Int4WeightsMut out{const_cast<uint8_t*>(target.codes), const_cast<float*>(target.groupScales),
                           const_cast<uint8_t*>(target.zeros), const_cast<float*>(target.channelScales)};
  return runTask(info, async, [=] { packInt4Rows(w, target.rows, target.cols, options, out, 0, target.rows); },
                 info[1]);
}

// (weights: Float32Array, target: FP8 weights object with allocated arrays)
Napi::Value packFp8(const Napi::CallbackInfo& info, bool async) {
  const Fp8WeightsView target = fp8Weights(info[1], "target");
  const float* w = typedArray<float>(info[0], "weights", (size_t)target.rows * target.cols);
  uint8_t* codes = const_cast<uint8_t*>(target.codes);
  float* scales = const_cast<float*>(target.channelScales);
  return runTask(info, async,
                 [=] { packFp8Rows(w, target.rows, target.cols, target.format, codes, scales, 0, target.rows); },
                 info[1]);
}

// (packed: Uint8Array [n/2], out: Uint8Array [n])
Napi::Value unpackInt4(const Napi::CallbackInfo& info) {
  const size_t n = info[1].IsTypedArray() ? info[1].As<Napi::TypedArray>().ElementLength() : 0;
  if (n % 2) fail(info.Env(), codes::kLength, "out must have an even length");
  const uint8_t* packed = typedArray<uint8_t>(info[0], "packed", n / 2);
  unpackInt4Codes(packed, n, typedArray<uint8_t>(info[1], "out", n));
  return info[1];
}

// (weights: Int4 weights object, out: Uint8Array [rows*cols] FP8 codes)
Napi::Value dequantInt4(const Napi::CallbackInfo& info, bool async) {
  const Int4WeightsView w = int4Weights(info[0], "weights");
  uint8_t* out = typedArray<uint8_t>(info[1], "out", (size_t)w.rows * w.cols);
  return runTask(info, async, [=] { dequantInt4ToFp8(w, out, 0, w.rows); }, info[1]);
}

// (x: Float32Array [rows*cols], rows, cols, format, staticScale: number | undefined, x8: Uint8Array, scales: Float32Array)
Napi::Value quantizeActivations(const Napi::CallbackInfo& info) {
  const int rows = dimension(info[1], "rows"), cols = dimension(info[2], "cols");
  const size_t n = (size_t)rows * cols;
  const float* x = typedArray<float>(info[0], "x", n);
  const Fp8Format f = fp8Format(info[3], "format");
  uint8_t* x8 = typedArray<uint8_t>(info[5], "codes", n);
  float* scales = typedArray<float>(info[6], "scales", rows);
  if (info[4].IsUndefined()) quantizeActivationsDynamic(x, rows, cols, f, x8, scales);
  else quantizeActivationsStatic(x, rows, cols, positiveScale(info[4], "scale"), f, x8, scales);
  return info.Env().Undefined();
}

}  // namespace

void registerPack(Napi::Env env, Napi::Object exports) {
  exports.Set("packInt4", Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return packInt4(i, false); }));
  exports.Set("packInt4Async", Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return packInt4(i, true); }));
  exports.Set("packFp8", Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return packFp8(i, false); }));
  exports.Set("packFp8Async", Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return packFp8(i, true); }));
  exports.Set("unpackInt4", Napi::Function::New(env, unpackInt4));
  exports.Set("dequantInt4", Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return dequantInt4(i, false); }));
  exports.Set("dequantInt4Async", Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return dequantInt4(i, true); }));
  exports.Set("quantizeActivations", Napi::Function::New(env, quantizeActivations));
}

}  // namespace w4a8::addon
