/**
 * The tokenizer's worker thread. Building a large tokenizer takes about a second (a 152k vocabulary) and a long
 * prompt about 3 microseconds a token (an 8k-token prompt 26 ms, 32k tokens 95 ms, on the 2-core dev machine), all
 * on whatever thread does it: on a server's main thread that is event-loop delay for every other client. The worker
 * builds its own copy of the tokenizer from the same sources (so its ids are the main thread's, bit for bit), sends
 * what the main thread decodes with (tokenizer-summary.ts), and encodes what it is sent.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { W4a8Error, type W4a8ErrorCode } from '../errors.js';
import type { EncodeReply, EncodeRequest, SerializedError, WorkerReady } from './encode-worker.js';
import type { DecodingSummary } from './tokenizer-summary.js';

// The compiled worker: dist/ sits beside lib/ one level below the package root (as in native.ts), and the worker
// always runs the compiled JS, also when the main thread runs lib/'s TypeScript (the tests).
const WORKER_FILE = path.join(path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..'), 'dist', 'model', 'encode-worker.js');

interface Pending {
  resolve: (ids: number[]) => void;
  reject: (error: unknown) => void;
}

const fromWorker = (error: SerializedError) => new W4a8Error((error.code as W4a8ErrorCode) ?? 'E_FILE', error.message);

/**
 * The worker, with the process's flags, which a worker inherits unchecked; but a process run as
 * `node --input-type=module -e ...` (or with it in NODE_OPTIONS) has --input-type, which a worker file refuses. Flags
 * given explicitly are checked, and process-wide ones (--max-old-space-size...) refused: then the worker starts with
 * none.
 */
function startWorker(workerData: unknown): Worker {
  const inputType = (arg: string) => arg.startsWith('--input-type');
  const nodeOptions = process.env.NODE_OPTIONS;
  const env = nodeOptions?.includes('--input-type')
    ? { ...process.env, NODE_OPTIONS: nodeOptions.split(/\s+/).filter((arg) => !inputType(arg)).join(' ') }
    : undefined; // (undefined: the process's environment)
  if (!process.execArgv.some(inputType)) return new Worker(WORKER_FILE, { workerData, env });
  try {
    return new Worker(WORKER_FILE, { workerData, env, execArgv: process.execArgv.filter((arg) => !inputType(arg)) });
  } catch (error) {
    if ((error as { code?: string }).code !== 'ERR_WORKER_INVALID_EXEC_ARGV') throw error;
    return new Worker(WORKER_FILE, { workerData, env, execArgv: [] });
  }
}

export class EncodeThread {
  private readonly worker?: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  /** Why the thread cannot encode (it failed, or was closed); undefined while it can. */
  private down?: W4a8Error;
  /** What the main thread decodes with (tokenizer-summary.ts), once the thread has built its tokenizer. */
  readonly ready: Promise<DecodingSummary>;
  /** Whether the thread could not build a tokenizer from these sources (ready rejected with the reason, E_FILE). */
  rejectedSources = false;
  private settleReady!: { resolve: (summary: DecodingSummary) => void; reject: (error: W4a8Error) => void };

  /** The tokenizer's sources, as the main thread's copy was built from them (so the thread builds what loaded). */
  constructor(tokenizerJson: string, tokenizerConfigJson?: string, chatTemplate?: string) {
    this.ready = new Promise((resolve, reject) => (this.settleReady = { resolve, reject }));
    this.ready.catch(() => {}); // (a thread started for encoding only: nobody awaits it)
    try {
      // Referenced until it has built its tokenizer (load() awaits that), then only while encodes are in flight.
      this.worker = startWorker({ tokenizerJson, tokenizerConfigJson, chatTemplate });
    } catch (error) {
      this.fail(`it could not start: ${(error as Error).message}`);
      return;
    }
    this.worker.on('message', (reply: EncodeReply | WorkerReady) => {
      if ('summary' in reply) {
        this.settleReady.resolve(reply.summary);
        this.unrefWhenIdle();
        return;
      }
      if ('noSummary' in reply) { // (it encodes, but the main thread must build its own tokenizer to decode)
        this.settleReady.reject(fromWorker(reply.noSummary));
        this.unrefWhenIdle();
        return;
      }
      if ('cannotBuild' in reply) {
        this.rejectedSources = true;
        this.stop(fromWorker(reply.cannotBuild));
        return;
      }
      const waiting = this.pending.get(reply.id);
      if (!waiting) return;
      this.pending.delete(reply.id);
      this.unrefWhenIdle();
      if ('ids' in reply) waiting.resolve(Array.from(reply.ids));
      else waiting.reject(fromWorker(reply.error));
    });
    this.worker.on('error', (error) => this.fail(error.message));
    this.worker.on('messageerror', (error) => this.fail(`a reply could not be read: ${error.message}`));
    this.worker.on('exit', (code) => this.fail(`it exited (code ${code})`));
  }

  /** Whether encode() can be called (false once the thread failed or was closed). */
  get usable(): boolean {
    return this.down === undefined;
  }

  encode(text: string, addSpecialTokens: boolean): Promise<number[]> {
    if (this.down) return Promise.reject(this.down);
    const id = this.nextId++;
    return new Promise<number[]>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker!.ref(); // work in flight: keep the process alive until it answers
      const request: EncodeRequest = { id, text, addSpecialTokens };
      this.worker!.postMessage(request);
    });
  }

  /** Stops the thread; encodes still waiting reject with E_DISPOSED. */
  async close(): Promise<void> {
    if (this.down?.code === 'E_DISPOSED') return;
    const running = this.down === undefined;
    this.down = new W4a8Error('E_DISPOSED', 'the model has been disposed');
    this.rejectAll(this.down);
    // Referenced until it has stopped: an unreferenced worker would let the process exit with dispose() pending.
    if (running && this.worker) {
      this.worker.ref();
      await this.worker.terminate();
    }
  }

  /** The thread is gone (it could not start, crashed or exited): said once, as texts are encoded on the main thread now. */
  private fail(why: string): void {
    if (this.down) return;
    const error = new W4a8Error('E_FILE', `the tokenizer thread failed: ${why}`);
    process.emitWarning(`${error.message}; texts are tokenized on the main thread from now on`, { code: 'W4A8_TOKENIZER_THREAD' });
    this.stop(error);
  }

  /** Ends the thread for `reason` (what waiting encodes and `ready` reject with); it no longer holds the process. */
  private stop(reason: W4a8Error): void {
    this.down = reason;
    this.rejectAll(reason);
    this.worker?.unref();
    void this.worker?.terminate(); // (after 'messageerror' it may still run)
  }

  private unrefWhenIdle(): void {
    if (this.pending.size === 0 && !this.down) this.worker?.unref();
  }

  private rejectAll(error: W4a8Error): void {
    this.settleReady.reject(error); // (no effect once it has settled)
    for (const waiting of this.pending.values()) waiting.reject(error);
    this.pending.clear();
  }
}
