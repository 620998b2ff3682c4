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
export { W4a8Model, type ModelOptions, type GenerateOptions, type GenerationChunk, type GenerationResult, type KvCacheType } from './model/model.js';
export { cudaDevice, type Device, type CudaDeviceInfo, type BackendInfo } from './model/device.js';
export type { SamplingOptions } from './model/sampler.js';
export { MAX_TOP_LOGPROBS, type GeneratedLogprob, type PositionLogprobs, type TokenLogprob } from './model/logprobs.js';
export type { ChatMessage } from './model/tokenizer.js';
export type { ModelConfig, QuantConfig, PackedModel, SourceModel, Tensor } from './model/types.js';
export { DEFAULT_KV_CACHE, KV_CACHE_TYPES } from './model/types.js';
export { readPackedModel, writePackedModel, readSafetensors } from './format/index.js';
export { importModel, importHuggingFace, importLlama2c } from './import/index.js';
export { packModel, type PackOptions } from './pack.js';
export { createServer, type ServerOptions } from './server/server.js';
export { syntheticSourceModel } from './model/synthetic.js';
export {
  quantizeLinear, quantizeLinearAsync, columnOrder, SWEEP_ORDERS, type SweepOrder, type GptqLayerOptions, type GptqLayerResult,
} from './quant/gptq.js';
export { evaluateModel, type EvalOptions, type EvalResult } from './quant/evaluate.js';
export { createNativeModel, createReferenceNativeModel } from './model/native-model.js';
export { DEFAULT_MODEL_DIR, DEFAULT_MODEL_FILE, defaultModelFile } from './default-model.js';
