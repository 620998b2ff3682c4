// Loader of the CUDA plugin (cuda_plugin.h). CPU code, in every build: where CMake built no plugin
// (W4A8_CUDA_PLUGIN_BUILT undefined) it only reports that.
#include "model/cuda_plugin.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <stdexcept>

namespace w4a8 {
namespace {

std::string pluginPath() {
  if (const char* path = std::getenv("W4A8_CUDA_PLUGIN"); path && *path) return path;
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&loadCudaPlugin), &info) == 0 || !info.dli_fname) return "w4a8_cuda.so";
  std::string self = info.dli_fname;
  const size_t slash = self.rfind('/');
  return (slash == std::string::npos ? std::string(".") : self.substr(0, slash)) + "/w4a8_cuda.so";
}

struct Loaded {
  const CudaPluginApi* api = nullptr;
  std::string reason;
};

Loaded load() {
  Loaded r;
#ifndef W4A8_CUDA_PLUGIN_BUILT
  if (!std::getenv("W4A8_CUDA_PLUGIN")) {
    r.reason = "w4a8 was built without CUDA (no CUDA compiler found, or W4A8_CUDA=off)";
    return r;
  }
#endif
  const std::string path = pluginPath();
  // RTLD_LOCAL: the plugin's CUDA runtime and its copy of the core stay private to it.
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* e = dlerror();
    r.reason = std::string("cannot load the CUDA plugin: ") + (e ? e : path.c_str());
    return r;
  }
  auto entry = reinterpret_cast<CudaPluginEntry>(dlsym(handle, W4A8_CUDA_PLUGIN_ENTRY));
  const CudaPluginApi* api = entry ? entry() : nullptr;
  if (!api || api->abi != kCudaPluginAbi) {
    r.reason = path + " is not a w4a8 CUDA plugin of this build (rebuild the addon)";
    return r;  // left loaded: unloading CUDA libraries at run time is not worth the risk
  }
  r.api = api;
  return r;
}

}  // namespace

const CudaPluginApi* loadCudaPlugin(std::string* reason) {
  static std::once_flag once;
  static Loaded loaded;
  std::call_once(once, [] { loaded = load(); });
  if (!loaded.api && reason) *reason = loaded.reason;
  return loaded.api;
}

CudaDeviceReport probeCudaDevice(int device) {
  std::string reason;
  const CudaPluginApi* api = loadCudaPlugin(&reason);
  if (!api) {
    CudaDeviceReport report;
    report.reason = reason;
    return report;
  }
  return api->probe(device);
}

std::unique_ptr<StepBackend> createCudaBackend(const LlamaConfig& config, const LlamaWeights& weights,
                                               const CudaBackendOptions& options) {
  std::string reason;
  const CudaPluginApi* api = loadCudaPlugin(&reason);
  if (!api) throw std::runtime_error(reason);
  const CudaDeviceReport report = api->probe(options.device);
  if (!report.available) throw std::runtime_error(report.reason);
  StepBackend* backend = api->createBackend(config, weights, options, &reason);
  if (!backend) throw std::runtime_error(reason);
  return std::unique_ptr<StepBackend>(backend);
}

}  // namespace w4a8
