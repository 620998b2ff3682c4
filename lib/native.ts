/**
 * Loads the compiled addon (build/Release/w4a8.node) and describes its functions. Only lib/ calls
 * these, after validating arguments; the addon re-checks sizes itself.
 */
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { W4a8Error, fromNativeError } from './errors.js';

export interface NativeInt4Weights {
  rows: number;
  cols: number;
  groupSize: number;
  format: string;
  codes: Uint8Array;
  groupScales: Float32Array;
  zeros: Uint8Array;
  channelScales: Float32Array;
  /** Optional: prepareInt4Tables(this) (the int16 W4A8 kernels' group tables); the arrays must not change after. */
  tables?: NativeInt4Tables;
}

/** Opaque: the group tables of one INT4 weight set (native/kernels/int4_tables.h). */
export type NativeInt4Tables = { readonly __int4Tables: unique symbol };

export interface NativeFp8Weights {
  rows: number;
  cols: number;
  format: string;
  codes: Uint8Array;
  channelScales: Float32Array;
}

type GemmOut = Float32Array | Uint16Array;

/** Value rules of packed tensors: zero points (Uint8Array) above 15 or not 8; scales (Float32Array) not finite and > 0; floats not finite. */
export type ValueRule = 'zero-point' | 'symmetric-zero-point' | 'scale' | 'finite';

export interface NativeAddon {
  fp8EncodeF32(values: Float32Array, out: Uint8Array, format: string, saturate: boolean): Uint8Array;
  fp8EncodeBf16(values: Uint16Array, out: Uint8Array, format: string, saturate: boolean): Uint8Array;
  fp8DecodeF32(codes: Uint8Array, out: Float32Array, format: string): Float32Array;
  fp8DecodeBf16(codes: Uint8Array, out: Uint16Array, format: string): Uint16Array;
  floatToBf16(values: Float32Array, out: Uint16Array): Uint16Array;
  packInt4(weights: Float32Array, target: NativeInt4Weights, symmetric: boolean, pow2Scales: boolean): NativeInt4Weights;
  packInt4Async(weights: Float32Array, target: NativeInt4Weights, symmetric: boolean, pow2Scales: boolean): Promise<NativeInt4Weights>;
  packFp8(weights: Float32Array, target: NativeFp8Weights): NativeFp8Weights;
  packFp8Async(weights: Float32Array, target: NativeFp8Weights): Promise<NativeFp8Weights>;
  unpackInt4(packed: Uint8Array, out: Uint8Array): Uint8Array;
  dequantInt4(weights: NativeInt4Weights, out: Uint8Array): Uint8Array;
  dequantInt4Async(weights: NativeInt4Weights, out: Uint8Array): Promise<Uint8Array>;
  quantizeActivations(x: Float32Array, rows: number, cols: number, format: string, scale: number | undefined,
    codes: Uint8Array, scales: Float32Array): void;
  /** undefined when the weights have too many distinct group tables (the kernels then build them per call). */
  prepareInt4Tables(w: NativeInt4Weights): NativeInt4Tables | undefined;
  gemmW4A8<T extends GemmOut>(x: Float32Array, M: number, w: NativeInt4Weights, actFormat: string, actScale: number | undefined, out: T): T;
  gemmW4A8Async<T extends GemmOut>(x: Float32Array, M: number, w: NativeInt4Weights, actFormat: string, actScale: number | undefined, out: T): Promise<T>;
  gemmW8A8<T extends GemmOut>(x: Float32Array, M: number, w: NativeFp8Weights, actFormat: string, actScale: number | undefined, out: T): T;
  gemmW8A8Async<T extends GemmOut>(x: Float32Array, M: number, w: NativeFp8Weights, actFormat: string, actScale: number | undefined, out: T): Promise<T>;
  gemmW4A16<T extends GemmOut>(x: Float32Array, M: number, w: NativeInt4Weights, out: T): T;
  gemmW4A16Async<T extends GemmOut>(x: Float32Array, M: number, w: NativeInt4Weights, out: T): Promise<T>;
  gemmF32<T extends GemmOut>(x: Float32Array, M: number, w: Float32Array, N: number, K: number, out: T): T;
  gemmF32Async<T extends GemmOut>(x: Float32Array, M: number, w: Float32Array, N: number, K: number, out: T): Promise<T>;
  backend(): { name: string; reason: string };
  /** The whole file mapped read-only (external ArrayBuffer, munmapped when collected); never write through it. */
  mapFile(path: string): ArrayBuffer;
  /** [index of the first element breaking `rule`, or -1] (native/addon/scan_bindings.cpp); the async form scans on a worker thread. */
  firstViolation(array: Uint8Array | Float32Array, rule: ValueRule): Float64Array;
  firstViolationAsync(array: Uint8Array | Float32Array, rule: ValueRule): Promise<Float64Array>;
  /** [log Σ e^row, ids of the topCount (<= 20) largest, largest first] (native/addon/logprob_bindings.cpp). */
  logSoftmaxTop(row: Float32Array, topCount: number): Float64Array;
  ModelHandle: new (config: object, weights: object) => NativeModelHandle;
  /** The GPU found through the CUDA plugin (model/cuda_plugin.h); resolves on a worker thread. */
  cudaDevice(): Promise<{ available: boolean; name: string; reason: string; computeCapability: string; memoryBytes: number }>;
}

/** A native Llama model (native/addon/model_bindings.cpp). */
export interface NativeModelHandle {
  createSequence(capacity: number): number;
  freeSequence(id: number): void;
  truncateSequence(id: number, length: number): void;
  sequenceLength(id: number): number;
  /**
   * One batched forward step; resolves when the logits are written: [ids.length, vocab] for each
   * sequence's last token, or [Σ counts, vocab] for every token with allPositions.
   */
  step(ids: Int32Array, counts: Int32Array, tokens: Int32Array, logits: Float32Array, allPositions?: boolean): Promise<void>;
  /**
   * Accumulate the input Hessians (H = 2 Σ xᵀx) of decoder layer `layer` in later steps; -1 stops; nLayers:
   * the lm_head's input (every token's final-norm output), as the first Hessian.
   */
  collectHessians(layer: number): void;
  /** The Hessians so far (q/k/v input, o input, gate/up input, down input), then a fresh start. */
  takeHessians(): { layer: number; tokens: number; hessians: [Float64Array, Float64Array, Float64Array, Float64Array] };
  /** Uploads the weights to the GPU and runs every later step there; only before the first sequence. */
  useDevice(device: 'cuda', options?: { fastPrefill?: boolean }): Promise<void>;
  /** Makes the CPU step's one-time tables now (on a worker thread) instead of in the first step. */
  prepareCpu(): Promise<void>;
  /** Where the steps run. */
  backend(): { device: 'cpu' | 'cuda'; name: string };
  dispose(): void;
}

let addon: NativeAddon | undefined;

/** The addon, loaded on first use; lib/ and dist/ both sit one level below the package root. */
export function native(): NativeAddon {
  if (addon) return addon;
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const file = path.join(root, 'build', 'Release', 'w4a8.node');
  try {
    addon = createRequire(import.meta.url)(file) as NativeAddon;
  } catch (error) {
    throw new W4a8Error('E_ADDON', `cannot load the native addon ${file} (run \`npm install\` to build it): ${(error as Error).message}`);
  }
  return addon;
}

/** Runs a synchronous native call, turning its errors into W4a8Error. */
export function callNative<T>(call: (addon: NativeAddon) => T): T {
  const a = native();
  try {
    return call(a);
  } catch (error) {
    throw fromNativeError(error);
  }
}

/** Runs an asynchronous native call (work on a worker thread), turning its rejections into W4a8Error. */
export async function callNativeAsync<T>(call: (addon: NativeAddon) => Promise<T>): Promise<T> {
  const a = native();
  try {
    return await call(a);
  } catch (error) {
    throw fromNativeError(error);
  }
}
