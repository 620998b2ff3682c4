/**
 * Log probabilities in OpenAI's response shapes: chat's `{content: [{token, logprob, bytes, top_logprobs}]}` and the
 * completions API's `{tokens, token_logprobs, top_logprobs, text_offset}`. A token's text is what the tokenizer
 * decodes it to alone (a token that holds part of a multi-byte character decodes to U+FFFD, and its bytes are that
 * character's: the tokenizer library gives no raw bytes); a model without a tokenizer has empty token texts and
 * relies on the response's token_ids.
 */
import type { GeneratedLogprob } from '../model/logprobs.js';

type TokenText = (id: number) => string;

const utf8 = new TextEncoder();

export function chatLogprobs(logprobs: readonly GeneratedLogprob[], text: TokenText) {
  const entry = (id: number, logprob: number) => {
    const token = text(id);
    return { token, logprob, bytes: Array.from(utf8.encode(token)) };
  };
  return { content: logprobs.map((lp) => ({ ...entry(lp.id, lp.logprob), top_logprobs: lp.top.map((t) => entry(t.id, t.logprob)) })) };
}

/** `offset`: characters of completion text before these tokens (text_offset counts on from it). */
export function completionLogprobs(logprobs: readonly GeneratedLogprob[], text: TokenText, offset = 0) {
  const tokens = logprobs.map((lp) => text(lp.id));
  const textOffset = tokens.map((token) => (offset += token.length) - token.length);
  return {
    tokens,
    token_logprobs: logprobs.map((lp) => lp.logprob),
    top_logprobs: logprobs.map((lp) => Object.fromEntries(lp.top.map((t) => [text(t.id), t.logprob]))),
    text_offset: textOffset,
  };
}
