// The w4a8 addon: thin N-API bindings over native/ (argument checks, zero-copy TypedArrays, async work).
#include "addon/bindings.h"

namespace w4a8::addon {

Napi::Object init(Napi::Env env, Napi::Object exports) {
  registerFp8(env, exports);
  registerPack(env, exports);
  registerGemm(env, exports);
  registerModel(env, exports);
  registerFile(env, exports);
  registerProbes(env, exports);
  registerQuant(env, exports);
  registerScan(env, exports);
  registerLogprobs(env, exports);
  return exports;
}

}  // namespace w4a8::addon

static Napi::Object initModule(Napi::Env env, Napi::Object exports) { return w4a8::addon::init(env, exports); }

NODE_API_MODULE(w4a8, initModule)
