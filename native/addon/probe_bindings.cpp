// Machine-limit probes for the kernel benchmark (native/bench/probes.h), synchronous: each blocks the
// calling thread for about a second, which a benchmark script accepts.
//   probeReadBandwidth(bytes, threads[, passes = 5]) -> {gbPerSecond, bestSeconds, bytes, threads, passes, loads}
//   probeFmaPeak(threads[, isa = widest])            -> {gflops, isa, threads, lanes, accumulators, seconds}
//   probeFmaIsas()                                    -> e.g. [avx512, avx2, sse2, avx512bf16] (see probes.h)
#include <cmath>
#include <stdexcept>

#include "addon/bindings.h"
#include "bench/probes.h"

namespace w4a8::addon {
namespace {

// An integer in [lo, hi] (doubles hold every integer up to 2^53, enough for byte counts).
double integerIn(const Napi::Value& value, const char* name, double lo, double hi) {
  if (!value.IsNumber()) fail(value.Env(), codes::kType, std::string(name) + " must be a number");
  const double d = value.As<Napi::Number>().DoubleValue();
  if (!(d >= lo && d <= hi) || d != std::floor(d))
    fail(value.Env(), codes::kShape, std::string(name) + " must be an integer in [" + std::to_string((long long)lo) +
                                         ", " + std::to_string((long long)hi) + "]");
  return d;
}

constexpr double kMaxThreads = 4096;

Napi::Value probeReadBandwidth(const Napi::CallbackInfo& info) {
  const size_t bytes = (size_t)integerIn(info[0], "bytes", 1 << 20, 1ull << 40);
  const int threads = (int)integerIn(info[1], "threads", 1, kMaxThreads);
  const int passes = info[2].IsUndefined() ? 5 : (int)integerIn(info[2], "passes", 1, 1000);
  if (bytes / threads < 4096) fail(info.Env(), codes::kShape, "bytes must be at least threads x 4096");
  bench::BandwidthProbe r;
  try {
    r = bench::probeReadBandwidth(bytes, threads, passes);
  } catch (const std::exception& e) {
    fail(info.Env(), "E_NATIVE", e.what());
  }
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("gbPerSecond", r.gbPerSecond);
  o.Set("bestSeconds", r.bestSeconds);
  o.Set("bytes", (double)r.bytes);
  o.Set("threads", r.threads);
  o.Set("passes", r.passes);
  o.Set("loads", r.loads);
  return o;
}

Napi::Value probeFmaPeak(const Napi::CallbackInfo& info) {
  const int threads = (int)integerIn(info[0], "threads", 1, kMaxThreads);
  std::string isa;
  if (!info[1].IsUndefined()) {
    if (!info[1].IsString()) fail(info.Env(), codes::kType, "isa must be a string");
    isa = info[1].As<Napi::String>().Utf8Value();
  }
  bench::FmaProbe r;
  try {
    r = bench::probeFmaPeak(threads, isa);
  } catch (const std::invalid_argument& e) {
    fail(info.Env(), "E_OPTION", e.what());
  } catch (const std::exception& e) {
    fail(info.Env(), "E_NATIVE", e.what());
  }
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("gflops", r.gflops);
  o.Set("isa", r.isa);
  o.Set("threads", r.threads);
  o.Set("lanes", r.lanes);
  o.Set("accumulators", r.accumulators);
  o.Set("seconds", r.seconds);
  return o;
}

Napi::Value probeFmaIsas(const Napi::CallbackInfo& info) {
  const std::vector<std::string> names = bench::fmaIsas();
  Napi::Array a = Napi::Array::New(info.Env(), names.size());
  for (size_t i = 0; i < names.size(); ++i) a.Set((uint32_t)i, names[i]);
  return a;
}

}  // namespace

void registerProbes(Napi::Env env, Napi::Object exports) {
  exports.Set("probeReadBandwidth", Napi::Function::New(env, probeReadBandwidth));
  exports.Set("probeFmaPeak", Napi::Function::New(env, probeFmaPeak));
  exports.Set("probeFmaIsas", Napi::Function::New(env, probeFmaIsas));
}

}  // namespace w4a8::addon
