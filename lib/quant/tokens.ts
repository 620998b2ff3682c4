/**
 * Token sequences for calibration and evaluation: read from a token-id file, cut from a tokenized text,
 * or sampled from a full-precision model (for models without a tokenizer, e.g. stories260K).
 *
 * Token-id files:
 *   *.json   [[id, id, ...], ...] (one array per sequence) or [id, id, ...] (one stream)
 *   other    text, one sequence per non-empty line, ids separated by white space or commas
 */
import { readFile, writeFile } from 'node:fs/promises';
import { W4a8Error } from '../errors.js';
import type { NativeModelHandle } from '../native.js';
import { seededRandom } from '../random.js';

export { seededRandom };

function checkIds(values: unknown[], where: string, vocabSize?: number): Int32Array {
  const out = new Int32Array(values.length);
  values.forEach((v, i) => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || (vocabSize !== undefined && v >= vocabSize))
      throw new W4a8Error('E_FILE', `${where}: token ${i} is ${JSON.stringify(v)}, expected an integer in [0, ${vocabSize ?? '2^31'})`);
    out[i] = v;
  });
  return out;
}

/** Parses the text of a token-id file (format above); ids are checked against vocabSize when given. */
export function parseTokenFile(text: string, file: string, vocabSize?: number): Int32Array[] {
  let sequences: Int32Array[];
  if (file.endsWith('.json')) {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (error) {
      throw new W4a8Error('E_FILE', `${file}: not JSON: ${(error as Error).message}`);
    }
    if (!Array.isArray(value)) throw new W4a8Error('E_FILE', `${file}: expected an array of token ids or of sequences`);
    sequences = value.length > 0 && Array.isArray(value[0])
      ? value.map((s, i) => {
        if (!Array.isArray(s)) throw new W4a8Error('E_FILE', `${file}: sequence ${i} is not an array`);
        return checkIds(s, `${file}: sequence ${i}`, vocabSize);
      })
      : [checkIds(value, file, vocabSize)];
  } else {
    sequences = text.split('\n').map((line) => line.trim()).filter((line) => line.length > 0)
      .map((line, i) => checkIds(line.split(/[\s,]+/).filter((s) => s.length > 0).map(Number), `${file}: line ${i + 1}`, vocabSize));
  }
  sequences = sequences.filter((s) => s.length > 0);
  if (sequences.length === 0) throw new W4a8Error('E_FILE', `${file}: no tokens`);
  return sequences;
}

export async function readTokenFile(file: string, vocabSize?: number): Promise<Int32Array[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (error) {
    throw new W4a8Error('E_IO', `cannot read '${file}': ${(error as Error).message}`);
  }
  return parseTokenFile(text, file, vocabSize);
}

/** Writes sequences as a JSON token-id file (one array per sequence, one per line). */
export async function writeTokenFile(file: string, sequences: readonly Int32Array[]): Promise<void> {
  const body = sequences.map((s) => `[${Array.from(s).join(',')}]`).join(',\n');
  try {
    await writeFile(file, `[\n${body}\n]\n`);
  } catch (error) {
    throw new W4a8Error('E_IO', `cannot write '${file}': ${(error as Error).message}`);
  }
}

/**
 * `count` sequences of `length` tokens cut from one token stream at evenly spaced offsets (disjoint when
 * the stream is long enough; fewer sequences, or shorter ones, when it is short).
 */
export function cutSequences(stream: Int32Array, count: number, length: number): Int32Array[] {
  if (stream.length <= length) return [stream.slice()];
  const available = Math.floor(stream.length / length);
  const n = Math.min(count, available);
  const spacing = Math.floor(stream.length / n);
  return Array.from({ length: n }, (_, i) => stream.slice(i * spacing, i * spacing + length));
}

export interface SampleOptions {
  /** Number of sequences. */
  count: number;
  /** Tokens per sequence, the first one included (at most the model's context). */
  length: number;
  /** Seed of the draws. */
  seed: number;
  /** Softmax temperature (default 1: the model's own distribution). */
  temperature?: number;
  /** The first token of every sequence (the model's BOS). */
  firstToken: number;
  vocabSize: number;
  /** Sequences advanced together in one step (default 64). */
  batch?: number;
}

/** Draws a token from logits at a temperature with the generator. */
function draw(logits: Float32Array, temperature: number, random: () => number): number {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  if (temperature === 0) return logits.indexOf(max);
  let total = 0;
  const p = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) total += p[i] = Math.exp((logits[i] - max) / temperature);
  let r = random() * total;
  for (let i = 0; i < p.length; i++) if ((r -= p[i]) < 0) return i;
  return p.length - 1;
}

/**
 * Sequences sampled from a model (usually the FP32 reference, createReferenceNativeModel): each starts
 * with firstToken, then draws from the softmax of the logits at the temperature. Deterministic for a
 * seed; every sequence has its own generator (seed, sequence index), so the batch size changes nothing.
 */
export async function sampleSequences(handle: NativeModelHandle, options: SampleOptions): Promise<Int32Array[]> {
  const { count, length, seed, firstToken, vocabSize } = options;
  const temperature = options.temperature ?? 1;
  const batch = options.batch ?? 64;
  const out: Int32Array[] = [];
  for (let start = 0; start < count; start += batch) {
    const n = Math.min(batch, count - start);
    const sequences = Array.from({ length: n }, () => new Int32Array(length));
    const randoms = Array.from({ length: n }, (_, i) => seededRandom((seed * 1000003 + start + i) >>> 0));
    const ids = Int32Array.from({ length: n }, () => handle.createSequence(length));
    try {
      const logits = new Float32Array(n * vocabSize);
      const tokens = new Int32Array(n).fill(firstToken);
      for (let t = 0; t < length; t++) {
        for (let i = 0; i < n; i++) sequences[i][t] = tokens[i];
        if (t === length - 1) break;
        await handle.step(ids, new Int32Array(n).fill(1), tokens, logits);
        for (let i = 0; i < n; i++) tokens[i] = draw(logits.subarray(i * vocabSize, (i + 1) * vocabSize), temperature, randoms[i]);
      }
    } finally {
      for (const id of ids) handle.freeSequence(id);
    }
    out.push(...sequences);
  }
  return out;
}
