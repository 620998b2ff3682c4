/**
 * W4a8Model: a packed W4A8 Llama-family model ready to generate. One model serves many concurrent
 * calls: every generate/stream/generateBatch request joins the same continuous batch (engine.ts), and
 * all native work runs off the JS thread.
 */
import { W4a8Error } from '../errors.js';
import { readPackedModel } from '../format/index.js';
import { backend as cpuBackend } from '../gemm.js';
import { callNative, callNativeAsync, type NativeModelHandle } from '../native.js';
import { checkDevice, cudaDevice, type BackendInfo, type Device } from './device.js';
import { watchAbort } from './abort-watch.js';
import { BatchEngine, abortError, type EngineResult, type EngineStats, type FinishReason } from './engine.js';
import { MAX_TOP_LOGPROBS, type GeneratedLogprob, type PositionLogprobs } from './logprobs.js';
import { createNativeModel } from './native-model.js';
import { resolveSampling, type SamplingOptions } from './sampler.js';
import { TextStream } from './text-stream.js';
import { TextTokenizer, type ChatMessage } from './tokenizer.js';
import { DEFAULT_KV_CACHE, KV_CACHE_TYPES, type KvCacheType, type ModelConfig, type PackedModel, type QuantConfig } from './types.js';
import { checkChoice, describe } from '../validate.js';

export type { KvCacheType };

export interface ModelOptions {
  /** Tokens per sequence (prompt + generated); default and maximum: the model's maxSeqLen. */
  contextLength?: number;
  /** Most sequences decoded together in one step. Default 16. */
  maxBatch?: number;
  /** Most prompt tokens fed per step over all sequences (chunked prefill). Default 256. */
  prefillChunk?: number;
  /** KV cache budget in tokens over running sequences (each reserves prompt + maxTokens). Default maxBatch × contextLength. */
  maxTokensInFlight?: number;
  /**
   * Most requests waiting for a place in the batch (beyond those the batch and KV budget take at the next step);
   * more are rejected with E_BUSY. Default 1024.
   */
  maxQueue?: number;
  /**
   * Where the forward steps run: 'cpu', 'cuda' (an NVIDIA Hopper GPU; E_UNSUPPORTED when there is none or
   * the addon was built without CUDA) or 'auto' (the GPU when there is one, else the CPU). Default 'auto'
   * for load() and create(); fromPacked() runs on the CPU.
   */
  device?: Device;
  /**
   * KV cache elements: 'bf16' (default: half the memory per cached token and half the bytes attention reads; keys
   * and values rounded to nearest even, attention still computes in FP32) or 'f32' (attention as the FP32
   * reference computes it). CPU and GPU alike.
   */
  kvCache?: KvCacheType;
}

/** Chunks a stream() consumer may leave unread before its sequence pauses (backpressure). */
const STREAM_HIGH_WATER = 32;

export interface GenerateOptions extends SamplingOptions {
  /** Most tokens to generate. Default 256. */
  maxTokens?: number;
  /** Strings that end the generation; the text stops before them. */
  stop?: string[];
  signal?: AbortSignal;
  /**
   * stream() only: end the request with E_STALLED when, after its stream filled (STREAM_HIGH_WATER chunks unread:
   * its sequence paused), the reader takes no chunk for this many milliseconds before catching up to half; this
   * frees its place in the batch and its KV cache. Default: no limit (a held, unread stream waits for its reader).
   */
  stallTimeoutMs?: number;
  /**
   * Report each generated token's log probability, and this many (0..20) of the most likely tokens at its step:
   * the model's distribution (log-softmax of the raw logits, before logit bias, penalties and temperature).
   */
  logprobs?: number;
  /**
   * Report each prompt token's log probability after the first (what the model gave it from the tokens before),
   * and this many (0..20) of the most likely tokens at its position: once, in the first chunk (tokenIds empty) and in
   * GenerationResult.promptLogprobs. With it, maxTokens may be 0 (score the prompt, generate nothing).
   */
  promptLogprobs?: number;
}

export interface GenerationChunk {
  /** New final text (may be empty while a character or a possible stop string is incomplete). */
  text: string;
  /** The token ids generated since the previous chunk. */
  tokenIds: number[];
  /** With options.logprobs: each of those tokens' log probability and the most likely tokens at its step. */
  logprobs?: GeneratedLogprob[];
  /** With options.promptLogprobs, in the first chunk: prompt tokens 1.. (the first has none). */
  promptLogprobs?: PositionLogprobs[];
}

/** How a generation ended: also the value stream() returns when it is done (what `for await` does not show). */
export interface GenerationSummary {
  /** 'stop': an end-of-sequence token or a stop string; 'length': maxTokens or the context was reached. */
  finishReason: FinishReason;
  promptTokens: number;
  /** Tokens of the output (an end-of-sequence token that ended it is not one). */
  generatedTokens: number;
  timeToFirstTokenMs: number;
  tokensPerSecond: number;
}

export interface GenerationResult extends GenerationSummary {
  text: string;
  tokenIds: number[];
  /** With options.logprobs: one entry per token id. */
  logprobs?: GeneratedLogprob[];
  /** With options.promptLogprobs: one entry per prompt token after the first. */
  promptLogprobs?: PositionLogprobs[];
}

function summarize(r: EngineResult): GenerationSummary {
  return {
    finishReason: r.finishReason, promptTokens: r.promptTokens, generatedTokens: r.generatedTokens,
    timeToFirstTokenMs: r.timeToFirstTokenMs,
    tokensPerSecond: r.generatedTokens / Math.max(1e-9, (r.totalMs - r.timeToFirstTokenMs) / 1000 || r.totalMs / 1000),
  };
}

/** Streams dropped unfinished: each one's controller aborts its request when the iterator is collected. */
const abandonedStreams = new FinalizationRegistry<AbortController>((controller) => controller.abort());

function checkGenerateOptions(options: unknown): GenerateOptions {
  if (options === undefined) return {};
  if (typeof options !== 'object' || options === null) throw new W4a8Error('E_TYPE', `options must be an object, got ${describe(options)}`);
  const signal = (options as GenerateOptions).signal;
  if (signal !== undefined && !(signal instanceof AbortSignal))
    throw new W4a8Error('E_TYPE', `options.signal must be an AbortSignal, got ${describe(signal)}`);
  const stall = (options as GenerateOptions).stallTimeoutMs;
  if (stall !== undefined && !(typeof stall === 'number' && stall > 0 && stall < 2 ** 31))
    throw new W4a8Error('E_OPTION', `options.stallTimeoutMs must be a number of milliseconds in (0, 2^31), got ${String(stall)}`);
  for (const key of ['logprobs', 'promptLogprobs'] as const) {
    const count = (options as GenerateOptions)[key];
    if (count !== undefined && !(Number.isInteger(count) && count >= 0 && count <= MAX_TOP_LOGPROBS))
      throw new W4a8Error('E_OPTION', `options.${key} must be an integer in [0, ${MAX_TOP_LOGPROBS}] (top tokens per position), got ${String(count)}`);
  }
  return options as GenerateOptions;
}

function positiveInteger(value: unknown, name: string, fallback: number, max = 1 << 24): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > max)
    throw new W4a8Error('E_OPTION', `${name} must be an integer in [1, ${max}], got ${String(value)}`);
  return value;
}

export class W4a8Model {
  readonly config: ModelConfig;
  readonly quant: QuantConfig;
  /** The model's tokenizer; absent for checkpoints that ship none (then prompts are token ids). */
  readonly tokenizer?: TextTokenizer;
  readonly contextLength: number;
  private readonly engine: BatchEngine;
  private readonly handle: NativeModelHandle;
  private readonly kvCacheType: KvCacheType;
  private disposed = false;
  private disposing?: Promise<void>;

  private constructor(packed: PackedModel, options: ModelOptions, tokenizer: TextTokenizer | undefined) {
    this.config = packed.config;
    this.quant = packed.quant;
    this.contextLength = positiveInteger(options.contextLength, 'contextLength', packed.config.maxSeqLen, packed.config.maxSeqLen);
    tokenizer?.checkFitsVocabulary(packed.config.vocabSize);
    this.tokenizer = tokenizer;
    this.kvCacheType = checkChoice(options.kvCache, KV_CACHE_TYPES, 'kvCache', DEFAULT_KV_CACHE);
    this.handle = createNativeModel(packed, this.kvCacheType);
    const maxBatch = positiveInteger(options.maxBatch, 'maxBatch', 16, 4096);
    this.engine = new BatchEngine(this.handle, {
      contextLength: this.contextLength,
      maxBatch,
      prefillChunk: positiveInteger(options.prefillChunk, 'prefillChunk', 256),
      maxTokensInFlight: positiveInteger(options.maxTokensInFlight, 'maxTokensInFlight', maxBatch * this.contextLength, 2 ** 40),
      maxQueue: positiveInteger(options.maxQueue, 'maxQueue', 1024, 2 ** 30),
      vocabSize: packed.config.vocabSize,
    });
  }

  /**
   * Opens a packed .w4a8 file (memory-mapped, validated) and prepares it for generation on `options.device`.
   * The file stays mapped while the model lives: replace a model file by writing a new one and renaming it
   * over the old, never by rewriting it in place (a mapping whose file shrinks faults: SIGBUS).
   */
  static async load(path: string, options: ModelOptions = {}): Promise<W4a8Model> {
    if (typeof path !== 'string' || path.length === 0) throw new W4a8Error('E_TYPE', 'path must be a non-empty string');
    checkDevice(options.device);
    return W4a8Model.create(await readPackedModel(path), options);
  }

  /** A model over already-read tensors on `options.device` (default 'auto'); a GPU gets its copy of the weights here. */
  static async create(packed: PackedModel, options: ModelOptions = {}): Promise<W4a8Model> {
    const device = checkDevice(options.device);
    const tokenizer = packed.tokenizerJson
      ? await TextTokenizer.load(packed.tokenizerJson, packed.tokenizerConfigJson, packed.chatTemplate)
      : undefined;
    let model: W4a8Model;
    try {
      model = new W4a8Model(packed, options, tokenizer);
    } catch (error) {
      await tokenizer?.close(); // (its worker thread)
      throw error;
    }
    try {
      const cuda = device === 'cpu' ? undefined : await cudaDevice();
      if (device === 'cuda' && !cuda?.available)
        throw new W4a8Error('E_UNSUPPORTED', `device 'cuda' is not available: ${cuda?.reason ?? 'unknown'}`);
      // No sequence exists yet, so the engine has not stepped: the backend can still be switched.
      if (cuda?.available) await callNativeAsync(() => model.handle.useDevice('cuda'));
      // On the CPU, the kernels' group tables now, so that the first request does not wait for them.
      else await callNativeAsync(() => model.handle.prepareCpu());
    } catch (error) {
      await model.dispose();
      throw error;
    }
    return model;
  }

  /** A model over already-read tensors on the CPU (the views stay referenced for the model's lifetime). */
  static fromPacked(packed: PackedModel, options: ModelOptions = {}): W4a8Model {
    const device = checkDevice(options.device ?? 'cpu');
    if (device !== 'cpu') throw new W4a8Error('E_OPTION', `fromPacked runs on the CPU; use W4a8Model.create() for device '${device}'`);
    const tokenizer = packed.tokenizerJson
      ? TextTokenizer.fromJson(packed.tokenizerJson, packed.tokenizerConfigJson, packed.chatTemplate)
      : undefined;
    return new W4a8Model(packed, options, tokenizer);
  }

  /** Where the forward steps run: the CPU (name: the kernel set) or the GPU (name: the GPU's). */
  get backend(): BackendInfo {
    const b = callNative(() => this.handle.backend());
    return b.device === 'cuda' ? { device: 'cuda', name: b.name } : { device: 'cpu', name: cpuBackend().name };
  }

  /** The KV cache's element type. */
  get kvCache(): KvCacheType {
    return this.kvCacheType;
  }

  /** Running, starting (admitted at the next step) and queued requests, and the KV cache tokens the running reserve. */
  get stats(): EngineStats {
    return this.engine.stats;
  }

  /**
   * Text -> ids (with the tokenizer's special tokens, e.g. BOS), on this thread. A model opened with load() or create()
   * builds its complete tokenizer here at the first call (tokenizeAsync does not: it encodes on the tokenizer's thread).
   */
  tokenize(text: string, addSpecialTokens = true): number[] {
    return this.requireTokenizer().encode(text, addSpecialTokens);
  }

  /** tokenize(), off the event loop (on the tokenizer's worker thread; generate() and stream() use it). */
  async tokenizeAsync(text: string, addSpecialTokens = true): Promise<number[]> {
    if (this.disposed) throw new W4a8Error('E_DISPOSED', 'the model has been disposed');
    return this.requireTokenizer().encodeAsync(text, addSpecialTokens);
  }

  detokenize(ids: readonly number[]): string {
    return this.requireTokenizer().decode(ids);
  }

  /** Generates a continuation of `prompt` (text, or token ids) and returns its text. */
  async generate(prompt: string | readonly number[], options: GenerateOptions = {}): Promise<string> {
    return (await this.complete(prompt, options)).text;
  }

  /** Like generate(), with the token ids, why it stopped and timing. */
  async complete(prompt: string | readonly number[], options: GenerateOptions = {}): Promise<GenerationResult> {
    const tokenIds: number[] = [];
    const logprobs: GeneratedLogprob[] = [];
    let promptLogprobs: PositionLogprobs[] | undefined;
    let text = '';
    const stats = await this.run(prompt, options, (chunk) => {
      text += chunk.text;
      tokenIds.push(...chunk.tokenIds);
      if (chunk.logprobs) logprobs.push(...chunk.logprobs);
      promptLogprobs ??= chunk.promptLogprobs;
    });
    return {
      text, tokenIds, ...(options.logprobs !== undefined && { logprobs }), ...(promptLogprobs && { promptLogprobs }), ...summarize(stats),
    };
  }

  /**
   * Streams the continuation as chunks of text and token ids. Breaking out of the loop ends the request, and so
   * does dropping the iterator unfinished (when it is garbage-collected: a stream nobody reads would otherwise
   * keep its place in the batch and its KV cache). When done, the generator returns the GenerationSummary (why
   * it stopped, token counts), for callers of next().
   */
  stream(prompt: string | readonly number[], options: GenerateOptions = {}): AsyncGenerator<GenerationChunk, GenerationSummary> {
    const abandoned = new AbortController();
    const generator = this.chunks(prompt, options, abandoned.signal);
    abandonedStreams.register(generator, abandoned);
    return generator;
  }

  private async *chunks(prompt: string | readonly number[], options: GenerateOptions, abandoned: AbortSignal):
    AsyncGenerator<GenerationChunk, GenerationSummary> {
    options = checkGenerateOptions(options);
    const queue: GenerationChunk[] = [];
    let wake: (() => void) | undefined;
    let done = false;
    let failure: unknown;
    let result: EngineResult | undefined;
    // The request's own signal aborts when the caller's does or when the loop is left early. Linked by hand,
    // not with AbortSignal.any(): the watch goes away with the request, so a long-lived caller signal (one per
    // server, say) does not collect a listener and a composite signal per request.
    const controller = new AbortController();
    const outer = options.signal;
    let unwatch = () => {};
    if (outer?.aborted) controller.abort(outer.reason);
    else if (outer) unwatch = watchAbort(outer, () => controller.abort(outer.reason));
    const drop = () => controller.abort();
    abandoned.addEventListener('abort', drop, { once: true });
    const unlink = () => {
      unwatch();
      abandoned.removeEventListener('abort', drop);
    };
    // The stall timer starts when the queue fills (the sequence pauses), restarts at each read while the queue is
    // more than half full, and stops once the reader has caught up to half (where generation resumes); if it fires,
    // the reader took no chunk for stallMs since the stream filled: the request ends.
    let stallTimer: ReturnType<typeof setTimeout> | undefined;
    let stalled: W4a8Error | undefined;
    const stallMs = options.stallTimeoutMs;
    const stopStallTimer = () => { clearTimeout(stallTimer); stallTimer = undefined; };
    const finished = this.run(prompt, { ...options, signal: controller.signal }, (chunk) => {
      queue.push(chunk);
      if (stallMs !== undefined && queue.length >= STREAM_HIGH_WATER && !stallTimer) {
        stallTimer = setTimeout(() => {
          stalled = new W4a8Error('E_STALLED', `the stream's reader took no chunk for ${stallMs} ms while it was full (stallTimeoutMs): its request was ended`);
          controller.abort(stalled);
        }, stallMs);
        stallTimer.unref(); // (a timeout alone does not keep the process alive)
      }
      wake?.();
    }, () => queue.length >= STREAM_HIGH_WATER).then((r) => { result = r; done = true; }, (error) => { failure = stalled ?? error; done = true; })
      .finally(() => {
        // The request is over: unlink the signals here (a stream dropped unfinished never reaches its finally).
        stopStallTimer();
        unlink();
        wake?.();
      });
    try {
      while (true) {
        if (queue.length > 0) {
          const chunk = queue.shift()!;
          if (stallTimer && queue.length <= STREAM_HIGH_WATER / 2) stopStallTimer();
          else stallTimer?.refresh();
          if (queue.length === STREAM_HIGH_WATER / 2) this.engine.wake(); // caught up: let it run again
          yield chunk;
        }
        else if (done) break;
        else await new Promise<void>((resolve) => { wake = resolve; });
      }
      if (failure) throw failure;
      return summarize(result!);
    } finally {
      if (!done) controller.abort();
      await finished; // (its finally has unlinked the signals)
    }
  }

  /** Generates continuations of several prompts in one batch; each finishes on its own. */
  async generateBatch(prompts: ReadonlyArray<string | readonly number[]>, options: GenerateOptions = {}): Promise<string[]> {
    if (!Array.isArray(prompts) || prompts.length === 0) throw new W4a8Error('E_EMPTY', 'prompts must be a non-empty array');
    return Promise.all(prompts.map((p) => this.generate(p, options)));
  }

  /** Renders `messages` with the model's chat template and generates the assistant's reply. */
  async chat(messages: ChatMessage[], options: GenerateOptions = {}): Promise<string> {
    if (this.disposed) throw new W4a8Error('E_DISPOSED', 'the model has been disposed');
    const prompt = this.requireTokenizer().applyChatTemplate(messages);
    return this.generate(await this.tokenizeAsync(prompt, false), options);
  }

  /** Aborts running requests, waits for the native step in flight, and frees the model. */
  dispose(): Promise<void> {
    // Every call waits for the same end (a second call made while the first runs used to resolve at once).
    return this.disposing ??= (async () => {
      this.disposed = true;
      await Promise.all([this.engine.close(), this.tokenizer?.close()]);
      this.handle.dispose();
    })();
  }

  private requireTokenizer(): TextTokenizer {
    if (!this.tokenizer) throw new W4a8Error('E_OPTION', 'this model has no tokenizer: pass prompts as token ids');
    return this.tokenizer;
  }

  /** A prompt of token ids, checked. */
  private promptIds(prompt: readonly number[]): number[] {
    if (!Array.isArray(prompt) && !(prompt instanceof Int32Array) && !(prompt instanceof Uint32Array))
      throw new W4a8Error('E_TYPE', 'prompt must be a string or an array of token ids');
    const ids = Array.from(prompt as ArrayLike<number>);
    const bad = ids.findIndex((t) => !Number.isInteger(t) || t < 0 || t >= this.config.vocabSize);
    if (bad >= 0) throw new W4a8Error('E_OPTION', `prompt[${bad}] is not a token id in [0, ${this.config.vocabSize}): ${ids[bad]}`);
    return ids;
  }

  private async run(prompt: string | readonly number[], options: GenerateOptions, emit: (chunk: GenerationChunk) => void,
    isPaused?: () => boolean): Promise<EngineResult> {
    options = checkGenerateOptions(options);
    if (this.disposed) throw new W4a8Error('E_DISPOSED', 'the model has been disposed');
    if (options.signal?.aborted) throw abortError();
    // (0 only to score a prompt: promptLogprobs.)
    if (options.maxTokens === 0 && options.promptLogprobs === undefined)
      throw new W4a8Error('E_OPTION', 'maxTokens 0 is for scoring a prompt: it needs promptLogprobs');
    const maxTokens = options.maxTokens === 0 ? 0 : positiveInteger(options.maxTokens, 'maxTokens', 256);
    const stop = options.stop ?? [];
    if (!Array.isArray(stop) || stop.some((s) => typeof s !== 'string' || s.length === 0))
      throw new W4a8Error('E_OPTION', 'stop must be an array of non-empty strings');
    const promptIds = typeof prompt === 'string' ? await this.tokenizeAsync(prompt) : this.promptIds(prompt);
    // (A text prompt was tokenized on another thread meanwhile: the model or the request may have ended since.)
    if (this.disposed) throw new W4a8Error('E_DISPOSED', 'the model has been disposed');
    if (options.signal?.aborted) throw abortError();
    const tokenizer = this.tokenizer;
    const text = tokenizer ? new TextStream((ids) => tokenizer.decode(ids), stop) : undefined;
    const result = this.engine.submit({
      promptIds, maxTokens, sampling: resolveSampling(options, this.config.vocabSize), stopTokenIds: new Set(this.config.eosTokenIds), signal: options.signal,
      isPaused, logprobs: options.logprobs, promptLogprobs: options.promptLogprobs,
      onPromptLogprobs: (promptLogprobs) => emit({ text: '', tokenIds: [], promptLogprobs }),
      onToken: (id, tokenLogprobs) => {
        if (this.config.eosTokenIds.includes(id)) return false;
        const textOffset = text?.fullText.length ?? 0; // (this token's text starts where the text so far ends)
        emit({ text: text ? text.push(id) : '', tokenIds: [id], ...(tokenLogprobs && { logprobs: [{ ...tokenLogprobs, textOffset }] }) });
        return !text?.stopped;
      },
    });
    return result.then((r) => {
      const rest = text?.flush();
      if (rest) emit({ text: rest, tokenIds: [] });
      return r;
    });
  }
}
