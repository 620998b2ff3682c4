/**
 * Imports a llama2.c checkpoint (Karpathy's export.py), FP32 versions 0 (legacy) and 1.
 *
 * Version 0 (legacy_export):
 *   [0, 28)   7 x int32 LE: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
 *             vocab_size < 0 means an unshared classifier (its absolute value is the vocabulary)
 *   then FP32 LE, each [L, ...] tensor as L consecutive matrices (kvDim = n_kv_heads * head):
 *     token_embedding [vocab, dim]  rms_att [L, dim]      wq [L, dim, dim]       wk [L, kvDim, dim]
 *     wv [L, kvDim, dim]            wo [L, dim, dim]      rms_ffn [L, dim]       w1 [L, hidden, dim]
 *     w2 [L, dim, hidden]           w3 [L, hidden, dim]   rms_final [dim]
 *     freq_cis_real [seq, head/2]   freq_cis_imag [seq, head/2]   (RoPE tables: skipped)
 *     wcls [vocab, dim]             (only when unshared)
 * Version 1 (version1_export):
 *   [0, 256)  u32 magic 0x616b3432 ("ak42"), int32 version = 1, the same 7 int32 (vocab_size > 0),
 *             u8 shared_classifier, zeros to 256
 *   then FP32: rms_att [L, dim], rms_ffn [L, dim], rms_final [dim], token_embedding [vocab, dim],
 *             wq, wk, wv, wo, w1, w2, w3 (each [L, ...] as above), wcls [vocab, dim] when unshared.
 * Version 2 (Q8_0) is refused: it is already quantized.
 *
 * Names map to Hugging Face: w1 = gate_proj, w3 = up_proj, w2 = down_proj, rms_att = input_layernorm,
 * rms_ffn = post_attention_layernorm. RoPE: llama2.c rotates adjacent pairs (x[2i], x[2i+1]); the
 * runtime, like HF Llama, rotates halves (x[i], x[i + head/2]). As HF's conversion script does, the
 * rows of wq and wk are permuted within each head so the model computes the same function under the
 * rotate-half convention: new row j < head/2 takes old row 2j, new row head/2 + j takes old row 2j+1.
 *
 * The file is mapped; every tensor but the permuted wq/wk is a zero-copy FP32 view into it.
 */
import { closeSync, openSync, readSync } from 'node:fs';
import path from 'node:path';
import { W4a8Error } from '../errors.js';
import { checkModelConfig } from '../format/config.js';
import { EMBEDDING, FINAL_NORM, LM_HEAD, sourceTensorShapes } from '../format/layout.js';
import { checkLittleEndianHost, mapModelFile } from '../format/safetensors-read.js';
import type { ModelConfig, SourceModel, Tensor } from '../model/types.js';
import { exists } from './files.js';
import { llama2cTokenizerToJson } from './llama2c-tokenizer.js';

const MAGIC = 0x616b3432;
const V0_HEADER_BYTES = 28;
const V1_HEADER_BYTES = 256;

/** A llama2.c checkpoint's first 7 int32 look like a version-0 header (or it starts with the v1 magic). */
export function looksLikeLlama2c(file: string): boolean {
  const header = Buffer.alloc(V0_HEADER_BYTES);
  const fd = openSync(file, 'r');
  try {
    if (readSync(fd, header, 0, V0_HEADER_BYTES, 0) < V0_HEADER_BYTES) return false;
  } finally {
    closeSync(fd);
  }
  if (header.readUInt32LE(0) === MAGIC) return true;
  const ints = Array.from({ length: 7 }, (_, i) => header.readInt32LE(4 * i));
  return ints.every((v, i) => (i === 5 ? v !== 0 : v > 0 && v < 1 << 20));
}

/** llama2.c's sentencepiece convention. */
const BOS_ID = 1;
const EOS_ID = 2;

interface Header {
  version: 0 | 1;
  dim: number;
  hiddenDim: number;
  nLayers: number;
  nHeads: number;
  nKvHeads: number;
  vocabSize: number;
  seqLen: number;
  shared: boolean;
  dataStart: number;
}

function fail(file: string, message: string): never {
  throw new W4a8Error('E_FILE', `${file}: ${message}`);
}

function readHeader(buffer: ArrayBuffer, file: string): Header {
  if (buffer.byteLength < V0_HEADER_BYTES) fail(file, `${buffer.byteLength} bytes is too short for a llama2.c header (${V0_HEADER_BYTES})`);
  const view = new DataView(buffer);
  const ints = (offset: number) => Array.from({ length: 7 }, (_, i) => view.getInt32(offset + 4 * i, true));
  if (view.getUint32(0, true) === MAGIC) {
    if (buffer.byteLength < V1_HEADER_BYTES) fail(file, `${buffer.byteLength} bytes is too short for a llama2.c version-1 header (${V1_HEADER_BYTES})`);
    const version = view.getInt32(4, true);
    if (version === 2) throw new W4a8Error('E_UNSUPPORTED', `${file}: llama2.c version 2 (Q8_0) checkpoints are already quantized; export FP32 (version 0 or 1)`);
    if (version !== 1) fail(file, `unknown llama2.c version ${version}`);
    const [dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize, seqLen] = ints(8);
    const flag = view.getUint8(36);
    if (flag > 1) fail(file, `shared_classifier flag must be 0 or 1, got ${flag}`);
    return { version: 1, dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize, seqLen, shared: flag === 1, dataStart: V1_HEADER_BYTES };
  }
  const [dim, hiddenDim, nLayers, nHeads, nKvHeads, vocab, seqLen] = ints(0);
  return { version: 0, dim, hiddenDim, nLayers, nHeads, nKvHeads, vocabSize: Math.abs(vocab), seqLen, shared: vocab > 0, dataStart: V0_HEADER_BYTES };
}

function configOf(h: Header, file: string): ModelConfig {
  for (const [name, value] of Object.entries({ dim: h.dim, hidden_dim: h.hiddenDim, n_layers: h.nLayers, n_heads: h.nHeads, n_kv_heads: h.nKvHeads, vocab_size: h.vocabSize, seq_len: h.seqLen }))
    if (!(value >= 1)) fail(file, `header ${name} must be positive, got ${value}`);
  if (h.dim % h.nHeads !== 0) fail(file, `header dim (${h.dim}) must be a multiple of n_heads (${h.nHeads})`);
  try {
    return checkModelConfig({
      architecture: 'llama', dim: h.dim, hiddenDim: h.hiddenDim, nLayers: h.nLayers, nHeads: h.nHeads, nKvHeads: h.nKvHeads,
      headDim: h.dim / h.nHeads, vocabSize: h.vocabSize, maxSeqLen: h.seqLen, ropeTheta: 10000, rmsNormEps: 1e-5,
      tieEmbeddings: h.shared, qkvBias: false, bosTokenId: BOS_ID, eosTokenIds: [EOS_ID],
    }, 'header', 'E_FILE');
  } catch (error) {
    if (error instanceof W4a8Error) fail(file, error.message);
    throw error;
  }
}

/** One stretch of FP32 values in the file: a name (HF, with {i} for the layer) and its per-layer shape. */
interface Region {
  name: string | null; // null: skipped (RoPE tables)
  shape: number[];
  layers: number; // 1 for whole-model tensors
}

function regions(h: Header, c: ModelConfig): Region[] {
  const kvDim = c.nKvHeads * c.headDim;
  const L = c.nLayers;
  const perLayer = (name: string, shape: number[]): Region => ({ name: `model.layers.{i}.${name}`, shape, layers: L });
  const single = (name: string | null, shape: number[]): Region => ({ name, shape, layers: 1 });
  const attention = [
    perLayer('self_attn.q_proj.weight', [c.dim, c.dim]), perLayer('self_attn.k_proj.weight', [kvDim, c.dim]),
    perLayer('self_attn.v_proj.weight', [kvDim, c.dim]), perLayer('self_attn.o_proj.weight', [c.dim, c.dim]),
  ];
  const mlp = [
    perLayer('mlp.gate_proj.weight', [c.hiddenDim, c.dim]), perLayer('mlp.down_proj.weight', [c.dim, c.hiddenDim]),
    perLayer('mlp.up_proj.weight', [c.hiddenDim, c.dim]),
  ];
  const attNorm = perLayer('input_layernorm.weight', [c.dim]);
  const ffnNorm = perLayer('post_attention_layernorm.weight', [c.dim]);
  const classifier = h.shared ? [] : [single(LM_HEAD, [c.vocabSize, c.dim])];
  if (h.version === 0)
    return [
      single(EMBEDDING, [c.vocabSize, c.dim]), attNorm, ...attention, ffnNorm, ...mlp, single(FINAL_NORM, [c.dim]),
      single(null, [h.seqLen, c.headDim / 2]), single(null, [h.seqLen, c.headDim / 2]), ...classifier,
    ];
  return [attNorm, ffnNorm, single(FINAL_NORM, [c.dim]), single(EMBEDDING, [c.vocabSize, c.dim]), ...attention, ...mlp, ...classifier];
}

/** Rows of w [heads * head, cols] reordered within each head from interleaved to rotate-half RoPE. */
export function permuteRopeRows(w: Float32Array, heads: number, head: number, cols: number): Float32Array {
  const out = new Float32Array(w.length);
  const half = head / 2;
  for (let h = 0; h < heads; h++)
    for (let j = 0; j < half; j++) {
      const base = h * head;
      out.set(w.subarray((base + 2 * j) * cols, (base + 2 * j + 1) * cols), (base + j) * cols);
      out.set(w.subarray((base + 2 * j + 1) * cols, (base + 2 * j + 2) * cols), (base + half + j) * cols);
    }
  return out;
}

export interface Llama2cImportOptions {
  /** llama2.c tokenizer.bin; default: tokenizer.bin beside the checkpoint, when there is one. */
  tokenizerPath?: string;
}

export async function importLlama2c(file: string, options: Llama2cImportOptions = {}): Promise<SourceModel> {
  checkLittleEndianHost();
  const buffer = await mapModelFile(file);
  const header = readHeader(buffer, file);
  const config = configOf(header, file);
  const layout = regions(header, config);
  const floats = layout.reduce((sum, r) => sum + r.layers * r.shape.reduce((a, b) => a * b, 1), 0);
  const expected = header.dataStart + 4 * floats;
  if (buffer.byteLength !== expected)
    fail(file, `${buffer.byteLength} bytes, but a version-${header.version} checkpoint with this header ` +
      `(dim ${config.dim}, hidden ${config.hiddenDim}, ${config.nLayers} layers, ${config.nHeads}/${config.nKvHeads} heads, ` +
      `vocab ${config.vocabSize}${header.shared ? ' shared' : ' unshared'}, seq ${header.seqLen}) has ${expected}`);

  const tensors = new Map<string, Tensor>();
  let offset = header.dataStart; // a multiple of 4: every view is aligned
  for (const region of layout) {
    const count = region.shape.reduce((a, b) => a * b, 1);
    for (let i = 0; i < region.layers; i++) {
      if (region.name !== null) {
        const name = region.name.replace('{i}', String(i));
        let data: Float32Array = new Float32Array(buffer, offset, count);
        if (name.endsWith('q_proj.weight')) data = permuteRopeRows(data, config.nHeads, config.headDim, config.dim);
        if (name.endsWith('k_proj.weight')) data = permuteRopeRows(data, config.nKvHeads, config.headDim, config.dim);
        tensors.set(name, { dtype: 'F32', shape: region.shape.slice(), data });
      }
      offset += 4 * count;
    }
  }
  const model: SourceModel = { config, tensors: canonicalOrder(tensors, config) };
  const tokenizerPath = options.tokenizerPath ?? path.join(path.dirname(file), 'tokenizer.bin');
  if (options.tokenizerPath !== undefined || (await exists(tokenizerPath)))
    model.tokenizerJson = await llama2cTokenizerToJson(tokenizerPath, config.vocabSize);
  return model;
}

/** In the canonical order of layout.ts (layer by layer), as the HF importer gives them; the file is ordered by tensor kind. */
function canonicalOrder(tensors: Map<string, Tensor>, config: ModelConfig): Map<string, Tensor> {
  return new Map([...sourceTensorShapes(config).keys()].map((name) => [name, tensors.get(name)!]));
}
