/**
 * Log probabilities in OpenAI's response shapes: chat's `{content: [{token, logprob, bytes, top_logprobs}]}` and the
 * completions API's `{tokens, token_logprobs, top_logprobs, text_offset}`. A token's text is what the tokenizer
 * decodes it to alone (a token that holds part of a multi-byte character decodes to U+FFFD, and its bytes are that
 * character's: the tokenizer library gives no raw bytes); a model without a tokenizer has empty token texts and
 * relies on the response's token_ids.
 */
import type { GeneratedLogprob, TokenLogprob } from '../model/logprobs.js';

type TokenText = (id: number) => string;

/** A token of the completions API's arrays: an echoed prompt's first token has no log probability (null). */
export interface CompletionToken {
  id: number;
  logprob: number | null;
  top: readonly TokenLogprob[] | null;
}

/** The echoed prompt's entries: its first token (null), then what the model gave each later one. */
export function promptTokens(promptIds: readonly number[], promptLogprobs: readonly GeneratedLogprob[]): CompletionToken[] {
  return promptIds.length === 0 ? [] : [{ id: promptIds[0], logprob: null, top: null }, ...promptLogprobs];
}

const utf8 = new TextEncoder();

export function chatLogprobs(logprobs: readonly GeneratedLogprob[], text: TokenText) {
  const entry = (id: number, logprob: number) => {
    const token = text(id);
    return { token, logprob, bytes: Array.from(utf8.encode(token)) };
  };
  return { content: logprobs.map((lp) => ({ ...entry(lp.id, lp.logprob), top_logprobs: lp.top.map((t) => entry(t.id, t.logprob)) })) };
}

/** `offset`: characters of completion text before these tokens (text_offset counts on from it). */
export function completionLogprobs(logprobs: readonly CompletionToken[], text: TokenText, offset = 0) {
  const tokens = logprobs.map((lp) => text(lp.id));
  const textOffset = tokens.map((token) => (offset += token.length) - token.length);
  return {
    tokens,
    token_logprobs: logprobs.map((lp) => lp.logprob),
    top_logprobs: logprobs.map((lp) => lp.top && Object.fromEntries(lp.top.map((t) => [text(t.id), t.logprob]))),
    text_offset: textOffset,
  };
}

/** Two runs of completions-API log probabilities, one after the other (an echoed prompt's, then the completion's). */
export function joinCompletionLogprobs(a: ReturnType<typeof completionLogprobs>, b: ReturnType<typeof completionLogprobs>) {
  return {
    tokens: [...a.tokens, ...b.tokens],
    token_logprobs: [...a.token_logprobs, ...b.token_logprobs],
    top_logprobs: [...a.top_logprobs, ...b.top_logprobs],
    text_offset: [...a.text_offset, ...b.text_offset],
  };
}
