/**
 * Validation of OpenAI-style request bodies (/v1/completions, /v1/chat/completions). Each problem is
 * an ApiError with the HTTP status and the parameter at fault, answered as {error: {...}}.
 */
import { MAX_TOP_LOGPROBS } from '../model/logprobs.js';
import type { GenerateOptions } from '../model/model.js';
import { CHAT_ROLES, type ChatMessage } from '../model/tokenizer.js';

export class ApiError extends Error {
  /** For 405: the methods the route takes (the Allow header). */
  allow?: string;
  /** Close the connection after answering (a body too large to read to its end). */
  closeConnection?: boolean;

  constructor(readonly status: number, message: string, readonly param?: string, readonly type = 'invalid_request_error',
    readonly code?: string) {
    super(message);
  }
}

/** The 404 for a model id this server does not serve (in a request's `model`, or GET /v1/models/{id}). */
export function modelNotFound(id: string): ApiError {
  return new ApiError(404, `the model '${id}' does not exist; GET /v1/models lists the models`, 'model', 'invalid_request_error', 'model_not_found');
}

export interface CompletionRequest {
  model: string;
  prompt?: string | number[];
  messages?: ChatMessage[];
  stream: boolean;
  /** stream_options.include_usage: a last event with the usage figures. */
  includeUsage: boolean;
  /** True when the client set max_tokens: then prompt + max_tokens must fit the context (else it is capped). */
  maxTokensGiven: boolean;
  /** Completions' echo: the prompt comes back before the completion (with its log probabilities when asked). */
  echo: boolean;
  /** Choices to generate for the prompt (OpenAI's n): each its own sequence in the batch. */
  n: number;
  options: GenerateOptions;
}

type Body = Record<string, unknown>;

/** Most choices (n) one request may ask for: each is a sequence of its own, with its own prefill. */
export const MAX_CHOICES = 16;

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

/** Token id -> bias in [-100, 100] (ids are checked against the vocabulary by the model). */
function logitBias(body: Body): Record<number, number> | undefined {
  const v = body.logit_bias;
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object' || Array.isArray(v) ||
      Object.entries(v).some(([id, bias]) => !/^\d+$/.test(id) || typeof bias !== 'number' || !(bias >= -100 && bias <= 100)))
    throw new ApiError(400, "'logit_bias' must map token ids to numbers in [-100, 100]", 'logit_bias');
  return v as Record<number, number>;
}

/** Chat's logprobs (a boolean) and top_logprobs (0..20, only with logprobs: true): how many top tokens, or none. */
function parseChatLogprobs(b: Body): number | undefined {
  if (b.logprobs !== undefined && b.logprobs !== null && typeof b.logprobs !== 'boolean')
    throw new ApiError(400, "'logprobs' must be a boolean", 'logprobs');
  const top = optionalNumber(b, 'top_logprobs', 0, MAX_TOP_LOGPROBS, true);
  if (top !== undefined && b.logprobs !== true) throw new ApiError(400, "'top_logprobs' needs 'logprobs': true", 'top_logprobs');
  return b.logprobs === true ? top ?? 0 : undefined;
}

/** Completions' echo (a boolean); chat has none (refused with the unsupported fields). */
function parseEcho(b: Body, chat: boolean): boolean {
  if (chat || b.echo === undefined || b.echo === null) return false;
  if (typeof b.echo !== 'boolean') throw new ApiError(400, "'echo' must be a boolean", 'echo');
  return b.echo;
}

/**
 * OpenAI parameters this server does not implement, refused when set to anything but their no-op value (silently
 * ignoring them would change what the client asked for).
 */
function refuseUnsupported(b: Body, chat: boolean): void {
  const unsupported = (param: string, what: string) => {
    throw new ApiError(400, `'${param}' is not supported by this server (${what})`, param);
  };
  const set = (v: unknown) => v !== undefined && v !== null;
  if (chat && set(b.echo) && b.echo !== false) unsupported('echo', 'chat completions do not echo');
  if (!chat && set(b.top_logprobs)) unsupported('top_logprobs', "completions take 'logprobs': N, the number of top tokens");
  if (set(b.suffix) && b.suffix !== '') unsupported('suffix', 'no insertion after a suffix');
  if (set(b.best_of) && b.best_of !== 1) unsupported('best_of', 'one candidate per request');
  const format = b.response_format as { type?: unknown } | null | undefined;
  if (set(format) && (typeof format !== 'object' || format!.type !== 'text')) unsupported('response_format', "only {type: 'text'}");
  if (Array.isArray(b.tools) ? b.tools.length > 0 : set(b.tools)) unsupported('tools', 'no tool calls');
  if (Array.isArray(b.functions) ? b.functions.length > 0 : set(b.functions)) unsupported('functions', 'no function calls');
  if (set(b.tool_choice) && b.tool_choice !== 'none' && b.tool_choice !== 'auto') unsupported('tool_choice', 'no tool calls');
  if (set(b.function_call) && b.function_call !== 'none' && b.function_call !== 'auto') unsupported('function_call', 'no function calls');
}

/** A message's content: a string, or OpenAI's array of {type: 'text', text} parts (joined). */
function messageContent(content: unknown, i: number): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content) && content.every((p) => typeof p === 'object' && p !== null && (p as Body).type === 'text' && typeof (p as Body).text === 'string'))
    return content.map((p) => (p as { text: string }).text).join('');
  throw new ApiError(400, `'messages[${i}]' needs content: a string or an array of {type: 'text', text} parts`, 'messages');
}

export function parseRequest(body: unknown, chat: boolean, limits: { maxTokens: number; modelNames: string[] }): CompletionRequest {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new ApiError(400, 'the request body must be a JSON object');
  const b = body as Body;
  const model = b.model;
  if (model !== undefined && typeof model !== 'string') throw new ApiError(400, "'model' must be a string", 'model');
  if (typeof model === 'string' && !limits.modelNames.includes(model))
    throw modelNotFound(model);
  if (b.stream !== undefined && b.stream !== null && typeof b.stream !== 'boolean') throw new ApiError(400, "'stream' must be a boolean", 'stream');
  const streamOptions = b.stream_options as Body | null | undefined;
  if (streamOptions !== undefined && streamOptions !== null &&
      (typeof streamOptions !== 'object' || Array.isArray(streamOptions) ||
       (streamOptions.include_usage !== undefined && typeof streamOptions.include_usage !== 'boolean')))
    throw new ApiError(400, "'stream_options' must be {include_usage?: boolean}", 'stream_options');
  if (streamOptions !== undefined && streamOptions !== null && b.stream !== true)
    throw new ApiError(400, "'stream_options' is only allowed with stream: true", 'stream_options');
  const n = optionalNumber(b, 'n', 1, MAX_CHOICES, true) ?? 1;
  refuseUnsupported(b, chat);
  const echo = parseEcho(b, chat);
  // (max_tokens 0 with echo: score the prompt, generate nothing.)
  const least = echo ? 0 : 1;
  const maxTokens = optionalNumber(b, 'max_tokens', least, limits.maxTokens, true) ?? optionalNumber(b, 'max_completion_tokens', least, limits.maxTokens, true);
  const options: GenerateOptions = {
    maxTokens: maxTokens ?? (chat ? Math.min(512, limits.maxTokens) : Math.min(16, limits.maxTokens)),
    temperature: optionalNumber(b, 'temperature', 0, 2) ?? 1,
    topP: optionalNumber(b, 'top_p', 0, 1) ?? 1,
    topK: optionalNumber(b, 'top_k', 0, 1 << 20, true) ?? 0,
    minP: optionalNumber(b, 'min_p', 0, 1) ?? 0,
    repetitionPenalty: optionalNumber(b, 'repetition_penalty', 0.01, 100),
    seed: optionalNumber(b, 'seed', 0, Number.MAX_SAFE_INTEGER, true),
    presencePenalty: optionalNumber(b, 'presence_penalty', -2, 2),
    frequencyPenalty: optionalNumber(b, 'frequency_penalty', -2, 2),
    logitBias: logitBias(b),
    stop: stopStrings(b),
    logprobs: chat ? parseChatLogprobs(b) : b.logprobs === false ? undefined : optionalNumber(b, 'logprobs', 0, MAX_TOP_LOGPROBS, true),
  };
  if (echo && options.logprobs !== undefined) options.promptLogprobs = options.logprobs;
  const request: CompletionRequest = {
    model: (model as string | undefined) ?? limits.modelNames[0], stream: b.stream === true,
    includeUsage: streamOptions?.include_usage === true, maxTokensGiven: maxTokens !== undefined, echo, n, options,
  };
  if (chat) {
    const messages = b.messages;
    if (!Array.isArray(messages) || messages.length === 0) throw new ApiError(400, "'messages' must be a non-empty array", 'messages');
    request.messages = messages.map((m, i): ChatMessage => {
      if (typeof m !== 'object' || m === null || typeof (m as Body).role !== 'string')
        throw new ApiError(400, `'messages[${i}]' must be {role: string, content: string}`, 'messages');
      const role = (m as Body).role as string;
      if (!CHAT_ROLES.includes(role))
        throw new ApiError(400, `'messages[${i}].role' must be one of ${CHAT_ROLES.join(', ')}, got '${role}'`, 'messages');
      return { role, content: messageContent((m as Body).content, i) };
    });
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
