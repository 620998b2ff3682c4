/**
 * Continuous batching over one native model: every forward step runs all active sequences together.
 * Requests join between steps; a new request's prompt is fed in chunks (prefill) alongside the other
 * sequences' decode tokens; finished and aborted sequences leave between steps and free their cache.
 * Sampling happens here, on the JS thread, from each sequence's logits row.
 */
import { W4a8Error } from '../errors.js';
import type { NativeModelHandle } from '../native.js';
import { watchAbort } from './abort-watch.js';
import { positionLogprobs, stepLogprobs, type PositionLogprobs, type StepLogprobs } from './logprobs.js';
import { Sampler, type ResolvedSampling } from './sampler.js';

export type FinishReason = 'stop' | 'length' | 'abort';

export interface EngineRequest {
  promptIds: number[];
  maxTokens: number;
  sampling: ResolvedSampling;
  stopTokenIds: ReadonlySet<number>;
  signal?: AbortSignal;
  /**
   * Called with each generated token (and its log probabilities when `logprobs` is set); return false to finish
   * ('stop', e.g. a stop string matched).
   */
  onToken: (tokenId: number, logprobs?: PositionLogprobs) => boolean;
  /** Report each token's log probability and this many of the most likely tokens at its step (0..20). */
  logprobs?: number;
  /**
   * Report the log probability of each prompt token after the first, and this many of the most likely tokens at
   * its position, through onPromptLogprobs once the prompt is in (its steps then return every position's logits).
   */
  promptLogprobs?: number;
  onPromptLogprobs?: (logprobs: PositionLogprobs[]) => void;
  /** While this returns true the sequence sits out the steps (its consumer is behind): backpressure. */
  isPaused?: () => boolean;
}

export interface EngineResult {
  finishReason: FinishReason;
  promptTokens: number;
  generatedTokens: number;
  /** Milliseconds from submission to the first generated token. */
  timeToFirstTokenMs: number;
  totalMs: number;
}

export interface EngineOptions {
  /** Tokens each sequence may hold (prompt + generated), at most the model's maxSeqLen. */
  contextLength: number;
  /** Most sequences in one step. */
  maxBatch: number;
  /** Most prompt tokens fed in one step, over all sequences. */
  prefillChunk: number;
  /** KV cache budget in tokens over all running sequences (each reserves prompt + maxTokens). */
  maxTokensInFlight: number;
  /** Most requests waiting for a place beyond the batch's free slots; more are rejected with E_BUSY. */
  maxQueue: number;
  vocabSize: number;
}

export interface EngineStats {
  running: number;
  /** Requests the batch and KV budget have room for, waiting only for the step in flight to end. */
  starting: number;
  /** Requests waiting for room (what maxQueue limits). */
  queued: number;
  /** KV cache tokens reserved by the running sequences. */
  reservedTokens: number;
}

interface Active {
  request: EngineRequest;
  sequence: number;
  capacity: number; // KV cache tokens reserved: prompt + maxTokens, at most the context
  sampler: Sampler;
  fed: number; // prompt tokens already in the cache
  history: number[]; // prompt + generated ids
  generated: number;
  promptLogprobs?: PositionLogprobs[]; // of prompt tokens 1.. so far (request.promptLogprobs)
  start: number;
  firstTokenAt?: number;
  resolve: (r: EngineResult) => void;
  reject: (e: unknown) => void;
  aborted: boolean;
  /** Stops watching request.signal: called when the request leaves (a long-lived signal must not collect watchers). */
  unwatch?: () => void;
}

export class BatchEngine {
  private readonly waiting: Active[] = [];
  private readonly active: Active[] = [];
  private running = false;
  private closed = false;
  private idle: Promise<void> = Promise.resolve();
  private reserved = 0;
  private wakeUp?: () => void;
  // Buffers of a step, grown on demand and reused: a step allocates no typed array once the batch was seen.
  private stepIds = new Int32Array(0);
  private stepCounts = new Int32Array(0);
  private stepTokens = new Int32Array(0);
  private stepLogits = new Float32Array(0);
  private positionLogits?: Float32Array;

  constructor(private readonly handle: NativeModelHandle, private readonly options: EngineOptions) {}

  get stats(): EngineStats {
    const starting = this.admittable();
    return { running: this.active.length, starting, queued: this.waiting.length - starting, reservedTokens: this.reserved };
  }

  /** Called when a paused consumer caught up. */
  wake(): void {
    this.wakeUp?.();
  }

  submit(request: EngineRequest): Promise<EngineResult> {
    if (this.closed) return Promise.reject(new W4a8Error('E_DISPOSED', 'the model has been disposed'));
    if (request.promptIds.length === 0) return Promise.reject(new W4a8Error('E_EMPTY', 'the prompt has no tokens'));
    // (A prompt to score only, maxTokens 0, may fill the context; one to continue needs room for a token.)
    if (request.promptIds.length + (request.maxTokens === 0 ? 0 : 1) > this.options.contextLength)
      return Promise.reject(new W4a8Error('E_CONTEXT', `the prompt has ${request.promptIds.length} tokens; the context holds ` +
        `${this.options.contextLength}${request.maxTokens === 0 ? '' : ' (prompt + at least one generated token)'}`));
    if (request.signal?.aborted) return Promise.reject(abortError());
    const capacity = Math.min(this.options.contextLength, request.promptIds.length + request.maxTokens);
    if (capacity > this.options.maxTokensInFlight)
      return Promise.reject(new W4a8Error('E_CONTEXT',
        `the request needs ${capacity} KV cache tokens (prompt + maxTokens); the budget is ${this.options.maxTokensInFlight}`));
    this.dropAbortedWaiting(); // (aborted requests that have not started leave at once: they hold no place)
    const queued = this.waiting.length - this.admittable();
    if (queued >= this.options.maxQueue)
      return Promise.reject(new W4a8Error('E_BUSY', `${queued} requests are already waiting for a place in the batch; try again later`));
    return new Promise<EngineResult>((resolve, reject) => {
      const entry: Active = {
        request, sequence: -1, capacity, sampler: new Sampler(request.sampling), fed: 0, history: [...request.promptIds],
        generated: 0, start: performance.now(), resolve, reject, aborted: false,
      };
      if (request.signal) {
        entry.unwatch = watchAbort(request.signal, () => { entry.aborted = true; this.wake(); });
      }
      this.waiting.push(entry);
      this.kick();
      this.wake();
    });
  }

  /**
   * Waiting requests that the batch and the KV budget have room for: they only wait for the step in flight to
   * end, so they do not count against maxQueue (a burst of requests into an idle batch is not turned away).
   */
  private admittable(): number {
    let slots = this.options.maxBatch - this.active.length, budget = this.options.maxTokensInFlight - this.reserved;
    let count = 0;
    for (const entry of this.waiting) {
      if (slots === 0 || entry.capacity > budget) break;
      slots--, budget -= entry.capacity, count++;
    }
    return count;
  }

  /** Stops taking requests, aborts the ones in flight, and resolves once no step is running. */
  async close(): Promise<void> {
    this.closed = true;
    for (const entry of [...this.waiting, ...this.active]) entry.aborted = true;
    this.kick();
    this.wake();
    await this.idle;
  }

  private kick(): void {
    if (this.running) return;
    this.running = true;
    this.idle = this.loop().finally(() => { this.running = false; });
  }

  private async loop(): Promise<void> {
    while (this.waiting.length > 0 || this.active.length > 0) {
      this.dropAborted();
      // Admit waiting requests in order while the batch and the KV cache budget have room.
      while (this.waiting.length > 0 && this.active.length < this.options.maxBatch &&
             this.reserved + this.waiting[0].capacity <= this.options.maxTokensInFlight) {
        const entry = this.waiting.shift()!;
        entry.sequence = this.handle.createSequence(entry.capacity);
        this.reserved += entry.capacity;
        this.active.push(entry);
      }
      if (this.active.length === 0) continue;
      if (this.active.every((e) => e.request.isPaused?.() && !e.aborted)) {
        // Every consumer is behind: wait until one reads on (or a request arrives or aborts).
        await new Promise<void>((resolve) => { this.wakeUp = resolve; });
        this.wakeUp = undefined;
        continue;
      }
      await this.step();
    }
  }

  /** Why an aborted request ends: the model's disposal, or its own signal. */
  private abortReason(): W4a8Error {
    return this.closed ? new W4a8Error('E_DISPOSED', 'the model was disposed during generation') : abortError();
  }

  /** Rejects aborted requests that are still waiting (they hold no sequence, so this is safe during a step). */
  private dropAbortedWaiting(): void {
    for (let i = this.waiting.length - 1; i >= 0; i--)
      if (this.waiting[i].aborted) {
        const [entry] = this.waiting.splice(i, 1);
        this.detach(entry);
        entry.reject(this.abortReason());
      }
  }

  /** Rejects every aborted request; called between steps, when no native step uses the sequences. */
  private dropAborted(): void {
    this.dropAbortedWaiting();
    for (let i = this.active.length - 1; i >= 0; i--)
      if (this.active[i].aborted) {
        const [entry] = this.active.splice(i, 1);
        this.release(entry);
        entry.reject(this.abortReason());
      }
  }

  /** One forward step: decode tokens for sequences past their prompt, prompt chunks for the others. */
  private async step(): Promise<void> {
    const entries: Active[] = [];
    const fedCounts: number[] = [];
    let prefillBudget = this.options.prefillChunk;
    let tokenCount = 0;
    for (const entry of this.active) {
      if (entry.request.isPaused?.()) continue;
      const left = entry.request.promptIds.length - entry.fed;
      const count = left > 0 ? Math.min(prefillBudget, left) : 1;
      if (count <= 0) continue; // a prompt waiting for prefill room in a later step
      if (left > 0) prefillBudget -= count;
      entries.push(entry);
      fedCounts.push(count);
      tokenCount += count;
    }
    if (entries.length === 0) return;
    const vocab = this.options.vocabSize;
    const batch = entries.length;
    // Every position's logits when a request in prefill wants its prompt's log probabilities; else each sequence's last.
    const allPositions = entries.some((e) => e.request.promptLogprobs !== undefined && e.fed < e.request.promptIds.length);
    const rows = allPositions ? tokenCount : batch;
    if (this.stepIds.length < batch) {
      const size = Math.max(batch, 2 * this.stepIds.length);
      this.stepIds = new Int32Array(size);
      this.stepCounts = new Int32Array(size);
    }
    if (this.stepLogits.length < batch * vocab) this.stepLogits = new Float32Array(this.stepIds.length * vocab);
    if (this.stepTokens.length < tokenCount) this.stepTokens = new Int32Array(Math.max(tokenCount, 2 * this.stepTokens.length));
    const ids = this.stepIds.subarray(0, batch), counts = this.stepCounts.subarray(0, batch);
    // Steps with every position's logits (up to prefillChunk + batch rows) share a buffer of their own, let go at the
    // first step without: a prompt being scored takes one allocation, not one a step, and none stays afterwards.
    if (!allPositions) this.positionLogits = undefined;
    else if (!this.positionLogits || this.positionLogits.length < rows * vocab) this.positionLogits = new Float32Array(rows * vocab);
    const tokens = this.stepTokens.subarray(0, tokenCount);
    const logits = allPositions ? this.positionLogits!.subarray(0, rows * vocab) : this.stepLogits.subarray(0, batch * vocab);
    for (let i = 0, at = 0; i < batch; i++) {
      const entry = entries[i], count = fedCounts[i];
      ids[i] = entry.sequence;
      counts[i] = count;
      if (entry.fed < entry.request.promptIds.length)
        for (let j = 0; j < count; j++) tokens[at + j] = entry.request.promptIds[entry.fed + j];
      else tokens[at] = entry.history[entry.history.length - 1];
      at += count;
    }
    try {
      await this.handle.step(ids, counts, tokens, logits, allPositions);
    } catch (error) {
      for (const entry of entries) this.finish(entry, undefined, error);
      return;
    }
    for (let i = 0, firstRow = 0; i < batch; firstRow += allPositions ? fedCounts[i] : 1, i++) {
      const entry = entries[i];
      const lastRow = allPositions ? firstRow + fedCounts[i] - 1 : i;
      const prompt = entry.request.promptIds;
      if (entry.fed < prompt.length) {
        // Rows firstRow.. predict prompt positions fed + 1..; the one past the prompt, if any, is the first draw's.
        if (entry.request.promptLogprobs !== undefined && !this.scorePrompt(entry, logits, firstRow, fedCounts[i])) continue;
        entry.fed += fedCounts[i];
        if (entry.fed < prompt.length) continue; // still in prefill: no draw yet
        if (entry.request.promptLogprobs !== undefined) entry.request.onPromptLogprobs?.(entry.promptLogprobs ?? []);
        if (entry.request.maxTokens === 0) { // the prompt's log probabilities were all it asked for
          this.finish(entry, 'length');
          continue;
        }
      }
      if (entry.aborted) continue;
      let token: number;
      const row = logits.subarray(lastRow * vocab, (lastRow + 1) * vocab);
      let step: StepLogprobs | undefined;
      try {
        // Log probabilities come from the raw row: read before the sampler applies bias and penalties to it.
        if (entry.request.logprobs !== undefined) step = stepLogprobs(row, entry.request.logprobs);
        token = entry.sampler.sample(row, entry.history, step !== undefined);
      } catch (error) { // non-finite logits: this request fails, the others go on
        this.finish(entry, undefined, error);
        continue;
      }
      entry.history.push(token);
      entry.firstTokenAt ??= performance.now();
      // An end-of-sequence token ends the output and is not part of it (nor of the generated count).
      const end = entry.request.stopTokenIds.has(token);
      if (!end) entry.generated++;
      const keepGoing = entry.request.onToken(token, step && positionLogprobs(step, token, entry.sampler.rawLogit(row, token)));
      if (!keepGoing || end) this.finish(entry, 'stop');
      else if (entry.generated >= entry.request.maxTokens || entry.history.length >= this.options.contextLength) this.finish(entry, 'length');
    }
  }

  /**
   * The prompt log probabilities of a prefill chunk: rows firstRow.. predict prompt positions fed + 1.. (a row past
   * the prompt, if any, is the first draw's). False, with the request failed, when a row is not finite.
   */
  private scorePrompt(entry: Active, logits: Float32Array, firstRow: number, count: number): boolean {
    const vocab = this.options.vocabSize, prompt = entry.request.promptIds;
    try {
      for (let j = 0, at = entry.fed + 1; j < count && at < prompt.length; j++, at++) {
        const row = logits.subarray((firstRow + j) * vocab, (firstRow + j + 1) * vocab);
        (entry.promptLogprobs ??= []).push(positionLogprobs(stepLogprobs(row, entry.request.promptLogprobs!), prompt[at], row[prompt[at]]));
      }
      return true;
    } catch (error) { // (non-finite logits: E_STEP)
      this.finish(entry, undefined, error);
      return false;
    }
  }

  private release(entry: Active): void {
    this.handle.freeSequence(entry.sequence);
    this.reserved -= entry.capacity;
    this.detach(entry);
  }

  /** Forgets the request's abort listener: it has left the engine. */
  private detach(entry: Active): void {
    entry.unwatch?.();
    entry.unwatch = undefined;
  }

  private finish(entry: Active, reason: FinishReason | undefined, error?: unknown): void {
    const at = this.active.indexOf(entry);
    if (at >= 0) this.active.splice(at, 1);
    this.release(entry);
    if (reason === undefined) {
      entry.reject(error instanceof W4a8Error ? error : new W4a8Error('E_NATIVE', (error as Error)?.message ?? String(error)));
      return;
    }
    const now = performance.now();
    entry.resolve({
      finishReason: reason, promptTokens: entry.request.promptIds.length, generatedTokens: entry.generated,
      timeToFirstTokenMs: (entry.firstTokenAt ?? now) - entry.start, totalMs: now - entry.start,
    });
  }
}

export function abortError(): W4a8Error {
  return new W4a8Error('E_ABORTED', 'the request was aborted');
}
