// The native Llama runtime against a float64 reference with the same W4A8 semantics, batching and
// prefill invariance, sampling determinism, streaming, stop strings, abort, and dispose.
import { getEventListeners } from 'node:events';
import path from 'node:path';
import v8 from 'node:v8';
import vm from 'node:vm';
import { describe, expect, it } from 'vitest';
import { W4a8Error } from '../lib/errors.js';
import { W4a8Model } from '../lib/model/model.js';
import { Sampler, resolveSampling } from '../lib/model/sampler.js';
import { TextStream } from '../lib/model/text-stream.js';
import { turnsWhile } from './fixtures/event-loop.js';
import { TextTokenizer } from '../lib/model/tokenizer.js';
import { stepLogprobs } from '../lib/model/logprobs.js';
import { native } from '../lib/native.js';
import { vocabularyBytes } from '../lib/model/token-bytes.js';
import { byteLevelTokenizerJson } from '../lib/model/synthetic.js';
import { syntheticSourceModel, type SyntheticShape } from '../lib/model/synthetic.js';
import { packModel } from '../lib/pack.js';
import { packedLogits, sourceLogits } from './reference/llama-ref.js';
import { createReferenceNativeModel } from '../lib/model/native-model.js';

const SHAPE: SyntheticShape = { dim: 64, hiddenDim: 172, nLayers: 2, nHeads: 8, nKvHeads: 4, maxSeqLen: 64 };

async function smallModel(options: { groupSize?: 32 | 64 | 128; weightFormat?: 'e4m3fn' | 'e4m3' | 'e5m2'; lmHead?: 'bf16' | 'w4a8' } = {}) {
  const source = syntheticSourceModel(SHAPE, 3);
  const packed = await packModel(source, {
    groupSize: options.groupSize ?? 32, weightFormat: options.weightFormat ?? 'e4m3fn', scales: 'float', method: 'rtn',
    lmHead: options.lmHead,
  });
  return { source, packed };
}

function argmax(v: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
  return best;
}

function maxRelativeError(got: Float32Array, want: Float64Array): number {
  let scale = 0, worst = 0;
  for (const v of want) scale = Math.max(scale, Math.abs(v));
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]) / scale);
  return worst;
}

describe('native Llama runtime', () => {
  it.each([
    { groupSize: 32 as const, weightFormat: 'e4m3fn' as const, lmHead: 'bf16' as const },
    { groupSize: 64 as const, weightFormat: 'e4m3' as const, lmHead: 'bf16' as const },
    { groupSize: 128 as const, weightFormat: 'e5m2' as const, lmHead: 'bf16' as const },
    { groupSize: 64 as const, weightFormat: 'e4m3fn' as const, lmHead: 'w4a8' as const },
  ])('matches the float64 W4A8 reference at every position (G=$groupSize, $weightFormat, lm_head $lmHead)', async (o) => {
    const { packed } = await smallModel(o);
    // An FP32 cache: the reference keeps keys and values in full precision (the BF16 default is checked below).
    const model = W4a8Model.fromPacked(packed, { kvCache: 'f32' });
    const tokens = [256, 72, 101, 108, 108, 111, 32, 119, 111, 114];
    const want = packedLogits(packed, tokens);
    // Prefill all tokens at once, then feed them one by one in a second sequence: both match.
    const handle = (model as unknown as { handle: import('../lib/native.js').NativeModelHandle }).handle;
    const a = handle.createSequence(64);
    const vocab = packed.config.vocabSize;
    const logits = new Float32Array(vocab);
    // The reference rounds differently in the last FP32 bit here and there; once that flips an FP8
    // activation (rare) the KV cache carries a ~3% difference to every later position. So: near-exact
    // agreement at the first positions (RoPE, attention over several entries, GQA), bounded after.
    let topAgree = 0;
    for (let i = 0; i < tokens.length; i++) {
      await handle.step(Int32Array.of(a), Int32Array.of(1), Int32Array.of(tokens[i]), logits);
      const error = maxRelativeError(logits, want[i]);
      expect(error, `position ${i}`).toBeLessThan(i < 4 ? 2e-3 : 0.08);
      if (argmax(logits) === argmax(want[i])) topAgree++;
    }
    expect(topAgree / tokens.length).toBeGreaterThanOrEqual(0.8);
    // Prefill of the whole prompt in one step gives the logits of one-by-one decoding.
    const sequential = logits.slice();
    const b = handle.createSequence(64);
    await handle.step(Int32Array.of(b), Int32Array.of(tokens.length), Int32Array.from(tokens), logits);
    expect(maxRelativeError(logits, Float64Array.from(sequential))).toBeLessThan(1e-4);
    await model.dispose();
  });

  it('tracks the FP32 model it was packed from (top-1 agreement)', async () => {
    const { source, packed } = await smallModel();
    const tokens = [256, 84, 104, 101, 32, 99, 97, 116, 32, 115, 97, 116];
    const fp32 = sourceLogits(source, tokens);
    const quantized = packedLogits(packed, tokens);
    let agree = 0;
    for (let i = 0; i < tokens.length; i++) {
      if (argmax(fp32[i]) === argmax(quantized[i])) agree++;
    }
    expect(agree / tokens.length).toBeGreaterThanOrEqual(0.5);
  });

  it('gives each sequence the same greedy tokens alone and in a batch of different lengths', async () => {
    const { packed } = await smallModel();
    const model = W4a8Model.fromPacked(packed, { maxBatch: 8, prefillChunk: 7 });
    const prompts = ['Hello', 'A much longer prompt than the others', 'x', 'Tokens!'];
    const alone = [];
    for (const p of prompts) alone.push(await model.complete(p, { temperature: 0, maxTokens: 12 }));
    const together = await Promise.all(prompts.map((p) => model.complete(p, { temperature: 0, maxTokens: 12 })));
    for (let i = 0; i < prompts.length; i++) expect(together[i].tokenIds).toEqual(alone[i].tokenIds);
    expect(await model.generateBatch(prompts, { temperature: 0, maxTokens: 12 })).toEqual(alone.map((r) => r.text));
    await model.dispose();
  });

  it('prepares the CPU step at create() (tables made before the first request) with the same tokens as a lazy model', async () => {
    const { packed } = await smallModel({ groupSize: 128 });
    const eager = await W4a8Model.create(packed, { device: 'cpu' });
    const lazy = W4a8Model.fromPacked(packed);
    const a = await eager.complete('Once', { maxTokens: 12, temperature: 0 });
    const b = await lazy.complete('Once', { maxTokens: 12, temperature: 0 });
    expect(a.tokenIds).toEqual(b.tokenIds);
    const handle = (eager as unknown as { handle: import('../lib/native.js').NativeModelHandle }).handle;
    await handle.prepareCpu();  // again: nothing to do
    await eager.dispose();
    await lazy.dispose();
    expect(() => handle.prepareCpu()).toThrow(expect.objectContaining({ code: 'E_DISPOSED' }));
  });

  it('samples reproducibly from a seed, and differently from another seed', async () => {
    const { packed } = await smallModel();
    const model = W4a8Model.fromPacked(packed);
    const a = await model.complete('Once', { seed: 7, maxTokens: 20, temperature: 1.5, topK: 0, topP: 1, minP: 0 });
    const b = await model.complete('Once', { seed: 7, maxTokens: 20, temperature: 1.5, topK: 0, topP: 1, minP: 0 });
    const c = await model.complete('Once', { seed: 8, maxTokens: 20, temperature: 1.5, topK: 0, topP: 1, minP: 0 });
    expect(b.tokenIds).toEqual(a.tokenIds);
    expect(c.tokenIds).not.toEqual(a.tokenIds);
    expect(a.generatedTokens).toBe(20);
    expect(a.finishReason).toBe('length');
    await model.dispose();
  });

  it('streams the same text generate() returns, and stops at a stop string', async () => {
    const { packed } = await smallModel();
    const model = W4a8Model.fromPacked(packed);
    const full = await model.complete('Hi', { temperature: 0, maxTokens: 24 });
    let streamed = '';
    for await (const chunk of model.stream('Hi', { temperature: 0, maxTokens: 24 })) streamed += chunk.text;
    expect(streamed).toBe(full.text);
    const stop = full.text.slice(5, 8);
    const cut = await model.complete('Hi', { temperature: 0, maxTokens: 24, stop: [stop] });
    expect(cut.finishReason).toBe('stop');
    expect(cut.text).toBe(full.text.slice(0, full.text.indexOf(stop)));
    await model.dispose();
  });

  it('aborts one request through its signal while the others finish', async () => {
    const { packed } = await smallModel();
    const model = W4a8Model.fromPacked(packed);
    const controller = new AbortController();
    // Seeded: with a random seed about 4 % of these sampled streams met EOS within 3 tokens (the stream below then
    // ended before its third chunk, a flaky failure); seed 2 runs both to their token limits.
    const doomed = model.generate('abc', { maxTokens: 50, seed: 2, signal: controller.signal });
    const survivor = model.complete('def', { maxTokens: 10, temperature: 0 });
    setTimeout(() => controller.abort(), 1);
    await expect(doomed).rejects.toMatchObject({ code: 'E_ABORTED' });
    expect((await survivor).generatedTokens).toBe(10);
    let count = 0;
    for await (const _ of model.stream('ghi', { maxTokens: 40, seed: 2 })) if (++count === 3) break; // ends the request
    expect(count).toBe(3);
    await model.dispose();
  });

  it('leaves no listener on a long-lived signal once its requests are done (finished, stopped early or aborted)', async () => {
    const { packed } = await smallModel();
    // No end-of-sequence token: every request runs to its maxTokens, so the last one below is still running
    // when it is aborted (with sampling it could end after a token or two and race the abort).
    const model = W4a8Model.fromPacked({ ...packed, config: { ...packed.config, eosTokenIds: [] } }, { maxBatch: 4 });
    const shared = new AbortController(); // e.g. one per server or per user session, alive across many requests
    const signal = shared.signal;
    for (let i = 0; i < 6; i++) {
      await model.complete([256, 65 + i], { maxTokens: 3, signal });
      for await (const _ of model.stream([256, 70 + i], { maxTokens: 3, signal })) { /* read to the end */ }
      for await (const _ of model.stream([256, 80 + i], { maxTokens: 10, signal })) break; // left early
    }
    await Promise.all(Array.from({ length: 4 }, (_, i) => model.generate([256, 90 + i], { maxTokens: 4, signal })));
    expect(getEventListeners(signal, 'abort')).toHaveLength(0);
    // A per-request signal aborted mid-way also leaves nothing behind on the caller's signal, and the request
    // ends with E_ABORTED; the shared signal still aborts a request that is running.
    const own = new AbortController();
    const doomed = model.stream([256, 65], { maxTokens: 50, signal: own.signal })[Symbol.asyncIterator]();
    await doomed.next();
    own.abort();
    await expect((async () => { while (!(await doomed.next()).done); })()).rejects.toMatchObject({ code: 'E_ABORTED' });
    expect(getEventListeners(own.signal, 'abort')).toHaveLength(0);
    // Aborted after its first chunk: its 32 unread chunks at most (backpressure) keep it short of its 50 tokens.
    const running = model.stream([256, 66], { maxTokens: 50, signal })[Symbol.asyncIterator]();
    await running.next();
    shared.abort();
    await expect((async () => { while (!(await running.next()).done); })()).rejects.toMatchObject({ code: 'E_ABORTED' });
    expect(model.stats).toEqual({ running: 0, starting: 0, queued: 0, reservedTokens: 0 });
    await model.dispose();
  });

  it('rejects misuse with typed errors', async () => {
    const { packed } = await smallModel();
    const model = W4a8Model.fromPacked(packed, { contextLength: 16 });
    await expect(model.generate('x'.repeat(40))).rejects.toMatchObject({ code: 'E_CONTEXT' });
    await expect(model.generate([1, 2, 99999])).rejects.toMatchObject({ code: 'E_OPTION' });
    await expect(model.generate('a', { temperature: -1 })).rejects.toMatchObject({ code: 'E_OPTION' });
    await expect(model.generate('a', { stop: [''] })).rejects.toMatchObject({ code: 'E_OPTION' });
    expect(() => W4a8Model.fromPacked(packed, { contextLength: 100000 })).toThrow(W4a8Error);
    const pending = model.generate('abc', { maxTokens: 8 });
    await model.dispose();
    await expect(pending).rejects.toMatchObject({ code: 'E_DISPOSED' });
    await expect(model.generate('a')).rejects.toMatchObject({ code: 'E_DISPOSED' });
  });
});

describe('corrupt tokenizers, templates and weights (found by fuzzing model files)', () => {
  it('refuses a chat template that does not parse, or a tokenizer with ids past the vocabulary, at load', async () => {
    const { packed } = await smallModel();
    expect(() => W4a8Model.fromPacked({ ...packed, chatTemplate: '{% for %}' })).toThrow(expect.objectContaining({ code: 'E_FILE' }));
    const tokenizer = JSON.parse(packed.tokenizerJson!);
    tokenizer.added_tokens.push({ id: packed.config.vocabSize, content: '<extra>', special: true, single_word: false,
      lstrip: false, rstrip: false, normalized: false });
    expect(() => W4a8Model.fromPacked({ ...packed, tokenizerJson: JSON.stringify(tokenizer) }))
      .toThrow(expect.objectContaining({ code: 'E_FILE', message: expect.stringContaining(`token id ${packed.config.vocabSize}`) }));
  });

  it('gives E_TEMPLATE when the chat template raises on the messages', async () => {
    const { packed } = await smallModel();
    const model = W4a8Model.fromPacked({ ...packed, chatTemplate: "{{ raise_exception('roles must alternate') }}" });
    await expect(model.chat([{ role: 'user', content: 'hi' }])).rejects.toMatchObject({ code: 'E_TEMPLATE' });
    await model.dispose();
  });

  it('fails a request whose logits are not finite with E_STEP (instead of greedy token 0), and serves the others', async () => {
    const { packed } = await smallModel();
    const embed = packed.tensors.get('model.embed_tokens.weight')!;
    const dim = packed.config.dim;
    const data = (embed.data as Uint16Array).slice();
    data.fill(0x7fc0, 70 * dim, 71 * dim); // token 70's row: NaN (the embeddings are not scanned at open)
    const tensors = new Map(packed.tensors).set('model.embed_tokens.weight', { ...embed, data });
    const model = W4a8Model.fromPacked({ ...packed, tensors });
    const bad = model.complete([256, 70], { maxTokens: 4, temperature: 0 });
    const good = model.complete([256, 71], { maxTokens: 4, temperature: 0 });
    await expect(bad).rejects.toMatchObject({ code: 'E_STEP' });
    expect((await good).generatedTokens).toBe(4);
    await model.dispose();
  });
});

describe('sampler: non-finite logits', () => {
  it('fails with E_STEP on a NaN anywhere in the row, on every sampling path (top-k included, the default)', () => {
    const row = () => Float32Array.of(1, NaN, 3, 2, -5, 0, 0, 0);
    for (const options of [{}, { topK: 2 }, { topK: 0, topP: 0.9 }, { topK: 0, topP: 1, minP: 0 }, { topK: 0, minP: 0.1 }])
      expect(() => new Sampler(resolveSampling({ seed: 1, temperature: 1, ...options }, 8)).sample(row(), []), JSON.stringify(options))
        .toThrow(expect.objectContaining({ code: 'E_STEP' }));
  });
});

describe('batch invariance', () => {
  // (Found by stress-testing: under the default AVX-512 backends a step's W4A8 kernel depends on its row count, so
  // logits alone and in a batch differ in the last bits. Backends with one W4A8 arithmetic for every M do not.)
  // (test.for, not test.each: only it passes the test context, whose skip() the case needs on a CPU without AVX-512.)
  it.for(['avx2', 'avx512-bf16'])('under W4A8_ISA=%s a sequence decodes bit-identical logits alone and beside others', async (isa, ctx) => {
    const script = `
      import { syntheticSourceModel, packModel, createNativeModel, backend } from './dist/index.js';
      const shape = { dim: 64, hiddenDim: 172, nLayers: 2, nHeads: 8, nKvHeads: 4, maxSeqLen: 96 };
      const packed = await packModel(syntheticSourceModel(shape, 3), { groupSize: 32, weightFormat: 'e4m3fn', scales: 'float', method: 'rtn' });
      const run = async (others) => {
        const h = createNativeModel(packed, 'bf16');
        const ids = [h.createSequence(40), ...others.map(() => h.createSequence(40))];
        const rows = [];
        for (let t = 0; t < 12; t++) {
          const tokens = Int32Array.from(ids, (_, i) => 60 + t + 7 * i);
          const logits = new Float32Array(ids.length * packed.config.vocabSize);
          await h.step(Int32Array.from(ids), new Int32Array(ids.length).fill(1), tokens, logits);
          rows.push(Array.from(logits.subarray(0, packed.config.vocabSize)));
        }
        h.dispose();
        return JSON.stringify(rows);
      };
      const alone = await run([]);
      console.log(JSON.stringify({ backend: backend().name, same: alone === await run([1, 2, 3]) && alone === await run([1]) }));`;
    const { execFileSync } = await import('node:child_process');
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, W4A8_ISA: isa }, cwd: path.resolve(__dirname, '..') });
    const lines = out.toString().trim().split('\n');
    const result = JSON.parse(lines.at(-1)!);
    if (result.backend !== isa) ctx.skip(); // a CPU without this instruction set runs another backend
    expect(result).toEqual({ backend: isa, same: true });
  });
});

describe('lifecycle details (found by stress-testing the scheduler)', () => {
  it('lets many requests share one signal with one listener on it (no MaxListenersExceededWarning), and aborts them all', async () => {
    const { packed } = await smallModel();
    const model = W4a8Model.fromPacked(packed, { maxBatch: 4 });
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    const shared = new AbortController();
    const plain = Array.from({ length: 12 }, (_, i) => model.complete([256, 60 + i], { maxTokens: 80, signal: shared.signal }));
    const streams = Array.from({ length: 12 }, (_, i) => model.stream([256, 80 + i], { maxTokens: 80, signal: shared.signal }));
    // One stream is read once and then left until the abort: it pauses at 32 unread chunks (backpressure), so it
    // cannot finish first, whatever the machine's speed.
    const held = streams[0];
    await held.next();
    const streamed = streams.slice(1).map(async (s) => { for await (const chunk of s) void chunk; });
    expect(getEventListeners(shared.signal, 'abort')).toHaveLength(1);
    shared.abort();
    await expect((async () => { while (!(await held.next()).done); })()).rejects.toMatchObject({ code: 'E_ABORTED' });
    const settled = await Promise.allSettled([...plain, ...streamed]);
    // (a request that met EOS before the abort finished normally)
    for (const r of settled) if (r.status === 'rejected') expect(r.reason).toMatchObject({ code: 'E_ABORTED' });
    expect(settled.filter((r) => r.status === 'rejected').length).toBeGreaterThan(0);
    await new Promise((resolve) => setImmediate(resolve));
    process.off('warning', onWarning);
    expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([]);
    expect(getEventListeners(shared.signal, 'abort')).toHaveLength(0);
    expect(model.stats).toEqual({ running: 0, starting: 0, queued: 0, reservedTokens: 0 });
    await model.dispose();
  });

  it('frees the place of a stream whose iterator was dropped unfinished, once it is collected', async () => {
    const { packed } = await smallModel();
    const model = W4a8Model.fromPacked(packed, { maxBatch: 1 });
    const serverWide = new AbortController(); // a long-lived signal shared by requests
    await (async () => {
      const dropped = model.stream([256, 65], { maxTokens: 60, seed: 1, signal: serverWide.signal })[Symbol.asyncIterator]();
      await dropped.next(); // started, then never read again, nor returned
    })();
    v8.setFlagsFromString('--expose-gc');
    const gc = vm.runInNewContext('gc') as () => void;
    for (let i = 0; i < 200 && model.stats.running > 0; i++) {
      gc();
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(model.stats).toEqual({ running: 0, starting: 0, queued: 0, reservedTokens: 0 });
    await new Promise((resolve) => setTimeout(resolve, 10));
    expect(getEventListeners(serverWide.signal, 'abort')).toHaveLength(0); // nor does it keep a listener there
    expect((await model.complete([256, 66], { maxTokens: 4, temperature: 0 })).generatedTokens).toBe(4);
    await model.dispose();
  });

  it('types bad options, waits for one end on every dispose(), and frees an aborted place at once', async () => {
    const { packed } = await smallModel();
    const model = W4a8Model.fromPacked(packed, { maxBatch: 1, maxQueue: 1 });
    await expect(model.complete([256], { signal: {} as AbortSignal })).rejects.toMatchObject({ code: 'E_TYPE' });
    await expect(model.complete([256], null as never)).rejects.toMatchObject({ code: 'E_TYPE' });
    await expect(model.stream([256], null as never).next()).rejects.toMatchObject({ code: 'E_TYPE' });
    expect(model.detokenize([])).toBe('');
    // One runs, one waits; the waiting one is aborted, and a new request takes its place (no E_BUSY).
    const running = model.complete([256, 65], { maxTokens: 20 });
    const controller = new AbortController();
    const waiting = model.complete([256, 66], { maxTokens: 4, signal: controller.signal });
    controller.abort();
    const next = model.complete([256, 67], { maxTokens: 4 });
    await expect(waiting).rejects.toMatchObject({ code: 'E_ABORTED' });
    await Promise.all([running, next]);
    const pending = model.complete([256, 68], { maxTokens: 50 });
    const first = model.dispose();
    const second = model.dispose();
    await second;
    expect(model.stats).toEqual({ running: 0, starting: 0, queued: 0, reservedTokens: 0 }); // the second call waited too
    await first;
    await expect(pending).rejects.toMatchObject({ code: 'E_DISPOSED' });
  });

  it('draws differently from seeds that differ above 2^32, and keeps the text of a last incomplete character', async () => {
    const { packed } = await smallModel();
    const model = W4a8Model.fromPacked(packed);
    const draw = (seed: number) => model.complete([256, 65], { seed, maxTokens: 12, temperature: 1.5, topK: 0, topP: 1, minP: 0 });
    expect((await draw(7)).tokenIds).not.toEqual((await draw(7 + 2 ** 32)).tokenIds);
    // The byte-level synthetic tokenizer: a generation may end inside a multi-byte character.
    for (let seed = 0; seed < 40; seed++) {
      const r = await model.complete([256, 200], { seed, maxTokens: 5, temperature: 3, topK: 0, topP: 1, minP: 0 });
      expect(r.text).toBe(model.detokenize(r.tokenIds));
    }
    await model.dispose();
  });
});

describe('full-precision reference model and calibration hooks', () => {
  it('runs FP32 weights like the float64 reference, with logits at every position', async () => {
    const { source } = await smallModel();
    const handle = createReferenceNativeModel(source);
    const tokens = [256, 72, 101, 108, 108, 111];
    const want = sourceLogits(source, tokens);
    const vocab = source.config.vocabSize;
    const logits = new Float32Array(tokens.length * vocab);
    const id = handle.createSequence(16);
    await handle.step(Int32Array.of(id), Int32Array.of(tokens.length), Int32Array.from(tokens), logits, true);
    for (let i = 0; i < tokens.length; i++)
      expect(maxRelativeError(logits.subarray(i * vocab, (i + 1) * vocab), want[i]), `position ${i}`).toBeLessThan(1e-4);
    handle.dispose();
  });

  it('runs with a BF16 KV cache within its rounding of the float64 reference, prefill and decode alike', async () => {
    const { source } = await smallModel();
    const handle = createReferenceNativeModel(source, 'bf16');
    const tokens = [256, 72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100];
    const want = sourceLogits(source, tokens);
    const vocab = source.config.vocabSize;
    const prefill = new Float32Array(tokens.length * vocab), one = new Float32Array(vocab);
    await handle.step(Int32Array.of(handle.createSequence(16)), Int32Array.of(tokens.length), Int32Array.from(tokens), prefill, true);
    const id = handle.createSequence(16);
    let worst = 0;
    for (let i = 0; i < tokens.length; i++) {
      await handle.step(Int32Array.of(id), Int32Array.of(1), Int32Array.of(tokens[i]), one);
      // Keys and values rounded to BF16 (8 significant bits): logits moved by up to 1.7e-3 of their range.
      const error = maxRelativeError(one, want[i]);
      worst = Math.max(worst, error);
      expect(error, `position ${i}`).toBeLessThan(1e-2);
      expect(maxRelativeError(prefill.subarray(i * vocab, (i + 1) * vocab), Float64Array.from(one)), `prefill ${i}`).toBeLessThan(1e-4);
    }
    expect(worst).toBeGreaterThan(0);  // the cache did round (an FP32 cache stays within 1e-4, above)
    handle.dispose();
    const { packed } = await smallModel();
    const model = W4a8Model.fromPacked(packed, { kvCache: 'f32' });
    expect(model.kvCache).toBe('f32');
    expect((await model.complete('Hello', { temperature: 0, maxTokens: 8 })).tokenIds).toHaveLength(8);
    await model.dispose();
    expect(W4a8Model.fromPacked(packed).kvCache).toBe('bf16');  // the default
    expect(() => W4a8Model.fromPacked(packed, { kvCache: 'f16' as 'bf16' })).toThrow(expect.objectContaining({ code: 'E_OPTION' }));
  });

  it('accumulates H = 2 Σ xᵀx of a layer input, symmetric, over every token of every step', async () => {
    const { source } = await smallModel();
    const handle = createReferenceNativeModel(source);
    handle.collectHessians(1);
    const a = handle.createSequence(16), b = handle.createSequence(16);
    await handle.step(Int32Array.of(a, b), Int32Array.of(3, 2), Int32Array.of(256, 65, 66, 256, 67), new Float32Array(2 * 258));
    await handle.step(Int32Array.of(a), Int32Array.of(1), Int32Array.of(68), new Float32Array(258));
    const taken = handle.takeHessians();
    expect(taken.layer).toBe(1);
    expect(taken.tokens).toBe(6);
    const widths = [64, 64, 64, 172];
    taken.hessians.forEach((h, i) => {
      const K = widths[i];
      expect(h.length).toBe(K * K);
      for (let r = 0; r < K; r++) {
        expect(h[r * K + r]).toBeGreaterThanOrEqual(0);
        for (let c = 0; c < r; c++) expect(h[r * K + c]).toBeCloseTo(h[c * K + r], 6);
      }
    });
    expect(handle.takeHessians().tokens).toBe(0);
    handle.dispose();
  });
});

describe('scheduling limits', () => {
  it('queues requests beyond the KV cache budget and rejects beyond the queue', async () => {
    const { packed } = await smallModel();
    // Each request reserves 4 + 8 = 12 tokens: a 30-token budget runs two at a time.
    const model = W4a8Model.fromPacked(packed, { maxTokensInFlight: 30, maxQueue: 3 });
    const prompt = [256, 65, 66, 67];
    // The first two requests start at once (the second waits only for the step in flight, so it is not queued);
    // three wait (the queue's limit); a sixth is turned away.
    const runs = Array.from({ length: 5 }, (_, i) => model.complete(prompt, { maxTokens: 8, seed: i, temperature: 0 }));
    const overflow = model.complete(prompt, { maxTokens: 8 });
    await expect(overflow).rejects.toMatchObject({ code: 'E_BUSY' });
    expect(model.stats).toEqual({ running: 1, starting: 1, queued: 3, reservedTokens: 12 }); // (the first step is in flight)
    for (const r of await Promise.all(runs)) expect(r.generatedTokens).toBeGreaterThan(0);
    expect(model.stats).toEqual({ running: 0, starting: 0, queued: 0, reservedTokens: 0 });
    await expect(model.complete(prompt, { maxTokens: 40 })).rejects.toMatchObject({ code: 'E_CONTEXT' });
    await model.dispose();
  });

  it('pauses a stream whose reader falls behind, while the other requests go on', async () => {
    const { packed } = await smallModel();
    const model = W4a8Model.fromPacked(packed);
    const slow = model.stream([256, 65], { maxTokens: 60, seed: 1 })[Symbol.asyncIterator]();
    await slow.next(); // started, then not read for a while
    const other = await model.complete([256, 66], { maxTokens: 50 });
    expect(other.generatedTokens).toBeGreaterThan(0);
    // The slow reader's sequence stopped at the high-water mark instead of running to the end.
    let rest = 0;
    while (!(await slow.next()).done) rest++;
    expect(rest).toBeGreaterThan(20);
    await model.dispose();
  });

  it('ends a stream left full and unread for stallTimeoutMs (E_STALLED), freeing its place; a slow reader is not cut', async () => {
    const { packed } = await smallModel();
    const model = W4a8Model.fromPacked(packed, { maxBatch: 1 });
    for (const bad of [0, -5, 2 ** 31, NaN, '100'])
      await expect(model.stream([256], { stallTimeoutMs: bad as number })[Symbol.asyncIterator]().next()).rejects.toMatchObject({ code: 'E_OPTION' });
    const held = model.stream([256, 65], { maxTokens: 200, seed: 1, stallTimeoutMs: 100 })[Symbol.asyncIterator]();
    await held.next(); // started, then held unread
    for (let i = 0; i < 500 && model.stats.running > 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(model.stats).toEqual({ running: 0, starting: 0, queued: 0, reservedTokens: 0 });
    let unread = 0;
    const ended = await (async () => { try { while (!(await held.next()).done) unread++; } catch (error) { return error; } })();
    expect(ended).toMatchObject({ code: 'E_STALLED' });
    expect(unread).toBeGreaterThanOrEqual(31); // what it generated before the pause is still delivered
    // Read once more after it filled, then left: the timer restarted at that read and still ends it.
    const left = model.stream([256, 65], { maxTokens: 200, seed: 1, stallTimeoutMs: 200 })[Symbol.asyncIterator]();
    await left.next();
    await new Promise((resolve) => setTimeout(resolve, 100)); // (it fills meanwhile)
    await left.next();
    for (let i = 0; i < 500 && model.stats.running > 0; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(model.stats.running).toBe(0);
    await expect((async () => { while (!(await left.next()).done); })()).rejects.toMatchObject({ code: 'E_STALLED' });
    // A reader that takes a chunk every 10 ms is never cut off at 1 s, however far generation runs ahead.
    let read = 0;
    for await (const chunk of model.stream([256, 66], { maxTokens: 80, seed: 2, stallTimeoutMs: 1000 })) {
      read += chunk.tokenIds.length;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(read).toBeGreaterThan(40);
    await model.dispose();
  });
});

describe('log probabilities', () => {
  it('stepLogprobs: the log-softmax normalizer and the most likely tokens in order (ties: lower id first)', () => {
    let state = 7;
    const next = () => ((state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32);
    for (const vocab of [1, 5, 17, 300, 40_000]) {
      for (const spread of [0.25, 8]) { // many ties, then few
        const row = Float32Array.from({ length: vocab }, () => Math.round(80 * next()) * spread - 10 * spread);
        const top = Math.max(...row);
        const logMass = top + Math.log(row.reduce((m, v) => m + Math.exp(v - top), 0));
        const order = Array.from(row.keys()).sort((a, b) => row[b] - row[a] || a - b);
        for (const count of [0, 1, 3, 20]) {
          const step = stepLogprobs(row, count);
          expect(Math.abs(step.logMass - logMass)).toBeLessThan(1e-6 * Math.max(1, Math.abs(logMass)));
          expect(step.top.map((t) => t.id)).toEqual(order.slice(0, count));
          for (const t of step.top) expect(t.logprob).toBe(row[t.id] - step.logMass);
        }
      }
    }
  });

  it('a NaN or an infinity anywhere in the row is E_STEP (never NaN log probabilities), and never a top token', () => {
    for (const row of [Float32Array.of(1, NaN, 3, 2), Float32Array.of(1, 2, Infinity), Float32Array.of(-Infinity, -Infinity)])
      expect(() => stepLogprobs(row, 2)).toThrow(expect.objectContaining({ code: 'E_STEP' }));
    expect(Array.from(native().logSoftmaxTop(Float32Array.of(1, NaN, 5, 2), 2).subarray(1))).toEqual([2, 3]);
    for (const count of [2.9, -0.5, NaN, 2 ** 32 + 1, 21, 5])
      expect(() => native().logSoftmaxTop(new Float32Array(4), count)).toThrow(expect.objectContaining({ code: 'E_SHAPE' }));
  });

  it('reports the raw distribution: bias and penalties change the draw, not the log probabilities', async () => {
    const { packed } = await smallModel();
    const model = W4a8Model.fromPacked(packed);
    const plain = await model.complete([256, 65], { maxTokens: 6, temperature: 0, logprobs: 2 });
    const banned = plain.tokenIds[0];
    const biased = await model.complete([256, 65], { maxTokens: 1, temperature: 0, logprobs: 2, logitBias: { [banned]: -100 }, repetitionPenalty: 1.5 });
    expect(biased.tokenIds[0]).not.toBe(banned);
    expect(biased.logprobs![0].top).toEqual(plain.logprobs![0].top); // the same step, unbiased
    expect(biased.logprobs![0].logprob).toBe(plain.logprobs![0].top.find((t) => t.id === biased.tokenIds[0])?.logprob ?? biased.logprobs![0].logprob);
    expect(biased.logprobs![0].logprob).toBeLessThan(plain.logprobs![0].logprob);
    await model.dispose();
  });

  it('promptLogprobs: what the model gave each prompt token from the ones before, over prefill chunks and beside other requests', async () => {
    const { packed } = await smallModel();
    const model = W4a8Model.fromPacked(packed, { prefillChunk: 3 }); // the 9-token prompt takes 3 steps
    const prompt = [256, 72, 101, 108, 108, 111, 32, 119, 111];
    const other = model.complete([256, 66, 67], { maxTokens: 12, temperature: 0 }); // in the same steps
    const scored = await model.complete(prompt, { maxTokens: 0, promptLogprobs: 3 });
    await other;
    expect([scored.tokenIds, scored.finishReason, scored.promptLogprobs!.map((p) => p.id)]).toEqual([[], 'length', prompt.slice(1)]);
    for (let k = 1; k < prompt.length; k++) {
      // The same position as the last token of a prompt that ends there (its logits: the first draw's).
      const alone = (await model.complete(prompt.slice(0, k), { maxTokens: 1, temperature: 0, logprobs: 3 })).logprobs![0];
      const got = scored.promptLogprobs![k - 1];
      expect(got.top.map((t) => t.id)).toEqual(alone.top.map((t) => t.id));
      for (let j = 0; j < 3; j++) expect(got.top[j].logprob).toBeCloseTo(alone.top[j].logprob, 4); // (batch-dependent last bits)
    }
    // With generation too: prompt entries first (one chunk, no token ids), then tokens with their own.
    const chunks = [];
    for await (const chunk of model.stream(prompt, { maxTokens: 2, temperature: 0, promptLogprobs: 0, logprobs: 0 })) chunks.push(chunk);
    expect(chunks[0]).toMatchObject({ text: '', tokenIds: [] });
    expect(chunks[0].promptLogprobs!.map((p) => p.top.length)).toEqual(prompt.slice(1).map(() => 0));
    expect(chunks.slice(1).flatMap((c) => c.logprobs ?? []).length).toBe(chunks.slice(1).flatMap((c) => c.tokenIds).length);
    await expect(model.complete(prompt, { maxTokens: 0 })).rejects.toMatchObject({ code: 'E_OPTION' }); // (0 only to score)
    await model.dispose();
    // Non-finite logits at a prompt position fail the request with E_STEP (as in a draw), not NaN log probabilities.
    const norm = packed.tensors.get('model.norm.weight')!;
    const broken = new Map(packed.tensors).set('model.norm.weight', { ...norm, data: (norm.data as Float32Array).map(() => NaN) });
    const bad = W4a8Model.fromPacked({ ...packed, tensors: broken });
    await expect(bad.complete(prompt, { maxTokens: 0, promptLogprobs: 1 })).rejects.toMatchObject({ code: 'E_STEP' });
    expect(bad.stats).toEqual({ running: 0, starting: 0, queued: 0, reservedTokens: 0 });
    await bad.dispose();
  });

  it('generate options: logprobs in [0, 20], else E_OPTION', async () => {
    const { packed } = await smallModel();
    const model = W4a8Model.fromPacked(packed);
    for (const bad of [-1, 21, 1.5, '3']) {
      await expect(model.complete([256], { maxTokens: 1, logprobs: bad as number })).rejects.toMatchObject({ code: 'E_OPTION' });
      await expect(model.complete([256], { maxTokens: 1, promptLogprobs: bad as number })).rejects.toMatchObject({ code: 'E_OPTION' });
    }
    const r = await model.complete([256, 65], { maxTokens: 3, temperature: 0, logprobs: 0 });
    expect(r.logprobs!.map((lp) => [lp.id, lp.top.length])).toEqual(r.tokenIds.map((id) => [id, 0]));
    expect((await model.complete([256, 65], { maxTokens: 3, temperature: 0 })).logprobs).toBeUndefined();
    await model.dispose();
  });
});

describe('sampler', () => {
  // Seeded logits over a 2000-token vocabulary: a few likely tokens and a long tail.
  function logitsOf(seed: number): Float32Array {
    let state = seed;
    const next = () => ((state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32);
    return Float32Array.from({ length: 2000 }, (_, i) => (i % 97 === 0 ? 6 : 0) + 4 * next());
  }
  /** The tokens a filter may keep, from a full sort (the definition). */
  function allowed(logits: Float32Array, o: { temperature: number; topK: number; topP: number; minP: number }): Set<number> {
    const order = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a]);
    const top = order.slice(0, o.topK > 0 ? o.topK : order.length);
    const p = top.map((t) => Math.exp((logits[t] - logits[top[0]]) / o.temperature));
    const total = p.reduce((a, b) => a + b, 0);
    let keep = top.length;
    while (keep > 1 && p[keep - 1] < o.minP * p[0]) keep--;
    let cumulative = 0;
    for (let i = 0; i < keep && o.topP < 1; i++) if ((cumulative += p[i] / total) >= o.topP) { keep = i + 1; break; }
    return new Set(top.slice(0, keep));
  }

  it.each([
    { temperature: 1, topK: 0, topP: 1, minP: 0 },
    { temperature: 0.7, topK: 0, topP: 0.5, minP: 0 },
    { temperature: 1.3, topK: 0, topP: 0.9, minP: 0.02 },
    { temperature: 1, topK: 300, topP: 0.8, minP: 0 },
    { temperature: 1, topK: 20, topP: 1, minP: 0.1 },
  ])('draws only what top-k, top-p and min-p keep, in proportion, reproducibly ($topK, $topP, $minP)', (o) => {
    const logits = logitsOf(o.topK + 7);
    const keep = allowed(logits, o);
    const seen = new Map<number, number>();
    for (let seed = 0; seed < 600; seed++) {
      const token = new Sampler(resolveSampling({ ...o, seed })).sample(logits.slice(), []);
      expect(keep.has(token), `token ${token} (seed ${seed}) is outside the kept set`).toBe(true);
      seen.set(token, (seen.get(token) ?? 0) + 1);
      if (seed < 5) expect(new Sampler(resolveSampling({ ...o, seed })).sample(logits.slice(), [])).toBe(token);
    }
    // The most likely token comes up about as often as its probability within the kept set says.
    const best = Array.from(logits.keys()).reduce((a, b) => (logits[b] > logits[a] ? b : a));
    const mass = [...keep].reduce((m, t) => m + Math.exp((logits[t] - logits[best]) / o.temperature), 0);
    expect((seen.get(best) ?? 0) / 600).toBeCloseTo(1 / mass, 1);
  });
});

describe('token bytes', () => {
  it('reads a token\'s own bytes from byte-level and SentencePiece vocabulary strings', () => {
    expect(Array.from(vocabularyBytes('\u0120the', 'byte-level')!)).toEqual([32, 116, 104, 101]); // 'Ġthe'
    expect(Array.from(vocabularyBytes('\u00e6\u013f', 'byte-level')!)).toEqual([0xE6, 0x9D]); // part of a character
    expect(vocabularyBytes('\u4e2d', 'byte-level')).toBeUndefined(); // not a byte-level string: the caller decodes
    expect(Array.from(vocabularyBytes('<0xE6>', 'sentencepiece')!)).toEqual([0xE6]);
    expect(Array.from(vocabularyBytes('\u2581caf\u00e9', 'sentencepiece')!)).toEqual([32, 99, 97, 102, 0xC3, 0xA9]);
    expect(vocabularyBytes('x', 'text')).toBeUndefined();
    const tokenizer = TextTokenizer.fromJson(byteLevelTokenizerJson());
    const ids = tokenizer.encode('naïve 東京', false);
    expect(Uint8Array.from(ids.flatMap((id) => Array.from(tokenizer.tokenBytes(id))))).toEqual(new TextEncoder().encode('naïve 東京'));
  });
});

describe('tokenizer loading', () => {
  it('load (in stages, between event-loop turns) gives the tokenizer fromJson gives; errors are E_FILE in both', async () => {
    const json = byteLevelTokenizerJson();
    const [now, staged] = [TextTokenizer.fromJson(json), await TextTokenizer.load(json)];
    expect(staged.maxTokenId).toBe(now.maxTokenId);
    expect(staged.maxTokenChars).toBe(now.maxTokenChars);
    expect(staged.encode('naïve café 🚀', false)).toEqual(now.encode('naïve café 🚀', false));
    await staged.close();
    // (the turns load gives away: while its worker thread builds, then between the slices of the vocabulary)
    const { result: again, turns } = await turnsWhile(() => TextTokenizer.load(json));
    await again.close();
    expect(turns).toBeGreaterThanOrEqual(2);
    for (const bad of ['{', JSON.stringify({ model: {} })]) {
      expect(() => TextTokenizer.fromJson(bad)).toThrow(expect.objectContaining({ code: 'E_FILE' }));
      await expect(TextTokenizer.load(bad)).rejects.toMatchObject({ code: 'E_FILE' });
    }
  });
});

describe('text stream', () => {
  const tokenizer = TextTokenizer.fromJson(byteLevelTokenizerJson());
  const decode = (ids: number[]) => tokenizer.decode(ids);
  const samples = ['Hello, world. ', 'naïve café – 東京 🚀🚀 ok', ' spaces  and\nnewlines\t', 'ab€cd𝄞ef'];

  it.each(samples)('streams, chunk by chunk, the text of decoding all ids at once (%j)', (sample) => {
    const ids = tokenizer.encode(sample.repeat(40), false);
    const stream = new TextStream(decode, []);
    let streamed = '';
    for (const id of ids) {
      const chunk = stream.push(id);
      expect(chunk.includes('\uFFFD')).toBe(false); // never half a character
      streamed += chunk;
    }
    streamed += stream.flush();
    expect(streamed).toBe(decode(ids));
  });

  it('cuts at a stop string split over tokens and holds back what may become one', () => {
    const ids = tokenizer.encode('one two 🚀 three STOP four', false);
    const stream = new TextStream(decode, ['STOP', '🚀 thr']);
    let streamed = '';
    for (const id of ids) {
      streamed += stream.push(id);
      expect(streamed.includes('🚀')).toBe(false);
      if (stream.stopped) break;
    }
    expect(stream.stopped).toBe(true);
    expect(streamed + stream.flush()).toBe('one two ');
  });

  it('cuts at the stop string that starts first in the text, not the first one listed', () => {
    // (Found by probing the server: with both complete in one token, the list's order used to win.)
    for (const stops of [['ree STOP', 'two 🚀'], ['two 🚀', 'ree STOP']]) {
      const stream = new TextStream(decode, stops);
      let streamed = '';
      for (const id of tokenizer.encode('one two 🚀 three STOP four', false)) {
        streamed += stream.push(id);
        if (stream.stopped) break;
      }
      expect(streamed + stream.flush()).toBe('one ');
    }
    // Both complete in one token: the earlier one cuts, whichever order they are listed in.
    const pieces = ['one t', 'wo three four'];
    for (const stops of [['three', 'two'], ['two', 'three']]) {
      const stream = new TextStream((ids) => ids.map((i) => pieces[i]).join(''), stops);
      expect(stream.push(0) + stream.push(1) + stream.flush()).toBe('one ');
    }
  });
});

