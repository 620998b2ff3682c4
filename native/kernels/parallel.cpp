#include "kernels/parallel.h"

namespace w4a8 {
namespace {

// Below this many multiply-adds a call runs on the calling thread: waking workers costs more.
constexpr double kMinParallelMacs = 1 << 18;
// Activation quantization splits rows over the pool from this many elements: about 0.5 ns each on one core
// (division-bound), so 16 rows of 2048 take ~16 us against a few us to wake the workers. (With the GEMMs'
// threshold, every decode step of up to 32 rows of the 1B model quantized on one thread: ~2 ms of a 16-row step.)
constexpr double kMinParallelQuantize = 1 << 15;
// Chunks per pool thread: a few, so that a thread that loses its core is covered by the others. Each
// chunk converts the activations again (M x K, small next to the chunk's N/chunks x M x K work).
constexpr int kChunksPerThread = 4;

template <class Args, class Kernel>
void splitN(ThreadPool& pool, const Args& a, int N, double macs, Kernel kernel) {
  if (macs < kMinParallelMacs || N <= kParallelRowTile) {
    kernel(a, 0, N);
    return;
  }
  pool.parallelFor(N, kParallelRowTile, [&](int begin, int end) { kernel(a, begin, end); }, kChunksPerThread);
}

double macs(int M, int N, int K) { return (double)M * N * K; }

}  // namespace

void gemmW4A8Parallel(const KernelTable& k, ThreadPool& pool, const W4A8GemmArgs& a) {
  if (k.gemmW4A8Pooled && a.M >= k.pooledMinRows) return k.gemmW4A8Pooled(pool, a);
  splitN(pool, a, a.w.rows, macs(a.M, a.w.rows, a.w.cols), k.gemmW4A8);
}
void gemmW8A8Parallel(const KernelTable& k, ThreadPool& pool, const W8A8GemmArgs& a) {
  if (k.gemmW8A8Pooled && a.M >= k.pooledMinRows) return k.gemmW8A8Pooled(pool, a);
  splitN(pool, a, a.w.rows, macs(a.M, a.w.rows, a.w.cols), k.gemmW8A8);
}
void gemmW4A16Parallel(const KernelTable& k, ThreadPool& pool, const W4A16GemmArgs& a) {
  if (k.gemmW4A16Pooled && a.M >= k.pooledMinRows) return k.gemmW4A16Pooled(pool, a);
  splitN(pool, a, a.w.rows, macs(a.M, a.w.rows, a.w.cols), k.gemmW4A16);
}
void gemmF32Parallel(const KernelTable& k, ThreadPool& pool, const F32GemmArgs& a) {
  splitN(pool, a, a.N, macs(a.M, a.N, a.K), k.gemmF32);
}

void gemmW4A8Parallel(const W4A8GemmArgs& a) { gemmW4A8Parallel(activeKernels(), globalThreadPool(), a); }
void gemmW8A8Parallel(const W8A8GemmArgs& a) { gemmW8A8Parallel(activeKernels(), globalThreadPool(), a); }
void gemmW4A16Parallel(const W4A16GemmArgs& a) { gemmW4A16Parallel(activeKernels(), globalThreadPool(), a); }
void gemmF32Parallel(const F32GemmArgs& a) { gemmF32Parallel(activeKernels(), globalThreadPool(), a); }

void quantizeActivationsDynamicParallel(const float* x, int M, int K, Fp8Format f, uint8_t* x8, float* xScales) {
  const KernelTable& k = activeKernels();
  if (M < 2 || macs(M, 1, K) < kMinParallelQuantize) return k.quantizeActivationsDynamic(x, M, K, f, x8, xScales);
  globalThreadPool().parallelFor(M, 1, [&](int begin, int end) {
    k.quantizeActivationsDynamic(x + (size_t)begin * K, end - begin, K, f, x8 + (size_t)begin * K, xScales + begin);
  });
}

void quantizeActivationsStaticParallel(const float* x, int M, int K, float scale, Fp8Format f, uint8_t* x8,
                                       float* xScales) {
  const KernelTable& k = activeKernels();
  if (M < 2 || macs(M, 1, K) < kMinParallelQuantize) return k.quantizeActivationsStatic(x, M, K, scale, f, x8, xScales);
  globalThreadPool().parallelFor(M, 1, [&](int begin, int end) {
    k.quantizeActivationsStatic(x + (size_t)begin * K, end - begin, K, scale, f, x8 + (size_t)begin * K,
                                xScales + begin);
  });
}

}  // namespace w4a8
