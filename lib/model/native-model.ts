/** Builds the native model (native/addon/model_bindings.cpp) from a PackedModel's tensors, zero-copy. */
import { W4a8Error } from '../errors.js';
import { callNative, type NativeModelHandle } from '../native.js';
import type { KvCacheType, PackedModel, SourceModel, Tensor } from './types.js';

function tensor(model: PackedModel, name: string): Tensor {
  const t = model.tensors.get(name);
  if (!t) throw new W4a8Error('E_FILE', `the model has no tensor ${name}`);
  return t;
}

function linear(model: PackedModel, name: string, hasBias: boolean) {
  const codes = tensor(model, `${name}.qweight`);
  const [rows, halfCols] = codes.shape;
  return {
    weights: {
      rows, cols: halfCols * 2, groupSize: model.quant.groupSize, format: model.quant.weightFormat,
      codes: codes.data, groupScales: tensor(model, `${name}.scales`).data, zeros: tensor(model, `${name}.zeros`).data,
      channelScales: tensor(model, `${name}.channel_scale`).data,
    },
    bias: hasBias ? tensor(model, `${name}.bias`).data : undefined,
  };
}

/** The native model of a packed file; kvCache: the CPU KV cache's element type. */
export function createNativeModel(model: PackedModel, kvCache: KvCacheType = 'f32'): NativeModelHandle {
  const c = model.config;
  const layers = Array.from({ length: c.nLayers }, (_, i) => {
    const p = `model.layers.${i}`;
    return {
      attnNorm: tensor(model, `${p}.input_layernorm.weight`).data,
      ffnNorm: tensor(model, `${p}.post_attention_layernorm.weight`).data,
      q: linear(model, `${p}.self_attn.q_proj`, c.qkvBias),
      k: linear(model, `${p}.self_attn.k_proj`, c.qkvBias),
      v: linear(model, `${p}.self_attn.v_proj`, c.qkvBias),
      o: linear(model, `${p}.self_attn.o_proj`, false),
      gate: linear(model, `${p}.mlp.gate_proj`, false),
      up: linear(model, `${p}.mlp.up_proj`, false),
      down: linear(model, `${p}.mlp.down_proj`, false),
    };
  });
  const embedding = tensor(model, 'model.embed_tokens.weight').data;
  // lm_head: W4A8 parts (quant.lmHead 'w4a8'), else BF16 (the embedding when tied).
  const head = model.quant.lmHead === 'w4a8'
    ? { lmHeadInt4: linear(model, 'lm_head', false) }
    : { lmHead: c.tieEmbeddings ? embedding : tensor(model, 'lm_head.weight').data };
  const weights = { embedding, layers, finalNorm: tensor(model, 'model.norm.weight').data, ...head };
  const config = { ...c, activationFormat: model.quant.activationFormat, kvCache };
  return callNative((a) => new a.ModelHandle(config, weights));
}

/** A source tensor as FP32 (BF16 widened exactly); `use` ends the error for other dtypes ("for calibration"). */
export function tensorAsFloat32(t: Tensor, name: string, use = 'for the FP32 reference'): Float32Array {
  if (t.dtype === 'F32') return t.data as Float32Array;
  if (t.dtype === 'BF16') {
    const out = new Float32Array(t.data.length);
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < out.length; i++) bits[i] = t.data[i] << 16;
    return out;
  }
  throw new W4a8Error('E_FILE', `${name} must be F32 or BF16 ${use}, got ${t.dtype}`);
}

/**
 * The full-precision model (FP32 linear layers, embeddings and lm_head) of an unpacked source: the
 * reference that calibration (input Hessians) and evaluation (KL divergence, top-1 agreement) compare with.
 */
export function createReferenceNativeModel(source: SourceModel, kvCache: KvCacheType = 'f32'): NativeModelHandle {
  const c = source.config;
  const get = (name: string) => {
    const t = source.tensors.get(name);
    if (!t) throw new W4a8Error('E_FILE', `the source model has no tensor ${name}`);
    return tensorAsFloat32(t, name);
  };
  const linear = (name: string, hasBias: boolean) => ({ f32: get(`${name}.weight`), bias: hasBias ? get(`${name}.bias`) : undefined });
  const layers = Array.from({ length: c.nLayers }, (_, i) => {
    const p = `model.layers.${i}`;
    return {
      attnNorm: get(`${p}.input_layernorm.weight`), ffnNorm: get(`${p}.post_attention_layernorm.weight`),
      q: linear(`${p}.self_attn.q_proj`, c.qkvBias), k: linear(`${p}.self_attn.k_proj`, c.qkvBias),
      v: linear(`${p}.self_attn.v_proj`, c.qkvBias), o: linear(`${p}.self_attn.o_proj`, false),
      gate: linear(`${p}.mlp.gate_proj`, false), up: linear(`${p}.mlp.up_proj`, false), down: linear(`${p}.mlp.down_proj`, false),
    };
  });
  const embedding = get('model.embed_tokens.weight');
  const weights = { embedding, layers, finalNorm: get('model.norm.weight'), lmHead: c.tieEmbeddings ? embedding : get('lm_head.weight') };
  return callNative((a) => new a.ModelHandle({ ...c, activationFormat: 'e4m3fn', kvCache }, weights));
}
