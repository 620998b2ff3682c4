// Log probabilities of a logits row, for lib/model/logprobs.ts (OpenAI's `logprobs`):
//   logSoftmaxTop(row: Float32Array, topCount: 0..20) -> Float64Array [log Σ e^row, ids of the topCount largest...]
// Native because it runs on the event loop once per generated token of every request that asks: over a 152k
// vocabulary the JS loop (Math.exp) took about 2.5 ms a token, this one vectorizes (model/ops.cpp).
#include <cmath>

#include "addon/bindings.h"
#include "model/ops.h"

namespace w4a8::addon {
namespace {

constexpr int kMaxTop = 20;

Napi::Value logSoftmaxTopBinding(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!isTypedArrayOf(info[0], napi_float32_array)) fail(env, codes::kType, "row must be a Float32Array");
  const Napi::Float32Array row = info[0].As<Napi::Float32Array>();
  if (row.ElementLength() == 0 || row.ElementLength() > (size_t)1 << 30) fail(env, codes::kLength, "row must have 1 to 2^30 elements");
  if (!info[1].IsNumber()) fail(env, codes::kType, "topCount must be a number");
  const double count = info[1].As<Napi::Number>().DoubleValue();  // (checked as a double: Int32Value wraps and truncates)
  if (!(count >= 0 && count <= kMaxTop && count == std::floor(count) && count <= (double)row.ElementLength()))
    fail(env, codes::kShape, "topCount must be an integer in [0, min(20, row length)]");
  const int topCount = (int)count;
  int ids[kMaxTop];
  const double logMass = logSoftmaxTop(row.Data(), (int)row.ElementLength(), topCount, ids);
  Napi::Float64Array out = Napi::Float64Array::New(env, 1 + (size_t)topCount);
  out[0] = logMass;
  for (int i = 0; i < topCount; ++i) out[1 + i] = ids[i];
  return out;
}

}  // namespace

void registerLogprobs(Napi::Env env, Napi::Object exports) {
  exports.Set("logSoftmaxTop", Napi::Function::New(env, logSoftmaxTopBinding));
}

}  // namespace w4a8::addon
