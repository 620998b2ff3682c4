// Many concurrent requests on one model (issue 6): 32 parallel streams of mixed lengths give the greedy
// tokens each gives alone; aborting half of them mid-way leaves the rest correct and frees their KV
// cache sequences; dispose() during generation rejects every pending request cleanly.
import { describe, expect, it } from 'vitest';
import { W4a8Model } from '../lib/model/model.js';
import type { NativeModelHandle } from '../lib/native.js';
import { syntheticSourceModel } from '../lib/model/synthetic.js';
import { packModel } from '../lib/pack.js';

const STREAMS = 32;

async function model(maxBatch: number, kvCache: 'f32' | 'bf16' = 'f32'): Promise<{ model: W4a8Model; live: () => number }> {
  const source = syntheticSourceModel({ dim: 64, hiddenDim: 172, nLayers: 2, nHeads: 8, nKvHeads: 4, maxSeqLen: 96 }, 5);
  const packed = await packModel(source, { groupSize: 32, weightFormat: 'e4m3fn', scales: 'float', method: 'rtn' });
  const m = W4a8Model.fromPacked(packed, { maxBatch, prefillChunk: 16, kvCache });
  // Count the native KV cache sequences alive: every one created must be freed when its request ends.
  const handle = (m as unknown as { handle: NativeModelHandle }).handle;
  let alive = 0;
  const create = handle.createSequence.bind(handle), free = handle.freeSequence.bind(handle);
  Object.defineProperty(handle, 'createSequence', { value: (capacity: number) => { const id = create(capacity); alive++; return id; } });
  Object.defineProperty(handle, 'freeSequence', { value: (id: number) => { free(id); alive--; } });
  return { model: m, live: () => alive };
}

/** Prompts of 1 to ~60 tokens and generation lengths of 3 to 34 tokens, all different. */
const prompts = Array.from({ length: STREAMS }, (_, i) => `${'abcdefgh'.slice(0, 1 + (i % 8))} ${'word '.repeat((i * 7) % 12)}#${i}`);
const maxTokens = (i: number) => 3 + ((i * 13) % 32);

async function collect(stream: AsyncIterable<{ tokenIds: number[] }>, onToken?: (count: number) => void): Promise<number[]> {
  const ids: number[] = [];
  for await (const chunk of stream) {
    ids.push(...chunk.tokenIds);
    onToken?.(ids.length);
  }
  return ids;
}

describe('32 concurrent streams on one model', () => {
  it.each(['f32', 'bf16'] as const)('give each request the greedy tokens it gives alone (%s KV cache)', async (kvCache) => {
    const { model: m, live } = await model(STREAMS, kvCache);
    const alone: number[][] = [];
    for (let i = 0; i < STREAMS; i++) alone.push((await m.complete(prompts[i], { temperature: 0, maxTokens: maxTokens(i) })).tokenIds);
    const together = await Promise.all(prompts.map((p, i) => collect(m.stream(p, { temperature: 0, maxTokens: maxTokens(i) }))));
    for (let i = 0; i < STREAMS; i++) expect(together[i], `stream ${i}`).toEqual(alone[i]);
    expect(live()).toBe(0);
    expect(m.stats).toMatchObject({ running: 0, starting: 0, queued: 0, reservedTokens: 0 });
    await m.dispose();
  }, 60_000);

  it('aborting half of them mid-way leaves the rest correct and frees the aborted sequences', async () => {
    const { model: m, live } = await model(STREAMS);
    const long = 40;
    const alone: number[][] = [];
    for (const p of prompts) alone.push((await m.complete(p, { temperature: 0, maxTokens: long })).tokenIds);
    // Half of the requests, among those that run long enough alone (the model may end early with EOS), abort after 3 tokens.
    const doomed = new Set(prompts.map((_, i) => i).filter((i) => alone[i].length >= 8).slice(0, STREAMS / 2));
    expect(doomed.size).toBeGreaterThanOrEqual(STREAMS / 4);
    const controllers = prompts.map(() => new AbortController());
    let peak = 0;
    const runs = prompts.map((p, i) => collect(m.stream(p, { temperature: 0, maxTokens: long, signal: controllers[i].signal }), (n) => {
      peak = Math.max(peak, live());
      if (doomed.has(i) && n >= 3) controllers[i].abort();
    }));
    const settled = await Promise.allSettled(runs);
    for (let i = 0; i < STREAMS; i++) {
      if (doomed.has(i)) expect(settled[i], `aborted ${i}`).toMatchObject({ status: 'rejected', reason: { code: 'E_ABORTED' } });
      else expect(settled[i], `survivor ${i}`).toEqual({ status: 'fulfilled', value: alone[i] });
    }
    expect(peak).toBeGreaterThan(STREAMS / 2);  // they really ran together
    expect(live()).toBe(0);
    expect(m.stats).toMatchObject({ running: 0, starting: 0, queued: 0, reservedTokens: 0 });
    await m.dispose();
  }, 60_000);

  it('dispose() during generation rejects every pending request with E_DISPOSED, and later calls too', async () => {
    const { model: m, live } = await model(8);
    let started!: () => void;
    const firstToken = new Promise<void>((resolve) => { started = resolve; });
    const runs = prompts.slice(0, 12).map((p) => collect(m.stream(p, { maxTokens: 60 }), () => started()));
    await firstToken;
    await m.dispose();
    const settled = await Promise.allSettled(runs);
    for (const s of settled) expect(s).toMatchObject({ status: 'rejected', reason: { code: 'E_DISPOSED' } });
    expect(live()).toBe(0);
    await expect(m.generate('again')).rejects.toMatchObject({ code: 'E_DISPOSED' });
  }, 60_000);
});
