#!/usr/bin/env node
// Event-loop delay while long text prompts are tokenized: model.tokenize() on the main thread against
// model.tokenizeAsync() (the tokenizer's worker thread, lib/model/encode-thread.ts), on the default model.
//
//   npm run bench:tokenize [-- --prompts N --chars C --rounds R]
//
// Prints, per round and mode, the wall time and the largest and 99th-percentile event-loop delay
// (perf_hooks.monitorEventLoopDelay, 1 ms resolution). The synchronous mode yields one turn between prompts, as
// a server does between requests, so its delay is one prompt's encode; the async mode sends all at once.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({ options: { prompts: { type: 'string' }, chars: { type: 'string' }, rounds: { type: 'string' } } });
const count = Number(values.prompts ?? 16), chars = Number(values.chars ?? 32000), rounds = Number(values.rounds ?? 2);
for (const [name, v] of [['prompts', count], ['chars', chars], ['rounds', rounds]])
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${name} must be a positive integer`);

const { W4a8Model } = await import(path.join(root, 'dist', 'index.js'));
const model = await W4a8Model.load(path.join(root, 'models', 'default', 'model.w4a8'), { device: 'cpu' });
const text = readFileSync(path.join(root, 'models', 'default', 'test.txt'), 'utf8');
const prompts = Array.from({ length: count }, (_, i) => text.slice((i * 997) % (text.length - chars), (i * 997) % (text.length - chars) + chars));
const tokens = model.tokenize(prompts[0]).length;
await model.tokenizeAsync(prompts[0]); // both copies warm
console.log(`${count} prompts of ${chars} characters (~${tokens} tokens each), default model's tokenizer, ${rounds} rounds`);
for (let round = 1; round <= rounds; round++) {
  for (const mode of ['tokenize', 'tokenizeAsync']) {
    const delay = monitorEventLoopDelay({ resolution: 1 });
    delay.enable();
    const start = performance.now();
    if (mode === 'tokenize') for (const p of prompts) { model.tokenize(p); await new Promise((r) => setImmediate(r)); }
    else await Promise.all(prompts.map((p) => model.tokenizeAsync(p)));
    const wall = performance.now() - start;
    await new Promise((r) => setTimeout(r, 5));
    delay.disable();
    console.log(`round ${round}  ${mode.padEnd(13)} ${wall.toFixed(0).padStart(5)} ms   event-loop delay max ${(delay.max / 1e6).toFixed(1).padStart(5)} ms, p99 ${(delay.percentile(99) / 1e6).toFixed(1).padStart(5)} ms`);
  }
}
await model.dispose();
