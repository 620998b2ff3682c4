// GPTQ / DPQ / GAR (lib/quant): the calibrated quantizers beat RTN on a layer's output error with
// correlated inputs, GAR's order is a group-preserving permutation that the packer undoes exactly,
// padded inputs stay exactly zero, the runtime's Hessians equal a float64 reference, a DPQ-packed model
// passes the file format's validation and runs, and misuse gives typed errors.
import { rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { W4a8Error } from '../lib/errors.js';
import { readPackedModel, writePackedModel } from '../lib/format/index.js';
import { decodeFp8 } from '../lib/fp8.js';
import { createNativeModel, createReferenceNativeModel } from '../lib/model/native-model.js';
import { syntheticSourceModel, type SyntheticShape } from '../lib/model/synthetic.js';
import { packModel } from '../lib/pack.js';
import { columnOrder, quantizeLinear, quantizeLinearAsync, type GptqLayerOptions } from '../lib/quant/gptq.js';
import { Int4Weights } from '../lib/weights.js';
import { tempDir } from './fixtures/safetensors-bytes.js';
import { packedLogits, referenceLogits, sourceLogits } from './reference/llama-ref.js';

const dir = tempDir('w4a8-quant-');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Seeded normal samples (mulberry32 + Box-Muller); the seed is in every failure message. */
function normals(count: number, seed: number): Float64Array {
  let state = seed >>> 0;
  const uniform = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  return Float64Array.from({ length: count }, () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform()));
}

interface Layer {
  w: Float32Array;
  x: Float64Array;
  hessian: Float64Array;
  N: number;
  K: number;
  M: number;
}

/** W [N, K] ~ N(0, 0.02²); inputs x [M, K] strongly correlated across columns (mixed through 12 shared factors), uneven scales. */
function correlatedLayer(N: number, K: number, M: number, seed: number): Layer {
  const w = Float32Array.from(normals(N * K, seed), (v) => v * 0.02);
  const mix = normals(K * 12, seed + 1);
  const z = normals(M * 12, seed + 2), noise = normals(M * K, seed + 3);
  const x = new Float64Array(M * K);
  for (let m = 0; m < M; m++)
    for (let k = 0; k < K; k++) {
      let s = 0;
      for (let f = 0; f < 12; f++) s += z[m * 12 + f] * mix[k * 12 + f];
      x[m * K + k] = (s + 0.3 * noise[m * K + k]) * (1 + 3 * (k % 7 === 0 ? 1 : 0));
    }
  return { w, x, hessian: hessianOf(x, M, K), N, K, M };
}

/** H = 2 Σ xᵀx in float64. */
function hessianOf(x: Float64Array, M: number, K: number): Float64Array {
  const h = new Float64Array(K * K);
  for (let m = 0; m < M; m++)
    for (let i = 0; i < K; i++) {
      const xi = 2 * x[m * K + i];
      for (let j = 0; j < K; j++) h[i * K + j] += xi * x[m * K + j];
    }
  return h;
}

/** The real weights the W4A8 kernels use: s_c · fp8(s_g (q − z)), [rows, cols]. */
function dequantized(q: Int4Weights): Float64Array {
  const v = decodeFp8(q.dequantize(), q.format);
  return Float64Array.from(v, (value, i) => value * q.channelScales[Math.floor(i / q.cols)]);
}

/** ‖X Wᵀ − X Ŵᵀ‖ / ‖X Wᵀ‖ over the layer's inputs. */
function outputError(layer: Layer, wq: Float64Array, cols = layer.K): number {
  const { w, x, N, K, M } = layer;
  let err = 0, norm = 0;
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let a = 0, b = 0;
      for (let k = 0; k < K; k++) {
        a += x[m * K + k] * w[n * K + k];
        b += x[m * K + k] * wq[n * cols + k];
      }
      err += (a - b) ** 2;
      norm += a * a;
    }
  return Math.sqrt(err / norm);
}

describe('GPTQ / DPQ on one layer', () => {
  const seed = 11;
  const layer = correlatedLayer(96, 256, 512, seed);

  it.each([32, 128] as const)('reduce the output error vs RTN on correlated inputs, DPQ at most GPTQ (G=%i, seed 11)', (groupSize) => {
    const rtn = outputError(layer, dequantized(Int4Weights.pack(layer.w, layer.N, layer.K, { groupSize })));
    const errors: Record<string, number> = {};
    for (const method of ['gptq', 'dpq'] as const)
      for (const order of ['natural', 'gar', 'act-order'] as const) {
        const r = quantizeLinear(layer.w, layer.N, layer.K, layer.hessian, layer.K, { method, order, groupSize });
        errors[`${method} ${order}`] = outputError(layer, dequantized(r.weights));
        expect(r.damp).toBe(0.01);
        expect(r.loss).toBeGreaterThan(0);
      }
    const report = `RTN ${rtn.toFixed(4)}, ${JSON.stringify(errors)}`;
    for (const [name, e] of Object.entries(errors)) expect(e, `${name}: ${report}`).toBeLessThan(0.9 * rtn);
    expect(errors['dpq natural'], report).toBeLessThanOrEqual(errors['gptq natural']);
    expect(errors['dpq gar'], report).toBeLessThanOrEqual(errors['gptq gar']);
  });

  it('gives the same result synchronously and on a worker thread', async () => {
    const options: GptqLayerOptions = { method: 'dpq', order: 'gar', groupSize: 64 };
    const a = quantizeLinear(layer.w, layer.N, layer.K, layer.hessian, layer.K, options);
    const b = await quantizeLinearAsync(layer.w, layer.N, layer.K, layer.hessian, layer.K, options);
    expect(b.weights.codes).toEqual(a.weights.codes);
    expect(b.weights.groupScales).toEqual(a.weights.groupScales);
    expect(b.loss).toBe(a.loss);
  });

  it('keeps padded inputs (K = 172 padded to 256) exactly zero and lets them take no error', () => {
    const K = 172, Kp = 256, N = 24;
    const real = correlatedLayer(N, K, 256, 5);
    const w = new Float32Array(N * Kp);
    for (let n = 0; n < N; n++) w.set(real.w.subarray(n * K, (n + 1) * K), n * Kp);
    const rtn = outputError(real, dequantized(Int4Weights.pack(w, N, Kp, { groupSize: 128 })), Kp);
    for (const order of ['natural', 'gar', 'act-order'] as const) {
      const r = quantizeLinear(w, N, Kp, real.hessian, K, { method: 'dpq', order, groupSize: 128 });
      const wq = dequantized(r.weights);
      for (let n = 0; n < N; n++) for (let k = K; k < Kp; k++) expect(wq[n * Kp + k], `${order} [${n}, ${k}]`).toBe(0);
      expect(outputError(real, wq, Kp), order).toBeLessThan(rtn);
    }
  });

  it('raises the dampening until an indefinite Hessian factors, and reports it', () => {
    const K = 64, N = 8;
    const w = Float32Array.from(normals(N * K, 3), (v) => v * 0.1);
    const h = new Float64Array(K * K);
    for (let i = 0; i < K; i++) {
      h[i * K + i] = 1;
      if (i > 0) h[i * K + i - 1] = h[(i - 1) * K + i] = 0.7; // tridiagonal 1, 0.7: indefinite for large K
    }
    const r = quantizeLinear(w, N, K, h, K, { method: 'gptq', groupSize: 32, damp: 0 });
    expect(r.damp).toBeGreaterThan(0);
    expect(Int4Weights.fromParts(r.weights)).toBeInstanceOf(Int4Weights);
  });
});

describe('GAR', () => {
  it('orders groups by their largest diag(H) and columns inside a group by diag(H), each group consecutive', () => {
    const G = 32, K = 256;
    const diag = Float64Array.from(normals(K, 21), (v) => Math.abs(v));
    const order = Array.from(columnOrder(diag, G, 'gar'));
    expect([...order].sort((a, b) => a - b)).toEqual(Array.from({ length: K }, (_, k) => k)); // a permutation
    const groupMax = (g: number) => Math.max(...Array.from(diag.subarray(g * G, (g + 1) * G)));
    for (let b = 0; b < K / G; b++) {
      const block = order.slice(b * G, (b + 1) * G);
      const g = Math.floor(block[0] / G);
      expect(block.every((k) => Math.floor(k / G) === g), `block ${b} holds one group`).toBe(true);
      for (let i = 1; i < G; i++) expect(diag[block[i - 1]]).toBeGreaterThanOrEqual(diag[block[i]]);
      if (b > 0) expect(groupMax(Math.floor(order[(b - 1) * G] / G))).toBeGreaterThanOrEqual(groupMax(g));
    }
    const act = Array.from(columnOrder(diag, G, 'act-order'));
    for (let i = 1; i < K; i++) expect(diag[act[i - 1]]).toBeGreaterThanOrEqual(diag[act[i]]);
  });

  it('round-trips exactly: with no coupling between inputs every order packs bit-identically to the natural one', () => {
    // A diagonal Hessian propagates no error, so the sweep order can only matter through the permutation
    // and its inverse: any mismatch there would move codes or scales to the wrong columns.
    const N = 16, K = 256;
    const w = Float32Array.from(normals(N * K, 31), (v) => v * 0.05);
    const h = new Float64Array(K * K);
    normals(K, 32).forEach((v, i) => { h[i * K + i] = 1 + Math.abs(v) * 10; });
    for (const method of ['gptq', 'dpq'] as const) {
      const natural = quantizeLinear(w, N, K, h, K, { method, groupSize: 32 }).weights;
      for (const order of ['gar', 'act-order'] as const) {
        const other = quantizeLinear(w, N, K, h, K, { method, order, groupSize: 32 }).weights;
        expect(other.codes, `${method} ${order}`).toEqual(natural.codes);
        expect(other.groupScales, `${method} ${order}`).toEqual(natural.groupScales);
        expect(other.zeros, `${method} ${order}`).toEqual(natural.zeros);
        expect(other.channelScales, `${method} ${order}`).toEqual(natural.channelScales);
      }
    }
  });
});

const SHAPE: SyntheticShape = { dim: 64, hiddenDim: 172, nLayers: 2, nHeads: 8, nKvHeads: 4, maxSeqLen: 64 };

function calibrationTokens(count: number, length: number, seed: number): Int32Array[] {
  const u = normals(count * length, seed);
  return Array.from({ length: count }, (_, i) =>
    Int32Array.from({ length }, (_, t) => (t === 0 ? 256 : Math.floor(Math.abs(u[i * length + t]) * 1000) % 256)));
}

describe('calibration and packing', () => {
  it('collects Hessians equal to a float64 reference (2 Σ xᵀx of each linear input of a layer)', async () => {
    const source = syntheticSourceModel(SHAPE, 3);
    const tokens = [256, 72, 101, 108, 108, 111, 33];
    const inputs = new Map<string, Float64Array[]>();
    const t = (name: string) => source.tensors.get(name)!;
    referenceLogits(source.config, tokens,
      (tok) => Float64Array.from(t('model.embed_tokens.weight').data.subarray(tok * 64, (tok + 1) * 64)),
      (name) => t(name).data as Float32Array,
      (name, x) => {
        if (!inputs.has(name)) inputs.set(name, []);
        inputs.get(name)!.push(x.slice());
        const w = t(`${name}.weight`);
        const [rows, cols] = w.shape;
        return Float64Array.from({ length: rows }, (_, n) => {
          let s = 0;
          for (let k = 0; k < cols; k++) s += w.data[n * cols + k] * x[k];
          return s;
        });
      },
      (x) => {
        if (!inputs.has('lm_head')) inputs.set('lm_head', []);
        inputs.get('lm_head')!.push(x.slice());
        return new Float64Array(source.config.vocabSize);
      });
    const handle = createReferenceNativeModel(source);
    const run = async (layer: number) => {
      handle.collectHessians(layer);
      await handle.step(Int32Array.of(handle.createSequence(16)), Int32Array.of(tokens.length), Int32Array.from(tokens),
        new Float32Array(source.config.vocabSize));
      return handle.takeHessians();
    };
    const taken = await run(1);
    const head = await run(2);  // nLayers: the lm_head's input, the final norm's output
    handle.dispose();
    const names = ['q_proj', 'o_proj', 'gate_proj', 'down_proj'].map((p) => `model.layers.1.${p.startsWith('q') || p.startsWith('o') ? 'self_attn' : 'mlp'}.${p}`);
    [...names, 'lm_head'].forEach((name, i) => {
      const xs = inputs.get(name)!;
      const K = xs[0].length;
      const want = hessianOf(Float64Array.from(xs.flatMap((x) => Array.from(x))), xs.length, K);
      const got = name === 'lm_head' ? head.hessians[0] : taken.hessians[i];
      let scale = 0;
      for (const v of want) scale = Math.max(scale, Math.abs(v));
      for (let j = 0; j < K * K; j++) expect(Math.abs(got[j] - want[j]) / scale, `${name} [${Math.floor(j / K)}, ${j % K}]`).toBeLessThan(1e-5);
    });
  });

  it('packs a model with DPQ+GAR into a file that passes readPackedModel and runs', async () => {
    const source = syntheticSourceModel(SHAPE, 4);
    const progress: string[] = [];
    const packed = await packModel(source, {
      method: 'dpq', gar: true, groupSize: 64, calibration: calibrationTokens(8, 48, 7),
    }, (p) => progress.push(p.calibration ? `calibrate ${p.layer}` : p.linear));
    expect(packed.quant.method).toBe('dpq');
    expect(packed.quant.details).toMatchObject({ order: 'gar', damp: 0.01, calibration: { sequences: 8, tokens: 384 } });
    expect(progress.filter((p) => p.startsWith('calibrate 0')).length).toBeGreaterThan(0);
    expect(progress.filter((p) => p.includes('_proj'))).toHaveLength(14);
    const file = path.join(dir, 'dpq.w4a8');
    await writePackedModel(file, packed);
    const read = await readPackedModel(file);
    expect(read.quant).toEqual(packed.quant);
    for (const [name, tensor] of packed.tensors) expect(read.tensors.get(name)!.data, name).toEqual(tensor.data);
    const handle = createNativeModel(read);
    const logits = new Float32Array(258);
    await handle.step(Int32Array.of(handle.createSequence(8)), Int32Array.of(3), Int32Array.of(256, 65, 66), logits);
    expect(logits.every(Number.isFinite)).toBe(true);
    handle.dispose();
  });

  it('quantizes a W4A8 lm_head by DPQ too, on the final norm\'s output: nearer the FP32 logits than an RTN lm_head', async () => {
    const source = syntheticSourceModel(SHAPE, 5);
    const calibration = calibrationTokens(8, 48, 9);
    const progress: string[] = [];
    const dpq = await packModel(source, { method: 'dpq', groupSize: 64, calibration, lmHead: 'w4a8' },
      (p) => progress.push(p.calibration ? `calibrate ${p.layer}` : p.linear));
    expect(progress).toContain('calibrate 2');
    expect(progress.at(-1)).toBe('lm_head');
    // The same DPQ decoder layers with the lm_head of an RTN pack instead.
    const rtn = await packModel(source, { method: 'rtn', groupSize: 64, lmHead: 'w4a8' });
    const withRtnHead = { ...dpq, tensors: new Map(dpq.tensors) };
    for (const part of ['qweight', 'scales', 'zeros', 'channel_scale']) withRtnHead.tensors.set(`lm_head.${part}`, rtn.tensors.get(`lm_head.${part}`)!);
    const tokens = Array.from(calibration[0]);
    const fp32 = sourceLogits(source, tokens);
    const error = (model: typeof dpq) => packedLogits(model, tokens).reduce((sum, logits, i) =>
      sum + logits.reduce((s, v, j) => s + (v - fp32[i][j]) ** 2, 0), 0);
    expect(error(dpq)).toBeLessThan(error(withRtnHead));
  });

  it('rejects misuse with typed errors', async () => {
    const source = syntheticSourceModel(SHAPE, 4);
    const calibration = calibrationTokens(2, 8, 1);
    const cases: [object, string][] = [
      [{ method: 'gptq' }, 'needs options.calibration'],
      [{ method: 'dpq', calibration: [] }, 'non-empty array'],
      [{ method: 'dpq', calibration: [Int32Array.of(1, 999)] }, 'token id'],
      [{ method: 'dpq', calibration: [new Int32Array(65)] }, 'context'],
      [{ method: 'dpq', calibration, gar: true, actOrder: true }, 'choose one'],
      [{ method: 'dpq', calibration, damp: 2 }, 'options.damp'],
      [{ method: 'rtn', calibration }, 'options.calibration is for gptq/dpq'],
      [{ method: 'rtn', gar: true }, 'options.gar'],
    ];
    for (const [options, message] of cases) {
      const error = await packModel(source, options).then(() => undefined, (e: unknown) => e);
      expect(error, JSON.stringify(options)).toBeInstanceOf(W4a8Error);
      expect((error as W4a8Error).code).toBe('E_OPTION');
      expect((error as Error).message).toContain(message);
    }
    const w = new Float32Array(8 * 64), h = new Float64Array(64 * 64);
    const expectCode = (run: () => unknown, code: string) => {
      try {
        run();
      } catch (error) {
        expect(error).toBeInstanceOf(W4a8Error);
        expect((error as W4a8Error).code).toBe(code);
        return;
      }
      expect.fail(`expected ${code}`);
    };
    expectCode(() => quantizeLinear(w, 8, 64, new Float64Array(10), 64, { method: 'dpq', groupSize: 32 }), 'E_LENGTH');
    expectCode(() => quantizeLinear(w, 8, 64, h, 65, { method: 'dpq', groupSize: 32 }), 'E_SHAPE');
    expectCode(() => quantizeLinear(w, 8, 64, h, 64, { method: 'dpq', groupSize: 128 }), 'E_GROUP');
    expectCode(() => quantizeLinear(w, 8, 64, h, 64, { method: 'awq' as 'dpq', groupSize: 32 }), 'E_OPTION');
    expectCode(() => quantizeLinear(w, 8, 64, h, 64, { method: 'dpq', groupSize: 32, order: 'random' as 'gar' }), 'E_OPTION');
    expectCode(() => quantizeLinear(w, 8, 64, h, 64, { method: 'dpq', groupSize: 32, damp: -1 }), 'E_OPTION');
    expectCode(() => quantizeLinear(w, 8, 64, Float32Array.from(h) as unknown as Float64Array, 64, { method: 'dpq', groupSize: 32 }), 'E_TYPE');
    expectCode(() => columnOrder(new Float64Array(40), 32, 'gar'), 'E_GROUP');
  });
});
