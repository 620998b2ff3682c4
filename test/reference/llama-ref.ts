/**
 * A plain float64 Llama forward pass for one sequence, written from the model definition (HF Llama:
 * rotate-half RoPE, GQA, SwiGLU), used to check the native runtime. Linear layers are callbacks so the
 * same code runs the FP32 source weights or the W4A8 semantics (FP8 activations per token, INT4->FP8
 * weights, computed with the test oracle).
 */
import type { ModelConfig, PackedModel, SourceModel } from '../../lib/model/types.js';
import { decode, encode, maxFinite, bf16Value, type Format } from '../oracle/fp8-oracle.js';

type Linear = (name: string, x: Float64Array) => Float64Array; // x [K] -> y [N]

export function referenceLogits(config: ModelConfig, tokens: number[], embedding: (t: number) => Float64Array,
  norm: (name: string) => Float32Array, linear: Linear, lmHead: (x: Float64Array) => Float64Array): Float64Array[] {
  const c = config;
  const keys: Float64Array[][] = Array.from({ length: c.nLayers }, () => []);
  const values: Float64Array[][] = Array.from({ length: c.nLayers }, () => []);
  const out: Float64Array[] = [];
  tokens.forEach((token, pos) => {
    let x = embedding(token);
    for (let l = 0; l < c.nLayers; l++) {
      const p = `model.layers.${l}`;
      const xb = rmsNorm(x, norm(`${p}.input_layernorm.weight`), c.rmsNormEps);
      const q = linear(`${p}.self_attn.q_proj`, xb);
      const k = linear(`${p}.self_attn.k_proj`, xb);
      const v = linear(`${p}.self_attn.v_proj`, xb);
      rope(q, c.nHeads, c.headDim, pos, c.ropeTheta);
      rope(k, c.nKvHeads, c.headDim, pos, c.ropeTheta);
      keys[l].push(k);
      values[l].push(v);
      const att = new Float64Array(c.nHeads * c.headDim);
      for (let h = 0; h < c.nHeads; h++) {
        const kvh = Math.floor(h / (c.nHeads / c.nKvHeads));
        const scores = keys[l].map((kt) => {
          let s = 0;
          for (let i = 0; i < c.headDim; i++) s += q[h * c.headDim + i] * kt[kvh * c.headDim + i];
          return s / Math.sqrt(c.headDim);
        });
        const m = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - m));
        const total = e.reduce((a, b) => a + b, 0);
        for (let t = 0; t < e.length; t++)
          for (let i = 0; i < c.headDim; i++) att[h * c.headDim + i] += (e[t] / total) * values[l][t][kvh * c.headDim + i];
      }
      x = add(x, linear(`${p}.self_attn.o_proj`, att));
      const xf = rmsNorm(x, norm(`${p}.post_attention_layernorm.weight`), c.rmsNormEps);
      const g = linear(`${p}.mlp.gate_proj`, xf);
      const u = linear(`${p}.mlp.up_proj`, xf);
      const h = g.map((gi, i) => (gi / (1 + Math.exp(-gi))) * u[i]);
      x = add(x, linear(`${p}.mlp.down_proj`, h));
    }
    out.push(lmHead(rmsNorm(x, norm('model.norm.weight'), c.rmsNormEps)));
  });
  return out;
}

function rmsNorm(x: Float64Array, w: Float32Array, eps: number): Float64Array {
  let s = 0;
  for (const v of x) s += v * v;
  const inv = 1 / Math.sqrt(s / x.length + eps);
  return x.map((v, i) => v * inv * w[i]);
}

function rope(v: Float64Array, heads: number, headDim: number, pos: number, theta: number): void {
  const half = headDim / 2;
  for (let i = 0; i < half; i++) {
    // The angle, cosine and sine rounded to FP32 as the runtime computes them: a different rounding
    // here could flip an FP8 activation downstream and make the comparison needlessly noisy.
    const angle = Math.fround(pos * Math.fround(theta ** ((-2 * i) / headDim)));
    const c = Math.fround(Math.cos(angle)), s = Math.fround(Math.sin(angle));
    for (let h = 0; h < heads; h++) {
      const a = v[h * headDim + i], b = v[h * headDim + i + half];
      v[h * headDim + i] = a * c - b * s;
      v[h * headDim + i + half] = b * c + a * s;
    }
  }
}

function add(a: Float64Array, b: Float64Array): Float64Array {
  return a.map((v, i) => v + b[i]);
}

function matVec(w: ArrayLike<number>, rows: number, cols: number, x: Float64Array, stride = cols): Float64Array {
  const y = new Float64Array(rows);
  for (let n = 0; n < rows; n++) {
    let s = 0;
    for (let k = 0; k < cols; k++) s += w[n * stride + k] * x[k];
    y[n] = s;
  }
  return y;
}

/** Logits of the FP32 source model at every position of `tokens`. */
export function sourceLogits(model: SourceModel, tokens: number[]): Float64Array[] {
  const c = model.config;
  const t = (name: string) => model.tensors.get(name)!;
  const emb = t('model.embed_tokens.weight');
  const head = c.tieEmbeddings ? emb : t('lm_head.weight');
  return referenceLogits(c, tokens,
    (tok) => Float64Array.from(emb.data.subarray(tok * c.dim, (tok + 1) * c.dim)),
    (name) => t(name).data as Float32Array,
    (name, x) => {
      const w = t(`${name}.weight`);
      const y = matVec(w.data, w.shape[0], w.shape[1], x);
      const bias = model.tensors.get(`${name}.bias`);
      return bias ? y.map((v, i) => v + bias.data[i]) : y;
    },
    (x) => matVec(head.data, c.vocabSize, c.dim, x));
}

/** Logits with the W4A8 semantics of a packed model (oracle FP8, float64 sums). */
export function packedLogits(model: PackedModel, tokens: number[]): Float64Array[] {
  const c = model.config;
  const t = (name: string) => model.tensors.get(name)!;
  const wf = model.quant.weightFormat as Format, af = model.quant.activationFormat as Format;
  const G = model.quant.groupSize;
  const dequantized = new Map<string, { w: Float64Array; rows: number; cols: number }>();
  const weightsOf = (name: string) => {
    let d = dequantized.get(name);
    if (d) return d;
    const codes = t(`${name}.qweight`), scales = t(`${name}.scales`).data, zeros = t(`${name}.zeros`).data;
    const sc = t(`${name}.channel_scale`).data;
    const [rows, half] = codes.shape, cols = half * 2, groups = cols / G;
    const w = new Float64Array(rows * cols);
    for (let n = 0; n < rows; n++)
      for (let k = 0; k < cols; k++) {
        const byte = codes.data[n * half + (k >> 1)];
        const q = k % 2 ? byte >> 4 : byte & 15;
        const g = n * groups + Math.floor(k / G);
        w[n * cols + k] = sc[n] * decode(encode(Math.fround(scales[g] * (q - zeros[g])), wf), wf);
      }
    d = { w, rows, cols };
    dequantized.set(name, d);
    return d;
  };
  const table = (name: string) => t(name).data as Uint16Array;
  const emb = table('model.embed_tokens.weight');
  const int4Head = model.quant.lmHead === 'w4a8';
  const head = c.tieEmbeddings || int4Head ? emb : table('lm_head.weight');
  const w4a8Linear = (name: string, x: Float64Array) => {
    const { w, rows, cols } = weightsOf(name);
    // Activations: fp32 values, per-token scale amax / FP8_MAX, FP8 codes; zero padding to cols.
    const x32 = Float32Array.from(x);
    let amax = 0;
    for (const v of x32) amax = Math.max(amax, Math.abs(v));
    const s = amax > 0 ? Math.fround(amax / maxFinite(af)) : 1;
    const x8 = new Float64Array(cols);
    for (let k = 0; k < x32.length; k++) x8[k] = decode(encode(Math.fround(x32[k] / s), af), af) * s;
    const y = matVec(w, rows, cols, x8);
    const bias = model.tensors.get(`${name}.bias`);
    return bias ? y.map((v, i) => v + bias.data[i]) : y;
  };
  return referenceLogits(c, tokens,
    (tok) => Float64Array.from(emb.subarray(tok * c.dim, (tok + 1) * c.dim), bf16Value),
    (name) => t(name).data as Float32Array,
    w4a8Linear,
    (x) => {
      // A W4A8 lm_head (quant.lmHead 'w4a8') is one more linear layer; else BF16 weights, FP32 input.
      if (int4Head) return w4a8Linear('lm_head', x);
      const hx = Float32Array.from(x);
      const y = new Float64Array(c.vocabSize);
      for (let n = 0; n < c.vocabSize; n++) {
        let s = 0;
        for (let k = 0; k < c.dim; k++) s += bf16Value(head[n * c.dim + k]) * hx[k];
        y[n] = s;
      }
      return y;
    });
}
