export { W4a8Error, type W4a8ErrorCode } from './errors.js';
export {
  FP8_FORMATS, type Fp8Format, type Fp8FormatInfo, type EncodeOptions, fp8FormatInfo, encodeFp8, encodeFp8FromBf16,
  decodeFp8, decodeFp8ToBf16, floatToBf16, bf16ToFloat,
} from './fp8.js';
export {
  Int4Weights, Fp8Weights, GROUP_SIZES, type GroupSize, type Int4PackOptions, type Int4WeightsParts, type Fp8WeightsParts,
} from './weights.js';
export {
  gemmW4A8, gemmW4A8Async, gemmW8A8, gemmW8A8Async, gemmW4A16, gemmW4A16Async, gemmF32, gemmF32Async,
  quantizeActivations, backend, type GemmOptions, type QuantizedGemmOptions, type OutputType, type Matrix,
  type QuantizedActivations,
} from './gemm.js';
