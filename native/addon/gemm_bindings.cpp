// GEMM bindings. Each takes FP32 activations x [M, K] and writes Y [M, N] into `out`
// (Float32Array for FP32, Uint16Array for BF16). W4A8/W8A8 quantize x to FP8 first, per token
// (staticScale undefined) or with one static scale.
#include <memory>
#include <vector>

#include "addon/bindings.h"
#include "kernels/gemm_runner.h"
#include "kernels/int4_tables.h"

namespace w4a8::addon {
namespace {

// FP8 activations of one call, owned by the task so the async path can fill them on the worker.
struct QuantizedActivations {
  std::vector<uint8_t> codes;
  std::vector<float> scales;
};

struct ActivationSpec {
  const float* x;
  int M, K;
  Fp8Format format;
  bool isStatic;
  float staticScale;
  void quantize(QuantizedActivations& q) const {
    q.codes.resize((size_t)M * K);
    q.scales.resize(M);
    if (isStatic) runQuantizeActivationsStatic(x, M, K, staticScale, format, q.codes.data(), q.scales.data());
    else runQuantizeActivationsDynamic(x, M, K, format, q.codes.data(), q.scales.data());
  }
};

// (x, M, ..., actFormat at info[first], staticScale at info[first + 1])
ActivationSpec activationSpec(const Napi::CallbackInfo& info, int M, int K, size_t first) {
  ActivationSpec spec{typedArray<float>(info[0], "x", (size_t)M * K), M, K, fp8Format(info[first], "activationFormat"),
                      !info[first + 1].IsUndefined(), 1.0f};
  if (spec.isStatic) spec.staticScale = positiveScale(info[first + 1], "activationScale");
  return spec;
}

// (x, M, weights, activationFormat, activationScale, out)
Napi::Value gemmW4A8(const Napi::CallbackInfo& info, bool async) {
  const int M = dimension(info[1], "M");
  const Int4WeightsView w = int4Weights(info[2], "weights");
  const ActivationSpec act = activationSpec(info, M, w.cols, 3);
  const GemmOutput y = gemmOutput(info[5], "out", M, w.rows);
  return runTask(info, async, [=] {
    QuantizedActivations q;
    act.quantize(q);
    runGemmW4A8({q.codes.data(), q.scales.data(), act.format, M, w, y});
  }, info[5]);
}

// (x, M, weights, activationFormat, activationScale, out)
Napi::Value gemmW8A8(const Napi::CallbackInfo& info, bool async) {
  const int M = dimension(info[1], "M");
  const Fp8WeightsView w = fp8Weights(info[2], "weights");
  const ActivationSpec act = activationSpec(info, M, w.cols, 3);
  const GemmOutput y = gemmOutput(info[5], "out", M, w.rows);
  return runTask(info, async, [=] {
    QuantizedActivations q;
    act.quantize(q);
    runGemmW8A8({q.codes.data(), q.scales.data(), act.format, M, w, y});
  }, info[5]);
}

// (x, M, weights, out): activations rounded to BF16, INT4 weights dequantized to BF16.
Napi::Value gemmW4A16(const Napi::CallbackInfo& info, bool async) {
  const int M = dimension(info[1], "M");
  const Int4WeightsView w = int4Weights(info[2], "weights");
  const float* x = typedArray<float>(info[0], "x", (size_t)M * w.cols);
  const GemmOutput y = gemmOutput(info[3], "out", M, w.rows);
  return runTask(info, async, [=] {
    std::vector<uint16_t> x16((size_t)M * w.cols);
    floatToBf16Array(x, x16.size(), x16.data());
    runGemmW4A16({x16.data(), M, w, y});
  }, info[3]);
}

// (x, M, w: Float32Array [N*K], N, K, out)
Napi::Value gemmF32(const Napi::CallbackInfo& info, bool async) {
  const int M = dimension(info[1], "M"), N = dimension(info[3], "N"), K = dimension(info[4], "K");
  const float* x = typedArray<float>(info[0], "x", (size_t)M * K);
  const float* w = typedArray<float>(info[2], "weights", (size_t)N * K);
  const GemmOutput y = gemmOutput(info[5], "out", M, N);
  return runTask(info, async, [=] { runGemmF32({x, w, M, N, K, y}); }, info[5]);
}

// (weights): the group tables of the int16 W4A8 kernels for these arrays, as an external value to set as
// weights.tables (the arrays must not change afterwards: prepare again if they do).
Napi::Value prepareTables(const Napi::CallbackInfo& info) {
  const Int4WeightsView w = int4Weights(info[0], "weights");
  auto tables = std::make_unique<std::shared_ptr<const Int4Tables>>(prepareInt4Tables(w));
  if (!*tables) return info.Env().Undefined();  // too many distinct tables: the kernels build them per call
  return Napi::External<std::shared_ptr<const Int4Tables>>::New(
      info.Env(), tables.release(), [](Napi::Env, std::shared_ptr<const Int4Tables>* t) { delete t; });
}

template <Napi::Value (*F)(const Napi::CallbackInfo&, bool)>
void exportPair(Napi::Env env, Napi::Object exports, const char* name) {
  exports.Set(name, Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return F(i, false); }));
  exports.Set(std::string(name) + "Async", Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return F(i, true); }));
}

}  // namespace

void registerGemm(Napi::Env env, Napi::Object exports) {
  exportPair<gemmW4A8>(env, exports, "gemmW4A8");
  exportPair<gemmW8A8>(env, exports, "gemmW8A8");
  exportPair<gemmW4A16>(env, exports, "gemmW4A16");
  exportPair<gemmF32>(env, exports, "gemmF32");
  exports.Set("prepareInt4Tables", Napi::Function::New(env, prepareTables));
  exports.Set("backend", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("name", gemmBackendName());
    o.Set("reason", gemmBackendReason());
    return o;
  }));
}

}  // namespace w4a8::addon
