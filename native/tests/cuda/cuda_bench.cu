// Benchmark of the CUDA W4A8 GEMM against cuBLAS (cuBLASLt) BF16 and cuBLASLt FP8 (W8A8), with the limits
// measured in the same run: HBM bandwidth (a read kernel, and a device-to-device copy) and the FP8 peak (a
// large cuBLASLt FP8 GEMM). Shapes are N x K (output channels x inputs), M = tokens.
//
// Timing: each configuration is captured `iters` times into a CUDA graph (as a decode loop would run it), the
// graph is replayed three times between events, and the median per-call time is kept. Every call reads another
// copy of the weights, with enough copies to cover >= 192 MB, so repeated calls do not read them from L2.
// Values are random (never zeros). W4A8 rows: weight bytes = codes + group scales + zero points + channel
// scales; GB/s = weight bytes / time, against the measured read bandwidth.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/internal.h"

namespace w4a8::cuda {
#if W4A8_HAVE_CUBLASLT
namespace {

#define BENCH_CUDA(call)                                                                   \
  do {                                                                                     \
    const cudaError_t e_ = (call);                                                         \
    if (e_ != cudaSuccess) {                                                               \
      std::printf("bench: %s failed: %s\n", #call, cudaGetErrorString(e_));                \
      return 1;                                                                            \
    }                                                                                      \
  } while (0)

#define BENCH_CUDA_STATUS(call)                                                            \
  do {                                                                                     \
    if ((call) != Status::Ok) {                                                            \
      std::printf("bench: %s failed: %s\n", #call, lastError(ctx));                         \
      return 1;                                                                            \
    }                                                                                      \
  } while (0)

__device__ __forceinline__ uint32_t hash32(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return (uint32_t)x;
}

// Random bytes; fp8 = true keeps them finite e4m3fn codes (|code| <= 0x7E, no NaN).
__global__ void fillBytesKernel(uint8_t* p, size_t n, uint64_t seed, bool fp8) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    uint8_t v = (uint8_t)hash32(seed * 0x9E3779B97F4A7C15ull + i);
    if (fp8 && (v & 0x7F) == 0x7F) v ^= 0x01;
    p[i] = v;
  }
}
__global__ void fillFloatKernel(float* p, size_t n, uint64_t seed, float lo, float hi) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    p[i] = lo + (hi - lo) * (hash32(seed * 0x9E3779B97F4A7C15ull + i) >> 8) * (1.0f / 16777216.0f);
}
__global__ void powerOfTwoKernel(float* p, size_t n) {  // each value -> the power of two at or below it
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    p[i] = __uint_as_float(__float_as_uint(p[i]) & 0xFF800000u);
}
__global__ void fillBf16Kernel(uint16_t* p, size_t n, uint64_t seed) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    p[i] = floatToBf16(-1.0f + 2.0f * (hash32(seed * 0x9E3779B97F4A7C15ull + i) >> 8) * (1.0f / 16777216.0f));
}
__global__ void fillByteValueKernel(uint8_t* p, size_t n, uint8_t value) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) p[i] = value;
}
// Reads every 16-byte word once (the HBM read-bandwidth probe); the xor keeps the loads alive.
__global__ void readKernel(const uint4* p, size_t n, uint32_t* sink) {
  uint32_t acc = 0;
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {  // four independent loads in flight per thread
    const uint4 a = p[i], b = p[i + stride], c = p[i + 2 * stride], d = p[i + 3 * stride];
    acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^ d.z ^ d.w;
  }
  for (; i < n; i += stride) {
    const uint4 v = p[i];
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) sink[0] = acc;
}

// Tuning aid (W4A8_GEMV_SWEEP): the GEMV's weight loads alone, to tell its memory access pattern from its
// arithmetic. One CTA of 4 warps per 16 rows of a [rows, K / 2] byte matrix, each warp a contiguous range of
// 128-k rounds, a ring of 4 rounds of two 16-byte loads per lane. kTiled: the bytes a warp reads in one
// round are one contiguous 1 KiB block (a layout the weights would need to be repacked into); else rows
// are row-major and a round reads 64 bytes of each of 16 rows.
template <bool kTiled>
__global__ void gemvPatternKernel(const uint8_t* codes, int K, uint32_t* sink) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  const int g = lane >> 2, t = lane & 3, rounds = K / 128;
  const int r0 = warp * rounds / warps, r1 = (warp + 1) * rounds / warps;
  const size_t tileBase = (size_t)blockIdx.x * 16 * (K / 2);
  auto address = [&](int r, int half) {
    if (kTiled) return codes + tileBase + (size_t)r * 1024 + half * 512 + lane * 16;
    return codes + tileBase + (size_t)(g + 8 * half) * (K / 2) + r * 64 + t * 16;
  };
  auto load = [&](const uint8_t* p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
  };
  uint4 ring[4][2];
  uint32_t acc = 0;
#pragma unroll
  for (int d = 0; d < 4; ++d)
    for (int h = 0; h < 2; ++h) ring[d][h] = r0 + d < r1 ? load(address(r0 + d, h)) : make_uint4(0, 0, 0, 0);
  for (int r = r0; r < r1; r += 4) {
#pragma unroll
    for (int d = 0; d < 4; ++d)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        acc ^= ring[d][h].x ^ ring[d][h].y ^ ring[d][h].z ^ ring[d][h].w;
        ring[d][h] = r + d + 4 < r1 ? load(address(r + d + 4, h)) : make_uint4(0, 0, 0, 0);
      }
  }
  if (acc == 0x12345678u) sink[0] = acc;
}

constexpr unsigned kFillBlocks = 1024, kFillThreads = 256;

double elapsedUs(cudaEvent_t a, cudaEvent_t b) {
  float ms = 0;
  cudaEventElapsedTime(&ms, a, b);
  return 1000.0 * ms;
}

struct Timer {
  cudaStream_t stream;
  cudaEvent_t start, stop;
  explicit Timer(cudaStream_t s) : stream(s) {
    cudaEventCreate(&start);
    cudaEventCreate(&stop);
  }
  ~Timer() {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
  }
  // Median microseconds per call of fn(copy); negative when fn fails. Warm-up, one timed call to size the
  // graph, then the graph of `iters` calls (rotating copies) replayed three times.
  double time(const std::function<bool(int)>& fn, int copies) {
    for (int i = 0; i < 2; ++i)
      if (!fn(i % copies)) return -1;
    cudaEventRecord(start, stream);
    if (!fn(2 % copies)) return -1;
    cudaEventRecord(stop, stream);
    if (cudaEventSynchronize(stop) != cudaSuccess) return -1;
    const double once = std::max(1.0, elapsedUs(start, stop));
    const int iters = (int)std::min(400.0, std::max(3.0, 6000.0 / once));
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    bool ok = cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed) == cudaSuccess;
    for (int i = 0; ok && i < iters; ++i) ok = fn((3 + i) % copies);
    ok = (cudaStreamEndCapture(stream, &graph) == cudaSuccess) && ok;
    ok = ok && cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
    std::vector<double> runs;
    for (int r = 0; r < 3; ++r) {
      cudaEventRecord(start, stream);
      if (ok) cudaGraphLaunch(exec, stream);
      else
        for (int i = 0; i < iters; ++i) fn((3 + i) % copies);  // no graph: plain launches
      cudaEventRecord(stop, stream);
      cudaEventSynchronize(stop);
      runs.push_back(elapsedUs(start, stop) / iters);
    }
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
    cudaGetLastError();
    std::sort(runs.begin(), runs.end());
    return cudaStreamSynchronize(stream) == cudaSuccess ? runs[1] : -1;
  }
};

struct Shape {
  const char* name;
  int N, K;
};

struct Row {
  std::string shape;
  int M;
  const char* path;
  double w4a8, w4a8Fp8Mma, w4a8Gemv, w4a8GemvInt8, w4a8DecodeF16, w4a8PrefillDequant, bf16, fp8;  // us, -1: not run
  double weightBytes, flops;
};

template <typename T>
T* alloc(size_t count) {  // count elements of T
  void* p = nullptr;
  if (cudaMalloc(&p, count * sizeof(T)) != cudaSuccess) return nullptr;
  return static_cast<T*>(p);
}

}  // namespace

int runBench(Context* ctx, const char* jsonPath) {
  using namespace w4a8::cudakern;
  cudaStream_t stream = static_cast<cudaStream_t>(streamHandle(ctx));
  DeviceInfo info{};
  deviceAvailable(&info);
  Timer timer(stream);
  LtGemm* lt = contextLt(ctx);
  if (!lt) {
    std::printf("bench: cuBLASLt did not initialise\n");
    return 1;
  }
  std::printf("device: %s, %d SMs, L2 %d MiB\n", info.name, info.multiprocessors, info.l2CacheBytes >> 20);

  // ---- limits ------------------------------------------------------------------------------------------
  const size_t probeBytes = (size_t)2 << 30;
  uint8_t* probe = alloc<uint8_t>(probeBytes);
  uint32_t* sink = alloc<uint32_t>(4);
  if (!probe || !sink) return 1;
  fillBytesKernel<<<kFillBlocks, kFillThreads, 0, stream>>>(probe, probeBytes, 1, false);
  double readUs = 1e30, copyUs = 1e30;
  for (int r = 0; r < 5; ++r) {
    cudaEventRecord(timer.start, stream);
    readKernel<<<info.multiprocessors * 8, 512, 0, stream>>>(reinterpret_cast<const uint4*>(probe), probeBytes / 16, sink);
    cudaEventRecord(timer.stop, stream);
    cudaEventSynchronize(timer.stop);
    readUs = std::min(readUs, elapsedUs(timer.start, timer.stop));
    cudaEventRecord(timer.start, stream);
    cudaMemcpyAsync(probe + probeBytes / 2, probe, probeBytes / 2, cudaMemcpyDeviceToDevice, stream);
    cudaEventRecord(timer.stop, stream);
    cudaEventSynchronize(timer.stop);
    copyUs = std::min(copyUs, elapsedUs(timer.start, timer.stop));
  }
  BENCH_CUDA(cudaGetLastError());
  const double hbmRead = probeBytes / readUs * 1e-3;  // GB/s
  const double hbmCopy = probeBytes / copyUs * 1e-3;  // read + write
  if (std::getenv("W4A8_GEMV_SWEEP")) {
    for (const int K : {8192, 28672}) {
      const int rows = (int)((size_t)256 << 20) / (K / 2) / 16 * 16;  // 256 MiB: far more than L2
      const size_t bytes = (size_t)rows * K / 2;
      for (const int tiled : {0, 1}) {
        double best = 1e30;
        for (int r = 0; r < 5; ++r) {
          cudaEventRecord(timer.start, stream);
          if (tiled) gemvPatternKernel<true><<<rows / 16, 128, 0, stream>>>(probe, K, sink);
          else gemvPatternKernel<false><<<rows / 16, 128, 0, stream>>>(probe, K, sink);
          cudaEventRecord(timer.stop, stream);
          cudaEventSynchronize(timer.stop);
          best = std::min(best, elapsedUs(timer.start, timer.stop));
        }
        std::printf("gemv load pattern K=%d %s: %.0f GB/s\n", K, tiled ? "tiled 1 KiB blocks" : "row-major", bytes / best * 1e-3);
      }
    }
  }
  cudaFree(probe);

  const int P = 8192;
  uint8_t* pa = alloc<uint8_t>((size_t)P * P);
  uint8_t* pb = alloc<uint8_t>((size_t)P * P);
  uint16_t* pd = alloc<uint16_t>((size_t)P * P);
  if (!pa || !pb || !pd) return 1;
  fillBytesKernel<<<kFillBlocks, kFillThreads, 0, stream>>>(pa, (size_t)P * P, 2, true);
  fillBytesKernel<<<kFillBlocks, kFillThreads, 0, stream>>>(pb, (size_t)P * P, 3, true);
  LtCall peakCall{pa, CUDA_R_8F_E4M3, pb, CUDA_R_8F_E4M3, pd, CUDA_R_16BF, P, P, P, P, nullptr, nullptr, false};
  const double peakUs = timer.time([&](int) { return lt->run(peakCall, stream) == CUBLAS_STATUS_SUCCESS; }, 1);
  const double fp8Peak = 2.0 * P * P * P / peakUs * 1e-6;  // TFLOP/s
  cudaFree(pb);
  uint16_t* pb16 = alloc<uint16_t>((size_t)P * P);
  uint16_t* pa16 = alloc<uint16_t>((size_t)P * P);
  fillBf16Kernel<<<kFillBlocks, kFillThreads, 0, stream>>>(pa16, (size_t)P * P, 5);
  fillBf16Kernel<<<kFillBlocks, kFillThreads, 0, stream>>>(pb16, (size_t)P * P, 6);
  LtCall bf16PeakCall{pa16, CUDA_R_16BF, pb16, CUDA_R_16BF, pd, CUDA_R_16BF, P, P, P, P, nullptr, nullptr, false};
  const double bf16PeakUs = timer.time([&](int) { return lt->run(bf16PeakCall, stream) == CUBLAS_STATUS_SUCCESS; }, 1);
  const double bf16Peak = 2.0 * P * P * P / bf16PeakUs * 1e-6;
  cudaFree(pa);
  cudaFree(pd);
  cudaFree(pa16);
  cudaFree(pb16);
  std::printf("limits: HBM read %.0f GB/s (read kernel, 2 GiB), copy %.0f GB/s (read + write, 1 GiB D2D)\n", hbmRead,
              hbmCopy);
  std::printf("limits: FP8 peak %.0f TFLOP/s (cuBLASLt e4m3 %dx%dx%d, fast-accum off), BF16 %.0f TFLOP/s\n", fp8Peak, P,
              P, P, bf16Peak);

  // ---- GEMMs -------------------------------------------------------------------------------------------
  const Shape shapes[] = {{"4096x4096", 4096, 4096},
                          {"4096x11008", 4096, 11008},
                          {"11008x4096", 11008, 4096},
                          {"8192x8192", 8192, 8192},
                          {"8192x28672", 8192, 28672}};
  const int Ms[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096};
  const int G = 128, maxM = 4096;
  std::vector<Row> rows;
  std::printf("\n%-11s %5s %-16s %9s %7s %5s %7s %6s | %9s %9s %9s %9s %9s | %9s %9s %6s %6s\n", "shape NxK", "M",
              "w4a8 path", "w4a8 us", "GB/s", "xHBM", "TFLOP/s", "xFP8pk", "fp8mma us", "gemv us", "gemv8 us", "dec16 us",
              "pf+dq us",
              "bf16 us", "fp8 us", "vsBF16", "vsFP8");
  // W4A8_BENCH_SCALES=pow2: group scales rounded down to powers of two (default: floats in [1/128, 3/128)).
  const char* scalesEnv = std::getenv("W4A8_BENCH_SCALES");
  const bool pow2Scales = scalesEnv && !std::strcmp(scalesEnv, "pow2");
  std::printf("group scales: %s\n", pow2Scales ? "powers of two (W4A8_BENCH_SCALES=pow2)" : "floats in [1/128, 3/128)");
  // W4A8_BENCH_SHAPES=8192x8192,8192x28672: those shapes alone (profiling, tuning).
  const char* onlyShapes = std::getenv("W4A8_BENCH_SHAPES");
  for (const Shape& shape : shapes) {
    if (onlyShapes && !std::strstr(onlyShapes, shape.name)) continue;
    const int N = shape.N, K = shape.K, groups = K / G;
    const size_t codesBytes = (size_t)N * K / 2, groupBytes = (size_t)N * groups;
    const double weightBytes = (double)codesBytes + groupBytes * 5.0 + N * 4.0;
    auto round256 = [](size_t x) { return (x + 255) / 256 * 256; };
    const size_t blockBytes = round256(codesBytes) + round256(groupBytes * 4) + round256(groupBytes) + round256(N * 4);
    const int copies = (int)std::min<size_t>(32, std::max<size_t>(1, ((size_t)192 << 20) / blockBytes + 1));
    const int bf16Copies =
        (int)std::min<size_t>(32, std::max<size_t>(1, ((size_t)192 << 20) / ((size_t)N * K * 2) + 1));

    // INT4 weights: copy 0 random (codes, scales around 1/64, z = 8, channel scales), the others copies of it.
    std::vector<DeviceInt4Weights> w(copies);
    std::vector<uint8_t*> blocks(copies);
    bool ok = true;
    for (int c = 0; c < copies && ok; ++c) {
      uint8_t* b = alloc<uint8_t>(blockBytes);
      ok = b != nullptr;
      blocks[c] = b;
      if (!ok) break;
      w[c] = DeviceInt4Weights{};
      w[c].view.codes = b;
      w[c].view.groupScales = reinterpret_cast<float*>(b + round256(codesBytes));
      w[c].view.zeros = b + round256(codesBytes) + round256(groupBytes * 4);
      w[c].view.channelScales =
          reinterpret_cast<float*>(b + round256(codesBytes) + round256(groupBytes * 4) + round256(groupBytes));
      w[c].view.rows = N, w[c].view.cols = K, w[c].view.groupSize = G, w[c].view.format = Fp8Format::E4M3FN;
      if (c == 0) {
        fillBytesKernel<<<kFillBlocks, kFillThreads, 0, stream>>>(b, codesBytes, 10, false);
        fillFloatKernel<<<kFillBlocks, kFillThreads, 0, stream>>>(const_cast<float*>(w[c].view.groupScales), groupBytes,
                                                                  11, 0.5f / 64, 1.5f / 64);
        if (pow2Scales)  // W4A8_BENCH_SCALES=pow2: the packer's power-of-two ("hardware-aligned") group scales
          powerOfTwoKernel<<<kFillBlocks, kFillThreads, 0, stream>>>(const_cast<float*>(w[c].view.groupScales), groupBytes);
        fillByteValueKernel<<<kFillBlocks, kFillThreads, 0, stream>>>(const_cast<uint8_t*>(w[c].view.zeros), groupBytes, 8);
        fillFloatKernel<<<kFillBlocks, kFillThreads, 0, stream>>>(const_cast<float*>(w[c].view.channelScales), N, 12,
                                                                  1e-3f, 2e-3f);
      } else {
        cudaMemcpyAsync(b, blocks[0], blockBytes, cudaMemcpyDeviceToDevice, stream);
      }
      ok = prepareFp8Weights(ctx, &w[c]) == Status::Ok;  // the cached FP8 copy: prefill and the W8A8 baseline
    }
    std::vector<uint16_t*> wBf16(bf16Copies, nullptr);
    for (int c = 0; c < bf16Copies && ok; ++c) {
      wBf16[c] = alloc<uint16_t>((size_t)N * K);
      ok = wBf16[c] != nullptr;
      if (ok) fillBf16Kernel<<<kFillBlocks, kFillThreads, 0, stream>>>(wBf16[c], (size_t)N * K, 20 + c);
    }
    uint8_t* x8 = alloc<uint8_t>((size_t)maxM * K);
    float* xScales = alloc<float>(maxM);
    uint16_t* xBf16 = alloc<uint16_t>((size_t)maxM * K);
    uint16_t* y = alloc<uint16_t>((size_t)maxM * N);
    ok = ok && x8 && xScales && xBf16 && y;
    if (!ok) {
      std::printf("bench: out of device memory for %s\n", shape.name);
      return 1;
    }
    fillBytesKernel<<<kFillBlocks, kFillThreads, 0, stream>>>(x8, (size_t)maxM * K, 30, true);
    fillFloatKernel<<<kFillBlocks, kFillThreads, 0, stream>>>(xScales, maxM, 31, 0.01f, 0.02f);
    fillBf16Kernel<<<kFillBlocks, kFillThreads, 0, stream>>>(xBf16, (size_t)maxM * K, 32);
    BENCH_CUDA(cudaStreamSynchronize(stream));
    BENCH_CUDA(cudaGetLastError());

    // The first timings after a shape's buffers are made read slow (first touch of the copies): one
    // untimed pass over them first.
    {
      GemmOptions options;
      options.path = GemmPath::Gemv;
      timer.time(
          [&](int c) {
            const W4A8GemmArgs args{x8, xScales, Fp8Format::E4M3FN, 1, w[c].view, {nullptr, y, N}};
            return gemmW4A8(ctx, args, nullptr, options) == Status::Ok;
          },
          copies);
    }
    // With power-of-two scales the model's quantization also makes the integer GEMV's activations: Auto is timed
    // on activations made once (makeIntegerActivations), the gemv8 column with the GEMV's own pre-pass.
    void* integerBuffer = alloc<uint8_t>(integerActivationsBytes(K));
    for (const int M : Ms) {
      Row row{shape.name, M, "", -1, -1, -1, -1, -1, -1, -1, -1, weightBytes, 2.0 * M * N * K};
      IntegerActivations integer;
      integer.buffer = integerBuffer;
      integer.bytes = integerActivationsBytes(K);
      if (pow2Scales && M <= kGemvInt8MaxTokens) BENCH_CUDA_STATUS(makeIntegerActivations(ctx, x8, M, K, Fp8Format::E4M3FN, &integer));
      auto w4a8 = [&](GemmPath path, bool cached) {
        return [&, path, cached](int c) {
          GemmOptions options;
          options.path = path;
          options.linearGroups = pow2Scales;  // scales 2^-7 or 2^-6 with z = 8: every group linear
          if (path == GemmPath::Auto) options.integerActivations = &integer;
          GemmPlanInfo plan{};
          const W4A8GemmArgs args{x8, xScales, Fp8Format::E4M3FN, M, w[c].view, {nullptr, y, N}};
          const bool good = gemmW4A8(ctx, args, cached ? w[c].fp8Codes : nullptr, options, &plan) == Status::Ok;
          if (good && path == GemmPath::Auto) row.path = gemmPathName(plan.path);
          return good;
        };
      };
      row.w4a8 = timer.time(w4a8(GemmPath::Auto, true), copies);
      if (M <= 64) row.w4a8Fp8Mma = timer.time(w4a8(GemmPath::DecodeFp8Mma, false), copies);
      // The two fused kernels side by side at 1-16 tokens (Auto runs one of them; cuda_backend.cu says which).
      if (M <= kGemvMaxTokens) row.w4a8Gemv = timer.time(w4a8(GemmPath::Gemv, false), copies);
      if (M <= kGemvInt8MaxTokens) row.w4a8GemvInt8 = timer.time(w4a8(GemmPath::GemvInt8, false), copies);
      if (M <= kGemvMaxTokens) row.w4a8DecodeF16 = timer.time(w4a8(GemmPath::DecodeF16Mma, false), copies);
      if (M <= kGemvMaxTokens && std::getenv("W4A8_GEMV_SWEEP")) {  // tuning aid: the GEMV at each warp count
        std::printf("  gemv warps sweep %s M=%d:", shape.name, M);
        for (int warps = 2; warps <= 8; ++warps) {
          const double us = timer.time(
              [&](int c) {
                GemmOptions options;
                options.path = GemmPath::Gemv;
                options.splitK = warps;
                const W4A8GemmArgs args{x8, xScales, Fp8Format::E4M3FN, M, w[c].view, {nullptr, y, N}};
                return gemmW4A8(ctx, args, nullptr, options) == Status::Ok;
              },
              copies);
          std::printf(" %d:%.2f", warps, us);
        }
        std::printf(" us\n");
        const double resident = timer.time(w4a8(GemmPath::Gemv, false), 1);  // one copy: from L2 when it fits
        std::printf("  gemv with one weight copy (L2-resident when it fits in L2) %s M=%d: %.2f us\n", shape.name, M,
                    resident);
      }
      if (M >= 128) row.w4a8PrefillDequant = timer.time(w4a8(GemmPath::PrefillLt, false), copies);
      row.bf16 = timer.time(
          [&](int c) {
            const LtCall call{wBf16[c], CUDA_R_16BF, xBf16, CUDA_R_16BF, y, CUDA_R_16BF, M, N, K, N, nullptr, nullptr, false};
            return lt->run(call, stream) == CUBLAS_STATUS_SUCCESS;
          },
          bf16Copies);
      row.fp8 = timer.time(
          [&](int c) {
            const LtCall call{w[c].fp8Codes, CUDA_R_8F_E4M3, x8, CUDA_R_8F_E4M3, y, CUDA_R_16BF, M, N, K, N, nullptr, nullptr, false};
            return lt->run(call, stream) == CUBLAS_STATUS_SUCCESS;
          },
          copies);
      rows.push_back(row);
      const double gbs = weightBytes / row.w4a8 * 1e-3, tflops = row.flops / row.w4a8 * 1e-6;
      auto us = [](double t) {
        char text[32];
        if (t < 0) std::snprintf(text, sizeof(text), "-");
        else std::snprintf(text, sizeof(text), "%.2f", t);
        return std::string(text);
      };
      std::printf("%-11s %5d %-16s %9.2f %7.0f %5.2f %7.1f %6.2f | %9s %9s %9s %9s %9s | %9.2f %9.2f %6.2f %6.2f\n",
                  shape.name, M, row.path, row.w4a8, gbs, gbs / hbmRead, tflops, tflops / fp8Peak,
                  us(row.w4a8Fp8Mma).c_str(), us(row.w4a8Gemv).c_str(), us(row.w4a8GemvInt8).c_str(),
                  us(row.w4a8DecodeF16).c_str(),
                  us(row.w4a8PrefillDequant).c_str(), row.bf16, row.fp8, row.bf16 / row.w4a8, row.fp8 / row.w4a8);
      std::fflush(stdout);
    }
    for (int c = 0; c < copies; ++c) {
      cudaFree(w[c].ownedFp8);
      cudaFree(blocks[c]);
    }
    for (uint16_t* p : wBf16) cudaFree(p);
    cudaFree(integerBuffer);
    cudaFree(x8);
    cudaFree(xScales);
    cudaFree(xBf16);
    cudaFree(y);
    BENCH_CUDA(cudaGetLastError());
  }

  // ---- targets (issue 7) -------------------------------------------------------------------------------
  std::printf("\ntargets (H100):\n");
  int pass = 0, miss = 0;
  auto verdict = [&](bool good) {
    (good ? pass : miss)++;
    return good ? "PASS" : "MISS";
  };
  for (const Row& r : rows) {
    const bool big = r.shape == "8192x8192" || r.shape == "8192x28672";
    if (big && r.M <= 16) {
      const double ratio = r.weightBytes / r.w4a8 * 1e-3 / hbmRead;
      std::printf("  %s %-10s M=%-4d W4A8 %.2f x HBM bandwidth in weight bytes (target >= 0.70)\n", verdict(ratio >= 0.7),
                  r.shape.c_str(), r.M, ratio);
      if (r.M == 1)
        std::printf("  %s %-10s M=%-4d W4A8 %.2f x faster than cuBLAS BF16 (target >= 3)\n", verdict(r.bf16 / r.w4a8 >= 3),
                    r.shape.c_str(), r.M, r.bf16 / r.w4a8);
    }
    if (r.M >= 1024) {
      std::printf("  %s %-10s M=%-4d W4A8 (cached FP8 weights) %.2f x cuBLASLt FP8 throughput (target >= 0.80)\n",
                  verdict(r.fp8 / r.w4a8 >= 0.8), r.shape.c_str(), r.M, r.fp8 / r.w4a8);
      std::printf("  %s %-10s M=%-4d W4A8 (dequantizing every call) %.2f x cuBLASLt FP8 throughput (target >= 0.80)\n",
                  verdict(r.fp8 / r.w4a8PrefillDequant >= 0.8), r.shape.c_str(), r.M, r.fp8 / r.w4a8PrefillDequant);
    }
  }
  std::printf("targets: %d PASS, %d MISS\n", pass, miss);

  if (jsonPath) {
    FILE* f = std::fopen(jsonPath, "w");
    if (f) {
      std::fprintf(f, "{\"device\": \"%s\", \"hbmReadGBs\": %.1f, \"hbmCopyGBs\": %.1f, \"fp8PeakTflops\": %.1f, "
                      "\"bf16PeakTflops\": %.1f, \"rows\": [\n",
                   info.name, hbmRead, hbmCopy, fp8Peak, bf16Peak);
      for (size_t i = 0; i < rows.size(); ++i) {
        const Row& r = rows[i];
        std::fprintf(f,
                     "  {\"shape\": \"%s\", \"M\": %d, \"path\": \"%s\", \"w4a8Us\": %.3f, \"w4a8Fp8MmaUs\": %.3f, "
                     "\"w4a8GemvUs\": %.3f, \"w4a8GemvInt8Us\": %.3f, \"w4a8DecodeF16Us\": %.3f, \"w4a8PrefillDequantUs\": %.3f, \"bf16Us\": %.3f, \"fp8Us\": %.3f, \"weightBytes\": %.0f, "
                     "\"flops\": %.0f}%s\n",
                     r.shape.c_str(), r.M, r.path, r.w4a8, r.w4a8Fp8Mma, r.w4a8Gemv, r.w4a8GemvInt8, r.w4a8DecodeF16, r.w4a8PrefillDequant, r.bf16, r.fp8,
                     r.weightBytes, r.flops, i + 1 < rows.size() ? "," : "");
      }
      std::fprintf(f, "]}\n");
      std::fclose(f);
    }
  }
  return 0;
}
#else
int runBench(Context*, const char*) {
  std::printf("bench: built without cuBLASLt, so without its baselines and prefill path: nothing to compare\n");
  return 1;
}
#endif  // W4A8_HAVE_CUBLASLT

}  // namespace w4a8::cuda
