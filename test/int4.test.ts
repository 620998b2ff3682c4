// INT4 packing: round trips, reconstruction error, and FP8 dequantization against the oracle.
import { describe, expect, it } from 'vitest';
import { Fp8Weights, Int4Weights, type GroupSize } from '../lib/index.js';
import { FORMATS, decode, encode, maxFinite } from './oracle/fp8-oracle.js';
import { dequantOracle, int4Code, randomArray } from './helpers.js';

// What a row's largest |w| maps to (int4ChannelTarget in native/quant/int4_pack.h): the format's max, halved
// with power-of-two scales in the E4M3 formats until the widest group table stays within the range.
function channelTarget(format: string, symmetric: boolean, scales: 'float' | 'pow2'): number {
  if (scales === 'float' || format === 'e5m2') return maxFinite(format as never);
  const targets: Record<string, [number, number]> = { e4m3fn: [112, 224], e4m3: [120, 60] };  // [asymmetric, symmetric]
  return targets[format][symmetric ? 1 : 0];
}

function nextFloat32(x: number): number {  // the next float32 above a positive float32 x
  const bits = new Uint32Array(new Float32Array([x]).buffer);
  bits[0] += 1;
  return new Float32Array(bits.buffer)[0];
}

describe('INT4 packing', () => {
  const cases = FORMATS.flatMap((format) =>
    ([32, 64, 128] as GroupSize[]).flatMap((groupSize) =>
      [false, true].flatMap((symmetric) => (['float', 'pow2'] as const).map((scales) => ({ format, groupSize, symmetric, scales })))));

  it.each(cases)('$format G=$groupSize symmetric=$symmetric scales=$scales: codes round-trip and dequant equals the oracle', (c) => {
    const rows = 9, cols = c.groupSize * 3;
    const seed = c.groupSize + (c.symmetric ? 1 : 0) + (c.scales === 'pow2' ? 2 : 0) + FORMATS.indexOf(c.format) * 7;
    const weights = randomArray(rows * cols, seed, 0.1);
    const w = Int4Weights.pack(weights, rows, cols, c);
    const codes = w.unpackCodes();
    for (let n = 0; n < rows; n++)
      for (let k = 0; k < cols; k++) {
        const q = codes[n * cols + k];
        expect(q).toBe(int4Code(w, n, k));
        const g = n * w.groups + Math.floor(k / c.groupSize);
        const step = w.groupScales[g];
        if (c.symmetric) expect(w.zeros[g]).toBe(8);
        if (c.scales === 'pow2') expect(Math.log2(step) % 1).toBe(0);
        // Round to nearest: within half a step of the channel-scaled weight.
        const scaled = weights[n * cols + k] / w.channelScales[n];
        expect(Math.abs(step * (q - w.zeros[g]) - scaled), `seed ${seed} n=${n} k=${k}`).toBeLessThanOrEqual(step * 0.5001);
      }
    // Repacking the unpacked codes gives the packed bytes back.
    const repacked = new Uint8Array(rows * cols / 2);
    for (let i = 0; i < codes.length; i += 2) repacked[i / 2] = codes[i] | (codes[i + 1] << 4);
    expect(repacked).toEqual(w.codes);
    expect(w.dequantize()).toEqual(dequantOracle(w));
    // Channel scales put each row into the FP8 range (with power-of-two scales, so that no group saturates).
    for (let n = 0; n < rows; n++) {
      let amax = 0;
      for (let k = 0; k < cols; k++) amax = Math.max(amax, Math.abs(weights[n * cols + k]));
      const target = channelTarget(c.format, c.symmetric, c.scales), first = Math.fround(amax / target);
      if (c.scales === 'float') expect(w.channelScales[n]).toBe(first);
      else {  // amax / s_c at most the target: s_c is amax / target, or the next float up where that rounds above it
        expect(Math.fround(amax / w.channelScales[n])).toBeLessThanOrEqual(target);
        expect([first, nextFloat32(first)]).toContain(w.channelScales[n]);
      }
    }
  });

  it('power-of-two group scales dequantize exactly in the E4M3 formats, none saturated', () => {
    for (const format of ['e4m3fn', 'e4m3'] as const)
      for (const symmetric of [false, true]) {
        const w = Int4Weights.pack(randomArray(16 * 128, 3, 2), 16, 128, { format, groupSize: 32, scales: 'pow2', symmetric });
        const w8 = w.dequantize();
        for (let n = 0; n < 16; n++)
          for (let k = 0; k < 128; k++) {
            const g = n * 4 + (k >> 5);
            const exact = w.groupScales[g] * (int4Code(w, n, k) - w.zeros[g]);
            expect(decode(w8[n * 128 + k], format)).toBe(exact);
          }
      }
  });

  it('async packing equals sync packing', async () => {
    const weights = randomArray(33 * 256, 4);
    const a = Int4Weights.pack(weights, 33, 256, { groupSize: 64 });
    const b = await Int4Weights.packAsync(weights, 33, 256, { groupSize: 64 });
    expect(b.codes).toEqual(a.codes);
    expect(b.groupScales).toEqual(a.groupScales);
    expect(b.zeros).toEqual(a.zeros);
    expect(await a.dequantizeAsync()).toEqual(a.dequantize());
  });

  it('fromParts accepts packed arrays, sharing those already held in shared memory (packed ones) and copying others', () => {
    const a = Int4Weights.pack(randomArray(4 * 64, 9), 4, 64, { groupSize: 32, format: 'e5m2' });
    const b = Int4Weights.fromParts({ ...a, groupSize: a.groupSize });
    expect(b.codes).toBe(a.codes);
    const c = Int4Weights.fromParts({ ...a, codes: a.codes.slice() });
    expect(c.codes).not.toBe(a.codes);
    expect(c.codes).toEqual(a.codes);
    expect(b.dequantize()).toEqual(a.dequantize());
  });
});

describe('FP8 weight packing', () => {
  it.each(FORMATS)('%s: per-channel scale then round to nearest even', (format) => {
    const rows = 7, cols = 45;
    const weights = randomArray(rows * cols, 8, 3);
    const w = Fp8Weights.pack(weights, rows, cols, { format });
    for (let n = 0; n < rows; n++) {
      let amax = 0;
      for (let k = 0; k < cols; k++) amax = Math.max(amax, Math.abs(weights[n * cols + k]));
      const s = Math.fround(amax / maxFinite(format));
      expect(w.channelScales[n]).toBe(s);
      for (let k = 0; k < cols; k++) expect(w.codes[n * cols + k]).toBe(encode(Math.fround(weights[n * cols + k] / s), format));
    }
  });
});
