/**
 * Validation of OpenAI-style request bodies (/v1/completions, /v1/chat/completions). Each problem is
 * an ApiError with the HTTP status and the parameter at fault, answered as {error: {...}}.
 */
import type { GenerateOptions } from '../model/model.js';
import type { ChatMessage } from '../model/tokenizer.js';

export class ApiError extends Error {
  constructor(readonly status: number, message: string, readonly param?: string, readonly type = 'invalid_request_error',
    readonly code?: string) {
    super(message);
  }
}

export interface CompletionRequest {
  model: string;
  prompt?: string | number[];
  messages?: ChatMessage[];
  stream: boolean;
  options: GenerateOptions;
}

type Body = Record<string, unknown>;

function optionalNumber(body: Body, key: string, min: number, max: number, integer = false): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v)))
    throw new ApiError(400, `'${key}' must be ${integer ? 'an integer' : 'a number'} in [${min}, ${max}]`, key);
  return v;
}

function stopStrings(body: Body): string[] | undefined {
  const v = body.stop;
  if (v === undefined || v === null) return undefined;
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || list.length > 4 || list.some((s) => typeof s !== 'string' || s.length === 0))
    throw new ApiError(400, "'stop' must be a non-empty string or an array of up to 4 non-empty strings", 'stop');
  return list as string[];
}

export function parseRequest(body: unknown, chat: boolean, limits: { maxTokens: number; modelNames: string[] }): CompletionRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new ApiError(400, 'the request body must be a JSON object');
  const b = body as Body;
  const model = b.model;
  if (model !== undefined && typeof model !== 'string') throw new ApiError(400, "'model' must be a string", 'model');
  if (typeof model === 'string' && !limits.modelNames.includes(model))
    throw new ApiError(404, `the model '${model}' does not exist; GET /v1/models lists the models`, 'model', 'invalid_request_error', 'model_not_found');
  if (b.stream !== undefined && typeof b.stream !== 'boolean') throw new ApiError(400, "'stream' must be a boolean", 'stream');
  optionalNumber(b, 'n', 1, 1, true); // one choice per request
  const options: GenerateOptions = {
    maxTokens: optionalNumber(b, 'max_tokens', 1, limits.maxTokens, true) ?? optionalNumber(b, 'max_completion_tokens', 1, limits.maxTokens, true) ?? (chat ? Math.min(512, limits.maxTokens) : Math.min(16, limits.maxTokens)),
    temperature: optionalNumber(b, 'temperature', 0, 2) ?? 1,
    topP: optionalNumber(b, 'top_p', 0, 1) ?? 1,
    topK: optionalNumber(b, 'top_k', 0, 1 << 20, true) ?? 0,
    minP: optionalNumber(b, 'min_p', 0, 1) ?? 0,
    repetitionPenalty: optionalNumber(b, 'repetition_penalty', 0.01, 100),
    seed: optionalNumber(b, 'seed', 0, Number.MAX_SAFE_INTEGER, true),
    stop: stopStrings(b),
  };
  const request: CompletionRequest = { model: (model as string | undefined) ?? limits.modelNames[0], stream: b.stream === true, options };
  if (chat) {
    const messages = b.messages;
    if (!Array.isArray(messages) || messages.length === 0) throw new ApiError(400, "'messages' must be a non-empty array", 'messages');
    messages.forEach((m, i) => {
      if (typeof m !== 'object' || m === null || typeof (m as Body).role !== 'string' || typeof (m as Body).content !== 'string')
        throw new ApiError(400, `'messages[${i}]' must be {role: string, content: string}`, 'messages');
    });
    request.messages = messages as ChatMessage[];
  } else {
    let prompt = b.prompt;
    if (Array.isArray(prompt) && prompt.length === 1 && typeof prompt[0] === 'string') prompt = prompt[0];
    const isIds = Array.isArray(prompt) && prompt.length > 0 && prompt.every((t) => Number.isInteger(t) && t >= 0);
    if (typeof prompt !== 'string' && !isIds)
      throw new ApiError(400, "'prompt' must be a string, a one-string array or an array of token ids", 'prompt');
    if (typeof prompt === 'string' && prompt.length === 0) throw new ApiError(400, "'prompt' must not be empty", 'prompt');
    request.prompt = prompt as string | number[];
  }
  return request;
}
