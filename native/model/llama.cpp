#include "model/llama.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <unordered_set>

#include "kernels/gemm_runner.h"
#include "model/ops.h"

namespace w4a8 {

// Buffers of one step, grown on demand and reused ([rows, width] row-major FP32 unless noted).
struct LlamaModel::Scratch {
  std::vector<float> x, xb, q, k, v, attn, tmp, gate, up, padded, finalRows;
  std::vector<uint8_t> x8;     // FP8 activations of the current linear input [rows, cols]
  std::vector<float> xScales;  // [rows]
  std::vector<int> rowPosition;
  std::vector<SequenceCache*> rowSequence;
};

namespace {

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
  const size_t size = (size_t)config_.nLayers * capacity * config_.kvDim();
  cache->keys.reset(new float[size]);
  cache->values.reset(new float[size]);
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

// y [rows, N] = x [rows, inputs] Wᵀ (+ bias). x rows are `stride` floats apart. The activations are
// quantized to FP8 per token here, after zero-padding K to the packed width.
void LlamaModel::linear(const LinearLayer& layer, const float* x, int rows, int stride, float* y, Scratch& s) {
  if (layer.f32) {
    const float* input = x;
    if (stride != layer.inputs) {
      float* packed = sized(s.padded, (size_t)rows * layer.inputs);
      for (int r = 0; r < rows; ++r) std::copy(x + (size_t)r * stride, x + (size_t)r * stride + layer.inputs, packed + (size_t)r * layer.inputs);
      input = packed;
    }
    runGemmF32({input, layer.f32, rows, layer.outputs, layer.inputs, {y, nullptr, layer.outputs}});
    if (layer.bias)
      for (int r = 0; r < rows; ++r)
        for (int n = 0; n < layer.outputs; ++n) y[(size_t)r * layer.outputs + n] += layer.bias[n];
    return;
  }
  const int cols = layer.w.cols;
  const float* input = x;
  if (layer.inputs != cols || stride != cols) {
    float* padded = sized(s.padded, (size_t)rows * cols);
    for (int r = 0; r < rows; ++r) {
      std::copy(x + (size_t)r * stride, x + (size_t)r * stride + layer.inputs, padded + (size_t)r * cols);
      std::fill(padded + (size_t)r * cols + layer.inputs, padded + (size_t)(r + 1) * cols, 0.0f);
    }
    input = padded;
  }
  uint8_t* x8 = sized(s.x8, (size_t)rows * cols);
  float* xScales = sized(s.xScales, rows);
  runQuantizeActivationsDynamic(input, rows, cols, config_.activationFormat, x8, xScales);
  runGemmW4A8({x8, xScales, config_.activationFormat, rows, layer.w, {y, nullptr, layer.w.rows}});
  if (layer.bias)
    for (int r = 0; r < rows; ++r)
      for (int n = 0; n < layer.w.rows; ++n) y[(size_t)r * layer.w.rows + n] += layer.bias[n];
}

void LlamaModel::attention(const std::vector<StepItem>& items, int layer, Scratch& s) {
  const LlamaConfig& c = config_;
  const int rows = (int)s.rowPosition.size();
  const int kvDim = c.kvDim(), qDim = c.qDim(), headsPerKv = c.nHeads / c.nKvHeads;
  const float scale = 1.0f / std::sqrt((float)c.headDim);
  parallelFor(rows * c.nHeads, [&](int begin, int end) {
    std::vector<float> scores;
    for (int task = begin; task < end; ++task) {
      const int r = task / c.nHeads, h = task % c.nHeads;
      SequenceCache* seq = s.rowSequence[r];
      const int position = s.rowPosition[r];
      const float* q = s.q.data() + (size_t)r * qDim + (size_t)h * c.headDim;
      const size_t layerBase = (size_t)layer * seq->capacity * kvDim + (size_t)(h / headsPerKv) * c.headDim;
      scores.resize(position + 1);
      for (int t = 0; t <= position; ++t)
        scores[t] = dot(q, seq->keys.get() + layerBase + (size_t)t * kvDim, c.headDim) * scale;
      softmax(scores.data(), position + 1);
      float* out = s.attn.data() + (size_t)r * qDim + (size_t)h * c.headDim;
      std::fill(out, out + c.headDim, 0.0f);
      for (int t = 0; t <= position; ++t)
        axpy(scores[t], seq->values.get() + layerBase + (size_t)t * kvDim, out, c.headDim);
    }
  });
}

void LlamaModel::resetHessians(int layer) {
  hessians_ = LayerHessians();
  hessians_.layer = layer;
  if (layer < 0) return;
  const int widths[4] = {config_.dim, config_.qDim(), config_.dim, config_.hiddenDim};
  for (int i = 0; i < 4; ++i) hessians_.h[i].assign((size_t)widths[i] * widths[i], 0.0);
}

void LlamaModel::collectHessians(int layer) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (layer >= config_.nLayers) throw std::runtime_error("layer out of range");
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

void LlamaModel::step(const std::vector<StepItem>& items, float* logits, bool allPositions) {
  std::lock_guard<std::mutex> lock(mutex_);
  checkItems(items);
  if (backend_) {
    if (hessians_.layer >= 0) throw std::runtime_error("Hessians are only collected on the CPU");
    std::vector<int> startLengths;
    for (const StepItem& item : items) startLengths.push_back(sequences_.at(item.sequence)->length);
    backend_->step(items, startLengths, logits, allPositions);
    for (const StepItem& item : items) sequences_.at(item.sequence)->length += item.count;
    return;
  }
  const LlamaConfig& c = config_;
  Scratch& s = *scratch_;
  int rows = 0;
  for (const StepItem& item : items) rows += item.count;
  const int dim = c.dim, qDim = c.qDim(), kvDim = c.kvDim(), hidden = c.hiddenDim;

  s.rowPosition.resize(rows);
  s.rowSequence.resize(rows);
  float* x = sized(s.x, (size_t)rows * dim);
  for (int i = 0, r = 0; i < (int)items.size(); ++i) {
    SequenceCache* seq = sequences_.at(items[i].sequence).get();
    for (int j = 0; j < items[i].count; ++j, ++r) {
      s.rowSequence[r] = seq;
      s.rowPosition[r] = seq->length + j;
      const size_t row = (size_t)items[i].tokens[j] * dim;
      if (weights_.embeddingF32) std::copy(weights_.embeddingF32 + row, weights_.embeddingF32 + row + dim, x + (size_t)r * dim);
      else bf16RowToFloat(weights_.embedding + row, x + (size_t)r * dim, dim);
    }
  }
  float* xb = sized(s.xb, (size_t)rows * dim);
  float* q = sized(s.q, (size_t)rows * qDim);
  float* k = sized(s.k, (size_t)rows * kvDim);
  float* v = sized(s.v, (size_t)rows * kvDim);
  sized(s.attn, (size_t)rows * qDim);
  float* tmp = sized(s.tmp, (size_t)rows * dim);
  float* gate = sized(s.gate, (size_t)rows * hidden);
  float* up = sized(s.up, (size_t)rows * hidden);

  for (int l = 0; l < c.nLayers; ++l) {
    const DecoderLayer& layer = weights_.layers[l];
    // Attention block: x += Wo · attention(rope(Wq·n(x)), rope(Wk·n(x)), Wv·n(x))
    const bool hessians = hessians_.layer == l;
    rmsNorm(x, layer.attnNorm, xb, rows, dim, c.rmsNormEps);
    if (hessians) accumulateHessian(0, xb, rows, dim, dim);
    linear(layer.q, xb, rows, dim, q, s);
    linear(layer.k, xb, rows, dim, k, s);
    linear(layer.v, xb, rows, dim, v, s);
    for (int r = 0; r < rows; ++r) {
      rope(q + (size_t)r * qDim, c.nHeads, c.headDim, s.rowPosition[r], inverseFrequencies_.data());
      rope(k + (size_t)r * kvDim, c.nKvHeads, c.headDim, s.rowPosition[r], inverseFrequencies_.data());
      SequenceCache* seq = s.rowSequence[r];
      const size_t at = ((size_t)l * seq->capacity + s.rowPosition[r]) * kvDim;
      std::copy(k + (size_t)r * kvDim, k + (size_t)(r + 1) * kvDim, seq->keys.get() + at);
      std::copy(v + (size_t)r * kvDim, v + (size_t)(r + 1) * kvDim, seq->values.get() + at);
    }
    attention(items, l, s);
    if (hessians) accumulateHessian(1, s.attn.data(), rows, qDim, qDim);
    linear(layer.o, s.attn.data(), rows, qDim, tmp, s);
    for (size_t i = 0; i < (size_t)rows * dim; ++i) x[i] += tmp[i];
    // MLP block: x += Wdown · (silu(Wgate·n(x)) * Wup·n(x))
    rmsNorm(x, layer.ffnNorm, xb, rows, dim, c.rmsNormEps);
    if (hessians) accumulateHessian(2, xb, rows, dim, dim);
    linear(layer.gate, xb, rows, dim, gate, s);
    linear(layer.up, xb, rows, dim, up, s);
    for (size_t i = 0; i < (size_t)rows * hidden; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
    if (hessians) accumulateHessian(3, gate, rows, hidden, hidden);
    linear(layer.down, gate, rows, hidden, tmp, s);
    for (size_t i = 0; i < (size_t)rows * dim; ++i) x[i] += tmp[i];
  }

  if (hessians_.layer >= 0) hessians_.tokens += rows;
  // Logits of each item's last token (or of every token): final norm, then the lm_head.
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
  if (weights_.lmHeadF32) runGemmF32({last, weights_.lmHeadF32, outRows, c.vocabSize, dim, {logits, nullptr, c.vocabSize}});
  else gemmBf16Weights(last, outRows, weights_.lmHead, c.vocabSize, dim, logits);
  for (const StepItem& item : items) sequences_.at(item.sequence)->length += item.count;
}

}  // namespace w4a8
