#!/usr/bin/env node
// Where the time of one decode step goes, at several batch sizes: `node bench/lib/step-profile.mjs [options]`.
//
// For each batch B: B sequences get a short prompt, then --steps decode steps run
//   native   straight through the addon (handle.step with B sequences, one token each): the forward step alone;
//            with W4A8_PROFILE=1 (set here) the runtime also prints the time of each part of the step
//            (embed, norm, quantize, gemm, rope+kv, attention, swiglu, residual, lm_head) every 16 steps;
//   engine   through W4a8Model.stream() with B concurrent requests (greedy): the step plus everything the
//            JS side does per step (scheduling, typed arrays, sampling, chunks).
// Prints ms/step, tokens/s, and tokens/s relative to B = 1. Build the TypeScript and the addon first.
// Model: a .w4a8 file (--model), by default the 1B-class synthetic model of bench:e2e from its cache.
import os from 'node:os';
import path from 'node:path';
import { existsSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { ROOT, formatTable, fixed } from './report.mjs';
import { randomTokenIds } from './random.mjs';

const { values: v } = parseArgs({
  options: {
    model: { type: 'string' }, batches: { type: 'string' }, steps: { type: 'string' }, prompt: { type: 'string' },
    modes: { type: 'string' }, quiet: { type: 'boolean' }, help: { type: 'boolean' }, 'kv-cache': { type: 'string' },
  },
});
if (v.help) {
  console.log(`usage: node bench/lib/step-profile.mjs [--model FILE.w4a8] [--batches 1,16] [--steps 32] [--prompt 16]
  [--modes native,engine] [--quiet (no per-part profile)] [--kv-cache bf16|f32]
  default model: ${path.join(os.tmpdir(), 'w4a8-bench', 'synthetic-1b.v1.w4a8')} (run npm run bench:e2e -- --quick once to build it)`);
  process.exit(0);
}
if (!v.quiet) process.env.W4A8_PROFILE = '1';  // read by the addon at its first step
const modelFile = v.model ?? path.join(os.tmpdir(), 'w4a8-bench', 'synthetic-1b.v1.w4a8');
if (!existsSync(modelFile)) {
  console.error(`no model at ${modelFile}: pass --model or run npm run bench:e2e -- --quick --models synthetic-1b once`);
  process.exit(1);
}
const batches = (v.batches ?? '1,16').split(',').map(Number);
const steps = Number(v.steps ?? 32);
const promptTokens = Number(v.prompt ?? 16);
const modes = (v.modes ?? 'native,engine').split(',');

const dist = (file) => import(pathToFileURL(path.join(ROOT, 'dist', file)).href);
const { readPackedModel } = await dist('format/index.js');
const { W4a8Model } = await dist('model/model.js');
const packed = await readPackedModel(modelFile, { checkValues: false });
packed.config = { ...packed.config, eosTokenIds: [] };
const vocab = packed.config.vocabSize;
const maxBatch = Math.max(...batches);
const model = W4a8Model.fromPacked(packed, {
  maxBatch, contextLength: Math.min(packed.config.maxSeqLen, promptTokens + steps + 16), kvCache: v['kv-cache'],
});
const handle = model.handle;  // the native model (private field; a benchmark may look inside)
const prompts = Array.from({ length: maxBatch }, (_, i) => randomTokenIds(promptTokens, 500 + i, 0, vocab));

async function native(batch) {
  const ids = prompts.slice(0, batch).map((p) => {
    const id = handle.createSequence(promptTokens + steps + 2);
    return { id, prompt: p };
  });
  const logits = new Float32Array(batch * vocab);
  await handle.step(Int32Array.from(ids, (s) => s.id), Int32Array.from(ids, () => promptTokens), Int32Array.from(ids.flatMap((s) => s.prompt)), logits);
  const seq = Int32Array.from(ids, (s) => s.id), counts = new Int32Array(batch).fill(1), tokens = new Int32Array(batch);
  const warmup = 2;
  let t0 = 0;
  for (let s = 0; s < steps + warmup; s++) {
    if (s === warmup) t0 = performance.now();
    for (let b = 0; b < batch; b++) tokens[b] = (s * 31 + b * 7) % vocab;
    await handle.step(seq, counts, tokens, logits);
  }
  const ms = (performance.now() - t0) / steps;
  for (const s of ids) handle.freeSequence(s.id);
  return ms;
}

async function engine(batch) {
  const marks = [];
  await Promise.all(prompts.slice(0, batch).map(async (p, i) => {
    let n = 0;
    for await (const chunk of model.stream(p, { maxTokens: steps + 2, temperature: 0 })) {
      n += chunk.tokenIds.length;
      if (i === 0 && n >= 2) marks.push(performance.now());  // after every sequence's prefill
    }
  }));
  return (marks[marks.length - 1] - marks[0]) / (marks.length - 1);
}

const rows = [];
for (const mode of modes) {
  let base = null;
  for (const batch of batches) {
    console.error(`${mode}: batch ${batch} ...`);
    const ms = mode === 'native' ? await native(batch) : await engine(batch);
    const tps = (batch * 1000) / ms;
    base ??= tps;
    rows.push([mode, String(batch), fixed(ms, 2), fixed(tps, 1), `${fixed(tps / base, 2)}x`]);
  }
}
await model.dispose();
console.log(`\n${path.basename(modelFile)}, KV cache ${model.kvCache}, ${process.env.W4A8_THREADS ?? os.availableParallelism()} threads, ${steps} steps, load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}`);
console.log(formatTable(['mode', 'batch', 'ms/step', 'tokens/s', 'vs batch 1'], rows, new Set([0])));
