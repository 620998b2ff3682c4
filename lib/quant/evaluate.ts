/**
 * Accuracy of a model on token sequences, optionally against a reference model (the FP32 source):
 *   perplexity    exp(mean −log p(token | previous tokens)), sliding window: windows of `context` tokens
 *                 every `stride` tokens; each token is scored once, in the first window that predicts it
 *                 (so after the first window every scored token has at least context − stride tokens of
 *                 history), as Hugging Face's perplexity guide does
 *   KLD           mean over scored tokens of KL(P_ref ‖ P_model) = Σ_v p_ref (log p_ref − log p_model),
 *                 as llama.cpp's perplexity tool reports it (--kl-divergence)
 *   top-1         share of scored tokens where both models' most likely next token is the same
 * Both models see the same windows; logits come from one forward step per batch of windows.
 */
import { W4a8Error } from '../errors.js';
import type { NativeModelHandle } from '../native.js';

export interface EvalOptions {
  /** Window length in tokens (default: min(512, the model's context)). */
  context?: number;
  /** Window step (default: context / 2). */
  stride?: number;
  /** The FP32 reference for KLD and top-1 agreement. */
  reference?: NativeModelHandle;
  /** Logit rows per forward step (bounds memory: rows * vocab floats per model; default 2048). */
  stepRows?: number;
  /** Called after each step with the tokens scored so far, of total. */
  onProgress?: (done: number, total: number) => void;
}

export interface EvalResult {
  /** Scored tokens. */
  tokens: number;
  /** Mean negative log-likelihood (nats) and its exp. */
  nll: number;
  perplexity: number;
  /** With a reference: its perplexity on the same tokens, the mean KLD (± standard error) and top-1 agreement. */
  referencePerplexity?: number;
  kld?: number;
  kldStdErr?: number;
  top1?: number;
}

interface Window {
  tokens: Int32Array;
  /** Rows of the window's logits that are scored: row r predicts tokens[r + 1]. */
  firstScored: number;
}

/** The windows of one sequence: [begin, begin + context) every stride; rows scored = the tokens not scored before. */
export function slidingWindows(sequence: Int32Array, context: number, stride: number): Window[] {
  const windows: Window[] = [];
  let scoredUpTo = 1;  // tokens [1, scoredUpTo) are scored already; token 0 has no prediction
  for (let begin = 0; ; begin += stride) {
    const end = Math.min(begin + context, sequence.length);
    if (end > scoredUpTo) windows.push({ tokens: sequence.subarray(begin, end), firstScored: scoredUpTo - 1 - begin });
    scoredUpTo = Math.max(scoredUpTo, end);
    if (end === sequence.length) break;
  }
  return windows;
}

/** log-softmax of one row, in float64. */
function logSoftmax(row: Float32Array, out: Float64Array): void {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i] > max) max = row[i];
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i] - max);
  const logZ = max + Math.log(sum);
  for (let i = 0; i < row.length; i++) out[i] = row[i] - logZ;
}

function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if (row[i] > row[best]) best = i;
  return best;
}

async function runWindows(handle: NativeModelHandle, windows: Window[], vocab: number): Promise<Float32Array> {
  const total = windows.reduce((sum, w) => sum + w.tokens.length, 0);
  const logits = new Float32Array(total * vocab);
  const ids = Int32Array.from(windows, (w) => handle.createSequence(w.tokens.length));
  try {
    const tokens = new Int32Array(total);
    let offset = 0;
    for (const w of windows) {
      tokens.set(w.tokens, offset);
      offset += w.tokens.length;
    }
    await handle.step(ids, Int32Array.from(windows, (w) => w.tokens.length), tokens, logits, true);
  } finally {
    for (const id of ids) handle.freeSequence(id);
  }
  return logits;
}

export async function evaluateModel(handle: NativeModelHandle, sequences: readonly Int32Array[], vocab: number, maxContext: number,
  options: EvalOptions = {}): Promise<EvalResult> {
  const context = options.context ?? Math.min(512, maxContext);
  if (!Number.isInteger(context) || context < 2 || context > maxContext)
    throw new W4a8Error('E_OPTION', `context must be an integer in [2, ${maxContext}], got ${context}`);
  const stride = options.stride ?? Math.max(1, Math.floor(context / 2));
  if (!Number.isInteger(stride) || stride < 1 || stride > context)
    throw new W4a8Error('E_OPTION', `stride must be an integer in [1, context = ${context}], got ${stride}`);
  const stepRows = Math.max(context, options.stepRows ?? 2048);
  const windows = sequences.filter((s) => s.length >= 2).flatMap((s) => slidingWindows(s, context, stride));
  if (windows.length === 0) throw new W4a8Error('E_OPTION', 'no sequence has the 2 tokens needed to score one');
  const totalScored = windows.reduce((sum, w) => sum + w.tokens.length - 1 - w.firstScored, 0);

  let scored = 0, nll = 0, refNll = 0, kld = 0, kldSquares = 0, agree = 0;
  const logP = new Float64Array(vocab), logRef = new Float64Array(vocab);
  for (let start = 0; start < windows.length;) {
    const batch: Window[] = [];
    let rows = 0;
    while (start < windows.length && (batch.length === 0 || rows + windows[start].tokens.length <= stepRows)) {
      rows += windows[start].tokens.length;
      batch.push(windows[start++]);
    }
    const logits = await runWindows(handle, batch, vocab);
    const refLogits = options.reference ? await runWindows(options.reference, batch, vocab) : undefined;
    let rowBase = 0;
    for (const w of batch) {
      for (let r = w.firstScored; r < w.tokens.length - 1; r++) {
        const target = w.tokens[r + 1];
        const at = (rowBase + r) * vocab;
        const row = logits.subarray(at, at + vocab);
        logSoftmax(row, logP);
        nll -= logP[target];
        if (refLogits) {
          const refRow = refLogits.subarray(at, at + vocab);
          logSoftmax(refRow, logRef);
          refNll -= logRef[target];
          let kl = 0;
          for (let v = 0; v < vocab; v++) kl += Math.exp(logRef[v]) * (logRef[v] - logP[v]);
          kld += kl;
          kldSquares += kl * kl;
          if (argmax(row) === argmax(refRow)) agree++;
        }
        scored++;
      }
      rowBase += w.tokens.length;
    }
    options.onProgress?.(scored, totalScored);
  }
  const result: EvalResult = { tokens: scored, nll: nll / scored, perplexity: Math.exp(nll / scored) };
  if (options.reference) {
    const mean = kld / scored;
    result.referencePerplexity = Math.exp(refNll / scored);
    result.kld = mean;
    result.kldStdErr = scored > 1 ? Math.sqrt(Math.max(0, kldSquares / scored - mean * mean) / (scored - 1)) : 0;
    result.top1 = agree / scored;
  }
  return result;
}
