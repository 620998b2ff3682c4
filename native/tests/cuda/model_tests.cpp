// The GPU decoder step (native/model/cuda, loaded through the plugin as the addon loads it) against the CPU
// step (model/llama.cpp) on small synthetic models, and the decode benchmark of a 7B-shaped model.
//
// Property: for the same packed weights and the same steps (prefill of several sequences with every
// position's logits, decode steps of a batch, a truncated sequence, a freed and re-created one), the GPU's
// logits equal the CPU's up to summation order: every operation is FP32 (or exact FP8 products with FP32
// sums) on both sides, so a row of logits differs by ~1e-6 of its largest value. The exception: where a
// last-bit difference moves an activation across an FP8 rounding boundary (a one-ulp FP8 step, up to 12%
// of that activation), the later layers and the sequence's KV cache carry a difference of a few percent, as
// between the CPU step and the float64 reference (test/runtime.test.ts). So, per case: at least 90% of the
// rows within 1e-4 of their largest logit, every row within 0.08, and the greedy token the same in at least
// 90% of the rows; the numbers are printed.
//
//   w4a8_cuda_tests --model-bench [--json PATH]   decode tokens/s of a Llama-2-7B-shaped model (random
//                                                 packed weights), GPU vs CPU, at batch 1 and 32
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "model/cuda_plugin.h"
#include "model/llama.h"
#include "quant/int4_pack.h"
#include "tests/check.h"

using namespace w4a8;
using w4a8test::Rng;

namespace {

const char* formatName(Fp8Format f) { return f == Fp8Format::E4M3FN ? "e4m3fn" : f == Fp8Format::E4M3 ? "e4m3" : "e5m2"; }

void usePluginOfThisBuild() {
#ifdef W4A8_CUDA_PLUGIN_PATH
  setenv("W4A8_CUDA_PLUGIN", W4A8_CUDA_PLUGIN_PATH, 0);  // the test binary is not beside the plugin
#endif
}

uint16_t toBf16(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  return (uint16_t)((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
}

struct ModelShape {
  int dim, hidden, layers, heads, kvHeads, vocab, maxSeq, groupSize;
  Fp8Format weightFormat, activationFormat;
  bool pow2Scales, qkvBias, tied;
  bool int4Head = false;  // lm_head as a W4A8 layer (a model packed with --lm-head w4a8) instead of BF16
  bool kvBf16 = false;    // BF16 KV caches on both devices
};

// A packed synthetic model: host memory for every weight, and the views LlamaModel takes.
struct SyntheticModel {
  LlamaConfig config;
  LlamaWeights weights;
  std::vector<std::vector<uint8_t>> bytes;
  std::vector<std::vector<float>> floats;
  std::vector<std::vector<uint16_t>> halves;

  const float* floatArray(std::vector<float> v) { floats.push_back(std::move(v)); return floats.back().data(); }
  const uint8_t* byteArray(std::vector<uint8_t> v) { bytes.push_back(std::move(v)); return bytes.back().data(); }
};

// RTN-packed random weights N(0, 1/K)-ish (uniform with that variance): the small models of the tests.
LinearLayer packedLinear(SyntheticModel& m, Rng& rng, const ModelShape& s, int outputs, int inputs, bool bias) {
  const int cols = (inputs + s.groupSize - 1) / s.groupSize * s.groupSize;
  std::vector<float> w((size_t)outputs * cols, 0.0f);
  const float bound = std::sqrt(3.0f / inputs);
  for (int n = 0; n < outputs; ++n)
    for (int k = 0; k < inputs; ++k) w[(size_t)n * cols + k] = rng.uniform(-bound, bound);
  std::vector<uint8_t> codes((size_t)outputs * cols / 2), zeros((size_t)outputs * cols / s.groupSize);
  std::vector<float> groupScales(zeros.size()), channelScales(outputs);
  Int4PackOptions options;
  options.groupSize = s.groupSize;
  options.format = s.weightFormat;
  options.pow2Scales = s.pow2Scales;
  packInt4Rows(w.data(), outputs, cols, options, {codes.data(), groupScales.data(), zeros.data(), channelScales.data()}, 0, outputs);
  LinearLayer l;
  l.outputs = outputs;
  l.inputs = inputs;
  l.w = {m.byteArray(std::move(codes)), m.floatArray(std::move(groupScales)), m.byteArray(std::move(zeros)),
         m.floatArray(std::move(channelScales)), outputs, cols, s.groupSize, s.weightFormat};
  if (bias) {
    std::vector<float> b(outputs);
    for (float& v : b) v = rng.uniform(-0.5f, 0.5f);
    l.bias = m.floatArray(std::move(b));
  }
  return l;
}

// Random INT4 codes and scales straight into the packed layout (no FP32 weights, no packing: fast for 7B
// shapes, whose values only matter for timing). Symmetric zero 8, group scale 16 (|w8| <= 128 fits every
// format), channel scale 1 / (48 sqrt(K)) so a unit input gives outputs of order 1.
LinearLayer randomPackedLinear(SyntheticModel& m, uint64_t seed, const ModelShape& s, int outputs, int inputs) {
  const int cols = (inputs + s.groupSize - 1) / s.groupSize * s.groupSize;
  std::vector<uint8_t> codes((size_t)outputs * cols / 2);
  const unsigned threads = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      Rng rng(seed * 131 + t);
      const size_t words = codes.size() / 8, begin = words * t / threads, end = words * (t + 1) / threads;
      for (size_t i = begin; i < end; ++i) {
        const uint64_t v = rng.next();
        std::memcpy(codes.data() + 8 * i, &v, 8);
      }
    });
  for (auto& th : pool) th.join();
  const size_t groups = (size_t)outputs * cols / s.groupSize;
  LinearLayer l;
  l.outputs = outputs;
  l.inputs = inputs;
  l.w = {m.byteArray(std::move(codes)), m.floatArray(std::vector<float>(groups, 16.0f)),
         m.byteArray(std::vector<uint8_t>(groups, 8)),
         m.floatArray(std::vector<float>(outputs, 1.0f / (48.0f * std::sqrt((float)inputs)))), outputs, cols,
         s.groupSize, s.weightFormat};
  return l;
}

std::unique_ptr<SyntheticModel> makeModel(const ModelShape& s, uint64_t seed, bool randomCodes) {
  auto m = std::make_unique<SyntheticModel>();
  m->bytes.reserve(16 * s.layers + 16);
  m->floats.reserve(16 * s.layers + 16);
  LlamaConfig& c = m->config;
  c.dim = s.dim, c.hiddenDim = s.hidden, c.nLayers = s.layers, c.nHeads = s.heads, c.nKvHeads = s.kvHeads;
  c.headDim = s.dim / s.heads, c.vocabSize = s.vocab, c.maxSeqLen = s.maxSeq, c.activationFormat = s.activationFormat;
  c.kvBf16 = s.kvBf16;
  Rng rng(seed);
  std::vector<uint16_t> embedding((size_t)s.vocab * s.dim), lmHead((size_t)s.vocab * s.dim);
  for (uint16_t& v : embedding) v = toBf16(rng.uniform(-1.0f, 1.0f));
  const float headBound = std::sqrt(3.0f / s.dim);
  for (uint16_t& v : lmHead) v = toBf16(rng.uniform(-headBound, headBound));
  m->halves.push_back(std::move(embedding));
  m->weights.embedding = m->halves.back().data();
  if (s.int4Head) {
    // Filled below, after the decoder layers' random draws, so that the other weights stay as they were.
  } else if (s.tied) {
    m->weights.lmHead = m->weights.embedding;
  } else {
    m->halves.push_back(std::move(lmHead));
    m->weights.lmHead = m->halves.back().data();
  }
  auto norm = [&] {
    std::vector<float> w(s.dim);
    for (float& v : w) v = rng.uniform(0.5f, 1.5f);
    return m->floatArray(std::move(w));
  };
  m->weights.finalNorm = norm();
  for (int l = 0; l < s.layers; ++l) {
    DecoderLayer d;
    d.attnNorm = norm();
    d.ffnNorm = norm();
    const int kvDim = s.kvHeads * (s.dim / s.heads);
    uint64_t layerSeed = seed * 1000 + l * 16;
    auto linear = [&](int outputs, int inputs, bool bias) {
      return randomCodes ? randomPackedLinear(*m, ++layerSeed, s, outputs, inputs) : packedLinear(*m, rng, s, outputs, inputs, bias);
    };
    d.q = linear(s.dim, s.dim, s.qkvBias);
    d.k = linear(kvDim, s.dim, s.qkvBias);
    d.v = linear(kvDim, s.dim, s.qkvBias);
    d.o = linear(s.dim, s.dim, false);
    d.gate = linear(s.hidden, s.dim, false);
    d.up = linear(s.hidden, s.dim, false);
    d.down = linear(s.dim, s.hidden, false);
    m->weights.layers.push_back(d);
  }
  if (s.int4Head)
    m->weights.lmHeadInt4 = randomCodes ? randomPackedLinear(*m, seed * 1000 + 999, s, s.vocab, s.dim)
                                        : packedLinear(*m, rng, s, s.vocab, s.dim, false);
  return m;
}

// Per row: largest |gpu - cpu| relative to the row's largest |cpu|, and whether the argmax agrees.
struct Comparison {
  double worst = 0;
  int rows = 0, tightRows = 0;  // rows, and rows within 1e-4
  int argmaxMismatches = 0;
};

void compareRows(const std::vector<float>& cpu, const std::vector<float>& gpu, int rows, int vocab, Comparison& c) {
  for (int r = 0; r < rows; ++r) {
    const float* a = cpu.data() + (size_t)r * vocab;
    const float* b = gpu.data() + (size_t)r * vocab;
    double scale = 1e-30, diff = 0;
    int bestA = 0, bestB = 0;
    for (int i = 0; i < vocab; ++i) {
      scale = std::max(scale, (double)std::fabs(a[i]));
      diff = std::max(diff, std::fabs((double)a[i] - b[i]));
      if (!(diff == diff)) diff = INFINITY;
      if (a[i] > a[bestA]) bestA = i;
      if (b[i] > b[bestB]) bestB = i;
    }
    c.worst = std::max(c.worst, diff / scale);
    ++c.rows;
    if (diff / scale <= 1e-4) ++c.tightRows;
    // A tie broken differently is no mismatch: the two maxima must be within the tolerance.
    if (bestA != bestB && std::fabs(a[bestA] - a[bestB]) > 1e-4 * scale) ++c.argmaxMismatches;
  }
}

// Both models through the same steps; returns the comparison over every logit of every step.
Comparison runBoth(const ModelShape& shape, uint64_t seed, const CudaBackendOptions& options, int longPrefill) {
  auto m = makeModel(shape, seed, false);
  LlamaModel cpu(m->config, m->weights), gpu(m->config, m->weights);
  gpu.setBackend(createCudaBackend(m->config, m->weights, options));
  const int V = shape.vocab;
  Rng rng(seed ^ 0x5eed);
  Comparison result;
  auto step = [&](const std::vector<int>& cpuIds, const std::vector<int>& gpuIds, const std::vector<int>& counts, bool all) {
    std::vector<std::vector<int32_t>> tokens(counts.size());
    std::vector<StepItem> cpuItems, gpuItems;
    int rows = 0;
    for (size_t i = 0; i < counts.size(); ++i) {
      for (int j = 0; j < counts[i]; ++j) tokens[i].push_back(rng.below(V));
      cpuItems.push_back({cpuIds[i], tokens[i].data(), counts[i]});
      gpuItems.push_back({gpuIds[i], tokens[i].data(), counts[i]});
      rows += counts[i];
    }
    const int outRows = all ? rows : (int)counts.size();
    std::vector<float> a((size_t)outRows * V), b((size_t)outRows * V, NAN);
    cpu.step(cpuItems, a.data(), all);
    gpu.step(gpuItems, b.data(), all);
    compareRows(a, b, outRows, V, result);
  };
  std::vector<int> cpuIds, gpuIds;
  for (int capacity : {64, 40, 96}) cpuIds.push_back(cpu.createSequence(capacity)), gpuIds.push_back(gpu.createSequence(capacity));
  step(cpuIds, gpuIds, {5, 1, 17}, true);  // prefill, logits of every position
  for (int i = 0; i < 6; ++i) step(cpuIds, gpuIds, {1, 1, 1}, false);  // decode steps of the batch
  cpu.truncateSequence(cpuIds[0], 2), gpu.truncateSequence(gpuIds[0], 2);
  step({cpuIds[0], cpuIds[2]}, {gpuIds[0], gpuIds[2]}, {3, 2}, false);  // a rewound sequence and a chunk
  cpu.freeSequence(cpuIds[1]), gpu.freeSequence(gpuIds[1]);
  cpuIds[1] = cpu.createSequence(32), gpuIds[1] = gpu.createSequence(32);
  step(cpuIds, gpuIds, {1, 4, 1}, false);
  if (longPrefill > 0) {  // more than 64 rows: the prefill GEMM path
    const int c = cpu.createSequence(longPrefill + 1), g = gpu.createSequence(longPrefill + 1);
    step({c}, {g}, {longPrefill}, true);
  }
  return result;
}

#define REQUIRE_GPU()          \
  do {                         \
    if (!haveGpu()) {          \
      CHECK(false, "no GPU");  \
      return;                  \
    }                          \
  } while (0)

bool haveGpu() {
  usePluginOfThisBuild();
  const CudaDeviceReport r = probeCudaDevice();
  if (!r.available) std::printf("    no GPU through the plugin: %s\n", r.reason.c_str());
  return r.available;
}

void checkCase(const char* label, const ModelShape& shape, uint64_t seed, bool fastPrefill, int longPrefill,
               double bound, double tightFraction = 0.9, double mismatchFraction = 0.1) {
  CudaBackendOptions options;
  options.fastPrefill = fastPrefill;
  try {
    const Comparison c = runBoth(shape, seed, options, longPrefill);
    std::printf("    %s (w=%s x=%s G=%d seed=%llu): %d/%d rows within 1e-4, largest |gpu - cpu| = %.3g of the row's "
                "largest logit, %d argmax mismatches\n",
                label, formatName(shape.weightFormat), formatName(shape.activationFormat), shape.groupSize,
                (unsigned long long)seed, c.tightRows, c.rows, c.worst, c.argmaxMismatches);
    CHECK(c.worst <= bound, "%s: %.3g > %.3g", label, c.worst, bound);
    CHECK(c.tightRows >= tightFraction * c.rows, "%s: only %d of %d rows within 1e-4", label, c.tightRows, c.rows);
    CHECK(c.argmaxMismatches <= mismatchFraction * c.rows, "%s: %d rows pick another token", label, c.argmaxMismatches);
  } catch (const std::exception& e) {
    CHECK(false, "%s: %s", label, e.what());
  }
}

// dim 256 (8 heads of 32 over 2 KV heads), MLP 688 (not a multiple of any group size: padded K), 3 layers.
const ModelShape kSmall = {256, 688, 3, 8, 2, 301, 128, 128, Fp8Format::E4M3FN, Fp8Format::E4M3FN, false, false, false};

}  // namespace

TEST(gpu_decoder_step_matches_cpu_e4m3fn) {
  REQUIRE_GPU();
  checkCase("e4m3fn, G=128", kSmall, 11, false, 0, 0.08);
}

TEST(gpu_decoder_step_matches_cpu_e4m3_gaudi2_with_bias_tied_head64) {
  REQUIRE_GPU();
  ModelShape s = kSmall;
  s.weightFormat = s.activationFormat = Fp8Format::E4M3;
  s.groupSize = 64, s.pow2Scales = true, s.qkvBias = true, s.tied = true;
  s.heads = 4, s.kvHeads = 1;  // headDim 64, 4 query heads per KV head
  checkCase("e4m3, pow2 scales, qkv bias, tied lm_head", s, 12, false, 0, 0.08);
}

// Power-of-two group scales at G = 128: every group linear, so steps of up to 8 tokens run the integer GEMV on
// activations the quantization made (gemv_int8.cu).
TEST(gpu_decoder_step_matches_cpu_pow2_integer_gemv) {
  REQUIRE_GPU();
  ModelShape s = kSmall;
  s.pow2Scales = true;
  checkCase("e4m3fn, G=128, pow2 scales (integer GEMV)", s, 15, false, 0, 0.08);
}

// The decoder layers of the e4m3fn case above (the lm_head's weights are drawn after them), whose hidden states
// agree to ~1e-6: the W4A8 lm_head's input is quantized to FP8 again, which would turn any FP8 rounding that
// differs upstream into a logit difference of a few percent (seed 14 with G = 64 has such rows with either
// lm_head), so this case keeps the tight upstream model to test the lm_head itself.
TEST(gpu_decoder_step_matches_cpu_with_w4a8_lm_head) {
  REQUIRE_GPU();
  ModelShape s = kSmall;
  s.int4Head = true;
  checkCase("e4m3fn, G=128, W4A8 lm_head", s, 11, false, 0, 0.08);
}

// Both devices round keys and values to BF16 the same way (H200: 46/46 rows within 1e-4, 4.8e-7 at most; a key
// that differed in its last FP32 bit could round to a neighbouring BF16 value, hence the usual bounds).
TEST(gpu_decoder_step_matches_cpu_with_bf16_kv_caches) {
  REQUIRE_GPU();
  ModelShape s = kSmall;
  s.kvBf16 = true;
  checkCase("e4m3fn, G=128, BF16 KV caches", s, 11, false, 0, 0.08);
}

TEST(gpu_decoder_step_matches_cpu_e5m2_weights_headdim_128) {
  REQUIRE_GPU();
  ModelShape s = kSmall;
  s.weightFormat = Fp8Format::E5M2, s.groupSize = 32, s.heads = 2, s.kvHeads = 2;
  checkCase("e5m2 weights x e4m3fn activations, headDim 128", s, 13, false, 0, 0.08);
}

TEST(gpu_prefill_over_64_rows_matches_cpu) {
  REQUIRE_GPU();
  // The default: the fused GEMM for every M, FP32 sums, the same bounds.
  checkCase("100-token prefill, fused GEMM", kSmall, 14, false, 100, 0.08);
}

TEST(gpu_fast_prefill_stays_near_cpu) {
  REQUIRE_GPU();
  // fastPrefill: cuBLASLt's FP8 GEMM above 64 tokens (when built in), FP8 tensor-core sums (~2^-7 of
  // sum|x8 w8| per GEMM at worst), so no row need be within 1e-4, and on this random model (flat logits)
  // the greedy token may differ: measured, bounded loosely (0.15 of the largest logit, 20% of the rows).
  checkCase("100-token prefill, fastPrefill", kSmall, 14, true, 100, 0.15, 0.0, 0.2);
}

TEST(gpu_backend_rejects_fp32_reference_models) {
  REQUIRE_GPU();
  auto m = makeModel(kSmall, 15, false);
  std::vector<float> embedding((size_t)kSmall.vocab * kSmall.dim, 0.0f);
  m->weights.embedding = nullptr;
  m->weights.embeddingF32 = embedding.data();
  bool threw = false;
  try {
    createCudaBackend(m->config, m->weights);
  } catch (const std::exception& e) {
    threw = true;
    std::printf("    %s\n", e.what());
  }
  CHECK(threw, "an FP32 model must be refused");
}

// ---- the decode benchmark ----------------------------------------------------------------------------------
namespace w4a8::cuda {

int runModelBench(const char* jsonPath, int layers, bool withCpu, const char* batchList) {
  usePluginOfThisBuild();
  const CudaDeviceReport report = probeCudaDevice();
  if (!report.available) {
    std::printf("model bench: %s\n", report.reason.c_str());
    return 1;
  }
  // Llama-2-7B: dim 4096, MLP 11008, 32 heads (no GQA), vocab 32000; random packed weights, G = 128, e4m3fn.
  const ModelShape shape = {4096, 11008, layers, 32, 32, 32000, 4096, 128, Fp8Format::E4M3FN, Fp8Format::E4M3FN, false, false, false};
  auto start = std::chrono::steady_clock::now();
  auto m = makeModel(shape, 7, true);
  auto seconds = [](auto a) { return std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count(); };
  size_t weightBytes = (size_t)shape.vocab * shape.dim * 2 * 2;
  for (const DecoderLayer& d : m->weights.layers)
    for (const LinearLayer* l : {&d.q, &d.k, &d.v, &d.o, &d.gate, &d.up, &d.down})
      weightBytes += (size_t)l->w.rows * l->w.cols / 2 + (size_t)l->w.rows * l->w.groups() * 5 + l->w.rows * 4;
  std::printf("model: Llama-2-7B shapes, %d layers, %.2f GB packed (built in %.1f s)\n", layers, weightBytes / 1e9, seconds(start));
  std::printf("GPU: %s\n", report.name.c_str());

  struct Row { const char* device; int batch; int context; double tokensPerSecond; double msPerStep; };
  std::vector<Row> results;
  const int prompt = 16;  // each sequence: a 16-token prompt, then decode steps
  auto measure = [&](LlamaModel& model, const char* device, int batch, int steps) {
    std::vector<int> ids;
    for (int b = 0; b < batch; ++b) ids.push_back(model.createSequence(prompt + steps + 8));
    Rng rng(batch);
    std::vector<int32_t> tokens((size_t)batch * prompt);
    for (int32_t& t : tokens) t = rng.below(shape.vocab);
    std::vector<float> logits((size_t)batch * shape.vocab);
    for (int b = 0; b < batch; ++b) {  // prefill, one sequence at a time
      StepItem item{ids[b], tokens.data() + (size_t)b * prompt, prompt};
      model.step({item}, logits.data());
    }
    std::vector<StepItem> items(batch);
    std::vector<int32_t> next(batch);
    auto decode = [&] {
      for (int b = 0; b < batch; ++b) next[b] = rng.below(shape.vocab), items[b] = {ids[b], &next[b], 1};
      model.step(items, logits.data());
    };
    decode();  // warm-up (scratch allocation)
    const auto t0 = std::chrono::steady_clock::now();
    for (int s = 0; s < steps; ++s) decode();
    const double elapsed = seconds(t0);
    results.push_back({device, batch, prompt + 1 + steps / 2, batch * steps / elapsed, 1e3 * elapsed / steps});
    std::printf("  %-10s batch %3d: %9.1f tokens/s  (%8.2f ms/step, context ~%d)\n", device, batch,
                results.back().tokensPerSecond, results.back().msPerStep, results.back().context);
    std::fflush(stdout);
    for (int id : ids) model.freeSequence(id);
  };
  for (bool graphs : {true, false}) {
    LlamaModel gpu(m->config, m->weights);
    CudaBackendOptions options;
    options.graphs = graphs;
    start = std::chrono::steady_clock::now();
    gpu.setBackend(createCudaBackend(m->config, m->weights, options));
    std::printf("  upload to the GPU: %.2f s\n", seconds(start));
    for (const char* b = batchList; *b;) {
      measure(gpu, graphs ? "cuda" : "cuda-eager", std::atoi(b), 64);
      while (*b && *b != ',') ++b;
      if (*b == ',') ++b;
    }
  }
  if (withCpu) {
    LlamaModel cpu(m->config, m->weights);
    for (int batch : {1, 32}) measure(cpu, "cpu", batch, batch == 1 ? 8 : 3);
  }
  if (jsonPath) {
    FILE* f = std::fopen(jsonPath, "w");
    if (f) {
      std::fprintf(f, "{\"model\":\"llama2-7b-shapes\",\"layers\":%d,\"weightBytes\":%zu,\"gpu\":\"%s\",\"results\":[", layers,
                   weightBytes, report.name.c_str());
      for (size_t i = 0; i < results.size(); ++i)
        std::fprintf(f, "%s{\"device\":\"%s\",\"batch\":%d,\"context\":%d,\"tokensPerSecond\":%.2f,\"msPerStep\":%.3f}",
                     i ? "," : "", results[i].device, results[i].batch, results[i].context, results[i].tokensPerSecond,
                     results[i].msPerStep);
      std::fprintf(f, "]}\n");
      std::fclose(f);
    }
  }
  return 0;
}

}  // namespace w4a8::cuda
