/**
 * Hugging Face config.json (+ generation_config.json) -> ModelConfig, for the decoder-only models
 * that compute exactly what w4a8's Llama runtime computes: LlamaForCausalLM (Llama 2/3, TinyLlama,
 * SmolLM), MistralForCausalLM, Qwen2ForCausalLM (Llama plus q/k/v biases). Anything else, or a
 * feature the runtime does not have (another activation, o_proj/MLP biases, YaRN or dynamic RoPE
 * scaling), is refused with E_UNSUPPORTED rather than imported into a model that would compute
 * something else. A malformed value is E_FILE.
 */
import { W4a8Error } from '../errors.js';
import type { ModelConfig, RopeScaling } from '../model/types.js';
import { checkModelConfig } from '../format/config.js';
import { describe } from '../validate.js';

type Family = 'llama' | 'mistral' | 'qwen2';

const ARCHITECTURES: Readonly<Record<string, Family>> = {
  LlamaForCausalLM: 'llama',
  MistralForCausalLM: 'mistral',
  Qwen2ForCausalLM: 'qwen2',
};

/** transformers' defaults where a config.json leaves a field out. */
const DEFAULTS: Readonly<Record<Family, { rmsNormEps: number; ropeTheta: number; maxSeqLen: number }>> = {
  llama: { rmsNormEps: 1e-6, ropeTheta: 10000, maxSeqLen: 2048 },
  mistral: { rmsNormEps: 1e-6, ropeTheta: 10000, maxSeqLen: 4096 * 32 },
  qwen2: { rmsNormEps: 1e-6, ropeTheta: 10000, maxSeqLen: 32768 },
};

function family(hf: Record<string, unknown>, file: string): Family {
  const architectures = hf.architectures;
  if (Array.isArray(architectures) && architectures.length > 0) {
    const name = architectures[0];
    const found = typeof name === 'string' && Object.hasOwn(ARCHITECTURES, name) ? ARCHITECTURES[name] : undefined;
    if (!found)
      throw new W4a8Error('E_UNSUPPORTED',
        `${file}: architecture ${describe(name)} is not supported (supported: ${Object.keys(ARCHITECTURES).join(', ')})`);
    return found;
  }
  const byType: Record<string, Family> = { llama: 'llama', mistral: 'mistral', qwen2: 'qwen2' };
  const found = typeof hf.model_type === 'string' && Object.hasOwn(byType, hf.model_type) ? byType[hf.model_type] : undefined;
  if (!found)
    throw new W4a8Error('E_UNSUPPORTED', `${file}: model_type ${describe(hf.model_type)} is not supported (supported: llama, mistral, qwen2)`);
  return found;
}

function tokenIds(value: unknown): number[] {
  if (value === undefined || value === null) return [];
  return Array.isArray(value) ? value : [value as number];
}

function ropeScaling(value: unknown, file: string, field = 'rope_scaling'): RopeScaling | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'object' || Array.isArray(value)) throw new W4a8Error('E_FILE', `${file}: ${field} must be an object`);
  const o = value as Record<string, unknown>;
  const type = o.rope_type ?? o.type ?? (field === 'rope_parameters' ? 'default' : undefined);
  if (type === 'default') return undefined;
  if (type === 'linear') return { type: 'linear', factor: o.factor as number };
  if (type === 'llama3')
    return {
      type: 'llama3', factor: o.factor as number, lowFreqFactor: o.low_freq_factor as number,
      highFreqFactor: o.high_freq_factor as number, originalMaxPositionEmbeddings: o.original_max_position_embeddings as number,
    };
  throw new W4a8Error('E_UNSUPPORTED', `${file}: ${field} type ${describe(type)} is not supported (supported: linear, llama3)`);
}

/**
 * `hf` is the parsed config.json, `generation` the parsed generation_config.json when present (its
 * eos_token_id list is added: Llama 3 Instruct ends turns with <|eot_id|>, listed only there).
 */
export function configFromHuggingFace(hf: unknown, generation: unknown, file: string): ModelConfig {
  if (typeof hf !== 'object' || hf === null || Array.isArray(hf)) throw new W4a8Error('E_FILE', `${file}: not a JSON object`);
  const c = hf as Record<string, unknown>;
  const kind = family(c, file);
  const defaults = DEFAULTS[kind];
  const unsupported = (message: string): never => {
    throw new W4a8Error('E_UNSUPPORTED', `${file}: ${message}`);
  };
  const ropeParameters = c.rope_parameters as Record<string, unknown> | null | undefined;
  if (ropeParameters !== undefined && ropeParameters !== null && (typeof ropeParameters !== 'object' || Array.isArray(ropeParameters)))
    throw new W4a8Error('E_FILE', `${file}: rope_parameters must be an object`);
  const act = c.hidden_act ?? c.hidden_activation ?? 'silu';
  if (act !== 'silu') unsupported(`hidden_act ${describe(act)} is not supported (w4a8 runs SwiGLU with silu)`);
  if (c.attention_bias === true && kind !== 'qwen2') unsupported('attention_bias = true (o_proj bias) is not supported');
  if (c.mlp_bias === true) unsupported('mlp_bias = true is not supported');

  const dim = c.hidden_size as number;
  const nHeads = c.num_attention_heads as number;
  const headDim = c.head_dim ?? (Number.isInteger(dim) && Number.isInteger(nHeads) && nHeads > 0 ? dim / nHeads : undefined);
  let maxSeqLen = (c.max_position_embeddings ?? defaults.maxSeqLen) as number;
  // Sliding-window attention equals full attention up to the window: clamp the context to it.
  const slidingWindow = c.sliding_window;
  const windowed = kind === 'mistral' || (kind === 'qwen2' && c.use_sliding_window === true);
  if (windowed && typeof slidingWindow === 'number' && slidingWindow > 0 && slidingWindow < maxSeqLen) maxSeqLen = slidingWindow;

  const generationConfig = (typeof generation === 'object' && generation !== null ? generation : {}) as Record<string, unknown>;
  const eos = [...new Set([...tokenIds(c.eos_token_id), ...tokenIds(generationConfig.eos_token_id)])];
  const bos = c.bos_token_id ?? generationConfig.bos_token_id;

  const config: Record<string, unknown> = {
    architecture: 'llama',
    dim,
    hiddenDim: c.intermediate_size,
    nLayers: c.num_hidden_layers,
    nHeads,
    nKvHeads: c.num_key_value_heads ?? nHeads,
    headDim,
    vocabSize: c.vocab_size,
    maxSeqLen,
    ropeTheta: c.rope_theta ?? ropeParameters?.rope_theta ?? defaults.ropeTheta,
    rmsNormEps: c.rms_norm_eps ?? defaults.rmsNormEps,
    tieEmbeddings: c.tie_word_embeddings ?? false,
    qkvBias: kind === 'qwen2',
    eosTokenIds: eos,
  };
  // (rope_parameters: transformers v5's form, theta and scaling in one object; a missing type is 'default')
  const fromScaling = ropeScaling(c.rope_scaling, file);
  const fromParameters = ropeScaling(ropeParameters, file, 'rope_parameters');
  if (c.rope_scaling != null && ropeParameters != null && JSON.stringify(fromScaling) !== JSON.stringify(fromParameters))
    throw new W4a8Error('E_FILE', `${file}: rope_scaling and rope_parameters give different RoPE scaling`);
  const scaling = fromScaling ?? fromParameters;
  if (scaling) config.ropeScaling = scaling;
  if (bos !== undefined && bos !== null) config.bosTokenId = bos;
  try {
    return checkModelConfig(config, 'config', 'E_FILE');
  } catch (error) {
    if (!(error instanceof W4a8Error)) throw error;
    // Name the field as config.json spells it.
    const message = error.message.replace(/config\.(\w+)/g, (whole, field: string) => HF_FIELDS[field] ?? whole);
    throw new W4a8Error(error.code, `${file}: ${message}`);
  }
}

const HF_FIELDS: Readonly<Record<string, string>> = {
  dim: 'hidden_size', hiddenDim: 'intermediate_size', nLayers: 'num_hidden_layers', nHeads: 'num_attention_heads',
  nKvHeads: 'num_key_value_heads', headDim: 'head_dim', vocabSize: 'vocab_size', maxSeqLen: 'max_position_embeddings',
  ropeTheta: 'rope_theta', rmsNormEps: 'rms_norm_eps', tieEmbeddings: 'tie_word_embeddings', bosTokenId: 'bos_token_id',
  eosTokenIds: 'eos_token_id', ropeScaling: 'rope_scaling',
};
