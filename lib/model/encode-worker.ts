/**
 * The worker thread of EncodeThread (encode-thread.ts): builds the model's tokenizer from workerData, sends the main
 * thread what it decodes with (tokenizer-summary.ts; or why the tokenizer cannot be built), then encodes the texts it
 * is sent, so that neither opening a model nor tokenizing a long prompt holds the main thread's event loop.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { OFFLOAD_CHARS, TextTokenizer } from './tokenizer.js';
import type { DecodingSummary } from './tokenizer-summary.js';

export interface EncodeRequest {
  id: number;
  text: string;
  addSpecialTokens: boolean;
}

export interface SerializedError {
  code?: string;
  message: string;
}

export type EncodeReply = { id: number; ids: Int32Array } | { id: number; error: SerializedError };

/**
 * The first message: the summary; or that the summary failed (the thread still encodes; the main thread builds its
 * own tokenizer to decode); or the error that building the tokenizer gave (then the thread ends).
 */
export type WorkerReady = { summary: DecodingSummary } | { noSummary: SerializedError } | { cannotBuild: SerializedError };

/** Short texts encoded in a row while a long one waits, at most (so that a stream of short ones cannot starve it). */
const SHORT_STREAK = 8;

const serialized = (error: unknown): SerializedError => ({ code: (error as { code?: string }).code, message: (error as Error).message });

const { tokenizerJson, tokenizerConfigJson, chatTemplate } =
  workerData as { tokenizerJson: string; tokenizerConfigJson?: string; chatTemplate?: string };
const port = parentPort!;
const tokenizer = build();
if (tokenizer) listen(tokenizer); // (else the thread ends: with no listener on the port it has nothing left to do)

/**
 * The tokenizer, after the first message (WorkerReady). In a function: what only the summary needs (the parsed
 * tokenizer.json) is garbage once it returns, not kept for the thread's lifetime.
 */
function build(): TextTokenizer | undefined {
  let built: ReturnType<typeof TextTokenizer.forWorker>;
  try {
    built = TextTokenizer.forWorker(tokenizerJson, tokenizerConfigJson, chatTemplate);
  } catch (error) {
    port.postMessage({ cannotBuild: serialized(error) } satisfies WorkerReady);
    return undefined;
  }
  try {
    const summary = built.summarize();
    port.postMessage({ summary } satisfies WorkerReady, [summary.vocabEnds.buffer as ArrayBuffer]);
  } catch (error) {
    port.postMessage({ noSummary: serialized(error) } satisfies WorkerReady);
  }
  return built.tokenizer;
}

/**
 * Encodes what arrives, one text per event-loop turn, short texts (under OFFLOAD_CHARS) ahead of long ones: every
 * text of a model opened with load() comes here, and a chat message should not wait behind a queue of long prompts
 * (at most behind the one being encoded: messages that arrive meanwhile are sorted in before the next), while a long
 * one waits for SHORT_STREAK short ones at most.
 */
function listen(tokenizer: TextTokenizer): void {
  const shortQueue: EncodeRequest[] = [], longQueue: EncodeRequest[] = [];
  let streak = 0; // short texts encoded since the last long one while long ones waited
  const encodeNext = () => {
    const takeLong = longQueue.length > 0 && (shortQueue.length === 0 || streak >= SHORT_STREAK);
    const { id, text, addSpecialTokens } = takeLong ? longQueue.shift()! : shortQueue.shift()!;
    streak = takeLong || longQueue.length === 0 ? 0 : streak + 1;
    let reply: EncodeReply;
    try {
      reply = { id, ids: Int32Array.from(tokenizer.encode(text, addSpecialTokens)) };
    } catch (error) {
      reply = { id, error: serialized(error) };
    }
    port.postMessage(reply, 'ids' in reply ? [reply.ids.buffer as ArrayBuffer] : []);
    if (shortQueue.length + longQueue.length > 0) setImmediate(encodeNext);
  };
  port.on('message', (request: EncodeRequest) => {
    if (shortQueue.length + longQueue.length === 0) setImmediate(encodeNext);
    (request.text.length < OFFLOAD_CHARS ? shortQueue : longQueue).push(request);
  });
}
