// Every GEMM against a float64 product of the same quantized operands (computed by the oracle):
// |y - y64| <= 1e-5 * Σ|terms| on the FP32 output; BF16 output is that FP32 output rounded.
import { describe, expect, it } from 'vitest';
import {
  Fp8Weights, Int4Weights, gemmF32, gemmF32Async, gemmW4A16, gemmW4A16Async, gemmW4A8, gemmW4A8Async, gemmW8A8,
  gemmW8A8Async, quantizeActivations, type GroupSize,
} from '../lib/index.js';
import { FORMATS, rng, type Format } from './oracle/fp8-oracle.js';
import { bf16Value, decode, dequantOracle, dot64, int4Code, quantizeRows, randomArray, toBf16 } from './helpers.js';
import { turnsWhile } from './fixtures/event-loop.js';

const TOLERANCE = 1e-5;

interface Shape { M: number; N: number; K: number; G: GroupSize; seed: number }

/** Seeded random shapes with odd sizes: M, N not multiples of 8, K = G * (1..3). */
function shapes(count: number, seed: number): Shape[] {
  const random = rng(seed);
  const pick = <T>(xs: T[]) => xs[Math.floor(random() * xs.length)];
  return Array.from({ length: count }, (_, i) => {
    const G = pick([32, 64, 128] as GroupSize[]);
    return { M: pick([1, 2, 3, 5, 7, 13]), N: pick([1, 3, 9, 17, 31, 40]), K: G * pick([1, 2, 3]), G, seed: seed * 100 + i };
  });
}

function expectClose(got: Float32Array | Uint16Array, want: Float64Array, magnitude: Float64Array, label: string): void {
  expect(got).toBeInstanceOf(Float32Array);
  for (let i = 0; i < want.length; i++) {
    const error = Math.abs(got[i] - want[i]);
    if (!(error <= TOLERANCE * magnitude[i] + 1e-30))
      expect.fail(`${label}: y[${i}] = ${got[i]}, float64 ${want[i]}, error ${error} > ${TOLERANCE} * ${magnitude[i]}`);
  }
}

function expectBf16Of(got: Float32Array | Uint16Array, fp32: Float32Array | Uint16Array): void {
  expect(got).toBeInstanceOf(Uint16Array);
  expect(Array.from(got)).toEqual(Array.from(fp32, (v) => toBf16(v)));
}

describe.each(FORMATS)('W4A8 and W8A8 with %s', (format: Format) => {
  it.each(shapes(6, FORMATS.indexOf(format) + 1))('M=$M N=$N K=$K G=$G seed=$seed', ({ M, N, K, G, seed }) => {
    const x = randomArray(M * K, seed, 4);
    const w = Int4Weights.pack(randomArray(N * K, seed + 1, 0.05), N, K, { groupSize: G, format, scales: seed % 2 ? 'pow2' : 'float' });
    const act = quantizeRows(x, M, K, format);
    const native = quantizeActivations(x, M, K, { format });
    expect(native.codes).toEqual(act.codes);
    expect(native.scales).toEqual(act.scales);
    const w8 = dequantOracle(w);
    const { sum, magnitude } = dot64((i) => decode(act.codes[i], format), (i) => decode(w8[i], format), M, N, K);
    const scale = (m: number, n: number) => act.scales[m] * w.channelScales[n];
    const want = sum.map((s, i) => s * scale(Math.floor(i / N), i % N));
    const bound = magnitude.map((s, i) => s * scale(Math.floor(i / N), i % N));
    const y = gemmW4A8(x, w, {});
    expectClose(y, want, bound, `W4A8 seed ${seed}`);
    expectBf16Of(gemmW4A8(x, w, { output: 'bf16' }), y);
    // W8A8 on the dequantized weights computes the same sum.
    const fp8 = Fp8Weights.fromInt4(w);
    expect(fp8.codes).toEqual(w8);
    expectClose(gemmW8A8(x, fp8), want, bound, `W8A8 seed ${seed}`);
  });

  it('uses a static activation scale, saturating values beyond it', () => {
    const M = 3, N = 5, K = 64;
    const x = randomArray(M * K, 42, 2);
    const w = Int4Weights.pack(randomArray(N * K, 43), N, K, { groupSize: 32, format });
    const scale = 0.5 / (format === 'e5m2' ? 57344 : 240);
    const act = quantizeRows(x, M, K, format, scale);
    expect(quantizeActivations(x, M, K, { format, scale }).codes).toEqual(act.codes);
    const w8 = dequantOracle(w);
    const { sum, magnitude } = dot64((i) => decode(act.codes[i], format), (i) => decode(w8[i], format), M, N, K);
    const s = (i: number) => Math.fround(scale) * w.channelScales[i % N];
    expectClose(gemmW4A8(x, w, { activationScale: scale }), sum.map((v, i) => v * s(i)), magnitude.map((v, i) => v * s(i)), 'static');
  });
});

describe('W4A16 and FP32', () => {
  it.each(shapes(6, 9))('M=$M N=$N K=$K G=$G seed=$seed', ({ M, N, K, G, seed }) => {
    const x = randomArray(M * K, seed, 3);
    const weights = randomArray(N * K, seed + 1, 0.1);
    const w = Int4Weights.pack(weights, N, K, { groupSize: G, symmetric: seed % 2 === 0 });
    const x16 = Array.from(x, (v) => bf16Value(toBf16(v)));
    const w16 = new Float64Array(N * K);
    for (let n = 0; n < N; n++)
      for (let k = 0; k < K; k++) {
        const g = n * w.groups + Math.floor(k / G);
        w16[n * K + k] = bf16Value(toBf16(Math.fround(w.groupScales[g] * (int4Code(w, n, k) - w.zeros[g]))));
      }
    const r16 = dot64((i) => x16[i], (i) => w16[i], M, N, K);
    const sc = (i: number) => w.channelScales[i % N];
    const y16 = gemmW4A16(x, w);
    expectClose(y16, r16.sum.map((v, i) => v * sc(i)), r16.magnitude.map((v, i) => v * sc(i)), `W4A16 seed ${seed}`);
    expectBf16Of(gemmW4A16(x, w, { output: 'bf16' }), y16);
    const r32 = dot64((i) => x[i], (i) => weights[i], M, N, K);
    const y32 = gemmF32(x, { data: weights, rows: N, cols: K });
    expectClose(y32, r32.sum, r32.magnitude, `FP32 seed ${seed}`);
    expectBf16Of(gemmF32(x, { data: weights, rows: N, cols: K }, { output: 'bf16' }), y32);
  });
});

describe('async GEMMs', () => {
  it('give the same bits as the sync calls', async () => {
    const M = 5, N = 21, K = 192;
    const x = randomArray(M * K, 11);
    const weights = randomArray(N * K, 12);
    const w = Int4Weights.pack(weights, N, K, { groupSize: 64 });
    const fp8 = Fp8Weights.pack(weights, N, K);
    expect(await gemmW4A8Async(x, w)).toEqual(gemmW4A8(x, w));
    expect(await gemmW4A8Async(x, w, { output: 'bf16' })).toEqual(gemmW4A8(x, w, { output: 'bf16' }));
    expect(await gemmW8A8Async(x, fp8)).toEqual(gemmW8A8(x, fp8));
    expect(await gemmW4A16Async(x, w)).toEqual(gemmW4A16(x, w));
    expect(await gemmF32Async(x, { data: weights, rows: N, cols: K })).toEqual(gemmF32(x, { data: weights, rows: N, cols: K }));
  });

  it('run off the event loop: other callbacks run while a large GEMM computes', async () => {
    // ~8.6 GFLOP: tens of milliseconds even on the fastest backend, so the loop turns many times.
    const M = 256, N = 4096, K = 4096, G = 128;
    const codes = new Uint8Array(N * K / 2);
    for (let i = 0; i < codes.length; i += 65536) crypto.getRandomValues(codes.subarray(i, i + 65536));
    const w = Int4Weights.fromParts({
      rows: N, cols: K, groupSize: G, format: 'e4m3fn', codes, zeros: new Uint8Array(N * K / G).fill(8),
      groupScales: new Float32Array(N * K / G).fill(0.01), channelScales: new Float32Array(N).fill(1),
    });
    const x = randomArray(M * K, 14);
    const { result: y, turns } = await turnsWhile(() => gemmW4A8Async(x, w));
    expect(y.length).toBe(M * N);
    expect(turns).toBeGreaterThan(1);
  });
});
