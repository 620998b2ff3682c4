/**
 * Packed weights of one linear layer W [rows = N outputs, cols = K inputs] (DESIGN.md §1).
 *
 * Int4Weights, canonical layout:
 *   codes          Uint8Array [N * K/2]  low nibble = q[n, k] for even k, high nibble = q[n, k+1]
 *   groupScales    Float32Array [N * K/G] s_g of inputs [g*G, (g+1)*G)
 *   zeros          Uint8Array [N * K/G]   z in 0..15 (8 when symmetric)
 *   channelScales  Float32Array [N]       s_c
 * FP8 weight: w8[n,k] = fp8(fl32(s_g * (q - z))); the real weight is s_c[n] * w8[n,k].
 *
 * Fp8Weights (W8A8): codes Uint8Array [N * K] = fp8(W / s_c), channelScales Float32Array [N].
 *
 * Both are frozen and own their arrays in SharedArrayBuffers (validate.ts pinned()): nothing a caller does to
 * them (replacing a field, detaching or shrinking a buffer) can pull memory from under a kernel running on a
 * worker thread. fromParts() copies parts that are not already so held.
 */
import { W4a8Error } from './errors.js';
import { callNative, callNativeAsync, type NativeFp8Weights, type NativeInt4Weights } from './native.js';
import {
  checkBoolean, checkChoice, checkDimension, checkFinite, checkFormat, checkOptions, checkScales, checkTypedArray, pinned, pinnedArray,
  type Fp8Format,
} from './validate.js';

export type GroupSize = 32 | 64 | 128;
export const GROUP_SIZES: readonly GroupSize[] = [32, 64, 128];

export interface Int4PackOptions {
  /** Inputs per group, 32, 64 or 128 (default 128); must divide cols. */
  groupSize?: GroupSize;
  /** Symmetric packing (z = 8, s_g = amax / 7) instead of asymmetric (s_g = (max - min) / 15). Default false. */
  symmetric?: boolean;
  /** 'pow2' rounds group scales up to powers of two (hardware-aligned; exact in E4M3). Default 'float'. */
  scales?: 'float' | 'pow2';
  /** FP8 format the INT4 codes dequantize into. Default 'e4m3fn'. */
  format?: Fp8Format;
}

export interface Int4WeightsParts {
  rows: number;
  cols: number;
  groupSize: GroupSize;
  format: Fp8Format;
  codes: Uint8Array;
  groupScales: Float32Array;
  zeros: Uint8Array;
  channelScales: Float32Array;
}

function checkMatrix(weights: unknown, rows: unknown, cols: unknown): { w: Float32Array; rows: number; cols: number } {
  const r = checkDimension(rows, 'rows');
  const c = checkDimension(cols, 'cols');
  const w = checkTypedArray<Float32Array>(weights, Float32Array, 'weights', r * c);
  checkFinite(w, 'weights');
  return { w, rows: r, cols: c };
}

export class Int4Weights implements NativeInt4Weights {
  readonly rows: number;
  readonly cols: number;
  readonly groupSize: GroupSize;
  readonly format: Fp8Format;
  readonly codes: Uint8Array;
  readonly groupScales: Float32Array;
  readonly zeros: Uint8Array;
  readonly channelScales: Float32Array;

  private constructor(parts: Int4WeightsParts) {
    this.rows = parts.rows;
    this.cols = parts.cols;
    this.groupSize = parts.groupSize;
    this.format = parts.format;
    this.codes = pinned(parts.codes);
    this.groupScales = pinned(parts.groupScales);
    this.zeros = pinned(parts.zeros);
    this.channelScales = pinned(parts.channelScales);
    Object.freeze(this);
  }

  get groups(): number {
    return this.cols / this.groupSize;
  }

  /** Round-to-nearest packing of FP32 weights [rows, cols], row-major. */
  static pack(weights: Float32Array, rows: number, cols: number, options?: Int4PackOptions): Int4Weights {
    const { w, target, symmetric, pow2 } = Int4Weights.prepare(weights, rows, cols, options);
    callNative((a) => a.packInt4(w, target, symmetric, pow2));
    return target;
  }

  /** As pack(), on a worker thread. */
  static async packAsync(weights: Float32Array, rows: number, cols: number, options?: Int4PackOptions): Promise<Int4Weights> {
    const { w, target, symmetric, pow2 } = Int4Weights.prepare(weights, rows, cols, options);
    await callNativeAsync((a) => a.packInt4Async(pinned(w), target, symmetric, pow2));
    return target;
  }

  private static prepare(weights: Float32Array, rows: number, cols: number, options?: Int4PackOptions) {
    const m = checkMatrix(weights, rows, cols);
    const o = checkOptions(options, 'options');
    const groupSize = checkChoice(o.groupSize, GROUP_SIZES, 'options.groupSize', 128);
    const format = o.format === undefined ? 'e4m3fn' : checkFormat(o.format, 'options.format');
    const symmetric = checkBoolean(o.symmetric, 'options.symmetric', false);
    const pow2 = checkChoice(o.scales, ['float', 'pow2'] as const, 'options.scales', 'float') === 'pow2';
    if (m.cols % groupSize !== 0)
      throw new W4a8Error('E_GROUP', `cols (${m.cols}) must be a multiple of options.groupSize (${groupSize}); pad K with zero weights`);
    const groups = (m.rows * m.cols) / groupSize;
    const target = new Int4Weights({
      rows: m.rows, cols: m.cols, groupSize, format,
      codes: pinnedArray(Uint8Array, (m.rows * m.cols) / 2),
      groupScales: pinnedArray(Float32Array, groups),
      zeros: pinnedArray(Uint8Array, groups),
      channelScales: pinnedArray(Float32Array, m.rows),
    });
    return { w: m.w, target, symmetric, pow2 };
  }

  /** Packed weights from existing arrays (e.g. read from a model file) after checking every part; copies them (see top). */
  static fromParts(parts: Int4WeightsParts): Int4Weights {
    const p = checkOptions(parts, 'parts') as Partial<Int4WeightsParts>;
    const rows = checkDimension(p.rows, 'parts.rows');
    const cols = checkDimension(p.cols, 'parts.cols');
    const groupSize = checkChoice(p.groupSize ?? null, GROUP_SIZES, 'parts.groupSize', 128);
    if (cols % groupSize !== 0) throw new W4a8Error('E_GROUP', `parts.cols (${cols}) must be a multiple of parts.groupSize (${groupSize})`);
    const groups = (rows * cols) / groupSize;
    const zeros = checkTypedArray<Uint8Array>(p.zeros, Uint8Array, 'parts.zeros', groups);
    const bad = zeros.findIndex((z) => z > 15);
    if (bad >= 0) throw new W4a8Error('E_CODE', `parts.zeros[${bad}] must be in 0..15, got ${zeros[bad]}`);
    const groupScales = checkTypedArray<Float32Array>(p.groupScales, Float32Array, 'parts.groupScales', groups);
    const channelScales = checkTypedArray<Float32Array>(p.channelScales, Float32Array, 'parts.channelScales', rows);
    checkScales(groupScales, 'parts.groupScales');
    checkScales(channelScales, 'parts.channelScales');
    return new Int4Weights({
      rows, cols, groupSize, zeros, groupScales, channelScales,
      format: checkFormat(p.format, 'parts.format'),
      codes: checkTypedArray<Uint8Array>(p.codes, Uint8Array, 'parts.codes', (rows * cols) / 2),
    });
  }

  /** The INT4 codes, one per byte (0..15), [rows, cols]. */
  unpackCodes(): Uint8Array {
    return callNative((a) => a.unpackInt4(this.codes, new Uint8Array(this.rows * this.cols)));
  }

  /** The FP8 weights w8 = fp8(s_g * (q - z)) as codes [rows, cols] (for inspection and tests; GEMMs fuse this). */
  dequantize(): Uint8Array {
    return callNative((a) => a.dequantInt4(this, new Uint8Array(this.rows * this.cols)));
  }

  dequantizeAsync(): Promise<Uint8Array> {
    return callNativeAsync((a) => a.dequantInt4Async(this, new Uint8Array(this.rows * this.cols)));
  }
}

export interface Fp8WeightsParts {
  rows: number;
  cols: number;
  format: Fp8Format;
  codes: Uint8Array;
  channelScales: Float32Array;
}

export class Fp8Weights implements NativeFp8Weights {
  readonly rows: number;
  readonly cols: number;
  readonly format: Fp8Format;
  readonly codes: Uint8Array;
  readonly channelScales: Float32Array;

  private constructor(parts: Fp8WeightsParts) {
    this.rows = parts.rows;
    this.cols = parts.cols;
    this.format = parts.format;
    this.codes = pinned(parts.codes);
    this.channelScales = pinned(parts.channelScales);
    Object.freeze(this);
  }

  /** Per-channel scale s_c = amax / FP8_MAX, then codes = fp8(W / s_c). */
  static pack(weights: Float32Array, rows: number, cols: number, options?: { format?: Fp8Format }): Fp8Weights {
    const { w, target } = Fp8Weights.prepare(weights, rows, cols, options);
    callNative((a) => a.packFp8(w, target));
    return target;
  }

  static async packAsync(weights: Float32Array, rows: number, cols: number, options?: { format?: Fp8Format }): Promise<Fp8Weights> {
    const { w, target } = Fp8Weights.prepare(weights, rows, cols, options);
    await callNativeAsync((a) => a.packFp8Async(pinned(w), target));
    return target;
  }

  private static prepare(weights: Float32Array, rows: number, cols: number, options?: { format?: Fp8Format }) {
    const m = checkMatrix(weights, rows, cols);
    const o = checkOptions(options, 'options');
    const format = o.format === undefined ? 'e4m3fn' : checkFormat(o.format, 'options.format');
    const target = new Fp8Weights({
      rows: m.rows, cols: m.cols, format, codes: pinnedArray(Uint8Array, m.rows * m.cols), channelScales: pinnedArray(Float32Array, m.rows),
    });
    return { w: m.w, target };
  }

  static fromParts(parts: Fp8WeightsParts): Fp8Weights {
    const p = checkOptions(parts, 'parts') as Partial<Fp8WeightsParts>;
    const rows = checkDimension(p.rows, 'parts.rows');
    const cols = checkDimension(p.cols, 'parts.cols');
    const channelScales = checkTypedArray<Float32Array>(p.channelScales, Float32Array, 'parts.channelScales', rows);
    checkScales(channelScales, 'parts.channelScales');
    return new Fp8Weights({
      rows, cols, channelScales,
      format: checkFormat(p.format, 'parts.format'),
      codes: checkTypedArray<Uint8Array>(p.codes, Uint8Array, 'parts.codes', rows * cols),
    });
  }

  /** Int4 weights turned into FP8 weights (w8 codes, same s_c): W8A8 on them equals W4A8. */
  static fromInt4(weights: Int4Weights): Fp8Weights {
    if (!(weights instanceof Int4Weights)) throw new W4a8Error('E_TYPE', 'weights must be an Int4Weights');
    return new Fp8Weights({
      rows: weights.rows, cols: weights.cols, format: weights.format, codes: weights.dequantize(),
      channelScales: weights.channelScales.slice(),
    });
  }
}
