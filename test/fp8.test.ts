// FP8 conversions against the independent oracle in test/oracle: bit-exact, every format.
import { describe, expect, it } from 'vitest';
import { decodeFp8, decodeFp8ToBf16, encodeFp8, encodeFp8FromBf16, floatToBf16, bf16ToFloat, fp8FormatInfo } from '../lib/index.js';
import { FORMATS, decode, encode, maxFinite, rng, table, toBf16, bf16Value } from './oracle/fp8-oracle.js';

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);
/** The FP32 neighbours of an FP32 value x > 0. */
function nextDown(x: number): number { f32[0] = x; u32[0] -= 1; return f32[0]; }
function nextUp(x: number): number { f32[0] = x; u32[0] += 1; return f32[0]; }

function expectCodes(values: number[], format: (typeof FORMATS)[number], saturate = true): void {
  const input = new Float32Array(values);
  const got = encodeFp8(input, format, { saturate });
  for (let i = 0; i < input.length; i++) {
    const want = encode(input[i], format, saturate);
    if (got[i] !== want) expect.fail(`${format} saturate=${saturate}: encode(${input[i]}) = 0x${got[i].toString(16)}, oracle 0x${want.toString(16)}`);
  }
}

describe.each(FORMATS)('FP8 %s', (format) => {
  it('decodes all 256 codes to the values of the format definition', () => {
    const codes = Uint8Array.from({ length: 256 }, (_, i) => i);
    const got = decodeFp8(codes, format);
    const gotBf16 = decodeFp8ToBf16(codes, format);
    for (let c = 0; c < 256; c++) {
      const want = decode(c, format);
      if (Number.isNaN(want)) expect(got[c], `code ${c}`).toBeNaN();
      else expect(Object.is(got[c], Math.fround(want)) && got[c] === want, `code 0x${c.toString(16)}: ${got[c]} vs ${want}`).toBe(true);
      if (!Number.isNaN(want)) expect(bf16Value(gotBf16[c]), `bf16 code ${c}`).toBe(got[c]);
    }
    expect(fp8FormatInfo(format).maxFinite).toBe(maxFinite(format));
  });

  it('encodes every midpoint between adjacent values to the even code, and its neighbours to the nearest', () => {
    const { values, maxCode } = table(format);
    const inputs: number[] = [];
    for (let i = 0; i + 1 < values.length; i++) {
      const mid = (values[i] + values[i + 1]) / 2;
      expect(Math.fround(mid)).toBe(mid);
      inputs.push(mid, nextDown(mid), nextUp(mid), -mid, -nextDown(mid), -nextUp(mid));
    }
    expectCodes(inputs, format);
    expectCodes(inputs, format, false);
    expect(inputs.length).toBe(6 * (maxCode + 1));
  });

  it('encodes every value exactly, and the values just above and below it', () => {
    const { values, maxCode } = table(format);
    const inputs: number[] = [];
    for (let i = 1; i <= maxCode; i++) inputs.push(values[i], nextDown(values[i]), nextUp(values[i]), -values[i]);
    expectCodes(inputs, format);
    const exact = encodeFp8(new Float32Array(values.slice(0, maxCode + 1)), format);
    expect(Array.from(exact)).toEqual(Array.from({ length: maxCode + 1 }, (_, i) => i));
  });

  it('handles subnormals, zeros, max finite, overflow, infinities and NaN', () => {
    const { values, maxCode } = table(format);
    const minSub = values[1];
    const max = values[maxCode];
    const special = [0, -0, minSub / 2, minSub / 4, minSub * 0.75, minSub * 1.5, minSub * 2.5, values[8] * 0.999,
      max, -max, max * 1.01, max * 4, 1e30, -1e30, 3.4e38, Infinity, -Infinity, 1e-40, -1e-45, 1e-30];
    expectCodes(special, format);
    expectCodes(special, format, false);
    const nan = encodeFp8(new Float32Array([NaN, -NaN]), format);
    expect(Number.isNaN(decode(nan[0], format)) && Number.isNaN(decode(nan[1], format))).toBe(true);
    expect(encodeFp8(new Float32Array([-0]), format)[0]).toBe(0x80);
    expect(encodeFp8(new Float32Array([Infinity]), format)[0]).toBe(maxCode);
  });

  it('matches the oracle on 10^6 random floats (any bit pattern, and spread over the format range)', () => {
    const seed = 20261123 + FORMATS.indexOf(format);
    const random = rng(seed);
    const n = 1_000_000;
    const input = new Float32Array(n);
    const bits = new Uint32Array(input.buffer);
    const topExponent = Math.log2(maxFinite(format)) + 2;
    const bottomExponent = Math.log2(table(format).values[1]) - 3;
    for (let i = 0; i < n; i++) {
      if (i % 4 === 0) bits[i] = Math.floor(random() * 2 ** 32);
      else input[i] = (random() < 0.5 ? -1 : 1) * 2 ** (bottomExponent + random() * (topExponent - bottomExponent));
    }
    for (const saturate of [true, false]) {
      const got = encodeFp8(input, format, { saturate });
      for (let i = 0; i < n; i++) {
        const want = encode(input[i], format, saturate);
        if (got[i] !== want && !(Number.isNaN(input[i]) && Number.isNaN(decode(got[i], format))))
          expect.fail(`seed ${seed}, i=${i}: encode(${input[i]}) = 0x${got[i].toString(16)}, oracle 0x${want.toString(16)}`);
      }
    }
  });

  it('encodes BF16 input exactly like its FP32 value', () => {
    const bf16 = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const got = encodeFp8FromBf16(bf16, format);
    for (let i = 0; i < bf16.length; i++) {
      const v = bf16Value(bf16[i]);
      const want = encode(v, format);
      if (got[i] !== want && !Number.isNaN(v)) expect.fail(`bf16 0x${i.toString(16)} (${v}): 0x${got[i].toString(16)} vs 0x${want.toString(16)}`);
    }
  });
});

describe('BF16', () => {
  it('rounds FP32 to nearest even, and widens exactly', () => {
    const random = rng(5);
    const input = new Float32Array(200_000);
    const bits = new Uint32Array(input.buffer);
    for (let i = 0; i < input.length; i++) bits[i] = Math.floor(random() * 2 ** 32);
    input.set([1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 3.4e38, -3.4e38, 0, -0]);
    const got = floatToBf16(input);
    for (let i = 0; i < input.length; i++) {
      if (Number.isNaN(input[i])) { expect(bf16Value(got[i])).toBeNaN(); continue; }
      if (got[i] !== toBf16(input[i])) expect.fail(`bf16(${input[i]}) = 0x${got[i].toString(16)}, oracle 0x${toBf16(input[i]).toString(16)}`);
    }
    const back = bf16ToFloat(got);
    for (let i = 0; i < 1000; i++) if (!Number.isNaN(back[i])) expect(back[i]).toBe(bf16Value(got[i]));
  });
});
