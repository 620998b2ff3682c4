/**
 * Text <-> token ids through the model's own tokenizer.json (@huggingface/tokenizers), and its chat
 * template (@huggingface/jinja).
 */
import { Tokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';
import { W4a8Error } from '../errors.js';
import { EncodeThread } from './encode-thread.js';
import { vocabularyBytes, vocabularyEncoding, type VocabularyEncoding } from './token-bytes.js';
import { adoptVocabulary, summarize, type DecodingSummary } from './tokenizer-summary.js';

const utf8 = new TextEncoder();

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant' | string;
  content: string;
}

/** Roles a chat message may have (OpenAI's, as chat templates know them). */
export const CHAT_ROLES: readonly string[] = ['system', 'developer', 'user', 'assistant', 'tool'];

/** The largest token id of a tokenizer.json and the longest token's length in characters (vocab and added tokens). */
function vocabularyBounds(json: Record<string, unknown>): { maxId: number; maxChars: number } {
  let maxId = -1, maxChars = 1;
  const note = (id: unknown, text: unknown) => {
    if (typeof id === 'number' && id > maxId) maxId = id;
    if (typeof text === 'string' && text.length > maxChars) maxChars = text.length;
  };
  const vocab = (json.model as { vocab?: unknown } | undefined)?.vocab;
  if (Array.isArray(vocab)) vocab.forEach((entry, id) => note(id, Array.isArray(entry) ? entry[0] : undefined)); // Unigram
  // (for-in over own keys: Object.entries took 110-140 ms for 152k tokens, for-in 35-50.)
  else if (vocab && typeof vocab === 'object')
    for (const text in vocab) if (Object.hasOwn(vocab, text)) note((vocab as Record<string, unknown>)[text], text);
  if (Array.isArray(json.added_tokens))
    for (const t of json.added_tokens as { id?: unknown; content?: unknown }[]) note(t?.id, t?.content);
  return { maxId, maxChars };
}

interface TokenizerSources {
  tokenizerJson: string;
  tokenizerConfigJson?: string;
  chatTemplate?: string;
}

interface TokenizerParts {
  /** The library's tokenizer: the complete one, or (canEncode false) one that only decodes (tokenizer-summary.ts). */
  tokenizer: Tokenizer;
  canEncode: boolean;
  /** How vocabulary strings encode bytes (tokenBytes), and the added tokens (whose strings are plain text). */
  encoding: VocabularyEncoding;
  addedIds: Set<number>;
  template?: Template;
  specialTokens: Record<string, string>;
  maxTokenId: number;
  maxTokenChars: number;
}

const cannotLoad = (error: unknown) => new W4a8Error('E_FILE', `the model's tokenizer cannot be loaded: ${(error as Error).message}`);

function parseConfig(tokenizerConfigJson?: string): Record<string, unknown> {
  try {
    return tokenizerConfigJson ? JSON.parse(tokenizerConfigJson) : {};
  } catch (error) {
    throw cannotLoad(error);
  }
}

/** The chat template (the given text, else tokenizer_config.json's) and the special tokens it may name. */
function templateParts(config: Record<string, unknown>, chatTemplate?: string): Pick<TokenizerParts, 'template' | 'specialTokens'> {
  const source = chatTemplate ?? (typeof config.chat_template === 'string' ? config.chat_template : undefined);
  let template: Template | undefined;
  try {
    if (source) template = new Template(source);
  } catch (error) {
    throw new W4a8Error('E_FILE', `the model's chat template cannot be parsed: ${(error as Error).message}`);
  }
  const specialTokens: Record<string, string> = {};
  for (const key of ['bos_token', 'eos_token', 'unk_token', 'pad_token']) {
    const v = config[key];
    if (typeof v === 'string') specialTokens[key] = v;
    else if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string')
      specialTokens[key] = (v as { content: string }).content;
  }
  return { template, specialTokens };
}

/**
 * The complete tokenizer's parts (and the parsed tokenizer.json), built in stages: parsing tokenizer.json, indexing
 * it (the library's constructor) and reading its bounds each take tens to hundreds of milliseconds for a 152k
 * vocabulary (the generator yields between them).
 */
function* buildParts({ tokenizerJson, tokenizerConfigJson, chatTemplate }: TokenizerSources): Generator<void, { parts: TokenizerParts; json: Record<string, unknown> }> {
  const config = parseConfig(tokenizerConfigJson);
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(tokenizerJson);
  } catch (error) {
    throw cannotLoad(error);
  }
  yield;
  let tokenizer: Tokenizer;
  try {
    tokenizer = new Tokenizer(json, config);
  } catch (error) {
    throw cannotLoad(error);
  }
  yield;
  const { maxId: maxTokenId, maxChars: maxTokenChars } = vocabularyBounds(json);
  const added = Array.isArray(json.added_tokens) ? (json.added_tokens as { id?: unknown }[]) : [];
  const addedIds = new Set(added.map((t) => t?.id).filter((id): id is number => typeof id === 'number'));
  const parts = { tokenizer, canEncode: true, encoding: vocabularyEncoding(json), addedIds, ...templateParts(config, chatTemplate), maxTokenId, maxTokenChars };
  return { parts, json };
}

/** A decode-only tokenizer's parts from the worker's summary (tokenizer-summary.ts), in stages of a few milliseconds. */
function* decodingParts(summary: DecodingSummary, { tokenizerConfigJson, chatTemplate }: TokenizerSources): Generator<void, TokenizerParts> {
  const config = parseConfig(tokenizerConfigJson);
  const tokenizer = new Tokenizer(JSON.parse(summary.decodingJson), config);
  yield* adoptVocabulary(tokenizer, summary);
  const { encoding, maxTokenId, maxTokenChars } = summary;
  return { tokenizer, canEncode: false, encoding, addedIds: new Set(summary.addedIds), ...templateParts(config, chatTemplate), maxTokenId, maxTokenChars };
}

/** Runs a staged build to its end at once. */
function runNow<T>(stages: Generator<void, T>): T {
  for (;;) {
    const stage = stages.next();
    if (stage.done) return stage.value;
  }
}

/** Runs a staged build with an event-loop turn between its stages. */
async function runStaged<T>(stages: Generator<void, T>): Promise<T> {
  for (;;) {
    const stage = stages.next();
    if (stage.done) return stage.value;
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/**
 * Long texts (about 1k tokens: 3-4 ms here, against ~0.3 ms of messaging): of a tokenizer made with fromJson, these go
 * to the encode thread; after load() every text does, and the thread encodes shorter ones first (encode-worker.ts).
 */
export const OFFLOAD_CHARS = 4096;

export class TextTokenizer {
  /** The library's tokenizer that decodes: the complete one, or a decode-only one (opened with load()). */
  private readonly decoder: Tokenizer;
  /** The one that encodes on this thread: built here at the first synchronous encode after load(). */
  private encoder?: Tokenizer;
  private readonly template?: Template;
  private readonly specialTokens: Record<string, string>;
  /** The largest token id the tokenizer can produce (-1 if it names none). */
  readonly maxTokenId: number;
  /** The most characters one token stands for (an upper bound: text of n characters has >= n / this tokens). */
  readonly maxTokenChars: number;

  /** Where encodeAsync tokenizes: started by load(), or at the first long text, from `sources`. */
  private thread?: EncodeThread;
  private closed = false;

  private readonly encoding: VocabularyEncoding;
  private readonly addedIds: Set<number>;

  private constructor(parts: TokenizerParts, private readonly sources: TokenizerSources, thread?: EncodeThread) {
    ({ tokenizer: this.decoder, template: this.template, specialTokens: this.specialTokens } = parts);
    if (parts.canEncode) this.encoder = parts.tokenizer;
    ({ encoding: this.encoding, addedIds: this.addedIds } = parts);
    ({ maxTokenId: this.maxTokenId, maxTokenChars: this.maxTokenChars } = parts);
    this.thread = thread;
  }

  /**
   * From tokenizer.json (and tokenizer_config.json, a chat template) text, at once, on this thread. encodeAsync starts a
   * worker thread at the first long text it gets (kept referenced: the sources, for that thread).
   */
  static fromJson(tokenizerJson: string, tokenizerConfigJson?: string, chatTemplate?: string): TextTokenizer {
    const sources = { tokenizerJson, tokenizerConfigJson, chatTemplate };
    return new TextTokenizer(runNow(buildParts(sources)).parts, sources);
  }

  /**
   * The same, without holding the event loop (what opening a model uses): the tokenizer's worker thread builds the
   * complete tokenizer, this thread a decode-only one from what the worker sends (tokenizer-summary.ts), in slices of a
   * few milliseconds. Should the thread not start or its decoding differ, the complete tokenizer is built here, in
   * stages (the longest, the library's constructor, 0.4-0.9 s for a 152k vocabulary).
   */
  static async load(tokenizerJson: string, tokenizerConfigJson?: string, chatTemplate?: string): Promise<TextTokenizer> {
    const sources = { tokenizerJson, tokenizerConfigJson, chatTemplate };
    let thread: EncodeThread | undefined;
    try {
      thread = new EncodeThread(tokenizerJson, tokenizerConfigJson, chatTemplate);
      return new TextTokenizer(await runStaged(decodingParts(await thread.ready, sources)), sources, thread);
    } catch (error) {
      if (thread?.rejectedSources) {
        await thread.close();
        throw error; // (the worker could not build this tokenizer: neither can this thread)
      }
      // (A thread that failed has said so: encode-thread.ts.)
      if (thread?.usable !== false)
        process.emitWarning(`the tokenizer is built on the main thread: ${(error as Error).message}`, { code: 'W4A8_TOKENIZER_THREAD' });
      try {
        return new TextTokenizer((await runStaged(buildParts(sources))).parts, sources, thread);
      } catch (buildError) {
        await thread?.close();
        throw buildError;
      }
    }
  }

  /**
   * What the tokenizer's worker thread runs: the complete tokenizer, and a function that makes the summary the main
   * thread decodes with (tokenizer-summary.ts).
   */
  static forWorker(tokenizerJson: string, tokenizerConfigJson?: string, chatTemplate?: string): { tokenizer: TextTokenizer; summarize: () => DecodingSummary } {
    const sources = { tokenizerJson, tokenizerConfigJson, chatTemplate };
    const { parts, json } = runNow(buildParts(sources));
    const { encoding, maxTokenId, maxTokenChars } = parts;
    return {
      tokenizer: new TextTokenizer(parts, sources),
      summarize: () => summarize(parts.tokenizer, json, { encoding, addedIds: [...parts.addedIds], maxTokenId, maxTokenChars }),
    };
  }

  /**
   * encode(), on the worker thread: every text when the tokenizer was opened with load(), and texts of OFFLOAD_CHARS or
   * more otherwise (the same ids: the thread runs a copy of this tokenizer, built from the same sources). Here: short
   * texts when this thread has the complete tokenizer, every text after close() and once the thread has failed (with a
   * process warning, from encode-thread.ts).
   */
  async encodeAsync(text: string, addSpecialTokens = true): Promise<number[]> {
    if (typeof text !== 'string') throw new W4a8Error('E_TYPE', `text must be a string, got ${typeof text}`);
    if ((this.encoder && text.length < OFFLOAD_CHARS) || this.closed) return this.encode(text, addSpecialTokens);
    const thread = this.startEncodeThread();
    if (!thread.usable) return this.encode(text, addSpecialTokens);
    try {
      return await thread.encode(text, addSpecialTokens);
    } catch (error) {
      if (thread.usable || (error as W4a8Error).code === 'E_DISPOSED') throw error;
      return this.encode(text, addSpecialTokens); // (the thread died under it)
    }
  }

  /**
   * Starts the encode thread now rather than at the first long text (which then waits for it to build its tokenizer:
   * about a second for a 152k vocabulary) for a tokenizer made with fromJson. Idempotent (load() starts it).
   */
  startEncodeThread(): EncodeThread {
    if (this.closed) throw new W4a8Error('E_DISPOSED', 'the tokenizer has been closed');
    const s = this.sources;
    return (this.thread ??= new EncodeThread(s.tokenizerJson, s.tokenizerConfigJson, s.chatTemplate));
  }

  /** Stops the encode thread for good (encodes waiting for it reject with E_DISPOSED); encode() still works, here. */
  async close(): Promise<void> {
    this.closed = true;
    await this.thread?.close();
  }

  /**
   * Text -> ids on this thread. After load(), the first call builds the complete tokenizer here, holding the event
   * loop as long as that takes (encodeAsync does not).
   */
  encode(text: string, addSpecialTokens = true): number[] {
    if (typeof text !== 'string') throw new W4a8Error('E_TYPE', `text must be a string, got ${typeof text}`);
    this.encoder ??= runNow(buildParts(this.sources)).parts.tokenizer;
    try {
      return this.encoder.encode(text, { add_special_tokens: addSpecialTokens }).ids;
    } catch (error) {
      throw new W4a8Error('E_FILE', `the model's tokenizer failed to encode: ${(error as Error).message}`);
    }
  }

  decode(ids: readonly number[]): string {
    if (ids.length === 0) return ''; // (the library refuses an empty list: e.g. a generation that was EOS at once)
    try {
      return this.decoder.decode(Array.from(ids), { skip_special_tokens: true });
    } catch (error) {
      throw new W4a8Error('E_FILE', `the model's tokenizer failed to decode: ${(error as Error).message}`);
    }
  }

  /** Token `id`'s own bytes (token-bytes.ts): part of a character's UTF-8 where its decoding alone is U+FFFD. */
  tokenBytes(id: number): Uint8Array {
    const token = this.addedIds.has(id) ? undefined : this.decoder.id_to_token(id);
    return (token !== undefined && vocabularyBytes(token, this.encoding)) || utf8.encode(this.decode([id]));
  }

  /** Throws E_FILE when a token id lies past a vocabulary of `vocabSize` rows (the model could not embed it). */
  checkFitsVocabulary(vocabSize: number): void {
    if (this.maxTokenId >= vocabSize)
      throw new W4a8Error('E_FILE', `the tokenizer has token id ${this.maxTokenId}; the model's vocabulary has ${vocabSize} rows`);
  }

  get hasChatTemplate(): boolean {
    return this.template !== undefined;
  }

  applyChatTemplate(messages: ChatMessage[], addGenerationPrompt = true): string {
    if (!this.template) throw new W4a8Error('E_OPTION', 'this model has no chat template');
    try {
      return this.template.render({ messages, add_generation_prompt: addGenerationPrompt, ...this.specialTokens });
    } catch (error) {
      // Templates raise on messages they do not take (e.g. roles that do not alternate): the caller's messages.
      throw new W4a8Error('E_TEMPLATE', `the model's chat template failed on these messages: ${(error as Error).message}`);
    }
  }
}
