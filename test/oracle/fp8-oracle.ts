/**
 * An independent FP8 implementation written from the format definitions (OCP FP8 spec and IEEE 754
 * conventions), used as the oracle for the native code. It shares nothing with native/fp8: decode
 * computes (-1)^s * 2^(e - bias) * (1 + m / 2^M) with plain JS arithmetic, and encode searches the
 * sorted list of representable values for the nearest one (ties to the even code).
 */
export type Format = 'e4m3fn' | 'e4m3' | 'e5m2';
export const FORMATS: Format[] = ['e4m3fn', 'e4m3', 'e5m2'];

interface Spec {
  exponentBits: number;
  mantissaBits: number;
  bias: number;
  /** The all-ones exponent is reserved for inf (mantissa 0) and NaN. */
  ieee: boolean;
}

const SPECS: Record<Format, Spec> = {
  e4m3fn: { exponentBits: 4, mantissaBits: 3, bias: 7, ieee: false },
  e4m3: { exponentBits: 4, mantissaBits: 3, bias: 7, ieee: true },
  e5m2: { exponentBits: 5, mantissaBits: 2, bias: 15, ieee: true },
};

export function decode(code: number, format: Format): number {
  const { exponentBits, mantissaBits, bias, ieee } = SPECS[format];
  const sign = code & 0x80 ? -1 : 1;
  const e = (code >> mantissaBits) & ((1 << exponentBits) - 1);
  const m = code & ((1 << mantissaBits) - 1);
  const eMax = (1 << exponentBits) - 1;
  if (ieee && e === eMax) return m === 0 ? sign * Infinity : NaN;
  if (!ieee && e === eMax && m === (1 << mantissaBits) - 1) return NaN;
  if (e === 0) return sign * (m / 2 ** mantissaBits) * 2 ** (1 - bias);
  return sign * (1 + m / 2 ** mantissaBits) * 2 ** (e - bias);
}

interface Table {
  /** values[i] = decode(i) for the positive finite codes 0..maxCode, then the first value past max. */
  values: number[];
  maxCode: number;
  overflowCode: number;
}

const tables = new Map<Format, Table>();

export function table(format: Format): Table {
  let t = tables.get(format);
  if (t) return t;
  const values: number[] = [];
  for (let code = 0; code < 128 && Number.isFinite(decode(code, format)); code++) values.push(decode(code, format));
  const maxCode = values.length - 1;
  const { exponentBits, mantissaBits, bias, ieee } = SPECS[format];
  // The value the next code would have if the exponent range went on: it decides rounding at the top.
  const topExponent = (ieee ? (1 << exponentBits) - 2 : (1 << exponentBits) - 1) - bias;
  values.push(values[maxCode] + 2 ** (topExponent - mantissaBits));
  const overflowCode = ieee ? ((1 << exponentBits) - 1) << mantissaBits : 0x7f;
  t = { values, maxCode, overflowCode };
  tables.set(format, t);
  return t;
}

export function maxFinite(format: Format): number {
  const t = table(format);
  return t.values[t.maxCode];
}

/** x must be an FP32 value (Math.fround'ed). Round to nearest, ties to even code; saturating by default. */
export function encode(x: number, format: Format, saturate = true): number {
  const t = table(format);
  const sign = x < 0 || Object.is(x, -0) ? 0x80 : 0;
  if (Number.isNaN(x)) return 0x7f;
  const a = Math.abs(x);
  let index: number;
  if (a === Infinity) index = t.maxCode + 1;
  else {
    let lo = 0, hi = t.values.length - 1; // largest i with values[i] <= a (a < values[last] or clamp)
    if (a >= t.values[hi]) index = hi;
    else {
      while (hi - lo > 1) {
        const mid = (lo + hi) >> 1;
        if (t.values[mid] <= a) lo = mid;
        else hi = mid;
      }
      const below = a - t.values[lo], above = t.values[lo + 1] - a;
      index = below < above ? lo : above < below ? lo + 1 : lo % 2 === 0 ? lo : lo + 1;
    }
  }
  if (index > t.maxCode) return sign | (saturate ? t.maxCode : t.overflowCode);
  return sign | index;
}

/** FP32 -> BF16 bits, round to nearest even (computed from the value, not from the bits). */
export function toBf16(x: number): number {
  const f = new Float32Array([x]);
  const u = new Uint32Array(f.buffer)[0];
  if (Number.isNaN(x)) return ((u >>> 16) | 0x40) & 0xffff;
  const hi = u >>> 16;
  const truncated = new Float32Array(new Uint32Array([hi << 16]).buffer)[0];
  const next = new Float32Array(new Uint32Array([(hi + 1) << 16]).buffer)[0];
  // Past the largest finite BF16 the next value is 2^128 (the infinity a wider exponent would not have).
  const a = Math.abs(x), lo = Math.abs(truncated), up = Number.isFinite(next) ? Math.abs(next) : 2 ** 128;
  if (a - lo < up - a) return hi;
  if (up - a < a - lo) return (hi + 1) & 0xffff;
  return hi % 2 === 0 ? hi : (hi + 1) & 0xffff;
}

export function bf16Value(bits: number): number {
  return new Float32Array(new Uint32Array([bits << 16]).buffer)[0];
}

/** Seeded uniform [0, 1) generator (mulberry32); tests print the seed so a failure can be replayed. */
export function rng(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
