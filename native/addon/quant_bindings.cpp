// Calibrated quantizers (GPTQ, DPQ, GAR / act-order column orders): native/quant/gptq.h.
#include <string>

#include "addon/bindings.h"
#include "quant/gptq.h"

namespace w4a8::addon {
namespace {

const double* float64Array(const Napi::Value& value, const char* name, size_t length) {
  if (!isTypedArrayOf(value, napi_float64_array)) fail(value.Env(), codes::kType, std::string(name) + " must be a Float64Array");
  Napi::Float64Array array = value.As<Napi::Float64Array>();
  if (array.ElementLength() != length)
    fail(value.Env(), codes::kLength, std::string(name) + " must have " + std::to_string(length) + " elements, got " +
                                          std::to_string(array.ElementLength()));
  return array.Data();
}

std::string stringField(const Napi::Object& o, const char* key) {
  const Napi::Value v = o.Get(key);
  if (!v.IsString()) fail(o.Env(), codes::kType, std::string("options.") + key + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

// (weights: Float32Array [rows*cols], target: Int4 weights object with allocated arrays,
//  hessian: Float64Array [h*h], hessianSize: h <= cols,
//  options: {quantizer: 'int4'|'composite', order: 'natural'|'gar'|'act-order', damp, symmetric, pow2Scales,
//           searchScales},
//  stats: Float64Array [2] <- (damp used, Σ err²))
Napi::Value gptqQuantizeBinding(const Napi::CallbackInfo& info, bool async) {
  const Napi::Env env = info.Env();
  const Int4WeightsView target = int4Weights(info[1], "target");
  const float* w = typedArray<float>(info[0], "weights", (size_t)target.rows * target.cols);
  const int hessianSize = dimension(info[3], "hessianSize");
  if (hessianSize > target.cols) fail(env, codes::kShape, "hessianSize must be at most target.cols");
  const double* hessian = float64Array(info[2], "hessian", (size_t)hessianSize * hessianSize);
  if (!info[4].IsObject()) fail(env, codes::kType, "options must be an object");
  const Napi::Object o = info[4].As<Napi::Object>();
  GptqOptions options;
  options.pack.groupSize = target.groupSize;
  options.pack.format = target.format;
  options.pack.symmetric = boolean(o.Get("symmetric"), "options.symmetric");
  options.pack.pow2Scales = boolean(o.Get("pow2Scales"), "options.pow2Scales");
  options.searchScales = boolean(o.Get("searchScales"), "options.searchScales");
  const std::string quantizer = stringField(o, "quantizer"), order = stringField(o, "order");
  if (quantizer == "int4") options.quantizer = SweepQuantizer::Int4;
  else if (quantizer == "composite") options.quantizer = SweepQuantizer::Composite;
  else fail(env, "E_OPTION", "options.quantizer must be 'int4' or 'composite'");
  if (order == "natural") options.order = SweepOrder::Natural;
  else if (order == "gar") options.order = SweepOrder::Gar;
  else if (order == "act-order") options.order = SweepOrder::ActOrder;
  else fail(env, "E_OPTION", "options.order must be 'natural', 'gar' or 'act-order'");
  const Napi::Value damp = o.Get("damp");
  if (!damp.IsNumber() || !(damp.As<Napi::Number>().DoubleValue() >= 0) || damp.As<Napi::Number>().DoubleValue() > 1)
    fail(env, "E_OPTION", "options.damp must be a number in [0, 1]");
  options.damp = damp.As<Napi::Number>().DoubleValue();
  double* stats = const_cast<double*>(float64Array(info[5], "stats", 2));
  const Int4WeightsMut out{const_cast<uint8_t*>(target.codes), const_cast<float*>(target.groupScales),
                           const_cast<uint8_t*>(target.zeros), const_cast<float*>(target.channelScales)};
  const int rows = target.rows, cols = target.cols;
  const Task task = [=] {
    const GptqResult result = gptqQuantize(w, rows, cols, hessian, hessianSize, options, out);
    stats[0] = result.damp;
    stats[1] = result.loss;
  };
  if (!async) {
    try {
      task();
    } catch (const std::exception& e) {  // an indefinite Hessian
      fail(env, "E_NATIVE", e.what());
    }
    return info[1];
  }
  return runTask(info, true, task, info[1]);
}

// (diag: Float64Array [cols], groupSize, order: 'gar'|'act-order') -> Int32Array [cols], order[p] = column
Napi::Value columnOrder(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  const size_t cols = info[0].IsTypedArray() ? info[0].As<Napi::TypedArray>().ElementLength() : 0;
  if (cols == 0) fail(env, codes::kShape, "diag must be a non-empty Float64Array");
  const double* diag = float64Array(info[0], "diag", cols);
  const int groupSize = dimension(info[1], "groupSize");
  if (cols % groupSize != 0) fail(env, codes::kGroup, "the length of diag must be a multiple of groupSize");
  if (!info[2].IsString()) fail(env, codes::kType, "order must be a string");
  const std::string which = info[2].As<Napi::String>().Utf8Value();
  std::vector<int> order;
  if (which == "gar") order = garOrder(diag, (int)cols, groupSize);
  else if (which == "act-order") order = actOrder(diag, (int)cols);
  else fail(env, "E_OPTION", "order must be 'gar' or 'act-order'");
  Napi::Int32Array result = Napi::Int32Array::New(env, cols);
  std::copy(order.begin(), order.end(), result.Data());
  return result;
}

}  // namespace

void registerQuant(Napi::Env env, Napi::Object exports) {
  exports.Set("gptqQuantize", Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return gptqQuantizeBinding(i, false); }));
  exports.Set("gptqQuantizeAsync", Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return gptqQuantizeBinding(i, true); }));
  exports.Set("columnOrder", Napi::Function::New(env, columnOrder));
}

}  // namespace w4a8::addon
