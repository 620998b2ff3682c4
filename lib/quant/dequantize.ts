/**
 * A packed model's linear layers turned back into FP32 weights, for accuracy studies:
 *   'w4a16'  s_c · bf16(fl32(s_g · (q − z)))   the W4A16 GEMM's weights (kernels.h W4A16GemmArgs)
 *   'w4a8'   s_c · fp8(fl32(s_g · (q − z)))    the W4A8 kernels' weights
 * The result is a SourceModel (padding dropped, K back to the source's), so createReferenceNativeModel
 * runs it with FP32 activations: how W4A16 is evaluated here, since the runtime has no BF16-activation
 * mode for INT4 weights. FP32 activations make it a slightly optimistic stand-in for W4A16.
 */
import { int4Layer, linearShape, allLinearNames } from '../format/layout.js';
import { bf16ToFloat, decodeFp8, encodeFp8, floatToBf16 } from '../fp8.js';
import type { PackedModel, SourceModel, Tensor } from '../model/types.js';

export function dequantizedSource(packed: PackedModel, source: SourceModel, kind: 'w4a16' | 'w4a8'): SourceModel {
  const tensors = new Map<string, Tensor>(source.tensors);
  for (const linear of allLinearNames(packed.config)) {
    const w = int4Layer(packed, linear);
    const { rows, cols: K } = linearShape(packed.config, linear);
    const codes = w.unpackCodes();
    const groups = w.cols / w.groupSize;
    const out = new Float32Array(rows * K);
    const values = new Float32Array(16);
    for (let n = 0; n < rows; n++) {
      for (let g = 0; g < groups; g++) {
        const scale = w.groupScales[n * groups + g], zero = w.zeros[n * groups + g];
        for (let q = 0; q < 16; q++) values[q] = Math.fround(scale * (q - zero));
        const rounded = kind === 'w4a16' ? bf16ToFloat(floatToBf16(values)) : decodeFp8(encodeFp8(values, w.format), w.format);
        for (let k = g * w.groupSize; k < Math.min(K, (g + 1) * w.groupSize); k++)
          out[n * K + k] = Math.fround(w.channelScales[n] * rounded[codes[n * w.cols + k]]);
      }
    }
    tensors.set(`${linear}.weight`, { dtype: 'F32', shape: [rows, K], data: out });
  }
  return { ...source, tensors };
}

