/** Builds the native model (native/addon/model_bindings.cpp) from a PackedModel's tensors, zero-copy. */
import { W4a8Error } from '../errors.js';
import { callNative, type NativeModelHandle } from '../native.js';
import type { PackedModel, Tensor } from './types.js';

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

export function createNativeModel(model: PackedModel): NativeModelHandle {
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
  const weights = {
    embedding, layers,
    finalNorm: tensor(model, 'model.norm.weight').data,
    lmHead: c.tieEmbeddings ? embedding : tensor(model, 'lm_head.weight').data,
  };
  const config = { ...c, activationFormat: model.quant.activationFormat };
  return callNative((a) => new a.ModelHandle(config, weights));
}
