// Threaded GEMM entry points: what the addon calls. Each splits the output channels N into a few
// contiguous ranges per pool thread (boundaries on kParallelRowTile), runs the backend's kernel on every
// range and returns when all are done. The kernels give bit-identical results for any split, so the
// output does not depend on the thread count.
#pragma once
#include "kernels/dispatch.h"
#include "runtime/thread_pool.h"

namespace w4a8 {

constexpr int kParallelRowTile = 16;  // N-split granularity: a multiple of every backend's row tile

// Active backend (activeKernels()), global pool (globalThreadPool()).
void gemmW4A8Parallel(const W4A8GemmArgs& a);
void gemmW8A8Parallel(const W8A8GemmArgs& a);
void gemmW4A16Parallel(const W4A16GemmArgs& a);
void gemmF32Parallel(const F32GemmArgs& a);
// Rows of X split over the pool (bit-exact like the single-threaded functions).
void quantizeActivationsDynamicParallel(const float* x, int M, int K, Fp8Format f, uint8_t* x8, float* xScales);
void quantizeActivationsStaticParallel(const float* x, int M, int K, float scale, Fp8Format f, uint8_t* x8,
                                       float* xScales);

// Explicit backend and pool (tests and benchmarks).
void gemmW4A8Parallel(const KernelTable& k, ThreadPool& pool, const W4A8GemmArgs& a);
void gemmW8A8Parallel(const KernelTable& k, ThreadPool& pool, const W8A8GemmArgs& a);
void gemmW4A16Parallel(const KernelTable& k, ThreadPool& pool, const W4A16GemmArgs& a);
void gemmF32Parallel(const KernelTable& k, ThreadPool& pool, const F32GemmArgs& a);

}  // namespace w4a8
