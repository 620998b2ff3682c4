// A Llama-family decoder (Llama 2/3, Mistral, Qwen2, TinyLlama, SmolLM) running whole forward steps for a
// batch of sequences: RMSNorm, RoPE (rotate-half convention), grouped-query attention over a per-sequence
// KV cache, SwiGLU MLP; every linear layer is W4A8 (FP8 activations per token, INT4->FP8 weights),
// embeddings are BF16, lm_head BF16 or W4A8. The weights are views into memory owned by the caller (an mmap).
// The same model also runs FP32 weights (linear layers, embeddings, lm_head): the full-precision
// reference that calibration (Hessians of each linear input) and evaluation (KL divergence) need.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/kernels.h"
#include "model/ops.h"
#include "model/step_backend.h"

namespace w4a8 {

struct RopeConfig {
  float theta = 10000.0f;
  enum class Scaling { None, Linear, Llama3 } scaling = Scaling::None;
  float factor = 1.0f;
  float lowFreqFactor = 1.0f;
  float highFreqFactor = 4.0f;
  int originalMaxPositions = 8192;
};

struct LlamaConfig {
  int dim = 0;
  int hiddenDim = 0;
  int nLayers = 0;
  int nHeads = 0;
  int nKvHeads = 0;
  int headDim = 0;
  int vocabSize = 0;
  int maxSeqLen = 0;
  float rmsNormEps = 1e-5f;
  RopeConfig rope;
  Fp8Format activationFormat = Fp8Format::E4M3FN;
  // KV cache element type (a runtime choice, not part of the model): FP32, or BF16 (half the memory and the
  // bytes attention reads; keys and values rounded to nearest even, attention still computes in FP32).
  bool kvBf16 = false;
  int kvDim() const { return nKvHeads * headDim; }
  int qDim() const { return nHeads * headDim; }
};

// One W4A8 linear layer y = x Wᵀ + b: W is [N, K] logically, stored with K padded up to w.cols (a
// multiple of the group size); the padded inputs have zero weights and are fed zeros.
struct LinearLayer {
  Int4WeightsView w;
  const float* f32 = nullptr;   // FP32 weights [N, inputs] instead of w (full-precision reference)
  int outputs = 0;              // N
  const float* bias = nullptr;  // [N] or none
  int inputs = 0;               // logical K (<= w.cols)
};

struct DecoderLayer {
  const float* attnNorm = nullptr;  // [dim]
  LinearLayer q, k, v, o;
  const float* ffnNorm = nullptr;   // [dim]
  LinearLayer gate, up, down;
};

struct LlamaWeights {
  const uint16_t* embedding = nullptr;  // [vocab, dim] BF16, or
  const float* embeddingF32 = nullptr;  // [vocab, dim] FP32
  std::vector<DecoderLayer> layers;
  const float* finalNorm = nullptr;     // [dim]
  const uint16_t* lmHead = nullptr;     // [vocab, dim] BF16 (the embedding when tied), or
  const float* lmHeadF32 = nullptr;     // [vocab, dim] FP32, or
  LinearLayer lmHeadInt4 = {};          // W4A8 [vocab, dim] (a model packed with quant.lmHead 'w4a8'; w.codes set)
  bool int4LmHead() const { return lmHeadInt4.w.codes != nullptr; }
};

// Inverse RoPE frequencies theta^(-2i/d) [headDim / 2], with the config's context scaling applied.
std::vector<float> ropeInverseFrequencies(const LlamaConfig& c);

// Second moments of the inputs of one decoder layer's linear layers, for GPTQ / DPQ:
// H = 2 Σ_tokens xᵀx (FP64 sums), one per distinct input: 0 = q/k/v input [dim, dim],
// 1 = o input [qDim, qDim], 2 = gate/up input [dim, dim], 3 = down input [hidden, hidden].
struct LayerHessians {
  int layer = -1;
  long tokens = 0;
  std::vector<double> h[4];
};

// One sequence's KV cache, FP32 or BF16 elements (LlamaConfig::kvBf16):
//   keys   [layer][kv head][block of kKeyBlock positions][headDim][kKeyBlock] (ops.h), zeroed: attention reads
//          whole blocks;
//   values [layer][kv head][position][headDim], a head's values one contiguous run (rows kvDim apart put every
//          position of a head in the same few L1 sets); left uninitialised, only positions < length are read.
// Neither costs time up front for a large capacity: pages are committed as positions fill.
struct SequenceCache {
  int capacity = 0;
  int length = 0;  // tokens already in the cache
  int keyBlocks = 0;  // blocks of kKeyBlock positions per layer and KV head
  size_t elementBytes = 4;
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  // calloc: the OS hands out zero pages as they are first touched, so a long context costs nothing up front
  // (zeroing it at creation took milliseconds per sequence on the JS thread's call).
  std::unique_ptr<uint8_t, Free> keys;
  std::unique_ptr<uint8_t[]> values;
  void* keyHead(int layer, int kvHead, const LlamaConfig& c) const {
    return keys.get() + ((size_t)layer * c.nKvHeads + kvHead) * keyBlocks * kKeyBlock * c.headDim * elementBytes;
  }
  void* valueHead(int layer, int kvHead, const LlamaConfig& c) const {
    return values.get() + ((size_t)layer * c.nKvHeads + kvHead) * capacity * c.headDim * elementBytes;
  }
};

// One sequence's part of a forward step: `count` new tokens appended at its current length.
struct StepItem {
  int sequence;
  const int32_t* tokens;
  int count;
};

class LlamaModel {
 public:
  LlamaModel(const LlamaConfig& config, LlamaWeights weights);
  ~LlamaModel();

  const LlamaConfig& config() const { return config_; }

  int createSequence(int capacity);  // returns its id
  void freeSequence(int id);
  void truncateSequence(int id, int length);
  int sequenceLength(int id) const;
  bool hasSequence(int id) const;

  // Runs all items in one batched forward step and writes the logits of each item's last token to
  // logits[i * vocab] (allPositions: of every token, row by row, [Σ counts, vocab]). Throws
  // std::runtime_error on a bad item (unknown sequence, too long, bad token) before changing any state.
  void step(const std::vector<StepItem>& items, float* logits, bool allPositions = false);

  // Runs every later step on `backend` (e.g. a GPU holding its own copy of the weights and the KV caches)
  // instead of the CPU. Only before the first sequence is created; Hessians are CPU-only.
  void setBackend(std::unique_ptr<StepBackend> backend);
  const StepBackend* backend() const { return backend_.get(); }

  // Makes what the CPU step needs once (the INT4 group tables) now rather than in the first step, so that
  // a server's first request does not wait for it. Optional: the first CPU step does it otherwise.
  void prepareCpuStep();

  // From now on, accumulate the input Hessians of decoder layer `layer` over every step (-1: stop; nLayers:
  // the lm_head's input, the final norm's output of every token, into h[0]).
  void collectHessians(int layer);
  // The Hessians gathered since collectHessians(), and a fresh start.
  LayerHessians takeHessians();

 private:
  struct Scratch;
  void checkItems(const std::vector<StepItem>& items) const;
  // y_i [rows, N_i] = x [rows, inputs] W_iᵀ (+ bias_i) for `count` linears that share their input (q/k/v,
  // gate/up): the input is quantized once and all their output rows are split over the threads in one job.
  void linears(const LinearLayer* const* layers, float* const* outputs, int count, const float* x, int rows,
               int stride, Scratch& s);
  void linear(const LinearLayer& layer, const float* x, int rows, int stride, float* y, Scratch& s);
  void attention(int layer, Scratch& s);
  void accumulateHessian(int which, const float* x, int rows, int stride, int width);
  void prepareInt4Tables();
  void resetHessians(int layer);

  LlamaConfig config_;
  LlamaWeights weights_;
  std::vector<float> inverseFrequencies_;  // [headDim / 2]
  std::unordered_map<int, std::unique_ptr<SequenceCache>> sequences_;
  int nextSequenceId_ = 1;
  std::unique_ptr<Scratch> scratch_;
  LayerHessians hessians_;
  std::unique_ptr<StepBackend> backend_;  // null: the CPU path
  // The int16 W4A8 kernels' group tables of every INT4 linear (kernels/int4_tables.h: 3 bytes per group,
  // 4.3% of the packed weights at G = 128), made before the first CPU step; the layers' views point at them.
  std::vector<std::shared_ptr<const Int4Tables>> int4Tables_;
  bool int4TablesPrepared_ = false;
  mutable std::mutex mutex_;  // one step at a time; sequence table changes wait for it
};

}  // namespace w4a8
