/**
 * The project's own trained model, shipped in models/default/ (see its README): the Hugging Face folder
 * it was trained into and the W4A8 file packed from it. `w4a8 start` and `w4a8 generate` use it when no
 * model is named.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { W4a8Error } from './errors.js';

/** models/default/, found from this module's place (lib/ when run from source, dist/ when compiled). */
export const DEFAULT_MODEL_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'models', 'default');

/** The packed file shipped beside the checkpoint (DPQ+GAR, G=128, e4m3fn). */
export const DEFAULT_MODEL_FILE = path.join(DEFAULT_MODEL_DIR, 'model.w4a8');

/** The packed default model's path; a clear error saying how to rebuild it when it is missing. */
export function defaultModelFile(): string {
  if (existsSync(DEFAULT_MODEL_FILE)) return DEFAULT_MODEL_FILE;
  throw new W4a8Error('E_IO', `the default model ${DEFAULT_MODEL_FILE} is missing; rebuild it with ` +
    '`w4a8 pack models/default -o models/default/model.w4a8 --method dpq --gar --calib-sample`, or name a model');
}
