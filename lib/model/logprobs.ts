import { callNative } from '../native.js';

/**
 * Log probabilities of generated tokens (OpenAI's `logprobs`), from the model's own distribution: the log-softmax of
 * a step's raw logits, before logit bias, penalties and temperature (as vLLM reports them by default).
 */

/** A token and its log probability. */
export interface TokenLogprob {
  id: number;
  logprob: number;
}

/** A generated token's log probability, and the most likely tokens at its step (most likely first). */
export interface GeneratedLogprob extends TokenLogprob {
  top: TokenLogprob[];
  /** Generated tokens: where the token's text starts in the generated text (its decoding so far, before it). */
  textOffset?: number;
}

/** Most top tokens a request may ask for (OpenAI's limit for top_logprobs). */
export const MAX_TOP_LOGPROBS = 20;

/** A step's log-softmax normalizer and most likely tokens, read from the raw logits before the sampler edits them. */
export interface StepLogprobs {
  logMass: number;
  top: TokenLogprob[];
}

/**
 * The raw row's log Σ e^logit and its `topCount` most likely tokens (native: model/ops.cpp logSoftmaxTop; over a 152k
 * vocabulary a JS loop with Math.exp took about 2.5 ms per token on the event loop). Ties: the lower id first.
 */
export function stepLogprobs(row: Float32Array, topCount: number): StepLogprobs {
  const found = callNative((a) => a.logSoftmaxTop(row, Math.min(topCount, row.length)));
  const logMass = found[0];
  return { logMass, top: Array.from(found.subarray(1), (id) => ({ id, logprob: row[id] - logMass })) };
}

/** The generated token's entry: `rawLogit` its logit before bias and penalties. */
export function generatedLogprob(step: StepLogprobs, token: number, rawLogit: number): GeneratedLogprob {
  return { id: token, logprob: rawLogit - step.logMass, top: step.top };
}
