/**
 * Token sampling from one row of logits: logit bias, repetition, presence and frequency penalties, temperature,
 * top-k, min-p, top-p, then a draw from a seeded generator (so a seed reproduces a generation). temperature 0 is greedy.
 */
import { W4a8Error } from '../errors.js';
import { seededRandom } from '../random.js';

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
  /** Subtracted from the logit of every token already generated (OpenAI's presence_penalty, -2..2). Default 0. */
  presencePenalty?: number;
  /** Subtracted from a token's logit once per time it was generated (OpenAI's frequency_penalty, -2..2). Default 0. */
  frequencyPenalty?: number;
  /** Added to the logits of these token ids before sampling (-100..100; -100 in effect bans a token). */
  logitBias?: Readonly<Record<number, number>>;
  /** Seed of the sampling generator; random when omitted. */
  seed?: number;
}

export type ResolvedSampling = Required<Omit<SamplingOptions, 'logitBias'>> & { logitBias: ReadonlyMap<number, number> };

function numberIn(value: unknown, name: string, fallback: number, min: number, max: number, integer = false): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || Number.isNaN(value) || value < min || value > max || (integer && !Number.isInteger(value)))
    throw new W4a8Error('E_OPTION', `${name} must be ${integer ? 'an integer' : 'a number'} in [${min}, ${max}], got ${String(value)}`);
  return value;
}

/** Token id -> bias, each id an integer in [0, vocabSize) and each bias in [-100, 100]. */
function logitBiasMap(value: unknown, vocabSize: number): Map<number, number> {
  const map = new Map<number, number>();
  if (value === undefined) return map;
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new W4a8Error('E_OPTION', 'logitBias must be an object of token id -> bias');
  for (const [key, bias] of Object.entries(value)) {
    const id = Number(key);
    if (!/^\d+$/.test(key) || id >= vocabSize)
      throw new W4a8Error('E_OPTION', `logitBias: '${key}' is not a token id in [0, ${vocabSize})`);
    map.set(id, numberIn(bias, `logitBias[${key}]`, 0, -100, 100));
  }
  return map;
}

export function resolveSampling(o: SamplingOptions, vocabSize = Infinity): ResolvedSampling {
  return {
    temperature: numberIn(o.temperature, 'temperature', 0.8, 0, 100),
    topK: numberIn(o.topK, 'topK', 40, 0, 1 << 24, true),
    topP: numberIn(o.topP, 'topP', 0.95, 0, 1),
    minP: numberIn(o.minP, 'minP', 0.05, 0, 1),
    repetitionPenalty: numberIn(o.repetitionPenalty, 'repetitionPenalty', 1, 0.01, 100),
    repetitionWindow: numberIn(o.repetitionWindow, 'repetitionWindow', 64, 0, 1 << 24, true),
    presencePenalty: numberIn(o.presencePenalty, 'presencePenalty', 0, -2, 2),
    frequencyPenalty: numberIn(o.frequencyPenalty, 'frequencyPenalty', 0, -2, 2),
    logitBias: logitBiasMap(o.logitBias, vocabSize),
    seed: numberIn(o.seed, 'seed', Math.floor(Math.random() * 2 ** 32), 0, 2 ** 53, true),
  };
}

export class Sampler {
  /** Uniform [0, 1) from the seeded generator. */
  private readonly random: () => number;
  /** Times each token was generated (by this sampler), for the presence and frequency penalties. */
  private readonly generated = new Map<number, number>();
  /** The raw logits of the tokens the last sample() changed, when asked to keep them (for log probabilities). */
  private changed?: Map<number, number>;

  constructor(private readonly options: ResolvedSampling) {
    this.random = seededRandom(foldSeed(options.seed));
  }

  /**
   * Picks the next token. `logits` is modified (penalties applied; with keepRaw, rawLogit() still gives a token's
   * logit from before) and must not be reused otherwise. The work is one or
   * two passes over the vocabulary; only the candidates that can be drawn get sorted (never the whole vocabulary
   * unless top-p needs it), so a step with many sequences stays cheap on the JS thread.
   */
  sample(logits: Float32Array, history: readonly number[], keepRaw = false): number {
    const o = this.options;
    const edits = o.logitBias.size > 0 || o.repetitionPenalty !== 1 || o.presencePenalty !== 0 || o.frequencyPenalty !== 0;
    const changed = (this.changed = keepRaw && edits ? new Map<number, number>() : undefined);
    const keep = changed && ((t: number) => { if (!changed.has(t)) changed.set(t, logits[t]); });
    for (const [t, bias] of o.logitBias) { keep?.(t); logits[t] += bias; }
    if (o.repetitionPenalty !== 1) {
      const seen = new Set(history.slice(Math.max(0, history.length - o.repetitionWindow)));
      for (const t of seen) {
        keep?.(t);
        logits[t] = logits[t] > 0 ? logits[t] / o.repetitionPenalty : logits[t] * o.repetitionPenalty;
      }
    }
    if (o.presencePenalty !== 0 || o.frequencyPenalty !== 0)
      for (const [t, count] of this.generated) { keep?.(t); logits[t] -= o.presencePenalty + o.frequencyPenalty * count; }
    const token = this.pick(logits);
    if (o.presencePenalty !== 0 || o.frequencyPenalty !== 0) this.generated.set(token, (this.generated.get(token) ?? 0) + 1);
    return token;
  }

  /** The logit `token` had before the last sample(logits, history, true) applied bias and penalties to `logits`. */
  rawLogit(logits: Float32Array, token: number): number {
    return this.changed?.get(token) ?? logits[token];
  }

  /** The draw itself, from penalized logits. */
  private pick(logits: Float32Array): number {
    const o = this.options;
    if (o.temperature === 0) return finiteTop(logits, argmax(logits));
    const vocab = logits.length;
    const k = o.topK > 0 ? Math.min(o.topK, vocab) : vocab;
    if (k === vocab && o.topP >= 1 && o.minP <= 0) return this.drawFromAll(logits);
    if (k === vocab) return this.drawFromNucleus(logits);
    const candidates = k <= SMALL_TOP_K ? topCandidates(logits, k) : this.largeCandidates(logits, k);
    // Softmax over the top-k candidates (sorted by logit, descending) at the given temperature; `total` is their mass.
    const top = logits[finiteTop(logits, candidates[0])];
    const probabilities = new Float64Array(candidates.length);
    for (let i = 0; i < candidates.length; i++) probabilities[i] = Math.exp((logits[candidates[i]] - top) / o.temperature);
    let total = finiteMass(sum(probabilities, candidates.length)); // (a NaN candidate: E_STEP)
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
    total = sum(probabilities, keep);
    let r = this.random() * total;
    for (let i = 0; i < keep; i++) {
      r -= probabilities[i];
      if (r < 0) return candidates[i];
    }
    return candidates[keep - 1];
  }

  /**
   * Top-p and min-p over the whole vocabulary (no top-k) without sorting it: one pass weighs every token
   * (e = exp((l - top) / T), min-p drops e < minP) and adds it to a bucket of its distance below the top; the
   * buckets' masses, from the top, show which bucket the nucleus (the smallest most-likely set holding topP of
   * the total mass) ends in. Buckets above it are kept whole (in token order), and only that bucket's tokens are
   * sorted, to add its most likely ones (in logit order) until the mass is reached. The draw goes over the kept
   * tokens in that order. Without top-p (min-p alone) every token min-p leaves is kept: no buckets.
   */
  private drawFromNucleus(logits: Float32Array): number {
    const o = this.options;
    const n = logits.length;
    const top = logits[finiteTop(logits, argmax(logits))];
    if (nucleusScratch.weights.length < n) nucleusScratch = { weights: new Float64Array(n), buckets: new Uint16Array(n) };
    const { weights, buckets } = nucleusScratch;
    const masses = new Float64Array(NUCLEUS_BUCKETS);
    const withTopP = o.topP < 1;
    let total = 0;
    for (let i = 0; i < n; i++) {
      const distance = (top - logits[i]) / o.temperature;
      const e = Math.exp(-distance);
      total += e;
      weights[i] = e >= o.minP || distance === 0 ? e : 0; // min-p (the top always stays)
      if (withTopP) {
        const b = Math.min(NUCLEUS_BUCKETS - 1, Math.floor(distance * BUCKETS_PER_UNIT));
        buckets[i] = b;
        masses[b] += weights[i];
      }
    }
    finiteMass(total); // a NaN logit below the top
    const ids: number[] = [];
    let kept = 0;
    if (!withTopP) {
      for (let i = 0; i < n; i++) if (weights[i] > 0) ids.push(i), kept += weights[i];
    } else {
      const target = o.topP * total;
      let edge = 0;
      while (edge < NUCLEUS_BUCKETS - 1 && kept + masses[edge] < target) kept += masses[edge++];
      const edgeIds: number[] = [];
      for (let i = 0; i < n; i++)
        if (weights[i] > 0) {
          if (buckets[i] < edge) ids.push(i);
          else if (buckets[i] === edge) edgeIds.push(i);
        }
      for (const i of sortByLogit(logits, edgeIds)) {
        if (kept >= target && ids.length > 0) break;
        ids.push(i);
        kept += weights[i];
      }
    }
    let r = this.random() * kept;
    for (const i of ids) {
      r -= weights[i];
      if (r < 0) return i;
    }
    return ids[ids.length - 1];
  }

  /** A draw from the softmax of all logits (no top-k, top-p or min-p): two passes, in token order, no sort. */
  private drawFromAll(logits: Float32Array): number {
    const top = logits[finiteTop(logits, argmax(logits))];
    let r = this.random() * finiteMass(this.massAll(logits, top));
    const t = this.options.temperature;
    for (let i = 0; i < logits.length; i++) {
      r -= Math.exp((logits[i] - top) / t);
      if (r < 0) return i;
    }
    return argmax(logits); // rounding left a sliver of r: the most likely token
  }

  /** Σ exp((l - top) / T) over every token. */
  private massAll(logits: Float32Array, top: number): number {
    const t = this.options.temperature;
    let mass = 0;
    for (let i = 0; i < logits.length; i++) mass += Math.exp((logits[i] - top) / t);
    return mass;
  }

  /**
   * The k most likely tokens (k below the vocabulary, above SMALL_TOP_K), largest first. Tokens below the min-p
   * floor cannot be drawn, so when at least k pass it only those are sorted; otherwise the rest of the top k
   * still count in the total that min-p and top-p divide by, and all are sorted.
   */
  private largeCandidates(logits: Float32Array, k: number): number[] {
    const o = this.options;
    const top = logits[argmax(logits)];
    // (the margin leaves borderline tokens to the exact test in pick())
    const minPFloor = o.minP > 0 ? top + o.temperature * (Math.log(o.minP) - 1e-3) : -Infinity;
    const pick = (floor: number) => {
      const picked: number[] = [];
      for (let i = 0; i < logits.length; i++) if (logits[i] >= floor) picked.push(i);
      return sortByLogit(logits, picked);
    };
    const above = pick(minPFloor);
    return (above.length >= k ? above : pick(-Infinity)).slice(0, k);
  }
}

/**
 * `ids` by logit, largest first, ties by id. Sorted as numbers, not with a comparator: each id's key packs its
 * logit's order-preserving bits above the id (exact in a double for vocabularies up to 2^20), and a typed array
 * sorts them natively. Top-p at temperature 1-2 sorts thousands of candidates per token: with a comparator that
 * took 1-3 ms per sample (vocab 8192), up to 100 ms of event loop per step of 32 sequences.
 */
function sortByLogit(logits: Float32Array, ids: number[]): number[] {
  if (logits.length > ID_SPAN) return ids.sort((a, b) => logits[b] - logits[a] || a - b);
  const bits = new Uint32Array(logits.buffer, logits.byteOffset, logits.length);
  const keys = new Float64Array(ids.length);
  for (let i = 0; i < ids.length; i++) {
    let u = bits[ids[i]];
    if (u === 0x80000000) u = 0; // -0 ties with +0
    const ascending = u & 0x80000000 ? ~u >>> 0 : (u | 0x80000000) >>> 0; // the float's order as a uint32
    keys[i] = (0xffffffff - ascending) * ID_SPAN + ids[i];
  }
  keys.sort();
  for (let i = 0; i < ids.length; i++) ids[i] = keys[i] % ID_SPAN;
  return ids;
}
const ID_SPAN = 2 ** 20;

/** drawFromNucleus()'s buckets: 8 per unit of ln(probability ratio), the last one holding all below e^-40. */
const BUCKETS_PER_UNIT = 8;
const NUCLEUS_BUCKETS = 40 * BUCKETS_PER_UNIT;
/** Per-token scratch of drawFromNucleus() (sampling is synchronous on the JS thread, so one serves every sampler). */
let nucleusScratch = { weights: new Float64Array(0), buckets: new Uint16Array(0) };

/** Up to this k, the top-k tokens are picked by insertion into a short sorted list. */
const SMALL_TOP_K = 64;

function sum(values: Float64Array, count: number): number {
  let total = 0;
  for (let i = 0; i < count; i++) total += values[i];
  return total;
}

/**
 * The generator's 32-bit seed: seeds below 2^32 as they are, higher bits mixed in (so that 7 and 7 + 2^32 draw
 * differently; the generator has 2^32 streams, so some seeds above 2^32 still share one).
 */
function foldSeed(seed: number): number {
  return ((seed % 2 ** 32) ^ Math.imul(Math.floor(seed / 2 ** 32), 0x9e3779b1)) >>> 0;
}

/** `mass` when finite: a NaN logit anywhere makes the softmax's mass NaN (E_STEP, as in finiteTop()). */
function finiteMass(mass: number): number {
  if (!Number.isFinite(mass))
    throw new W4a8Error('E_STEP', `the model computed a non-finite logit (softmax mass ${mass}); its weights are corrupt or overflow`);
  return mass;
}

/**
 * `best`, the most likely token, when its logit is finite. A NaN or infinite top comes from corrupt or overflowing
 * weights (a NaN spreads to every logit, and argmax then returns token 0): the request fails with E_STEP instead.
 * Checking the top costs nothing; a full scan of every row took 14 % of the GPU's 32-sequence decode (H200,
 * 7B shape through Node: 2,534 against 2,930 tokens/s).
 */
function finiteTop(logits: Float32Array, best: number): number {
  if (!Number.isFinite(logits[best]))
    throw new W4a8Error('E_STEP', `the model computed a non-finite logit (token ${best}: ${logits[best]}); its weights are corrupt or overflow`);
  return best;
}

export function argmax(values: Float32Array): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

/** Indices of the k largest values, largest first (k small: insertion into a short sorted list, one pass). */
function topCandidates(values: Float32Array, k: number): number[] {
  const picked: number[] = [];
  let floor = -Infinity;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (picked.length === k && v <= floor) continue;
    let at = picked.length;
    while (at > 0 && values[picked[at - 1]] < v) at--;
    picked.splice(at, 0, i);
    if (picked.length > k) picked.pop();
    if (picked.length === k) floor = values[picked[k - 1]];
  }
  return picked;
}
