/**
 * Text <-> token ids through the model's own tokenizer.json (@huggingface/tokenizers), and its chat
 * template (@huggingface/jinja).
 */
import { Tokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';
import { W4a8Error } from '../errors.js';
import { EncodeThread } from './encode-thread.js';
import { vocabularyBytes, vocabularyEncoding, type VocabularyEncoding } from './token-bytes.js';

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
  tokenizer: Tokenizer;
  /** How vocabulary strings encode bytes (tokenBytes), and the added tokens (whose strings are plain text). */
  encoding: VocabularyEncoding;
  addedIds: Set<number>;
  template?: Template;
  specialTokens: Record<string, string>;
  maxTokenId: number;
  maxTokenChars: number;
}

/**
 * The tokenizer's parts, built in stages: parsing tokenizer.json, indexing it (the library's constructor) and
 * reading its bounds each take tens of milliseconds for a 152k vocabulary, so TextTokenizer.load gives the event
 * loop a turn between them (the generator yields there).
 */
function* buildParts(tokenizerJson: string, tokenizerConfigJson?: string, chatTemplate?: string): Generator<void, TokenizerParts> {
  const cannotLoad = (error: unknown) => new W4a8Error('E_FILE', `the model's tokenizer cannot be loaded: ${(error as Error).message}`);
  let config: Record<string, unknown>, json: Record<string, unknown>;
  try {
    config = tokenizerConfigJson ? JSON.parse(tokenizerConfigJson) : {};
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
  return { tokenizer, encoding: vocabularyEncoding(json), addedIds, template, specialTokens, maxTokenId, maxTokenChars };
}

/** Texts this long or longer go to the encode thread (about 1k tokens: 3-4 ms here, against ~0.3 ms of messaging). */
export const OFFLOAD_CHARS = 4096;

export class TextTokenizer {
  private readonly tokenizer: Tokenizer;
  private readonly template?: Template;
  private readonly specialTokens: Record<string, string>;
  /** The largest token id the tokenizer can produce (-1 if it names none). */
  readonly maxTokenId: number;
  /** The most characters one token stands for (an upper bound: text of n characters has >= n / this tokens). */
  readonly maxTokenChars: number;

  /** Where encodeAsync tokenizes long texts: started at the first one, from `sources`. */
  private thread?: EncodeThread;
  private closed = false;

  private readonly encoding: VocabularyEncoding;
  private readonly addedIds: Set<number>;

  private constructor(parts: TokenizerParts, private readonly sources: TokenizerSources) {
    ({ tokenizer: this.tokenizer, template: this.template, specialTokens: this.specialTokens } = parts);
    ({ encoding: this.encoding, addedIds: this.addedIds } = parts);
    ({ maxTokenId: this.maxTokenId, maxTokenChars: this.maxTokenChars } = parts);
  }

  /**
   * From tokenizer.json (and tokenizer_config.json, a chat template) text, at once. encodeAsync starts a worker
   * thread at the first long text it gets (kept referenced: the sources, for that thread).
   */
  static fromJson(tokenizerJson: string, tokenizerConfigJson?: string, chatTemplate?: string): TextTokenizer {
    const stages = buildParts(tokenizerJson, tokenizerConfigJson, chatTemplate);
    for (;;) {
      const stage = stages.next();
      if (stage.done) return new TextTokenizer(stage.value, { tokenizerJson, tokenizerConfigJson, chatTemplate });
    }
  }

  /** The same, with an event-loop turn between the stages (what opening a model uses). */
  static async load(tokenizerJson: string, tokenizerConfigJson?: string, chatTemplate?: string): Promise<TextTokenizer> {
    const stages = buildParts(tokenizerJson, tokenizerConfigJson, chatTemplate);
    for (;;) {
      const stage = stages.next();
      if (stage.done) return new TextTokenizer(stage.value, { tokenizerJson, tokenizerConfigJson, chatTemplate });
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /**
   * encode(), on the worker thread for a text of OFFLOAD_CHARS or more (the same ids: the thread runs a copy of
   * this tokenizer, built from the same sources; the first long text waits for it to start); here for shorter
   * texts, after close(), and once the thread has failed (with a process warning, from encode-thread.ts).
   */
  async encodeAsync(text: string, addSpecialTokens = true): Promise<number[]> {
    if (typeof text !== 'string') throw new W4a8Error('E_TYPE', `text must be a string, got ${typeof text}`);
    if (text.length < OFFLOAD_CHARS || this.closed) return this.encode(text, addSpecialTokens);
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
   * about half a second for a 152k vocabulary); `w4a8 serve` does this at startup. Idempotent.
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

  encode(text: string, addSpecialTokens = true): number[] {
    if (typeof text !== 'string') throw new W4a8Error('E_TYPE', `text must be a string, got ${typeof text}`);
    try {
      return this.tokenizer.encode(text, { add_special_tokens: addSpecialTokens }).ids;
    } catch (error) {
      throw new W4a8Error('E_FILE', `the model's tokenizer failed to encode: ${(error as Error).message}`);
    }
  }

  decode(ids: readonly number[]): string {
    if (ids.length === 0) return ''; // (the library refuses an empty list: e.g. a generation that was EOS at once)
    try {
      return this.tokenizer.decode(Array.from(ids), { skip_special_tokens: true });
    } catch (error) {
      throw new W4a8Error('E_FILE', `the model's tokenizer failed to decode: ${(error as Error).message}`);
    }
  }

  /** Token `id`'s own bytes (token-bytes.ts): part of a character's UTF-8 where its decoding alone is U+FFFD. */
  tokenBytes(id: number): Uint8Array {
    const token = this.addedIds.has(id) ? undefined : this.tokenizer.id_to_token(id);
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
