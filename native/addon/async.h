// Runs a native task either now (sync API) or on a libuv worker thread (async API, returns a Promise).
// The async path holds references to every object argument, so the TypedArrays whose memory the task
// reads and writes stay alive until it finishes. Callers must not resize/detach those buffers meanwhile.
#pragma once
#include <napi.h>

#include <exception>
#include <functional>
#include <vector>

namespace w4a8::addon {

using Task = std::function<void()>;

class TaskWorker : public Napi::AsyncWorker {
 public:
  TaskWorker(const Napi::CallbackInfo& info, Task task, Napi::Value result)
      : Napi::AsyncWorker(info.Env(), "w4a8"), task_(std::move(task)), deferred_(Napi::Promise::Deferred::New(info.Env())) {
    for (size_t i = 0; i < info.Length(); ++i)
      if (info[i].IsObject()) keepAlive_.push_back(Napi::Persistent(info[i].As<Napi::Object>()));
    result_ = Napi::Persistent(result.As<Napi::Object>());
  }
  Napi::Promise promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      task_();
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override { deferred_.Resolve(result_.Value()); }
  void OnError(const Napi::Error& error) override {
    error.Value().Set("code", Napi::String::New(Env(), "E_NATIVE"));
    deferred_.Reject(error.Value());
  }

 private:
  Task task_;
  Napi::Promise::Deferred deferred_;
  std::vector<Napi::ObjectReference> keepAlive_;
  Napi::ObjectReference result_;
};

// `result` must be an object (the output TypedArray, or an object holding the outputs).
inline Napi::Value runTask(const Napi::CallbackInfo& info, bool async, Task task, Napi::Value result) {
  if (!async) {
    task();
    return result;
  }
  auto* worker = new TaskWorker(info, std::move(task), result);
  Napi::Promise promise = worker->promise();
  worker->Queue();
  return promise;
}

}  // namespace w4a8::addon
