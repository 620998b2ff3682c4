// Seeded test data and the float64 reference products the GEMM tests compare against.
import { Int4Weights } from '../lib/index.js';
import { decode, encode, maxFinite, rng, toBf16, bf16Value, type Format } from './oracle/fp8-oracle.js';

export function randomArray(count: number, seed: number, scale = 1): Float32Array {
  const random = rng(seed);
  return Float32Array.from({ length: count }, () => (random() * 2 - 1) * scale);
}

/** Oracle activation quantization: s_x = fl32(amax / FP8_MAX), x8 = fp8(fl32(x / s_x)). */
export function quantizeRows(x: Float32Array, rows: number, cols: number, format: Format, staticScale?: number) {
  const codes = new Uint8Array(rows * cols);
  const scales = new Float32Array(rows);
  for (let m = 0; m < rows; m++) {
    let amax = 0;
    for (let k = 0; k < cols; k++) amax = Math.max(amax, Math.abs(x[m * cols + k]));
    const s = staticScale !== undefined ? Math.fround(staticScale) : amax > 0 ? Math.fround(amax / maxFinite(format)) : 1;
    scales[m] = s;
    for (let k = 0; k < cols; k++) codes[m * cols + k] = encode(Math.fround(x[m * cols + k] / s), format);
  }
  return { codes, scales };
}

/** Oracle INT4 -> FP8: w8 = fp8(fl32(s_g * (q - z))), from the packed parts. */
export function dequantOracle(w: Int4Weights): Uint8Array {
  const out = new Uint8Array(w.rows * w.cols);
  for (let n = 0; n < w.rows; n++)
    for (let k = 0; k < w.cols; k++) {
      const g = n * w.groups + Math.floor(k / w.groupSize);
      out[n * w.cols + k] = encode(Math.fround(w.groupScales[g] * (int4Code(w, n, k) - w.zeros[g])), w.format);
    }
  return out;
}

export function int4Code(w: Int4Weights, n: number, k: number): number {
  const byte = w.codes[(n * w.cols + k) >> 1];
  return k % 2 === 0 ? byte & 15 : byte >> 4;
}

/** Float64 sums Σ a[m,k] * b[n,k] and Σ |a * b| over k, [M, N] each. */
export function dot64(a: (i: number) => number, b: (i: number) => number, M: number, N: number, K: number) {
  const sum = new Float64Array(M * N);
  const magnitude = new Float64Array(M * N);
  for (let m = 0; m < M; m++)
    for (let n = 0; n < N; n++) {
      let s = 0, mag = 0;
      for (let k = 0; k < K; k++) {
        const p = a(m * K + k) * b(n * K + k);
        s += p;
        mag += Math.abs(p);
      }
      sum[m * N + n] = s;
      magnitude[m * N + n] = mag;
    }
  return { sum, magnitude };
}

export { decode, toBf16, bf16Value };
