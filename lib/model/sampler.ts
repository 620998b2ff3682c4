/**
 * Token sampling from one row of logits: repetition penalty, temperature, top-k, min-p, top-p, then a
 * draw from a seeded generator (so a seed reproduces a generation). temperature 0 is greedy.
 */
import { W4a8Error } from '../errors.js';

export interface SamplingOptions {
  /** 0 = greedy (argmax). Default 0.8. */
  temperature?: number;
  /** Keep the k most likely tokens (0 = all). Default 40. */
  topK?: number;
  /** Keep the smallest set whose probability reaches p (1 = all). Default 0.95. */
  topP?: number;
  /** Drop tokens less likely than minP times the most likely one (0 = off). Default 0.05. */
  minP?: number;
  /** > 1 discourages tokens seen in the last `repetitionWindow` tokens (1 = off). Default 1. */
  repetitionPenalty?: number;
  /** How many recent tokens the repetition penalty looks at. Default 64. */
  repetitionWindow?: number;
  /** Seed of the sampling generator; random when omitted. */
  seed?: number;
}

export type ResolvedSampling = Required<SamplingOptions>;

function numberIn(value: unknown, name: string, fallback: number, min: number, max: number, integer = false): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || Number.isNaN(value) || value < min || value > max || (integer && !Number.isInteger(value)))
    throw new W4a8Error('E_OPTION', `${name} must be ${integer ? 'an integer' : 'a number'} in [${min}, ${max}], got ${String(value)}`);
  return value;
}

export function resolveSampling(o: SamplingOptions): ResolvedSampling {
  return {
    temperature: numberIn(o.temperature, 'temperature', 0.8, 0, 100),
    topK: numberIn(o.topK, 'topK', 40, 0, 1 << 24, true),
    topP: numberIn(o.topP, 'topP', 0.95, 0, 1),
    minP: numberIn(o.minP, 'minP', 0.05, 0, 1),
    repetitionPenalty: numberIn(o.repetitionPenalty, 'repetitionPenalty', 1, 0.01, 100),
    repetitionWindow: numberIn(o.repetitionWindow, 'repetitionWindow', 64, 0, 1 << 24, true),
    seed: numberIn(o.seed, 'seed', Math.floor(Math.random() * 2 ** 32), 0, 2 ** 53, true),
  };
}

export class Sampler {
  private state: number;

  constructor(private readonly options: ResolvedSampling) {
    this.state = options.seed % 2 ** 32 >>> 0;
  }

  /** Uniform [0, 1) from a mulberry32 generator. */
  private random(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Picks the next token. `logits` is modified (penalties applied) and must not be reused. */
  sample(logits: Float32Array, history: readonly number[]): number {
    const o = this.options;
    if (o.repetitionPenalty !== 1) {
      const seen = new Set(history.slice(Math.max(0, history.length - o.repetitionWindow)));
      for (const t of seen) logits[t] = logits[t] > 0 ? logits[t] / o.repetitionPenalty : logits[t] * o.repetitionPenalty;
    }
    if (o.temperature === 0) return argmax(logits);
    const candidates = topCandidates(logits, o.topK > 0 ? Math.min(o.topK, logits.length) : logits.length);
    // Softmax over the candidates (sorted by logit, descending) at the given temperature.
    const top = logits[candidates[0]];
    let probabilities = candidates.map((t) => Math.exp((logits[t] - top) / o.temperature));
    let total = probabilities.reduce((a, b) => a + b, 0);
    let keep = candidates.length;
    if (o.minP > 0) {
      const threshold = o.minP * (probabilities[0] / total);
      while (keep > 1 && probabilities[keep - 1] / total < threshold) keep--;
    }
    if (o.topP < 1) {
      let cumulative = 0;
      for (let i = 0; i < keep; i++) {
        cumulative += probabilities[i] / total;
        if (cumulative >= o.topP) { keep = i + 1; break; }
      }
    }
    probabilities = probabilities.slice(0, keep);
    total = probabilities.reduce((a, b) => a + b, 0);
    let r = this.random() * total;
    for (let i = 0; i < keep; i++) {
      r -= probabilities[i];
      if (r < 0) return candidates[i];
    }
    return candidates[keep - 1];
  }
}

export function argmax(values: Float32Array): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/** Indices of the k largest values, largest first (a bounded selection, not a full sort, when k is small). */
function topCandidates(values: Float32Array, k: number): number[] {
  if (k >= values.length / 4) return Array.from(values.keys()).sort((a, b) => values[b] - values[a]).slice(0, k);
  const picked: number[] = [];
  let floor = -Infinity;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (picked.length === k && v <= floor) continue;
    // Insert in descending order; k is small (tens), so a linear insert beats a heap here.
    let at = picked.length;
    while (at > 0 && values[picked[at - 1]] < v) at--;
    picked.splice(at, 0, i);
    if (picked.length > k) picked.pop();
    if (picked.length === k) floor = values[picked[k - 1]];
  }
  return picked;
}
