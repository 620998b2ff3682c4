/**
 * Tokenizing on a worker thread. A long prompt takes the tokenizer about 3 microseconds a token (an 8k-token
 * prompt 26 ms, 32k tokens 95 ms, on the 2-core dev machine), all on whatever thread calls it: on a server's
 * main thread that is event-loop delay for every other client. The worker builds its own copy of the tokenizer
 * from the same tokenizer.json (so its ids are the main thread's, bit for bit) and encodes what it is sent, one
 * text at a time.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { W4a8Error, type W4a8ErrorCode } from '../errors.js';
import type { EncodeReply, EncodeRequest } from './encode-worker.js';

// The compiled worker: dist/ sits beside lib/ one level below the package root (as in native.ts), and the worker
// always runs the compiled JS, also when the main thread runs lib/'s TypeScript (the tests).
const WORKER_FILE = path.join(path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..'), 'dist', 'model', 'encode-worker.js');

interface Pending {
  resolve: (ids: number[]) => void;
  reject: (error: unknown) => void;
}

export class EncodeThread {
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  /** Why the thread cannot encode (it failed, or was closed); undefined while it can. */
  private down?: W4a8Error;

  constructor(tokenizerJson: string, tokenizerConfigJson?: string) {
    this.worker = new Worker(WORKER_FILE, { workerData: { tokenizerJson, tokenizerConfigJson } });
    this.worker.unref(); // (an idle tokenizer thread does not keep the process alive)
    this.worker.on('message', (reply: EncodeReply) => {
      const waiting = this.pending.get(reply.id);
      if (!waiting) return;
      this.pending.delete(reply.id);
      if ('ids' in reply) waiting.resolve(Array.from(reply.ids));
      else waiting.reject(new W4a8Error((reply.error.code as W4a8ErrorCode) ?? 'E_FILE', reply.error.message));
    });
    const fail = (error: W4a8Error) => {
      this.down ??= error;
      for (const waiting of this.pending.values()) waiting.reject(this.down);
      this.pending.clear();
    };
    this.worker.on('error', (error) => fail(new W4a8Error('E_FILE', `the tokenizer thread failed: ${error.message}`)));
    this.worker.on('exit', (code) => fail(new W4a8Error('E_FILE', `the tokenizer thread exited (code ${code})`)));
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
      if (this.pending.size === 1) this.worker.ref(); // work in flight: keep the process alive until it answers
      const request: EncodeRequest = { id, text, addSpecialTokens };
      this.worker.postMessage(request);
    }).finally(() => {
      if (this.pending.size === 0) this.worker.unref();
    });
  }

  /** Stops the thread; encodes still waiting reject with E_DISPOSED. */
  async close(): Promise<void> {
    if (this.down?.code !== 'E_DISPOSED') {
      const wasDown = this.down !== undefined;
      this.down = new W4a8Error('E_DISPOSED', 'the model has been disposed');
      for (const waiting of this.pending.values()) waiting.reject(this.down);
      this.pending.clear();
      if (!wasDown) await this.worker.terminate();
    }
  }
}
