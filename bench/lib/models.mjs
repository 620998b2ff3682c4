// The models of the end-to-end benchmark, each written twice: as a packed .w4a8 file for w4a8 and as a GGUF
// for llama.cpp, with the same architecture, shapes and (for trained models) the same weights.
//
// Synthetic 1B/7B-class models: packing FP32 weights is out of reach here (7B in FP32 is 28 GB, more than this
// machine's memory), so the packed tensors are made directly: random INT4 codes, random positive group scales,
// symmetric zero points (8), channel scales ~ 2.2/sqrt(K) (so a row's weights have a standard deviation of
// about 1/sqrt(K) and activations keep their size through the layers), BF16 embeddings, RMSNorm weights of 1.
// The GGUF gets random blocks of the same proportions (Q4_0 with d ~ 1/(4.6·sqrt(K)), Q6_K output). Identical
// random blocks repeat within a tensor and across layers (only the layout and the byte count matter for speed,
// and every tensor still has its own place in the file, so nothing is shared in the caches).
//
// Trained models (../shared/models): imported to FP32 by lib/import, packed to W4A8 by lib/pack (RTN), and
// quantized to GGUF here with llama-quantize's Q4_0 recipe (see ggufFromSource).
import { existsSync, mkdirSync, readdirSync, statSync, writeFileSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { GGUF_LINEAR, f32Bytes, fits, llamaMetadata, quantizeQ4_0, quantizeQ6K, quantizeQ8_0, tensorBytes, toF16, toF16Bytes, writeGguf } from './gguf.mjs';
import { randomBytes, randomFloats, repeatFill, xorshiftWords, BLOCK_WORDS } from './random.mjs';

/** Bump when what the builders write changes: cached files of another version are rebuilt. */
const BUILD_VERSION = 1;

export const SYNTHETIC_SHAPES = {
  '1b': {
    id: 'synthetic-1b', label: '1B-class synthetic (Llama-3.2-1B-like: dim 2048, MLP 8192, 16 layers, 32/8 heads, vocab 32000)',
    dim: 2048, hiddenDim: 8192, nLayers: 16, nHeads: 32, nKvHeads: 8, vocabSize: 32000, maxSeqLen: 2048, ropeTheta: 500000,
  },
  '7b': {
    id: 'synthetic-7b', label: '7B-class synthetic (Llama-2-7B: dim 4096, MLP 11008, 32 layers, 32/32 heads, vocab 32000)',
    dim: 4096, hiddenDim: 11008, nLayers: 32, nHeads: 32, nKvHeads: 32, vocabSize: 32000, maxSeqLen: 4096, ropeTheta: 10000,
  },
};

const SYNTHETIC_GROUP = 128;

export function syntheticConfig(shape) {
  return {
    architecture: 'llama', dim: shape.dim, hiddenDim: shape.hiddenDim, nLayers: shape.nLayers, nHeads: shape.nHeads,
    nKvHeads: shape.nKvHeads, headDim: shape.dim / shape.nHeads, vocabSize: shape.vocabSize, maxSeqLen: shape.maxSeqLen,
    ropeTheta: shape.ropeTheta, rmsNormEps: 1e-5, tieEmbeddings: false, qkvBias: false, bosTokenId: 1, eosTokenIds: [],
  };
}

// ---- byte counts (what one decode step reads) --------------------------------------------------------------

/** Weight bytes a decode step of a packed model reads: every linear layer's four parts and lm_head (BF16 or packed). */
export function w4a8StepBytes(packed) {
  let bytes = 0;
  for (const [name, t] of packed.tensors)
    if (/\.(qweight|scales|zeros|channel_scale)$/.test(name) || name === 'lm_head.weight') bytes += t.data.byteLength;
  if (packed.config.tieEmbeddings) bytes += packed.tensors.get('model.embed_tokens.weight').data.byteLength;
  return bytes;
}

/** Multiply-adds per token in the linear layers and lm_head (the FLOPs are twice this). */
export function matmulParams(config) {
  const attention = config.nHeads * config.headDim, kv = config.nKvHeads * config.headDim;
  const perLayer = config.dim * attention * 2 + config.dim * kv * 2 + 3 * config.dim * config.hiddenDim;
  return config.nLayers * perLayer + config.vocabSize * config.dim;
}

// ---- synthetic packed model -------------------------------------------------------------------------------

function bf16Random(length, seed) {
  const floats = randomFloats(Math.min(length, BLOCK_WORDS), seed, -0.05, 0.05);
  const words = new Uint32Array(floats.buffer);
  const block = new Uint16Array(floats.length);
  for (let i = 0; i < block.length; i++) block[i] = words[i] >>> 16;
  return repeatFill(new Uint16Array(length), block);
}

/**
 * A synthetic PackedModel (random weights, see the top of this file); tensors are views into shared pools.
 * lmHead 'w4a8': lm_head as a packed linear layer (random codes like the others) instead of BF16.
 */
export function syntheticPacked(pkgFormat, shape, seed = 1, lmHead = 'bf16', scales = 'float') {
  const config = syntheticConfig(shape);
  const quant = {
    weightFormat: 'e4m3fn', activationFormat: 'e4m3fn', groupSize: SYNTHETIC_GROUP, symmetric: true, scales, method: 'rtn',
    ...(lmHead === 'w4a8' ? { lmHead } : {}),
    details: { synthetic: 'random INT4 codes and scales written by bench/lib/models.mjs: a benchmark model, not a quantized one' },
  };
  const specs = pkgFormat.packedTensorSpecs(config, SYNTHETIC_GROUP, quant.lmHead);
  let maxCodes = 0, maxGroups = 0, maxRows = 0;
  for (const [name, spec] of specs) {
    const count = spec.shape.reduce((a, b) => a * b, 1);
    if (name.endsWith('.qweight')) maxCodes = Math.max(maxCodes, count);
    if (name.endsWith('.scales')) maxGroups = Math.max(maxGroups, count);
    if (name.endsWith('.channel_scale')) maxRows = Math.max(maxRows, count);
  }
  const codes = randomBytes(maxCodes, seed);
  const groupScales = randomFloats(maxGroups, seed + 1, 0.05, 0.15);  // |s_g (q - 8)| <= 1.2: inside E4M3
  // 'pow2': each scale rounded down to a power of two (2^-5 .. 2^-3), as power-of-two packing makes them.
  if (scales === 'pow2') for (let i = 0; i < groupScales.length; i++) groupScales[i] = 2 ** Math.floor(Math.log2(groupScales[i]));
  const zeros = new Uint8Array(maxGroups).fill(8);
  const channelScales = new Map();  // by K: 2.2/sqrt(K) ± 20 %
  const channel = (K) => {
    if (!channelScales.has(K)) channelScales.set(K, randomFloats(maxRows, seed + 2 + K, 0.8 * 2.2 / Math.sqrt(K), 1.2 * 2.2 / Math.sqrt(K)));
    return channelScales.get(K);
  };
  const embedding = bf16Random(config.vocabSize * config.dim, seed + 3);
  const ones = new Float32Array(config.dim).fill(1);
  const tensors = new Map();
  for (const [name, spec] of specs) {
    const count = spec.shape.reduce((a, b) => a * b, 1);
    let data;
    if (name === 'model.embed_tokens.weight' || name === 'lm_head.weight') data = embedding;
    else if (name.endsWith('.qweight')) data = codes.subarray(0, count);
    else if (name.endsWith('.scales')) data = groupScales.subarray(0, count);
    else if (name.endsWith('.zeros')) data = zeros.subarray(0, count);
    else if (name.endsWith('.channel_scale')) {
      const linear = name.slice(0, -'.channel_scale'.length);
      data = channel(pkgFormat.linearShape(config, linear).cols).subarray(0, count);
    } else data = ones.subarray(0, count);  // RMSNorm weights
    tensors.set(name, { dtype: spec.dtype, shape: spec.shape, data });
  }
  return { config, quant, tensors };
}

// ---- synthetic GGUF ----------------------------------------------------------------------------------------

// Random Q4_0 blocks for rows of K inputs: d ~ 1/(4.6·sqrt(K)) ± 50 % (q − 8 has a standard deviation of 4.6).
function q4_0Pool(K, seed) {
  const blocks = 1 << 16;  // 1.1 MiB
  const pool = Buffer.from(randomBytes(blocks * 18, seed));
  const d = randomFloats(blocks, seed + 1, 0.5 / (4.6 * Math.sqrt(K)), 1.5 / (4.6 * Math.sqrt(K)));
  for (let b = 0; b < blocks; b++) pool.writeUInt16LE(toF16(d[b]), b * 18);
  return pool;
}

// Random Q6_K blocks: scales 8..63, d so that d·scale·(q − 32) has a standard deviation of ~1/sqrt(K).
function q6_KPool(K, seed) {
  const blocks = 1 << 12;  // 840 KiB
  const pool = Buffer.from(randomBytes(blocks * 210, seed));
  const words = xorshiftWords(seed + 1, blocks * 16);
  const d = 1 / (Math.sqrt(K) * 18.5 * 35);
  for (let b = 0; b < blocks; b++) {
    for (let s = 0; s < 16; s++) pool.writeInt8(8 + (words[b * 16 + s] % 56), b * 210 + 192 + s);
    pool.writeUInt16LE(toF16(d), b * 210 + 208);
  }
  return pool;
}

function* repeatPool(pool, bytes) {
  for (let done = 0; done < bytes; done += pool.length) yield done + pool.length <= bytes ? pool : pool.subarray(0, bytes - done);
}

/** GGUF tensors of the Llama layout, in llama.cpp's names; `linear(i, proj, K, N)` etc. give each tensor's type and data. */
function llamaGgufTensors(config, parts) {
  const attention = config.nHeads * config.headDim, kv = config.nKvHeads * config.headDim;
  const tensors = [parts.embedding(), parts.norm('output_norm.weight'), parts.output()];
  const shapes = { q_proj: [config.dim, attention], k_proj: [config.dim, kv], v_proj: [config.dim, kv], o_proj: [attention, config.dim],
    gate_proj: [config.dim, config.hiddenDim], up_proj: [config.dim, config.hiddenDim], down_proj: [config.hiddenDim, config.dim] };
  for (let i = 0; i < config.nLayers; i++) {
    tensors.push(parts.norm(`blk.${i}.attn_norm.weight`));
    for (const proj of ['q_proj', 'k_proj', 'v_proj', 'o_proj']) tensors.push(parts.linear(i, proj, ...shapes[proj]));
    tensors.push(parts.norm(`blk.${i}.ffn_norm.weight`));
    for (const proj of ['gate_proj', 'up_proj', 'down_proj']) tensors.push(parts.linear(i, proj, ...shapes[proj]));
  }
  return tensors;
}

/** Bytes a decode step of a GGUF reads: every blk.* matrix and output.weight. */
function ggufStepBytes(tensors, sizes) {
  let bytes = 0;
  for (const t of tensors) if (t.ne.length === 2 && t.name !== 'token_embd.weight') bytes += sizes.get(t.name);
  return bytes;
}

export function writeSyntheticGguf(file, shape, contextLength, seed = 1) {
  const config = syntheticConfig(shape);
  const pools = new Map();
  const q4 = (K) => {
    if (!pools.has(K)) pools.set(K, q4_0Pool(K, seed + K));
    return pools.get(K);
  };
  const onesBytes = f32Bytes(new Float32Array(config.dim).fill(1));
  const tensors = llamaGgufTensors(config, {
    embedding: () => ({ name: 'token_embd.weight', type: 'Q4_0', ne: [config.dim, config.vocabSize],
      data: () => repeatPool(q4(config.dim), tensorBytes('Q4_0', config.dim, config.vocabSize)) }),
    // llama-quantize's Q4_0 recipe keeps output.weight in Q6_K.
    output: () => ({ name: 'output.weight', type: 'Q6_K', ne: [config.dim, config.vocabSize],
      data: () => repeatPool(q6_KPool(config.dim, seed + 5), tensorBytes('Q6_K', config.dim, config.vocabSize)) }),
    norm: (name) => ({ name, type: 'F32', ne: [config.dim], data: function* () { yield onesBytes; } }),
    linear: (i, proj, K, N) => ({ name: `blk.${i}.${GGUF_LINEAR[proj]}.weight`, type: 'Q4_0', ne: [K, N],
      data: () => repeatPool(q4(K), tensorBytes('Q4_0', K, N)) }),
  });
  const result = writeGguf(file, { metadata: llamaMetadata(config, shape.id, contextLength), tensors });
  return { bytes: result.bytes, stepBytes: ggufStepBytes(tensors, result.tensorBytes), types: ggufTypes(tensors) };
}

function ggufTypes(tensors) {
  const types = {};
  for (const t of tensors) if (t.ne.length === 2) {
    const role = t.name.replace(/^blk\.\d+\./, '');
    types[role] = t.type;
  }
  return types;
}

// ---- trained models ----------------------------------------------------------------------------------------

/**
 * Hugging Face rows of a Q or K projection -> the interleaved-pair order llama.cpp's rope expects (its LLAMA
 * rope rotates (x[2i], x[2i+1]); HF and the w4a8 runtime rotate halves (x[i], x[i + head/2])). The inverse of
 * the permutation lib/import applies to llama2.c checkpoints and that HF's conversion script applies:
 * in each head, row 2j takes HF row j and row 2j+1 takes HF row head/2 + j.
 */
function interleaveRopeRows(values, heads, headDim, cols) {
  const out = new Float32Array(values.length);
  const half = headDim / 2;
  for (let h = 0; h < heads; h++)
    for (let j = 0; j < half; j++) {
      const base = h * headDim;
      out.set(values.subarray((base + j) * cols, (base + j + 1) * cols), (base + 2 * j) * cols);
      out.set(values.subarray((base + half + j) * cols, (base + half + j + 1) * cols), (base + 2 * j + 1) * cols);
    }
  return out;
}

/**
 * The Q4_0 GGUF of an imported (FP32) model, as llama-quantize's Q4_0 type makes it: every matrix Q4_0, except
 * output.weight in Q6_K (Q8_0 when its rows are not a multiple of 256 values, llama-quantize's fallback) and
 * the norms in F32. A matrix whose rows are not a multiple of 32 (stories260K's ffn_down, K = 172) cannot be
 * Q4_0 at all (llama-quantize refuses it): it is stored F16 and reported as such.
 * Returns null with a reason when llama.cpp's llama architecture cannot express the model.
 */
export function writeGgufFromSource(file, source, name, toFloat32, { allF32 = false } = {}) {
  const config = source.config;
  if (config.qkvBias) return { skipped: 'q/k/v biases (Qwen2) are not part of llama.cpp\'s llama architecture' };
  if (config.ropeScaling) return { skipped: `rope scaling '${config.ropeScaling.type}' is not written by this converter` };
  const get = (n) => toFloat32(n, source.tensors.get(n));
  const matrix = (tensorName, type, ne, values) => {
    const chosen = allF32 ? 'F32' : fits(type, ne[0]) ? type : 'F16';
    const encode = { Q4_0: (v) => quantizeQ4_0(v, ne[0]), Q8_0: quantizeQ8_0, Q6_K: quantizeQ6K, F16: toF16Bytes, F32: f32Bytes }[chosen];
    return { name: tensorName, type: chosen, ne, data: function* () { yield encode(values()); } };
  };
  const embedding = 'model.embed_tokens.weight';
  const tensors = llamaGgufTensors(config, {
    embedding: () => matrix('token_embd.weight', 'Q4_0', [config.dim, config.vocabSize], () => get(embedding)),
    output: () => matrix('output.weight', fits('Q6_K', config.dim) ? 'Q6_K' : 'Q8_0', [config.dim, config.vocabSize],
      () => get(config.tieEmbeddings ? embedding : 'lm_head.weight')),
    norm: (ggufName) => {
      const hf = ggufName === 'output_norm.weight' ? 'model.norm.weight'
        : ggufName.replace(/^blk\.(\d+)\.attn_norm\.weight$/, 'model.layers.$1.input_layernorm.weight')
          .replace(/^blk\.(\d+)\.ffn_norm\.weight$/, 'model.layers.$1.post_attention_layernorm.weight');
      return { name: ggufName, type: 'F32', ne: [config.dim], data: function* () { yield f32Bytes(get(hf)); } };
    },
    linear: (i, proj, K, N) => {
      const hf = `model.layers.${i}.${['q_proj', 'k_proj', 'v_proj', 'o_proj'].includes(proj) ? 'self_attn' : 'mlp'}.${proj}.weight`;
      const values = () => {
        const v = get(hf);
        if (proj === 'q_proj') return interleaveRopeRows(v, config.nHeads, config.headDim, K);
        if (proj === 'k_proj') return interleaveRopeRows(v, config.nKvHeads, config.headDim, K);
        return v;
      };
      return matrix(`blk.${i}.${GGUF_LINEAR[proj]}.weight`, 'Q4_0', [K, N], values);
    },
  });
  const result = writeGguf(file, { metadata: llamaMetadata(config, name), tensors });
  return { bytes: result.bytes, stepBytes: ggufStepBytes(tensors, result.tensorBytes), types: ggufTypes(tensors) };
}

/** Trained models in `dir`: llama2.c checkpoints (*.bin) and Hugging Face folders (config.json), one level down. */
export function discoverTrainedModels(dir) {
  if (!existsSync(dir)) return [];
  const found = [];
  for (const entry of readdirSync(dir).sort()) {
    const folder = path.join(dir, entry);
    if (!statSync(folder).isDirectory()) continue;
    if (existsSync(path.join(folder, 'config.json'))) { found.push({ id: entry, source: folder, kind: 'huggingface' }); continue; }
    for (const file of readdirSync(folder).sort())
      if (file.endsWith('.bin') && !/tokenizer/i.test(file)) found.push({ id: file.replace(/\.bin$/, ''), source: path.join(folder, file), kind: 'llama2c' });
  }
  return found;
}

// ---- the cache -----------------------------------------------------------------------------------------------

/**
 * Builds (or finds in `cacheDir`) both files of a model. `make` writes them and returns a description;
 * it is kept in a JSON beside them so a later run with the same key skips the work.
 */
export async function cachedBuild(cacheDir, key, make) {
  mkdirSync(cacheDir, { recursive: true });
  const descriptionFile = path.join(cacheDir, `${key}.v${BUILD_VERSION}.json`);
  if (existsSync(descriptionFile)) {
    const description = JSON.parse(readFileSync(descriptionFile, 'utf8'));
    if ([description.w4a8File, description.ggufFile].every((f) => !f || existsSync(f))) return { ...description, cached: true };
  }
  const description = await make(path.join(cacheDir, `${key}.v${BUILD_VERSION}`));
  writeFileSync(descriptionFile, `${JSON.stringify(description, null, 2)}\n`);
  return { ...description, cached: false };
}
