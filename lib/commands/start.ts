/**
 * `npm start` (`w4a8 start [model.w4a8]`): the main job, batched decoding. Without a model it runs the
 * project's own trained model (models/default/model.w4a8): several English prompts decoded together,
 * tokens/s printed. `--synthetic` builds a Llama with seeded random weights and real proportions in a
 * temporary folder instead, packs it and runs it, saying clearly that its text is random.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { backend } from '../gemm.js';
import { defaultModelFile } from '../default-model.js';
import { writePackedModel } from '../format/index.js';
import { W4a8Model, type GenerateOptions } from '../model/model.js';
import { syntheticSourceModel } from '../model/synthetic.js';
import { packModel } from '../pack.js';
import { numberOption, parseCommandArgs } from './generate.js';

const PROMPTS = ['The purpose of this chapter is to', 'When the king heard the news, he', 'To install the package, run',
  'In the beginning', 'The first thing you should do is', 'This manual describes how to', 'And the Lord said unto',
  'The configuration file contains'];

export const START_USAGE = `w4a8 start [model.w4a8] [options]   (npm start)
  batched decoding: --batch prompts decoded together, then one alone, tokens/s for both
  (default model: the project's own, models/default/model.w4a8)
  --synthetic          a Llama with seeded RANDOM weights built on the fly instead (gibberish text)
  --batch N            prompts decoded together (default 8)
  --max-tokens N       tokens per prompt (default 64)
  --temperature T      0 = greedy (default 0.7; top-p 0.95, repetition penalty 1.1)`;

export async function startCommand(args: string[]): Promise<void> {
  const { values, positionals } = parseCommandArgs({
    args, allowPositionals: true,
    options: { batch: { type: 'string' }, 'max-tokens': { type: 'string' }, temperature: { type: 'string' }, synthetic: { type: 'boolean' } },
  }, START_USAGE);
  const batch = numberOption(values.batch, 'batch', 8, true);
  const maxTokens = numberOption(values['max-tokens'], 'max-tokens', 64, true);
  const sampling: GenerateOptions = { temperature: numberOption(values.temperature, 'temperature', 0.7), topP: 0.95, repetitionPenalty: 1.1 };
  let temporary: string | undefined;
  let file = positionals[0];
  if (!file && values.synthetic) {
    temporary = mkdtempSync(path.join(tmpdir(), 'w4a8-'));
    file = await packSynthetic(temporary);
  } else if (!file) {
    file = defaultModelFile();
    console.log(`Model: ${file} (the project's own trained 26.7M-parameter Llama; see models/default/README.md)`);
  }
  try {
    const model = await W4a8Model.load(file, { maxBatch: batch });
    console.log(`kernels: ${backend().name} (${backend().reason})`);
    const prompts = Array.from({ length: batch }, (_, i) => PROMPTS[i % PROMPTS.length]);
    const input = (p: string): string | number[] => model.tokenizer ? p : [1];
    const single = await model.complete(input(prompts[0]), { ...sampling, maxTokens, seed: 1 });
    console.log(`batch 1: ${single.generatedTokens} tokens, ${single.tokensPerSecond.toFixed(1)} tokens/s, first token after ${single.timeToFirstTokenMs.toFixed(0)} ms`);
    const start = performance.now();
    const results = await Promise.all(prompts.map((p, i) => model.complete(input(p), { ...sampling, maxTokens, seed: i + 1 })));
    const seconds = (performance.now() - start) / 1000;
    const total = results.reduce((s, r) => s + r.generatedTokens, 0);
    results.forEach((r, i) => console.log(`[${i}] ${JSON.stringify(prompts[i] + r.text).slice(0, 160)}`));
    console.log(`batch ${batch}: ${total} tokens in ${seconds.toFixed(2)} s = ${(total / seconds).toFixed(1)} tokens/s in all ` +
      `(${((total / seconds) / single.tokensPerSecond).toFixed(1)}x batch 1)`);
    await model.dispose();
  } finally {
    if (temporary) rmSync(temporary, { recursive: true, force: true });
  }
}

/** Builds and packs the synthetic random-weight Llama into `dir`; returns the packed file. */
async function packSynthetic(dir: string): Promise<string> {
  const file = path.join(dir, 'synthetic.w4a8');
  console.log('--synthetic: building a Llama with RANDOM weights (its text is gibberish by design).');
  const source = syntheticSourceModel();
  const c = source.config;
  console.log(`  dim ${c.dim}, MLP ${c.hiddenDim}, ${c.nLayers} layers, ${c.nHeads} heads / ${c.nKvHeads} KV heads, vocab ${c.vocabSize}`);
  const t0 = performance.now();
  await writePackedModel(file, await packModel(source, { groupSize: 128, weightFormat: 'e4m3fn', scales: 'float', method: 'rtn' }));
  console.log(`  packed to W4A8 (RTN, G=128, e4m3fn) in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${file}`);
  return file;
}
