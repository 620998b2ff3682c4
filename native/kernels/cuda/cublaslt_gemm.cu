// cuBLASLt "TN" GEMMs (internal.h: LtGemm): the prefill path's FP8 GEMM and the bench's BF16 / FP8
// baselines. Plans (descriptors, layouts and the heuristic's first algorithm) are cached per shape and type,
// so a call costs one cublasLtMatmul after the first.
#if W4A8_HAVE_CUBLASLT
#include "kernels/cuda/internal.h"

namespace w4a8::cudakern {

LtGemm::~LtGemm() {
  for (auto& entry : plans_) {
    Plan& p = entry.second;
    if (p.a) cublasLtMatrixLayoutDestroy(p.a);
    if (p.b) cublasLtMatrixLayoutDestroy(p.b);
    if (p.d) cublasLtMatrixLayoutDestroy(p.d);
    if (p.desc) cublasLtMatmulDescDestroy(p.desc);
  }
  if (workspace_) cudaFree(workspace_);
  if (handle_) cublasLtDestroy(handle_);
}

cublasStatus_t LtGemm::init(size_t workspaceBytes) {
  cublasStatus_t s = cublasLtCreate(&handle_);
  if (s != CUBLAS_STATUS_SUCCESS) return s;
  if (cudaMalloc(&workspace_, workspaceBytes) != cudaSuccess) {
    workspace_ = nullptr;
    return CUBLAS_STATUS_ALLOC_FAILED;
  }
  workspaceBytes_ = workspaceBytes;
  return CUBLAS_STATUS_SUCCESS;
}

static bool isFp8(cudaDataType_t t) { return t == CUDA_R_8F_E4M3 || t == CUDA_R_8F_E5M2; }

LtGemm::Plan* LtGemm::plan(const LtCall& call) {
  const Key key{call.M, call.N, call.K, call.ldd, (int)call.aType, (int)call.bType, (int)call.dType,
                call.outerVectorScales};
  auto found = plans_.find(key);
  if (found != plans_.end()) return &found->second;
  Plan& p = plans_[key];  // stays !ok when any step fails: later calls of this key see NOT_SUPPORTED at once

  if (cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS) return &p;
  const cublasOperation_t transA = CUBLAS_OP_T, transB = CUBLAS_OP_N;
  cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &transA, sizeof(transA));
  cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &transB, sizeof(transB));
  if (isFp8(call.aType)) {
    const int8_t fastAccumulation = 0;  // cuBLASLt then promotes the tensor cores' FP22 sums to FP32 often
    cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fastAccumulation,
                                   sizeof(fastAccumulation));
    if (call.outerVectorScales) {
      const int32_t mode = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
      if (cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &mode, sizeof(mode)) !=
              CUBLAS_STATUS_SUCCESS ||
          cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &mode, sizeof(mode)) !=
              CUBLAS_STATUS_SUCCESS)
        return &p;
    }
  }
  // Column-major views: A is K x N (ld K) transposed, B is K x M (ld K), D is N x M (ld ldd).
  if (cublasLtMatrixLayoutCreate(&p.a, call.aType, call.K, call.N, call.K) != CUBLAS_STATUS_SUCCESS) return &p;
  if (cublasLtMatrixLayoutCreate(&p.b, call.bType, call.K, call.M, call.K) != CUBLAS_STATUS_SUCCESS) return &p;
  if (cublasLtMatrixLayoutCreate(&p.d, call.dType, call.N, call.M, call.ldd) != CUBLAS_STATUS_SUCCESS) return &p;

  cublasLtMatmulPreference_t preference = nullptr;
  if (cublasLtMatmulPreferenceCreate(&preference) != CUBLAS_STATUS_SUCCESS) return &p;
  const uint64_t workspace = workspaceBytes_;
  cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                       sizeof(workspace));
  cublasLtMatmulHeuristicResult_t result;
  int foundCount = 0;
  const cublasStatus_t s = cublasLtMatmulAlgoGetHeuristic(handle_, p.desc, p.a, p.b, p.d, p.d, preference, 1,
                                                          &result, &foundCount);
  cublasLtMatmulPreferenceDestroy(preference);
  if (s != CUBLAS_STATUS_SUCCESS || foundCount == 0) return &p;
  p.algo = result.algo;
  p.workspace = result.workspaceSize;
  p.ok = true;
  return &p;
}

cublasStatus_t LtGemm::run(const LtCall& call, cudaStream_t stream) {
  Plan* p = plan(call);
  if (!p->ok) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (isFp8(call.aType)) {
    // Pointers are per call (attributes of the cached descriptor). A null per-tensor scale means 1.
    const void* aScale = call.aScale;
    const void* bScale = call.bScale;
    cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &aScale, sizeof(aScale));
    cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &bScale, sizeof(bScale));
  }
  const float alpha = 1.0f, beta = 0.0f;
  return cublasLtMatmul(handle_, p->desc, &alpha, call.a, p->a, call.b, p->b, &beta, call.d, p->d, call.d, p->d,
                        &p->algo, workspace_, p->workspace, stream);
}

}  // namespace w4a8::cudakern
#endif  // W4A8_HAVE_CUBLASLT
