/**
 * `npm start` (`w4a8 start [model.w4a8]`): the main job, batched decoding. With a model path it runs
 * that model; without one it builds the synthetic Llama (seeded random weights, real proportions) in a
 * temporary folder, packs it to W4A8 and runs it, saying clearly that its text is random.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { backend } from '../gemm.js';
import { writePackedModel } from '../format/index.js';
import { W4a8Model } from '../model/model.js';
import { syntheticSourceModel } from '../model/synthetic.js';
import { packModel } from '../pack.js';
import { numberOption } from './generate.js';

const PROMPTS = ['Once upon a time', 'The quick brown fox', 'In a distant galaxy', 'def fibonacci(n):',
  'The capital of France is', 'Dear diary, today', 'Breaking news:', 'To be or not to be'];

export async function startCommand(args: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args, allowPositionals: true, options: { batch: { type: 'string' }, 'max-tokens': { type: 'string' } },
  });
  const batch = numberOption(values.batch, 'batch', 8, true);
  const maxTokens = numberOption(values['max-tokens'], 'max-tokens', 64, true);
  let file = positionals[0];
  let temporary: string | undefined;
  if (!file) {
    temporary = mkdtempSync(path.join(tmpdir(), 'w4a8-'));
    file = path.join(temporary, 'synthetic.w4a8');
    console.log('No model given: building a synthetic Llama with RANDOM weights (its text is gibberish by design).');
    const source = syntheticSourceModel();
    const c = source.config;
    console.log(`  dim ${c.dim}, MLP ${c.hiddenDim}, ${c.nLayers} layers, ${c.nHeads} heads / ${c.nKvHeads} KV heads, vocab ${c.vocabSize}`);
    const t0 = performance.now();
    await writePackedModel(file, await packModel(source, { groupSize: 128, weightFormat: 'e4m3fn', scales: 'float', method: 'rtn' }));
    console.log(`  packed to W4A8 (RTN, G=128, e4m3fn) in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${file}`);
  }
  try {
    const model = await W4a8Model.load(file, { maxBatch: batch });
    console.log(`kernels: ${backend().name} (${backend().reason})`);
    const prompts = Array.from({ length: batch }, (_, i) => PROMPTS[i % PROMPTS.length]);
    const single = await model.complete(prompts[0], { maxTokens, seed: 1 });
    console.log(`batch 1: ${single.generatedTokens} tokens, ${single.tokensPerSecond.toFixed(1)} tokens/s, first token after ${single.timeToFirstTokenMs.toFixed(0)} ms`);
    const start = performance.now();
    const results = await Promise.all(prompts.map((p, i) => model.complete(p, { maxTokens, seed: i + 1 })));
    const seconds = (performance.now() - start) / 1000;
    const total = results.reduce((s, r) => s + r.generatedTokens, 0);
    results.forEach((r, i) => console.log(`[${i}] ${JSON.stringify(prompts[i] + r.text).slice(0, 100)}`));
    console.log(`batch ${batch}: ${total} tokens in ${seconds.toFixed(2)} s = ${(total / seconds).toFixed(1)} tokens/s in all ` +
      `(${((total / seconds) / single.tokensPerSecond).toFixed(1)}x batch 1)`);
    await model.dispose();
  } finally {
    if (temporary) rmSync(temporary, { recursive: true, force: true });
  }
}
