/**
 * An OpenAI-compatible HTTP server over one W4a8Model (node:http; no framework needed for five routes):
 *   POST /v1/completions, POST /v1/chat/completions (both with stream: true as server-sent events),
 *   GET /v1/models, GET /health, GET /metrics (Prometheus text).
 * Every request shares the model's continuous batch; a client that disconnects aborts its generation.
 */
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { W4a8Error } from '../errors.js';
import type { W4a8Model, GenerationChunk, GenerationSummary } from '../model/model.js';
import { Metrics } from './metrics.js';
import {
  chatLogprobs, completionLogprobs, generatedOffsets, promptOffsets, promptTokens, stringifyResponse, byTokenId,
  type CompletionToken,
} from './logprobs.js';
import { ApiError, modelNotFound, parseRequest, type CompletionRequest } from './requests.js';

export interface ServerOptions {
  /** The id clients use in `model` (default 'w4a8'). */
  modelName?: string;
  /** Largest request body accepted, in bytes (default 1 MiB). */
  maxBodyBytes?: number;
  /** Largest max_tokens accepted (default: the model's context length). */
  maxTokens?: number;
  /** Where unexpected errors (answered 500) are reported; default console.error. */
  logError?: (error: unknown) => void;
  /**
   * A streaming client that reads nothing for this long (its socket stays full) is disconnected, which ends its
   * generation and frees its place in the batch. Default 60000 ms.
   */
  stallTimeoutMs?: number;
}

const JSON_HEADERS = { 'content-type': 'application/json' };

function sendJson(res: http.ServerResponse, status: number, body: unknown, headers: http.OutgoingHttpHeaders = {}): void {
  res.writeHead(status, { ...JSON_HEADERS, ...headers }).end(stringifyResponse(body));
}

const EVENT_STREAM_HEADERS = { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' };
const DONE_EVENT = 'data: [DONE]\n\n';

/** One server-sent event with a JSON body. */
function event(body: unknown): string {
  return `data: ${stringifyResponse(body)}\n\n`;
}

function errorBody(error: ApiError) {
  return { error: { message: error.message, type: error.type, param: error.param ?? null, code: error.code ?? null } };
}

function sendError(res: http.ServerResponse, error: ApiError): void {
  if (res.headersSent) return void res.end();
  const headers: http.OutgoingHttpHeaders = {};
  if (error.status === 429 || error.status === 503) headers['retry-after'] = '1';
  if (error.closeConnection) headers.connection = 'close';
  if (error.allow) headers.allow = error.allow;
  sendJson(res, error.status, errorBody(error), headers);
}

/** Library errors as HTTP errors: the client's fault (400, 429...) or ours (500). */
function toApiError(error: unknown): ApiError {
  if (error instanceof ApiError) return error;
  if (error instanceof W4a8Error) {
    const status = ({ E_CONTEXT: 400, E_OPTION: 400, E_EMPTY: 400, E_TYPE: 400, E_TEMPLATE: 400, E_BUSY: 429, E_DISPOSED: 503,
      E_ABORTED: 499 } as Record<string, number>)[error.code] ?? 500;
    return new ApiError(status, error.message, undefined, status >= 500 ? 'server_error' : 'invalid_request_error',
      error.code === 'E_CONTEXT' ? 'context_length_exceeded' : error.code);
  }
  return new ApiError(500, 'internal error', undefined, 'server_error');
}

/** Resolves when `res` drains, or destroys it after `timeoutMs` (or when it closes: then the caller's next write is moot). */
function drained(res: http.ServerResponse, timeoutMs: number): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    const timer = setTimeout(() => { res.destroy(); done(); }, timeoutMs);
    res.once('drain', done);
    res.once('close', done);
  });
}

/** A body this many times over the limit is not read to its end: the connection is closed instead. */
const DISCARD_FACTOR = 16;

function readBody(req: http.IncomingMessage, limit: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const tooLarge = () => new ApiError(413, `the request body is larger than ${limit} bytes`);
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > limit) {
      // Node reads and drops the unread body once the 413 is out (closing a socket with data still coming makes
      // the client see a reset, not the answer); an absurd one closes the connection.
      const error = tooLarge();
      error.closeConnection = declared > DISCARD_FACTOR * limit;
      return reject(error);
    }
    const parts: Buffer[] = [];
    let size = 0;
    req.on('data', (part: Buffer) => {
      size += part.length;
      if (size <= limit) return void parts.push(part);
      // A chunked body has no declared size: past the limit the 413 goes out at once and the rest is read and
      // dropped (for the same reason), up to DISCARD_FACTOR times the limit.
      if (size - part.length <= limit) parts.length = 0, reject(tooLarge()); // (the chunk that crossed it)
      if (size > DISCARD_FACTOR * limit) req.socket.destroy();
    });
    req.on('end', () => {
      if (size > limit) return;
      try {
        resolve(JSON.parse(Buffer.concat(parts).toString('utf8')));
      } catch {
        reject(new ApiError(400, 'the request body is not valid JSON'));
      }
    });
    // A client that goes away while sending (ECONNRESET, 'aborted') is not a server error.
    req.on('error', () => reject(new ApiError(499, 'the client closed the connection')));
  });
}

export function createServer(model: W4a8Model, options: ServerOptions = {}): http.Server {
  const modelName = options.modelName ?? 'w4a8';
  const maxBodyBytes = options.maxBodyBytes ?? 1 << 20;
  const maxTokens = options.maxTokens ?? model.contextLength;
  const logError = options.logError ?? ((error: unknown) => console.error('w4a8 serve: unexpected error:', error));
  const stallTimeoutMs = options.stallTimeoutMs ?? 60_000;
  if (!(stallTimeoutMs > 0 && stallTimeoutMs <= 2 ** 31 - 1))
    throw new W4a8Error('E_OPTION', `stallTimeoutMs must be a number of milliseconds in (0, 2^31), got ${stallTimeoutMs}`);
  const created = Math.floor(Date.now() / 1000);
  const metrics = new Metrics();
  const modelCard = { id: modelName, object: 'model', created, owned_by: 'w4a8' };

  /** A text prompt's ids. Text that cannot fit the context whatever its tokens is refused before the tokenizer runs on it. */
  async function tokenizeChecked(text: string, addSpecialTokens: boolean, param: string): Promise<number[]> {
    const most = model.contextLength * (model.tokenizer?.maxTokenChars ?? Infinity);
    // (Twice the bound: a normalizer may shorten text. Tokenizing a megabyte would hold the event loop for seconds.)
    if (text.length > 2 * most + 64)
      throw new ApiError(400, `the prompt has ${text.length} characters, more than the ${model.contextLength}-token context can hold`,
        param, 'invalid_request_error', 'context_length_exceeded');
    return model.tokenizeAsync(text, addSpecialTokens); // (a long prompt on the tokenizer's thread, off the event loop)
  }

  async function complete(req: http.IncomingMessage, res: http.ServerResponse, chat: boolean): Promise<void> {
    const request = parseRequest(await readBody(req, maxBodyBytes), chat, { maxTokens, modelNames: [modelName] });
    // A client that goes away (closes before the response ends) aborts its generation.
    const controller = new AbortController();
    res.on('close', () => { if (!res.writableFinished) controller.abort(); });
    if (chat && !model.tokenizer?.hasChatTemplate) throw new ApiError(400, 'this model has no chat template; use /v1/completions');
    // Token ids from here on: the prompt is tokenized once, and its length is known for the usage figures.
    const prompt = chat ? await tokenizeChecked(model.tokenizer!.applyChatTemplate(request.messages!), false, 'messages')
      : typeof request.prompt === 'string' ? await tokenizeChecked(request.prompt, true, 'prompt') : request.prompt!;
    const generationOptions = { ...request.options, signal: controller.signal };
    if (prompt.length < model.contextLength) {
      const room = model.contextLength - prompt.length;
      // Asked for more than fits: refused (as OpenAI does); the default is cut to what fits.
      if (request.maxTokensGiven && generationOptions.maxTokens! > room)
        throw new ApiError(400, `the prompt has ${prompt.length} tokens and max_tokens is ${generationOptions.maxTokens}: ` +
          `together more than the context of ${model.contextLength} tokens`, 'max_tokens', 'invalid_request_error', 'context_length_exceeded');
      generationOptions.maxTokens = Math.min(generationOptions.maxTokens!, room);
    } // (a prompt that fills the context is refused by the model: E_CONTEXT)
    const id = `${chat ? 'chatcmpl' : 'cmpl'}-${randomUUID()}`;
    const base = { id, created: Math.floor(Date.now() / 1000), model: request.model };
    const started = performance.now();
    // echo: the prompt as given (token ids: their text), before the completion.
    const echoText = !request.echo ? '' : typeof request.prompt === 'string' ? request.prompt : model.tokenizer ? model.detokenize(prompt) : '';
    if (request.echo && generationOptions.maxTokens === 0 && generationOptions.promptLogprobs === undefined)
      return echoOnly(res, request, prompt, echoText, base);
    // n choices: as many sequences of the same prompt in the batch (seed s gives choice i the seed s + i); one
    // failing ends the others.
    const choiceOptions = Array.from({ length: request.n }, (_, i) =>
      i === 0 || generationOptions.seed === undefined ? generationOptions : { ...generationOptions, seed: (generationOptions.seed + i) % Number.MAX_SAFE_INTEGER });
    /** `choices` (a promise over all the choices), with every choice ended when one of them fails. */
    const allOrNone = <T>(choices: Promise<T>): Promise<T> => choices.catch((error) => {
      controller.abort();
      throw error;
    });
    if (!request.stream) {
      const results = await allOrNone(Promise.all(choiceOptions.map((o) => model.complete(prompt, o))));
      const generated = results.reduce((sum, r) => sum + r.generatedTokens, 0);
      record(prompt.length, generated, Math.min(...results.map((r) => r.timeToFirstTokenMs)), started);
      // Requests that end in the same step resume in one event-loop turn: building a large log-probability answer
      // (an echoed prompt with 20 alternatives a token: some milliseconds each) waits for a turn of its own.
      if (results[0].logprobs) await new Promise((resolve) => setImmediate(resolve));
      const choices = results.map((r, index) => {
        // (text_offset: the echoed prompt's tokens from 0, the completion's from the end of the echoed text.)
        const echoed = r.promptLogprobs ? promptTokens(prompt, r.promptLogprobs) : [];
        const logprobs = chat ? r.logprobs && chatLogprobs(r.logprobs, tokenText, tokenBytes)
          : r.logprobs && completionLogprobs([...echoed, ...r.logprobs], tokenText,
            [...echoedOffsets(echoed, echoText), ...generatedOffsets(r.logprobs, echoText.length)]);
        return chat
          ? { index, message: { role: 'assistant', content: r.text }, token_ids: r.tokenIds, logprobs: logprobs ?? null, finish_reason: r.finishReason }
          : { index, text: echoText + r.text, token_ids: r.tokenIds, logprobs: logprobs ?? null, finish_reason: r.finishReason };
      });
      const figures = usage({ promptTokens: prompt.length, generatedTokens: generated });
      return sendJson(res, 200, { ...base, object: chat ? 'chat.completion' : 'text_completion', choices, usage: figures });
    }
    await streamCompletion(res, request, prompt, choiceOptions, chat, base, started, echoText, allOrNone);
  }

  /** echo with max_tokens 0 and no log probabilities: the prompt's text, and nothing to run. */
  function echoOnly(res: http.ServerResponse, request: CompletionRequest, prompt: number[], echoText: string, base: object): void {
    // (The model's checks, which this answer does not pass through: the same request with logprobs gets them.)
    const bad = prompt.findIndex((id) => id >= model.config.vocabSize);
    if (bad >= 0) throw new ApiError(400, `prompt[${bad}] is not a token id in [0, ${model.config.vocabSize}): ${prompt[bad]}`, 'prompt');
    if (prompt.length > model.contextLength)
      throw new ApiError(400, `the prompt has ${prompt.length} tokens; the context holds ${model.contextLength}`, 'prompt', 'invalid_request_error', 'context_length_exceeded');
    const choices = Array.from({ length: request.n }, (_, index) => ({ index, text: echoText, token_ids: [], logprobs: null, finish_reason: 'length' }));
    const figures = usage({ promptTokens: prompt.length, generatedTokens: 0 });
    if (!request.stream) return sendJson(res, 200, { ...base, object: 'text_completion', choices, usage: figures });
    const extra = request.includeUsage ? { usage: null } : {};
    res.writeHead(200, EVENT_STREAM_HEADERS);
    for (const choice of choices) res.write(event({ ...base, object: 'text_completion', choices: [choice], ...extra }));
    if (request.includeUsage) res.write(event({ ...base, object: 'text_completion', choices: [], usage: figures }));
    res.end(DONE_EVENT);
  }

  /** A token's text alone (for log probabilities): '' for a model without a tokenizer. */
  const tokenText = byTokenId((id) => (model.tokenizer ? model.detokenize([id]) : ''));
  const tokenBytes = byTokenId((id) => (model.tokenizer ? Array.from(model.tokenizer.tokenBytes(id)) : []));

  /** text_offset of an echoed prompt's tokens. */
  function echoedOffsets(tokens: CompletionToken[], echoText: string): number[] {
    return promptOffsets(tokens, (ids) => (model.tokenizer ? model.detokenize(ids) : ''), echoText.length);
  }

  function usage(r: Pick<GenerationSummary, 'promptTokens' | 'generatedTokens'>) {
    return { prompt_tokens: r.promptTokens, completion_tokens: r.generatedTokens, total_tokens: r.promptTokens + r.generatedTokens };
  }

  /**
   * The choices' events as their tokens come, each with its choice's index; finish events as each choice ends; then
   * the usage event (with include_usage) and [DONE]. `allOrNone` ends every choice when one fails.
   */
  async function streamCompletion(res: http.ServerResponse, request: CompletionRequest, prompt: number[],
    choiceOptions: CompletionRequest['options'][], chat: boolean, base: object, started: number, echoText: string,
    allOrNone: <T>(choices: Promise<T>) => Promise<T>): Promise<void> {
    const object = chat ? 'chat.completion.chunk' : 'text_completion';
    // With stream_options.include_usage every chunk carries usage: null, and a last one (no choices) the figures.
    const extra = request.includeUsage ? { usage: null } : {};
    const send = (choice: object) => res.write(event({ ...base, object, choices: [choice], ...extra }));
    const iterators = choiceOptions.map((o) => model.stream(prompt, o)[Symbol.asyncIterator]());
    // Pull each choice's first chunk before answering 200, so that a bad request still gets a clean error status.
    const firsts = await allOrNone(Promise.all(iterators.map((it) => it.next())));
    res.writeHead(200, EVENT_STREAM_HEADERS);
    for (let index = 0; index < iterators.length; index++) {
      if (chat) send({ index, delta: { role: 'assistant', content: '' }, finish_reason: null });
      // echo: the prompt's text first (with its log probabilities, from the first chunk, when asked for them).
      if (request.echo && choiceOptions[index].promptLogprobs === undefined) send({ index, text: echoText, token_ids: [], finish_reason: null });
    }
    let generated = 0;
    let firstTokenMs = Infinity;
    const pump = async (iterator: AsyncIterator<GenerationChunk, GenerationSummary>, index: number) => {
      for (let next = firsts[index]; ; next = await iterator.next()) {
        if (next.done) {
          send(chat ? { index, delta: {}, finish_reason: next.value.finishReason } : { index, text: '', finish_reason: next.value.finishReason });
          return;
        }
        // An event per chunk with new text or new tokens: besides the text (OpenAI's fields), `token_ids` carries
        // the generated ids, which is all a model without a tokenizer has to give (its text stays empty).
        const { text, tokenIds, logprobs, promptLogprobs } = next.value;
        if (tokenIds.length > 0) firstTokenMs = Math.min(firstTokenMs, performance.now() - started);
        generated += tokenIds.length;
        if (promptLogprobs) {
          const echoed = promptTokens(prompt, promptLogprobs);
          send({ index, text: echoText, token_ids: [], logprobs: completionLogprobs(echoed, tokenText, echoedOffsets(echoed, echoText)), finish_reason: null });
        } else if (text || tokenIds.length > 0) {
          // (Log probabilities per event, for its tokens; text_offset: where each token's text starts in the whole text.)
          if (chat) send({ index, delta: { content: text }, token_ids: tokenIds, ...(logprobs && { logprobs: chatLogprobs(logprobs, tokenText, tokenBytes) }), finish_reason: null });
          else {
            const lp = logprobs && completionLogprobs(logprobs, tokenText, generatedOffsets(logprobs, echoText.length));
            send({ index, text, token_ids: tokenIds, ...(lp && { logprobs: lp }), finish_reason: null });
          }
        }
        // Backpressure: wait for the socket to drain before pulling more tokens (the sequence pauses meanwhile);
        // a client that reads nothing for stallTimeoutMs is cut off (the 'close' handler aborts the generation).
        if (res.writableNeedDrain) await drained(res, stallTimeoutMs);
      }
    };
    try {
      await allOrNone(Promise.all(iterators.map(pump)));
    } catch (error) {
      // The status line is out: the error goes as an event (OpenAI's clients raise it), and the stream ends.
      const apiError = toApiError(error);
      if (apiError.status === 499) throw error; // the client is gone
      if (apiError.status >= 500 && apiError.status !== 503) logError(error);
      res.end(event(errorBody(apiError)));
      return;
    }
    if (request.includeUsage) res.write(event({ ...base, object, choices: [], usage: usage({ promptTokens: prompt.length, generatedTokens: generated }) }));
    res.end(DONE_EVENT);
    record(prompt.length, generated, Number.isFinite(firstTokenMs) ? firstTokenMs : performance.now() - started, started);
  }

  function record(promptTokens: number, generated: number, ttftMs: number, started: number): void {
    metrics.count('w4a8_prompt_tokens_total', 'Prompt tokens processed.', {}, promptTokens);
    metrics.count('w4a8_generated_tokens_total', 'Tokens generated.', {}, generated);
    metrics.observe('w4a8_time_to_first_token_seconds', 'Time from request to first generated token.', ttftMs / 1000);
    metrics.observe('w4a8_request_duration_seconds', 'Time from request to last generated token.', (performance.now() - started) / 1000);
  }

  /** Which methods a path takes (HEAD with GET), or undefined for an unknown path. */
  function methodsOf(path: string): string[] | undefined {
    if (path === '/health' || path === '/v1/models' || path === '/metrics' || path.startsWith('/v1/models/')) return ['GET', 'HEAD'];
    if (path === '/v1/completions' || path === '/v1/chat/completions') return ['POST'];
    return undefined;
  }

  async function route(req: http.IncomingMessage, res: http.ServerResponse): Promise<string> {
    const path = (req.url ?? '/').split('?')[0];
    const methods = methodsOf(path);
    if (!methods) throw new ApiError(404, `no route ${req.method} ${path}`);
    const allow = [...methods, 'OPTIONS'].join(', ');
    if (req.method === 'OPTIONS') return res.writeHead(204, { allow }).end(), path;
    if (!methods.includes(req.method ?? '')) {
      const error = new ApiError(405, `${path} takes ${methods[0]}`);
      error.allow = allow;
      throw error;
    }
    if (path === '/health') return sendJson(res, 200, { status: 'ok' }), path;
    if (path === '/v1/models') return sendJson(res, 200, { object: 'list', data: [modelCard] }), path;
    if (path.startsWith('/v1/models/')) {
      let id = path.slice('/v1/models/'.length);
      try {
        id = decodeURIComponent(id);
      } catch { /* not percent-encoded UTF-8: matches no model as it is */ }
      if (id !== modelName)
        throw modelNotFound(id);
      return sendJson(res, 200, modelCard), '/v1/models/{id}';
    }
    if (path === '/metrics') {
      const s = model.stats;
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(metrics.render({
        w4a8_running_requests: { help: 'Sequences in the running batch.', value: s.running },
        w4a8_starting_requests: { help: 'Requests with a place in the batch, starting at the next step.', value: s.starting },
        w4a8_queued_requests: { help: 'Requests waiting for a place in the batch (what --max-queue limits).', value: s.queued },
        w4a8_reserved_kv_tokens: { help: 'KV cache tokens reserved by running sequences.', value: s.reservedTokens },
        process_resident_memory_bytes: { help: 'Resident memory size in bytes.', value: process.memoryUsage.rss() },
      }));
      return path;
    }
    await complete(req, res, path === '/v1/chat/completions');
    return path;
  }

  return http.createServer((req, res) => {
    route(req, res).then(
      (path) => metrics.count('w4a8_http_requests_total', 'HTTP requests by route and status.', { path, status: String(res.statusCode) }),
      (error: unknown) => {
        const apiError = toApiError(error);
        if (apiError.status === 499) { res.destroy(); return; } // the client is gone
        if (apiError.status === 500) logError(error);
        sendError(res, apiError);
        metrics.count('w4a8_http_requests_total', 'HTTP requests by route and status.', { path: 'error', status: String(apiError.status) });
      });
  });
}
