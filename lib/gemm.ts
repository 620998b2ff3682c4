/**
 * Matrix products of activations x [M tokens, K] (FP32, row-major) with packed weights [N, K]:
 * Y [M, N] = x Wᵀ, as FP32 (Float32Array) or BF16 (Uint16Array bit patterns).
 *
 * W4A8 and W8A8 follow DESIGN.md §1: x is quantized to FP8 per token (s_x = amax / FP8_MAX) or with a
 * static per-tensor scale, Y = s_x * s_c * Σ x8 * w8 with exact products and FP32 accumulation.
 * Each function has an Async twin that runs on a worker thread and leaves the event loop free. It reads x, and
 * an FP32 matrix's data, from a copy unless they are held in a SharedArrayBuffer (validate.ts pinned()), so
 * detaching or shrinking them during the call cannot fault; packed weights hold their arrays that way already.
 * (So an FP32 matrix used with gemmF32Async more than once belongs in a SharedArrayBuffer: copying it is
 * slower than the product.)
 */
import { W4a8Error } from './errors.js';
import { callNative, callNativeAsync, type NativeFp8Weights, type NativeInt4Weights } from './native.js';
import {
  checkChoice, checkDimension, checkFormat, checkOptions, checkScale, checkTypedArray, pinned, tokensOf, type Fp8Format,
} from './validate.js';
import { Fp8Weights, Int4Weights } from './weights.js';

export type OutputType = 'fp32' | 'bf16';

export interface GemmOptions {
  /** 'fp32' (Float32Array, default) or 'bf16' (Uint16Array of BF16 bit patterns). */
  output?: OutputType;
}

export interface QuantizedGemmOptions extends GemmOptions {
  /** FP8 format of the activations; defaults to the weights' format. */
  activationFormat?: Fp8Format;
  /** Static per-tensor activation scale s_x (calibrated); per-token dynamic scaling when omitted. */
  activationScale?: number;
}

/** FP32 weights W [rows = N, cols = K] for the FP32 baseline. */
export interface Matrix {
  data: Float32Array;
  rows: number;
  cols: number;
}

interface Prepared {
  M: number;
  out: Float32Array | Uint16Array;
}

function prepareOutput(options: GemmOptions | undefined, M: number, N: number): Prepared & { o: Record<string, unknown> } {
  const o = checkOptions(options, 'options');
  const output = checkChoice(o.output, ['fp32', 'bf16'] as const, 'options.output', 'fp32');
  try {
    return { M, o, out: output === 'fp32' ? new Float32Array(M * N) : new Uint16Array(M * N) };
  } catch (error) { // RangeError: more elements than a typed array holds
    throw new W4a8Error('E_SHAPE', `the output would have ${M} x ${N} elements: ${(error as Error).message}`);
  }
}

function quantizedArgs(x: unknown, weights: NativeInt4Weights | NativeFp8Weights, options: QuantizedGemmOptions | undefined) {
  const M = tokensOf(x, weights.cols, 'x');
  const p = prepareOutput(options, M, weights.rows);
  const activationFormat = p.o.activationFormat === undefined ? weights.format as Fp8Format : checkFormat(p.o.activationFormat, 'options.activationFormat');
  const activationScale = p.o.activationScale === undefined ? undefined : checkScale(p.o.activationScale, 'options.activationScale');
  return { x: x as Float32Array, M, out: p.out, activationFormat, activationScale };
}

/**
 * The weights as a plain object for the addon: read here once, so that the addon's reads of its fields can run no
 * JS (a Proxy or getter could otherwise free memory the addon has already taken a pointer to).
 */
function checkInt4(weights: unknown): NativeInt4Weights {
  if (!(weights instanceof Int4Weights)) throw new W4a8Error('E_TYPE', 'weights must be an Int4Weights (Int4Weights.pack or Int4Weights.fromParts)');
  const { rows, cols, groupSize, format, codes, groupScales, zeros, channelScales } = weights;
  // (typed checks first: an object made from the prototype, or a Proxy, passes instanceof)
  return {
    rows, cols, groupSize, format, codes: pinned(checkTypedArray<Uint8Array>(codes, Uint8Array, 'weights.codes')),
    groupScales: pinned(checkTypedArray<Float32Array>(groupScales, Float32Array, 'weights.groupScales')),
    zeros: pinned(checkTypedArray<Uint8Array>(zeros, Uint8Array, 'weights.zeros')),
    channelScales: pinned(checkTypedArray<Float32Array>(channelScales, Float32Array, 'weights.channelScales')),
  };
}

function checkFp8(weights: unknown): NativeFp8Weights {
  if (!(weights instanceof Fp8Weights)) throw new W4a8Error('E_TYPE', 'weights must be an Fp8Weights (Fp8Weights.pack or Fp8Weights.fromParts)');
  const { rows, cols, format, codes, channelScales } = weights;
  return {
    rows, cols, format, codes: pinned(checkTypedArray<Uint8Array>(codes, Uint8Array, 'weights.codes')),
    channelScales: pinned(checkTypedArray<Float32Array>(channelScales, Float32Array, 'weights.channelScales')),
  };
}

function checkMatrix(weights: unknown): Matrix {
  const w = checkOptions(weights, 'weights') as Partial<Matrix>;
  const rows = checkDimension(w.rows, 'weights.rows');
  const cols = checkDimension(w.cols, 'weights.cols');
  return { rows, cols, data: checkTypedArray<Float32Array>(w.data, Float32Array, 'weights.data', rows * cols) };
}

/** W4A8: INT4 weights dequantized to FP8 on the fly, FP8 activations, FP32 accumulation. */
export function gemmW4A8(x: Float32Array, weights: Int4Weights, options?: QuantizedGemmOptions): Float32Array | Uint16Array {
  const w = checkInt4(weights);
  const a = quantizedArgs(x, w, options);
  return callNative((n) => n.gemmW4A8(a.x, a.M, w, a.activationFormat, a.activationScale, a.out));
}

export function gemmW4A8Async(x: Float32Array, weights: Int4Weights, options?: QuantizedGemmOptions): Promise<Float32Array | Uint16Array> {
  const w = checkInt4(weights);
  const a = quantizedArgs(x, w, options);
  return callNativeAsync((n) => n.gemmW4A8Async(pinned(a.x), a.M, w, a.activationFormat, a.activationScale, a.out));
}

/** W8A8: FP8 weights and FP8 activations, FP32 accumulation. */
export function gemmW8A8(x: Float32Array, weights: Fp8Weights, options?: QuantizedGemmOptions): Float32Array | Uint16Array {
  const w = checkFp8(weights);
  const a = quantizedArgs(x, w, options);
  return callNative((n) => n.gemmW8A8(a.x, a.M, w, a.activationFormat, a.activationScale, a.out));
}

export function gemmW8A8Async(x: Float32Array, weights: Fp8Weights, options?: QuantizedGemmOptions): Promise<Float32Array | Uint16Array> {
  const w = checkFp8(weights);
  const a = quantizedArgs(x, w, options);
  return callNativeAsync((n) => n.gemmW8A8Async(pinned(a.x), a.M, w, a.activationFormat, a.activationScale, a.out));
}

/** W4A16: INT4 weights dequantized to BF16, activations rounded to BF16, FP32 accumulation. */
export function gemmW4A16(x: Float32Array, weights: Int4Weights, options?: GemmOptions): Float32Array | Uint16Array {
  const w = checkInt4(weights);
  const M = tokensOf(x, w.cols, 'x');
  const { out } = prepareOutput(options, M, w.rows);
  return callNative((n) => n.gemmW4A16(x, M, w, out));
}

export function gemmW4A16Async(x: Float32Array, weights: Int4Weights, options?: GemmOptions): Promise<Float32Array | Uint16Array> {
  const w = checkInt4(weights);
  const M = tokensOf(x, w.cols, 'x');
  const { out } = prepareOutput(options, M, w.rows);
  return callNativeAsync((n) => n.gemmW4A16Async(pinned(x), M, w, out));
}

/** FP32 baseline: Y = x Wᵀ in FP32. */
export function gemmF32(x: Float32Array, weights: Matrix, options?: GemmOptions): Float32Array | Uint16Array {
  const w = checkMatrix(weights);
  const M = tokensOf(x, w.cols, 'x');
  const { out } = prepareOutput(options, M, w.rows);
  return callNative((n) => n.gemmF32(x, M, w.data, w.rows, w.cols, out));
}

export function gemmF32Async(x: Float32Array, weights: Matrix, options?: GemmOptions): Promise<Float32Array | Uint16Array> {
  const w = checkMatrix(weights);
  const M = tokensOf(x, w.cols, 'x');
  const { out } = prepareOutput(options, M, w.rows);
  return callNativeAsync((n) => n.gemmF32Async(pinned(x), M, pinned(w.data), w.rows, w.cols, out));
}

export interface QuantizedActivations {
  /** FP8 codes [rows, cols]. */
  codes: Uint8Array;
  /** Per-row scales s_x [rows] (all equal for a static scale). */
  scales: Float32Array;
}

/** x [rows, cols] -> FP8 codes and scales, exactly as the quantized GEMMs do it. */
export function quantizeActivations(x: Float32Array, rows: number, cols: number,
  options: { format?: Fp8Format; scale?: number } = {}): QuantizedActivations {
  const r = checkDimension(rows, 'rows');
  const c = checkDimension(cols, 'cols');
  const values = checkTypedArray<Float32Array>(x, Float32Array, 'x', r * c);
  const o = checkOptions(options, 'options');
  const format = o.format === undefined ? 'e4m3fn' : checkFormat(o.format, 'options.format');
  const scale = o.scale === undefined ? undefined : checkScale(o.scale, 'options.scale');
  const codes = new Uint8Array(r * c);
  const scales = new Float32Array(r);
  callNative((n) => n.quantizeActivations(values, r, c, format, scale, codes, scales));
  return { codes, scales };
}

/** Which kernel backend the addon runs, and why it was chosen. */
export function backend(): { name: string; reason: string } {
  return callNative((n) => n.backend());
}
