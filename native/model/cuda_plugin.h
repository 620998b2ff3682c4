// The CUDA plugin: the GPU decoder step (native/model/cuda) and the CUDA kernels (native/kernels/cuda) built
// as a shared library of their own, w4a8_cuda.so beside the addon, when CMake finds a CUDA compiler. The
// addon never links it: loadCudaPlugin() dlopen()s it on first use, so an addon built with CUDA still loads
// and runs on the CPU where the CUDA runtime, the driver or a GPU is missing (the reason says which).
#pragma once
#include <memory>
#include <string>

#include "model/llama.h"
#include "model/step_backend.h"

namespace w4a8 {

constexpr int kCudaPluginAbi = 1;  // bumped whenever CudaPluginApi or the structs it passes change

struct CudaBackendOptions {
  int device = 0;
  // Linear layers of steps of more than 64 tokens through cuBLASLt's FP8 GEMM (when built in): faster
  // prefill, but Hopper's FP8 tensor cores sum with ~14-bit alignment, outside the FP32 summation tolerance
  // of the numeric contract. Default: the fused GEMM (exact products, FP32 sums) for every step.
  bool fastPrefill = false;
  // Decode steps (at most 64 tokens, logits of the last ones) replay a CUDA graph of the whole step, one per
  // row count, captured the second time that count is seen: ~550 kernel launches of a 7B step cost more CPU
  // time than the GPU needs at batch 1. W4A8_CUDA_GRAPHS=0 in the environment turns it off.
  bool graphs = true;
};

struct CudaDeviceReport {
  bool available = false;
  std::string name;    // e.g. "NVIDIA H200"
  std::string reason;  // why not, when unavailable
  int computeMajor = 0, computeMinor = 0;
  size_t memoryBytes = 0;
};

struct CudaPluginApi {
  int abi;  // kCudaPluginAbi of the plugin's build
  CudaDeviceReport (*probe)(int device);
  // Uploads the weights (INT4 codes and scales as packed, BF16 embedding, BF16 or W4A8 lm_head, FP32 norms) and returns
  // the backend, or null with *error (no device, unsupported model, out of device memory).
  StepBackend* (*createBackend)(const LlamaConfig& config, const LlamaWeights& weights,
                                const CudaBackendOptions& options, std::string* error);
};

// The plugin's entry point (extern "C", the one symbol it exports).
using CudaPluginEntry = const CudaPluginApi* (*)();
#define W4A8_CUDA_PLUGIN_ENTRY "w4a8_cuda_plugin_api"

// The plugin, loaded once per process: from $W4A8_CUDA_PLUGIN, else w4a8_cuda.so in the folder of the
// binary that holds this code (the addon). Null, with *reason, when it is not built or cannot be loaded.
const CudaPluginApi* loadCudaPlugin(std::string* reason);

// The probe of the plugin's device, or an unavailable report with the loader's reason.
CudaDeviceReport probeCudaDevice(int device = 0);

// A LlamaModel backend on the GPU; throws std::runtime_error (with the reason) when there is none.
std::unique_ptr<StepBackend> createCudaBackend(const LlamaConfig& config, const LlamaWeights& weights,
                                               const CudaBackendOptions& options = CudaBackendOptions());

}  // namespace w4a8
