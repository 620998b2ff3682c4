/**
 * Sequential calibration and GPTQ / DPQ quantization of a whole model, layer by layer, as GPTQ does:
 * for decoder layer l, a native model whose layers < l are the already-quantized W4A8 layers and whose
 * layer l is FP32 (layers > l are left out: they do not change layer l's inputs) runs the calibration
 * sequences with collectHessians(l); the four Hessians of layer l's linear inputs
 *   H_qkv [dim, dim], H_o [qDim, qDim], H_gateUp [dim, dim], H_down [hidden, hidden]   (FP64, 2 Σ xᵀx)
 * then quantize its seven linears (native, threaded over rows), and the next layer starts from there.
 * Only one layer's Hessians are alive at a time. Cost: L forward passes of 1..L layers over the set.
 * With quant.lmHead 'w4a8', one more pass through all the quantized layers gives the Hessian of the lm_head's
 * input (the final norm's output, [dim, dim]) and lm_head is quantized like the others.
 */
import { W4a8Error } from '../errors.js';
import { floatToBf16 } from '../fp8.js';
import { callNative, type NativeModelHandle } from '../native.js';
import type { ModelConfig, QuantConfig, SourceModel, Tensor } from '../model/types.js';
import { linearNames } from '../model/types.js';
import { LM_HEAD_LINEAR } from '../format/layout.js';
import { tensorAsFloat32 } from '../model/native-model.js';
import type { Int4Weights } from '../weights.js';
import { quantizeLinearAsync, type SweepOrder } from './gptq.js';

export interface SequentialOptions {
  /** Calibration token sequences (each at least 1 token, at most config.maxSeqLen). */
  sequences: readonly Int32Array[];
  method: 'gptq' | 'dpq';
  order: SweepOrder;
  damp: number;
  /** Group-scale search (GptqLayerOptions.searchScales; default: on for dpq). */
  searchScales?: boolean;
  /**
   * Four calibration passes per layer instead of one: the o, gate/up and down inputs then come from this
   * layer's already-quantized q/k/v, o and gate/up (GPTQ's true-sequential). 4x the calibration time.
   */
  trueSequential?: boolean;
  /** Tokens per forward step (sequences are batched up to this; default 8192). */
  stepTokens?: number;
}

export interface SequentialProgress {
  /** 'calibrate': running the calibration set through layers 0..layer; 'quantize': one linear done. */
  stage: 'calibrate' | 'quantize';
  layer: number;
  /** calibrate: sequences run so far for this layer, of total. quantize: linears done in the model, of total. */
  done: number;
  total: number;
  /** quantize: the linear just packed. */
  linear?: string;
}

export interface LayerReport {
  layer: number;
  tokens: number;
  /** Per linear: the dampening used and the GPTQ objective Σ err². */
  linears: { name: string; damp: number; loss: number }[];
}

function float32(source: SourceModel, name: string): Float32Array {
  const t = source.tensors.get(name);
  if (!t) throw new W4a8Error('E_FILE', `the source model has no tensor ${name}`);
  return tensorAsFloat32(t, name, 'for calibration');
}

function bf16(source: SourceModel, name: string): Uint16Array {
  const t = source.tensors.get(name) as Tensor;
  return t.dtype === 'BF16' ? (t.data as Uint16Array) : floatToBf16(float32(source, name));
}

/**
 * A native model of decoder layers 0..lastLayer: quantized linears where `quantized` has them (W4A8),
 * the source's FP32 weights elsewhere; BF16 embeddings as in the packed model.
 */
export function createMixedNativeModel(source: SourceModel, quantized: ReadonlyMap<string, Int4Weights>, lastLayer: number,
  activationFormat: QuantConfig['activationFormat']): NativeModelHandle {
  const c = source.config;
  const linear = (name: string, bias: boolean) => {
    const b = bias ? float32(source, `${name}.bias`) : undefined;
    const q = quantized.get(name);
    return q ? { weights: q, bias: b } : { f32: float32(source, `${name}.weight`), bias: b };
  };
  const layers = Array.from({ length: lastLayer + 1 }, (_, i) => {
    const p = `model.layers.${i}`;
    return {
      attnNorm: float32(source, `${p}.input_layernorm.weight`), ffnNorm: float32(source, `${p}.post_attention_layernorm.weight`),
      q: linear(`${p}.self_attn.q_proj`, c.qkvBias), k: linear(`${p}.self_attn.k_proj`, c.qkvBias),
      v: linear(`${p}.self_attn.v_proj`, c.qkvBias), o: linear(`${p}.self_attn.o_proj`, false),
      gate: linear(`${p}.mlp.gate_proj`, false), up: linear(`${p}.mlp.up_proj`, false), down: linear(`${p}.mlp.down_proj`, false),
    };
  });
  const embedding = bf16(source, 'model.embed_tokens.weight');
  const weights = {
    embedding, layers, finalNorm: float32(source, 'model.norm.weight'),
    lmHead: c.tieEmbeddings ? embedding : bf16(source, 'lm_head.weight'),
  };
  const config = { ...c, nLayers: lastLayer + 1, activationFormat };
  return callNative((a) => new a.ModelHandle(config, weights));
}

/** Runs every sequence through the model once (batched up to stepTokens per step), for its side effects (Hessians). */
async function runSequences(handle: NativeModelHandle, config: ModelConfig, sequences: readonly Int32Array[], stepTokens: number,
  onSequences: (done: number) => void): Promise<void> {
  let next = 0;
  while (next < sequences.length) {
    const batch: Int32Array[] = [];
    let tokens = 0;
    while (next < sequences.length && (batch.length === 0 || tokens + sequences[next].length <= stepTokens)) {
      tokens += sequences[next].length;
      batch.push(sequences[next++]);
    }
    const ids = Int32Array.from(batch, (s) => handle.createSequence(s.length));
    try {
      const all = new Int32Array(tokens);
      let offset = 0;
      for (const s of batch) {
        all.set(s, offset);
        offset += s.length;
      }
      await handle.step(ids, Int32Array.from(batch, (s) => s.length), all, new Float32Array(batch.length * config.vocabSize));
    } finally {
      for (const id of ids) handle.freeSequence(id);
    }
    onSequences(next);
  }
}

export function checkCalibrationSequences(sequences: unknown, config: ModelConfig, name: string): Int32Array[] {
  if (!Array.isArray(sequences) || sequences.length === 0)
    throw new W4a8Error('E_OPTION', `${name} must be a non-empty array of token sequences (Int32Array or number[])`);
  return sequences.map((s, i) => {
    const ids = s instanceof Int32Array ? s : Array.isArray(s) ? Int32Array.from(s as number[]) : undefined;
    if (!ids || ids.length === 0) throw new W4a8Error('E_OPTION', `${name}[${i}] must be a non-empty Int32Array or number[]`);
    if (ids.length > config.maxSeqLen) throw new W4a8Error('E_OPTION', `${name}[${i}] has ${ids.length} tokens, more than the model's context (${config.maxSeqLen})`);
    for (let t = 0; t < ids.length; t++)
      if (!Number.isInteger(ids[t]) || ids[t] < 0 || ids[t] >= config.vocabSize)
        throw new W4a8Error('E_OPTION', `${name}[${i}][${t}] is ${ids[t]}, expected a token id in [0, ${config.vocabSize})`);
    return ids;
  });
}

/**
 * Calibrates and quantizes every linear layer of the model in order. `paddedWeights(linear)` gives W as
 * FP32 [N, Kp] (K zero-padded to the group size). Returns the packed linears and a per-layer report.
 */
export async function quantizeSequential(
  source: SourceModel, quant: QuantConfig, paddedWeights: (linear: string) => { weights: Float32Array; rows: number; cols: number },
  options: SequentialOptions, onProgress?: (p: SequentialProgress) => void,
): Promise<{ linears: Map<string, Int4Weights>; layers: LayerReport[] }> {
  const c = source.config;
  const stepTokens = options.stepTokens ?? 8192;
  const quantized = new Map<string, Int4Weights>();
  const layers: LayerReport[] = [];
  const totalLinears = c.nLayers * 7 + (quant.lmHead === 'w4a8' ? 1 : 0);
  // Which Hessian (0 qkv, 1 o, 2 gate/up, 3 down) each of the seven linears uses.
  const hessianIndex = [0, 0, 0, 1, 2, 2, 3];
  const widths = [c.dim, c.nHeads * c.headDim, c.dim, c.hiddenDim];
  // Without trueSequential one pass gives all four Hessians of a layer (layer l all FP32); with it, four
  // passes, each after the linears that feed the next input are quantized (q/k/v, then o, then gate/up).
  const stages = options.trueSequential ? [[0], [1], [2], [3]] : [[0, 1, 2, 3]];
  // The Hessians of `layer`'s inputs (nLayers: the lm_head's) through decoder layers 0..lastLayer, W4A8 where
  // `quantized` has them.
  const hessians = async (lastLayer: number, layer: number) => {
    const handle = createMixedNativeModel(source, quantized, lastLayer, quant.activationFormat);
    try {
      handle.collectHessians(layer);
      await runSequences(handle, c, options.sequences, stepTokens,
        (done) => onProgress?.({ stage: 'calibrate', layer, done, total: options.sequences.length }));
      return handle.takeHessians();
    } finally {
      handle.dispose();
    }
  };
  // Quantizes `linear` against the Hessian h of its input (`width` wide) into `quantized`, and reports it.
  const quantizeOne = async (linear: string, h: Float64Array, width: number, report: LayerReport) => {
    const { weights, rows, cols } = paddedWeights(linear);
    const result = await quantizeLinearAsync(weights, rows, cols, h, width, {
      method: options.method, order: options.order, damp: options.damp, searchScales: options.searchScales,
      groupSize: quant.groupSize, symmetric: quant.symmetric, scales: quant.scales, format: quant.weightFormat,
    });
    quantized.set(linear, result.weights);
    report.linears.push({ name: linear, damp: result.damp, loss: result.loss });
  };
  for (let l = 0; l < c.nLayers; l++) {
    const report: LayerReport = { layer: l, tokens: 0, linears: [] };
    const names = linearNames(l);
    for (const stage of stages) {
      const taken = await hessians(l, l);
      report.tokens = taken.tokens;
      for (let i = 0; i < names.length; i++) {
        if (!stage.includes(hessianIndex[i])) continue;
        await quantizeOne(names[i], taken.hessians[hessianIndex[i]], widths[hessianIndex[i]], report);
        onProgress?.({ stage: 'quantize', layer: l, done: l * 7 + i + 1, total: totalLinears, linear: names[i] });
      }
    }
    layers.push(report);
  }
  if (quant.lmHead === 'w4a8') {
    const taken = await hessians(c.nLayers - 1, c.nLayers);
    const report: LayerReport = { layer: c.nLayers, tokens: taken.tokens, linears: [] };
    await quantizeOne(LM_HEAD_LINEAR, taken.hessians[0], c.dim, report);
    layers.push(report);
    onProgress?.({ stage: 'quantize', layer: c.nLayers, done: totalLinears, total: totalLinears, linear: LM_HEAD_LINEAR });
  }
  return { linears: quantized, layers };
}
