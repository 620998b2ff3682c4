/** The one check before a model file is opened (the reader, the mapper and the importers share it). */
import { stat } from 'node:fs/promises';
import { W4a8Error } from '../errors.js';

/**
 * Throws unless `path` is a regular file: E_IO when it cannot be stat'ed, E_FILE for anything else (a directory,
 * or a FIFO, whose open for reading would wait until a writer came).
 */
export async function checkRegularFile(path: string): Promise<void> {
  let isFile: boolean;
  try {
    isFile = (await stat(path)).isFile();
  } catch (error) {
    throw new W4a8Error('E_IO', `cannot open '${path}': ${(error as Error).message}`);
  }
  if (!isFile) throw new W4a8Error('E_FILE', `'${path}' is not a regular file`);
}
