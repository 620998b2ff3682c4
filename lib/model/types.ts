/**
 * The in-memory description of a Llama-family model, shared by the importers, the packer, the packed
 * file reader/writer and the runtime.
 *
 * Tensor names follow Hugging Face (Llama layout, `model.layers.{i}...`). In a packed W4A8 file each
 * linear layer `<name>` (e.g. `model.layers.0.self_attn.q_proj`) is stored as four tensors:
 *   `<name>.qweight`        U8  [N, Kp/2]   INT4 codes, low nibble = even k (lib/weights.ts layout)
 *   `<name>.scales`         F32 [N, Kp/G]   group scales s_g
 *   `<name>.zeros`          U8  [N, Kp/G]   zero points z (0..15)
 *   `<name>.channel_scale`  F32 [N]         per-output-channel scale s_c
 * where Kp is K rounded up to a multiple of the group size G: the extra inputs have zero weights, and
 * the runtime feeds zeros there. Qwen2's q/k/v biases stay `<name>.bias` F32 [N].
 * Embeddings (`model.embed_tokens.weight`, `lm_head.weight` unless tied) are BF16 [vocab, dim]; the
 * RMSNorm weights (`model.layers.{i}.input_layernorm.weight`, `...post_attention_layernorm.weight`,
 * `model.norm.weight`) are F32 [dim].
 */
import type { Fp8Format } from '../validate.js';

/** Architecture hyper-parameters (Hugging Face config.json names in comments). */
export interface ModelConfig {
  architecture: 'llama';
  /** hidden_size */
  dim: number;
  /** intermediate_size */
  hiddenDim: number;
  /** num_hidden_layers */
  nLayers: number;
  /** num_attention_heads */
  nHeads: number;
  /** num_key_value_heads (GQA when < nHeads) */
  nKvHeads: number;
  /** head_dim, usually dim / nHeads */
  headDim: number;
  /** vocab_size */
  vocabSize: number;
  /** max_position_embeddings */
  maxSeqLen: number;
  /** rope_theta */
  ropeTheta: number;
  /** rope_scaling (Llama 3 'llama3' type, or 'linear'); absent means none */
  ropeScaling?: RopeScaling;
  /** rms_norm_eps */
  rmsNormEps: number;
  /** tie_word_embeddings: lm_head shares model.embed_tokens.weight */
  tieEmbeddings: boolean;
  /** Qwen2: q/k/v projections have biases */
  qkvBias: boolean;
  bosTokenId?: number;
  eosTokenIds: number[];
}

export type RopeScaling =
  | { type: 'linear'; factor: number }
  | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number };

export type QuantMethod = 'rtn' | 'gptq' | 'dpq';

/** Element type of a model's KV cache (a runtime choice, not part of the packed file). */
export type KvCacheType = 'f32' | 'bf16';
export const KV_CACHE_TYPES: readonly KvCacheType[] = ['f32', 'bf16'];
/**
 * The default: BF16, like the 16-bit caches of llama.cpp (F16) and most serving engines. Half the memory per cached
 * token of FP32 (twice the sequences in the same budget) and half the bytes attention reads, with no measurable
 * accuracy cost (default model, 16,384 tokens of its test text: perplexity 14.665 against 14.683 with FP32).
 */
export const DEFAULT_KV_CACHE: KvCacheType = 'bf16';

export interface QuantConfig {
  /** FP8 format the INT4 weights dequantize into */
  weightFormat: Fp8Format;
  /** FP8 format of the activations (per-token dynamic scales) */
  activationFormat: Fp8Format;
  groupSize: 32 | 64 | 128;
  symmetric: boolean;
  scales: 'float' | 'pow2';
  method: QuantMethod;
  /**
   * 'w4a8': lm_head is packed like the linear layers (`lm_head.qweight` ..., by the same method), about a
   * quarter of the BF16 bytes a decode step reads for it. Absent: BF16 `lm_head.weight` (or the tied embedding).
   */
  lmHead?: 'w4a8';
  /** method-specific details (calibration set, damping, GAR ...), recorded for provenance */
  details?: Record<string, unknown>;
}

export type DType = 'F32' | 'F16' | 'BF16' | 'U8';

/** One tensor: data is a view (often into an mmap) whose element type matches dtype (F16/BF16: Uint16Array). */
export interface Tensor {
  dtype: DType;
  shape: number[];
  data: Float32Array | Uint16Array | Uint8Array;
}

/** A packed W4A8 model as read from (or about to be written to) a .w4a8 file. */
export interface PackedModel {
  config: ModelConfig;
  quant: QuantConfig;
  /** tokenizer.json text, when the model has a tokenizer */
  tokenizerJson?: string;
  /** tokenizer_config.json text (special tokens, chat_template) */
  tokenizerConfigJson?: string;
  /** Jinja chat template, when the model has one */
  chatTemplate?: string;
  tensors: Map<string, Tensor>;
}

/** A full-precision model as read by an importer (HF folder or llama2.c checkpoint), before packing. */
export interface SourceModel {
  config: ModelConfig;
  tokenizerJson?: string;
  tokenizerConfigJson?: string;
  chatTemplate?: string;
  /** Tensors by Hugging Face name; data F32 (importers widen F16/BF16) or BF16 as stored. */
  tensors: Map<string, Tensor>;
}

/** The linear layers of decoder layer i, by Hugging Face name. */
export function linearNames(layer: number): string[] {
  const p = `model.layers.${layer}`;
  return [
    `${p}.self_attn.q_proj`, `${p}.self_attn.k_proj`, `${p}.self_attn.v_proj`, `${p}.self_attn.o_proj`,
    `${p}.mlp.gate_proj`, `${p}.mlp.up_proj`, `${p}.mlp.down_proj`,
  ];
}
