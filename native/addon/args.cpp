#include "addon/args.h"

#include <memory>

#include "kernels/int4_tables.h"

#include <cmath>

namespace w4a8::addon {

void fail(Napi::Env env, const char* code, const std::string& message) {
  Napi::Error error = Napi::Error::New(env, message);
  error.Value().Set("code", Napi::String::New(env, code));
  throw error;
}

int dimension(const Napi::Value& value, const char* name) {
  if (!value.IsNumber()) fail(value.Env(), codes::kType, std::string(name) + " must be a number");
  const double d = value.As<Napi::Number>().DoubleValue();
  if (!(d >= 1 && d <= kMaxDimension) || d != std::floor(d))
    fail(value.Env(), codes::kShape,
         std::string(name) + " must be an integer in [1, " + std::to_string(kMaxDimension) + "]");
  return (int)d;
}

Fp8Format fp8Format(const Napi::Value& value, const char* name) {
  if (!value.IsString()) fail(value.Env(), codes::kFormat, std::string(name) + " must be 'e4m3fn', 'e4m3' or 'e5m2'");
  const std::string s = value.As<Napi::String>().Utf8Value();
  if (s == "e4m3fn") return Fp8Format::E4M3FN;
  if (s == "e4m3") return Fp8Format::E4M3;
  if (s == "e5m2") return Fp8Format::E5M2;
  fail(value.Env(), codes::kFormat, std::string(name) + " must be 'e4m3fn', 'e4m3' or 'e5m2', got '" + s + "'");
}

float positiveScale(const Napi::Value& value, const char* name) {
  if (!value.IsNumber()) fail(value.Env(), codes::kType, std::string(name) + " must be a number");
  const float s = (float)value.As<Napi::Number>().DoubleValue();
  if (!(s > 0.0f) || !std::isfinite(s)) fail(value.Env(), codes::kScale, std::string(name) + " must be finite and > 0");
  return s;
}

bool boolean(const Napi::Value& value, const char* name) {
  if (!value.IsBoolean()) fail(value.Env(), codes::kType, std::string(name) + " must be a boolean");
  return value.As<Napi::Boolean>().Value();
}

bool isTypedArrayOf(const Napi::Value& value, napi_typedarray_type type) {
  return value.IsTypedArray() && value.As<Napi::TypedArray>().TypedArrayType() == type;
}

namespace {
Napi::Object object(const Napi::Value& value, const char* name) {
  if (!value.IsObject()) fail(value.Env(), codes::kType, std::string(name) + " must be an object");
  return value.As<Napi::Object>();
}
std::string field(const char* name, const char* key) { return std::string(name) + "." + key; }
}  // namespace

Int4WeightsView int4Weights(const Napi::Value& value, const char* name) {
  Napi::Object o = object(value, name);
  Int4WeightsView w;
  w.rows = dimension(o.Get("rows"), field(name, "rows").c_str());
  w.cols = dimension(o.Get("cols"), field(name, "cols").c_str());
  w.groupSize = dimension(o.Get("groupSize"), field(name, "groupSize").c_str());
  w.format = fp8Format(o.Get("format"), field(name, "format").c_str());
  if (w.groupSize != 32 && w.groupSize != 64 && w.groupSize != 128)
    fail(value.Env(), codes::kGroup, field(name, "groupSize") + " must be 32, 64 or 128");
  if (w.cols % w.groupSize != 0)
    fail(value.Env(), codes::kGroup, field(name, "cols") + " must be a multiple of the group size");
  const size_t rows = (size_t)w.rows, groups = (size_t)w.groups();
  w.codes = typedArray<uint8_t>(o.Get("codes"), field(name, "codes").c_str(), rows * (size_t)w.cols / 2);
  w.groupScales = typedArray<float>(o.Get("groupScales"), field(name, "groupScales").c_str(), rows * groups);
  w.zeros = typedArray<uint8_t>(o.Get("zeros"), field(name, "zeros").c_str(), rows * groups);
  w.channelScales = typedArray<float>(o.Get("channelScales"), field(name, "channelScales").c_str(), rows);
  // Optional: the group tables prepareInt4Tables() made from these very arrays (kernels/int4_tables.h).
  const Napi::Value tables = o.Get("tables");
  if (!tables.IsUndefined()) {
    if (!tables.IsExternal())
      fail(value.Env(), codes::kType, field(name, "tables") + " must come from prepareInt4Tables");
    const Int4Tables* t = tables.As<Napi::External<std::shared_ptr<const Int4Tables>>>().Data()->get();
    if (!t->describes(w))
      fail(value.Env(), codes::kShape, field(name, "tables") + " were prepared from other arrays or another shape");
    w.tables = t;
  }
  return w;
}

Fp8WeightsView fp8Weights(const Napi::Value& value, const char* name) {
  Napi::Object o = object(value, name);
  Fp8WeightsView w;
  w.rows = dimension(o.Get("rows"), field(name, "rows").c_str());
  w.cols = dimension(o.Get("cols"), field(name, "cols").c_str());
  w.format = fp8Format(o.Get("format"), field(name, "format").c_str());
  w.codes = typedArray<uint8_t>(o.Get("codes"), field(name, "codes").c_str(), (size_t)w.rows * w.cols);
  w.channelScales = typedArray<float>(o.Get("channelScales"), field(name, "channelScales").c_str(), w.rows);
  return w;
}

GemmOutput gemmOutput(const Napi::Value& value, const char* name, int rows, int cols) {
  const size_t length = (size_t)rows * cols;
  if (isTypedArrayOf(value, napi_float32_array)) return {typedArray<float>(value, name, length), nullptr, cols};
  if (isTypedArrayOf(value, napi_uint16_array)) return {nullptr, typedArray<uint16_t>(value, name, length), cols};
  fail(value.Env(), codes::kType, std::string(name) + " must be a Float32Array (FP32) or Uint16Array (BF16)");
}

}  // namespace w4a8::addon
