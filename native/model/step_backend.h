// The hook through which a device runs LlamaModel's forward steps instead of the CPU path. LlamaModel keeps
// the sequence table (ids, lengths, capacities) and checks every step; a backend owns its copy of the
// weights and the KV caches of the sequences, and computes the logits. A CUDA backend lives in the optional
// plugin native/model/cuda (loaded through model/cuda_plugin.h).
#pragma once
#include <vector>

namespace w4a8 {

struct StepItem;

class StepBackend {
 public:
  virtual ~StepBackend() = default;
  virtual const char* device() const = 0;  // "cuda"
  virtual const char* name() const = 0;    // e.g. the GPU's name
  // A KV cache for `capacity` tokens; throws std::runtime_error when the device is out of memory.
  virtual void createSequence(int id, int capacity) = 0;
  virtual void freeSequence(int id) = 0;
  // One forward step of already-checked items: items[i] appends its tokens at startLengths[i]. Writes
  // logits as LlamaModel::step does; throws std::runtime_error on a device failure.
  virtual void step(const std::vector<StepItem>& items, const std::vector<int>& startLengths, float* logits,
                    bool allPositions) = 0;
};

}  // namespace w4a8
