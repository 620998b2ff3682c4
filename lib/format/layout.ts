/**
 * Which tensors a model of a given config holds, with their dtype and shape: in the source (Hugging
 * Face names, full precision) and in the packed W4A8 file. The packer, the file reader and writer
 * and the importers all check against these lists, so there is one definition of the layout.
 *
 * Linear layer `<name>` with weight W [N outputs, K inputs], group size G, Kp = ceil(K / G) * G:
 *   <name>.qweight        U8  [N, Kp/2]  INT4 codes q, two per byte: low nibble k even, high nibble k+1
 *   <name>.scales         F32 [N, Kp/G]  group scales s_g
 *   <name>.zeros          U8  [N, Kp/G]  zero points z, 0..15 (8 when symmetric)
 *   <name>.channel_scale  F32 [N]        per-output-channel scales s_c
 * Inputs K..Kp-1 were padded with zero weights; the runtime feeds zeros there.
 * A model packed with quant.lmHead = 'w4a8' has lm_head as such a linear layer (`lm_head.qweight` ...,
 * [vocab, dim]) instead of the BF16 `lm_head.weight`; the embedding stays BF16 (tied or not).
 */
import { W4a8Error } from '../errors.js';
import { linearNames, type DType, type ModelConfig, type PackedModel, type QuantConfig } from '../model/types.js';
import { Int4Weights, type GroupSize } from '../weights.js';

export interface TensorSpec {
  dtype: DType;
  shape: number[];
}

export const PACKED_PARTS = ['qweight', 'scales', 'zeros', 'channel_scale'] as const;

export const EMBEDDING = 'model.embed_tokens.weight';
export const LM_HEAD = 'lm_head.weight';
export const FINAL_NORM = 'model.norm.weight';
/** The linear-layer name of a W4A8-packed lm_head (its parts are `lm_head.qweight` ...). */
export const LM_HEAD_LINEAR = 'lm_head';

/** K rounded up to a whole number of groups. */
export function paddedInputs(K: number, groupSize: number): number {
  return Math.ceil(K / groupSize) * groupSize;
}

/** The weight shape [N, K] of a linear layer, by its Hugging Face name (`model.layers.{i}.self_attn.q_proj`). */
export function linearShape(config: ModelConfig, name: string): { rows: number; cols: number } {
  const attention = config.nHeads * config.headDim;
  const kv = config.nKvHeads * config.headDim;
  const projection = name.slice(name.lastIndexOf('.') + 1);
  switch (projection) {
    case 'q_proj': return { rows: attention, cols: config.dim };
    case 'k_proj': case 'v_proj': return { rows: kv, cols: config.dim };
    case 'o_proj': return { rows: config.dim, cols: attention };
    case 'gate_proj': case 'up_proj': return { rows: config.hiddenDim, cols: config.dim };
    case 'down_proj': return { rows: config.dim, cols: config.hiddenDim };
    case LM_HEAD_LINEAR: return { rows: config.vocabSize, cols: config.dim };
    default: throw new W4a8Error('E_OPTION', `'${name}' is not a linear layer`);
  }
}

/** Every linear layer of the model, in layer order. */
export function allLinearNames(config: ModelConfig): string[] {
  return Array.from({ length: config.nLayers }, (_, i) => linearNames(i)).flat();
}

/** Every linear layer of a packed model with this quantization: the decoder's, then lm_head when it is W4A8. */
export function packedLinearNames(config: ModelConfig, quant: Pick<QuantConfig, 'lmHead'>): string[] {
  const names = allLinearNames(config);
  if (quant.lmHead === 'w4a8') names.push(LM_HEAD_LINEAR);
  return names;
}

/** Q/K/V projections (the ones with a bias in Qwen2). */
export function hasBias(config: ModelConfig, linear: string): boolean {
  return config.qkvBias && /\.(q|k|v)_proj$/.test(linear);
}

/** How many tensors sourceTensorShapes(config) has: checked first, so a corrupt layer count cannot make a huge table. */
export function sourceTensorCount(config: ModelConfig): number {
  const perLayer = 2 + linearNames(0).length + (config.qkvBias ? 3 : 0);
  return 2 + config.nLayers * perLayer + (config.tieEmbeddings ? 0 : 1);
}

/** How many tensors packedTensorSpecs() has (each linear layer in four parts). */
export function packedTensorCount(config: ModelConfig, lmHead?: QuantConfig['lmHead']): number {
  const perLayer = 2 + PACKED_PARTS.length * linearNames(0).length + (config.qkvBias ? 3 : 0);
  const head = lmHead === 'w4a8' ? PACKED_PARTS.length : config.tieEmbeddings ? 0 : 1; // packed, none, or BF16
  return 2 + config.nLayers * perLayer + head; // (+ embeddings and the final norm)
}

/**
 * Shapes of the full-precision source tensors (Hugging Face names), in a canonical order: embeddings,
 * then per layer its norms, linear weights and biases, then the final norm and lm_head (unless tied).
 */
export function sourceTensorShapes(config: ModelConfig): Map<string, number[]> {
  const shapes = new Map<string, number[]>();
  shapes.set(EMBEDDING, [config.vocabSize, config.dim]);
  for (let i = 0; i < config.nLayers; i++) {
    shapes.set(`model.layers.${i}.input_layernorm.weight`, [config.dim]);
    shapes.set(`model.layers.${i}.post_attention_layernorm.weight`, [config.dim]);
    for (const linear of linearNames(i)) {
      const { rows, cols } = linearShape(config, linear);
      shapes.set(`${linear}.weight`, [rows, cols]);
      if (hasBias(config, linear)) shapes.set(`${linear}.bias`, [rows]);
    }
  }
  shapes.set(FINAL_NORM, [config.dim]);
  if (!config.tieEmbeddings) shapes.set(LM_HEAD, [config.vocabSize, config.dim]);
  return shapes;
}

/** The four packed parts of one linear layer. */
export function packedLinearSpecs(config: ModelConfig, linear: string, groupSize: number): Map<string, TensorSpec> {
  const { rows, cols } = linearShape(config, linear);
  const Kp = paddedInputs(cols, groupSize);
  return new Map<string, TensorSpec>([
    [`${linear}.qweight`, { dtype: 'U8', shape: [rows, Kp / 2] }],
    [`${linear}.scales`, { dtype: 'F32', shape: [rows, Kp / groupSize] }],
    [`${linear}.zeros`, { dtype: 'U8', shape: [rows, Kp / groupSize] }],
    [`${linear}.channel_scale`, { dtype: 'F32', shape: [rows] }],
  ]);
}

/**
 * Every tensor of a packed W4A8 file, in the source's canonical order: BF16 embeddings, F32 norms and biases,
 * packed linears; with lmHead 'w4a8', lm_head's four packed parts last instead of a BF16 lm_head.
 */
export function packedTensorSpecs(config: ModelConfig, groupSize: number, lmHead?: QuantConfig['lmHead']): Map<string, TensorSpec> {
  const specs = new Map<string, TensorSpec>();
  for (const [name, shape] of sourceTensorShapes(config)) {
    if (name === LM_HEAD && lmHead === 'w4a8') continue;
    if (name === EMBEDDING || name === LM_HEAD) specs.set(name, { dtype: 'BF16', shape });
    else if (name.endsWith('_proj.weight')) {
      for (const [part, spec] of packedLinearSpecs(config, name.slice(0, -'.weight'.length), groupSize)) specs.set(part, spec);
    } else specs.set(name, { dtype: 'F32', shape }); // norms and biases
  }
  if (lmHead === 'w4a8') for (const [part, spec] of packedLinearSpecs(config, LM_HEAD_LINEAR, groupSize)) specs.set(part, spec);
  return specs;
}

/**
 * The packed parts of linear layer `linear` as Int4Weights (cols = Kp), ready for the GEMMs; checks
 * zero points and scales (Int4Weights.fromParts, which copies them into memory the weights own).
 */
export function int4Layer(model: PackedModel, linear: string): Int4Weights {
  const part = (suffix: string) => {
    const tensor = model.tensors.get(`${linear}.${suffix}`);
    if (!tensor) throw new W4a8Error('E_OPTION', `model has no tensor '${linear}.${suffix}'`);
    return tensor;
  };
  const qweight = part('qweight');
  const [rows, halfCols] = qweight.shape;
  return Int4Weights.fromParts({
    rows, cols: halfCols * 2, groupSize: model.quant.groupSize as GroupSize, format: model.quant.weightFormat,
    codes: qweight.data as Uint8Array,
    groupScales: part('scales').data as Float32Array,
    zeros: part('zeros').data as Uint8Array,
    channelScales: part('channel_scale').data as Float32Array,
  });
}
