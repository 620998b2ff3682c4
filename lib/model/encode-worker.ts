/**
 * The worker thread of EncodeThread (encode-thread.ts): builds the model's tokenizer from workerData and encodes
 * the texts it is sent, so that tokenizing a long prompt does not hold the main thread's event loop.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { TextTokenizer } from './tokenizer.js';

export interface EncodeRequest {
  id: number;
  text: string;
  addSpecialTokens: boolean;
}

export type EncodeReply = { id: number; ids: Int32Array } | { id: number; error: { code?: string; message: string } };

const { tokenizerJson, tokenizerConfigJson, chatTemplate } =
  workerData as { tokenizerJson: string; tokenizerConfigJson?: string; chatTemplate?: string };
const tokenizer = TextTokenizer.fromJson(tokenizerJson, tokenizerConfigJson, chatTemplate);
const port = parentPort!;
port.on('message', ({ id, text, addSpecialTokens }: EncodeRequest) => {
  let reply: EncodeReply;
  try {
    reply = { id, ids: Int32Array.from(tokenizer.encode(text, addSpecialTokens)) };
  } catch (error) {
    reply = { id, error: { code: (error as { code?: string }).code, message: (error as Error).message } };
  }
  port.postMessage(reply, 'ids' in reply ? [reply.ids.buffer as ArrayBuffer] : []);
});
