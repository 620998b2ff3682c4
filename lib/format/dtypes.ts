/**
 * safetensors element types: name -> bytes per element. Every value is stored little-endian.
 * The packed W4A8 file uses F32, BF16 and U8 (types.ts DType adds F16 for sources); the others are
 * recognised so that foreign files validate, and refused where a tensor of that type is needed.
 */
import type { DType } from '../model/types.js';

export type SafetensorsDType =
  | DType | 'F64' | 'I64' | 'I32' | 'I16' | 'I8' | 'U64' | 'U32' | 'U16' | 'BOOL' | 'F8_E4M3' | 'F8_E5M2';

export const DTYPE_SIZES: Readonly<Record<SafetensorsDType, number>> = {
  F64: 8, I64: 8, U64: 8,
  F32: 4, I32: 4, U32: 4,
  F16: 2, BF16: 2, I16: 2, U16: 2,
  U8: 1, I8: 1, BOOL: 1, F8_E4M3: 1, F8_E5M2: 1,
};

export function isSafetensorsDType(value: unknown): value is SafetensorsDType {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_SIZES, value);
}

/** The TypedArray class that holds a w4a8 DType (F16 and BF16 as raw 16-bit patterns). */
export function arrayClassOf(dtype: DType): Float32ArrayConstructor | Uint16ArrayConstructor | Uint8ArrayConstructor {
  return dtype === 'F32' ? Float32Array : dtype === 'U8' ? Uint8Array : Uint16Array;
}

/** Number of elements of a shape, or undefined when it is not a list of non-negative safe integers or overflows. */
export function elementCount(shape: unknown): number | undefined {
  if (!Array.isArray(shape)) return undefined;
  let count = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) return undefined;
    count *= d;
    if (!Number.isSafeInteger(count)) return undefined;
  }
  return count;
}
