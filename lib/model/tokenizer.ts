/**
 * Text <-> token ids through the model's own tokenizer.json (@huggingface/tokenizers), and its chat
 * template (@huggingface/jinja).
 */
import { Tokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';
import { W4a8Error } from '../errors.js';
import { EncodeThread } from './encode-thread.js';

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
  // (for-in: Object.entries took 110-140 ms for 152k tokens, for-in 35-50; JSON objects inherit nothing enumerable.)
  else if (vocab && typeof vocab === 'object') for (const text in vocab) note((vocab as Record<string, unknown>)[text], text);
  if (Array.isArray(json.added_tokens))
    for (const t of json.added_tokens as { id?: unknown; content?: unknown }[]) note(t?.id, t?.content);
  return { maxId, maxChars };
}

interface TokenizerParts {
  tokenizer: Tokenizer;
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
  return { tokenizer, template, specialTokens, maxTokenId, maxTokenChars };
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

  /** Where encodeAsync tokenizes long texts: started at the first one, from the JSON load() keeps here. */
  private thread?: EncodeThread;
  private threadSource?: { tokenizerJson: string; tokenizerConfigJson?: string };
  private closed = false;

  private constructor(parts: TokenizerParts) {
    ({ tokenizer: this.tokenizer, template: this.template, specialTokens: this.specialTokens } = parts);
    ({ maxTokenId: this.maxTokenId, maxTokenChars: this.maxTokenChars } = parts);
  }

  /** From tokenizer.json (and tokenizer_config.json, a chat template) text, at once. */
  static fromJson(tokenizerJson: string, tokenizerConfigJson?: string, chatTemplate?: string): TextTokenizer {
    const stages = buildParts(tokenizerJson, tokenizerConfigJson, chatTemplate);
    for (;;) {
      const stage = stages.next();
      if (stage.done) return new TextTokenizer(stage.value);
    }
  }

  /**
   * The same, with an event-loop turn between the stages, and a worker thread for encodeAsync, started at the first
   * long text (what opening a model uses). close() stops the thread.
   */
  static async load(tokenizerJson: string, tokenizerConfigJson?: string, chatTemplate?: string): Promise<TextTokenizer> {
    const stages = buildParts(tokenizerJson, tokenizerConfigJson, chatTemplate);
    for (;;) {
      const stage = stages.next();
      if (stage.done) {
        const tokenizer = new TextTokenizer(stage.value);
        tokenizer.threadSource = { tokenizerJson, tokenizerConfigJson };
        return tokenizer;
      }
      await new Promise((resolve) => setImmediate(resolve));
    }
  }

  /**
   * encode(), on the worker thread for a text of OFFLOAD_CHARS or more (the same ids: the thread runs a copy of
   * this tokenizer); here for shorter texts, and when there is no thread or it has failed.
   */
  async encodeAsync(text: string, addSpecialTokens = true): Promise<number[]> {
    if (text.length >= OFFLOAD_CHARS && this.threadSource && !this.thread && !this.closed)
      this.thread = new EncodeThread(this.threadSource.tokenizerJson, this.threadSource.tokenizerConfigJson);
    const thread = this.thread;
    if (text.length < OFFLOAD_CHARS || !thread?.usable) return this.encode(text, addSpecialTokens);
    try {
      return await thread.encode(text, addSpecialTokens);
    } catch (error) {
      if (thread.usable || (error as W4a8Error).code === 'E_DISPOSED') throw error;
      return this.encode(text, addSpecialTokens); // (the thread died under it)
    }
  }

  /** Stops the encode thread for good (encodes waiting for it reject with E_DISPOSED); encode() still works. */
  async close(): Promise<void> {
    this.closed = true;
    await this.thread?.close();
  }

  encode(text: string, addSpecialTokens = true): number[] {
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
