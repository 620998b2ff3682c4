/**
 * The worker thread of EncodeThread (encode-thread.ts): builds the model's tokenizer from workerData, sends the main
 * thread what it decodes with (tokenizer-summary.ts; or why the tokenizer cannot be built), then encodes the texts it
 * is sent, so that neither opening a model nor tokenizing a long prompt holds the main thread's event loop.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { TextTokenizer } from './tokenizer.js';
import type { DecodingSummary } from './tokenizer-summary.js';

export interface EncodeRequest {
  id: number;
  text: string;
  addSpecialTokens: boolean;
}

export type EncodeReply = { id: number; ids: Int32Array } | { id: number; error: { code?: string; message: string } };

/** The first message: the summary, or the error that building the tokenizer gave. */
export type WorkerReady = { summary: DecodingSummary } | { cannotBuild: { code?: string; message: string } };

const { tokenizerJson, tokenizerConfigJson, chatTemplate } =
  workerData as { tokenizerJson: string; tokenizerConfigJson?: string; chatTemplate?: string };
const port = parentPort!;
let tokenizer: TextTokenizer | undefined;
try {
  const built = TextTokenizer.forWorker(tokenizerJson, tokenizerConfigJson, chatTemplate);
  tokenizer = built.tokenizer;
  port.postMessage({ summary: built.summary } satisfies WorkerReady, [built.summary.vocabEnds.buffer as ArrayBuffer]);
} catch (error) {
  // (then the thread ends: with no listener on the port it has nothing left to do)
  port.postMessage({ cannotBuild: { code: (error as { code?: string }).code, message: (error as Error).message } } satisfies WorkerReady);
}
if (tokenizer) listen(tokenizer);

function listen(tokenizer: TextTokenizer): void {
  port.on('message', ({ id, text, addSpecialTokens }: EncodeRequest) => {
    let reply: EncodeReply;
    try {
      reply = { id, ids: Int32Array.from(tokenizer.encode(text, addSpecialTokens)) };
    } catch (error) {
      reply = { id, error: { code: (error as { code?: string }).code, message: (error as Error).message } };
    }
    port.postMessage(reply, 'ids' in reply ? [reply.ids.buffer as ArrayBuffer] : []);
  });
}
