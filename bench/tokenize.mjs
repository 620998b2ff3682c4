#!/usr/bin/env node
// Event-loop delay while a tokenizer opens and while long text prompts are tokenized:
//   - opening: TextTokenizer.load (what W4a8Model.load uses: the complete tokenizer is built on the worker thread,
//     lib/model/tokenizer-summary.ts) against building it on the main thread (TextTokenizer.fromJson, and the
//     tokenizer library's constructor alone, the longest stage of a build here), for a byte-level BPE with a
//     vocabulary of --vocab tokens: the 256 bytes and made-up merges (synthetic.ts; Qwen-sized by default);
//   - tokenizing: model.tokenize() on the main thread against model.tokenizeAsync() (the worker thread), on the
//     default model.
//
//   npm run bench:tokenize [-- --prompts N --chars C --rounds R --vocab V]
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
const { values } = parseArgs({ options: { prompts: { type: 'string' }, chars: { type: 'string' }, rounds: { type: 'string' }, vocab: { type: 'string' } } });
const count = Number(values.prompts ?? 16), chars = Number(values.chars ?? 32000), rounds = Number(values.rounds ?? 2);
const vocabSize = Number(values.vocab ?? 151643);
for (const [name, v] of [['prompts', count], ['chars', chars], ['rounds', rounds]])
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${name} must be a positive integer`);
if (!Number.isInteger(vocabSize) || vocabSize < 256) throw new Error('--vocab must be an integer >= 256 (the byte tokens, then merges)');

/** The event-loop delay while `body` runs (largest and 99th percentile, ms), and its wall time. */
async function withDelay(body) {
  const delay = monitorEventLoopDelay({ resolution: 1 });
  delay.enable();
  await new Promise((r) => setTimeout(r, 5)); // (its timer's first tick: a delay is measured from one tick to the next)
  const start = performance.now();
  await body();
  const wall = performance.now() - start;
  await new Promise((r) => setTimeout(r, 5));
  delay.disable();
  return { wall, max: delay.max / 1e6, p99: delay.percentile(99) / 1e6 };
}

{
  const { TextTokenizer } = await import(path.join(root, 'dist', 'model', 'tokenizer.js'));
  const { Tokenizer } = await import('@huggingface/tokenizers');
  const { byteLevelTokenizerJson } = await import(path.join(root, 'dist', 'model', 'synthetic.js'));
  const json = byteLevelTokenizerJson(vocabSize - 256);
  console.log(`opening a byte-level BPE of ${vocabSize + 2} tokens (tokenizer.json ${(json.length / 1e6).toFixed(1)} MB), ${rounds} rounds`);
  for (let round = 1; round <= rounds; round++) {
    let tokenizer;
    const load = await withDelay(async () => { tokenizer = await TextTokenizer.load(json); });
    await tokenizer.close();
    const here = await withDelay(async () => { TextTokenizer.fromJson(json); });
    const parsed = JSON.parse(json);
    const constructor = await withDelay(async () => { new Tokenizer(parsed, {}); });
    console.log(`round ${round}  load() ${load.wall.toFixed(0).padStart(5)} ms, event-loop delay max ${load.max.toFixed(1).padStart(6)} ms;` +
      ` built on the main thread (fromJson) ${here.wall.toFixed(0).padStart(5)} ms, max ${here.max.toFixed(1).padStart(6)} ms;` +
      ` the library's constructor alone ${constructor.wall.toFixed(0).padStart(5)} ms`);
  }
}

const { W4a8Model } = await import(path.join(root, 'dist', 'index.js'));
const model = await W4a8Model.load(path.join(root, 'models', 'default', 'model.w4a8'), { device: 'cpu' });
const text = readFileSync(path.join(root, 'models', 'default', 'test.txt'), 'utf8');
const prompts = Array.from({ length: count }, (_, i) => text.slice((i * 997) % (text.length - chars), (i * 997) % (text.length - chars) + chars));
const tokens = model.tokenize(prompts[0]).length;
await model.tokenizeAsync(prompts[0]); // both copies warm
console.log(`${count} prompts of ${chars} characters (~${tokens} tokens each), default model's tokenizer, ${rounds} rounds`);
for (let round = 1; round <= rounds; round++) {
  for (const mode of ['tokenize', 'tokenizeAsync']) {
    const { wall, max, p99 } = await withDelay(async () => {
      if (mode === 'tokenize') for (const p of prompts) { model.tokenize(p); await new Promise((r) => setImmediate(r)); }
      else await Promise.all(prompts.map((p) => model.tokenizeAsync(p)));
    });
    console.log(`round ${round}  ${mode.padEnd(13)} ${wall.toFixed(0).padStart(5)} ms   event-loop delay max ${max.toFixed(1).padStart(5)} ms, p99 ${p99.toFixed(1).padStart(5)} ms`);
  }
}
// Short texts (a chat message): every one goes to the thread after load(); what a round trip costs against
// encoding on the main thread.
{
  const short = text.slice(0, 200), rounds = 400, timesOf = async (encode) => {
    const times = [];
    for (let i = 0; i < rounds; i++) { const t0 = performance.now(); await encode(short); times.push(performance.now() - t0); }
    return times.sort((a, b) => a - b);
  };
  const here = await timesOf((t) => model.tokenize(t)), thread = await timesOf((t) => model.tokenizeAsync(t));
  const at = (times, q) => (times[Math.floor(q * (times.length - 1))] * 1000).toFixed(0).padStart(5);
  console.log(`a 200-character text, ${rounds} times one after another: tokenize (main thread) median ${at(here, 0.5)} us, p99 ${at(here, 0.99)} us;` +
    ` tokenizeAsync (worker thread) median ${at(thread, 0.5)} us, p99 ${at(thread, 0.99)} us`);
}
await model.dispose();
