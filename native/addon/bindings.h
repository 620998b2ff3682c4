// Each file registers one family of functions on the addon's exports.
#pragma once
#include <napi.h>

#include "addon/args.h"
#include "addon/async.h"

namespace w4a8::addon {
void registerFp8(Napi::Env env, Napi::Object exports);
void registerPack(Napi::Env env, Napi::Object exports);
void registerGemm(Napi::Env env, Napi::Object exports);
void registerModel(Napi::Env env, Napi::Object exports);
void registerFile(Napi::Env env, Napi::Object exports);
void registerQuant(Napi::Env env, Napi::Object exports);   // GPTQ / DPQ (quant_bindings.cpp)
void registerScan(Napi::Env env, Napi::Object exports);    // value checks of packed tensors (scan_bindings.cpp)
void registerLogprobs(Napi::Env env, Napi::Object exports);  // log-softmax and top ids of a logits row
void registerProbes(Napi::Env env, Napi::Object exports);  // machine-limit probes for bench/kernels.mjs
}  // namespace w4a8::addon
