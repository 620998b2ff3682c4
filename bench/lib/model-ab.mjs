#!/usr/bin/env node
// Decode-step time of two packed models side by side: `node bench/lib/model-ab.mjs A.w4a8 B.w4a8 [--batch 1]
// [--rounds 6] [--steps 8]`. Both run in this process on the addon's threads (W4A8_THREADS), in alternating
// rounds of --steps decode steps of --batch sequences, so that the machine's other load reaches both alike; prints
// the median ms/step of each and B/A. For changes that only a model file shows (e.g. `w4a8 pack --lm-head w4a8`
// against the default BF16 lm_head). Build the TypeScript first.
import { parseArgs } from 'node:util';

const { values: v, positionals } = parseArgs({
  allowPositionals: true,
  options: { batch: { type: 'string', default: '1' }, rounds: { type: 'string', default: '6' }, steps: { type: 'string', default: '8' } },
});
if (positionals.length !== 2) {
  console.error('usage: node bench/lib/model-ab.mjs A.w4a8 B.w4a8 [--batch N] [--rounds N] [--steps N]');
  process.exit(2);
}
const [batch, rounds, steps] = [v.batch, v.rounds, v.steps].map(Number);
const { readPackedModel } = await import('../../dist/format/index.js');
const { createNativeModel } = await import('../../dist/model/native-model.js');

// Each model: `batch` sequences with a 4-token prompt, then one token per sequence and step.
const models = [];
for (const file of positionals) {
  const packed = await readPackedModel(file);
  const handle = createNativeModel(packed);
  const vocab = packed.config.vocabSize;
  const ids = Int32Array.from({ length: batch }, () => handle.createSequence(4 + rounds * steps + 1));
  const prompt = Int32Array.from({ length: 4 * batch }, (_, i) => (i * 17) % vocab);
  await handle.step(ids, ids.map(() => 4), prompt, new Float32Array(batch * vocab));
  models.push({ handle, ids, vocab, position: 4 });
}

async function timeSteps(m) {
  const logits = new Float32Array(batch * m.vocab), times = [];
  for (let i = 0; i < steps; i++, m.position++) {
    const tokens = m.ids.map((_, j) => (m.position * 7 + j) % m.vocab);
    const t0 = performance.now();
    await m.handle.step(m.ids, m.ids.map(() => 1), tokens, logits);
    times.push(performance.now() - t0);
  }
  return times;
}

const times = [[], []];
for (let r = 0; r < rounds; r++) for (const w of r % 2 ? [1, 0] : [0, 1]) times[w].push(...(await timeSteps(models[w])));
const median = (list) => [...list].sort((a, b) => a - b)[list.length >> 1];
const [a, b] = times.map(median);
console.log(`batch ${batch}, ${rounds} x ${steps} steps each: A ${a.toFixed(2)} ms/step, B ${b.toFixed(2)} ms/step, B/A ${(b / a).toFixed(3)}`);
for (const m of models) m.handle.dispose();
