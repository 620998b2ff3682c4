// ModelHandle: a LlamaModel owned by JS. new ModelHandle(config, weights) keeps a reference to every
// weight TypedArray (views into the mmap'd model file) for as long as the model lives; step() runs a
// batched forward pass on a worker thread and resolves when the logits are written. useDevice('cuda')
// moves the steps to the GPU (model/cuda_plugin.h), on a worker thread as well: it uploads the weights.
#include <functional>
#include <memory>
#include <stdexcept>

#include "addon/bindings.h"
#include "model/cuda_plugin.h"
#include "model/llama.h"

namespace w4a8::addon {
namespace {

// Runs `task` on a worker thread; a failure rejects with `code` (set by the task) and its message, a success
// resolves with what `finish` builds on the JS thread.
class DeviceWorker : public Napi::AsyncWorker {
 public:
  using Task = std::function<void(std::string& code)>;
  using Finish = std::function<Napi::Value(Napi::Env)>;
  DeviceWorker(Napi::Env env, Task task, Finish finish, Napi::Object keep)
      : Napi::AsyncWorker(env, "w4a8.device"), task_(std::move(task)), finish_(std::move(finish)),
        deferred_(Napi::Promise::Deferred::New(env)) {
    if (!keep.IsEmpty()) keep_ = Napi::Persistent(keep);
  }
  Napi::Promise promise() { return deferred_.Promise(); }
  std::function<void()> onDone;  // on the JS thread, before the promise settles

 protected:
  void Execute() override {
    try {
      task_(code_);
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    if (onDone) onDone();
    deferred_.Resolve(finish_(Env()));
  }
  void OnError(const Napi::Error& error) override {
    if (onDone) onDone();
    error.Value().Set("code", Napi::String::New(Env(), code_));
    deferred_.Reject(error.Value());
  }

 private:
  Task task_;
  Finish finish_;
  std::string code_ = "E_NATIVE";
  Napi::ObjectReference keep_;
  Napi::Promise::Deferred deferred_;
};

Napi::Object deviceReportObject(Napi::Env env, const CudaDeviceReport& r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("available", r.available);
  o.Set("name", r.name);
  o.Set("reason", r.reason);
  o.Set("computeCapability", r.computeMajor ? std::to_string(r.computeMajor) + "." + std::to_string(r.computeMinor) : "");
  o.Set("memoryBytes", (double)r.memoryBytes);
  return o;
}

// cudaDevice() -> Promise<{available, name, reason, computeCapability, memoryBytes}> (loads the plugin and
// initialises the driver on a worker thread: that can take a second).
Napi::Value cudaDevice(const Napi::CallbackInfo& info) {
  auto report = std::make_shared<CudaDeviceReport>();
  auto* worker = new DeviceWorker(
      info.Env(), [report](std::string&) { *report = probeCudaDevice(0); },
      [report](Napi::Env env) -> Napi::Value { return deviceReportObject(env, *report); }, Napi::Object());
  Napi::Promise promise = worker->promise();
  worker->Queue();
  return promise;
}

class ModelHandle : public Napi::ObjectWrap<ModelHandle> {
 public:
  static Napi::Function define(Napi::Env env) {
    return DefineClass(env, "ModelHandle", {
        InstanceMethod("createSequence", &ModelHandle::createSequence),
        InstanceMethod("freeSequence", &ModelHandle::freeSequence),
        InstanceMethod("truncateSequence", &ModelHandle::truncateSequence),
        InstanceMethod("sequenceLength", &ModelHandle::sequenceLength),
        InstanceMethod("step", &ModelHandle::step),
        InstanceMethod("dispose", &ModelHandle::dispose),
        InstanceMethod("collectHessians", &ModelHandle::collectHessians),
        InstanceMethod("takeHessians", &ModelHandle::takeHessians),
        InstanceMethod("useDevice", &ModelHandle::useDevice),
        InstanceMethod("prepareCpu", &ModelHandle::prepareCpu),
        InstanceMethod("backend", &ModelHandle::backend),
    });
  }

  ModelHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelHandle>(info) {
    const LlamaConfig config = parseConfig(info[0]);
    LlamaWeights weights = parseWeights(info[1], config);
    weights_ = weights;  // (pointer views, for a device backend's upload)
    model_ = std::make_shared<LlamaModel>(config, std::move(weights));
  }

  void stepFinished() {
    --inFlight_;
    if (disposed_ && inFlight_ == 0) release();
  }

 private:
  LlamaModel& model(Napi::Env env) {
    if (!model_) fail(env, "E_DISPOSED", "the model has been disposed");
    return *model_;
  }

  int sequenceId(const Napi::Value& v) {
    const int id = dimension(v, "sequence");
    if (!model(v.Env()).hasSequence(id)) fail(v.Env(), "E_SEQUENCE", "unknown sequence " + std::to_string(id));
    return id;
  }

  Napi::Value createSequence(const Napi::CallbackInfo& info) {
    LlamaModel& m = model(info.Env());
    const int capacity = dimension(info[0], "capacity");
    if (capacity > m.config().maxSeqLen)
      fail(info.Env(), codes::kShape, "capacity must be at most " + std::to_string(m.config().maxSeqLen));
    return Napi::Number::New(info.Env(), m.createSequence(capacity));
  }

  Napi::Value freeSequence(const Napi::CallbackInfo& info) {
    model(info.Env()).freeSequence(sequenceId(info[0]));
    return info.Env().Undefined();
  }

  Napi::Value truncateSequence(const Napi::CallbackInfo& info) {
    const int id = sequenceId(info[0]);
    const int length = (int)info[1].As<Napi::Number>().Int32Value();
    if (length < 0 || length > model_->sequenceLength(id)) fail(info.Env(), codes::kShape, "length out of range");
    model_->truncateSequence(id, length);
    return info.Env().Undefined();
  }

  Napi::Value sequenceLength(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), model(info.Env()).sequenceLength(sequenceId(info[0])));
  }

  // (sequenceIds: Int32Array [B], counts: Int32Array [B], tokens: Int32Array [Σcounts],
  //  logits: Float32Array [B*vocab], or [Σcounts*vocab] with allPositions = true) -> Promise
  Napi::Value step(const Napi::CallbackInfo& info);

  // (layer: -1 to stop, a decoder layer whose linear-input Hessians later steps accumulate, or nLayers for the
  // lm_head's input, returned as the first Hessian)
  Napi::Value collectHessians(const Napi::CallbackInfo& info) {
    LlamaModel& m = model(info.Env());
    if (!info[0].IsNumber()) fail(info.Env(), codes::kType, "layer must be a number");
    const int layer = info[0].As<Napi::Number>().Int32Value();
    if (layer < -1 || layer > m.config().nLayers) fail(info.Env(), codes::kShape, "layer out of range");
    m.collectHessians(layer);
    return info.Env().Undefined();
  }

  // -> {layer, tokens, hessians: [qkv, o, gateUp, down] as Float64Array [K*K]}
  Napi::Value takeHessians(const Napi::CallbackInfo& info) {
    LayerHessians taken = model(info.Env()).takeHessians();
    Napi::Object result = Napi::Object::New(info.Env());
    result.Set("layer", taken.layer);
    result.Set("tokens", (double)taken.tokens);
    Napi::Array list = Napi::Array::New(info.Env(), 4);
    for (uint32_t i = 0; i < 4; ++i) {
      Napi::Float64Array h = Napi::Float64Array::New(info.Env(), taken.h[i].size());
      std::copy(taken.h[i].begin(), taken.h[i].end(), h.Data());
      list.Set(i, h);
    }
    result.Set("hessians", list);
    return result;
  }

  // ('cuda', {fastPrefill?}) -> Promise: uploads the weights and runs every later step on the GPU. Only
  // before the first sequence. Rejects with E_UNSUPPORTED when there is no usable GPU (or no CUDA build).
  Napi::Value useDevice(const Napi::CallbackInfo& info) {
    std::shared_ptr<LlamaModel> m = model_;
    model(info.Env());
    if (!info[0].IsString() || info[0].As<Napi::String>().Utf8Value() != "cuda")
      fail(info.Env(), "E_OPTION", "device must be 'cuda'");
    CudaBackendOptions options;
    if (info[1].IsObject()) {
      const Napi::Value fast = info[1].As<Napi::Object>().Get("fastPrefill");
      options.fastPrefill = fast.IsBoolean() && fast.As<Napi::Boolean>().Value();
    }
    const LlamaConfig config = m->config();
    const LlamaWeights weights = weights_;
    ++inFlight_;
    auto* worker = new DeviceWorker(
        info.Env(),
        [m, config, weights, options](std::string& code) {
          const CudaDeviceReport report = probeCudaDevice(options.device);
          if (!report.available) {
            code = "E_UNSUPPORTED";
            throw std::runtime_error("CUDA is not available: " + report.reason);
          }
          m->setBackend(createCudaBackend(config, weights, options));
        },
        [](Napi::Env env) -> Napi::Value { return env.Undefined(); }, info.This().As<Napi::Object>());
    worker->onDone = [this] { stepFinished(); };
    Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
  }

  // () -> Promise: on a worker thread, what the CPU step would otherwise make in the first step.
  Napi::Value prepareCpu(const Napi::CallbackInfo& info) {
    std::shared_ptr<LlamaModel> m = model_;
    model(info.Env());
    ++inFlight_;
    auto* worker = new DeviceWorker(
        info.Env(), [m](std::string&) { m->prepareCpuStep(); },
        [](Napi::Env env) -> Napi::Value { return env.Undefined(); }, info.This().As<Napi::Object>());
    worker->onDone = [this] { stepFinished(); };
    Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
  }

  // -> {device: 'cpu' | 'cuda', name}
  Napi::Value backend(const Napi::CallbackInfo& info) {
    const StepBackend* b = model(info.Env()).backend();
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("device", b ? b->device() : "cpu");
    o.Set("name", b ? b->name() : "");
    return o;
  }

  Napi::Value dispose(const Napi::CallbackInfo& info) {
    if (!disposed_) {
      disposed_ = true;
      if (inFlight_ == 0) release();
    }
    return info.Env().Undefined();
  }

  void release() {
    model_.reset();
    keepAlive_.clear();
  }

  template <typename T>
  const T* tracked(const Napi::Value& v, const std::string& name, size_t length) {
    const T* data = typedArray<T>(v, name.c_str(), length);
    keepAlive_.push_back(Napi::Persistent(v.As<Napi::Object>()));
    return data;
  }

  static double number(const Napi::Object& o, const char* key) {
    const Napi::Value v = o.Get(key);
    if (!v.IsNumber()) fail(o.Env(), codes::kType, std::string("config.") + key + " must be a number");
    return v.As<Napi::Number>().DoubleValue();
  }

  LlamaConfig parseConfig(const Napi::Value& value) {
    if (!value.IsObject()) fail(value.Env(), codes::kType, "config must be an object");
    Napi::Object o = value.As<Napi::Object>();
    LlamaConfig c;
    c.dim = dimension(o.Get("dim"), "config.dim");
    c.hiddenDim = dimension(o.Get("hiddenDim"), "config.hiddenDim");
    c.nLayers = dimension(o.Get("nLayers"), "config.nLayers");
    c.nHeads = dimension(o.Get("nHeads"), "config.nHeads");
    c.nKvHeads = dimension(o.Get("nKvHeads"), "config.nKvHeads");
    c.headDim = dimension(o.Get("headDim"), "config.headDim");
    c.vocabSize = dimension(o.Get("vocabSize"), "config.vocabSize");
    c.maxSeqLen = dimension(o.Get("maxSeqLen"), "config.maxSeqLen");
    c.rmsNormEps = (float)number(o, "rmsNormEps");
    c.rope.theta = (float)number(o, "ropeTheta");
    c.activationFormat = fp8Format(o.Get("activationFormat"), "config.activationFormat");
    const Napi::Value kvCache = o.Get("kvCache");  // optional: 'f32' (default) or 'bf16'
    if (!kvCache.IsUndefined()) {
      const std::string kind = kvCache.IsString() ? kvCache.As<Napi::String>().Utf8Value() : "";
      if (kind != "f32" && kind != "bf16") fail(value.Env(), codes::kType, "config.kvCache must be 'f32' or 'bf16'");
      c.kvBf16 = kind == "bf16";
    }
    if (c.nHeads % c.nKvHeads != 0 || c.headDim % 2 != 0)
      fail(value.Env(), codes::kShape, "config: nHeads must be a multiple of nKvHeads and headDim even");
    const Napi::Value scaling = o.Get("ropeScaling");
    if (scaling.IsObject()) {
      Napi::Object s = scaling.As<Napi::Object>();
      const std::string type = s.Get("type").ToString().Utf8Value();
      c.rope.factor = (float)number(s, "factor");
      if (type == "linear") {
        c.rope.scaling = RopeConfig::Scaling::Linear;
      } else if (type == "llama3") {
        c.rope.scaling = RopeConfig::Scaling::Llama3;
        c.rope.lowFreqFactor = (float)number(s, "lowFreqFactor");
        c.rope.highFreqFactor = (float)number(s, "highFreqFactor");
        c.rope.originalMaxPositions = (int)number(s, "originalMaxPositionEmbeddings");
      } else {
        fail(value.Env(), codes::kShape, "config.ropeScaling.type must be 'linear' or 'llama3'");
      }
    }
    return c;
  }

  LinearLayer parseLinear(const Napi::Value& value, const std::string& name, int outputs, int inputs) {
    if (!value.IsObject()) fail(value.Env(), codes::kType, name + " must be an object");
    Napi::Object o = value.As<Napi::Object>();
    LinearLayer layer;
    layer.outputs = outputs;
    if (!o.Get("f32").IsUndefined()) {  // full-precision weights [outputs, inputs]
      layer.f32 = tracked<float>(o.Get("f32"), name + ".f32", (size_t)outputs * inputs);
      layer.inputs = inputs;
      if (!o.Get("bias").IsUndefined()) layer.bias = tracked<float>(o.Get("bias"), name + ".bias", outputs);
      return layer;
    }
    layer.w = int4Weights(o.Get("weights"), (name + ".weights").c_str());
    keepAlive_.push_back(Napi::Persistent(o.Get("weights").As<Napi::Object>()));
    for (const char* part : {"codes", "groupScales", "zeros", "channelScales"})
      keepAlive_.push_back(Napi::Persistent(o.Get("weights").As<Napi::Object>().Get(part).As<Napi::Object>()));
    layer.inputs = inputs;
    if (layer.w.rows != outputs || layer.w.cols < inputs || layer.w.cols - inputs >= layer.w.groupSize)
      fail(value.Env(), codes::kShape, name + " must be [" + std::to_string(outputs) + ", " + std::to_string(inputs) +
                                           " padded to the group size], got [" + std::to_string(layer.w.rows) + ", " +
                                           std::to_string(layer.w.cols) + "]");
    if (!o.Get("bias").IsUndefined()) layer.bias = tracked<float>(o.Get("bias"), name + ".bias", outputs);
    return layer;
  }

  LlamaWeights parseWeights(const Napi::Value& value, const LlamaConfig& c) {
    if (!value.IsObject()) fail(value.Env(), codes::kType, "weights must be an object");
    Napi::Object o = value.As<Napi::Object>();
    LlamaWeights w;
    const size_t tableSize = (size_t)c.vocabSize * c.dim;
    // Embedding and lm_head: BF16 (Uint16Array) in packed models, FP32 in the full-precision reference.
    if (isTypedArrayOf(o.Get("embedding"), napi_float32_array))
      w.embeddingF32 = tracked<float>(o.Get("embedding"), "weights.embedding", tableSize);
    else
      w.embedding = tracked<uint16_t>(o.Get("embedding"), "weights.embedding", tableSize);
    // lm_head: one of a BF16 / FP32 table (weights.lmHead) or a W4A8 linear layer (weights.lmHeadInt4).
    const bool tableHead = !o.Get("lmHead").IsUndefined(), int4Head = !o.Get("lmHeadInt4").IsUndefined();
    if (tableHead == int4Head)
      fail(value.Env(), codes::kType, "weights must have exactly one of lmHead (BF16 or FP32 table) and lmHeadInt4 (W4A8 layer)");
    if (int4Head) {
      w.lmHeadInt4 = parseLinear(o.Get("lmHeadInt4"), "weights.lmHeadInt4", c.vocabSize, c.dim);
      if (w.lmHeadInt4.f32 || w.lmHeadInt4.bias)
        fail(value.Env(), codes::kType, "weights.lmHeadInt4 must be packed W4A8 weights without a bias");
    } else if (isTypedArrayOf(o.Get("lmHead"), napi_float32_array)) {
      w.lmHeadF32 = tracked<float>(o.Get("lmHead"), "weights.lmHead", tableSize);
    } else {
      w.lmHead = tracked<uint16_t>(o.Get("lmHead"), "weights.lmHead", tableSize);
    }
    w.finalNorm = tracked<float>(o.Get("finalNorm"), "weights.finalNorm", c.dim);
    if (!o.Get("layers").IsArray()) fail(value.Env(), codes::kType, "weights.layers must be an array");
    Napi::Array layers = o.Get("layers").As<Napi::Array>();
    if ((int)layers.Length() != c.nLayers)
      fail(value.Env(), codes::kShape, "weights.layers must have config.nLayers entries");
    for (int l = 0; l < c.nLayers; ++l) {
      const std::string p = "weights.layers[" + std::to_string(l) + "]";
      if (!layers.Get(l).IsObject()) fail(value.Env(), codes::kType, p + " must be an object");
      Napi::Object L = layers.Get(l).As<Napi::Object>();
      DecoderLayer d;
      d.attnNorm = tracked<float>(L.Get("attnNorm"), p + ".attnNorm", c.dim);
      d.ffnNorm = tracked<float>(L.Get("ffnNorm"), p + ".ffnNorm", c.dim);
      d.q = parseLinear(L.Get("q"), p + ".q", c.qDim(), c.dim);
      d.k = parseLinear(L.Get("k"), p + ".k", c.kvDim(), c.dim);
      d.v = parseLinear(L.Get("v"), p + ".v", c.kvDim(), c.dim);
      d.o = parseLinear(L.Get("o"), p + ".o", c.dim, c.qDim());
      d.gate = parseLinear(L.Get("gate"), p + ".gate", c.hiddenDim, c.dim);
      d.up = parseLinear(L.Get("up"), p + ".up", c.hiddenDim, c.dim);
      d.down = parseLinear(L.Get("down"), p + ".down", c.dim, c.hiddenDim);
      if (!d.q.f32 && (d.q.w.cols != d.k.w.cols || d.q.w.cols != d.v.w.cols || d.gate.w.cols != d.up.w.cols))
        fail(value.Env(), codes::kShape, p + ": q/k/v and gate/up must share their packed width");
      w.layers.push_back(d);
    }
    return w;
  }

  std::shared_ptr<LlamaModel> model_;
  LlamaWeights weights_;
  std::vector<Napi::ObjectReference> keepAlive_;
  bool disposed_ = false;
  int inFlight_ = 0;

  friend class StepWorker;
};

class StepWorker : public Napi::AsyncWorker {
 public:
  StepWorker(Napi::Env env, ModelHandle* handle, Napi::Object self, std::shared_ptr<LlamaModel> model,
             std::vector<StepItem> items, float* logits, bool allPositions, std::vector<Napi::ObjectReference> inputs)
      : Napi::AsyncWorker(env, "w4a8.step"), handle_(handle), model_(std::move(model)), items_(std::move(items)),
        logits_(logits), allPositions_(allPositions), inputs_(std::move(inputs)),
        deferred_(Napi::Promise::Deferred::New(env)) {
    self_ = Napi::Persistent(self);
  }
  Napi::Promise promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      model_->step(items_, logits_, allPositions_);
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override {
    handle_->stepFinished();
    deferred_.Resolve(Env().Undefined());
  }
  void OnError(const Napi::Error& error) override {
    handle_->stepFinished();
    error.Value().Set("code", Napi::String::New(Env(), "E_STEP"));
    deferred_.Reject(error.Value());
  }

 private:
  ModelHandle* handle_;
  Napi::ObjectReference self_;  // keeps the handle (and through it the weights) alive
  std::shared_ptr<LlamaModel> model_;
  std::vector<StepItem> items_;
  float* logits_;
  bool allPositions_;
  std::vector<Napi::ObjectReference> inputs_;
  Napi::Promise::Deferred deferred_;
};

Napi::Value ModelHandle::step(const Napi::CallbackInfo& info) {
  LlamaModel& m = model(info.Env());
  const size_t batch = info[0].IsTypedArray() ? info[0].As<Napi::TypedArray>().ElementLength() : 0;
  if (batch == 0) fail(info.Env(), codes::kShape, "a step needs at least one sequence");
  auto int32s = [&](const Napi::Value& v, const char* name, size_t n) {
    if (!isTypedArrayOf(v, napi_int32_array)) fail(info.Env(), codes::kType, std::string(name) + " must be an Int32Array");
    Napi::Int32Array a = v.As<Napi::Int32Array>();
    if (a.ElementLength() != n) fail(info.Env(), codes::kLength, std::string(name) + " has the wrong length");
    return a.Data();
  };
  const int32_t* ids = int32s(info[0], "sequenceIds", batch);
  const int32_t* counts = int32s(info[1], "counts", batch);
  size_t total = 0;
  for (size_t i = 0; i < batch; ++i) {
    if (counts[i] < 1) fail(info.Env(), codes::kShape, "counts must be >= 1");
    total += (size_t)counts[i];
  }
  const int32_t* tokens = int32s(info[2], "tokens", total);
  const bool allPositions = info.Length() > 4 && info[4].IsBoolean() && info[4].As<Napi::Boolean>().Value();
  float* logits = typedArray<float>(info[3], "logits", (allPositions ? total : batch) * (size_t)m.config().vocabSize);
  std::vector<StepItem> items;
  for (size_t i = 0, offset = 0; i < batch; offset += counts[i], ++i) items.push_back({ids[i], tokens + offset, counts[i]});
  std::vector<Napi::ObjectReference> inputs;
  for (size_t i = 0; i < 4; ++i) inputs.push_back(Napi::Persistent(info[i].As<Napi::Object>()));
  ++inFlight_;
  auto* worker = new StepWorker(info.Env(), this, info.This().As<Napi::Object>(), model_, std::move(items), logits,
                                allPositions, std::move(inputs));
  Napi::Promise promise = worker->promise();
  worker->Queue();
  return promise;
}

}  // namespace

void registerModel(Napi::Env env, Napi::Object exports) {
  exports.Set("ModelHandle", ModelHandle::define(env));
  exports.Set("cudaDevice", Napi::Function::New(env, cudaDevice, "cudaDevice"));
}

}  // namespace w4a8::addon
