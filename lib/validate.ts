/** Argument checks shared by the public API; each throws a W4a8Error naming the argument. */
import { W4a8Error } from './errors.js';

export const MAX_DIMENSION = 1 << 24;

export type Fp8Format = 'e4m3fn' | 'e4m3' | 'e5m2';
export const FP8_FORMATS: readonly Fp8Format[] = ['e4m3fn', 'e4m3', 'e5m2'];

type TypedArrayClass = Float32ArrayConstructor | Float64ArrayConstructor | Uint8ArrayConstructor | Uint16ArrayConstructor;

export function checkFormat(value: unknown, name: string): Fp8Format {
  if (typeof value === 'string' && (FP8_FORMATS as readonly string[]).includes(value)) return value as Fp8Format;
  throw new W4a8Error('E_FORMAT', `${name} must be one of ${FP8_FORMATS.map((f) => `'${f}'`).join(', ')}, got ${describe(value)}`);
}

export function checkDimension(value: unknown, name: string): number {
  if (typeof value !== 'number') throw new W4a8Error('E_TYPE', `${name} must be a number, got ${describe(value)}`);
  if (value === 0) throw new W4a8Error('E_EMPTY', `${name} must be at least 1, got 0`);
  if (!Number.isInteger(value) || value < 1 || value > MAX_DIMENSION)
    throw new W4a8Error('E_SHAPE', `${name} must be an integer in [1, ${MAX_DIMENSION}], got ${value}`);
  return value;
}

export function checkTypedArray<T extends Float32Array | Float64Array | Uint8Array | Uint16Array>(
  value: unknown, kind: TypedArrayClass, name: string, length?: number,
): T {
  // (isView as well: an object made from the prototype passes instanceof but has no elements)
  if (!(value instanceof kind) || !ArrayBuffer.isView(value))
    throw new W4a8Error('E_TYPE', `${name} must be a ${kind.name}, got ${describe(value)}`);
  if (length !== undefined && value.length !== length)
    throw new W4a8Error('E_LENGTH', `${name} must have ${length} elements, got ${value.length}`);
  if (value.length === 0) throw new W4a8Error('E_EMPTY', `${name} must not be empty`);
  return value as T;
}

type TypedArray = Float32Array | Float64Array | Uint8Array | Uint16Array;

/**
 * `array` itself when its memory is a SharedArrayBuffer that cannot shrink, else a copy in one: memory that no
 * caller can detach, resize or free while native code reads it (on a worker thread, an async call outlives the
 * caller's synchronous code). Packed weights keep their arrays this way; async calls copy what is not.
 */
export function pinned<T extends TypedArray>(array: T): T {
  const buffer = array.buffer as ArrayBufferLike & { growable?: boolean };
  if (buffer instanceof SharedArrayBuffer && !buffer.growable) return array;
  const Kind = array.constructor as new (buffer: SharedArrayBuffer) => T;
  const copy = new Kind(new SharedArrayBuffer(array.byteLength));
  copy.set(array as never);
  return copy;
}

/** A zero-filled array of `length` elements in a SharedArrayBuffer (see pinned()). */
export function pinnedArray<T extends TypedArray>(Kind: { new (buffer: SharedArrayBuffer): T; BYTES_PER_ELEMENT: number }, length: number): T {
  return new Kind(new SharedArrayBuffer(length * Kind.BYTES_PER_ELEMENT));
}

/** The index of the first NaN or infinite element, or -1 (one multiply-add a value when all are finite). */
export function firstNonFinite(values: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += values[i] * 0; // NaN as soon as one value is NaN or +-inf
  return sum === 0 ? -1 : values.findIndex((v) => !Number.isFinite(v));
}

/** Every element finite (weights to pack: a NaN would be packed as some code without a word). */
export function checkFinite(values: Float32Array, name: string): void {
  const i = firstNonFinite(values);
  if (i >= 0) throw new W4a8Error('E_VALUE', `${name}[${i}] must be finite, got ${values[i]}`);
}

export function checkScale(value: unknown, name: string): number {
  if (typeof value !== 'number') throw new W4a8Error('E_TYPE', `${name} must be a number, got ${describe(value)}`);
  if (!Number.isFinite(value) || value <= 0 || !Number.isFinite(Math.fround(value)) || Math.fround(value) === 0)
    throw new W4a8Error('E_SCALE', `${name} must be a finite FP32 number > 0, got ${value}`);
  return value;
}

/** Every element finite and > 0 (group and channel scales). */
export function checkScales(values: Float32Array, name: string): void {
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!(v > 0) || v === Infinity)
      throw new W4a8Error('E_SCALE', `${name}[${i}] must be finite and > 0, got ${v}`);
  }
}

export function checkBoolean(value: unknown, name: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw new W4a8Error('E_TYPE', `${name} must be a boolean, got ${describe(value)}`);
  return value;
}

export function checkChoice<T extends string | number>(value: unknown, choices: readonly T[], name: string, fallback: T): T {
  if (value === undefined) return fallback;
  if ((choices as readonly unknown[]).includes(value)) return value as T;
  const code = name.endsWith('groupSize') ? 'E_GROUP' : 'E_OPTION';
  throw new W4a8Error(code, `${name} must be one of ${choices.map((c) => JSON.stringify(c)).join(', ')}, got ${describe(value)}`);
}

export function checkOptions(value: unknown, name: string): Record<string, unknown> {
  if (value === undefined) return {};
  if (typeof value !== 'object' || value === null || Array.isArray(value))
    throw new W4a8Error('E_TYPE', `${name} must be an object, got ${describe(value)}`);
  return value as Record<string, unknown>;
}

/** The token count M of activations x [M, K]. */
export function tokensOf(x: unknown, K: number, name: string): number {
  const values = checkTypedArray<Float32Array>(x, Float32Array, name);
  if (values.length % K !== 0)
    throw new W4a8Error('E_SHAPE', `${name} must hold whole rows of ${K} inputs (length a multiple of ${K}), got length ${values.length}`);
  return checkDimension(values.length / K, `${name} rows`);
}

export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'string') return `'${value}'`;
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  if (ArrayBuffer.isView(value)) return `${value.constructor.name}(${(value as unknown as ArrayLike<unknown>).length ?? value.byteLength})`;
  if (Array.isArray(value)) return `Array(${value.length})`;
  return typeof value === 'object' ? (value.constructor?.name ?? 'object') : typeof value;
}
