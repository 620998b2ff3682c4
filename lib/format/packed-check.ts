/**
 * The tensors of a packed model against its config. checkPackedTensors: every tensor the layout requires
 * (layout.ts) is there with its dtype and shape, and nothing else is (an unknown tensor means a layout this
 * version does not run); only names, dtypes and shapes are looked at. checkPackedValues: the values the kernels
 * rely on, scanned natively (scan_bindings.cpp).
 */
import { W4a8Error, type W4a8ErrorCode } from '../errors.js';
import type { DType, ModelConfig, QuantConfig } from '../model/types.js';
import { callNative, callNativeAsync, type ValueRule } from '../native.js';
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

/** Where the value scans run: on a libuv worker thread (a file being opened: its mapping is ours alone), or on
 * this thread (a model about to be written: its arrays are the caller's, who could change them under a worker). */
export type ScanThread = 'worker' | 'caller';

interface Scan {
  name: string;
  data: Uint8Array | Float32Array;
  rule: ValueRule;
  code: W4a8ErrorCode;
  expected: string;
}

/**
 * The values the kernels rely on, in every packed linear layer: zero points in 0..15 (8 when symmetric), group
 * and channel scales finite and > 0 (a few percent of the file: zeros are 1/64 and scales 1/16 of the codes at
 * G = 128; the INT4 codes need no check); and the float tensors besides the scales, norms and biases (F32, a few
 * per layer), finite (a NaN in a norm makes every logit NaN). The BF16 embeddings and lm_head are not read: that
 * would page in and scan the whole vocabulary at open (over a gigabyte for 152k x 4096); a non-finite value there
 * still stops generation with E_STEP, where the sampler checks the logits. The first bad value in tensor order
 * is reported. Data of the wrong TypedArray kind is left to the writer's own checks.
 */
export async function checkPackedValues(
  config: ModelConfig, quant: QuantConfig, tensors: Map<string, { data: ArrayLike<number> }>, where: string,
  codes: { zeros: W4a8ErrorCode; scales: W4a8ErrorCode; floats: W4a8ErrorCode }, thread: ScanThread,
): Promise<void> {
  const scans: Scan[] = [];
  const add = (name: string, rule: ValueRule, code: W4a8ErrorCode, expected: string) => {
    const data = tensors.get(name)?.data;
    if (data instanceof (rule === 'zero-point' || rule === 'symmetric-zero-point' ? Uint8Array : Float32Array))
      scans.push({ name, data: data as Uint8Array | Float32Array, rule, code, expected });
  };
  for (const linear of packedLinearNames(config, quant)) {
    if (quant.symmetric) add(`${linear}.zeros`, 'symmetric-zero-point', codes.zeros, '8 (symmetric)');
    else add(`${linear}.zeros`, 'zero-point', codes.zeros, '0..15');
    for (const part of ['scales', 'channel_scale']) add(`${linear}.${part}`, 'scale', codes.scales, 'a finite scale > 0');
  }
  for (const name of tensors.keys())
    if (!name.endsWith('.scales') && !name.endsWith('.channel_scale')) add(name, 'finite', codes.floats, 'a finite value');
  // In tensor order, SCANS_IN_FLIGHT at a time on the worker threads (libuv's pool has 4 by default: a 7B model's
  // ~700 scans queued at once would hold up every other file read of the process meanwhile).
  for (let start = 0; start < scans.length; start += SCANS_IN_FLIGHT) {
    const batch = scans.slice(start, start + SCANS_IN_FLIGHT);
    const found = thread === 'worker'
      ? await Promise.all(batch.map((s) => callNativeAsync((a) => a.firstViolationAsync(s.data, s.rule)).then((r) => r[0])))
      : batch.map((s) => callNative((a) => a.firstViolation(s.data, s.rule))[0]);
    const bad = found.findIndex((i) => i >= 0);
    if (bad < 0) continue;
    const { name, data, code, expected } = batch[bad], i = found[bad];
    throw new W4a8Error(code, `${where}tensor '${name}'[${i}] is ${data[i]}, expected ${expected}`);
  }
}

const SCANS_IN_FLIGHT = 4;
