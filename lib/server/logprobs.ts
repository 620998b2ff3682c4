/**
 * Log probabilities in OpenAI's response shapes: chat's `{content: [{token, logprob, bytes, top_logprobs}]}` and the
 * completions API's `{tokens, token_logprobs, top_logprobs, text_offset}`. A token's text is what the tokenizer
 * decodes it to alone (a token that holds part of a multi-byte character decodes to U+FFFD; its `bytes` are its own,
 * raw); a model without a tokenizer has empty token texts and relies on the response's token_ids.
 */
import type { GeneratedLogprob, PositionLogprobs, TokenLogprob } from '../model/logprobs.js';
import { TextStream } from '../model/text-stream.js';

type TokenText = (id: number) => string;

/** A token of the completions API's arrays: an echoed prompt's first token has no log probability (null). */
export interface CompletionToken {
  id: number;
  logprob: number | null;
  top: readonly TokenLogprob[] | null;
}

/** The echoed prompt's entries: its first token (null), then what the model gave each later one. */
export function promptTokens(promptIds: readonly number[], promptLogprobs: readonly PositionLogprobs[]): CompletionToken[] {
  return promptIds.length === 0 ? [] : [{ id: promptIds[0], logprob: null, top: null }, ...promptLogprobs];
}

/**
 * `of(id)`, computed once per token id and kept for the server's life (at most a vocabulary's worth of entries): a
 * response lists each token and its top alternatives, and decoding each afresh took 20-40 ms of event loop for a
 * 500-token echo with 20 alternatives.
 */
export function byTokenId<T>(of: (id: number) => T): (id: number) => T {
  const known = new Map<number, T>();
  return (id) => {
    let value = known.get(id);
    if (value === undefined) known.set(id, (value = of(id)));
    return value;
  };
}

/** `bytes(id)`: the token's own bytes (TextTokenizer.tokenBytes: raw, also for part of a character). */
export function chatLogprobs(logprobs: readonly GeneratedLogprob[], text: TokenText, bytes: (id: number) => number[]) {
  const entry = (id: number, logprob: number) => ({ token: text(id), logprob, bytes: bytes(id) });
  return { content: logprobs.map((lp) => ({ ...entry(lp.id, lp.logprob), top_logprobs: lp.top.map((t) => entry(t.id, t.logprob)) })) };
}

/**
 * A completions top_logprobs object: token text -> log probability, most likely first. Keys must stay in that order
 * (JSON.stringify puts integer-like keys such as "1" first in any object, so it is serialized by hand: toJSON cannot
 * return raw JSON, see stringifyResponse), and texts that repeat (several partial-character tokens are all U+FFFD)
 * keep their first, most likely value.
 */
export class TopLogprobs {
  readonly entries: [string, number][] = [];

  constructor(top: readonly TokenLogprob[], text: TokenText) {
    const seen = new Set<string>();
    for (const t of top) {
      const token = text(t.id);
      if (seen.has(token)) continue;
      seen.add(token);
      this.entries.push([token, t.logprob]);
    }
  }

  json(): string {
    return `{${this.entries.map(([token, logprob]) => `${JSON.stringify(token)}:${JSON.stringify(logprob)}`).join(',')}}`;
  }
}

/** JSON.stringify, with each TopLogprobs written in its own order. */
export function stringifyResponse(value: unknown): string {
  const ordered: string[] = [];
  const text = JSON.stringify(value, (_key, v) => (v instanceof TopLogprobs ? `\u0000${ordered.push(v.json()) - 1}\u0000` : v));
  return ordered.length === 0 ? text : text.replace(/"\\u0000(\d+)\\u0000"/g, (_, i) => ordered[Number(i)]);
}

/** `offsets`: each token's text_offset (where its text starts in the response's text). */
export function completionLogprobs(logprobs: readonly CompletionToken[], text: TokenText, offsets: readonly number[]) {
  return {
    tokens: logprobs.map((lp) => text(lp.id)),
    token_logprobs: logprobs.map((lp) => lp.logprob),
    top_logprobs: logprobs.map((lp) => lp.top && new TopLogprobs(lp.top, text)),
    text_offset: [...offsets],
  };
}

/**
 * text_offset of an echoed prompt's tokens: where each one's text starts in the prompt's decoding, read as the
 * generated tokens' are (the text decoded so far before it; a partial character's bytes count from where it starts),
 * capped at the echoed text's length (the prompt as given may be shorter than its decoding).
 */
export function promptOffsets(tokens: readonly CompletionToken[], decode: (ids: number[]) => string, echoLength: number): number[] {
  const stream = new TextStream(decode, []);
  return tokens.map((t) => {
    const offset = Math.min(stream.fullText.length, echoLength);
    stream.push(t.id);
    return offset;
  });
}

/** text_offset of generated tokens: where each one's text starts in the completion (GeneratedLogprob.textOffset), after `start`. */
export function generatedOffsets(logprobs: readonly GeneratedLogprob[], start: number): number[] {
  return logprobs.map((lp) => start + lp.textOffset);
}
