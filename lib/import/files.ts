/** Small file helpers for the importers: E_IO when a file cannot be read, E_FILE when it does not parse. */
import { readFile, stat } from 'node:fs/promises';
import { W4a8Error } from '../errors.js';
import { checkRegularFile } from '../format/regular-file.js';

export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

export async function readText(path: string): Promise<string> {
  await checkRegularFile(path);
  try {
    return await readFile(path, 'utf8');
  } catch (error) {
    throw new W4a8Error('E_IO', `cannot read '${path}': ${(error as Error).message}`);
  }
}

/** The text when the file exists, else undefined. */
export async function readOptionalText(path: string): Promise<string | undefined> {
  return (await exists(path)) ? readText(path) : undefined;
}

export function parseJsonText(text: string, path: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new W4a8Error('E_FILE', `${path}: not valid JSON: ${(error as Error).message}`);
  }
}

export async function readJson(path: string): Promise<unknown> {
  return parseJsonText(await readText(path), path);
}
