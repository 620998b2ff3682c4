/**
 * What the main thread needs of a tokenizer to decode, built by the tokenizer's worker thread (encode-worker.ts), so
 * that opening a model never runs the tokenizer library's constructor on the event loop: for a 152k vocabulary that
 * constructor indexes the vocabulary and the merges in one piece (0.4-0.9 s on the 2-core dev machine), and parsing
 * the 7 MB tokenizer.json takes another 0.2-0.3 s.
 *
 * Decoding needs only the id -> string table, the added tokens and the decoder. So the worker sends its table (one
 * string and the end of each entry) and tokenizer.json with the model swapped for an empty BPE; the main thread
 * builds the library's Tokenizer from that (a few milliseconds) and hands it the table (`model.vocab`, public in the
 * library's types, what its decode() and id_to_token() read). Decoding is then the library's own code on the same
 * strings; a check on sample ids, decoded by both threads, guards against a library whose decode reads more.
 */
import type { Tokenizer } from '@huggingface/tokenizers';
import type { VocabularyEncoding } from './token-bytes.js';

export interface DecodingSummary {
  /** tokenizer.json with the model replaced by an empty BPE (same unknown token and end-of-word suffix). */
  decodingJson: string;
  /** The id -> string table: entry i is vocabText.slice(vocabEnds[i - 1] ?? 0, vocabEnds[i]); ids in `missingIds` have none. */
  vocabText: string;
  vocabEnds: Int32Array;
  missingIds: number[];
  encoding: VocabularyEncoding;
  addedIds: number[];
  maxTokenId: number;
  maxTokenChars: number;
  /** Id sequences and the worker's decoding of each (skip_special_tokens: its text, or its error), for the main thread to compare. */
  checks: { ids: number[]; decoded: string }[];
}

/** The worker's half: `tokenizer` is the complete tokenizer built from `json`. */
export function summarize(
  tokenizer: Tokenizer,
  json: Record<string, unknown>,
  facts: Pick<DecodingSummary, 'encoding' | 'addedIds' | 'maxTokenId' | 'maxTokenChars'>,
): DecodingSummary {
  const vocab = tokenizer.model!.vocab;
  const vocabEnds = new Int32Array(vocab.length);
  const missingIds: number[] = [];
  const pieces: string[] = [];
  let end = 0;
  for (let id = 0; id < vocab.length; id++) {
    const entry = vocab[id];
    if (entry === undefined) missingIds.push(id);
    else pieces.push(entry), (end += entry.length);
    vocabEnds[id] = end;
  }
  const model = tokenizer.model!;
  const standIn = { type: 'BPE', vocab: {}, merges: [], unk_token: model.unk_token, end_of_word_suffix: model.end_of_word_suffix };
  return {
    ...facts,
    decodingJson: JSON.stringify({ ...json, model: standIn }),
    vocabText: pieces.join(''),
    vocabEnds,
    missingIds,
    checks: checkSequences(vocab, missingIds, facts.addedIds).map((ids) => ({ ids, decoded: decodeOutcome(tokenizer, ids) })),
  };
}

/** The text of `ids`, or the error the library gives for them (some decoders throw on an id without a string). */
function decodeOutcome(tokenizer: Tokenizer, ids: number[]): string {
  try {
    return `text: ${tokenizer.decode(ids, { skip_special_tokens: true })}`;
  } catch (error) {
    return `error: ${(error as Error).message}`;
  }
}

/**
 * Of the ids that have a string: the first 64, 64 spread over the vocabulary, and the added tokens between ordinary
 * ones; then, one at a time, a few ids without a string and the two past the end (the unknown-token path: a text or
 * the same error on both threads).
 */
function checkSequences(vocab: readonly (string | undefined)[], missingIds: number[], addedIds: number[]): number[][] {
  const present = [...vocab.keys()].filter((id) => vocab[id] !== undefined);
  if (present.length === 0) return [];
  const first = present.slice(0, 64);
  const spread = Array.from({ length: Math.min(64, present.length) }, (_, i) => present[Math.floor((i * (present.length - 1)) / 63)]);
  const added = addedIds.filter((id) => vocab[id] !== undefined).slice(0, 64).flatMap((id, i) => [id, first[i % first.length]]);
  return [first, spread, ...(added.length > 0 ? [added] : []), ...[...missingIds.slice(0, 4), vocab.length, vocab.length + 1].map((id) => [first[0], id])];
}

/** Entries of the table per event-loop turn while the main thread rebuilds it (about 5 ms each here). */
const ENTRIES_PER_TURN = 20_000;

/**
 * The main thread's half: gives `decoder` (built from summary.decodingJson) the table, yielding between slices of it,
 * then checks it decodes as the worker did. Throws when it does not (the caller builds the complete tokenizer instead).
 */
export function* adoptVocabulary(decoder: Tokenizer, summary: DecodingSummary): Generator<void, void> {
  const { vocabText, vocabEnds, missingIds } = summary;
  const vocab: string[] = new Array(vocabEnds.length);
  for (let id = 0; id < vocabEnds.length; id++) {
    vocab[id] = vocabText.slice(id === 0 ? 0 : vocabEnds[id - 1], vocabEnds[id]);
    if ((id + 1) % ENTRIES_PER_TURN === 0) yield;
  }
  for (const id of missingIds) delete vocab[id];
  decoder.model!.vocab = vocab;
  for (const { ids, decoded } of summary.checks) {
    const here = decodeOutcome(decoder, ids);
    if (here !== decoded) throw new Error(`decoding ${JSON.stringify(ids.slice(0, 8))}... gave ${JSON.stringify(here.slice(0, 40))} here, ${JSON.stringify(decoded.slice(0, 40))} on the tokenizer's thread`);
  }
}
