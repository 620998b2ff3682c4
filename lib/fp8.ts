/** FP8 formats and exact bulk conversions (native/fp8/fp8.h holds the definition). */
import { callNative } from './native.js';
import { checkBoolean, checkFormat, checkOptions, checkTypedArray, type Fp8Format } from './validate.js';

export { FP8_FORMATS, type Fp8Format } from './validate.js';

export interface Fp8FormatInfo {
  name: Fp8Format;
  exponentBits: number;
  mantissaBits: number;
  bias: number;
  maxFinite: number;
  hasInfinity: boolean;
}

const FORMAT_INFO: Record<Fp8Format, Fp8FormatInfo> = {
  e4m3fn: { name: 'e4m3fn', exponentBits: 4, mantissaBits: 3, bias: 7, maxFinite: 448, hasInfinity: false },
  e4m3: { name: 'e4m3', exponentBits: 4, mantissaBits: 3, bias: 7, maxFinite: 240, hasInfinity: true },
  e5m2: { name: 'e5m2', exponentBits: 5, mantissaBits: 2, bias: 15, maxFinite: 57344, hasInfinity: true },
};

export function fp8FormatInfo(format: Fp8Format): Fp8FormatInfo {
  return { ...FORMAT_INFO[checkFormat(format, 'format')] };
}

export interface EncodeOptions {
  /** Overflow and +-inf become +-max finite (default). When false: +-inf where the format has it, else NaN. */
  saturate?: boolean;
  /** Output array to fill instead of allocating one (same length as the input). */
  out?: Uint8Array;
}

function encodeOptions(options: EncodeOptions | undefined, length: number): { saturate: boolean; out: Uint8Array } {
  const o = checkOptions(options, 'options');
  const out = o.out === undefined ? new Uint8Array(length) : checkTypedArray<Uint8Array>(o.out, Uint8Array, 'options.out', length);
  return { saturate: checkBoolean(o.saturate, 'options.saturate', true), out };
}

/** FP32 -> FP8 codes, round to nearest even. */
export function encodeFp8(values: Float32Array, format: Fp8Format, options?: EncodeOptions): Uint8Array {
  const input = checkTypedArray<Float32Array>(values, Float32Array, 'values');
  const f = checkFormat(format, 'format');
  const { saturate, out } = encodeOptions(options, input.length);
  return callNative((a) => a.fp8EncodeF32(input, out, f, saturate));
}

/** BF16 (as Uint16Array bit patterns) -> FP8 codes, round to nearest even. */
export function encodeFp8FromBf16(values: Uint16Array, format: Fp8Format, options?: EncodeOptions): Uint8Array {
  const input = checkTypedArray<Uint16Array>(values, Uint16Array, 'values');
  const f = checkFormat(format, 'format');
  const { saturate, out } = encodeOptions(options, input.length);
  return callNative((a) => a.fp8EncodeBf16(input, out, f, saturate));
}

/** `codes`, or a copy of it where it shares memory with `out` (the decoders would read what they just wrote). */
function apart(codes: Uint8Array, out: ArrayBufferView | undefined): Uint8Array {
  if (!out || out.buffer !== codes.buffer) return codes;
  const overlap = codes.byteOffset < out.byteOffset + out.byteLength && out.byteOffset < codes.byteOffset + codes.byteLength;
  return overlap ? codes.slice() : codes;
}

/** FP8 codes -> FP32, exact. */
export function decodeFp8(codes: Uint8Array, format: Fp8Format, out?: Float32Array): Float32Array {
  const input = apart(checkTypedArray<Uint8Array>(codes, Uint8Array, 'codes'), out);
  const f = checkFormat(format, 'format');
  const target = out === undefined ? new Float32Array(input.length) : checkTypedArray<Float32Array>(out, Float32Array, 'out', input.length);
  return callNative((a) => a.fp8DecodeF32(input, target, f));
}

/** FP8 codes -> BF16 bit patterns, exact (every FP8 value is a BF16 value). */
export function decodeFp8ToBf16(codes: Uint8Array, format: Fp8Format, out?: Uint16Array): Uint16Array {
  const input = apart(checkTypedArray<Uint8Array>(codes, Uint8Array, 'codes'), out);
  const f = checkFormat(format, 'format');
  const target = out === undefined ? new Uint16Array(input.length) : checkTypedArray<Uint16Array>(out, Uint16Array, 'out', input.length);
  return callNative((a) => a.fp8DecodeBf16(input, target, f));
}

/** FP32 -> BF16 bit patterns, round to nearest even. */
export function floatToBf16(values: Float32Array): Uint16Array {
  const input = checkTypedArray<Float32Array>(values, Float32Array, 'values');
  return callNative((a) => a.floatToBf16(input, new Uint16Array(input.length)));
}

/** BF16 bit patterns -> FP32, exact. */
export function bf16ToFloat(values: Uint16Array): Float32Array {
  const input = checkTypedArray<Uint16Array>(values, Uint16Array, 'values');
  const out = new Float32Array(input.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < input.length; i++) bits[i] = input[i] << 16;
  return out;
}
