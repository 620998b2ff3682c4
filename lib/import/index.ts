/**
 * Importers: a model on disk -> SourceModel (full precision, Hugging Face tensor names).
 *   a folder      Hugging Face (config.json + safetensors), hf.ts
 *   a file        llama2.c checkpoint (.bin), llama2c.ts
 */
import { stat } from 'node:fs/promises';
import { W4a8Error } from '../errors.js';
import type { SourceModel } from '../model/types.js';
import { importHuggingFace } from './hf.js';
import { importLlama2c } from './llama2c.js';

export { importHuggingFace } from './hf.js';
export { configFromHuggingFace } from './hf-config.js';
export { importLlama2c, permuteRopeRows, type Llama2cImportOptions } from './llama2c.js';
export { llama2cTokenizerToJson } from './llama2c-tokenizer.js';

/** Imports a Hugging Face model folder or a llama2.c checkpoint file, chosen by what `source` is. */
export async function importModel(source: string): Promise<SourceModel> {
  if (typeof source !== 'string' || source.length === 0) throw new W4a8Error('E_TYPE', 'source must be a non-empty path');
  let info;
  try {
    info = await stat(source);
  } catch (error) {
    throw new W4a8Error('E_IO', `cannot open '${source}': ${(error as Error).message}`);
  }
  return info.isDirectory() ? importHuggingFace(source) : importLlama2c(source);
}
