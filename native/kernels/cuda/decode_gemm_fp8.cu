// Instantiations of the fused decode GEMM, FP8 tensor-core variant (e4m3 x e4m3, Hopper's FP22 sums of 32
// products promoted to FP32 after every MMA): token tiles 1, 2, 4, 8. See decode_gemm.cuh.
#include "kernels/cuda/decode_gemm.cuh"

namespace w4a8::cudakern {

cudaError_t launchDecodeFp8(const DecodeParams& p, int tokenTiles, cudaStream_t stream) {
  switch (tokenTiles) {
    case 1: return launchDecodeT<1, true, false>(p, stream);
    case 2: return launchDecodeT<2, true, false>(p, stream);
    case 4: return launchDecodeT<4, true, false>(p, stream);
    case 8: return launchDecodeT<8, true, false>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

int blocksPerSmFp8(int tokenTiles) {
  switch (tokenTiles) {
    case 1: return blocksPerSmT<1, true, false>();
    case 2: return blocksPerSmT<2, true, false>();
    case 4: return blocksPerSmT<4, true, false>();
    default: return blocksPerSmT<8, true, false>();
  }
}

cudaError_t launchDecodeGemm(const DecodeParams& p, int tokenTiles, bool fp8Mma, cudaStream_t stream) {
  return fp8Mma ? launchDecodeFp8(p, tokenTiles, stream) : launchDecodeF16(p, tokenTiles, stream);
}

int decodeGemmBlocksPerSm(int tokenTiles, bool fp8Mma, bool weightsE5M2) {
  return fp8Mma ? blocksPerSmFp8(tokenTiles) : blocksPerSmF16(tokenTiles, weightsE5M2);
}

}  // namespace w4a8::cudakern
