/**
 * Where calibration and evaluation token sequences come from, for the pack and eval commands:
 *   a text file     tokenized with the model's tokenizer into one stream, cut into sequences
 *   a token file    token ids (lib/quant/tokens.ts formats), each sequence cut to the length
 *   sampling        drawn from the FP32 model itself (temperature 1, seeded), for models without a
 *                   tokenizer such as stories260K; use different seeds for calibration and evaluation
 */
import { readFile } from 'node:fs/promises';
import { W4a8Error } from '../errors.js';
import { createReferenceNativeModel } from '../model/native-model.js';
import { TextTokenizer } from '../model/tokenizer.js';
import type { ModelConfig, SourceModel } from '../model/types.js';
import { cutSequences, readTokenFile, sampleSequences } from './tokens.js';

export interface TokenSource {
  /** Plain text, tokenized with the model's tokenizer. */
  textFile?: string;
  /** Token ids (JSON arrays, or one sequence per line). */
  tokensFile?: string;
  /** Sample from the FP32 model (needs `source`). */
  sample?: boolean;
  /** Sequences wanted (text and sampling: exactly, when the text is long enough; token files: at most). */
  count: number;
  /** Tokens per sequence (clipped to the model's context). */
  length: number;
  /** Sampling seed. */
  seed: number;
}

export interface TokenizerTexts {
  tokenizerJson?: string;
  tokenizerConfigJson?: string;
}

async function readText(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (error) {
    throw new W4a8Error('E_IO', `cannot read '${file}': ${(error as Error).message}`);
  }
}

/** The text as one token stream (BOS first, as the tokenizer's post-processor adds it). */
export function tokenizeText(model: TokenizerTexts, text: string, what: string): Int32Array {
  if (!model.tokenizerJson)
    throw new W4a8Error('E_OPTION', `${what}: the model has no tokenizer; give token ids (--tokens) or sample from the FP32 model`);
  const tokenizer = TextTokenizer.fromJson(model.tokenizerJson, model.tokenizerConfigJson);
  return Int32Array.from(tokenizer.encode(text, true));
}

/** Each sequence cut into pieces of at most `length` tokens (pieces shorter than 2 dropped), at most `count` in all. */
export function splitSequences(sequences: readonly Int32Array[], length: number, count: number): Int32Array[] {
  const out: Int32Array[] = [];
  for (const s of sequences) {
    for (let begin = 0; begin < s.length && out.length < count; begin += length) {
      const piece = s.subarray(begin, Math.min(s.length, begin + length));
      if (piece.length >= 2) out.push(piece);
    }
    if (out.length >= count) break;
  }
  return out;
}

/**
 * Token sequences for a model from exactly one of text, token file or sampling. `source` (the FP32
 * model) is needed to sample; `tokenizer` to read text.
 */
export async function loadSequences(config: ModelConfig, from: TokenSource, what: string,
  options: { source?: SourceModel; tokenizer?: TokenizerTexts }): Promise<Int32Array[]> {
  const given = [from.textFile !== undefined, from.tokensFile !== undefined, from.sample === true].filter(Boolean).length;
  if (given !== 1) throw new W4a8Error('E_OPTION', `${what}: give exactly one of a text file, a token-id file or sampling`);
  const length = Math.min(from.length, config.maxSeqLen);
  if (!Number.isInteger(from.count) || from.count < 1) throw new W4a8Error('E_OPTION', `${what}: the sequence count must be a positive integer`);
  if (!Number.isInteger(length) || length < 2) throw new W4a8Error('E_OPTION', `${what}: the sequence length must be an integer >= 2`);
  if (from.textFile !== undefined) {
    const stream = tokenizeText(options.tokenizer ?? {}, await readText(from.textFile), what);
    if (stream.length < 2) throw new W4a8Error('E_OPTION', `${what}: '${from.textFile}' holds fewer than 2 tokens`);
    return cutSequences(stream, from.count, length);
  }
  if (from.tokensFile !== undefined)
    return splitSequences(await readTokenFile(from.tokensFile, config.vocabSize), length, from.count);
  if (!options.source) throw new W4a8Error('E_OPTION', `${what}: sampling needs the FP32 model`);
  const handle = createReferenceNativeModel(options.source);
  try {
    return await sampleSequences(handle, {
      count: from.count, length, seed: from.seed, firstToken: config.bosTokenId ?? 1, vocabSize: config.vocabSize,
    });
  } finally {
    handle.dispose();
  }
}
