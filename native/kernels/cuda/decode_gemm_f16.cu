// Instantiations of the fused decode GEMM, FP16 tensor-core variant (exact FP8 -> FP16 operands, FP32
// accumulation): token tiles 1, 2, 4, 8 x weights e4m3-family / e5m2. See decode_gemm.cuh.
#include "kernels/cuda/decode_gemm.cuh"

namespace w4a8::cudakern {

cudaError_t launchDecodeF16(const DecodeParams& p, int tokenTiles, cudaStream_t stream) {
  const bool e5m2 = p.wFormat == Fp8Format::E5M2;
  switch (tokenTiles) {
    case 1: return e5m2 ? launchDecodeT<1, false, true>(p, stream) : launchDecodeT<1, false, false>(p, stream);
    case 2: return e5m2 ? launchDecodeT<2, false, true>(p, stream) : launchDecodeT<2, false, false>(p, stream);
    case 4: return e5m2 ? launchDecodeT<4, false, true>(p, stream) : launchDecodeT<4, false, false>(p, stream);
    case 8: return e5m2 ? launchDecodeT<8, false, true>(p, stream) : launchDecodeT<8, false, false>(p, stream);
    default: return cudaErrorInvalidValue;
  }
}

int blocksPerSmF16(int tokenTiles, bool weightsE5M2) {
  switch (tokenTiles) {
    case 1: return weightsE5M2 ? blocksPerSmT<1, false, true>() : blocksPerSmT<1, false, false>();
    case 2: return weightsE5M2 ? blocksPerSmT<2, false, true>() : blocksPerSmT<2, false, false>();
    case 4: return weightsE5M2 ? blocksPerSmT<4, false, true>() : blocksPerSmT<4, false, false>();
    default: return weightsE5M2 ? blocksPerSmT<8, false, true>() : blocksPerSmT<8, false, false>();
  }
}

}  // namespace w4a8::cudakern
