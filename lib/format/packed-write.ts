/**
 * writePackedModel: a PackedModel to a .w4a8 file (a safetensors container, see docs/format.md).
 * The model is checked as a reader would check it (config, quantization, every tensor's dtype and
 * shape, zero points and scales), so that no file is written that readPackedModel would refuse; the write itself streams the
 * tensors and is atomic (safetensors-write.ts).
 */
import { W4a8Error } from '../errors.js';
import type { PackedModel } from '../model/types.js';
import { checkModelConfig, checkQuantConfig } from './config.js';
import { checkPackedTensors, checkPackedValues } from './packed-check.js';
import { encodePackedMetadata } from './packed-metadata.js';
import { writeSafetensors, type WriteResult } from './safetensors-write.js';

export async function writePackedModel(path: string, model: PackedModel): Promise<WriteResult> {
  if (typeof model !== 'object' || model === null) throw new W4a8Error('E_TYPE', 'model must be a PackedModel object');
  const config = checkModelConfig(model.config, 'model.config', 'E_OPTION');
  const quant = checkQuantConfig(model.quant, 'model.quant', 'E_OPTION');
  if (!(model.tensors instanceof Map)) throw new W4a8Error('E_TYPE', 'model.tensors must be a Map of name -> Tensor');
  checkPackedTensors(config, quant, model.tensors, 'model: ', 'E_SHAPE');
  await checkPackedValues(config, quant, model.tensors, 'model: ', { zeros: 'E_CODE', scales: 'E_SCALE', floats: 'E_VALUE' }, 'caller');
  const metadata = encodePackedMetadata({ ...model, config, quant });
  return writeSafetensors(path, model.tensors, metadata);
}
