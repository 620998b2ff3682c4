/**
 * readPackedModel: a .w4a8 file mapped read-only, validated completely before any tensor byte is
 * touched, in this order:
 *   1. container (safetensors-header.ts): header length within the file, JSON, dtypes, shapes,
 *      sizes, offsets inside the data section, tensors tiling it without holes or overlaps;
 *   2. metadata (packed-metadata.ts): format "w4a8", a known format_version, config and quantization
 *      with every field checked, tokenizer texts that parse;
 *   3. tensors (packed-check.ts): each tensor the config requires, with its dtype and shape; no other;
 *   4. values: zero points in 0..15 (8 when symmetric), scales finite and > 0, norms and biases finite
 *      (skippable).
 * Any failure: W4a8Error('E_FILE') naming the file and the tensor or field.
 *
 * The tensors' data are views into the mapping (aligned copies only if a foreign writer misaligned
 * them), so opening a model costs no reads until the weights are used. They are READ-ONLY.
 */
import type { PackedModel, Tensor } from '../model/types.js';
import { checkPackedTensors, checkPackedValues } from './packed-check.js';
import { decodePackedMetadata } from './packed-metadata.js';
import { readSafetensors, storedToTensor } from './safetensors-read.js';

export interface ReadPackedOptions {
  /**
   * Check the zero points and scales of every linear layer, and the norms and biases (packed-check.ts),
   * after the structure: reads a few percent of the file. Default true.
   */
  checkValues?: boolean;
}

export async function readPackedModel(path: string, options: ReadPackedOptions = {}): Promise<PackedModel> {
  const file = await readSafetensors(path);
  const description = decodePackedMetadata(file.metadata, path);
  checkPackedTensors(description.config, description.quant, file.tensors, `${path}: `, 'E_FILE');
  const tensors = new Map<string, Tensor>();
  for (const [name, stored] of file.tensors) tensors.set(name, storedToTensor(name, stored, path));
  if (options.checkValues !== false) {
    const codes = { zeros: 'E_FILE', scales: 'E_FILE', floats: 'E_FILE' } as const;
    await checkPackedValues(description.config, description.quant, tensors, `${path}: `, codes, 'worker');
  }
  return { ...description, tensors };
}
