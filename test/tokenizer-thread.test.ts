// Opening a tokenizer without holding the event loop (lib/model/tokenizer-summary.ts): load() decodes with a
// decode-only tokenizer built from what the worker thread sends; everything it gives must be what the complete
// tokenizer (fromJson, on this thread) gives, for each kind of tokenizer.json.
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { Tokenizer } from '@huggingface/tokenizers';
import { TextTokenizer } from '../lib/model/tokenizer.js';
import { adoptVocabulary, summarize } from '../lib/model/tokenizer-summary.js';
import { byteLevelTokenizerJson } from '../lib/model/synthetic.js';
import { tokenizerJsonFromPieces } from '../lib/import/llama2c-tokenizer.js';
import { seededRandom } from '../lib/random.js';
import { turnsWhile } from './fixtures/event-loop.js';

/** A sentencepiece-style BPE as the llama2.c importer writes it: <unk> <s> </s>, 256 byte tokens, then pieces. */
function sentencepieceJson(): string {
  const pieces = [{ text: '<unk>', score: 0 }, { text: '\n<s>\n', score: 0 }, { text: '\n</s>\n', score: 0 }];
  for (let b = 0; b < 256; b++) pieces.push({ text: `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`, score: 0 });
  const words = [' ', 'e', 't', 'a', 'o', 'n', ' t', 'th', ' th', 'he', ' the', 'é', 'ca', 'caf', ' caf', ' café', 'at', ' cat'];
  words.forEach((text, i) => pieces.push({ text, score: -i }));
  return tokenizerJsonFromPieces(pieces);
}

/** A WordPiece tokenizer (BERT-style: another model type, normalizer, pre-tokenizer and decoder). */
function wordPieceJson(): string {
  const words = ['[UNK]', '[CLS]', '[SEP]', 'the', 'cat', '##s', 'sat', 'on', 'mat', ',', '.', 'un', '##believ', '##able', "'", 're'];
  const special = (id: number) => ({ id, content: words[id], single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  return JSON.stringify({
    version: '1.0', truncation: null, padding: null, added_tokens: [0, 1, 2].map(special),
    normalizer: { type: 'BertNormalizer', clean_text: true, handle_chinese_chars: true, strip_accents: null, lowercase: true },
    pre_tokenizer: { type: 'BertPreTokenizer' }, post_processor: null,
    decoder: { type: 'WordPiece', prefix: '##', cleanup: true },
    model: { type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##', max_input_chars_per_word: 100, vocab: Object.fromEntries(words.map((w, i) => [w, i])) },
  });
}

/** A Unigram tokenizer (sentencepiece's other model) with a Metaspace pre-tokenizer and decoder. */
function unigramJson(): string {
  const pieces: [string, number][] = [['<unk>', 0], ['\u2581the', -1], ['\u2581cat', -2], ['s', -3], ['\u2581', -4]];
  for (const ch of 'thecasön') pieces.push([ch, -5]);
  const metaspace = { type: 'Metaspace', replacement: '\u2581', prepend_scheme: 'always', split: true };
  return JSON.stringify({
    version: '1.0', truncation: null, padding: null, normalizer: null, pre_tokenizer: metaspace, post_processor: null, decoder: metaspace,
    added_tokens: [{ id: 0, content: '<unk>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true }],
    model: { type: 'Unigram', unk_id: 0, vocab: pieces, byte_fallback: false },
  });
}

/** A BPE whose word-final pieces end in '</w>' (end_of_word_suffix, the BPEDecoder), with gaps in its ids. */
function endOfWordJson(): string {
  const vocab: Record<string, number> = {};
  [...'abcdehorstw'].forEach((ch, i) => { vocab[ch] = 2 * i; vocab[`${ch}</w>`] = 2 * i + 1; });
  Object.assign(vocab, { 'th': 30, 'the</w>': 31, 'ca': 33, 'cat</w>': 35 }); // (no 32, 34: gaps)
  return JSON.stringify({
    version: '1.0', truncation: null, padding: null, normalizer: null, pre_tokenizer: { type: 'Whitespace' }, post_processor: null,
    decoder: { type: 'BPEDecoder', suffix: '</w>' },
    added_tokens: [{ id: 40, content: '<eos>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
      { id: 41, content: '<sep>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: false }],
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: '</w>', fuse_unk: false,
      byte_fallback: false, vocab, merges: ['t h', 'th e</w>', 'c a', 'ca t</w>'] },
  });
}

/** What a call gives: its value, or its error's message (both tokenizers must agree on either). */
function outcome<T>(call: () => T): T | string {
  try {
    return call();
  } catch (error) {
    return `error: ${(error as Error).message}`;
  }
}

const KINDS: [string, () => string, string][] = [
  ['byte-level BPE', byteLevelTokenizerJson, 'naïve café – 東京 🚀 hello world'],
  ['sentencepiece-style BPE', sentencepieceJson, 'the cat at the café, naïve 東京'],
  ['WordPiece', wordPieceJson, "The cats sat on the mat, unbelievable. re're"],
  ['Unigram', unigramJson, 'the cats sat on the mat'],
  ['BPE with end-of-word suffix', endOfWordJson, 'the cat sat <sep> at the cow'],
];

/** The tokenizer-thread warnings `body` gives rise to (load() warns when it falls back to building here). */
async function threadWarnings<T>(body: () => Promise<T>): Promise<{ result: T; warnings: string[] }> {
  const warnings: string[] = [];
  const onWarning = (warning: Error & { code?: string }) => { if (warning.code === 'W4A8_TOKENIZER_THREAD') warnings.push(warning.message); };
  process.on('warning', onWarning);
  try {
    const result = await body();
    await new Promise((resolve) => setTimeout(resolve, 20)); // (warnings are emitted on a later tick)
    return { result, warnings };
  } finally {
    process.off('warning', onWarning);
  }
}

describe('tokenizer opened off the event loop (load)', () => {
  it.each(KINDS)('%s: decode, token bytes, ids and bounds are the complete tokenizer\'s', async (_kind, makeJson, text) => {
    const json = makeJson();
    const complete = TextTokenizer.fromJson(json);
    const { result: loaded, warnings } = await threadWarnings(() => TextTokenizer.load(json));
    try {
      expect(warnings).toEqual([]); // (the decode-only path, not the fallback)
      expect(loaded.maxTokenId).toBe(complete.maxTokenId);
      expect(loaded.maxTokenChars).toBe(complete.maxTokenChars);
      const size = complete.maxTokenId + 1;
      const random = seededRandom(7);
      for (let n = 0; n < 200; n++) { // (ids up to 3 past the vocabulary too: both must give the same text or error)
        const ids = Array.from({ length: 1 + Math.floor(random() * 12) }, () => Math.floor(random() * (size + 3)));
        expect(outcome(() => loaded.decode(ids))).toBe(outcome(() => complete.decode(ids)));
      }
      for (let id = 0; id < size + 3; id++)
        expect(outcome(() => Array.from(loaded.tokenBytes(id)))).toEqual(outcome(() => Array.from(complete.tokenBytes(id))));
      for (const special of [true, false]) {
        const ids = complete.encode(text, special);
        expect(await loaded.encodeAsync(text, special)).toEqual(ids); // (on the worker thread)
        expect(loaded.decode(ids)).toBe(complete.decode(ids));
      }
      expect(loaded.encode(text)).toEqual(complete.encode(text)); // (builds the complete tokenizer here, once)
    } finally {
      await loaded.close();
    }
  });

  /**
   * Sends `texts` (name -> text) to the thread of a tokenizer opened with load(), all at once: the names in the order
   * they were done, and each one's ids.
   */
  async function completionOrder(texts: [string, string][]): Promise<{ done: string[]; ids: Map<string, number[]> }> {
    const loaded = await TextTokenizer.load(byteLevelTokenizerJson());
    try {
      const done: string[] = [], ids = new Map<string, number[]>();
      await Promise.all(texts.map(([name, text]) => loaded.encodeAsync(text).then((got) => { done.push(name); ids.set(name, got); })));
      return { done, ids };
    } finally {
      await loaded.close();
    }
  }
  const LONG_TEXT = 'naïve café 東京 '.repeat(4000);

  it('on the thread, a short text is encoded ahead of long ones that wait', async () => {
    const { done, ids } = await completionOrder([...Array.from({ length: 6 }, (_, i): [string, string] => [`long ${i}`, LONG_TEXT]), ['short', 'hello world']]);
    expect(done.indexOf('short')).toBeLessThanOrEqual(1); // (behind the one being encoded when it arrived, at most)
    expect(ids.get('short')).toEqual(TextTokenizer.fromJson(byteLevelTokenizerJson()).encode('hello world'));
  });

  it('on the thread, a stream of short texts does not starve a long one (8 short ones at most go ahead of it)', async () => {
    const { done } = await completionOrder([['first long', LONG_TEXT], ['long', LONG_TEXT],
      ...Array.from({ length: 30 }, (_, i): [string, string] => [`short ${i}`, `hello ${i}`])]);
    // (8 short ones, a long one, 8 short ones, the other long one: or the first long one first, when it was on its way
    // before the rest arrived)
    expect(done.indexOf('first long')).toBeLessThanOrEqual(8);
    expect(done.indexOf('long')).toBeLessThanOrEqual(17);
    expect(done.indexOf('short 29')).toBe(31);
  });

  it.each([
    [['--max-old-space-size=2048'], ''], [['--input-type=module'], ''], [['--max-old-space-size=2048', '--input-type=module'], ''],
    [[], '--input-type=module'],
  ])('the thread starts in a process run with node %j (and -e), NODE_OPTIONS %j', async (flags, nodeOptions) => {
    const dist = path.resolve(__dirname, '..', 'dist');
    const script = `
      const { TextTokenizer } = await import(${JSON.stringify(path.join(dist, 'model', 'tokenizer.js'))});
      const { byteLevelTokenizerJson } = await import(${JSON.stringify(path.join(dist, 'model', 'synthetic.js'))});
      const warnings = [];
      process.on('warning', (w) => warnings.push(w.message));
      const tokenizer = await TextTokenizer.load(byteLevelTokenizerJson());
      const ids = await tokenizer.encodeAsync('naïve café '.repeat(1000));
      await tokenizer.close();
      await new Promise((resolve) => setTimeout(resolve, 20));
      console.log(JSON.stringify({ warnings, tokens: ids.length }));`;
    // (-e runs a script as CommonJS unless --input-type says otherwise: the dynamic imports work in both)
    const env = { ...process.env, NODE_OPTIONS: nodeOptions };
    const { stdout } = await promisify(execFile)(process.execPath, [...flags, '-e', script], { timeout: 30_000, env });
    expect(JSON.parse(stdout.trim())).toEqual({ warnings: [], tokens: expect.any(Number) });
  });

  it('gives the event loop turns while the worker builds the tokenizer', async () => {
    const { result: loaded, turns } = await turnsWhile(() => TextTokenizer.load(sentencepieceJson()));
    expect(turns).toBeGreaterThan(3);
    await loaded.close();
  });

  it('a tokenizer the worker cannot build is E_FILE from load, with no fallback warning', async () => {
    const { warnings } = await threadWarnings(async () => {
      for (const bad of ['{', JSON.stringify({ model: {} }), JSON.stringify({ ...JSON.parse(byteLevelTokenizerJson()), decoder: { type: 'Nope' } })])
        await expect(TextTokenizer.load(bad)).rejects.toMatchObject({ code: 'E_FILE', message: expect.stringContaining('cannot be loaded') });
    });
    expect(warnings).toEqual([]);
  });

  it('the decode-only tokenizer refuses a vocabulary that decodes otherwise than on the worker', () => {
    const json = JSON.parse(byteLevelTokenizerJson());
    const complete = new Tokenizer(json, {});
    const summary = summarize(complete, json, { encoding: 'byte-level', addedIds: [256, 257], maxTokenId: 257, maxTokenChars: 4 });
    const decoder = () => new Tokenizer(JSON.parse(summary.decodingJson), {});
    const adopt = (s: typeof summary) => { for (const _ of adoptVocabulary(decoder(), s)); };
    expect(() => adopt(summary)).not.toThrow();
    const altered = { ...summary, checks: summary.checks.map((c, i) => (i === 1 ? { ...c, decoded: c.decoded + 'x' } : c)) };
    expect(() => adopt(altered)).toThrow(/on the tokenizer's thread/);
  });
});
