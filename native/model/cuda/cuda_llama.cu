// The GPU decoder step: LlamaModel's forward pass (model/llama.cpp) with every operation on the device.
// The weights are uploaded once (INT4 codes and scales exactly as packed; BF16 embedding and lm_head; FP32
// norms and biases), each sequence's KV cache lives in device memory, and one step copies the rows' tokens
// and cache locations in and the logits out: nothing else crosses the bus.
//
// Per layer, for rows = the step's tokens ([rows, width] FP32 buffers):
//   xb = rmsNorm(x)                      (x += previous layer's MLP output first, fused)
//   qkv = W4A8_qkv(xb)                   q, k and v in one GEMM: their weights are uploaded as one matrix,
//                                        rows concatenated (the same dot products, one launch)
//   rope(q, k); k, v -> KV cache         attn = attention(q, cache)     tmp = W4A8_o(attn)
//   xb = rmsNorm(x += tmp)               gateUp = W4A8_gateUp(xb)       act = silu(gate) * up
//   tmp = W4A8_down(act)
// then x += tmp, the final norm of the rows whose logits are wanted, and the BF16 lm_head.
#include <cuda_runtime.h>

#include <algorithm>
#include <initializer_list>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "kernels/cuda/cuda_backend.h"
#include "model/cuda/decoder_kernels.h"
#include "model/cuda_plugin.h"

namespace w4a8::cudamodel {
namespace {

#define W4A8_CHECK_CUDA(call)                                                                              \
  do {                                                                                                     \
    const cudaError_t e_ = (call);                                                                         \
    if (e_ != cudaSuccess) throw std::runtime_error(std::string(#call) + ": " + cudaGetErrorString(e_));  \
  } while (0)

// A device allocation that grows on demand (contents not kept).
struct DeviceBuffer {
  void* data = nullptr;
  size_t bytes = 0;
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(data); }
  template <typename T>
  T* as() const { return static_cast<T*>(data); }
  bool ensure(size_t want) {  // true when the buffer moved
    if (want <= bytes) return false;
    cudaFree(data);
    data = nullptr;
    bytes = 0;
    W4A8_CHECK_CUDA(cudaMalloc(&data, want));
    bytes = want;
    return true;
  }
};

template <typename T>
T* upload(const T* host, size_t count, std::vector<void*>& owned) {
  void* p = nullptr;
  W4A8_CHECK_CUDA(cudaMalloc(&p, std::max<size_t>(count * sizeof(T), 1)));
  owned.push_back(p);
  W4A8_CHECK_CUDA(cudaMemcpy(p, host, count * sizeof(T), cudaMemcpyHostToDevice));
  return static_cast<T*>(p);
}

class CudaLlama final : public StepBackend {
 public:
  CudaLlama(const LlamaConfig& config, const LlamaWeights& weights, const CudaBackendOptions& options)
      : config_(config), options_(options) {
    W4A8_CHECK_CUDA(cudaSetDevice(options.device));
    cudaDeviceProp prop{};
    W4A8_CHECK_CUDA(cudaGetDeviceProperties(&prop, options.device));
    name_ = prop.name;
    check(config, weights);
    cuda::Status s = cuda::createContext(&ctx_, options.device);
    if (s != cuda::Status::Ok) throw std::runtime_error(std::string("CUDA context: ") + cuda::lastError(nullptr));
    stream_ = static_cast<cudaStream_t>(cuda::streamHandle(ctx_));
    try {
      uploadWeights(weights);
    } catch (...) {
      release();
      throw;
    }
  }
  ~CudaLlama() override { release(); }

  const char* device() const override { return "cuda"; }
  const char* name() const override { return name_.c_str(); }

  void createSequence(int id, int capacity) override {
    W4A8_CHECK_CUDA(cudaSetDevice(options_.device));
    const size_t bytes = (size_t)config_.nLayers * capacity * config_.kvDim() * (config_.kvBf16 ? 2 : 4);
    Sequence seq;
    seq.capacity = capacity;
    if (cudaMalloc((void**)&seq.keys, bytes) != cudaSuccess || cudaMalloc((void**)&seq.values, bytes) != cudaSuccess) {
      cudaGetLastError();
      cudaFree(seq.keys);
      throw std::runtime_error("out of GPU memory for a KV cache of " + std::to_string(capacity) + " tokens (" +
                               std::to_string(2 * bytes >> 20) + " MiB)");
    }
    sequences_[id] = seq;
  }

  void freeSequence(int id) override {
    auto it = sequences_.find(id);
    if (it == sequences_.end()) return;
    cudaSetDevice(options_.device);
    cudaStreamSynchronize(stream_);  // a step in flight may still read it (steps end synchronised; be safe)
    cudaFree(it->second.keys);
    cudaFree(it->second.values);
    sequences_.erase(it);
  }

  void step(const std::vector<StepItem>& items, const std::vector<int>& startLengths, float* logits,
            bool allPositions) override;

 private:
  void enqueueForward(int rows, int outRows, bool allPositions);
  void dropGraphs() {
    for (auto& g : graphs_) cudaGraphExecDestroy(g.second);
    graphs_.clear();
  }
  struct Linear {
    cuda::DeviceInt4Weights w{};
    const float* bias = nullptr;
    int inputs = 0;
  };
  struct Layer {
    const float* attnNorm = nullptr;
    const float* ffnNorm = nullptr;
    Linear qkv;     // [qDim + 2 kvDim, dim]: q, k, v rows
    Linear o;
    Linear gateUp;  // [2 hidden, dim]: gate, up rows
    Linear down;
  };
  struct Sequence {
    void* keys = nullptr;  // [nLayers][capacity][kvDim], FP32 or BF16 (config_.kvBf16)
    void* values = nullptr;
    int capacity = 0;
  };

  static void check(const LlamaConfig& c, const LlamaWeights& w) {
    if (!w.embedding || !(w.lmHead || w.int4LmHead()))
      throw std::runtime_error("the CUDA backend runs packed models (BF16 embedding, BF16 or W4A8 lm_head); FP32 reference models run on the CPU");
    if (c.headDim > 256 || c.headDim % 2 != 0) throw std::runtime_error("the CUDA backend supports headDim up to 256");
    for (const DecoderLayer& l : w.layers)
      for (const LinearLayer* lin : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down})
        if (lin->f32) throw std::runtime_error("the CUDA backend runs W4A8 linear layers only (this model has FP32 ones)");
  }

  // Uploads the row-concatenation of `parts` (same packed width, group size and format: one linear layer of
  // sum(rows) outputs), through a host staging copy when there are several.
  Linear uploadLinear(std::initializer_list<const LinearLayer*> parts) {
    const LinearLayer& first = **parts.begin();
    const Int4WeightsView& w0 = first.w;
    int rows = 0;
    bool anyBias = false;
    for (const LinearLayer* p : parts) {
      if (p->w.cols != w0.cols || p->w.groupSize != w0.groupSize || p->w.format != w0.format || p->inputs != first.inputs)
        throw std::runtime_error("fused linear layers must share their packed width, group size and format");
      rows += p->w.rows;
      anyBias |= p->bias != nullptr;
    }
    Int4WeightsView view = w0;
    std::vector<uint8_t> codes, zeros;
    std::vector<float> groupScales, channelScales, bias;
    if (parts.size() > 1) {
      const size_t rowCodes = w0.cols / 2, rowGroups = w0.groups();
      for (const LinearLayer* p : parts) {
        codes.insert(codes.end(), p->w.codes, p->w.codes + p->w.rows * rowCodes);
        zeros.insert(zeros.end(), p->w.zeros, p->w.zeros + p->w.rows * rowGroups);
        groupScales.insert(groupScales.end(), p->w.groupScales, p->w.groupScales + p->w.rows * rowGroups);
        channelScales.insert(channelScales.end(), p->w.channelScales, p->w.channelScales + p->w.rows);
      }
      view = {codes.data(), groupScales.data(), zeros.data(), channelScales.data(), rows, w0.cols, w0.groupSize, w0.format};
    }
    if (anyBias)
      for (const LinearLayer* p : parts) {
        if (p->bias) bias.insert(bias.end(), p->bias, p->bias + p->w.rows);
        else bias.insert(bias.end(), p->w.rows, 0.0f);
      }
    Linear lin;
    cuda::Status s = cuda::uploadInt4Weights(ctx_, view, &lin.w);
    if (s != cuda::Status::Ok) {
      cuda::freeInt4Weights(&lin.w);
      throw std::runtime_error(std::string("uploading weights: ") + cuda::lastError(ctx_));
    }
    lin.inputs = first.inputs;
    linearWeights_ |= lin.w.linearGroups;
    if (anyBias) lin.bias = upload(bias.data(), bias.size(), owned_);
    return lin;
  }

  void uploadWeights(const LlamaWeights& w) {
    const LlamaConfig& c = config_;
    size_t freeBytes = 0, totalBytes = 0;
    W4A8_CHECK_CUDA(cudaMemGetInfo(&freeBytes, &totalBytes));
    const auto packedBytes = [](const LinearLayer& lin) {
      return (size_t)lin.w.rows * lin.w.cols / 2 + (size_t)lin.w.rows * lin.w.groups() * 5;
    };
    size_t need = (size_t)c.vocabSize * c.dim * 2 * (w.lmHead && w.lmHead != w.embedding ? 2 : 1);
    if (w.int4LmHead()) need += packedBytes(w.lmHeadInt4);
    for (const DecoderLayer& l : w.layers)
      for (const LinearLayer* lin : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down}) need += packedBytes(*lin);
    if (need > freeBytes)
      throw std::runtime_error("the model needs " + std::to_string(need >> 20) + " MiB of GPU memory, " +
                               std::to_string(freeBytes >> 20) + " MiB are free");
    embedding_ = upload(w.embedding, (size_t)c.vocabSize * c.dim, owned_);
    if (w.int4LmHead()) {
      lmHeadInt4_ = uploadLinear({&w.lmHeadInt4});
      maxCols_ = std::max(maxCols_, lmHeadInt4_.w.view.cols);
    } else {
      lmHead_ = w.lmHead == w.embedding ? embedding_ : upload(w.lmHead, (size_t)c.vocabSize * c.dim, owned_);
    }
    finalNorm_ = upload(w.finalNorm, c.dim, owned_);
    const std::vector<float> frequencies = ropeInverseFrequencies(c);
    inverseFrequencies_ = upload(frequencies.data(), frequencies.size(), owned_);
    layers_.reserve(w.layers.size());
    for (const DecoderLayer& l : w.layers) {
      layers_.emplace_back();  // filled in place, so that release() frees what a failing upload left
      Layer& d = layers_.back();
      d.attnNorm = upload(l.attnNorm, c.dim, owned_);
      d.ffnNorm = upload(l.ffnNorm, c.dim, owned_);
      d.qkv = uploadLinear({&l.q, &l.k, &l.v});
      d.o = uploadLinear({&l.o});
      d.gateUp = uploadLinear({&l.gate, &l.up});
      d.down = uploadLinear({&l.down});
      for (const Linear* lin : {&d.qkv, &d.o, &d.gateUp, &d.down}) maxCols_ = std::max(maxCols_, lin->w.view.cols);
    }
  }

  void release() {
    if (ctx_) cuda::synchronize(ctx_);
    dropGraphs();
    for (Layer& l : layers_)
      for (Linear* lin : {&l.qkv, &l.o, &l.gateUp, &l.down}) cuda::freeInt4Weights(&lin->w);
    layers_.clear();
    cuda::freeInt4Weights(&lmHeadInt4_.w);
    for (void* p : owned_) cudaFree(p);
    owned_.clear();
    for (auto& entry : sequences_) cudaFree(entry.second.keys), cudaFree(entry.second.values);
    sequences_.clear();
    if (rowInfoHost_) cudaFreeHost(rowInfoHost_);
    rowInfoHost_ = nullptr;
    if (ctx_) cuda::destroyContext(ctx_);
    ctx_ = nullptr;
  }

  void checkStatus(cuda::Status s, const char* what) {
    if (s != cuda::Status::Ok) throw std::runtime_error(std::string(what) + ": " + cuda::lastError(ctx_));
  }

  // x8, xScales = FP8 per-token quantization of x [rows, width] (row stride `stride`), zero-padded to cols.
  void quantizeInput(const float* x, int rows, int width, int stride, int cols) {
    const float* input = x;
    if (width != cols || stride != cols) {
      W4A8_CHECK_CUDA(launchPadRows(x, rows, width, stride, cols, padded_.as<float>(), stream_));
      input = padded_.as<float>();
    }
    // With linear weights (power-of-two packing) the quantization also makes the integer GEMV's activations, for
    // the steps of 1-2 tokens that take it.
    integer_.buffer = integerActs_.as<uint8_t>();
    integer_.bytes = integerActs_.bytes;
    integer_.ready = false;
    const bool integer = linearWeights_ && rows <= 2;
    checkStatus(cuda::quantizeActivationsDynamic(ctx_, input, rows, cols, config_.activationFormat, x8_.as<uint8_t>(),
                                                 xScales_.as<float>(), integer ? &integer_ : nullptr),
                "quantize");
  }

  // y [rows, N] = the quantized input through `lin` (+ bias).
  void gemm(const Linear& lin, int rows, float* y) {
    W4A8GemmArgs a{x8_.as<uint8_t>(), xScales_.as<float>(), config_.activationFormat, rows, lin.w.view,
                   {y, nullptr, lin.w.view.rows}};
    cuda::GemmOptions options;
    // The fused FP32-accumulating kernels for every step; cuBLASLt (FP22 sums) only with fastPrefill.
    if (!options_.fastPrefill) options.path = cuda::GemmPath::Fused;
    options.linearGroups = lin.w.linearGroups;
    options.integerActivations = linearWeights_ ? &integer_ : nullptr;
    checkStatus(cuda::gemmW4A8(ctx_, a, nullptr, options), "W4A8 GEMM");
    if (lin.bias) W4A8_CHECK_CUDA(launchAddBias(y, lin.bias, rows, lin.w.view.rows, stream_));
  }

  void ensureScratch(int rows, int outRows) {
    const LlamaConfig& c = config_;
    const size_t r = rows, f = sizeof(float), qkvDim = (size_t)c.qDim() + 2 * c.kvDim();
    bool moved = false;
    moved |= x_.ensure(r * c.dim * f);
    moved |= xb_.ensure(r * c.dim * f);
    moved |= tmp_.ensure(r * c.dim * f);
    moved |= qkv_.ensure(r * qkvDim * f);
    moved |= attn_.ensure(r * c.qDim() * f);
    moved |= gateUp_.ensure(r * 2 * c.hiddenDim * f);
    moved |= act_.ensure(r * c.hiddenDim * f);
    moved |= padded_.ensure(r * maxCols_ * f);
    moved |= x8_.ensure(r * maxCols_);
    if (linearWeights_) moved |= integerActs_.ensure(cuda::integerActivationsBytes(maxCols_));
    moved |= xScales_.ensure(r * f);
    moved |= last_.ensure((size_t)outRows * c.dim * f);
    moved |= logits_.ensure((size_t)outRows * c.vocabSize * f);
    moved |= rowInfo_.ensure(r * sizeof(RowInfo) + (size_t)outRows * sizeof(int));
    if (moved) ++bufferGeneration_;
    const size_t hostBytes = r * sizeof(RowInfo) + (size_t)outRows * sizeof(int);
    if (hostBytes > rowInfoHostBytes_) {
      if (rowInfoHost_) cudaFreeHost(rowInfoHost_);
      rowInfoHost_ = nullptr;
      rowInfoHostBytes_ = 0;
      W4A8_CHECK_CUDA(cudaMallocHost(&rowInfoHost_, hostBytes));
      rowInfoHostBytes_ = hostBytes;
    }
  }

  LlamaConfig config_;
  CudaBackendOptions options_;
  std::string name_;
  cuda::Context* ctx_ = nullptr;
  cudaStream_t stream_ = nullptr;
  const uint16_t* embedding_ = nullptr;
  const uint16_t* lmHead_ = nullptr;  // BF16 [vocab, dim], or
  Linear lmHeadInt4_;                 // W4A8 (quant.lmHead 'w4a8')
  const float* finalNorm_ = nullptr;
  const float* inverseFrequencies_ = nullptr;
  std::vector<Layer> layers_;
  std::vector<void*> owned_;
  int maxCols_ = 0;
  std::unordered_map<int, Sequence> sequences_;
  DeviceBuffer x_, xb_, tmp_, qkv_, attn_, gateUp_, act_, padded_, x8_, xScales_, last_, logits_, rowInfo_;
  DeviceBuffer integerActs_;           // the integer GEMV's activations, made by the quantization (linear weights)
  cuda::IntegerActivations integer_;   // what integerActs_ holds now
  bool linearWeights_ = false;         // some layer's weights have linear groups (DeviceInt4Weights::linearGroups)
  // CUDA graphs of decode steps by row count (rows * 65536 + output rows), valid while neither our buffers nor
  // the context's scratch move (graphGeneration_ = the sum of both generation counters when captured).
  std::unordered_map<int, cudaGraphExec_t> graphs_;
  std::unordered_map<int, int> timesSeen_;
  uint64_t bufferGeneration_ = 0, graphGeneration_ = 0;
  void* rowInfoHost_ = nullptr;  // pinned staging of the step's RowInfo [rows] and output rows [outRows]
  size_t rowInfoHostBytes_ = 0;
};

void CudaLlama::step(const std::vector<StepItem>& items, const std::vector<int>& startLengths, float* logits,
                     bool allPositions) {
  const LlamaConfig& c = config_;
  W4A8_CHECK_CUDA(cudaSetDevice(options_.device));
  int rows = 0;
  for (const StepItem& item : items) rows += item.count;
  const int outRows = allPositions ? rows : (int)items.size();
  ensureScratch(rows, outRows);

  // The rows' tokens and cache locations, and which rows the logits are wanted of: one copy in.
  RowInfo* info = static_cast<RowInfo*>(rowInfoHost_);
  int* outRowIndex = reinterpret_cast<int*>(info + rows);
  for (size_t i = 0, r = 0; i < items.size(); ++i) {
    const Sequence& seq = sequences_.at(items[i].sequence);
    for (int j = 0; j < items[i].count; ++j, ++r)
      info[r] = RowInfo{items[i].tokens[j], startLengths[i] + j, seq.capacity, 0, seq.keys, seq.values};
    if (!allPositions) outRowIndex[i] = (int)r - 1;
  }
  const size_t infoBytes = (size_t)rows * sizeof(RowInfo) + (allPositions ? 0 : (size_t)outRows * sizeof(int));
  W4A8_CHECK_CUDA(cudaMemcpyAsync(rowInfo_.data, rowInfoHost_, infoBytes, cudaMemcpyHostToDevice, stream_));

  const bool graphable = options_.graphs && !allPositions && rows <= 64;  // decode-like steps
  const int key = rows * 65536 + outRows;
  if (graphable && cuda::scratchGeneration(ctx_) + bufferGeneration_ != graphGeneration_) {
    dropGraphs();  // a buffer moved since the graphs were captured
    graphGeneration_ = cuda::scratchGeneration(ctx_) + bufferGeneration_;
  }
  auto found = graphable ? graphs_.find(key) : graphs_.end();
  if (found != graphs_.end()) {
    W4A8_CHECK_CUDA(cudaGraphLaunch(found->second, stream_));
  } else if (graphable && ++timesSeen_[key] >= 2 && graphs_.size() < 256) {
    // Seen before, so every buffer this step needs exists: capture it (a failure just runs it eagerly).
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    bool captured = false;
    if (cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal) == cudaSuccess) {
      try {
        enqueueForward(rows, outRows, allPositions);
      } catch (const std::exception&) {
      }
      captured = cudaStreamEndCapture(stream_, &graph) == cudaSuccess && graph &&
                 cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
      if (graph) cudaGraphDestroy(graph);
    }
    cudaGetLastError();
    if (captured && cuda::scratchGeneration(ctx_) + bufferGeneration_ == graphGeneration_) {
      graphs_[key] = exec;
      W4A8_CHECK_CUDA(cudaGraphLaunch(exec, stream_));
    } else {
      if (exec) cudaGraphExecDestroy(exec);
      enqueueForward(rows, outRows, allPositions);
    }
  } else {
    enqueueForward(rows, outRows, allPositions);
  }
  W4A8_CHECK_CUDA(cudaMemcpyAsync(logits, logits_.data, (size_t)outRows * c.vocabSize * sizeof(float),
                                  cudaMemcpyDeviceToHost, stream_));
  W4A8_CHECK_CUDA(cudaStreamSynchronize(stream_));
}

// Every kernel of one forward step, on the stream (eagerly, or into a graph being captured).
void CudaLlama::enqueueForward(int rows, int outRows, bool allPositions) {
  const LlamaConfig& c = config_;
  const RowInfo* rowsOnDevice = rowInfo_.as<RowInfo>();
  const int* outRowsOnDevice = allPositions ? nullptr : reinterpret_cast<const int*>(rowsOnDevice + rows);

  float *x = x_.as<float>(), *xb = xb_.as<float>(), *tmp = tmp_.as<float>(), *qkv = qkv_.as<float>(),
        *attn = attn_.as<float>(), *gateUp = gateUp_.as<float>(), *act = act_.as<float>();
  const int dim = c.dim, qDim = c.qDim(), kvDim = c.kvDim(), qkvDim = qDim + 2 * kvDim, hidden = c.hiddenDim;
  float *q = qkv, *k = qkv + qDim, *v = qkv + qDim + kvDim;  // columns of qkv [rows, qkvDim]
  W4A8_CHECK_CUDA(launchEmbed(rowsOnDevice, rows, embedding_, dim, x, stream_));
  for (int l = 0; l < c.nLayers; ++l) {
    const Layer& layer = layers_[l];
    // Attention block (the previous layer's MLP output is added to x by the norm).
    W4A8_CHECK_CUDA(launchRmsNorm(x, l == 0 ? nullptr : tmp, layer.attnNorm, nullptr, rows, dim, c.rmsNormEps, xb, stream_));
    quantizeInput(xb, rows, layer.qkv.inputs, dim, layer.qkv.w.view.cols);
    gemm(layer.qkv, rows, qkv);
    W4A8_CHECK_CUDA(launchRopeAndStore(rowsOnDevice, rows, q, k, v, qkvDim, c.nHeads, c.nKvHeads, c.headDim,
                                       inverseFrequencies_, l, c.kvBf16, stream_));
    W4A8_CHECK_CUDA(launchAttention(rowsOnDevice, rows, q, qkvDim, c.nHeads, c.nKvHeads, c.headDim, l, c.kvBf16, attn,
                                    stream_));
    quantizeInput(attn, rows, layer.o.inputs, qDim, layer.o.w.view.cols);
    gemm(layer.o, rows, tmp);
    // MLP block.
    W4A8_CHECK_CUDA(launchRmsNorm(x, tmp, layer.ffnNorm, nullptr, rows, dim, c.rmsNormEps, xb, stream_));
    quantizeInput(xb, rows, layer.gateUp.inputs, dim, layer.gateUp.w.view.cols);
    gemm(layer.gateUp, rows, gateUp);
    W4A8_CHECK_CUDA(launchSwiGlu(gateUp, rows, hidden, act, stream_));
    quantizeInput(act, rows, layer.down.inputs, hidden, layer.down.w.view.cols);
    gemm(layer.down, rows, tmp);
  }
  W4A8_CHECK_CUDA(launchAdd(x, tmp, (size_t)rows * dim, stream_));
  W4A8_CHECK_CUDA(launchRmsNorm(x, nullptr, finalNorm_, outRowsOnDevice, outRows, dim, c.rmsNormEps, last_.as<float>(), stream_));
  if (lmHead_) {
    W4A8_CHECK_CUDA(launchBf16Gemm(last_.as<float>(), outRows, lmHead_, c.vocabSize, dim, logits_.as<float>(), stream_));
  } else {
    quantizeInput(last_.as<float>(), outRows, dim, dim, lmHeadInt4_.w.view.cols);
    gemm(lmHeadInt4_, outRows, logits_.as<float>());
  }
}

// ---- the plugin's API ------------------------------------------------------------------------------------
CudaDeviceReport probe(int device) {
  CudaDeviceReport report;
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();
    report.reason = std::string("no usable CUDA device (") + cudaGetErrorString(e) + ")";
    return report;
  }
  if (device < 0 || device >= count) {
    report.reason = "no CUDA device " + std::to_string(device) + " (" + std::to_string(count) + " found)";
    return report;
  }
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
    cudaGetLastError();
    report.reason = "cannot query CUDA device " + std::to_string(device);
    return report;
  }
  report.name = prop.name;
  report.computeMajor = prop.major;
  report.computeMinor = prop.minor;
  report.memoryBytes = prop.totalGlobalMem;
  if (prop.major != 9) {
    report.reason = report.name + " is sm_" + std::to_string(prop.major) + std::to_string(prop.minor) +
                    "; the kernels are built for Hopper (sm_90a)";
    return report;
  }
  report.available = true;
  return report;
}

StepBackend* createBackend(const LlamaConfig& config, const LlamaWeights& weights, const CudaBackendOptions& given,
                           std::string* error) {
  CudaBackendOptions options = given;
  if (const char* graphs = std::getenv("W4A8_CUDA_GRAPHS"); graphs && std::string(graphs) == "0") options.graphs = false;
  try {
    return new CudaLlama(config, weights, options);
  } catch (const std::exception& e) {
    if (error) *error = e.what();
    return nullptr;
  }
}

const CudaPluginApi kApi = {kCudaPluginAbi, &probe, &createBackend};

}  // namespace
}  // namespace w4a8::cudamodel

extern "C" __attribute__((visibility("default"))) const w4a8::CudaPluginApi* w4a8_cuda_plugin_api() {
  return &w4a8::cudamodel::kApi;
}
