// FP8 <-> FP32 / BF16 bulk conversions: (input, output, format[, saturate]) -> output.
#include "addon/bindings.h"

namespace w4a8::addon {
namespace {

size_t length(const Napi::Value& v) { return v.IsTypedArray() ? v.As<Napi::TypedArray>().ElementLength() : 0; }

Napi::Value encodeF32(const Napi::CallbackInfo& info) {
  const size_t n = length(info[0]);
  const float* in = typedArray<float>(info[0], "values", n);
  uint8_t* out = typedArray<uint8_t>(info[1], "out", n);
  fp8EncodeArray(in, out, n, fp8Format(info[2], "format"), boolean(info[3], "saturate"));
  return info[1];
}

Napi::Value encodeBf16(const Napi::CallbackInfo& info) {
  const size_t n = length(info[0]);
  const uint16_t* in = typedArray<uint16_t>(info[0], "values", n);
  uint8_t* out = typedArray<uint8_t>(info[1], "out", n);
  fp8EncodeBf16Array(in, out, n, fp8Format(info[2], "format"), boolean(info[3], "saturate"));
  return info[1];
}

Napi::Value decodeF32(const Napi::CallbackInfo& info) {
  const size_t n = length(info[0]);
  const uint8_t* in = typedArray<uint8_t>(info[0], "codes", n);
  fp8DecodeArray(in, typedArray<float>(info[1], "out", n), n, fp8Format(info[2], "format"));
  return info[1];
}

Napi::Value decodeBf16(const Napi::CallbackInfo& info) {
  const size_t n = length(info[0]);
  const uint8_t* in = typedArray<uint8_t>(info[0], "codes", n);
  fp8DecodeBf16Array(in, typedArray<uint16_t>(info[1], "out", n), n, fp8Format(info[2], "format"));
  return info[1];
}

Napi::Value floatToBf16(const Napi::CallbackInfo& info) {
  const size_t n = length(info[0]);
  const float* in = typedArray<float>(info[0], "values", n);
  floatToBf16Array(in, n, typedArray<uint16_t>(info[1], "out", n));
  return info[1];
}

}  // namespace

void registerFp8(Napi::Env env, Napi::Object exports) {
  exports.Set("fp8EncodeF32", Napi::Function::New(env, encodeF32));
  exports.Set("fp8EncodeBf16", Napi::Function::New(env, encodeBf16));
  exports.Set("fp8DecodeF32", Napi::Function::New(env, decodeF32));
  exports.Set("fp8DecodeBf16", Napi::Function::New(env, decodeBf16));
  exports.Set("floatToBf16", Napi::Function::New(env, floatToBf16));
}

}  // namespace w4a8::addon
