/**
 * The tensors of a packed model against its config: every tensor the layout requires (layout.ts) is
 * there with its dtype and shape, and nothing else is (an unknown tensor means a layout this version
 * does not run). Only names, dtypes and shapes are looked at, never the data.
 */
import { W4a8Error, type W4a8ErrorCode } from '../errors.js';
import type { DType, ModelConfig, QuantConfig } from '../model/types.js';
import { firstNonFinite } from '../validate.js';
import { packedLinearNames, packedTensorCount, packedTensorSpecs } from './layout.js';

export function checkPackedTensors(
  config: ModelConfig, quant: QuantConfig, tensors: Map<string, { dtype: string; shape: number[] }>,
  where: string, code: W4a8ErrorCode,
): void {
  function fail(message: string): never {
    throw new W4a8Error(code, `${where}${message}`);
  }
  // A layer count far beyond the tensors is refused before the table of expected tensors is made: that table
  // grows with config.nLayers, which a corrupt file may set to millions. (Near misses get the exact tensor below.)
  const expected = packedTensorCount(config, quant.lmHead);
  if (expected > 2 * tensors.size + 64)
    fail(`has ${tensors.size} tensors; a ${config.nLayers}-layer model with this config and lm_head has ${expected}`);
  const specs = packedTensorSpecs(config, quant.groupSize, quant.lmHead);
  for (const [name, spec] of specs) {
    const tensor = tensors.get(name);
    if (!tensor) fail(`missing tensor '${name}' (${spec.dtype} [${spec.shape.join(', ')}])`);
    if (tensor.dtype !== spec.dtype) fail(`tensor '${name}' is ${tensor.dtype}, expected ${spec.dtype as DType}`);
    if (!sameShape(tensor.shape, spec.shape))
      fail(`tensor '${name}' has shape [${tensor.shape.join(', ')}], expected [${spec.shape.join(', ')}]`);
  }
  for (const name of tensors.keys())
    if (!specs.has(name)) fail(`unexpected tensor '${name}' (not part of a ${config.nLayers}-layer model with this config)`);
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return Array.isArray(a) && a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * The values the kernels rely on, in every packed linear layer: zero points in 0..15 (8 when
 * symmetric), group and channel scales finite and > 0. A few percent of the file (zeros are 1/64 and
 * scales 1/16 of the codes at G = 128); the INT4 codes and the embeddings need no check.
 */
export function checkPackedValues(
  config: ModelConfig, quant: QuantConfig, tensors: Map<string, { data: ArrayLike<number> }>, where: string,
  codes: { zeros: W4a8ErrorCode; scales: W4a8ErrorCode },
): void {
  for (const linear of packedLinearNames(config, quant)) {
    const zeros = tensors.get(`${linear}.zeros`)!.data;
    for (let i = 0; i < zeros.length; i++)
      if (zeros[i] > 15 || (quant.symmetric && zeros[i] !== 8))
        throw new W4a8Error(codes.zeros, `${where}tensor '${linear}.zeros'[${i}] is ${zeros[i]}, expected ${quant.symmetric ? '8 (symmetric)' : '0..15'}`);
    for (const part of ['scales', 'channel_scale']) {
      const scales = tensors.get(`${linear}.${part}`)!.data;
      for (let i = 0; i < scales.length; i++)
        if (!(scales[i] > 0 && scales[i] < Infinity))
          throw new W4a8Error(codes.scales, `${where}tensor '${linear}.${part}'[${i}] is ${scales[i]}, expected a finite scale > 0`);
    }
  }
}

/**
 * The float tensors besides the scales, norms and biases (F32, a few per layer), hold finite values (a NaN in a
 * norm makes every logit NaN). The BF16 embeddings and lm_head are not read: that would page in and scan the
 * whole vocabulary at open (over a gigabyte for 152k x 4096, on the JS thread); a non-finite value there still
 * stops generation with E_STEP, where the sampler checks the logits.
 */
export function checkPackedFloats(tensors: Map<string, { data: ArrayLike<number> }>, where: string, code: W4a8ErrorCode): void {
  for (const [name, { data }] of tensors) {
    if (!(data instanceof Float32Array) || name.endsWith('.scales') || name.endsWith('.channel_scale')) continue;
    const i = firstNonFinite(data);
    if (i >= 0) throw new W4a8Error(code, `${where}tensor '${name}'[${i}] is not finite`);
  }
}
