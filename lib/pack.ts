/**
 * packModel: a full-precision SourceModel -> a PackedModel (the .w4a8 layout of lib/format/layout.ts).
 *   linear layers   INT4 per group + FP32 group/channel scales, through Int4Weights.packAsync (off the
 *                   JS thread, a few layers at once); K is zero-padded up to a multiple of the group
 *                   size first (stories260K: K = 64 and 172), the runtime feeding zeros there
 *   embeddings      BF16, rounded to nearest even (`model.embed_tokens.weight`, `lm_head.weight`)
 *   lm_head         BF16, or with options.lmHead = 'w4a8' packed like a linear layer, by the same method
 *                   (from the embedding when tied; the embedding itself stays BF16)
 *   norms, biases   F32
 * Methods:
 *   rtn    round to nearest per group (no data needed)
 *   gptq   W4A8-GPTQ: Hessian-aware sweep with INT4 error feedback (lib/quant/gptq.ts)
 *   dpq    the same sweep with the composite INT4 -> FP8 quantizer (DESIGN.md §4), optionally in GAR order
 * gptq and dpq need calibration token sequences (options.calibration): the Hessians of every layer's
 * inputs are gathered layer by layer through the already-quantized layers (lib/quant/calibrate.ts).
 */
import { availableParallelism } from 'node:os';
import { W4a8Error } from './errors.js';
import { QUANT_METHODS, checkModelConfig } from './format/config.js';
import { EMBEDDING, LM_HEAD, LM_HEAD_LINEAR, linearShape, packedLinearNames, packedTensorSpecs, paddedInputs, sourceTensorShapes } from './format/layout.js';
import { tensorToFloat32 } from './format/widen.js';
import { floatToBf16 } from './fp8.js';
import type { ModelConfig, PackedModel, QuantConfig, QuantMethod, SourceModel, Tensor } from './model/types.js';
import { checkBoolean, checkChoice, checkFormat, checkOptions, firstNonFinite, type Fp8Format } from './validate.js';
import { TextTokenizer } from './model/tokenizer.js';
import { GROUP_SIZES, Int4Weights, type GroupSize } from './weights.js';
import { checkCalibrationSequences, quantizeSequential, type SequentialProgress } from './quant/calibrate.js';
import { checkDamp, type SweepOrder } from './quant/gptq.js';

export interface PackOptions {
  /** Inputs per group: 32, 64 or 128 (default 128). */
  groupSize?: GroupSize;
  /** FP8 format the INT4 weights dequantize into (default 'e4m3fn'). */
  weightFormat?: Fp8Format;
  /** FP8 format of the activations (default: weightFormat). */
  activationFormat?: Fp8Format;
  /** 'pow2': power-of-two group scales (hardware-aligned, exact in E4M3). Default 'float'. */
  scales?: 'float' | 'pow2';
  /** z = 8 and s_g = amax / 7 instead of the asymmetric min/max range. Default false. */
  symmetric?: boolean;
  /** 'rtn' (default), 'gptq' or 'dpq' (these two need `calibration`). */
  method?: QuantMethod;
  /** gptq/dpq: calibration token sequences (Int32Array or number[], each at most the model's context). */
  calibration?: readonly (Int32Array | readonly number[])[];
  /** gptq/dpq: dampening, the fraction of mean(diag H) added to diag(H) (default 0.01). */
  damp?: number;
  /** gptq/dpq: group-aware reordering of the sweep (GAR). Default false. */
  gar?: boolean;
  /**
   * gptq/dpq: plain GPTQ act-order (columns by diag H, descending) with static groups: group parameters
   * are fixed from the original weights before the sweep, so the canonical layout needs no runtime
   * gather. Not with gar. Default false.
   */
  actOrder?: boolean;
  /**
   * gptq/dpq: choose each group's scale and zero among RTN's range shrunk by 0..30%, by the least
   * Hessian-weighted error on the grid the sweep sees. Default: true for dpq, false for gptq.
   */
  scaleSearch?: boolean;
  /**
   * gptq/dpq: four calibration passes per decoder layer, so that the inputs of o, gate/up and down come
   * from the layer's own already-quantized q/k/v, o and gate/up (GPTQ's true-sequential). Default false.
   */
  trueSequential?: boolean;
  /** gptq/dpq: tokens per calibration forward step (default 8192). */
  calibrationStepTokens?: number;
  /**
   * 'w4a8': pack lm_head like the linear layers, by the same method (gptq/dpq calibrate it on the Hessian of
   * the final norm's output, after all decoder layers are quantized). A decode step then reads about a quarter
   * of the lm_head's BF16 bytes (Llama-3.2-1B-like shapes: 627 -> 536 MiB a token). Default 'bf16'.
   */
  lmHead?: 'bf16' | 'w4a8';
  /** Linear layers packed at the same time (default: min(4, CPU count)). */
  concurrency?: number;
}

export interface PackProgress {
  /** Linear layers packed so far, out of total. */
  done: number;
  total: number;
  /** The linear layer just packed, e.g. `model.layers.3.mlp.down_proj`. */
  linear: string;
  /** Its decoder layer. */
  layer: number;
  /** gptq/dpq only: the calibration pass of `layer` (sequences run so far, of total) before its linears are packed. */
  calibration?: { done: number; total: number };
}

interface CalibrationPlan {
  sequences: Int32Array[];
  damp: number;
  scaleSearch: boolean;
  trueSequential: boolean;
  order: SweepOrder;
  stepTokens: number;
}

function checkPackOptions(options: unknown): { quant: QuantConfig; concurrency: number; calibration?: Omit<CalibrationPlan, 'sequences'> & { sequences: unknown } } {
  const o = checkOptions(options, 'options');
  const weightFormat = o.weightFormat === undefined ? 'e4m3fn' : checkFormat(o.weightFormat, 'options.weightFormat');
  const quant: QuantConfig = {
    weightFormat,
    activationFormat: o.activationFormat === undefined ? weightFormat : checkFormat(o.activationFormat, 'options.activationFormat'),
    groupSize: checkChoice(o.groupSize, GROUP_SIZES, 'options.groupSize', 128),
    symmetric: checkBoolean(o.symmetric, 'options.symmetric', false),
    scales: checkChoice(o.scales, ['float', 'pow2'] as const, 'options.scales', 'float'),
    method: checkChoice(o.method, QUANT_METHODS, 'options.method', 'rtn'),
  };
  if (checkChoice(o.lmHead, ['bf16', 'w4a8'] as const, 'options.lmHead', 'bf16') === 'w4a8') quant.lmHead = 'w4a8';
  const gar = checkBoolean(o.gar, 'options.gar', false);
  const actOrder = checkBoolean(o.actOrder, 'options.actOrder', false);
  let calibration;
  if (quant.method === 'rtn') {
    for (const key of ['calibration', 'damp', 'calibrationStepTokens', 'scaleSearch', 'trueSequential'] as const)
      if (o[key] !== undefined) throw new W4a8Error('E_OPTION', `options.${key} is for gptq/dpq; method 'rtn' uses no calibration`);
    if (gar || actOrder) throw new W4a8Error('E_OPTION', `options.${gar ? 'gar' : 'actOrder'} is for gptq/dpq, not 'rtn'`);
  } else {
    if (o.calibration === undefined)
      throw new W4a8Error('E_OPTION', `options.method '${quant.method}' needs options.calibration (token sequences for the Hessians)`);
    if (gar && actOrder) throw new W4a8Error('E_OPTION', 'options.gar and options.actOrder are two column orders: choose one');
    const stepTokens = o.calibrationStepTokens === undefined ? 8192 : o.calibrationStepTokens;
    if (!Number.isInteger(stepTokens) || (stepTokens as number) < 1)
      throw new W4a8Error('E_OPTION', `options.calibrationStepTokens must be a positive integer, got ${String(stepTokens)}`);
    calibration = {
      sequences: o.calibration, damp: checkDamp(o.damp, 'options.damp'), stepTokens: stepTokens as number,
      scaleSearch: checkBoolean(o.scaleSearch, 'options.scaleSearch', quant.method === 'dpq'),
      trueSequential: checkBoolean(o.trueSequential, 'options.trueSequential', false),
      order: (gar ? 'gar' : actOrder ? 'act-order' : 'natural') as SweepOrder,
    };
  }
  const fallback = Math.max(1, Math.min(4, availableParallelism()));
  const concurrency = o.concurrency === undefined ? fallback : o.concurrency;
  if (!Number.isInteger(concurrency) || (concurrency as number) < 1 || (concurrency as number) > 64)
    throw new W4a8Error('E_OPTION', `options.concurrency must be an integer in [1, 64], got ${String(concurrency)}`);
  return { quant, concurrency: concurrency as number, calibration };
}

/** The source's tensors are exactly those its config implies, each F32/BF16/F16 with the right shape and length. */
function checkSource(source: unknown): { config: ModelConfig; tensors: Map<string, Tensor> } {
  const s = checkOptions(source, 'source') as Partial<SourceModel>;
  const config = checkModelConfig(s.config, 'source.config', 'E_OPTION');
  if (!(s.tensors instanceof Map)) throw new W4a8Error('E_TYPE', 'source.tensors must be a Map of name -> Tensor');
  const expected = sourceTensorShapes(config);
  for (const [name, shape] of expected) {
    const t = s.tensors.get(name);
    if (!t) throw new W4a8Error('E_SHAPE', `source has no tensor '${name}' [${shape.join(', ')}]`);
    const kind = t.dtype === 'F32' ? Float32Array : t.dtype === 'BF16' || t.dtype === 'F16' ? Uint16Array : undefined;
    if (!kind || !(t.data instanceof kind))
      throw new W4a8Error('E_TYPE', `source tensor '${name}' must be F32 (Float32Array), BF16 or F16 (Uint16Array), got ${t.dtype} ${t.data?.constructor?.name}`);
    if (!Array.isArray(t.shape) || t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]))
      throw new W4a8Error('E_SHAPE', `source tensor '${name}' has shape [${t.shape}], the config implies [${shape.join(', ')}]`);
    const count = shape.reduce((a, b) => a * b, 1);
    if (t.data.length !== count) throw new W4a8Error('E_LENGTH', `source tensor '${name}' must have ${count} elements, got ${t.data.length}`);
  }
  for (const name of s.tensors.keys())
    if (!expected.has(name)) throw new W4a8Error('E_SHAPE', `source has an unexpected tensor '${name}' (not implied by its config)`);
  return { config, tensors: s.tensors };
}

/** Throws when a weight is NaN or infinite (one multiply-add per value; located only on failure). */
function checkFinite(values: Float32Array, name: string, cols: number): void {
  const i = firstNonFinite(values);
  if (i >= 0) throw new W4a8Error('E_FILE', `source tensor '${name}' holds ${values[i]} at [${Math.floor(i / cols)}, ${i % cols}]`);
}

/** W [rows, cols] as FP32 [rows, Kp], the extra inputs zero (no copy when already FP32 and Kp = cols). */
function paddedWeights(name: string, tensor: Tensor, rows: number, cols: number, Kp: number): Float32Array {
  const values = tensorToFloat32(name, tensor);
  checkFinite(values, name, cols);
  if (Kp === cols) return values;
  const out = new Float32Array(rows * Kp);
  for (let n = 0; n < rows; n++) out.set(values.subarray(n * cols, (n + 1) * cols), n * Kp);
  return out;
}

/** The source tensor holding linear layer `linear`'s weights: `<linear>.weight`, or the embedding for a tied lm_head. */
function sourceWeightName(linear: string, config: ModelConfig): string {
  return linear === LM_HEAD_LINEAR && config.tieEmbeddings ? EMBEDDING : `${linear}.weight`;
}

/** RTN-packs linear layer `linear`. */
async function packLinear(linear: string, source: Map<string, Tensor>, config: ModelConfig, quant: QuantConfig): Promise<[string, Tensor][]> {
  const { rows, cols } = linearShape(config, linear);
  const Kp = paddedInputs(cols, quant.groupSize);
  const weightName = sourceWeightName(linear, config);
  const weights = paddedWeights(weightName, source.get(weightName)!, rows, cols, Kp);
  const packed = await Int4Weights.packAsync(weights, rows, Kp, {
    groupSize: quant.groupSize, symmetric: quant.symmetric, scales: quant.scales, format: quant.weightFormat,
  });
  return linearTensors(linear, packed);
}

/** The four packed tensors of a linear layer from its Int4Weights (cols = Kp). */
function linearTensors(linear: string, packed: Int4Weights): [string, Tensor][] {
  const groups = packed.cols / packed.groupSize;
  return [
    [`${linear}.qweight`, { dtype: 'U8', shape: [packed.rows, packed.cols / 2], data: packed.codes }],
    [`${linear}.scales`, { dtype: 'F32', shape: [packed.rows, groups], data: packed.groupScales }],
    [`${linear}.zeros`, { dtype: 'U8', shape: [packed.rows, groups], data: packed.zeros }],
    [`${linear}.channel_scale`, { dtype: 'F32', shape: [packed.rows], data: packed.channelScales }],
  ];
}

/** gptq / dpq: sequential calibration and quantization (lib/quant/calibrate.ts); records the details in quant. */
async function packCalibrated(source: SourceModel, sourceTensors: Map<string, Tensor>, config: ModelConfig, quant: QuantConfig,
  plan: CalibrationPlan, packed: Map<string, Tensor>, onProgress?: (progress: PackProgress) => void): Promise<void> {
  const total = config.nLayers * 7 + (quant.lmHead === 'w4a8' ? 1 : 0);
  const report = (p: SequentialProgress) => {
    if (p.stage === 'calibrate') onProgress?.({ done: p.layer * 7, total, linear: '', layer: p.layer, calibration: { done: p.done, total: p.total } });
    else onProgress?.({ done: p.done, total, linear: p.linear!, layer: p.layer });
  };
  const weightsOf = (linear: string) => {
    const { rows, cols } = linearShape(config, linear);
    const Kp = paddedInputs(cols, quant.groupSize);
    const name = sourceWeightName(linear, config);
    return { weights: paddedWeights(name, sourceTensors.get(name)!, rows, cols, Kp), rows, cols: Kp };
  };
  const method = quant.method as 'gptq' | 'dpq';
  const { linears, layers } = await quantizeSequential({ ...source, config, tensors: sourceTensors }, quant, weightsOf,
    { sequences: plan.sequences, method, order: plan.order, damp: plan.damp, searchScales: plan.scaleSearch, stepTokens: plan.stepTokens,
      trueSequential: plan.trueSequential },
    report);
  for (const [linear, weights] of linears) for (const [name, tensor] of linearTensors(linear, weights)) packed.set(name, tensor);
  const tokens = plan.sequences.reduce((sum, s) => sum + s.length, 0);
  const maxDamp = Math.max(...layers.flatMap((l) => l.linears.map((x) => x.damp)));
  quant.details = {
    calibration: { sequences: plan.sequences.length, tokens, hessians: 'sequential (layers < l quantized W4A8)' },
    damp: plan.damp, ...(maxDamp > plan.damp ? { maxDampUsed: maxDamp } : {}),
    order: plan.order, quantizer: method === 'dpq' ? 'composite s_c*fp8(s_g*(q-z))' : 'int4 s_c*s_g*(q-z)',
    scaleSearch: plan.scaleSearch, trueSequential: plan.trueSequential,
    channelScale: '2*amax/FP8_MAX',
  };
}

/**
 * Embeddings and a BF16 lm_head to BF16 (kept as is when already BF16; else rounded to nearest even), checked finite
 * here: the reader does not scan them, and a NaN would only surface as E_STEP.
 */
function toBf16(name: string, tensor: Tensor): Tensor {
  if (tensor.dtype === 'BF16') {
    const bits = tensor.data as Uint16Array;
    for (let i = 0; i < bits.length; i++)
      if ((bits[i] & 0x7f80) === 0x7f80) {
        const cols = tensor.shape[1] ?? 1;
        throw new W4a8Error('E_FILE', `source tensor '${name}' holds a non-finite value at [${Math.floor(i / cols)}, ${i % cols}]`);
      }
    return { dtype: 'BF16', shape: tensor.shape.slice(), data: tensor.data };
  }
  const values = tensorToFloat32(name, tensor);
  checkFinite(values, name, tensor.shape[1] ?? 1);
  return { dtype: 'BF16', shape: tensor.shape.slice(), data: floatToBf16(values) };
}

function toF32(name: string, tensor: Tensor): Tensor {
  return { dtype: 'F32', shape: tensor.shape.slice(), data: tensorToFloat32(name, tensor) };
}

/** Runs `tasks` with at most `limit` in flight; rejects on the first failure, after which no new task starts. */
async function runLimited(tasks: (() => Promise<void>)[], limit: number): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (next < tasks.length && !failed) {
      try {
        await tasks[next++]();
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, tasks.length) }, worker));
}

export async function packModel(
  source: SourceModel, options: PackOptions = {}, onProgress?: (progress: PackProgress) => void,
): Promise<PackedModel> {
  const { quant, concurrency, calibration } = checkPackOptions(options);
  const { config, tensors: sourceTensors } = checkSource(source);
  // The tokenizer and chat template as the model will load them: a file that packs must load (E_FILE).
  if (source.tokenizerJson !== undefined)
    TextTokenizer.fromJson(source.tokenizerJson, source.tokenizerConfigJson, source.chatTemplate).checkFitsVocabulary(config.vocabSize);
  if (onProgress !== undefined && typeof onProgress !== 'function') throw new W4a8Error('E_TYPE', 'onProgress must be a function');

  const packed = new Map<string, Tensor>();
  const linears = packedLinearNames(config, quant);
  if (calibration === undefined) {
    let done = 0;
    await runLimited(linears.map((linear) => async () => {
      for (const [name, tensor] of await packLinear(linear, sourceTensors, config, quant)) packed.set(name, tensor);
      done++;
      onProgress?.({ done, total: linears.length, linear, layer: linear === LM_HEAD_LINEAR ? config.nLayers : Number(linear.split('.')[2]) });
    }), concurrency);
  } else {
    const plan: CalibrationPlan = { ...calibration, sequences: checkCalibrationSequences(calibration.sequences, config, 'options.calibration') };
    await packCalibrated(source, sourceTensors, config, quant, plan, packed, onProgress);
  }

  for (const [name, tensor] of sourceTensors) {
    if (name === LM_HEAD && quant.lmHead === 'w4a8') continue;
    if (name === EMBEDDING || name === LM_HEAD) packed.set(name, toBf16(name, tensor));
    else if (!name.endsWith('_proj.weight')) packed.set(name, toF32(name, tensor)); // norms, biases
  }
  // Layer order, whatever order the linears finished in.
  const tensors = new Map<string, Tensor>();
  for (const name of packedTensorSpecs(config, quant.groupSize, quant.lmHead).keys()) tensors.set(name, packed.get(name)!);
  const model: PackedModel = { config, quant, tensors };
  if (source.tokenizerJson !== undefined) model.tokenizerJson = source.tokenizerJson;
  if (source.tokenizerConfigJson !== undefined) model.tokenizerConfigJson = source.tokenizerConfigJson;
  if (source.chatTemplate !== undefined) model.chatTemplate = source.chatTemplate;
  return model;
}
