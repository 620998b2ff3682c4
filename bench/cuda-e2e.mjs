#!/usr/bin/env node
// The GPU through the whole Node stack: W4a8Model.create(packed, {device}) on the CUDA plugin, beside the CPU.
// Needs dist/ (npm run build:ts) and an addon built with CUDA, on a machine with a Hopper GPU.
//
//   node bench/cuda-e2e.mjs [--shape 7b|1b] [--layers N] [--tokens N] [--cpu] [--lm-head bf16|w4a8] [--scales float|pow2]
//                           [--kv-cache bf16|f32] [--json PATH]
//
// 1. Correctness: a small synthetic model (RTN-packed: e4m3fn, Gaudi-2 e4m3, and e4m3fn with a W4A8 lm_head)
//    generates the same greedy tokens on 'cuda' and 'cpu', and its prompt log probabilities (steps that return every
//    position's logits) agree; backend info says which device ran.
// 2. Speed: a synthetic model with real shapes (bench/lib/models.mjs: random INT4 codes and scales), decode
//    tokens/s at batch 1 and 32 through the engine (B concurrent generate() calls join one continuous batch),
//    on the GPU, and with --cpu on the CPU too. Decode rate: tokens generated after every sequence has its
//    first token, over that time.
import { parseArgs } from 'node:util';
import { writeFileSync } from 'node:fs';
import { SYNTHETIC_SHAPES, syntheticPacked } from './lib/models.mjs';

const { values: args } = parseArgs({
  options: {
    shape: { type: 'string', default: '7b' }, layers: { type: 'string' }, tokens: { type: 'string', default: '64' },
    cpu: { type: 'boolean', default: false }, json: { type: 'string' }, 'lm-head': { type: 'string', default: 'bf16' },
    'kv-cache': { type: 'string' },  // default: the runtime's DEFAULT_KV_CACHE
    scales: { type: 'string', default: 'float' },  // the synthetic model's group scales: float or pow2 (integer GEMV)
  },
});
const pkg = await import('../dist/index.js');
args['kv-cache'] ??= pkg.DEFAULT_KV_CACHE;
const format = await import('../dist/format/layout.js');
const now = () => performance.now() / 1000;
const report = { device: await pkg.cudaDevice(), checks: [], decode: [] };
console.log('cuda:', report.device);

// ---- 1. same greedy tokens on both devices ----
for (const [weightFormat, lmHead] of [['e4m3fn', 'bf16'], ['e4m3', 'bf16'], ['e4m3fn', 'w4a8']]) {
  const source = pkg.syntheticSourceModel({ dim: 256, hiddenDim: 688, nLayers: 4, nHeads: 8, nKvHeads: 2, maxSeqLen: 256 }, 9);
  const packed = await pkg.packModel(source, { groupSize: 64, weightFormat, scales: weightFormat === 'e4m3' ? 'pow2' : 'float', method: 'rtn', lmHead });
  const cpu = await pkg.W4a8Model.create(packed, { device: 'cpu', maxBatch: 4 });
  const gpu = await pkg.W4a8Model.create(packed, { device: 'cuda', maxBatch: 4 });
  const prompts = [[256, 72, 101, 108, 108, 111], [256, 87, 111], [256, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75]];
  const run = (m) => Promise.all(prompts.map((p) => m.complete(p, { maxTokens: 24, temperature: 0 })));
  const [a, b] = [await run(cpu), await run(gpu)];
  const same = a.every((r, i) => r.tokenIds.join() === b[i].tokenIds.join());
  // Leading tokens that agree, per prompt: a W4A8 lm_head quantizes its input to FP8 again, and BF16 KV caches (the
  // default) round every cached element to BF16 on each device, so a last-bit difference of the hidden state (GPU
  // and CPU sum in other orders) can flip a close argmax of this random-weight model some tokens on.
  const agreeing = a.map((r, i) => { let n = 0; while (n < r.tokenIds.length && r.tokenIds[n] === b[i].tokenIds[n]) n++; return n; });
  const check = { weightFormat, lmHead, cpu: cpu.backend, gpu: gpu.backend, sameGreedyTokens: same, leadingTokensEqual: agreeing,
    firstTokens: { cpu: a[0].tokenIds.slice(0, 8), gpu: b[0].tokenIds.slice(0, 8) } };
  // Prompt log probabilities (the steps that return every position's logits): the GPU's beside the CPU's.
  const [sa, sb] = await Promise.all([cpu, gpu].map((m) => m.complete(prompts[2], { maxTokens: 0, promptLogprobs: 3 })));
  check.promptLogprobs = {
    largestDifference: Math.max(...sa.promptLogprobs.map((p, i) => Math.abs(p.logprob - sb.promptLogprobs[i].logprob))),
    sameTopIds: sa.promptLogprobs.every((p, i) => p.top.map((t) => t.id).join() === sb.promptLogprobs[i].top.map((t) => t.id).join()),
  };
  report.checks.push(check);
  console.log(`greedy ${weightFormat}, lm_head ${lmHead}: ${same ? 'same tokens' : `DIFFERENT tokens (leading tokens equal: ${agreeing.join(', ')} of 24)`} on ${gpu.backend.device} (${gpu.backend.name}) and ${cpu.backend.device} (${cpu.backend.name}); ` +
    `prompt log probabilities: largest difference ${check.promptLogprobs.largestDifference.toExponential(2)}, top-3 ids ${check.promptLogprobs.sameTopIds ? 'the same' : 'DIFFERENT'}`);
  await Promise.all([cpu.dispose(), gpu.dispose()]);
}

// ---- 2. decode tokens/s of a real-shape model ----
const shape = { ...SYNTHETIC_SHAPES[args.shape] };
if (args.layers) shape.nLayers = Number(args.layers);
const tokens = Number(args.tokens);
let t0 = now();
const packed = syntheticPacked(format, shape, 1, args['lm-head'], args.scales);
packed.config = { ...packed.config, eosTokenIds: [] };  // every sequence generates exactly `tokens`
console.log(`${shape.label}${args.layers ? `, ${shape.nLayers} layers` : ''}, lm_head ${args['lm-head']}, ${args.scales} group scales, KV cache ${args['kv-cache']}: built in ${(now() - t0).toFixed(1)} s`);

async function decodeRate(model, batch, maxTokens) {
  const prompts = Array.from({ length: batch }, (_, i) => Array.from({ length: 16 }, (_, j) => (i * 131 + j * 7 + 1) % 32000));
  const firsts = [], times = [];
  await Promise.all(prompts.map(async (p) => {
    let first = true;
    for await (const chunk of model.stream(p, { maxTokens, temperature: 0 })) {
      const t = now();
      for (const _ of chunk.tokenIds) { if (first) { firsts.push(t); first = false; } else times.push(t); }
    }
  }));
  const start = Math.max(...firsts);
  const after = times.filter((t) => t > start);
  return after.length / (Math.max(...after) - start);
}

for (const device of args.cpu ? ['cuda', 'cpu'] : ['cuda']) {
  t0 = now();
  const model = await pkg.W4a8Model.create(packed, {
    device, maxBatch: 32, contextLength: 16 + tokens + 8, prefillChunk: 512, kvCache: args['kv-cache'],
  });
  console.log(`${device}: ready in ${(now() - t0).toFixed(1)} s (${model.backend.name})`);
  for (const batch of [1, 32]) {
    const steps = device === 'cpu' ? Math.min(tokens, batch === 1 ? 16 : 6) : tokens;
    await decodeRate(model, batch, 4);  // warm-up (scratch, CUDA graphs of this batch)
    const rate = await decodeRate(model, batch, steps);
    report.decode.push({ device, name: model.backend.name, lmHead: args['lm-head'], kvCache: model.kvCache, batch, tokensPerSecond: rate, tokensPerSequence: steps, layers: shape.nLayers });
    console.log(`  ${device} batch ${String(batch).padStart(2)}: ${rate.toFixed(1)} tokens/s (${steps} tokens per sequence)`);
  }
  await model.dispose();
}
if (args.json) writeFileSync(args.json, JSON.stringify(report, null, 1));
