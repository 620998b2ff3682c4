/**
 * llama2.c tokenizer.bin -> a Hugging Face tokenizer.json (sentencepiece-style BPE, as HF's
 * LlamaConverter writes for Llama 2), so that the runtime loads every tokenizer the same way.
 *
 * tokenizer.bin (export_tokenizer.py), little-endian:
 *   int32 max_token_length
 *   vocab_size times: float32 score, int32 length, `length` bytes of UTF-8 text
 * export_tokenizer.py wrote sentencepiece's '▁' as a space and BOS/EOS as "\n<s>\n" / "\n</s>\n";
 * byte-fallback pieces stay "<0xNN>". Here they are turned back into sentencepiece pieces.
 *
 * Merges are derived from the vocabulary as HF's SentencePieceExtractor does: every split of a
 * piece into two pieces of the vocabulary is a merge, ranked by the merged piece's score (higher
 * first), splits of one piece ordered by the ids of their halves.
 */
import { readFile } from 'node:fs/promises';
import { checkRegularFile } from '../format/regular-file.js';
import { W4a8Error } from '../errors.js';

const UNK = 0;
const BOS = 1;
const EOS = 2;
const SPIECE_SPACE = '\u2581';
const BYTE_PIECE = /^<0x[0-9A-F]{2}>$/;

interface Piece {
  text: string;
  score: number;
}

function parseTokenizerBin(bytes: Uint8Array, vocabSize: number, file: string): Piece[] {
  const fail = (message: string): never => {
    throw new W4a8Error('E_FILE', `${file}: ${message}`);
  };
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.byteLength < 4) fail('too short for a llama2.c tokenizer');
  const maxLength = view.getInt32(0, true);
  const decoder = new TextDecoder('utf-8', { fatal: false });
  const pieces: Piece[] = [];
  let offset = 4;
  for (let id = 0; id < vocabSize; id++) {
    if (offset + 8 > bytes.byteLength) fail(`ends after ${id} of ${vocabSize} tokens`);
    const score = view.getFloat32(offset, true);
    const length = view.getInt32(offset + 4, true);
    offset += 8;
    if (length < 0 || length > maxLength || offset + length > bytes.byteLength)
      fail(`token ${id} has length ${length} (max_token_length ${maxLength}, ${bytes.byteLength - offset} bytes left)`);
    pieces.push({ text: decoder.decode(bytes.subarray(offset, offset + length)), score });
    offset += length;
  }
  if (offset !== bytes.byteLength) fail(`${bytes.byteLength - offset} bytes left after ${vocabSize} tokens (vocabulary size mismatch?)`);
  return pieces;
}

/** The sentencepiece piece of each token: '▁' for spaces, plain <unk>/<s>/</s>. */
function sentencepiecePieces(pieces: Piece[]): string[] {
  return pieces.map((p, id) => {
    if (id === UNK) return '<unk>';
    if (id === BOS) return '<s>';
    if (id === EOS) return '</s>';
    return p.text.replaceAll(' ', SPIECE_SPACE);
  });
}

function deriveMerges(pieces: string[], scores: number[]): string[] {
  const ids = new Map<string, number>();
  pieces.forEach((p, id) => {
    if (!ids.has(p)) ids.set(p, id);
  });
  // A split's halves are both pieces, so neither is longer than the longest other piece: only the splits within
  // that length are tried (one absurdly long piece made this quadratic: 40,000 characters took 25 s).
  const lengths = pieces.map((p) => Array.from(p).length);
  const sorted = [...lengths].sort((a, b) => b - a);
  const present = new Set(lengths); // (a half can only be as long as some piece)
  const merges: { left: string; right: string; score: number }[] = [];
  pieces.forEach((piece, id) => {
    if (id <= EOS || BYTE_PIECE.test(piece)) return;
    const chars = Array.from(piece); // split on code points, as Python does
    const longestOther = chars.length === sorted[0] && sorted[1] !== sorted[0] ? (sorted[1] ?? 0) : (sorted[0] ?? 0);
    const local: { left: string; right: string; score: number }[] = [];
    for (let i = Math.max(1, chars.length - longestOther); i < Math.min(chars.length, longestOther + 1); i++) {
      if (!present.has(i) || !present.has(chars.length - i)) continue;
      const left = chars.slice(0, i).join('');
      const right = chars.slice(i).join('');
      if (ids.has(left) && ids.has(right)) local.push({ left, right, score: scores[id] });
    }
    local.sort((a, b) => ids.get(a.left)! - ids.get(b.left)! || ids.get(a.right)! - ids.get(b.right)!);
    merges.push(...local);
  });
  merges.sort((a, b) => b.score - a.score); // stable: ties keep vocabulary order
  return merges.map((m) => `${m.left} ${m.right}`);
}

/** The tokenizer.json text for a parsed llama2.c vocabulary. */
export function tokenizerJsonFromPieces(pieces: Piece[]): string {
  const texts = sentencepiecePieces(pieces);
  // A Map, not an object literal: pieces such as "constructor" or "__proto__" must be plain keys.
  const ids = new Map<string, number>();
  texts.forEach((t, id) => {
    if (!ids.has(t)) ids.set(t, id);
  });
  const vocab = Object.fromEntries(ids);
  const special = (id: number) => ({
    id, content: texts[id], single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
  });
  const json = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [UNK, BOS, EOS].filter((id) => id < texts.length).map(special),
    normalizer: {
      type: 'Sequence',
      normalizers: [{ type: 'Prepend', prepend: SPIECE_SPACE }, { type: 'Replace', pattern: { String: ' ' }, content: SPIECE_SPACE }],
    },
    pre_tokenizer: null,
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [
        { SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '<s>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } },
      ],
      special_tokens: { '<s>': { id: '<s>', ids: [BOS], tokens: ['<s>'] } },
    },
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: SPIECE_SPACE }, content: ' ' }, { type: 'ByteFallback' }, { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: {
      type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: true, byte_fallback: true, ignore_merges: false, vocab, merges: deriveMerges(texts, pieces.map((p) => p.score)),
    },
  };
  return JSON.stringify(json);
}

export async function llama2cTokenizerToJson(file: string, vocabSize: number): Promise<string> {
  await checkRegularFile(file);
  let bytes: Uint8Array;
  try {
    bytes = await readFile(file);
  } catch (error) {
    throw new W4a8Error('E_IO', `cannot read '${file}': ${(error as Error).message}`);
  }
  return tokenizerJsonFromPieces(parseTokenizerBin(bytes, vocabSize, file));
}
