/**
 * GPTQ and DPQ packing of one linear layer from its input Hessian (native/quant/gptq.h), and the column
 * orders of the sweep (GAR, act-order).
 *
 *   weights   Float32Array [rows, cols]  W, K padded to a multiple of the group size (zero weights)
 *   hessian   Float64Array [h, h]        H = 2 Σ xᵀx over the layer's h <= cols real inputs
 *
 * 'gptq' is W4A8-GPTQ: the sweep sees the INT4 grid s_c·s_g·(q − z) alone (the FP8 rounding the kernels
 * add at run time is left out); 'dpq' sees the composite s_c·fp8(s_g·(q − z)), exactly what the kernels
 * compute, picks the code whose composite value is nearest, and propagates that error. The result is
 * the canonical Int4Weights layout (lib/weights.ts) whatever the sweep order.
 */
import { W4a8Error } from '../errors.js';
import { callNative, callNativeAsync, native, type NativeInt4Weights } from '../native.js';
import {
  checkBoolean, checkChoice, checkDimension, checkFinite, checkFormat, checkOptions, checkTypedArray, describe, pinned, pinnedArray, type Fp8Format,
} from '../validate.js';
import { GROUP_SIZES, Int4Weights, type GroupSize } from '../weights.js';

/** 'natural': k = 0..K-1; 'gar': group-aware reordering; 'act-order': plain GPTQ act-order with static groups. */
export type SweepOrder = 'natural' | 'gar' | 'act-order';
export const SWEEP_ORDERS: readonly SweepOrder[] = ['natural', 'gar', 'act-order'];

export interface GptqLayerOptions {
  /** 'gptq' (INT4 error only) or 'dpq' (composite INT4 → FP8 error). */
  method: 'gptq' | 'dpq';
  groupSize?: GroupSize;
  symmetric?: boolean;
  scales?: 'float' | 'pow2';
  format?: Fp8Format;
  /** Sweep order (default 'natural'). */
  order?: SweepOrder;
  /** Dampening: λ = damp · mean(diag H) is added to diag(H) (default 0.01). */
  damp?: number;
  /**
   * Choose each group's (s_g, z) among RTN's range shrunk by 0..30% by the least importance-weighted
   * error on the grid the sweep sees (composite for dpq). Default: true for dpq, false for gptq.
   */
  searchScales?: boolean;
}

export interface GptqLayerResult {
  weights: Int4Weights;
  /** The dampening used: the requested one, raised ×10 until H + λI was positive definite. */
  damp: number;
  /** Σ over rows and columns of ((w − ŵ) / U_pp)²: the GPTQ objective (the output error H predicts, up to 2). */
  loss: number;
}

interface QuantAddon {
  gptqQuantize(weights: Float32Array, target: NativeInt4Weights, hessian: Float64Array, hessianSize: number,
    options: object, stats: Float64Array): NativeInt4Weights;
  gptqQuantizeAsync(weights: Float32Array, target: NativeInt4Weights, hessian: Float64Array, hessianSize: number,
    options: object, stats: Float64Array): Promise<NativeInt4Weights>;
  columnOrder(diag: Float64Array, groupSize: number, order: string): Int32Array;
}

const quantAddon = (): QuantAddon => native() as unknown as QuantAddon;

export function checkDamp(value: unknown, name: string): number {
  if (value === undefined) return 0.01;
  if (typeof value !== 'number' || !(value >= 0 && value <= 1)) throw new W4a8Error('E_OPTION', `${name} must be a number in [0, 1], got ${describe(value)}`);
  return value;
}

function prepare(weights: unknown, rows: unknown, cols: unknown, hessian: unknown, hessianSize: unknown, options: unknown) {
  const r = checkDimension(rows, 'rows');
  const c = checkDimension(cols, 'cols');
  const w = checkTypedArray<Float32Array>(weights, Float32Array, 'weights', r * c);
  checkFinite(w, 'weights');
  const h = checkDimension(hessianSize, 'hessianSize');
  if (h > c) throw new W4a8Error('E_SHAPE', `hessianSize (${h}) must be at most cols (${c}): the Hessian covers the real inputs`);
  const H = checkTypedArray<Float64Array>(hessian, Float64Array, 'hessian', h * h);
  const o = checkOptions(options, 'options');
  if (o.method === undefined) throw new W4a8Error('E_OPTION', "options.method is required: 'gptq' or 'dpq'");
  const method = checkChoice(o.method, ['gptq', 'dpq'] as const, 'options.method', 'dpq');
  const groupSize = checkChoice(o.groupSize, GROUP_SIZES, 'options.groupSize', 128);
  if (c % groupSize !== 0) throw new W4a8Error('E_GROUP', `cols (${c}) must be a multiple of options.groupSize (${groupSize}); pad K with zero weights`);
  const format = o.format === undefined ? 'e4m3fn' : checkFormat(o.format, 'options.format');
  const nativeOptions = {
    quantizer: method === 'dpq' ? 'composite' : 'int4',
    order: checkChoice(o.order, SWEEP_ORDERS, 'options.order', 'natural'),
    damp: checkDamp(o.damp, 'options.damp'),
    symmetric: checkBoolean(o.symmetric, 'options.symmetric', false),
    pow2Scales: checkChoice(o.scales, ['float', 'pow2'] as const, 'options.scales', 'float') === 'pow2',
    searchScales: checkBoolean(o.searchScales, 'options.searchScales', method === 'dpq'),
  };
  const groups = (r * c) / groupSize;
  const target: NativeInt4Weights = {
    rows: r, cols: c, groupSize, format,
    codes: pinnedArray(Uint8Array, (r * c) / 2), groupScales: pinnedArray(Float32Array, groups), zeros: pinnedArray(Uint8Array, groups),
    channelScales: pinnedArray(Float32Array, r), // (held as Int4Weights holds them: fromParts takes them without a copy)
  };
  return { w, H, h, target, nativeOptions, stats: new Float64Array(2) };
}

function result(target: NativeInt4Weights, stats: Float64Array): GptqLayerResult {
  const weights = Int4Weights.fromParts({ ...target, groupSize: target.groupSize as GroupSize, format: target.format as Fp8Format });
  return { weights, damp: stats[0], loss: stats[1] };
}

/** GPTQ / DPQ packing of W [rows, cols] with the Hessian of its first hessianSize inputs (synchronous). */
export function quantizeLinear(weights: Float32Array, rows: number, cols: number, hessian: Float64Array, hessianSize: number,
  options: GptqLayerOptions): GptqLayerResult {
  const p = prepare(weights, rows, cols, hessian, hessianSize, options);
  callNative(() => quantAddon().gptqQuantize(p.w, p.target, p.H, p.h, p.nativeOptions, p.stats));
  return result(p.target, p.stats);
}

/** As quantizeLinear, on a worker thread (the rows split over the kernel thread pool). */
export async function quantizeLinearAsync(weights: Float32Array, rows: number, cols: number, hessian: Float64Array,
  hessianSize: number, options: GptqLayerOptions): Promise<GptqLayerResult> {
  const p = prepare(weights, rows, cols, hessian, hessianSize, options);
  // (the caller's weights and Hessian read from copies: see validate.ts pinned())
  await callNativeAsync(() => quantAddon().gptqQuantizeAsync(pinned(p.w), p.target, pinned(p.H), p.h, p.nativeOptions, p.stats));
  return result(p.target, p.stats);
}

/**
 * The sweep order of the columns for a Hessian diagonal (padding: give it a negative value): order[p] is
 * the column visited at step p. 'gar' keeps every group's columns consecutive.
 */
export function columnOrder(diag: Float64Array, groupSize: GroupSize, order: 'gar' | 'act-order'): Int32Array {
  if (!(diag instanceof Float64Array) || diag.length === 0) throw new W4a8Error('E_TYPE', 'diag must be a non-empty Float64Array');
  const G = checkChoice(groupSize, GROUP_SIZES, 'groupSize', 128);
  if (diag.length % G !== 0) throw new W4a8Error('E_GROUP', `diag.length (${diag.length}) must be a multiple of groupSize (${G})`);
  const which = checkChoice(order, ['gar', 'act-order'] as const, 'order', 'gar');
  return callNative(() => quantAddon().columnOrder(diag, G, which));
}
