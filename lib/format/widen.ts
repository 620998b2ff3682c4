/**
 * Exact widening of 16-bit floats to FP32 (no rounding happens: every F16 and BF16 value is an FP32
 * value). F16: 1-5-10, bias 15, with subnormals, inf and NaN. BF16: the top 16 bits of an FP32.
 */
import { W4a8Error } from '../errors.js';
import type { Tensor } from '../model/types.js';

let f16Table: Float32Array | undefined;

/** FP32 value of every F16 bit pattern, built once (256 KB). */
function f16Values(): Float32Array {
  if (f16Table) return f16Table;
  f16Table = new Float32Array(65536);
  for (let bits = 0; bits < 65536; bits++) {
    const sign = bits & 0x8000 ? -1 : 1;
    const exponent = (bits >> 10) & 0x1f;
    const mantissa = bits & 0x3ff;
    f16Table[bits] = exponent === 0 ? sign * mantissa * 2 ** -24
      : exponent === 31 ? (mantissa ? NaN : sign * Infinity)
      : sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
  }
  return f16Table;
}

export function f16ToF32(bits: Uint16Array): Float32Array {
  const table = f16Values();
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = table[bits[i]];
  return out;
}

export function bf16ToF32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  const words = new Uint32Array(out.buffer);
  for (let i = 0; i < bits.length; i++) words[i] = bits[i] << 16;
  return out;
}

/** A floating-point Tensor as FP32: F32 data itself (no copy), F16/BF16 widened into a new array. */
export function tensorToFloat32(name: string, tensor: Tensor): Float32Array {
  if (tensor.dtype === 'F32' && tensor.data instanceof Float32Array) return tensor.data;
  if ((tensor.dtype === 'BF16' || tensor.dtype === 'F16') && tensor.data instanceof Uint16Array)
    return tensor.dtype === 'BF16' ? bf16ToF32(tensor.data) : f16ToF32(tensor.data);
  throw new W4a8Error('E_TYPE', `tensor '${name}' must be F32 (Float32Array), F16 or BF16 (Uint16Array), got ${tensor.dtype} ${tensor.data?.constructor?.name}`);
}
