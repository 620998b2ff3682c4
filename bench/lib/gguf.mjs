// A minimal GGUF (version 3) writer and the few ggml block formats the benchmarks need, so that llama.cpp
// (through node-llama-cpp) can run the same model shapes and weights as w4a8. Written from the GGUF
// specification (ggml docs/gguf.md) and ggml's block layouts; only what a Llama model needs.
//
// File layout (all little-endian):
//   u32 magic "GGUF" (0x46554747)   u32 version = 3   u64 tensor_count   u64 metadata_kv_count
//   metadata_kv_count × { string key, u32 value_type, value }
//   tensor_count × { string name, u32 n_dims, u64 ne[n_dims] (ne[0] = the contiguous, innermost dimension),
//                    u32 ggml_type, u64 offset (from the start of the data section, a multiple of the alignment) }
//   zero padding up to a multiple of general.alignment (32 unless the metadata says otherwise)
//   data section: each tensor's bytes at its offset, zero padding between tensors
// A string is u64 byte length + UTF-8 bytes (no terminator); an array is u32 element type + u64 count + elements.
//
// Block formats (a row of ne[0] values is ne[0] / block_size blocks, rows back to back):
//   F32   4 bytes per value                F16  2 bytes per value (IEEE half)
//   Q4_0  32 values in 18 bytes: f16 d; u8 qs[16]; value j < 16 = d·((qs[j] & 15) − 8),
//         value 16 + j = d·((qs[j] >> 4) − 8)   (low nibbles hold the first half of the block)
//   Q8_0  32 values in 34 bytes: f16 d; i8 qs[32]; value j = d·qs[j]
//   Q6_K  256 values in 210 bytes: u8 ql[128] (low 4 bits), u8 qh[64] (high 2 bits), i8 scales[16] (one per 16
//         values), f16 d; value = d·scales[s]·(q − 32), q in 0..63 (bit placement: see quantizeQ6K)
import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';

export const GGML_TYPES = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 8, Q6_K: 14 };
const BLOCKS = { F32: [1, 4], F16: [1, 2], Q4_0: [32, 18], Q8_0: [32, 34], Q6_K: [256, 210] };

// GGUF metadata value types.
const VALUE = { u8: 0, i8: 1, u16: 2, i16: 3, u32: 4, i32: 5, f32: 6, bool: 7, str: 8, arr: 9, u64: 10, i64: 11, f64: 12 };

/** Bytes of a tensor of `type` with `ne0` values per row and `rows` rows. */
export function tensorBytes(type, ne0, rows = 1) {
  const block = BLOCKS[type];
  if (!block) throw new Error(`gguf: unknown tensor type ${type}`);
  if (ne0 % block[0] !== 0) throw new Error(`gguf: a ${type} row needs a multiple of ${block[0]} values, got ${ne0}`);
  return (ne0 / block[0]) * block[1] * rows;
}

/** Whether rows of `ne0` values can be stored as `type`. */
export const fits = (type, ne0) => ne0 % BLOCKS[type][0] === 0;

// ---- metadata values -------------------------------------------------------------------------------------

export const meta = {
  u32: (value) => ({ type: 'u32', value }),
  i32: (value) => ({ type: 'i32', value }),
  f32: (value) => ({ type: 'f32', value }),
  bool: (value) => ({ type: 'bool', value }),
  str: (value) => ({ type: 'str', value }),
  /** An array of `elementType` ('str', 'f32', 'i32', 'u32'). */
  arr: (elementType, value) => ({ type: 'arr', elementType, value }),
};

class ByteSink {
  constructor() {
    this.chunks = [];
    this.length = 0;
  }

  push(buffer) {
    this.chunks.push(buffer);
    this.length += buffer.length;
  }

  u32(v) { const b = Buffer.alloc(4); b.writeUInt32LE(v >>> 0); this.push(b); }
  i32(v) { const b = Buffer.alloc(4); b.writeInt32LE(v | 0); this.push(b); }
  u64(v) { const b = Buffer.alloc(8); b.writeBigUInt64LE(BigInt(v)); this.push(b); }
  f32(v) { const b = Buffer.alloc(4); b.writeFloatLE(v); this.push(b); }
  u8(v) { this.push(Buffer.from([v & 255])); }

  string(s) {
    const bytes = Buffer.from(s, 'utf8');
    this.u64(bytes.length);
    this.push(bytes);
  }

  scalar(type, v) {
    switch (type) {
      case 'u32': return this.u32(v);
      case 'i32': return this.i32(v);
      case 'f32': return this.f32(v);
      case 'bool': return this.u8(v ? 1 : 0);
      case 'str': return this.string(v);
      default: throw new Error(`gguf: unsupported metadata type ${type}`);
    }
  }

  bytes() {
    return Buffer.concat(this.chunks, this.length);
  }
}

// ---- the writer ------------------------------------------------------------------------------------------

/**
 * Writes a GGUF file atomically (temporary file beside the target, renamed when complete).
 *   metadata: [key, meta.xxx(value)] pairs, in order
 *   tensors:  [{ name, type ('F32' | 'F16' | 'Q4_0' | 'Q8_0' | 'Q6_K'), ne: [ne0, ne1?], data }]
 *             where data() yields Uint8Array chunks whose total is exactly tensorBytes(type, ne0, ne1)
 * Returns { bytes, tensorBytes: Map name -> bytes }.
 */
export function writeGguf(target, { metadata, tensors, alignment = 32 }) {
  const header = new ByteSink();
  header.u32(0x46554747);  // "GGUF"
  header.u32(3);
  header.u64(tensors.length);
  header.u64(metadata.length + 1);
  header.string('general.alignment');
  header.u32(VALUE.u32);
  header.u32(alignment);
  for (const [key, v] of metadata) {
    header.string(key);
    header.u32(VALUE[v.type]);
    if (v.type === 'arr') {
      header.u32(VALUE[v.elementType]);
      header.u64(v.value.length);
      for (const item of v.value) header.scalar(v.elementType, item);
    } else header.scalar(v.type, v.value);
  }
  const sizes = new Map();
  let offset = 0;
  const placed = tensors.map((t) => {
    const bytes = tensorBytes(t.type, t.ne[0], t.ne.slice(1).reduce((a, b) => a * b, 1));
    sizes.set(t.name, bytes);
    const at = offset;
    offset = Math.ceil((offset + bytes) / alignment) * alignment;
    return { ...t, bytes, at };
  });
  for (const t of placed) {
    header.string(t.name);
    header.u32(t.ne.length);
    for (const d of t.ne) header.u64(d);
    header.u32(GGML_TYPES[t.type]);
    header.u64(t.at);
  }
  const head = header.bytes();
  const dataStart = Math.ceil(head.length / alignment) * alignment;
  const temporary = path.join(path.dirname(target), `.${path.basename(target)}.${process.pid}.tmp`);
  const fd = openSync(temporary, 'w');
  try {
    let position = 0;
    const write = (bytes) => {
      let done = 0;
      while (done < bytes.length) done += writeSync(fd, bytes, done, bytes.length - done, position + done);
      position += bytes.length;
    };
    write(head);
    write(Buffer.alloc(dataStart - head.length));
    for (const t of placed) {
      if (position !== dataStart + t.at) throw new Error(`gguf: ${t.name} at ${position - dataStart}, expected ${t.at}`);
      let written = 0;
      for (const chunk of t.data()) {
        written += chunk.length;
        if (written > t.bytes) break;
        write(chunk);
      }
      if (written !== t.bytes) throw new Error(`gguf: tensor ${t.name} (${t.type} [${t.ne}]) produced ${written} bytes, expected ${t.bytes}`);
      const end = Math.ceil((position - dataStart) / alignment) * alignment;
      if (end > position - dataStart) write(Buffer.alloc(end - (position - dataStart)));
    }
    fsyncSync(fd);
    closeSync(fd);
    renameSync(temporary, target);
    return { bytes: position, tensorBytes: sizes };
  } catch (error) {
    try { closeSync(fd); } catch { /* already closed */ }
    try { unlinkSync(temporary); } catch { /* never created */ }
    throw error;
  }
}

// ---- numbers ---------------------------------------------------------------------------------------------

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** FP32 -> IEEE half bits, round to nearest even, overflow to infinity. */
export function toF16(value) {
  f32Scratch[0] = value;
  const x = u32Scratch[0];
  const sign = (x >>> 16) & 0x8000;
  const exponent = (x >>> 23) & 0xff;
  let mantissa = x & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0);
  const e = exponent - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {  // half subnormal: value = h · 2^-24
    if (e < -10) return sign;
    mantissa |= 0x800000;
    const shift = 14 - e;
    let h = mantissa >>> shift;
    const rest = mantissa & ((1 << shift) - 1), half = 1 << (shift - 1);
    if (rest > half || (rest === half && (h & 1))) h++;
    return sign | h;
  }
  let h = (e << 10) | (mantissa >>> 13);
  const rest = mantissa & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1))) h++;  // a carry into the exponent is still right
  return sign | h;
}

// ---- quantizers (real weights) -----------------------------------------------------------------------------

/** Rows of FP32 [rows, ne0] -> Q4_0 blocks, ggml's round-to-nearest recipe (d = the signed max / −8). */
export function quantizeQ4_0(values, ne0) {
  const blocks = values.length / 32;
  const out = Buffer.alloc(blocks * 18);
  for (let b = 0; b < blocks; b++) {
    const x = values.subarray(b * 32, b * 32 + 32);
    let amax = 0, max = 0;
    for (let j = 0; j < 32; j++) if (Math.abs(x[j]) > amax) { amax = Math.abs(x[j]); max = x[j]; }
    const d = max / -8;
    const id = d ? 1 / d : 0;
    const o = b * 18;
    out.writeUInt16LE(toF16(d), o);
    for (let j = 0; j < 16; j++) {
      const lo = Math.min(15, Math.trunc(x[j] * id + 8.5));
      const hi = Math.min(15, Math.trunc(x[16 + j] * id + 8.5));
      out[o + 2 + j] = lo | (hi << 4);
    }
  }
  if (ne0 % 32) throw new Error('Q4_0 rows need a multiple of 32 values');
  return out;
}

/** FP32 -> Q8_0 blocks (d = amax / 127, q = round(x / d)). */
export function quantizeQ8_0(values) {
  const blocks = values.length / 32;
  const out = Buffer.alloc(blocks * 34);
  for (let b = 0; b < blocks; b++) {
    const x = values.subarray(b * 32, b * 32 + 32);
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[j]));
    const d = amax / 127;
    const id = d ? 1 / d : 0;
    const o = b * 34;
    out.writeUInt16LE(toF16(d), o);
    for (let j = 0; j < 32; j++) out.writeInt8(Math.max(-127, Math.min(127, Math.round(x[j] * id))), o + 2 + j);
  }
  return out;
}

/**
 * FP32 -> Q6_K blocks with a plain round-to-nearest recipe (per 16 values s = amax / 31, the 16 scales
 * quantized to int8 against d = max s / 127). llama.cpp's own quantizer searches the scales for a lower error;
 * the format, and so the speed, is the same.
 * Bit placement inside a block, for value v = 0..255 (h = v >> 7, r = (v & 127) >> 5, l = v & 31):
 *   low 4 bits  ql[64h + l + 32·(r & 1)], the low nibble for r < 2, the high nibble for r >= 2
 *   high 2 bits qh[32h + l], bits 2r and 2r+1
 *   scale       scales[v >> 4] (= scales[8h + 2r + (l >> 4)]: 16 consecutive values share one)
 */
export function quantizeQ6K(values) {
  const blocks = values.length / 256;
  const out = Buffer.alloc(blocks * 210);
  const scales = new Float32Array(16);
  for (let b = 0; b < blocks; b++) {
    const x = values.subarray(b * 256, b * 256 + 256);
    let maxScale = 0;
    for (let s = 0; s < 16; s++) {
      let amax = 0;
      for (let j = 0; j < 16; j++) amax = Math.max(amax, Math.abs(x[s * 16 + j]));
      scales[s] = amax / 31;
      maxScale = Math.max(maxScale, scales[s]);
    }
    const d = maxScale / 127;
    const o = b * 210, ql = o, qh = o + 128, sc = o + 192;
    out.writeUInt16LE(toF16(d), o + 208);
    for (let s = 0; s < 16; s++) out.writeInt8(d ? Math.min(127, Math.round(scales[s] / d)) : 0, sc + s);
    for (let v = 0; v < 256; v++) {
      const h = v >> 7, r = (v & 127) >> 5, l = v & 31;
      const step = d * out.readInt8(sc + (v >> 4));
      const q = step ? Math.max(0, Math.min(63, Math.round(x[v] / step) + 32)) : 32;
      out[ql + 64 * h + l + 32 * (r & 1)] |= r < 2 ? q & 15 : (q & 15) << 4;
      out[qh + 32 * h + l] |= (q >> 4) << (2 * r);
    }
  }
  return out;
}

/** FP32 -> F16 bytes. */
export function toF16Bytes(values) {
  const out = Buffer.alloc(values.length * 2);
  for (let i = 0; i < values.length; i++) out.writeUInt16LE(toF16(values[i]), 2 * i);
  return out;
}

export function f32Bytes(values) {
  return Buffer.from(values.buffer, values.byteOffset, values.byteLength);
}

// ---- a Llama vocabulary ------------------------------------------------------------------------------------

/**
 * tokenizer.ggml.* of a minimal sentencepiece ('llama') vocabulary of `vocabSize` tokens: <unk> 0, <s> 1,
 * </s> 2, the 256 byte tokens <0x00>..<0xFF> (3..258) that sentencepiece's byte fallback needs, then filler
 * pieces. The benchmarks feed token ids, so the vocabulary only has to load.
 */
export function llamaVocabMetadata(vocabSize) {
  if (vocabSize < 259) throw new Error(`a llama vocabulary here needs >= 259 tokens, got ${vocabSize}`);
  const tokens = [], scores = [], types = [];
  const add = (piece, score, type) => { tokens.push(piece); scores.push(score); types.push(type); };
  add('<unk>', 0, 2);
  add('<s>', 0, 3);
  add('</s>', 0, 3);
  for (let b = 0; b < 256; b++) add(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`, 0, 6);
  for (let i = tokens.length; i < vocabSize; i++) add(`\u2581t${i}`, -i, 1);
  return [
    ['tokenizer.ggml.model', meta.str('llama')],
    ['tokenizer.ggml.tokens', meta.arr('str', tokens)],
    ['tokenizer.ggml.scores', meta.arr('f32', scores)],
    ['tokenizer.ggml.token_type', meta.arr('i32', types)],
    ['tokenizer.ggml.unknown_token_id', meta.u32(0)],
    ['tokenizer.ggml.bos_token_id', meta.u32(1)],
    ['tokenizer.ggml.eos_token_id', meta.u32(2)],
    ['tokenizer.ggml.add_bos_token', meta.bool(false)],
    ['tokenizer.ggml.add_eos_token', meta.bool(false)],
  ];
}

/** general.* and llama.* hyper-parameters from a w4a8 ModelConfig. fileType 2 = "mostly Q4_0". */
export function llamaMetadata(config, name, contextLength = config.maxSeqLen) {
  return [
    ['general.architecture', meta.str('llama')],
    ['general.name', meta.str(name)],
    ['general.file_type', meta.u32(2)],
    ['llama.context_length', meta.u32(contextLength)],
    ['llama.embedding_length', meta.u32(config.dim)],
    ['llama.block_count', meta.u32(config.nLayers)],
    ['llama.feed_forward_length', meta.u32(config.hiddenDim)],
    ['llama.rope.dimension_count', meta.u32(config.headDim)],
    ['llama.attention.head_count', meta.u32(config.nHeads)],
    ['llama.attention.head_count_kv', meta.u32(config.nKvHeads)],
    ['llama.attention.layer_norm_rms_epsilon', meta.f32(config.rmsNormEps)],
    ['llama.rope.freq_base', meta.f32(config.ropeTheta)],
    ['llama.vocab_size', meta.u32(config.vocabSize)],
    ...llamaVocabMetadata(config.vocabSize),
  ];
}

/** GGUF tensor names of decoder layer i, by the Hugging Face projection name. */
export const GGUF_LINEAR = {
  q_proj: 'attn_q', k_proj: 'attn_k', v_proj: 'attn_v', o_proj: 'attn_output',
  gate_proj: 'ffn_gate', up_proj: 'ffn_up', down_proj: 'ffn_down',
};
