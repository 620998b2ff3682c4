// Misuse of every entry point: a W4a8Error with a specific code, never a crash. The last block calls
// the addon directly, past the TypeScript checks, to test the native second line of defence.
import { describe, expect, it } from 'vitest';
import {
  Fp8Weights, Int4Weights, W4a8Error, decodeFp8, encodeFp8, gemmF32, gemmF32Async, gemmW4A8, gemmW4A8Async, gemmW8A8,
  quantizeActivations, quantizeLinear,
} from '../lib/index.js';
import { native } from '../lib/native.js';
import { randomArray } from './helpers.js';

function expectCode(run: () => unknown, code: string, messagePart?: string): void {
  try {
    run();
  } catch (error) {
    expect(error).toBeInstanceOf(W4a8Error);
    expect((error as W4a8Error).code).toBe(code);
    if (messagePart) expect((error as Error).message).toContain(messagePart);
    return;
  }
  expect.fail(`expected a W4a8Error ${code}`);
}

function expectNativeCode(run: () => unknown, code: string): void {
  try {
    run();
  } catch (error) {
    expect((error as { code?: string }).code).toBe(code);
    return;
  }
  expect.fail(`expected a native error ${code}`);
}

const w = Int4Weights.pack(randomArray(8 * 64, 1), 8, 64, { groupSize: 32 });
const x = randomArray(2 * 64, 2);

describe('bad input gives a typed error', () => {
  it('wrong lengths', () => {
    expectCode(() => Int4Weights.pack(new Float32Array(10), 8, 64), 'E_LENGTH', 'weights');
    expectCode(() => Int4Weights.fromParts({ ...w, codes: new Uint8Array(3) }), 'E_LENGTH', 'parts.codes');
    expectCode(() => Int4Weights.fromParts({ ...w, channelScales: new Float32Array(7) }), 'E_LENGTH', 'parts.channelScales');
    expectCode(() => encodeFp8(new Float32Array(4), 'e4m3fn', { out: new Uint8Array(3) }), 'E_LENGTH', 'options.out');
    expectCode(() => quantizeActivations(new Float32Array(5), 2, 3), 'E_LENGTH', 'x');
  });

  it('activations that are not whole rows', () => {
    expectCode(() => gemmW4A8(new Float32Array(65), w), 'E_SHAPE', 'x');
  });

  it('non-TypedArrays and wrong TypedArray kinds', () => {
    expectCode(() => gemmW4A8([1, 2, 3] as unknown as Float32Array, w), 'E_TYPE', 'x');
    expectCode(() => gemmW4A8(new Float64Array(64) as unknown as Float32Array, w), 'E_TYPE', 'Float32Array');
    expectCode(() => encodeFp8('abc' as unknown as Float32Array, 'e4m3'), 'E_TYPE', 'values');
    expectCode(() => decodeFp8(new Int8Array(4) as unknown as Uint8Array, 'e4m3'), 'E_TYPE', 'codes');
    expectCode(() => gemmW4A8(x, { ...w } as unknown as Int4Weights), 'E_TYPE', 'Int4Weights');
    expectCode(() => gemmW8A8(x, w as unknown as Fp8Weights), 'E_TYPE', 'Fp8Weights');
    expectCode(() => Int4Weights.pack(x, 2, 64, { symmetric: 'yes' as unknown as boolean }), 'E_TYPE', 'options.symmetric');
    expectCode(() => gemmW4A8(x, w, 5 as unknown as object), 'E_TYPE', 'options');
  });

  it('NaN, infinite and non-positive scales', () => {
    const nanScales = w.groupScales.slice();
    nanScales[3] = NaN;
    expectCode(() => Int4Weights.fromParts({ ...w, groupScales: nanScales }), 'E_SCALE', 'parts.groupScales[3]');
    expectCode(() => Int4Weights.fromParts({ ...w, channelScales: new Float32Array(8).fill(Infinity) }), 'E_SCALE');
    expectCode(() => Fp8Weights.fromParts({ rows: 1, cols: 2, format: 'e4m3', codes: new Uint8Array(2), channelScales: new Float32Array([0]) }), 'E_SCALE');
    expectCode(() => gemmW4A8(x, w, { activationScale: NaN }), 'E_SCALE', 'options.activationScale');
    expectCode(() => gemmW4A8(x, w, { activationScale: -1 }), 'E_SCALE');
    expectCode(() => quantizeActivations(x, 2, 64, { scale: 1e-50 }), 'E_SCALE');
  });

  it('group sizes that are not 32/64/128 or do not divide K', () => {
    expectCode(() => Int4Weights.pack(randomArray(4 * 96, 3), 4, 96, { groupSize: 64 }), 'E_GROUP', 'multiple');
    expectCode(() => Int4Weights.pack(randomArray(4 * 96, 3), 4, 96, { groupSize: 48 as 32 }), 'E_GROUP', 'options.groupSize');
    expectCode(() => Int4Weights.fromParts({ ...w, groupSize: 16 as 32 }), 'E_GROUP');
  });

  it('zero points outside 0..15', () => {
    expectCode(() => Int4Weights.fromParts({ ...w, zeros: new Uint8Array(16).fill(16) }), 'E_CODE', 'parts.zeros[0]');
  });

  it('unknown formats and option values', () => {
    expectCode(() => encodeFp8(new Float32Array(2), 'e3m4' as 'e4m3'), 'E_FORMAT', "'e3m4'");
    expectCode(() => Int4Weights.pack(x, 2, 64, { format: 'fp8' as 'e4m3' }), 'E_FORMAT', 'options.format');
    expectCode(() => gemmW4A8(x, w, { activationFormat: 'E4M3' as 'e4m3' }), 'E_FORMAT', 'options.activationFormat');
    expectCode(() => gemmW4A8(x, w, { output: 'fp16' as 'bf16' }), 'E_OPTION', 'options.output');
    expectCode(() => Int4Weights.pack(x, 2, 64, { scales: 'log' as 'pow2' }), 'E_OPTION', 'options.scales');
  });

  it('zero-size and out-of-range shapes', () => {
    expectCode(() => Int4Weights.pack(new Float32Array(0), 0, 64), 'E_EMPTY', 'rows');
    expectCode(() => gemmW4A8(new Float32Array(0), w), 'E_EMPTY', 'x');
    expectCode(() => encodeFp8(new Float32Array(0), 'e4m3'), 'E_EMPTY');
    expectCode(() => gemmF32(x, { data: new Float32Array(64), rows: 1.5, cols: 64 }), 'E_SHAPE', 'weights.rows');
    expectCode(() => Int4Weights.pack(x, -2, -64), 'E_SHAPE', 'rows');
  });

  it('async calls reject with the same typed errors', async () => {
    await expect(async () => gemmW4A8Async(new Float32Array(3), w)).rejects.toMatchObject({ code: 'E_SHAPE' });
  });
});

describe('inputs changed or freed during a call cannot fault it (found by fuzzing the kernel API)', () => {
  it('an async GEMM or pack whose inputs are detached or shrunk at once still computes what was passed', async () => {
    const want = gemmW4A8(x, w);
    const detached = x.slice();
    const pending = gemmW4A8Async(detached, w);
    structuredClone(detached.buffer, { transfer: [detached.buffer] }); // x's memory handed away mid-call
    expect(detached.length).toBe(0);
    expect(await pending).toEqual(want);
    const resizable = new ArrayBuffer(x.byteLength, { maxByteLength: x.byteLength });
    const shrinking = new Float32Array(resizable);
    shrinking.set(x);
    const pending2 = gemmF32Async(shrinking, { rows: 8, cols: 64, data: randomArray(8 * 64, 3) });
    resizable.resize(0);
    expect((await pending2).length).toBe(2 * 8);
    const source = randomArray(8 * 64, 1);
    const packing = Int4Weights.packAsync(source, 8, 64, { groupSize: 32 });
    structuredClone(source.buffer, { transfer: [source.buffer] });
    expect((await packing).codes).toEqual(w.codes);
  });

  it('packed weights are frozen and hold their arrays in memory no caller can detach', () => {
    for (const weights of [w, Fp8Weights.pack(randomArray(8 * 64, 1), 8, 64), Int4Weights.fromParts({ ...w })]) {
      expect(Object.isFrozen(weights)).toBe(true);
      expect(weights.codes.buffer).toBeInstanceOf(SharedArrayBuffer);
      expect(() => structuredClone(weights.codes.buffer, { transfer: [weights.codes.buffer as never] })).toThrow();
    }
    const parts = { ...w, codes: w.codes.slice() };
    const copied = Int4Weights.fromParts(parts);
    parts.codes.fill(0); // the caller's array: not the weights' any more
    expect(copied.codes).toEqual(w.codes);
  });

  it('refuses what used to leak other errors or pass unnoticed', () => {
    expectCode(() => Int4Weights.pack(randomArray(8 * 64, 1).fill(NaN, 5, 6), 8, 64), 'E_VALUE', 'weights[5]');
    expectCode(() => Fp8Weights.pack(randomArray(8 * 64, 1).fill(Infinity, 9, 10), 8, 64), 'E_VALUE', 'weights[9]');
    expectCode(() => gemmF32(new Float32Array(2 ** 16), { rows: 2 ** 17, cols: 1, data: new Float32Array(2 ** 17) }), 'E_SHAPE', 'output');
    expectCode(() => decodeFp8(Object.create(Uint8Array.prototype), 'e4m3fn'), 'E_TYPE', 'codes');
    expectCode(() => quantizeLinear(randomArray(8 * 64, 1), 8, 64, Object.create(Float64Array.prototype), 64, { method: 'gptq', groupSize: 32 }), 'E_TYPE', 'hessian');
    expectCode(() => gemmW4A8(x, Object.create(Int4Weights.prototype)), 'E_TYPE', 'weights.codes');
    expectCode(() => gemmW8A8(x, Object.create(Fp8Weights.prototype)), 'E_TYPE', 'weights.codes');
    // A row of subnormal weights: its channel scale underflowed to 0, which fromParts refused on pack's own output.
    const tiny = new Float32Array(2 * 32).fill(1e-43);
    const packed = Int4Weights.pack(tiny, 2, 32, { groupSize: 32 });
    expect([...packed.channelScales]).toEqual([1, 1]);
    expect(() => Int4Weights.fromParts({ ...packed })).not.toThrow();
    // Decoding into memory that overlaps the codes reads them before they are overwritten.
    const codes = encodeFp8(Float32Array.of(0.5, 1, 1.5, 2), 'e4m3fn');
    const shared = new Uint8Array(32);
    shared.set(codes);
    expect([...decodeFp8(shared.subarray(0, 4), 'e4m3fn', new Float32Array(shared.buffer, 0, 4))]).toEqual([0.5, 1, 1.5, 2]);
  });
});

describe('the addon re-checks everything it is given', () => {
  const addon = native();
  const good = { rows: 8, cols: 64, groupSize: 32, format: 'e4m3fn', codes: w.codes, groupScales: w.groupScales, zeros: w.zeros, channelScales: w.channelScales };

  it('rejects short buffers instead of reading past them', () => {
    expectNativeCode(() => addon.gemmW4A8(x, 2, { ...good, codes: new Uint8Array(10) }, 'e4m3fn', undefined, new Float32Array(16)), 'E_LENGTH');
    expectNativeCode(() => addon.gemmW4A8(x, 3, good, 'e4m3fn', undefined, new Float32Array(24)), 'E_LENGTH');
    expectNativeCode(() => addon.gemmW4A8(x, 2, good, 'e4m3fn', undefined, new Float32Array(15)), 'E_LENGTH');
    expectNativeCode(() => addon.gemmF32(x, 2, new Float32Array(64), 2, 64, new Float32Array(4)), 'E_LENGTH');
    expectNativeCode(() => addon.dequantInt4(good, new Uint8Array(10)), 'E_LENGTH');
    expectNativeCode(() => addon.unpackInt4(new Uint8Array(2), new Uint8Array(8)), 'E_LENGTH');
  });

  it('rejects wrong types, shapes, formats, groups and scales', () => {
    expectNativeCode(() => addon.gemmW4A8(x, 2, { ...good, groupScales: new Float64Array(16) as unknown as Float32Array }, 'e4m3fn', undefined, new Float32Array(16)), 'E_TYPE');
    expectNativeCode(() => addon.gemmW4A8(x, 2, { ...good, rows: 2 ** 30 }, 'e4m3fn', undefined, new Float32Array(16)), 'E_SHAPE');
    expectNativeCode(() => addon.gemmW4A8(x, 2, { ...good, groupSize: 48 }, 'e4m3fn', undefined, new Float32Array(16)), 'E_GROUP');
    expectNativeCode(() => addon.gemmW4A8(x, 2, good, 'e9m9', undefined, new Float32Array(16)), 'E_FORMAT');
    expectNativeCode(() => addon.gemmW4A8(x, 2, good, 'e4m3fn', NaN, new Float32Array(16)), 'E_SCALE');
    expectNativeCode(() => addon.gemmW4A8(x, 2, null as unknown as typeof good, 'e4m3fn', undefined, new Float32Array(16)), 'E_TYPE');
    expectNativeCode(() => addon.gemmW4A8(x, 2, good, 'e4m3fn', undefined, new Int32Array(16) as unknown as Float32Array), 'E_TYPE');
  });
});
