/**
 * An OpenAI-compatible HTTP server over one W4a8Model (node:http; no framework needed for five routes):
 *   POST /v1/completions, POST /v1/chat/completions (both with stream: true as server-sent events),
 *   GET /v1/models, GET /health, GET /metrics (Prometheus text).
 * Every request shares the model's continuous batch; a client that disconnects aborts its generation.
 */
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { W4a8Error } from '../errors.js';
import type { W4a8Model, GenerationChunk } from '../model/model.js';
import { Metrics } from './metrics.js';
import { ApiError, parseRequest, type CompletionRequest } from './requests.js';

export interface ServerOptions {
  /** The id clients use in `model` (default 'w4a8'). */
  modelName?: string;
  /** Largest request body accepted, in bytes (default 1 MiB). */
  maxBodyBytes?: number;
  /** Largest max_tokens accepted (default: the model's context length). */
  maxTokens?: number;
}

const JSON_HEADERS = { 'content-type': 'application/json' };

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, JSON_HEADERS).end(JSON.stringify(body));
}

function sendError(res: http.ServerResponse, error: ApiError): void {
  if (res.headersSent) return void res.end();
  sendJson(res, error.status, { error: { message: error.message, type: error.type, param: error.param ?? null, code: error.code ?? null } });
}

/** Library errors as HTTP errors: the client's fault (400, 429...) or ours (500). */
function toApiError(error: unknown): ApiError {
  if (error instanceof ApiError) return error;
  if (error instanceof W4a8Error) {
    const status = ({ E_CONTEXT: 400, E_OPTION: 400, E_EMPTY: 400, E_TYPE: 400, E_BUSY: 429, E_DISPOSED: 503, E_ABORTED: 499 } as Record<string, number>)[error.code] ?? 500;
    return new ApiError(status, error.message, undefined, status === 500 ? 'server_error' : 'invalid_request_error',
      error.code === 'E_CONTEXT' ? 'context_length_exceeded' : error.code);
  }
  return new ApiError(500, 'internal error', undefined, 'server_error');
}

function readBody(req: http.IncomingMessage, limit: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > limit) return reject(new ApiError(413, `the request body is larger than ${limit} bytes`));
    const parts: Buffer[] = [];
    let size = 0;
    req.on('data', (part: Buffer) => {
      size += part.length;
      if (size > limit) {
        reject(new ApiError(413, `the request body is larger than ${limit} bytes`));
        req.destroy();
      } else parts.push(part);
    });
    req.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(parts).toString('utf8')));
      } catch {
        reject(new ApiError(400, 'the request body is not valid JSON'));
      }
    });
    req.on('error', reject);
  });
}

export function createServer(model: W4a8Model, options: ServerOptions = {}): http.Server {
  const modelName = options.modelName ?? 'w4a8';
  const maxBodyBytes = options.maxBodyBytes ?? 1 << 20;
  const maxTokens = options.maxTokens ?? model.contextLength;
  const created = Math.floor(Date.now() / 1000);
  const metrics = new Metrics();

  async function complete(req: http.IncomingMessage, res: http.ServerResponse, chat: boolean): Promise<void> {
    const request = parseRequest(await readBody(req, maxBodyBytes), chat, { maxTokens, modelNames: [modelName] });
    // A client that goes away (closes before the response ends) aborts its generation.
    const controller = new AbortController();
    res.on('close', () => { if (!res.writableFinished) controller.abort(); });
    if (chat && !model.tokenizer?.hasChatTemplate) throw new ApiError(400, 'this model has no chat template; use /v1/completions');
    // Token ids from here on: the prompt is tokenized once, and its length is known for the usage figures.
    const prompt = chat ? model.tokenize(model.tokenizer!.applyChatTemplate(request.messages!), false)
      : typeof request.prompt === 'string' ? model.tokenize(request.prompt) : request.prompt!;
    const id = `${chat ? 'chatcmpl' : 'cmpl'}-${randomUUID()}`;
    const base = { id, created: Math.floor(Date.now() / 1000), model: request.model };
    const options = { ...request.options, signal: controller.signal };
    const started = performance.now();
    if (!request.stream) {
      const r = await model.complete(prompt, options);
      record(r.promptTokens, r.generatedTokens, r.timeToFirstTokenMs, started);
      const usage = { prompt_tokens: r.promptTokens, completion_tokens: r.generatedTokens, total_tokens: r.promptTokens + r.generatedTokens };
      const choice = chat
        ? { index: 0, message: { role: 'assistant', content: r.text }, token_ids: r.tokenIds, finish_reason: r.finishReason }
        : { index: 0, text: r.text, token_ids: r.tokenIds, logprobs: null, finish_reason: r.finishReason };
      return sendJson(res, 200, { ...base, object: chat ? 'chat.completion' : 'text_completion', choices: [choice], usage });
    }
    await streamCompletion(res, request, prompt, options, chat, base, started);
  }

  async function streamCompletion(res: http.ServerResponse, request: CompletionRequest, prompt: number[],
    options: CompletionRequest['options'], chat: boolean, base: object, started: number): Promise<void> {
    const object = chat ? 'chat.completion.chunk' : 'text_completion';
    const send = (choice: object) => res.write(`data: ${JSON.stringify({ ...base, object, choices: [choice] })}\n\n`);
    const iterator = model.stream(prompt, options)[Symbol.asyncIterator]();
    // Pull the first chunk before answering 200, so that a bad request still gets a clean error status.
    let first: IteratorResult<GenerationChunk, void>;
    first = await iterator.next();
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    if (chat) send({ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null });
    let generated = 0;
    let firstTokenMs = performance.now() - started;
    for (let next = first; !next.done; next = await iterator.next()) {
      if (generated === 0) firstTokenMs = performance.now() - started;
      generated += next.value.tokenIds.length;
      // An event per chunk with new text or new tokens: besides the text (OpenAI's fields), `token_ids` carries
      // the generated ids, which is all a model without a tokenizer has to give (its text stays empty).
      const { text, tokenIds } = next.value;
      if (text || tokenIds.length > 0)
        send(chat ? { index: 0, delta: { content: text }, token_ids: tokenIds, finish_reason: null }
          : { index: 0, text, token_ids: tokenIds, finish_reason: null });
      // Backpressure: wait for the socket to drain before pulling more tokens.
      if (res.writableNeedDrain) await new Promise((resolve) => res.once('drain', resolve));
    }
    const finishReason = generated >= (request.options.maxTokens ?? Infinity) ? 'length' : 'stop';
    send(chat ? { index: 0, delta: {}, finish_reason: finishReason } : { index: 0, text: '', finish_reason: finishReason });
    res.end('data: [DONE]\n\n');
    record(prompt.length, generated, firstTokenMs, started);
  }

  function record(promptTokens: number, generated: number, ttftMs: number, started: number): void {
    metrics.count('w4a8_prompt_tokens_total', 'Prompt tokens processed.', {}, promptTokens);
    metrics.count('w4a8_generated_tokens_total', 'Tokens generated.', {}, generated);
    metrics.observe('w4a8_time_to_first_token_seconds', 'Time from request to first generated token.', ttftMs / 1000);
    metrics.observe('w4a8_request_duration_seconds', 'Time from request to last generated token.', (performance.now() - started) / 1000);
  }

  async function route(req: http.IncomingMessage, res: http.ServerResponse): Promise<string> {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method === 'GET' && path === '/health') return sendJson(res, 200, { status: 'ok' }), path;
    if (req.method === 'GET' && path === '/v1/models')
      return sendJson(res, 200, { object: 'list', data: [{ id: modelName, object: 'model', created, owned_by: 'w4a8' }] }), path;
    if (req.method === 'GET' && path === '/metrics') {
      const s = model.stats;
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(metrics.render({
        w4a8_running_requests: { help: 'Sequences in the running batch.', value: s.running },
        w4a8_queued_requests: { help: 'Requests waiting for a place in the batch.', value: s.queued },
        w4a8_reserved_kv_tokens: { help: 'KV cache tokens reserved by running sequences.', value: s.reservedTokens },
        process_resident_memory_bytes: { help: 'Resident memory size in bytes.', value: process.memoryUsage.rss() },
      }));
      return path;
    }
    if (path === '/v1/completions' || path === '/v1/chat/completions') {
      if (req.method !== 'POST') throw new ApiError(405, `${path} takes POST`);
      await complete(req, res, path === '/v1/chat/completions');
      return path;
    }
    throw new ApiError(404, `no route ${req.method} ${path}`);
  }

  return http.createServer((req, res) => {
    route(req, res).then(
      (path) => metrics.count('w4a8_http_requests_total', 'HTTP requests by route and status.', { path, status: String(res.statusCode) }),
      (error: unknown) => {
        const apiError = toApiError(error);
        if (apiError.status === 499) { res.destroy(); return; } // the client is gone
        sendError(res, apiError);
        metrics.count('w4a8_http_requests_total', 'HTTP requests by route and status.', { path: 'error', status: String(apiError.status) });
      });
  });
}
