// Real trained weights (../shared/models): the packed W4A8 model tracks its FP32 source when both read
// the same token sequence (sampled from the FP32 model itself, teacher-forced): top-1 agreement and
// mean KL divergence of the next-token distributions.
import { describe, expect, it } from 'vitest';
import { importLlama2c } from '../lib/import/index.js';
import { createNativeModel, createReferenceNativeModel } from '../lib/model/native-model.js';
import { Sampler, resolveSampling } from '../lib/model/sampler.js';
import { packModel } from '../lib/pack.js';
import type { NativeModelHandle } from '../lib/native.js';
import { llama2cCheckpoints, missingModelsMessage } from './fixtures/shared-models.js';

const checkpoints = llama2cCheckpoints();
if (checkpoints.length === 0) console.warn(missingModelsMessage('llama2.c checkpoint'));

/** Samples `length` tokens from `handle` after BOS (id 1), seeded. */
async function sample(handle: NativeModelHandle, vocab: number, length: number, seed: number): Promise<number[]> {
  const sampler = new Sampler(resolveSampling({ temperature: 1, topK: 0, topP: 1, minP: 0, seed }));
  const id = handle.createSequence(length + 1);
  const tokens = [1];
  const logits = new Float32Array(vocab);
  while (tokens.length < length) {
    await handle.step(Int32Array.of(id), Int32Array.of(1), Int32Array.of(tokens[tokens.length - 1]), logits);
    tokens.push(sampler.sample(logits, tokens));
  }
  handle.freeSequence(id);
  return tokens;
}

async function allLogits(handle: NativeModelHandle, tokens: number[], vocab: number): Promise<Float32Array> {
  const id = handle.createSequence(tokens.length);
  const logits = new Float32Array(tokens.length * vocab);
  await handle.step(Int32Array.of(id), Int32Array.of(tokens.length), Int32Array.from(tokens), logits, true);
  handle.freeSequence(id);
  return logits;
}

function logSoftmax(row: Float32Array): Float64Array {
  let max = -Infinity;
  for (const v of row) max = Math.max(max, v);
  let sum = 0;
  for (const v of row) sum += Math.exp(v - max);
  const log = Math.log(sum) + max;
  return Float64Array.from(row, (v) => v - log);
}

describe('W4A8 on trained checkpoints', () => {
  if (checkpoints.length === 0) {
    it.skip(missingModelsMessage('llama2.c checkpoint'), () => undefined);
    return;
  }
  // stories260K is tiny (K = 64): round-to-nearest INT4 costs it a lot (KL ~1.9 nats at G = 32, ~2.9 at
  // G = 128; the INT4 step alone, with FP32 activations, gives ~2.1). These bounds pin that level so a
  // regression shows; the GPTQ/DPQ quantizers are measured against it.
  it.each(checkpoints)('%s: RTN W4A8 tracks FP32 on its own samples, better with smaller groups', async (file) => {
    const source = await importLlama2c(file);
    const vocab = source.config.vocabSize;
    const reference = createReferenceNativeModel(source);
    const sequences = [];
    for (const seed of [1, 2, 3, 4]) sequences.push(await sample(reference, vocab, 128, seed));
    const results: Record<number, { agreement: number; kl: number }> = {};
    for (const groupSize of [32, 128] as const) {
      const packed = createNativeModel(await packModel(source, { groupSize, weightFormat: 'e4m3fn', scales: 'float', method: 'rtn' }));
      let agree = 0, kl = 0, count = 0;
      for (const tokens of sequences) {
        const p = await allLogits(reference, tokens, vocab);
        const q = await allLogits(packed, tokens, vocab);
        for (let t = 0; t < tokens.length; t++) {
          const lp = logSoftmax(p.subarray(t * vocab, (t + 1) * vocab));
          const lq = logSoftmax(q.subarray(t * vocab, (t + 1) * vocab));
          let d = 0, bestP = 0, bestQ = 0;
          for (let i = 0; i < vocab; i++) {
            d += Math.exp(lp[i]) * (lp[i] - lq[i]);
            if (lp[i] > lp[bestP]) bestP = i;
            if (lq[i] > lq[bestQ]) bestQ = i;
          }
          kl += d;
          if (bestP === bestQ) agree++;
          count++;
        }
      }
      results[groupSize] = { agreement: agree / count, kl: kl / count };
      console.log(`${file} RTN G=${groupSize}: top-1 agreement ${(agree / count).toFixed(3)}, mean KL ${(kl / count).toFixed(3)} over ${count} positions`);
      packed.dispose();
    }
    expect(results[32].kl).toBeLessThan(2.5);
    expect(results[32].agreement).toBeGreaterThan(0.2);
    expect(results[32].kl).toBeLessThan(results[128].kl);
    reference.dispose();
  });
});
