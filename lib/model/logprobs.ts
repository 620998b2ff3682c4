/**
 * Log probabilities (OpenAI's `logprobs`), from the model's own distribution: the log-softmax of a step's raw
 * logits, before logit bias, penalties and temperature (as vLLM reports them by default).
 */
import { W4a8Error } from '../errors.js';
import { callNative } from '../native.js';

/** A token and its log probability. */
export interface TokenLogprob {
  id: number;
  logprob: number;
}

/** A token at one position (generated, or of a prompt being scored) and the most likely tokens there, most likely first. */
export interface PositionLogprobs extends TokenLogprob {
  top: TokenLogprob[];
}

/** A generated token's entry, with where its text starts in the generated text (its decoding so far, before it). */
export interface GeneratedLogprob extends PositionLogprobs {
  textOffset: number;
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
 * vocabulary a JS loop with Math.exp took about 2.5 ms per token on the event loop). Ties: the lower id first. A row
 * with a NaN or an infinity is E_STEP, as the sampler makes it (its greedy path reads only the top logit).
 */
export function stepLogprobs(row: Float32Array, topCount: number): StepLogprobs {
  const found = callNative((a) => a.logSoftmaxTop(row, Math.min(topCount, row.length)));
  const logMass = found[0];
  if (!Number.isFinite(logMass)) throw new W4a8Error('E_STEP', 'the step\'s logits are not finite (corrupt or overflowing weights)');
  return { logMass, top: Array.from(found.subarray(1), (id) => ({ id, logprob: row[id] - logMass })) };
}

/** The entry of `token` at a step: `rawLogit` its logit before bias and penalties. */
export function positionLogprobs(step: StepLogprobs, token: number, rawLogit: number): PositionLogprobs {
  return { id: token, logprob: rawLogit - step.logMass, top: step.top };
}
