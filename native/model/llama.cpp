#include "model/llama.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <unordered_set>

#include "kernels/dispatch.h"
#include "kernels/gemm_runner.h"
#include "kernels/int4_tables.h"
#include "kernels/parallel.h"
#include "model/ops.h"
#include "runtime/thread_pool.h"

namespace w4a8 {

// Buffers of one step, grown on demand and reused ([rows, width] row-major FP32 unless noted): a step
// allocates nothing once the largest batch has been seen.
struct LlamaModel::Scratch {
  std::vector<float> x, xb, q, k, v, attn, tmp, gate, up, padded, finalRows;
  std::vector<uint8_t> x8;     // FP8 activations of the current linear input [rows, cols]
  std::vector<float> xScales;  // [rows]
  std::vector<float> ropeCos, ropeSin;  // [rows, headDim / 2]: one row's rotation, shared by every layer
  std::vector<int> rowPosition;
  std::vector<SequenceCache*> rowSequence;
};

namespace {

// W4A8_PROFILE=1: wall time of each part of the forward step, summed over steps of the same batch shape
// and printed to stderr every 16 steps (a decode-step profile without perf; off: one branch per part).
class StepProfile {
 public:
  enum Part { Embed, Norm, Quantize, Gemm, Rope, Attention, Activation, Residual, LmHead, Parts };
  static StepProfile& get() {
    static StepProfile profile;
    return profile;
  }
  bool enabled() const { return enabled_; }
  void add(Part part, double ms) {
    if (!enclosed_) step_[part] += ms;
  }
  // While one lives, parts timed inside another part (the W4A8 lm_head's quantize and GEMM) are not counted
  // again: the enclosing part's time holds them. (Touches nothing when profiling is off, like Timed.)
  struct Enclosed {
    Enclosed() : on(get().enabled()) {
      if (on) get().enclosed_ = true;
    }
    ~Enclosed() {
      if (on) get().enclosed_ = false;
    }
    const bool on;
  };
  void stepDone(int sequences, int rows, double ms) {
    if (sequences != sequences_ || rows != rows_) reset(sequences, rows);
    total_ += ms;
    for (int i = 0; i < Parts; ++i) ms_[i] += step_[i], step_[i] = 0;
    if (++steps_ % 16 != 0) return;
    static const char* names[Parts] = {"embed", "norm", "quantize", "gemm", "rope+kv", "attention", "swiglu", "residual", "lm_head"};
    std::fprintf(stderr, "[w4a8 profile] %d sequences, %d rows, %ld steps: %.3f ms/step:", sequences, rows, steps_, total_ / steps_);
    double parts = 0;
    for (int i = 0; i < Parts; ++i) {
      std::fprintf(stderr, " %s %.3f", names[i], ms_[i] / steps_);
      parts += ms_[i];
    }
    std::fprintf(stderr, " other %.3f\n", (total_ - parts) / steps_);
  }

 private:
  StepProfile() : enabled_(std::getenv("W4A8_PROFILE") != nullptr) {}
  void reset(int sequences, int rows) {
    sequences_ = sequences, rows_ = rows, steps_ = 0, total_ = 0;
    for (double& m : ms_) m = 0;
  }
  bool enabled_;
  bool enclosed_ = false;
  int sequences_ = -1, rows_ = -1;
  long steps_ = 0;
  double total_ = 0, ms_[Parts] = {}, step_[Parts] = {};  // step_: the parts of the step running now
};

// Times one part of the step into the profile when W4A8_PROFILE is set.
class Timed {
 public:
  explicit Timed(StepProfile::Part part) : part_(part), on_(StepProfile::get().enabled()) {
    if (on_) start_ = std::chrono::steady_clock::now();
  }
  ~Timed() { stop(); }
  void stop() {
    if (on_) StepProfile::get().add(part_, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start_).count());
    on_ = false;
  }

 private:
  StepProfile::Part part_;
  bool on_;
  std::chrono::steady_clock::time_point start_;
};

template <typename T>
T* sized(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

}  // namespace

std::vector<float> ropeInverseFrequencies(const LlamaConfig& c) {
  std::vector<float> f(c.headDim / 2);
  const RopeConfig& r = c.rope;
  for (int i = 0; i < c.headDim / 2; ++i) {
    double freq = std::pow((double)r.theta, -2.0 * i / c.headDim);
    if (r.scaling == RopeConfig::Scaling::Linear) {
      freq /= r.factor;
    } else if (r.scaling == RopeConfig::Scaling::Llama3) {
      const double wavelength = 2 * M_PI / freq;
      const double lowWavelength = r.originalMaxPositions / r.lowFreqFactor;
      const double highWavelength = r.originalMaxPositions / r.highFreqFactor;
      if (wavelength > lowWavelength) {
        freq /= r.factor;
      } else if (wavelength >= highWavelength) {
        const double smooth = (r.originalMaxPositions / wavelength - r.lowFreqFactor) / (r.highFreqFactor - r.lowFreqFactor);
        freq = (1 - smooth) * freq / r.factor + smooth * freq;
      }
    }
    f[i] = (float)freq;
  }
  return f;
}

LlamaModel::LlamaModel(const LlamaConfig& config, LlamaWeights weights)
    : config_(config), weights_(std::move(weights)), scratch_(new Scratch) {
  inverseFrequencies_ = ropeInverseFrequencies(config_);
}

LlamaModel::~LlamaModel() = default;

int LlamaModel::createSequence(int capacity) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (capacity < 1 || capacity > config_.maxSeqLen)
    throw std::runtime_error("sequence capacity must be in [1, " + std::to_string(config_.maxSeqLen) + "]");
  auto cache = std::make_unique<SequenceCache>();
  cache->capacity = capacity;
  const int id = nextSequenceId_++;
  if (backend_) {  // the backend holds the KV cache
    backend_->createSequence(id, capacity);
    sequences_[id] = std::move(cache);
    return id;
  }
  cache->keyBlocks = (capacity + kKeyBlock - 1) / kKeyBlock;
  cache->elementBytes = config_.kvBf16 ? 2 : 4;
  const size_t keyBytes = (size_t)config_.nLayers * cache->keyBlocks * kKeyBlock * config_.kvDim() * cache->elementBytes;
  cache->keys.reset(static_cast<uint8_t*>(std::calloc(keyBytes, 1)));  // zeroed (SequenceCache)
  if (!cache->keys) throw std::bad_alloc();
  cache->values.reset(new uint8_t[(size_t)config_.nLayers * capacity * config_.kvDim() * cache->elementBytes]);
  sequences_[id] = std::move(cache);
  return id;
}

void LlamaModel::freeSequence(int id) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (backend_ && sequences_.count(id)) backend_->freeSequence(id);
  sequences_.erase(id);
}

void LlamaModel::setBackend(std::unique_ptr<StepBackend> backend) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!sequences_.empty()) throw std::runtime_error("a backend can only be set before the first sequence");
  backend_ = std::move(backend);
}

bool LlamaModel::hasSequence(int id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return sequences_.count(id) != 0;
}

int LlamaModel::sequenceLength(int id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = sequences_.find(id);
  if (it == sequences_.end()) throw std::runtime_error("unknown sequence " + std::to_string(id));
  return it->second->length;
}

void LlamaModel::truncateSequence(int id, int length) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = sequences_.find(id);
  if (it == sequences_.end()) throw std::runtime_error("unknown sequence " + std::to_string(id));
  if (length < 0 || length > it->second->length) throw std::runtime_error("truncate length out of range");
  it->second->length = length;
}

void LlamaModel::checkItems(const std::vector<StepItem>& items) const {
  if (items.empty()) throw std::runtime_error("a step needs at least one sequence");
  std::unordered_set<int> seen;
  for (const StepItem& item : items) {
    auto it = sequences_.find(item.sequence);
    if (it == sequences_.end()) throw std::runtime_error("unknown sequence " + std::to_string(item.sequence));
    if (!seen.insert(item.sequence).second)
      throw std::runtime_error("sequence " + std::to_string(item.sequence) + " appears twice in one step");
    if (item.count < 1) throw std::runtime_error("each sequence needs at least one token");
    if (it->second->length + item.count > it->second->capacity)
      throw std::runtime_error("sequence " + std::to_string(item.sequence) + " would exceed its capacity of " +
                               std::to_string(it->second->capacity) + " tokens");
    for (int i = 0; i < item.count; ++i)
      if (item.tokens[i] < 0 || item.tokens[i] >= config_.vocabSize)
        throw std::runtime_error("token id " + std::to_string(item.tokens[i]) + " out of range");
  }
}

namespace {

// Below this many multiply-adds a group of GEMMs runs on the calling thread (as kernels/parallel.cpp does).
constexpr double kMinParallelMacs = 1 << 18;
// Row tiles per pool thread: a few, so that a thread that loses its core is covered by the others.
constexpr int kChunksPerThread = 4;

// Elementwise work this small runs on the calling thread: waking the pool costs a few microseconds.
constexpr size_t kMinParallelElements = 1 << 15;

// Runs fn(begin, end) over rows [0, rows), on the pool when rows x width is worth it (the pool's template
// entry point: no std::function, nothing allocated per call).
template <class F>
void forRows(int rows, size_t width, F&& fn) {
  if ((size_t)rows * width < kMinParallelElements || rows == 1) fn(0, rows);
  else globalThreadPool().parallelFor(rows, 1, fn);
}

void addBias(float* y, const float* bias, int rows, int n) {
  for (int r = 0; r < rows; ++r)
    for (int i = 0; i < n; ++i) y[(size_t)r * n + i] += bias[i];
}

}  // namespace

// Every linear's output rows, in tiles of kParallelRowTile, make one job for the pool: one wake-up per group
// instead of one per matrix, and no thread idles at the end of a small matrix (k/v at batch 1).
void LlamaModel::linears(const LinearLayer* const* layers, float* const* outputs, int count, const float* x, int rows,
                         int stride, Scratch& s) {
  if (layers[0]->f32) {
    for (int i = 0; i < count; ++i) linear(*layers[i], x, rows, stride, outputs[i], s);
    return;
  }
  Timed timedQuantize(StepProfile::Quantize);
  // Quantize the shared input once, zero-padded from `inputs` to the packed width.
  const int cols = layers[0]->w.cols, inputs = layers[0]->inputs;
  const float* input = x;
  if (inputs != cols || stride != cols) {
    float* padded = sized(s.padded, (size_t)rows * cols);
    for (int r = 0; r < rows; ++r) {
      std::copy(x + (size_t)r * stride, x + (size_t)r * stride + inputs, padded + (size_t)r * cols);
      std::fill(padded + (size_t)r * cols + inputs, padded + (size_t)(r + 1) * cols, 0.0f);
    }
    input = padded;
  }
  uint8_t* x8 = sized(s.x8, (size_t)rows * cols);
  float* xScales = sized(s.xScales, rows);
  runQuantizeActivationsDynamic(input, rows, cols, config_.activationFormat, x8, xScales);
  timedQuantize.stop();

  Timed timedGemm(StepProfile::Gemm);
  constexpr int kMaxGroup = 3;
  W4A8GemmArgs args[kMaxGroup];
  int firstTile[kMaxGroup + 1] = {0};
  double macs = 0;
  for (int i = 0; i < count; ++i) {
    args[i] = {x8, xScales, config_.activationFormat, rows, layers[i]->w, {outputs[i], nullptr, layers[i]->w.rows}};
    firstTile[i + 1] = firstTile[i] + (layers[i]->w.rows + kParallelRowTile - 1) / kParallelRowTile;
    macs += (double)rows * layers[i]->w.rows * cols;
  }
  const KernelTable& kernels = activeKernels();
  // Tiles [begin, end) of the concatenated output rows, cut at the matrices' borders.
  auto tiles = [&](int begin, int end) {
    for (int i = 0; i < count; ++i) {
      const int from = std::max(begin, firstTile[i]), to = std::min(end, firstTile[i + 1]);
      if (from >= to) continue;
      const int n = layers[i]->w.rows;
      kernels.gemmW4A8(args[i], (from - firstTile[i]) * kParallelRowTile, std::min(n, (to - firstTile[i]) * kParallelRowTile));
    }
  };
  ThreadPool& pool = globalThreadPool();
  if (macs < kMinParallelMacs) tiles(0, firstTile[count]);
  else pool.parallelFor(firstTile[count], 1, tiles, kChunksPerThread);
  timedGemm.stop();
  for (int i = 0; i < count; ++i)
    if (layers[i]->bias) addBias(outputs[i], layers[i]->bias, rows, layers[i]->w.rows);
}

// y [rows, N] = x [rows, inputs] Wᵀ (+ bias). x rows are `stride` floats apart. The activations are
// quantized to FP8 per token here, after zero-padding K to the packed width.
void LlamaModel::linear(const LinearLayer& layer, const float* x, int rows, int stride, float* y, Scratch& s) {
  if (!layer.f32) {
    const LinearLayer* one[1] = {&layer};
    float* out[1] = {y};
    return linears(one, out, 1, x, rows, stride, s);
  }
  const float* input = x;
  if (stride != layer.inputs) {
    float* packed = sized(s.padded, (size_t)rows * layer.inputs);
    for (int r = 0; r < rows; ++r) std::copy(x + (size_t)r * stride, x + (size_t)r * stride + layer.inputs, packed + (size_t)r * layer.inputs);
    input = packed;
  }
  runGemmF32({input, layer.f32, rows, layer.outputs, layer.inputs, {y, nullptr, layer.outputs}});
  if (layer.bias) addBias(y, layer.bias, rows, layer.outputs);
}

// attn [rows, qDim]: for every row and query head, softmax(q·K / sqrt(d)) · V over the row's positions
// 0..position of its own sequence's cache. Work items are (row, KV head): the query heads that share a KV
// head read its keys and values together, once.
void LlamaModel::attention(int layer, Scratch& s) {
  Timed timed(StepProfile::Attention);
  const LlamaConfig& c = config_;
  const int rows = (int)s.rowPosition.size();
  const int qDim = c.qDim(), headsPerKv = c.nHeads / c.nKvHeads, headDim = c.headDim;
  const float scale = 1.0f / std::sqrt((float)headDim);
  auto run = [&](int begin, int end) {
    thread_local std::vector<float> scoresBuffer;
    for (int task = begin; task < end; ++task) {
      const int r = task / c.nKvHeads, kvHead = task % c.nKvHeads;
      SequenceCache* seq = s.rowSequence[r];
      const int positions = s.rowPosition[r] + 1;
      const void* keys = seq->keyHead(layer, kvHead, c);
      const void* values = seq->valueHead(layer, kvHead, c);
      float* scores = sized(scoresBuffer, (size_t)headsPerKv * positions);
      const float* q = s.q.data() + (size_t)r * qDim + (size_t)kvHead * headsPerKv * headDim;
      float* out = s.attn.data() + (size_t)r * qDim + (size_t)kvHead * headsPerKv * headDim;
      if (c.kvBf16)
        attendGroupBf16(q, headsPerKv, headDim, static_cast<const uint16_t*>(keys), static_cast<const uint16_t*>(values),
                        headDim, positions, scale, scores, out);
      else
        attendGroup(q, headsPerKv, headDim, static_cast<const float*>(keys), static_cast<const float*>(values), headDim,
                    positions, scale, scores, out);
    }
  };
  // Small work (a short context at batch 1) is not worth waking the pool for.
  size_t work = 0;
  for (int r = 0; r < rows; ++r) work += (size_t)(s.rowPosition[r] + 1) * qDim;
  if (work < kMinParallelElements) run(0, rows * c.nKvHeads);
  else globalThreadPool().parallelFor(rows * c.nKvHeads, 1, run, kChunksPerThread);
}

void LlamaModel::resetHessians(int layer) {
  hessians_ = LayerHessians();
  hessians_.layer = layer;
  if (layer < 0) return;
  if (layer == config_.nLayers) {  // the lm_head's input: one Hessian
    hessians_.h[0].assign((size_t)config_.dim * config_.dim, 0.0);
    return;
  }
  const int widths[4] = {config_.dim, config_.qDim(), config_.dim, config_.hiddenDim};
  for (int i = 0; i < 4; ++i) hessians_.h[i].assign((size_t)widths[i] * widths[i], 0.0);
}

void LlamaModel::collectHessians(int layer) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (layer > config_.nLayers) throw std::runtime_error("layer out of range");
  resetHessians(layer);
}

LayerHessians LlamaModel::takeHessians() {
  std::lock_guard<std::mutex> lock(mutex_);
  LayerHessians taken = std::move(hessians_);
  resetHessians(taken.layer);
  return taken;
}

// H += 2 Σ_rows xᵀx over x [rows, width] (rows `stride` apart); rows of H split over the threads.
void LlamaModel::accumulateHessian(int which, const float* x, int rows, int stride, int width) {
  double* h = hessians_.h[which].data();
  parallelFor(width, [&](int begin, int end) {
    for (int i = begin; i < end; ++i) {
      double* hRow = h + (size_t)i * width;
      for (int r = 0; r < rows; ++r) {
        const float* xr = x + (size_t)r * stride;
        const double xi = 2.0 * xr[i];
        if (xi == 0.0) continue;
        for (int j = 0; j < width; ++j) hRow[j] += xi * xr[j];
      }
    }
  });
}

// Once, before the first CPU step (a GPU backend never needs them): the backends on int16 products read
// each group's table from here instead of building it on every call. Matrices are prepared in parallel.
void LlamaModel::prepareInt4Tables() {
  int4TablesPrepared_ = true;
  if (std::string(activeKernels().name) == "reference") return;  // (reads the scales directly)
  std::vector<LinearLayer*> linears;
  for (DecoderLayer& l : weights_.layers)
    for (LinearLayer* linear : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down})
      if (!linear->f32 && linear->w.codes) linears.push_back(linear);
  if (weights_.int4LmHead()) linears.push_back(&weights_.lmHeadInt4);
  int4Tables_.assign(linears.size(), nullptr);
  globalThreadPool().parallelFor((int)linears.size(), 1, [&](int begin, int end) {
    for (int i = begin; i < end; ++i) int4Tables_[i] = w4a8::prepareInt4Tables(linears[i]->w);
  }, (int)linears.size());
  for (size_t i = 0; i < linears.size(); ++i) linears[i]->w.tables = int4Tables_[i].get();
}

void LlamaModel::prepareCpuStep() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!backend_ && !int4TablesPrepared_) prepareInt4Tables();
}

void LlamaModel::step(const std::vector<StepItem>& items, float* logits, bool allPositions) {
  std::lock_guard<std::mutex> lock(mutex_);
  checkItems(items);
  if (!backend_ && !int4TablesPrepared_) prepareInt4Tables();
  if (backend_) {
    if (hessians_.layer >= 0) throw std::runtime_error("Hessians are only collected on the CPU");
    std::vector<int> startLengths;
    for (const StepItem& item : items) startLengths.push_back(sequences_.at(item.sequence)->length);
    backend_->step(items, startLengths, logits, allPositions);
    for (const StepItem& item : items) sequences_.at(item.sequence)->length += item.count;
    return;
  }
  const auto stepStart = std::chrono::steady_clock::now();
  const LlamaConfig& c = config_;
  Scratch& s = *scratch_;
  int rows = 0;
  for (const StepItem& item : items) rows += item.count;
  const int dim = c.dim, qDim = c.qDim(), kvDim = c.kvDim(), hidden = c.hiddenDim, half = c.headDim / 2;

  // Rows: every item's tokens in order. Each row's sequence, position, embedding and RoPE rotation
  // (the rotation is the same in every layer, so its sines and cosines are taken once per step).
  Timed timedEmbed(StepProfile::Embed);
  s.rowPosition.resize(rows);
  s.rowSequence.resize(rows);
  float* x = sized(s.x, (size_t)rows * dim);
  float* ropeCos = sized(s.ropeCos, (size_t)rows * half);
  float* ropeSin = sized(s.ropeSin, (size_t)rows * half);
  for (int i = 0, r = 0; i < (int)items.size(); ++i) {
    SequenceCache* seq = sequences_.at(items[i].sequence).get();
    for (int j = 0; j < items[i].count; ++j, ++r) {
      s.rowSequence[r] = seq;
      s.rowPosition[r] = seq->length + j;
      const size_t row = (size_t)items[i].tokens[j] * dim;
      if (weights_.embeddingF32) std::copy(weights_.embeddingF32 + row, weights_.embeddingF32 + row + dim, x + (size_t)r * dim);
      else bf16RowToFloat(weights_.embedding + row, x + (size_t)r * dim, dim);
      ropeAngles(s.rowPosition[r], half, inverseFrequencies_.data(), ropeCos + (size_t)r * half, ropeSin + (size_t)r * half);
    }
  }
  float* xb = sized(s.xb, (size_t)rows * dim);
  float* q = sized(s.q, (size_t)rows * qDim);
  float* k = sized(s.k, (size_t)rows * kvDim);
  float* v = sized(s.v, (size_t)rows * kvDim);
  float* attn = sized(s.attn, (size_t)rows * qDim);
  float* tmp = sized(s.tmp, (size_t)rows * dim);
  float* gate = sized(s.gate, (size_t)rows * hidden);
  float* up = sized(s.up, (size_t)rows * hidden);
  timedEmbed.stop();

  for (int l = 0; l < c.nLayers; ++l) {
    const DecoderLayer& layer = weights_.layers[l];
    const bool hessians = hessians_.layer == l;
    // Attention block: x += Wo · attention(rope(Wq·n(x)), rope(Wk·n(x)), Wv·n(x)). The residual of the
    // previous layer's MLP is added in the same pass as this norm.
    {
      Timed timed(StepProfile::Norm);
      const float* residual = l == 0 ? nullptr : tmp;
      forRows(rows, dim, [&](int b, int e) { addRmsNorm(x, residual, layer.attnNorm, xb, b, e, dim, c.rmsNormEps); });
    }
    if (hessians) accumulateHessian(0, xb, rows, dim, dim);
    {
      const LinearLayer* qkv[3] = {&layer.q, &layer.k, &layer.v};
      float* out[3] = {q, k, v};
      linears(qkv, out, 3, xb, rows, dim, s);
    }
    {
      Timed timed(StepProfile::Rope);
      forRows(rows, qDim + kvDim, [&](int b, int e) {
        for (int r = b; r < e; ++r) {
          const float* cosines = ropeCos + (size_t)r * half;
          const float* sines = ropeSin + (size_t)r * half;
          rotate(q + (size_t)r * qDim, c.nHeads, c.headDim, cosines, sines);
          rotate(k + (size_t)r * kvDim, c.nKvHeads, c.headDim, cosines, sines);
          SequenceCache* seq = s.rowSequence[r];
          for (int h = 0; h < c.nKvHeads; ++h) {
            const size_t at = (size_t)r * kvDim + (size_t)h * c.headDim, to = (size_t)s.rowPosition[r] * c.headDim;
            if (c.kvBf16) {
              storeKey(static_cast<uint16_t*>(seq->keyHead(l, h, c)), c.headDim, s.rowPosition[r], k + at);
              floatToBf16Array(v + at, c.headDim, static_cast<uint16_t*>(seq->valueHead(l, h, c)) + to);
            } else {
              storeKey(static_cast<float*>(seq->keyHead(l, h, c)), c.headDim, s.rowPosition[r], k + at);
              std::copy(v + at, v + at + c.headDim, static_cast<float*>(seq->valueHead(l, h, c)) + to);
            }
          }
        }
      });
    }
    attention(l, s);
    if (hessians) accumulateHessian(1, attn, rows, qDim, qDim);
    linear(layer.o, attn, rows, qDim, tmp, s);
    // MLP block: x += Wdown · (silu(Wgate·n(x)) * Wup·n(x))
    {
      Timed timed(StepProfile::Norm);
      forRows(rows, dim, [&](int b, int e) { addRmsNorm(x, tmp, layer.ffnNorm, xb, b, e, dim, c.rmsNormEps); });
    }
    if (hessians) accumulateHessian(2, xb, rows, dim, dim);
    {
      const LinearLayer* gateUp[2] = {&layer.gate, &layer.up};
      float* out[2] = {gate, up};
      linears(gateUp, out, 2, xb, rows, dim, s);
    }
    {
      Timed timed(StepProfile::Activation);
      forRows(rows, hidden, [&](int b, int e) { swiglu(gate + (size_t)b * hidden, up + (size_t)b * hidden, (size_t)(e - b) * hidden); });
    }
    if (hessians) accumulateHessian(3, gate, rows, hidden, hidden);
    linear(layer.down, gate, rows, hidden, tmp, s);
  }
  {
    Timed timed(StepProfile::Residual);
    forRows(rows, dim, [&](int b, int e) {
      for (size_t i = (size_t)b * dim; i < (size_t)e * dim; ++i) x[i] += tmp[i];
    });
  }

  if (hessians_.layer >= 0) hessians_.tokens += rows;
  if (hessians_.layer == c.nLayers) {  // the lm_head's input: every row through the final norm
    float* normed = sized(s.xb, (size_t)rows * dim);
    rmsNorm(x, weights_.finalNorm, normed, rows, dim, c.rmsNormEps);
    accumulateHessian(0, normed, rows, dim, dim);
  }
  // Logits of each item's last token (or of every token): final norm, then the lm_head.
  Timed timedHead(StepProfile::LmHead);
  const int outRows = allPositions ? rows : (int)items.size();
  float* last = sized(s.finalRows, (size_t)outRows * dim);
  if (allPositions) {
    rmsNorm(x, weights_.finalNorm, last, rows, dim, c.rmsNormEps);
  } else {
    for (int i = 0, r = 0; i < (int)items.size(); ++i) {
      r += items[i].count;
      rmsNorm(x + (size_t)(r - 1) * dim, weights_.finalNorm, last + (size_t)i * dim, 1, dim, c.rmsNormEps);
    }
  }
  if (weights_.int4LmHead()) {
    // Quantized and multiplied like any linear layer; its quantize and GEMM time count as lm_head's.
    StepProfile::Enclosed enclosed;
    linear(weights_.lmHeadInt4, last, outRows, dim, logits, s);
  } else if (weights_.lmHeadF32) {
    runGemmF32({last, weights_.lmHeadF32, outRows, c.vocabSize, dim, {logits, nullptr, c.vocabSize}});
  } else {
    gemmBf16Weights(last, outRows, weights_.lmHead, c.vocabSize, dim, logits);
  }
  timedHead.stop();
  for (const StepItem& item : items) sequences_.at(item.sequence)->length += item.count;
  if (StepProfile::get().enabled())
    StepProfile::get().stepDone((int)items.size(), rows,
                                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - stepStart).count());
}

}  // namespace w4a8
