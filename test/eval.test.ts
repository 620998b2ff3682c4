// Evaluation (lib/quant/evaluate.ts, `w4a8 eval`, `w4a8 sample`): sliding windows score each token once,
// perplexity matches a brute-force float64 computation, a model against itself has KLD 0 and full top-1
// agreement, sampling is reproducible per seed, token files round-trip, and on the trained stories260K
// DPQ(+GAR) beats RTN and is no worse than GPTQ.
import { rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { evalCommand, sampleCommand } from '../lib/commands/eval.js';
import { packCommand } from '../lib/commands/pack.js';
import { W4a8Error } from '../lib/errors.js';
import { importLlama2c } from '../lib/import/index.js';
import { createNativeModel, createReferenceNativeModel } from '../lib/model/native-model.js';
import { syntheticSourceModel, type SyntheticShape } from '../lib/model/synthetic.js';
import { packModel } from '../lib/pack.js';
import { compareMethods } from '../lib/quant/compare.js';
import { evaluateModel, slidingWindows } from '../lib/quant/evaluate.js';
import { parseTokenFile, readTokenFile, sampleSequences, writeTokenFile } from '../lib/quant/tokens.js';
import { tempDir } from './fixtures/safetensors-bytes.js';
import { llama2cCheckpoints, missingModelsMessage } from './fixtures/shared-models.js';
import { sourceLogits } from './reference/llama-ref.js';

const dir = tempDir('w4a8-eval-');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const SHAPE: SyntheticShape = { dim: 64, hiddenDim: 172, nLayers: 2, nHeads: 8, nKvHeads: 4, maxSeqLen: 64 };

const output = () => {
  const lines: string[] = [];
  return { lines, out: { log: (l: string) => lines.push(l), progress: { write: () => true, isTTY: false } as unknown as NodeJS.WritableStream } };
};

describe('sliding windows', () => {
  it.each([[10, 4, 2], [100, 32, 16], [100, 32, 32], [33, 32, 7], [5, 32, 16]])('score every token but the first exactly once (T=%i, context %i, stride %i)', (T, context, stride) => {
    const sequence = Int32Array.from({ length: T }, (_, i) => i);
    const scored: number[] = [];
    for (const w of slidingWindows(sequence, context, stride)) {
      expect(w.tokens.length).toBeLessThanOrEqual(context);
      for (let r = w.firstScored; r < w.tokens.length - 1; r++) scored.push(w.tokens[r + 1]);
    }
    expect(scored).toEqual(Array.from({ length: T - 1 }, (_, i) => i + 1));
  });
});

describe('evaluateModel', () => {
  it('gives the perplexity of a float64 forward pass, and KLD 0 / top-1 100% against itself', async () => {
    const source = syntheticSourceModel(SHAPE, 3);
    const tokens = [256, 72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100];
    const logits = sourceLogits(source, tokens);
    let nll = 0;
    for (let t = 0; t + 1 < tokens.length; t++) {
      const row = logits[t];
      const max = Math.max(...row);
      const logZ = max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
      nll += logZ - row[tokens[t + 1]];
    }
    const want = Math.exp(nll / (tokens.length - 1));
    const handle = createReferenceNativeModel(source);
    const r = await evaluateModel(handle, [Int32Array.from(tokens)], 258, 64, { reference: handle });
    handle.dispose();
    expect(r.tokens).toBe(tokens.length - 1);
    expect(Math.abs(r.perplexity - want) / want).toBeLessThan(1e-4);
    expect(r.referencePerplexity).toBeCloseTo(r.perplexity, 10);
    expect(r.kld).toBeLessThan(1e-9);
    expect(r.top1).toBe(1);
  });

  it('measures a quantized model against the FP32 one: KLD > 0, same tokens with windows as with one pass', async () => {
    const source = syntheticSourceModel(SHAPE, 3);
    const reference = createReferenceNativeModel(source);
    const packed = createNativeModel(await packModel(source, { groupSize: 32 }));
    const sequences = await sampleSequences(reference, { count: 3, length: 40, seed: 5, firstToken: 256, vocabSize: 258 });
    const whole = await evaluateModel(packed, sequences, 258, 64, { reference, context: 40 });
    const windowed = await evaluateModel(packed, sequences, 258, 64, { reference, context: 16, stride: 8, stepRows: 16 });
    expect(whole.tokens).toBe(3 * 39);
    expect(windowed.tokens).toBe(whole.tokens);
    expect(whole.kld).toBeGreaterThan(0);
    expect(whole.top1).toBeGreaterThan(0.3);
    expect(windowed.perplexity).toBeGreaterThan(whole.perplexity * 0.8); // less context, similar perplexity
    reference.dispose();
    packed.dispose();
  });
});

describe('token sequences', () => {
  it('samples reproducibly per seed, whatever the batch, and differently for another seed', async () => {
    const handle = createReferenceNativeModel(syntheticSourceModel(SHAPE, 3));
    const o = { count: 5, length: 12, firstToken: 256, vocabSize: 258 };
    const a = await sampleSequences(handle, { ...o, seed: 1 });
    const b = await sampleSequences(handle, { ...o, seed: 1, batch: 2 });
    const c = await sampleSequences(handle, { ...o, seed: 2 });
    handle.dispose();
    expect(b).toEqual(a);
    expect(c).not.toEqual(a);
    expect(a.every((s) => s.length === 12 && s[0] === 256 && s.every((t) => t >= 0 && t < 258))).toBe(true);
  });

  it('reads and writes token-id files (JSON sequences, a JSON stream, one sequence per line) and rejects bad ids', async () => {
    const file = path.join(dir, 'tokens.json');
    const sequences = [Int32Array.of(1, 2, 3), Int32Array.of(4, 5)];
    await writeTokenFile(file, sequences);
    expect(await readTokenFile(file, 10)).toEqual(sequences);
    expect(parseTokenFile('[7, 8, 9]', 'a.json')).toEqual([Int32Array.of(7, 8, 9)]);
    expect(parseTokenFile('1 2 3\n\n4,5\n', 'a.txt')).toEqual(sequences);
    expect(() => parseTokenFile('[1, 2, 30]', 'a.json', 10)).toThrow(W4a8Error);
    expect(() => parseTokenFile('1 x', 'a.txt')).toThrow(/line 1/);
    expect(() => parseTokenFile('{}', 'a.json')).toThrow(W4a8Error);
    await expect(readTokenFile(path.join(dir, 'missing.json'))).rejects.toMatchObject({ code: 'E_IO' });
  });
});

describe('w4a8 eval and w4a8 sample', () => {
  it('sample, pack --calib-tokens, eval --tokens --reference: one consistent pipeline', async () => {
    const [checkpoint] = llama2cCheckpoints();
    if (!checkpoint) {
      console.warn(missingModelsMessage('llama2.c checkpoint'));
      return;
    }
    const calib = path.join(dir, 'calib.json'), evalTokens = path.join(dir, 'eval.json'), model = path.join(dir, 'm.w4a8');
    const o = output();
    await sampleCommand([checkpoint, '-o', calib, '--count', '16', '--length', '64', '--seed', '1'], o.out);
    await sampleCommand([checkpoint, '-o', evalTokens, '--count', '8', '--length', '64', '--seed', '2'], o.out);
    await packCommand([checkpoint, '-o', model, '--method', 'dpq', '--calib-tokens', calib], { ...o.out, progress: o.out.progress as never });
    await evalCommand([model, '--tokens', evalTokens, '--reference', checkpoint, '--json', path.join(dir, 'r.json')], o.out);
    const text = o.lines.join('\n');
    expect(text).toContain('calibration: 16 sequences, 1024 tokens');
    expect(text).toMatch(/perplexity [\d.]+ \(FP32 reference [\d.]+\), mean KLD [\d.]+ ± [\d.]+, top-1 agreement [\d.]+%/);
    // The same evaluation sequences drawn on the fly give the same numbers.
    const again = output();
    await evalCommand([model, '--sample', '8', '--length', '64', '--seed', '2', '--reference', checkpoint], again.out);
    expect(again.lines.at(-1)).toBe(o.lines.at(-1));
  });

  it('rejects misuse with typed errors', async () => {
    const o = output();
    await expect(evalCommand(['m.w4a8'], o.out)).rejects.toMatchObject({ code: 'E_OPTION' });
    await expect(evalCommand(['m.w4a8', '--text', 'a', '--tokens', 'b'], o.out)).rejects.toMatchObject({ code: 'E_OPTION' });
    await expect(evalCommand([path.join(dir, 'none.w4a8'), '--sample', '4'], o.out)).rejects.toMatchObject({ code: 'E_OPTION', message: expect.stringContaining('--reference') });
    await expect(evalCommand([path.join(dir, 'none.w4a8'), '--tokens', 'x.json'], o.out)).rejects.toMatchObject({ code: 'E_IO' });
    await expect(sampleCommand(['x.bin'], o.out)).rejects.toMatchObject({ code: 'E_OPTION' });
    await expect(evalCommand(['--models', path.join(dir, 'no-models')], o.out)).resolves.toBeUndefined();
    expect(o.lines.at(-1)).toContain('SKIPPED');
  });
});

describe('stories260K (trained weights): DPQ against RTN and GPTQ', () => {
  it('DPQ and DPQ+GAR: lower perplexity than RTN, no higher than GPTQ; DPQ+GAR KLD at most 0.7x RTN', async () => {
    const [checkpoint] = llama2cCheckpoints();
    if (!checkpoint) {
      console.warn(missingModelsMessage('llama2.c checkpoint'));
      return;
    }
    const source = await importLlama2c(checkpoint);
    const c = source.config;
    const reference = createReferenceNativeModel(source);
    const sample = (count: number, length: number, seed: number) =>
      sampleSequences(reference, { count, length, seed, firstToken: c.bosTokenId!, vocabSize: c.vocabSize });
    const calibration = await sample(64, 128, 1), evaluation = await sample(32, 256, 2);
    reference.dispose();
    const rows = await compareMethods(source, { groupSize: 128, calibration, evaluation });
    const by = Object.fromEntries(rows.map((r) => [r.name, r.result]));
    const report = rows.map((r) => `${r.name} ppl ${r.result.perplexity.toFixed(2)} kld ${r.result.kld!.toFixed(3)}`).join('; ');
    for (const dpq of ['W4A8-DPQ', 'W4A8-DPQ+GAR']) {
      expect(by[dpq].perplexity, report).toBeLessThan(by['W4A8-RTN'].perplexity);
      expect(by[dpq].perplexity, report).toBeLessThanOrEqual(by['W4A8-GPTQ'].perplexity);
    }
    expect(by['W4A8-DPQ+GAR'].kld!, report).toBeLessThanOrEqual(0.7 * by['W4A8-RTN'].kld!);
    expect(by['FP32'].kld, report).toBeLessThan(1e-9);
  });
});
