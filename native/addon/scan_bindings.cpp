// The first element of an array that breaks one of the value rules of packed models (lib/format/packed-check.ts):
//   firstViolation(array, rule) -> Float64Array [index or -1]
//   firstViolationAsync(array, rule) -> Promise of the same, the scan on a libuv worker thread
// Why native: opening a model reads every zero point and group scale (a 7B model: 55 MB and 220 MB). In JS that
// held the event loop 62 ms for a 1B model with the file in the page cache and 480 ms with it on disk; here a
// worker thread pages the file in and scans it while the event loop runs on.
// Rules: 'zero-point' (Uint8Array: above 15), 'symmetric-zero-point' (Uint8Array: not 8), 'scale' (Float32Array:
// not finite and > 0), 'finite' (Float32Array: inf or NaN).
#include <cmath>
#include <cstdint>
#include <string>

#include "addon/bindings.h"

namespace w4a8::addon {
namespace {

// The first i in [0, n) with bad(v[i]), or -1. Blocks of 4096 are tested without an early exit (the loop
// vectorizes); only a block with a hit is searched element by element.
template <typename T, typename Bad>
int64_t firstBad(const T* v, size_t n, Bad bad) {
  constexpr size_t kBlock = 4096;
  for (size_t start = 0; start < n; start += kBlock) {
    const size_t end = start + kBlock < n ? start + kBlock : n;
    bool any = false;
    for (size_t i = start; i < end; ++i) any |= bad(v[i]);
    if (!any) continue;
    for (size_t i = start; i < end; ++i)
      if (bad(v[i])) return (int64_t)i;
  }
  return -1;
}

Napi::Value firstViolation(const Napi::CallbackInfo& info, bool async) {
  Napi::Env env = info.Env();
  if (!info[1].IsString()) fail(env, codes::kType, "rule must be a string");
  const std::string rule = info[1].As<Napi::String>().Utf8Value();
  const bool bytes = rule == "zero-point" || rule == "symmetric-zero-point";
  if (!bytes && rule != "scale" && rule != "finite") fail(env, codes::kType, "unknown rule '" + rule + "'");
  if (!isTypedArrayOf(info[0], bytes ? napi_uint8_array : napi_float32_array))
    fail(env, codes::kType, std::string("array must be a ") + (bytes ? "Uint8Array" : "Float32Array") + " for rule '" + rule + "'");
  const size_t n = info[0].As<Napi::TypedArray>().ElementLength();
  Napi::Float64Array result = Napi::Float64Array::New(env, 1);
  double* index = result.Data();
  Task task;
  if (bytes) {
    const uint8_t* v = info[0].As<Napi::Uint8Array>().Data();
    if (rule == "zero-point") task = [=] { *index = (double)firstBad(v, n, [](uint8_t z) { return z > 15; }); };
    else task = [=] { *index = (double)firstBad(v, n, [](uint8_t z) { return z != 8; }); };
  } else {
    const float* v = info[0].As<Napi::Float32Array>().Data();
    // (Integer-free comparisons, so the block test vectorizes; NaN fails both.)
    if (rule == "scale") task = [=] { *index = (double)firstBad(v, n, [](float s) { return !(s > 0.0f && s < INFINITY); }); };
    else task = [=] { *index = (double)firstBad(v, n, [](float x) { return !(x - x == 0.0f); }); };
  }
  return runTask(info, async, std::move(task), result);
}

}  // namespace

void registerScan(Napi::Env env, Napi::Object exports) {
  exports.Set("firstViolation", Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return firstViolation(i, false); }));
  exports.Set("firstViolationAsync", Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return firstViolation(i, true); }));
}

}  // namespace w4a8::addon
