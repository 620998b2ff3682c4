// Standalone tests of the CUDA backend against the CPU reference kernels (no Node needed), and the entry
// of its benchmark.
//
//   w4a8_cuda_tests [--small] [name-substring]   tests; --small: only small shapes (for compute-sanitizer)
//   w4a8_cuda_tests --bench [--json PATH]        the benchmark table (cuda_bench.cu)
//   w4a8_cuda_tests --model-bench [--layers N] [--batches 1,8,32,64] [--no-cpu] [--json PATH]   7B-shaped decode, GPU vs CPU (model_tests.cpp)
//
// Properties checked, on seeded random inputs (the seed is printed with each failure), odd shapes and every
// FP8 format:
//   - conversions are bit-exact: the hardware FP32 -> FP8 path, activation quantization, INT4 -> FP8 (up to
//     the sign of a NaN made by an invalid operation such as inf * 0, which IEEE 754 leaves to the platform);
//   - the decode GEMM with FP16 MMAs (exact products, FP32 accumulation) is within FP32 summation tolerance
//     of the reference: |y - y_ref| <= 1e-5 * s_x * s_c * sum_k |x8 * w8|, for FP32 and BF16 outputs (BF16:
//     plus half a BF16 ulp), for any split of K, deterministically;
//   - the FP8-MMA paths (fused FP8 MMA, cuBLASLt prefill, W8A8) are within the bound of Hopper's FP8 tensor
//     cores (sums of 32 products aligned to ~14 bits, DESIGN.md §1 would need FP32): 2^-7 * s_x * s_c * sum|.|;
//     the largest error seen is printed as a fraction of that sum;
//   - every output element is written and nothing past N in a padded row is touched;
//   - misuse returns InvalidArgument / Unsupported with a message.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/kernels.h"
#include "quant/int4_pack.h"
#include "tests/check.h"

namespace w4a8test {
std::vector<TestCase>& registry() {
  static std::vector<TestCase> tests;
  return tests;
}
int currentFailures = 0;
}  // namespace w4a8test

namespace w4a8::cuda {
int runBench(Context* ctx, const char* jsonPath);  // cuda_bench.cu
int runModelBench(const char* jsonPath, int layers, bool cpu, const char* batches);  // model_tests.cpp
}

using namespace w4a8;
using namespace w4a8::cuda;
using w4a8test::Rng;

namespace {

Context* gCtx = nullptr;
bool gSmall = false;
const Fp8Format kFormats[] = {Fp8Format::E4M3FN, Fp8Format::E4M3, Fp8Format::E5M2};
const char* formatName(Fp8Format f) { return f == Fp8Format::E4M3FN ? "e4m3fn" : f == Fp8Format::E4M3 ? "e4m3" : "e5m2"; }

// Bit-exact, except for the sign of a NaN that an invalid operation made (inf * 0, inf / inf): IEEE 754 leaves
// it open, x86 makes it negative (0xFFC00000, so the reference encodes 0xFF), CUDA positive (0x7F).
// *nanSignOnly counts the codes that differ only that way.
bool sameCode(uint8_t got, uint8_t want, int* nanSignOnly) {
  if (got == want) return true;
  if ((got & 0x7F) == 0x7F && (want & 0x7F) == 0x7F) {
    ++*nanSignOnly;
    return true;
  }
  return false;
}

#define CUDA_OK(call)                                                                              \
  do {                                                                                             \
    const Status s_ = (call);                                                                      \
    CHECK(s_ == Status::Ok, "%s -> %s: %s", #call, statusName(s_), lastError(gCtx));               \
  } while (0)

// A device array that frees itself.
template <typename T>
struct DeviceArray {
  T* ptr = nullptr;
  size_t count = 0;
  explicit DeviceArray(size_t n) : count(n) {
    void* p = nullptr;
    if (deviceAlloc(gCtx, &p, n * sizeof(T)) == Status::Ok) ptr = static_cast<T*>(p);
  }
  explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) {
    if (ptr && !host.empty()) copyToDevice(gCtx, ptr, host.data(), host.size() * sizeof(T));
  }
  ~DeviceArray() { deviceFree(ptr); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  std::vector<T> download() const {
    std::vector<T> host(count);
    if (count) copyToHost(gCtx, host.data(), ptr, count * sizeof(T));
    return host;
  }
};

// ---- layers ---------------------------------------------------------------------------------------------
struct Layer {
  int M, N, K, G;
  Fp8Format wFormat, aFormat;
  std::vector<uint8_t> codes, zeros, x8;
  std::vector<float> groupScales, channelScales, xScales;
  Int4WeightsView view;  // host pointers
};

Layer makeLayer(uint64_t seed, int M, int N, int K, int G, Fp8Format wFormat, Fp8Format aFormat, bool pow2,
                bool symmetric = false) {
  Rng rng(seed);
  Layer l;
  l.M = M, l.N = N, l.K = K, l.G = G, l.wFormat = wFormat, l.aFormat = aFormat;
  std::vector<float> w((size_t)N * K), x((size_t)M * K);
  for (float& v : w) v = rng.uniform(-0.2f, 0.2f);
  for (float& v : x) v = rng.uniform(-3.0f, 3.0f);
  l.codes.resize((size_t)N * K / 2);
  l.zeros.resize((size_t)N * K / G);
  l.groupScales.resize((size_t)N * K / G);
  l.channelScales.resize(N);
  Int4PackOptions options;
  options.groupSize = G;
  options.format = wFormat;
  options.pow2Scales = pow2;
  options.symmetric = symmetric;
  packInt4Rows(w.data(), N, K, options, {l.codes.data(), l.groupScales.data(), l.zeros.data(), l.channelScales.data()},
               0, N);
  l.view = {l.codes.data(), l.groupScales.data(), l.zeros.data(), l.channelScales.data(), N, K, G, wFormat};
  l.x8.resize((size_t)M * K);
  l.xScales.resize(M);
  quantizeActivationsDynamic(x.data(), M, K, aFormat, l.x8.data(), l.xScales.data());
  return l;
}

// The reference output and, per element, the bound's scale s_x * s_c * sum_k |x8 * w8| (float64).
struct Reference {
  std::vector<float> y;
  std::vector<double> magnitude;
};

Reference reference(const Layer& l) {
  Reference r;
  r.y.resize((size_t)l.M * l.N);
  reference::gemmW4A8({l.x8.data(), l.xScales.data(), l.aFormat, l.M, l.view, {r.y.data(), nullptr, l.N}}, 0, l.N);
  std::vector<uint8_t> w8((size_t)l.N * l.K);
  dequantInt4ToFp8(l.view, w8.data(), 0, l.N);
  const float* wTable = fp8DecodeTable(l.wFormat);
  const float* xTable = fp8DecodeTable(l.aFormat);
  r.magnitude.resize((size_t)l.M * l.N);
  for (int m = 0; m < l.M; ++m)
    for (int n = 0; n < l.N; ++n) {
      double sum = 0;
      const uint8_t* xr = l.x8.data() + (size_t)m * l.K;
      const uint8_t* wr = w8.data() + (size_t)n * l.K;
      for (int k = 0; k < l.K; ++k) sum += std::fabs((double)xTable[xr[k]] * wTable[wr[k]]);
      r.magnitude[(size_t)m * l.N + n] = (double)l.xScales[m] * l.channelScales[n] * sum;
    }
  return r;
}

struct DeviceLayer {
  DeviceInt4Weights w{};
  DeviceArray<uint8_t> x8;
  DeviceArray<float> xScales;
  explicit DeviceLayer(const Layer& l) : x8(l.x8), xScales(l.xScales) {
    const Status s = uploadInt4Weights(gCtx, l.view, &w);
    CHECK(s == Status::Ok, "upload: %s", lastError(gCtx));
  }
  ~DeviceLayer() { freeInt4Weights(&w); }
};

// Runs one GEMM into a poisoned output (0xFF bytes: NaN) with padded rows and checks it against the reference.
// Returns the largest |y - y_ref| / magnitude seen (FP32 output), or -1 when the call was not Ok.
double checkGemm(const Layer& l, const Reference& ref, const DeviceLayer& d, bool bf16, double tolerance,
                 const GemmOptions& options, const uint8_t* fp8Weights, const char* what, Status* statusOut = nullptr,
                 std::vector<uint32_t>* bitsOut = nullptr) {
  const int ldy = l.N + (bf16 ? 0 : 3);
  const size_t elementBytes = bf16 ? 2 : 4, count = (size_t)l.M * ldy;
  DeviceArray<uint8_t> y(count * elementBytes);
  fillDevice(gCtx, y.ptr, 0xFF, count * elementBytes);
  GemmOutput out{bf16 ? nullptr : reinterpret_cast<float*>(y.ptr), bf16 ? reinterpret_cast<uint16_t*>(y.ptr) : nullptr,
                 ldy};
  W4A8GemmArgs args{d.x8.ptr, d.xScales.ptr, l.aFormat, l.M, d.w.view, out};
  const Status s = gemmW4A8(gCtx, args, fp8Weights, options);
  if (statusOut) *statusOut = s;
  if (s != Status::Ok) return -1;
  CUDA_OK(synchronize(gCtx));
  const std::vector<uint8_t> raw = y.download();
  double worst = 0;
  int bad = 0, unwritten = 0, padTouched = 0;
  for (int m = 0; m < l.M; ++m)
    for (int n = 0; n < ldy; ++n) {
      const size_t index = (size_t)m * ldy + n;
      uint32_t bits;
      float got;
      if (bf16) {
        uint16_t h;
        std::memcpy(&h, raw.data() + 2 * index, 2);
        bits = h;
        got = bf16ToFloat(h);
      } else {
        std::memcpy(&bits, raw.data() + 4 * index, 4);
        got = bitsFloat(bits);
      }
      if (n >= l.N) {
        padTouched += bits != (bf16 ? 0xFFFFu : 0xFFFFFFFFu);
        continue;
      }
      if (bitsOut) bitsOut->push_back(bits);
      const float want = ref.y[(size_t)m * l.N + n];
      if (std::isnan(got)) {
        ++unwritten;
        continue;
      }
      const double magnitude = ref.magnitude[(size_t)m * l.N + n];
      const double error = std::fabs((double)got - want);
      const double bound = tolerance * magnitude + (bf16 ? std::ldexp(std::fabs((double)want), -8) : 0.0) + 1e-30;
      if (error > bound) {
        if (++bad <= 3)
          std::fprintf(stderr, "    %s: m=%d n=%d got %.9g want %.9g (|err| %.3g > bound %.3g)\n", what, m, n, got, want,
                       error, bound);
      }
      if (!bf16 && magnitude > 0) worst = std::max(worst, error / magnitude);
    }
  CHECK(bad == 0, "%s: %d elements outside the bound", what, bad);
  CHECK(unwritten == 0, "%s: %d elements not written (still NaN)", what, unwritten);
  CHECK(padTouched == 0, "%s: %d padding elements past N were written", what, padTouched);
  return worst;
}

// checkGemm twice with the same options: both within the bound and bit for bit the same.
void checkDeterministic(const Layer& l, const Reference& ref, const DeviceLayer& d, const GemmOptions& options,
                        const std::string& what) {
  std::vector<uint32_t> first, second;
  checkGemm(l, ref, d, false, 1e-5, options, nullptr, what.c_str(), nullptr, &first);
  checkGemm(l, ref, d, false, 1e-5, options, nullptr, what.c_str(), nullptr, &second);
  CHECK(first == second, "%s: two runs differ", what.c_str());
}

std::string describe(const Layer& l, bool pow2, uint64_t seed) {
  char text[200];
  std::snprintf(text, sizeof(text), "seed=%llu M=%d N=%d K=%d G=%d w=%s x=%s %s", (unsigned long long)seed, l.M, l.N,
                l.K, l.G, formatName(l.wFormat), formatName(l.aFormat), pow2 ? "pow2" : "float");
  return text;
}

struct Shape {
  int M, N, G, groupsPerRow;
};
std::vector<Shape> gemmShapes() {
  if (gSmall) return {{1, 7, 32, 1}, {3, 33, 64, 3}, {17, 9, 128, 1}};
  return {{1, 1, 32, 1},    {1, 257, 128, 3}, {3, 7, 64, 3},    {16, 129, 128, 1},
          {17, 33, 32, 3},  {64, 131, 128, 3}, {257, 65, 64, 1}, {40, 17, 32, 1}};
}

// ---- tests ----------------------------------------------------------------------------------------------

TEST(device_is_a_hopper_gpu) {
  DeviceInfo info{};
  CHECK(deviceAvailable(&info), "no CUDA device");
  std::printf("    device: %s, sm_%d%d, %d SMs, %.1f GiB, L2 %d MiB, cuBLASLt %s\n", info.name, info.computeMajor,
              info.computeMinor, info.multiprocessors, info.globalMemoryBytes / 1073741824.0, info.l2CacheBytes >> 20,
              info.cublasLt ? "yes" : "no");
  CHECK(info.computeMajor >= 9, "sm_%d%d: the kernels need sm_90", info.computeMajor, info.computeMinor);
}

TEST(hardware_fp8_conversion_is_bit_exact_with_fp8Encode) {
  for (Fp8Format f : kFormats) {
    std::vector<float> in;
    // Every code's value, the midpoints between neighbours (ties) and one FP32 ulp either side of them.
    for (int code = 0; code < 256; ++code) {
      const float v = fp8Decode((uint8_t)code, f), next = fp8Decode((uint8_t)(code + 1), f);
      if (std::isnan(v)) continue;
      in.push_back(v);
      if (!std::isfinite(next) || (code & 0x7F) == 0x7F || std::signbit(next) != std::signbit(v)) continue;
      const float mid = (float)(((double)v + next) / 2);
      in.push_back(mid);
      in.push_back(std::nextafter(mid, 0.0f));
      in.push_back(std::nextafter(mid, 2 * mid));
    }
    const float specials[] = {0.0f, -0.0f, 1e-45f, -1e-45f, 1e-38f, 1e-30f, 3.0e38f, -3.4e38f, 1e30f, 500.0f, -500.0f,
                              240.0f, 248.0f, 249.0f, 448.0f, 464.0f, 465.0f, 57344.0f, 61440.0f, 61441.0f, -61439.0f,
                              INFINITY, -INFINITY, NAN, -NAN};
    in.insert(in.end(), std::begin(specials), std::end(specials));
    Rng rng(77 + (int)f);
    const size_t randomCount = gSmall ? 4096 : 1 << 21;
    for (size_t i = 0; i < randomCount; ++i) {
      uint32_t bits = (uint32_t)rng.next();
      if (i & 1) bits = (bits & 0x80000000u) | ((bits & 0x07FFFFFFu) + (0x3Cu << 23));  // near the FP8 range
      in.push_back(bitsFloat(bits));
    }
    DeviceArray<float> dIn(in);
    DeviceArray<uint8_t> dOut(in.size());
    CUDA_OK(encodeFp8ForTest(gCtx, dIn.ptr, dOut.ptr, in.size(), f));
    CUDA_OK(synchronize(gCtx));
    const std::vector<uint8_t> got = dOut.download();
    int bad = 0;
    for (size_t i = 0; i < in.size(); ++i) {
      const uint8_t want = fp8Encode(in[i], f);
      if (got[i] != want && ++bad <= 5)
        std::fprintf(stderr, "    %s: fp8(%a) = 0x%02x, want 0x%02x\n", formatName(f), in[i], got[i], want);
    }
    CHECK(bad == 0, "%s: %d of %zu conversions differ", formatName(f), bad, in.size());
  }
}

std::vector<float> activationRows(uint64_t seed, int M, int K) {
  Rng rng(seed);
  std::vector<float> x((size_t)M * K);
  for (int m = 0; m < M; ++m) {
    const float magnitude = std::ldexp(1.0f, rng.below(60) - 30);  // 2^-30 .. 2^29
    for (int k = 0; k < K; ++k) x[(size_t)m * K + k] = magnitude * rng.uniform(-1.0f, 1.0f);
  }
  if (M > 1) std::fill(x.begin() + K, x.begin() + 2 * K, 0.0f);  // all-zero row: s_x = 1
  if (M > 2) x[2 * (size_t)K + K / 2] = NAN;                        // NaN is ignored by amax, stays NaN
  if (M > 3) x[3 * (size_t)K] = INFINITY;                           // amax = inf
  if (M > 4) x[4 * (size_t)K + 1] = 1e-42f;                         // denormal input
  return x;
}

TEST(activation_quantization_is_bit_exact) {
  const int shapes[][2] = {{1, 32}, {3, 96}, {17, 1000}, {64, 4128}};
  int nanSignOnly = 0;
  for (Fp8Format f : kFormats)
    for (const auto& shape : shapes) {
      const int M = shape[0], K = shape[1];
      if (gSmall && M > 17) continue;
      const uint64_t seed = 1000 + M * 7 + K + (int)f;
      const std::vector<float> x = activationRows(seed, M, K);
      std::vector<uint8_t> want8((size_t)M * K), wantStatic8((size_t)M * K);
      std::vector<float> wantScales(M), wantStaticScales(M);
      quantizeActivationsDynamic(x.data(), M, K, f, want8.data(), wantScales.data());
      quantizeActivationsStatic(x.data(), M, K, 0.0173f, f, wantStatic8.data(), wantStaticScales.data());
      DeviceArray<float> dx(x);
      DeviceArray<uint8_t> d8((size_t)M * K);
      DeviceArray<float> dScales(M);
      auto compare = [&](const std::vector<uint8_t>& got, const std::vector<uint8_t>& want, const char* kind) {
        int bad = 0;
        for (size_t i = 0; i < got.size(); ++i)
          if (!sameCode(got[i], want[i], &nanSignOnly) && ++bad <= 3)
            std::fprintf(stderr, "    %s %s: x[%zu] = %a -> 0x%02x, want 0x%02x\n", kind, formatName(f), i, x[i], got[i],
                         want[i]);
        CHECK(bad == 0, "%s %s seed=%llu M=%d K=%d: %d codes differ", kind, formatName(f), (unsigned long long)seed, M, K,
              bad);
      };
      CUDA_OK(cuda::quantizeActivationsDynamic(gCtx, dx.ptr, M, K, f, d8.ptr, dScales.ptr));
      CUDA_OK(synchronize(gCtx));
      compare(d8.download(), want8, "dynamic");
      const std::vector<float> gotScales = dScales.download();
      CHECK(std::memcmp(gotScales.data(), wantScales.data(), M * sizeof(float)) == 0, "dynamic %s M=%d K=%d: scales differ",
            formatName(f), M, K);
      CUDA_OK(cuda::quantizeActivationsStatic(gCtx, dx.ptr, M, K, 0.0173f, f, d8.ptr, dScales.ptr));
      CUDA_OK(synchronize(gCtx));
      compare(d8.download(), wantStatic8, "static");
      const std::vector<float> gotStatic = dScales.download();
      CHECK(std::memcmp(gotStatic.data(), wantStaticScales.data(), M * sizeof(float)) == 0, "static scales differ");
    }
  std::printf("    %d codes equal up to the sign of a NaN made by inf / inf\n", nanSignOnly);
}

TEST(int4_to_fp8_dequantization_is_bit_exact) {
  const float edgeScales[] = {0.0f, -0.0f, 1e-30f, 1e-45f, -3.5f, 0x1p-10f, 448.0f / 7, 240.0f / 7.5f, 57344.0f / 7,
                              0x1p-20f, 1e30f, 3e38f, 0x1p118f, 0x1p119f, INFINITY, -INFINITY, NAN, 0.3f, 1.0f / 3};
  int caseIndex = 0, nanSignOnly = 0;
  for (Fp8Format f : kFormats)
    for (int G : {32, 64, 128})
      for (int pow2 = 0; pow2 < 2; ++pow2) {
        const int N = gSmall ? 5 : 37, K = G * (1 + caseIndex % 3);
        const uint64_t seed = 300 + caseIndex++;
        Layer l = makeLayer(seed, 1, N, K, G, f, f, pow2 != 0, caseIndex % 2 == 0);
        Rng rng(seed);
        // Edge scales in some groups, and arbitrary zero points (0..15) in others.
        for (size_t i = 0; i < l.groupScales.size(); i += 3) l.groupScales[i] = edgeScales[rng.below(19)];
        for (size_t i = 1; i < l.zeros.size(); i += 4) l.zeros[i] = (uint8_t)rng.below(16);
        std::vector<uint8_t> want((size_t)N * K);
        dequantInt4ToFp8(l.view, want.data(), 0, N);
        DeviceLayer d(l);
        DeviceArray<uint8_t> out((size_t)N * K);
        CUDA_OK(cuda::dequantInt4ToFp8(gCtx, d.w.view, out.ptr));
        CUDA_OK(synchronize(gCtx));
        const std::vector<uint8_t> got = out.download();
        int bad = 0;
        for (size_t i = 0; i < got.size(); ++i)
          if (!sameCode(got[i], want[i], &nanSignOnly) && ++bad <= 3) {
            const size_t n = i / K, g = (i % K) / G;
            std::fprintf(stderr, "    %s G=%d: [%zu] = 0x%02x, want 0x%02x (s_g %a, z %d)\n", formatName(f), G, i, got[i],
                         want[i], l.groupScales[n * (K / G) + g], l.zeros[n * (K / G) + g]);
          }
        CHECK(bad == 0, "%s seed=%llu G=%d: %d codes differ", formatName(f), (unsigned long long)seed, G, bad);
      }
  std::printf("    %d codes equal up to the sign of a NaN made by inf * 0\n", nanSignOnly);
}

void decodeMatchesReference(GemmPath path, double tolerance, const char* label) {
  double worst = 0;
  int caseIndex = 0;
  for (Fp8Format wf : kFormats)
    for (int pow2 = 0; pow2 < 2; ++pow2)
      for (const Shape& shape : gemmShapes()) {
        // Activations: the weights' format, and the other E4M3 / E5M2 kind every third case.
        Fp8Format af = wf;
        if (caseIndex % 3 == 2) af = wf == Fp8Format::E5M2 ? Fp8Format::E4M3FN : Fp8Format::E5M2;
        const bool fp8Mma = path == GemmPath::DecodeFp8Mma;
        if (fp8Mma && (wf == Fp8Format::E5M2 || af == Fp8Format::E5M2)) af = wf = Fp8Format::E4M3FN;
        const uint64_t seed = 500 + caseIndex++;
        Layer l = makeLayer(seed, shape.M, shape.N, shape.G * shape.groupsPerRow, shape.G, wf, af, pow2 != 0,
                            caseIndex % 4 == 1);
        const Reference ref = reference(l);
        DeviceLayer d(l);
        GemmOptions options;
        options.path = path;
        const std::string what = std::string(label) + " " + describe(l, pow2 != 0, seed);
        worst = std::max(worst, checkGemm(l, ref, d, false, tolerance, options, nullptr, (what + " f32").c_str()));
        checkGemm(l, ref, d, true, tolerance, options, nullptr, (what + " bf16").c_str());
      }
  std::printf("    %s: largest |y - y_ref| = %.3g x s_x s_c sum|x8 w8| (bound %.3g)\n", label, worst, tolerance);
}

TEST(decode_gemm_f16_mma_is_within_fp32_summation_tolerance) {
  decodeMatchesReference(GemmPath::DecodeF16Mma, 1e-5, "decode-f16mma");
}

TEST(decode_gemm_fp8_mma_is_within_fp8_tensor_core_tolerance) {
  decodeMatchesReference(GemmPath::DecodeFp8Mma, std::ldexp(1.0, -7), "decode-fp8mma");
}

TEST(gemv_f16_mma_is_within_fp32_summation_tolerance) {
  decodeMatchesReference(GemmPath::Gemv, 1e-5, "gemv-f16mma");
}

TEST(gemv_is_within_tolerance_and_deterministic_for_every_warp_count) {
  // K = 4736 (37 rounds of 128 k; --small: 9): uneven warp ranges and a ring (4 rounds) that runs past each range;
  // N = 300: a partial 16-channel tile. Every group size, 1 to 16 tokens.
  const int K = gSmall ? 1152 : 4736, N = gSmall ? 40 : 300;
  int caseIndex = 0;
  for (int G : {32, 64, 128})
    for (int M : {1, 5, 16}) {
      const Fp8Format wf = kFormats[caseIndex % 3];
      const uint64_t seed = 950 + caseIndex++;
      Layer l = makeLayer(seed, M, N, K, G, wf, wf, false);
      const Reference ref = reference(l);
      DeviceLayer d(l);
      for (int warps = 1; warps <= 8; ++warps) {
        GemmOptions options;
        options.path = GemmPath::Gemv;
        options.splitK = warps;
        GemmPlanInfo plan{};
        const std::string what = describe(l, false, seed) + " warps=" + std::to_string(warps);
        checkDeterministic(l, ref, d, options, what);
        DeviceArray<float> y((size_t)M * N);
        CUDA_OK(gemmW4A8(gCtx, {d.x8.ptr, d.xScales.ptr, l.aFormat, M, d.w.view, {y.ptr, nullptr, N}}, nullptr, options,
                         &plan));
        CHECK(plan.path == GemmPath::Gemv && plan.splitK == warps, "%s: ran %s with %d warps", what.c_str(),
              gemmPathName(plan.path), plan.splitK);
      }
    }
}

// The integer GEMV (G = 128, E4M3-family weights and activations): every pairing of the two E4M3 formats,
// power-of-two and float scales, symmetric and asymmetric packing, 1-17 tokens (tiles of 8), partial channel
// tiles and K from one group to 37; the path is what Auto and Fused take at 1-8 tokens.
TEST(gemv_int8_is_within_fp32_summation_tolerance) {
  const Fp8Format e4m3s[] = {Fp8Format::E4M3FN, Fp8Format::E4M3};
  struct Case {
    int M, N, groups;
  };
  const std::vector<Case> cases = gSmall ? std::vector<Case>{{1, 7, 1}, {3, 33, 3}, {9, 17, 2}}
                                         : std::vector<Case>{{1, 1, 1},  {1, 257, 37}, {2, 300, 3}, {3, 7, 64},
                                                             {5, 129, 5}, {8, 64, 9},   {13, 33, 3}, {17, 40, 2}};
  double worst = 0;
  int caseIndex = 0;
  for (Fp8Format wf : e4m3s)
    for (Fp8Format af : e4m3s)
      for (const Case& c : cases) {
        const bool pow2 = caseIndex % 3 == 1, symmetric = caseIndex % 4 == 2;
        const uint64_t seed = 1700 + caseIndex++;
        Layer l = makeLayer(seed, c.M, c.N, 128 * c.groups, 128, wf, af, pow2, symmetric);
        const Reference ref = reference(l);
        DeviceLayer d(l);
        GemmOptions options;
        options.path = GemmPath::GemvInt8;
        const std::string what = "gemv-int8 " + describe(l, pow2, seed) + (symmetric ? " symmetric" : "");
        worst = std::max(worst, checkGemm(l, ref, d, false, 1e-5, options, nullptr, (what + " f32").c_str()));
        checkGemm(l, ref, d, true, 1e-5, options, nullptr, (what + " bf16").c_str());
        // Power-of-two packing makes every group linear (int4ChannelTarget).
        CHECK(d.w.linearGroups == pow2, "%s: upload found linearGroups = %d", what.c_str(), (int)d.w.linearGroups);
      }
  std::printf("    gemv-int8: largest |y - y_ref| = %.3g x s_x s_c sum|x8 w8| (bound 1e-05)\n", worst);
}

// Every warp count, with table groups (float scales) and with linear groups (power-of-two scales within range:
// w8 = s (q - z), the codes themselves feed the MMA): deterministic and within tolerance.
TEST(gemv_int8_is_deterministic_for_every_warp_count) {
  const int K = gSmall ? 1152 : 4736, N = gSmall ? 40 : 300;
  int caseIndex = 0;
  for (int linear = 0; linear < 2; ++linear) {
    for (int M : {1, 4, 8}) {
      const Fp8Format wf = caseIndex % 2 ? Fp8Format::E4M3 : Fp8Format::E4M3FN;
      const uint64_t seed = 1800 + caseIndex++;
      Layer l = makeLayer(seed, M, N, K, 128, wf, Fp8Format::E4M3FN, linear != 0);
      if (linear)  // 2^-9 .. 2^3: every s (q - z) exact, none saturated
        for (size_t g = 0; g < l.groupScales.size(); ++g) l.groupScales[g] = std::ldexp(1.0f, 3 - (int)(g % 13));
      const Reference ref = reference(l);
      DeviceLayer d(l);
      for (int warps = 1; warps <= 8; ++warps) {
        GemmOptions options;
        options.path = GemmPath::GemvInt8;
        options.splitK = warps;
        const std::string what = describe(l, false, seed) + " warps=" + std::to_string(warps);
        checkDeterministic(l, ref, d, options, what);
      }
    }
  }
}

// The quantization can make the integer GEMV's activations along with the FP8 codes: the same codes as without,
// and the GEMV on them gives the same bits as with its own pre-pass; a NaN input makes its token's outputs NaN.
TEST(quantization_makes_the_integer_gemv_activations) {
  int caseIndex = 0;
  for (Fp8Format f : {Fp8Format::E4M3FN, Fp8Format::E4M3})
    for (int M : {1, 3, 8}) {
      const uint64_t seed = 2000 + caseIndex++;
      const int N = 77, K = 128 * (gSmall ? 3 : 37);
      Layer l = makeLayer(seed, M, N, K, 128, f, f, true);
      Rng rng(seed);
      std::vector<float> x((size_t)M * K);
      for (float& v : x) v = rng.uniform(-3.0f, 3.0f);
      if (M > 1) x[(size_t)1 * K + 5] = NAN;
      quantizeActivationsDynamic(x.data(), M, K, f, l.x8.data(), l.xScales.data());  // the reference codes
      const Reference ref = reference(l);
      DeviceLayer d(l);
      DeviceArray<float> xd(x);
      DeviceArray<uint8_t> x8((size_t)M * K), buffer(integerActivationsBytes(K));
      DeviceArray<float> xScales(M);
      IntegerActivations integer;
      integer.buffer = buffer.ptr;
      integer.bytes = buffer.count;
      CUDA_OK(cuda::quantizeActivationsDynamic(gCtx, xd.ptr, M, K, f, x8.ptr, xScales.ptr, &integer));
      CHECK(integer.ready && integer.x8 == x8.ptr && integer.M == M && integer.K == K, "integer activations not made");
      CHECK(x8.download() == l.x8, "%s M=%d: codes differ", formatName(f), M);
      std::vector<std::vector<float>> outputs;
      for (bool prepared : {false, true}) {
        DeviceArray<float> y((size_t)M * N);
        GemmOptions options;
        options.path = GemmPath::GemvInt8;
        if (prepared) options.integerActivations = &integer;
        CUDA_OK(gemmW4A8(gCtx, {x8.ptr, xScales.ptr, f, M, d.w.view, {y.ptr, nullptr, N}}, nullptr, options));
        CUDA_OK(synchronize(gCtx));
        outputs.push_back(y.download());
      }
      int bad = 0;
      for (size_t i = 0; i < outputs[0].size(); ++i) {
        const float a = outputs[0][i], b = outputs[1][i], want = ref.y[i];
        const bool same = std::isnan(want) ? std::isnan(a) && std::isnan(b)
                                           : std::memcmp(&a, &b, 4) == 0 && std::fabs((double)a - want) <= 1e-5 * ref.magnitude[i];
        if (!same && ++bad <= 3) std::fprintf(stderr, "    i=%zu: pre-pass %.9g, prepared %.9g, want %.9g\n", i, a, b, want);
      }
      CHECK(bad == 0, "%s M=%d seed=%llu: %d outputs differ", formatName(f), M, (unsigned long long)seed, bad);
    }
  // Not made for e5m2 codes, or more than 8 tokens; a buffer too small is refused.
  DeviceArray<float> xd((size_t)9 * 256);
  fillDevice(gCtx, xd.ptr, 0, xd.count * 4);
  DeviceArray<uint8_t> x8((size_t)9 * 256), buffer(integerActivationsBytes(256));
  DeviceArray<float> xScales(9);
  IntegerActivations integer;
  integer.buffer = buffer.ptr;
  integer.bytes = buffer.count;
  CUDA_OK(cuda::quantizeActivationsDynamic(gCtx, xd.ptr, 2, 256, Fp8Format::E5M2, x8.ptr, xScales.ptr, &integer));
  CHECK(!integer.ready, "made for e5m2");
  CUDA_OK(cuda::quantizeActivationsDynamic(gCtx, xd.ptr, 9, 256, Fp8Format::E4M3FN, x8.ptr, xScales.ptr, &integer));
  CHECK(!integer.ready, "made for 9 tokens");
  integer.bytes = 64;
  CHECK(cuda::quantizeActivationsDynamic(gCtx, xd.ptr, 2, 256, Fp8Format::E4M3FN, x8.ptr, xScales.ptr, &integer) ==
            Status::InvalidArgument,
        "a 64-byte buffer was taken");
  CUDA_OK(synchronize(gCtx));
}

// Group scales at the edges of the integer form (FP8 subnormal entries, saturation at the format's max, the
// exponent cap, FP32 subnormals, zero, negative scales, 2^119 and above) and non-finite ones, and NaN activation
// codes: the integer GEMV agrees with the reference, NaN where it is NaN.
TEST(gemv_int8_handles_extreme_scales_and_nan) {
  const float scales[] = {0.0f,    -0.0f,    1e-45f,   0x1p-20f, 0x1p-12f, 0x1p-10f, 0x1p-9f, 0x1p-3f,
                          -0.5f,   0.0123f,  0.37f,    -0.37f,   16.0f,    29.9f,    32.0f,   55.9f,
                          60.0f,   64.0f,    -64.0f,   300.0f,   1000.0f,  0x1p119f, 0x1p125f, 3e38f,
                          INFINITY, NAN};
  const int nScales = (int)(sizeof(scales) / sizeof(scales[0]));
  int caseIndex = 0;
  for (Fp8Format wf : {Fp8Format::E4M3FN, Fp8Format::E4M3})
    for (int M : {1, 3, 8}) {
      const uint64_t seed = 1900 + caseIndex++;
      const int N = 2 * nScales, K = 256;
      Layer l = makeLayer(seed, M, N, K, 128, wf, wf, false);
      Rng rng(seed);
      // Row pairs (n, n + nScales) share one extreme scale in their first group; the second group keeps its own
      // scale, except on the rows whose first group has an infinite or NaN scale.
      for (int n = 0; n < N; ++n) {
        l.groupScales[(size_t)n * 2] = scales[n % nScales];
        l.zeros[(size_t)n * 2] = (uint8_t)(n < nScales ? 8 : rng.below(16));
      }
      // An infinite scale with z = 0 whose codes never select q = z (the inf * 0 entry): finite outputs (+-max).
      int infIndex = 0;
      while (!std::isinf(scales[infIndex])) ++infIndex;
      const int infRow = nScales + infIndex;
      l.zeros[(size_t)infRow * 2] = 0;
      for (int k = 0; k < 128; k += 2)
        l.codes[(size_t)infRow * (K / 2) + k / 2] = (uint8_t)((1 + k % 15) | ((1 + (k + 1) % 15) << 4));
      if (M > 1) l.x8[(size_t)1 * K + 77] = 0x7F;  // a NaN activation code (both formats) in token 1
      const Reference ref = reference(l);
      DeviceLayer d(l);
      DeviceArray<float> y((size_t)M * N);
      GemmOptions options;
      options.path = GemmPath::GemvInt8;
      CUDA_OK(gemmW4A8(gCtx, {d.x8.ptr, d.xScales.ptr, wf, M, d.w.view, {y.ptr, nullptr, N}}, nullptr, options));
      CUDA_OK(synchronize(gCtx));
      const std::vector<float> got = y.download();
      int bad = 0;
      for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) {
          const size_t i = (size_t)m * N + n;
          const float want = ref.y[i];
          const bool same = std::isnan(want) ? std::isnan(got[i])
                                             : std::fabs((double)got[i] - want) <= 1e-5 * ref.magnitude[i] + 1e-30;
          if (!same && ++bad <= 3)
            std::fprintf(stderr, "    %s M=%d: m=%d n=%d (scale %g) got %.9g want %.9g\n", formatName(wf), M, m, n,
                         (double)scales[n % nScales], got[i], want);
        }
      CHECK(bad == 0, "gemv-int8 extreme scales %s M=%d seed=%llu: %d elements differ", formatName(wf), M,
            (unsigned long long)seed, bad);
    }
}

TEST(decode_gemm_any_split_k_gives_the_same_function_deterministically) {
  // K = 2432 (19 groups of 128): 5 chunks of 512 k, the last one partial; N = 300: a partial row tile.
  const int K = gSmall ? 1152 : 2432, N = gSmall ? 40 : 300;
  int caseIndex = 0;
  for (int M : {1, 16, 40}) {
    if (gSmall && M == 40) continue;
    const Fp8Format wf = kFormats[caseIndex % 3];
    const uint64_t seed = 900 + caseIndex++;
    Layer l = makeLayer(seed, M, N, K, 128, wf, wf, false);
    const Reference ref = reference(l);
    DeviceLayer d(l);
    const int chunks = (K + 511) / 512;
    for (int splits = 1; splits <= chunks; ++splits) {
      GemmOptions options;
      options.path = GemmPath::DecodeF16Mma;
      options.splitK = splits;
      const std::string what = describe(l, false, seed) + " splitK=" + std::to_string(splits);
      checkDeterministic(l, ref, d, options, what);
    }
  }
}

TEST(prefill_cublaslt_is_within_fp8_tensor_core_tolerance) {
  DeviceInfo info{};
  deviceAvailable(&info);
  if (!info.cublasLt) {
    std::printf("    (built without cuBLASLt: prefill not tested)\n");
    return;
  }
  struct Case {
    int M, N, G, groupsPerRow;
    Fp8Format wf, af;
  };
  std::vector<Case> cases = {{1, 64, 128, 1, Fp8Format::E4M3FN, Fp8Format::E4M3FN},
                             {17, 96, 64, 3, Fp8Format::E4M3, Fp8Format::E4M3},
                             {64, 128, 32, 3, Fp8Format::E5M2, Fp8Format::E4M3FN},
                             {257, 256, 128, 3, Fp8Format::E4M3FN, Fp8Format::E5M2},
                             {100, 33, 32, 1, Fp8Format::E4M3FN, Fp8Format::E4M3FN}};
  if (gSmall) cases.resize(2);
  double worst = 0;
  int caseIndex = 0;
  for (const Case& c : cases) {
    const uint64_t seed = 1200 + caseIndex++;
    Layer l = makeLayer(seed, c.M, c.N, c.G * c.groupsPerRow, c.G, c.wf, c.af, caseIndex % 2 == 0);
    const Reference ref = reference(l);
    DeviceLayer d(l);
    GemmOptions options;
    options.path = GemmPath::PrefillLt;
    const std::string what = "prefill " + describe(l, caseIndex % 2 == 0, seed);
    for (int bf16 = 0; bf16 < 2; ++bf16) {
      Status s;
      std::vector<uint32_t> perCall, cached;
      const double e = checkGemm(l, ref, d, bf16 != 0, std::ldexp(1.0, -7), options, nullptr, what.c_str(), &s, &perCall);
      if (s == Status::Unsupported && c.N % 16 != 0) {
        std::printf("    %s: cuBLASLt declined N=%d (%s)\n", what.c_str(), c.N, lastError(gCtx));
        continue;
      }
      CHECK(s == Status::Ok, "%s: %s: %s", what.c_str(), statusName(s), lastError(gCtx));
      worst = std::max(worst, e);
      // The cached FP8 copy gives the same bits as dequantizing on every call.
      CUDA_OK(prepareFp8Weights(gCtx, &d.w));
      checkGemm(l, ref, d, bf16 != 0, std::ldexp(1.0, -7), options, d.w.fp8Codes, what.c_str(), &s, &cached);
      CHECK(perCall == cached, "%s: cached FP8 weights give other bits", what.c_str());
    }
  }
  std::printf("    prefill-cublaslt: largest |y - y_ref| = %.3g x s_x s_c sum|x8 w8| (bound %.3g)\n", worst,
              std::ldexp(1.0, -7));
  // Auto takes the prefill path above 64 tokens; up to 64 the split-K fused kernel, or the GEMV for up to
  // 16 tokens on rows of K <= 4096 and up to 8 on rows of K <= 12288.
  Layer l = makeLayer(1300, 65, 64, 128, 128, Fp8Format::E4M3FN, Fp8Format::E4M3FN, false);
  Layer longRows = makeLayer(1301, 16, 16, 4224, 128, Fp8Format::E4M3FN, Fp8Format::E4M3FN, false);
  Layer longerRows = makeLayer(1302, 1, 16, 12416, 128, Fp8Format::E4M3FN, Fp8Format::E4M3FN, false);
  DeviceLayer d(l), dl(longRows), dll(longerRows);
  DeviceArray<float> y((size_t)l.M * l.N);
  // The plan Auto makes for the first M tokens of a layer (with the upload's linearGroups hint).
  DeviceArray<float> yWide((size_t)2 * 8192);
  auto autoPlan = [&](const Layer& host, const DeviceLayer& dev, int M) {
    GemmPlanInfo plan{};
    GemmOptions options;
    options.linearGroups = dev.w.linearGroups;
    CUDA_OK(gemmW4A8(gCtx, {dev.x8.ptr, dev.xScales.ptr, host.aFormat, M, dev.w.view, {yWide.ptr, nullptr, host.N}},
                     nullptr, options, &plan));
    return plan;
  };
  // Linear weights (power-of-two scales, G = 128): the integer GEMV at 1-2 tokens (4-warp CTAs on 8192 rows,
  // 8-warp ones on 64), the FP16 GEMV at 3 tokens or without the hint.
  Layer wide = makeLayer(1303, 3, 8192, 256, 128, Fp8Format::E4M3FN, Fp8Format::E4M3FN, true);
  Layer narrow = makeLayer(1304, 2, 64, 256, 128, Fp8Format::E4M3FN, Fp8Format::E4M3FN, true);
  DeviceLayer dw(wide), dn(narrow);
  CHECK(dw.w.linearGroups && dn.w.linearGroups, "power-of-two layers not linear");
  const GemmPlanInfo prefill = autoPlan(l, d, 65);
  CHECK(prefill.path == GemmPath::PrefillLt, "auto at M=65 took %s", gemmPathName(prefill.path));
  const struct { const Layer& host; const DeviceLayer& dev; int M; GemmPath want; const char* what; } autoCases[] = {
      {l, d, 64, GemmPath::DecodeF16Mma, "M=64"},
      {l, d, 17, GemmPath::DecodeF16Mma, "M=17"},
      {l, d, 16, GemmPath::Gemv, "M=16, K=128"},
      {longRows, dl, 8, GemmPath::Gemv, "M=8, K=4224"},
      {longRows, dl, 9, GemmPath::DecodeF16Mma, "M=9, K=4224"},
      {longerRows, dll, 1, GemmPath::DecodeF16Mma, "M=1, K=12416"},
      {wide, dw, 1, GemmPath::GemvInt8, "linear, M=1, N=8192"},
      {wide, dw, 2, GemmPath::GemvInt8, "linear, M=2, N=8192"},
      {wide, dw, 3, GemmPath::Gemv, "linear, M=3, N=8192"},
      {narrow, dn, 1, GemmPath::GemvInt8, "linear, M=1, N=64"},
  };
  for (const auto& c : autoCases) {
    const GemmPath path = autoPlan(c.host, c.dev, c.M).path;
    CHECK(path == c.want, "auto at %s took %s", c.what, gemmPathName(path));
  }
  GemmPlanInfo unhinted{};
  CUDA_OK(gemmW4A8(gCtx, {dw.x8.ptr, dw.xScales.ptr, wide.aFormat, 1, dw.w.view, {yWide.ptr, nullptr, wide.N}}, nullptr,
                   GemmOptions(), &unhinted));
  CHECK(unhinted.path == GemmPath::Gemv, "linear weights without the hint took %s", gemmPathName(unhinted.path));
  std::printf("    prefill scales applied %s\n", prefill.fusedScales ? "by the kernel" : "by an epilogue kernel");
  CUDA_OK(synchronize(gCtx));
}

TEST(w8a8_cublaslt_matches_reference) {
  DeviceInfo info{};
  deviceAvailable(&info);
  if (!info.cublasLt) return;
  for (Fp8Format f : {Fp8Format::E4M3FN, Fp8Format::E5M2}) {
    const Fp8Format af = Fp8Format::E4M3FN;
    Layer l = makeLayer(1400 + (int)f, 19, 48, 256, 128, f, af, false);
    std::vector<uint8_t> w8((size_t)l.N * l.K);
    dequantInt4ToFp8(l.view, w8.data(), 0, l.N);
    std::vector<float> want((size_t)l.M * l.N);
    Fp8WeightsView hostView{w8.data(), l.channelScales.data(), l.N, l.K, f};
    reference::gemmW8A8({l.x8.data(), l.xScales.data(), af, l.M, hostView, {want.data(), nullptr, l.N}}, 0, l.N);
    const Reference ref = reference(l);  // same values (W8A8 on the dequantized weights == W4A8)
    DeviceArray<uint8_t> dw(w8), dx(l.x8);
    DeviceArray<float> dc(l.channelScales), ds(l.xScales), dy((size_t)l.M * l.N);
    W8A8GemmArgs args{dx.ptr, ds.ptr, af, l.M, {dw.ptr, dc.ptr, l.N, l.K, f}, {dy.ptr, nullptr, l.N}};
    CUDA_OK(gemmW8A8(gCtx, args));
    CUDA_OK(synchronize(gCtx));
    const std::vector<float> got = dy.download();
    int bad = 0;
    for (size_t i = 0; i < got.size(); ++i)
      bad += !(std::fabs((double)got[i] - want[i]) <= std::ldexp(ref.magnitude[i], -7) + 1e-30);
    CHECK(bad == 0, "w8a8 %s: %d elements outside the bound", formatName(f), bad);
  }
}

TEST(gemm_rejects_misuse_with_a_message) {
  Layer l = makeLayer(1500, 2, 8, 64, 32, Fp8Format::E4M3FN, Fp8Format::E4M3FN, false);
  DeviceLayer d(l);
  DeviceArray<float> y(64);
  const W4A8GemmArgs good{d.x8.ptr, d.xScales.ptr, l.aFormat, l.M, d.w.view, {y.ptr, nullptr, l.N}};
  auto expect = [&](W4A8GemmArgs a, Status want, const char* what, GemmPath path = GemmPath::Auto) {
    GemmOptions options;
    options.path = path;
    const Status s = gemmW4A8(gCtx, a, nullptr, options);
    CHECK(s == want, "%s: got %s, want %s", what, statusName(s), statusName(want));
    CHECK(s == Status::Ok || std::strlen(lastError(gCtx)) > 0, "%s: no message", what);
  };
  W4A8GemmArgs a = good;
  a.w.groupSize = 48;
  expect(a, Status::InvalidArgument, "group size 48");
  a = good;
  a.w.cols = 80;
  expect(a, Status::InvalidArgument, "K not a multiple of G");
  a = good;
  a.M = -1;
  expect(a, Status::InvalidArgument, "M < 0");
  a = good;
  a.y.ldy = 4;
  expect(a, Status::InvalidArgument, "ldy < N");
  a = good;
  a.y.bf16 = reinterpret_cast<uint16_t*>(y.ptr);
  expect(a, Status::InvalidArgument, "both outputs set");
  a = good;
  a.x8 = nullptr;
  expect(a, Status::InvalidArgument, "null x8");
  a = good;
  a.x8 = d.x8.ptr + 1;
  expect(a, Status::InvalidArgument, "unaligned x8");
  a = good;
  a.actFormat = Fp8Format::E5M2;
  expect(a, Status::Unsupported, "fp8 mma with e5m2", GemmPath::DecodeFp8Mma);
  expect(a, Status::Unsupported, "gemv-int8 with e5m2 activations", GemmPath::GemvInt8);
  a = good;
  expect(a, Status::Unsupported, "gemv-int8 with groupSize 32", GemmPath::GemvInt8);
  a = good;
  a.M = 0;
  expect(a, Status::Ok, "M = 0 is a no-op");
  CHECK(cuda::quantizeActivationsDynamic(gCtx, nullptr, 1, 0, Fp8Format::E4M3FN, nullptr, nullptr) ==
            Status::InvalidArgument,
        "quantize K = 0");
  CUDA_OK(synchronize(gCtx));
}

}  // namespace

int main(int argc, char** argv) {
  bool bench = false, modelBench = false, modelBenchCpu = true;
  int layers = 32;
  const char* batches = "1,8,32,64";
  const char* jsonPath = nullptr;
  const char* filter = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--small")) gSmall = true;
    else if (!std::strcmp(argv[i], "--bench")) bench = true;
    else if (!std::strcmp(argv[i], "--model-bench")) modelBench = true;
    else if (!std::strcmp(argv[i], "--no-cpu")) modelBenchCpu = false;
    else if (!std::strcmp(argv[i], "--batches") && i + 1 < argc) batches = argv[++i];
    else if (!std::strcmp(argv[i], "--layers") && i + 1 < argc) layers = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--json") && i + 1 < argc) jsonPath = argv[++i];
    else filter = argv[i];
  }
  if (!deviceAvailable()) {
    std::printf("cuda: no CUDA device\ncuda: 0 passed, 1 failed\n");
    return 1;
  }
  if (modelBench) return runModelBench(jsonPath, layers, modelBenchCpu, batches);
  if (createContext(&gCtx) != Status::Ok) {
    std::printf("cuda: cannot create a context: %s\ncuda: 0 passed, 1 failed\n", lastError(nullptr));
    return 1;
  }
  if (bench) {
    const int rc = runBench(gCtx, jsonPath);
    destroyContext(gCtx);
    return rc;
  }
  int passed = 0, failed = 0;
  for (const auto& test : w4a8test::registry()) {
    if (filter && !std::strstr(test.name, filter)) continue;
    w4a8test::currentFailures = 0;
    test.body();
    const bool ok = w4a8test::currentFailures == 0;
    std::printf("%s %s\n", ok ? "  ok  " : "  FAIL", test.name);
    std::fflush(stdout);
    (ok ? passed : failed)++;
  }
  destroyContext(gCtx);
  std::printf("cuda: %d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
