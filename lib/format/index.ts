/** The packed W4A8 model file (a safetensors container) and plain safetensors files: docs/format.md. */
export { writePackedModel } from './packed-write.js';
export { readPackedModel, type ReadPackedOptions } from './packed-read.js';
export {
  readSafetensors, storedToTensor, storedToFloat32, type SafetensorsFile, type StoredTensor,
} from './safetensors-read.js';
export { writeSafetensors, type WriteResult } from './safetensors-write.js';
export { parseSafetensorsHeader, type SafetensorsHeader, type HeaderEntry } from './safetensors-header.js';
export { DTYPE_SIZES, type SafetensorsDType } from './dtypes.js';
export { checkModelConfig, checkQuantConfig } from './config.js';
export { FORMAT_NAME, FORMAT_VERSION, METADATA_KEYS } from './packed-metadata.js';
export {
  EMBEDDING, LM_HEAD, LM_HEAD_LINEAR, FINAL_NORM, PACKED_PARTS, paddedInputs, linearShape, allLinearNames, hasBias, sourceTensorShapes,
  packedLinearSpecs, packedLinearNames, packedTensorSpecs, int4Layer, type TensorSpec,
} from './layout.js';
export { f16ToF32, bf16ToF32, tensorToFloat32 } from './widen.js';
