/**
 * A synthetic Llama with seeded random weights and real proportions (GQA, an MLP width that no group
 * size divides), plus a byte-level BPE tokenizer: the default model of `npm start` when no trained
 * model is given. Its text is gibberish by construction; it exercises every part of the engine.
 */
import type { ModelConfig, SourceModel, Tensor } from './types.js';
import { seededNormals, seededRandom } from '../random.js';
import { byteToUnicode } from './token-bytes.js';

export interface SyntheticShape {
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  maxSeqLen: number;
}

/** ~30M parameters: dim 512, MLP 1376 (= 10.75 * 128), 8 layers, 8 heads over 4 KV heads. */
export const DEFAULT_SYNTHETIC_SHAPE: SyntheticShape = { dim: 512, hiddenDim: 1376, nLayers: 8, nHeads: 8, nKvHeads: 4, maxSeqLen: 1024 };

const SPECIAL_TOKENS = ['<s>', '</s>'];

/**
 * tokenizer.json of a byte-level BPE with the 256 bytes as its vocabulary, then `merges` tokens made by merging random
 * earlier pairs (seeded; none by default), then <s> and </s> (256 and 257 without merges). A large one stands in for
 * a real vocabulary's size where the bench needs one (bench/tokenize.mjs: Qwen-sized, 151k merges).
 */
export function byteLevelTokenizerJson(merges = 0, seed = 1): string {
  const tokens = byteToUnicode();
  const vocab: Record<string, number> = Object.fromEntries(tokens.map((ch, b) => [ch, b]));
  const mergeList: string[] = [];
  const random = seededRandom(seed);
  while (mergeList.length < merges) {
    // (earlier tokens more often, the second part among the first 2,000: words grow from common pieces)
    const a = tokens[Math.floor(random() ** 2 * tokens.length)], b = tokens[Math.floor(random() * Math.min(tokens.length, 2000))];
    if ((a + b).length > 16 || Object.hasOwn(vocab, a + b)) continue;
    vocab[a + b] = tokens.length;
    tokens.push(a + b);
    mergeList.push(`${a} ${b}`);
  }
  const added = SPECIAL_TOKENS.map((content, i) => ({
    id: tokens.length + i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
  }));
  return JSON.stringify({
    version: '1.0', truncation: null, padding: null, added_tokens: added, normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '<s>': { id: '<s>', ids: [tokens.length], tokens: ['<s>'] } },
    },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, vocab, merges: mergeList,
    },
  });
}

export const SYNTHETIC_CHAT_TEMPLATE =
  "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}";

const normal = seededNormals;

export function syntheticSourceModel(shape: SyntheticShape = DEFAULT_SYNTHETIC_SHAPE, seed = 1): SourceModel {
  const headDim = shape.dim / shape.nHeads;
  const vocabSize = 256 + SPECIAL_TOKENS.length;
  const config: ModelConfig = {
    architecture: 'llama', dim: shape.dim, hiddenDim: shape.hiddenDim, nLayers: shape.nLayers, nHeads: shape.nHeads,
    nKvHeads: shape.nKvHeads, headDim, vocabSize, maxSeqLen: shape.maxSeqLen, ropeTheta: 10000, rmsNormEps: 1e-5,
    tieEmbeddings: false, qkvBias: false, bosTokenId: 256, eosTokenIds: [257],
  };
  const tensors = new Map<string, Tensor>();
  let next = seed * 1000;
  const matrix = (name: string, rows: number, cols: number, std = 1 / Math.sqrt(cols)) =>
    tensors.set(name, { dtype: 'F32', shape: [rows, cols], data: normal(rows * cols, next++, std) });
  const ones = (name: string) => tensors.set(name, { dtype: 'F32', shape: [shape.dim], data: new Float32Array(shape.dim).fill(1) });
  matrix('model.embed_tokens.weight', vocabSize, shape.dim, 1);
  const kvDim = shape.nKvHeads * headDim;
  for (let l = 0; l < shape.nLayers; l++) {
    const p = `model.layers.${l}`;
    ones(`${p}.input_layernorm.weight`);
    ones(`${p}.post_attention_layernorm.weight`);
    matrix(`${p}.self_attn.q_proj.weight`, shape.dim, shape.dim);
    matrix(`${p}.self_attn.k_proj.weight`, kvDim, shape.dim);
    matrix(`${p}.self_attn.v_proj.weight`, kvDim, shape.dim);
    matrix(`${p}.self_attn.o_proj.weight`, shape.dim, shape.dim);
    matrix(`${p}.mlp.gate_proj.weight`, shape.hiddenDim, shape.dim);
    matrix(`${p}.mlp.up_proj.weight`, shape.hiddenDim, shape.dim);
    matrix(`${p}.mlp.down_proj.weight`, shape.dim, shape.hiddenDim);
  }
  ones('model.norm.weight');
  matrix('lm_head.weight', vocabSize, shape.dim);
  return {
    config, tensors, tokenizerJson: byteLevelTokenizerJson(),
    tokenizerConfigJson: JSON.stringify({ bos_token: '<s>', eos_token: '</s>', chat_template: SYNTHETIC_CHAT_TEMPLATE }),
    chatTemplate: SYNTHETIC_CHAT_TEMPLATE,
  };
}
