// Importers: Hugging Face folders (Llama / Mistral / Qwen2, BF16 / F16 / F32, sharded or not, tied or
// not, tokenizer and chat template) and llama2.c checkpoints (versions 0 and 1, the shared
// stories260K model, the RoPE row permutation, tokenizer.bin conversion). Misuse is a typed error.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Template } from '@huggingface/jinja';
import { Tokenizer } from '@huggingface/tokenizers';
import { afterAll, describe, expect, it } from 'vitest';
import { W4a8Error } from '../lib/errors.js';
import { sourceTensorShapes, tensorToFloat32 } from '../lib/format/index.js';
import { configFromHuggingFace, importHuggingFace, importLlama2c, importModel, permuteRopeRows } from '../lib/import/index.js';
import { tokenizerJsonFromPieces } from '../lib/import/llama2c-tokenizer.js';
import type { SourceModel, Tensor } from '../lib/model/types.js';
import { writeHfFolder, type HfFolderOptions } from './fixtures/hf-folder.js';
import { randomLlama2cWeights, readFloats, readLlama2cHeader, writeLlama2c, writeTokenizerBin, type Llama2cShape } from './fixtures/llama2c.js';
import { tempDir } from './fixtures/safetensors-bytes.js';
import { llama2cCheckpoints, missingModelsMessage } from './fixtures/shared-models.js';
import { CHAT_TEMPLATE } from './fixtures/tokenizer.js';
import { rng } from './oracle/fp8-oracle.js';

const dir = tempDir('w4a8-import-');
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let folders = 0;

async function expectCode(run: () => Promise<unknown>, code: string, messagePart?: string): Promise<void> {
  try {
    await run();
  } catch (error) {
    expect(error, String(error)).toBeInstanceOf(W4a8Error);
    expect((error as W4a8Error).code, (error as Error).message).toBe(code);
    if (messagePart) expect((error as Error).message).toContain(messagePart);
    return;
  }
  expect.fail(`expected a W4a8Error ${code}`);
}

function hfFolder(options: HfFolderOptions, seed = 1) {
  return writeHfFolder(path.join(dir, `hf-${folders++}`), options, seed);
}

function expectTensorsEqual(model: SourceModel, expected: Map<string, Float32Array>) {
  expect([...model.tensors.keys()].sort()).toEqual([...expected.keys()].sort());
  for (const [name, want] of expected) expect(tensorToFloat32(name, model.tensors.get(name)!), name).toEqual(want);
}

describe('Hugging Face folders', () => {
  it('Llama, BF16 in 2 shards, untied, llama3 RoPE scaling, eos ids from generation_config, tokenizer and template', async () => {
    const f = await hfFolder({
      architecture: 'LlamaForCausalLM', dtype: 'BF16', shards: 2, tie: false,
      extraConfig: {
        eos_token_id: [262, 5],
        rope_scaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 },
      },
    });
    writeFileSync(path.join(f.dir, 'generation_config.json'), JSON.stringify({ eos_token_id: [262, 7], bos_token_id: 1 }));
    const model = await importHuggingFace(f.dir);
    expect(model.config).toEqual({
      ...f.config, eosTokenIds: [262, 5, 7],
      ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64 },
    });
    expectTensorsEqual(model, f.expected);
    // BF16 stays BF16, a view into the mapped shard.
    const embedding = model.tensors.get('model.embed_tokens.weight')!;
    expect(embedding.dtype).toBe('BF16');
    expect(embedding.data).toBeInstanceOf(Uint16Array);

    const tokenizer = new Tokenizer(JSON.parse(model.tokenizerJson!), JSON.parse(model.tokenizerConfigJson!));
    const encoded = tokenizer.encode('hello world');
    expect(encoded.tokens).toEqual(['hell', 'o', 'Ġwor', 'l', 'd']);
    expect(tokenizer.decode(encoded.ids)).toBe('hello world');
    expect(model.chatTemplate).toBe(CHAT_TEMPLATE);
    const rendered = new Template(model.chatTemplate!).render({
      messages: [{ role: 'user', content: 'hi' }], eos_token: '<|endoftext|>', add_generation_prompt: true,
    });
    expect(rendered).toBe('<|user|>hi<|endoftext|><|assistant|>');
  });

  it('Qwen2, F16 in 2 shards, tied embeddings, q/k/v biases', async () => {
    const f = await hfFolder({ architecture: 'Qwen2ForCausalLM', dtype: 'F16', shards: 2, tie: true, tokenizer: false });
    const model = await importHuggingFace(f.dir);
    expect(model.config).toEqual(f.config);
    expect(model.config.qkvBias).toBe(true);
    expect(model.tensors.has('lm_head.weight')).toBe(false);
    expect(model.tensors.get('model.layers.1.self_attn.k_proj.bias')!.shape).toEqual([32]);
    expectTensorsEqual(model, f.expected); // F16 widened exactly to F32
    expect(model.tensors.get('model.layers.0.self_attn.q_proj.weight')!.dtype).toBe('F32');
    expect(model.tokenizerJson).toBeUndefined();
  });

  it('Mistral, F32 in 3 shards: the sliding window bounds the context; a tied checkpoint may still carry lm_head', async () => {
    const f = await hfFolder({
      architecture: 'MistralForCausalLM', dtype: 'F32', shards: 3, tie: true, extraConfig: { sliding_window: 64 },
      editTensors: (t) => t.set('lm_head.weight', t.get('model.embed_tokens.weight')!),
    });
    const model = await importModel(f.dir);
    expect(model.config.maxSeqLen).toBe(64);
    expectTensorsEqual(model, f.expected);
  });

  it.each([
    { label: 'an unsupported architecture', hf: { architectures: ['GemmaForCausalLM'] }, code: 'E_UNSUPPORTED', message: 'GemmaForCausalLM' },
    { label: 'an unsupported activation', hf: { hidden_act: 'gelu' }, code: 'E_UNSUPPORTED', message: 'hidden_act' },
    { label: 'YaRN RoPE scaling', hf: { rope_scaling: { type: 'yarn', factor: 4 } }, code: 'E_UNSUPPORTED', message: 'yarn' },
    { label: 'YaRN in rope_parameters (transformers v5)', hf: { rope_parameters: { rope_type: 'yarn', factor: 4 } }, code: 'E_UNSUPPORTED', message: 'rope_parameters type' },
    { label: 'rope_parameters that are not an object', hf: { rope_parameters: 5 }, code: 'E_FILE', message: 'rope_parameters' },
    { label: 'an o_proj bias', hf: { attention_bias: true }, code: 'E_UNSUPPORTED', message: 'attention_bias' },
    { label: 'a missing size', hf: { hidden_size: undefined }, code: 'E_FILE', message: 'hidden_size' },
    { label: 'heads that do not divide', hf: { num_key_value_heads: 3 }, code: 'E_FILE', message: 'num_key_value_heads' },
    { label: 'an eos id outside the vocabulary', hf: { eos_token_id: 9999 }, code: 'E_FILE', message: 'eos_token_id' },
  ])('config.json with $label: $code', async ({ hf, code, message }) => {
    const base = {
      architectures: ['LlamaForCausalLM'], hidden_size: 64, intermediate_size: 80, num_hidden_layers: 2, num_attention_heads: 4,
      num_key_value_heads: 2, vocab_size: 100, max_position_embeddings: 128, eos_token_id: 2,
    };
    await expectCode(async () => configFromHuggingFace({ ...base, ...hf }, undefined, 'config.json'), code, message);
  });

  it("reads transformers v5's rope_parameters (theta and llama3 scaling; ignored before, leaving theta at its default)", () => {
    const base = { model_type: 'llama', hidden_size: 64, intermediate_size: 80, num_hidden_layers: 1, num_attention_heads: 4, vocab_size: 100, eos_token_id: 2 };
    expect(configFromHuggingFace({ ...base, rope_parameters: { rope_theta: 500000 } }, undefined, 'config.json'))
      .toMatchObject({ ropeTheta: 500000 });
    expect(configFromHuggingFace({ ...base, rope_parameters: { rope_theta: 500000, rope_type: 'default' } }, undefined, 'config.json').ropeScaling)
      .toBeUndefined();
    const llama3 = { rope_type: 'llama3', rope_theta: 500000, factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 };
    expect(configFromHuggingFace({ ...base, rope_parameters: llama3 }, undefined, 'config.json')).toMatchObject({
      ropeTheta: 500000, ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64 },
    });
    const { rope_type: _, ...untyped } = llama3; // the older 'type' key
    expect(configFromHuggingFace({ ...base, rope_parameters: { ...untyped, type: 'llama3' } }, undefined, 'config.json').ropeScaling)
      .toMatchObject({ type: 'llama3', factor: 8 });
    expect(() => configFromHuggingFace({ ...base, rope_scaling: { rope_type: 'default' }, rope_parameters: llama3 }, undefined, 'config.json'))
      .toThrow(expect.objectContaining({ code: 'E_FILE', message: expect.stringContaining('different RoPE scaling') }));
  });

  it('reads defaults and eos ids given as a number', () => {
    const config = configFromHuggingFace({
      model_type: 'llama', hidden_size: 64, intermediate_size: 80, num_hidden_layers: 1, num_attention_heads: 4, vocab_size: 100,
      eos_token_id: 2, rope_scaling: { type: 'linear', factor: 2 },
    }, undefined, 'config.json');
    expect(config).toMatchObject({ nKvHeads: 4, headDim: 16, ropeTheta: 10000, rmsNormEps: 1e-6, maxSeqLen: 2048, tieEmbeddings: false, eosTokenIds: [2], ropeScaling: { type: 'linear', factor: 2 } });
  });

  const broken: { label: string; options: Partial<HfFolderOptions>; after?: (dir: string) => void; code: string; message: string }[] = [
    { label: 'a missing tensor', options: { editTensors: (t) => t.delete('model.layers.1.mlp.up_proj.weight') }, code: 'E_FILE', message: "missing tensor 'model.layers.1.mlp.up_proj.weight'" },
    { label: 'a missing lm_head (untied)', options: { editTensors: (t) => t.delete('lm_head.weight') }, code: 'E_FILE', message: 'tie_word_embeddings' },
    {
      label: 'a tensor of the wrong shape', code: 'E_FILE', message: 'implies [64, 80]',
      options: { editTensors: (t) => t.set('model.layers.0.mlp.down_proj.weight', { dtype: 'F32', shape: [80, 64], data: new Float32Array(5120) }) },
    },
    {
      label: 'a tensor the runtime does not compute', code: 'E_UNSUPPORTED', message: 'o_proj.bias',
      options: { editTensors: (t) => t.set('model.layers.0.self_attn.o_proj.bias', { dtype: 'F32', shape: [64], data: new Float32Array(64) }) },
    },
    {
      label: 'an integer weight', code: 'E_FILE', message: 'floating-point',
      options: { shards: 1, editTensors: (t) => t.set('model.norm.weight', { dtype: 'U8', shape: [64], data: new Uint8Array(64) }) },
    },
    { label: 'a shard missing from the folder', options: {}, after: (d) => rmSync(path.join(d, 'model-00002-of-00002.safetensors')), code: 'E_IO', message: 'model-00002-of-00002' },
    {
      label: 'an index pointing outside the folder', options: {}, code: 'E_FILE', message: 'file name in the model folder',
      after: (d) => writeFileSync(path.join(d, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { 'model.norm.weight': '../x.safetensors' } })),
    },
    {
      label: 'an index listing a tensor its shard lacks', options: {}, code: 'E_FILE', message: "'model.fake' is listed",
      after: (d) => {
        const index = JSON.parse(readFileSync(path.join(d, 'model.safetensors.index.json'), 'utf8'));
        index.weight_map['model.fake'] = 'model-00001-of-00002.safetensors';
        writeFileSync(path.join(d, 'model.safetensors.index.json'), JSON.stringify(index));
      },
    },
    { label: 'no weights at all', options: {}, after: (d) => rmSync(path.join(d, 'model.safetensors.index.json')), code: 'E_FILE', message: 'no model.safetensors' },
    { label: 'tokenizer.json that is not JSON', options: {}, after: (d) => writeFileSync(path.join(d, 'tokenizer.json'), '{'), code: 'E_FILE', message: 'tokenizer.json' },
  ];
  it.each(broken)('a folder with $label: $code', async ({ options, after, code, message }) => {
    const f = await hfFolder({ architecture: 'LlamaForCausalLM', dtype: 'BF16', shards: 2, tie: false, ...options });
    after?.(f.dir);
    await expectCode(() => importHuggingFace(f.dir), code, message);
  });

  it('a path that is not a folder, or missing', async () => {
    const file = path.join(dir, 'plain.txt');
    writeFileSync(file, 'x');
    await expectCode(() => importHuggingFace(file), 'E_FILE', 'not a folder');
    await expectCode(() => importModel(path.join(dir, 'nothing-here')), 'E_IO');
    mkdirSync(path.join(dir, 'empty'));
    await expectCode(() => importHuggingFace(path.join(dir, 'empty')), 'E_FILE', 'config.json');
  });
});

/** RoPE on one head vector in place, llama2.c style (adjacent pairs) or HF style (halves). */
function rope(v: Float64Array, pos: number, convention: 'interleaved' | 'half'): Float64Array {
  const out = Float64Array.from(v);
  const half = v.length / 2;
  for (let i = 0; i < half; i++) {
    const angle = pos * 10000 ** (-(2 * i) / v.length);
    const [a, b] = convention === 'interleaved' ? [2 * i, 2 * i + 1] : [i, i + half];
    out[a] = v[a] * Math.cos(angle) - v[b] * Math.sin(angle);
    out[b] = v[a] * Math.sin(angle) + v[b] * Math.cos(angle);
  }
  return out;
}

function matVec(w: Float32Array, rows: number, cols: number, x: Float64Array, rowBegin: number, rowCount: number): Float64Array {
  const out = new Float64Array(rowCount);
  for (let r = 0; r < rowCount; r++) for (let c = 0; c < cols; c++) out[r] += w[(rowBegin + r) * cols + c] * x[c];
  return out;
}

describe('llama2.c checkpoints', () => {
  const shape: Llama2cShape = { dim: 32, hiddenDim: 48, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: 20, seqLen: 16, shared: false };
  const weights = randomLlama2cWeights(shape, 5);
  const v0 = path.join(dir, 'tiny-v0.bin');
  const v1 = path.join(dir, 'tiny-v1.bin');
  writeLlama2c(v0, shape, weights, 0);
  writeLlama2c(v1, shape, weights, 1);

  it('versions 0 and 1 of the same weights import to the same model, with HF names and an unshared classifier', async () => {
    const a = await importLlama2c(v0);
    const b = await importModel(v1);
    expect(a.config).toEqual(b.config);
    expect(a.config).toMatchObject({ dim: 32, hiddenDim: 48, nLayers: 2, nHeads: 4, nKvHeads: 2, headDim: 8, vocabSize: 20, maxSeqLen: 16, tieEmbeddings: false, bosTokenId: 1, eosTokenIds: [2], ropeTheta: 10000, rmsNormEps: 1e-5 });
    expect([...a.tensors.keys()]).toEqual([...b.tensors.keys()]);
    for (const [name, t] of a.tensors) expect(b.tensors.get(name)!.data, name).toEqual(t.data);
    for (const [name, s] of sourceTensorShapes(a.config)) expect(a.tensors.get(name)!.shape, name).toEqual(s);
    expect(a.tensors.get('lm_head.weight')!.data).toEqual(weights.wcls);
    // w1 = gate, w3 = up, w2 = down.
    const L1 = (w: Float32Array, n: number) => w.subarray(n * w.length / 2, (n + 1) * w.length / 2);
    expect(a.tensors.get('model.layers.1.mlp.gate_proj.weight')!.data).toEqual(L1(weights.w1, 1));
    expect(a.tensors.get('model.layers.1.mlp.up_proj.weight')!.data).toEqual(L1(weights.w3, 1));
    expect(a.tensors.get('model.layers.1.mlp.down_proj.weight')!.data).toEqual(L1(weights.w2, 1));
  });

  it('permuting wq/wk rows turns interleaved RoPE into rotate-half RoPE: attention scores are unchanged', async () => {
    const model = await importLlama2c(v0);
    const head = shape.dim / shape.nHeads;
    const kvDim = shape.nKvHeads * head;
    const random = rng(17);
    const x = Float64Array.from({ length: shape.dim }, () => random() * 2 - 1);
    const y = Float64Array.from({ length: shape.dim }, () => random() * 2 - 1);
    const layer = 1;
    const wqRaw = weights.wq.subarray(layer * shape.dim * shape.dim, (layer + 1) * shape.dim * shape.dim);
    const wkRaw = weights.wk.subarray(layer * kvDim * shape.dim, (layer + 1) * kvDim * shape.dim);
    const wq = model.tensors.get(`model.layers.${layer}.self_attn.q_proj.weight`)!.data as Float32Array;
    const wk = model.tensors.get(`model.layers.${layer}.self_attn.k_proj.weight`)!.data as Float32Array;
    for (let h = 0; h < shape.nHeads; h++) {
      const kvHead = Math.floor(h / (shape.nHeads / shape.nKvHeads));
      const score = (q: Float64Array, k: Float64Array) => q.reduce((s, v, i) => s + v * k[i], 0);
      const original = score(rope(matVec(wqRaw, shape.dim, shape.dim, x, h * head, head), 5, 'interleaved'),
        rope(matVec(wkRaw, kvDim, shape.dim, y, kvHead * head, head), 2, 'interleaved'));
      const converted = score(rope(matVec(wq, shape.dim, shape.dim, x, h * head, head), 5, 'half'),
        rope(matVec(wk, kvDim, shape.dim, y, kvHead * head, head), 2, 'half'));
      expect(converted, `head ${h}`).toBeCloseTo(original, 10);
    }
    // v and o are not permuted.
    expect(model.tensors.get(`model.layers.${layer}.self_attn.v_proj.weight`)!.data).toEqual(weights.wv.subarray(layer * kvDim * shape.dim, (layer + 1) * kvDim * shape.dim));
  });

  it('permuteRopeRows: new row j takes old row 2j, new row head/2 + j takes old row 2j + 1', () => {
    const w = Float32Array.from({ length: 2 * 4 * 3 }, (_, i) => Math.floor(i / 3)); // row r holds r
    expect(Array.from(permuteRopeRows(w, 2, 4, 3).filter((_, i) => i % 3 === 0))).toEqual([0, 2, 1, 3, 4, 6, 5, 7]);
  });

  it('refuses truncated, padded and Q8_0 checkpoints', async () => {
    const bytes = readFileSync(v0);
    for (const [name, data] of [['short', bytes.subarray(0, bytes.length - 4)], ['long', Buffer.concat([bytes, Buffer.alloc(4)])], ['tiny', bytes.subarray(0, 10)]] as const) {
      writeFileSync(path.join(dir, `${name}.bin`), data);
      await expectCode(() => importLlama2c(path.join(dir, `${name}.bin`)), 'E_FILE');
    }
    const q8 = Buffer.from(readFileSync(v1));
    q8.writeInt32LE(2, 4);
    writeFileSync(path.join(dir, 'q8.bin'), q8);
    await expectCode(() => importLlama2c(path.join(dir, 'q8.bin')), 'E_UNSUPPORTED', 'Q8_0');
    const badHeads = Buffer.from(bytes);
    badHeads.writeInt32LE(3, 16); // n_kv_heads 3 does not divide 4
    writeFileSync(path.join(dir, 'heads.bin'), badHeads);
    await expectCode(() => importLlama2c(path.join(dir, 'heads.bin')), 'E_FILE', 'nKvHeads');
  });

  it('converts a tokenizer.bin beside the checkpoint into a tokenizer.json that encodes like sentencepiece BPE', async () => {
    const folder = path.join(dir, 'with-tokenizer');
    mkdirSync(folder);
    const pieces = [
      { text: '<unk>', score: 0 }, { text: '\n<s>\n', score: 0 }, { text: '\n</s>\n', score: 0 },
      ...Array.from({ length: 256 }, (_, b) => ({ text: `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`, score: 0 })),
      ...[' ', 'a', 'b', 'c', ' a', 'ab', ' ab', 'ca', ' c'].map((text, i) => ({ text, score: -i })),
    ]; // 268 tokens
    const big: Llama2cShape = { ...shape, vocabSize: pieces.length };
    writeLlama2c(path.join(folder, 'model.bin'), big, randomLlama2cWeights(big, 3), 0);
    writeTokenizerBin(path.join(folder, 'tokenizer.bin'), pieces);
    const model = await importLlama2c(path.join(folder, 'model.bin'));
    const tokenizer = new Tokenizer(JSON.parse(model.tokenizerJson!), {});
    const encoded = tokenizer.encode('ab cab\n');
    expect(encoded.tokens).toEqual(['<s>', '▁ab', '▁c', 'ab', '<0x0A>']);
    expect(encoded.ids[0]).toBe(1);
    expect(tokenizer.decode(encoded.ids, { skip_special_tokens: true })).toBe('ab cab\n');
    await expectCode(() => importLlama2c(path.join(folder, 'model.bin'), { tokenizerPath: path.join(folder, 'nope.bin') }), 'E_IO');
    writeTokenizerBin(path.join(folder, 'tokenizer.bin'), pieces.slice(0, 100));
    await expectCode(() => importLlama2c(path.join(folder, 'model.bin')), 'E_FILE', 'tokens');
    expect(() => tokenizerJsonFromPieces(pieces)).not.toThrow();
    // (found by fuzzing: one 40,000-character piece took 25 s, the merge search was quadratic in its length)
    const started = performance.now();
    tokenizerJsonFromPieces([...pieces, { text: 'ab'.repeat(50_000), score: -1 }]);
    expect(performance.now() - started).toBeLessThan(2000);
  });

  it('refuses a FIFO given as a model file instead of waiting for a writer (found by fuzzing)', async () => {
    const dir = tempDir('w4a8-fifo-');
    const fifo = path.join(dir, 'model.bin');
    execFileSync('mkfifo', [fifo]);
    await expectCode(() => importLlama2c(fifo), 'E_FILE', 'not a regular file');
    const folder = path.join(dir, 'hf');
    mkdirSync(folder);
    execFileSync('mkfifo', [path.join(folder, 'config.json')]);
    await expectCode(() => importHuggingFace(folder), 'E_FILE', 'not a regular file');
  });
});

const checkpoints = llama2cCheckpoints();
if (checkpoints.length === 0) console.warn(missingModelsMessage('llama2.c checkpoint'));

describe('trained llama2.c checkpoints in ../shared/models', () => {
  if (checkpoints.length === 0) {
    it.skip(missingModelsMessage('llama2.c checkpoint'), () => undefined);
    return;
  }
  it.each(checkpoints)('%s: header, shapes, zero-copy views, wq/wk permutation against the raw file', async (file) => {
    const h = readLlama2cHeader(file);
    const model = await importLlama2c(file);
    const c = model.config;
    expect(c).toMatchObject({ dim: h.dim, hiddenDim: h.hiddenDim, nLayers: h.nLayers, nHeads: h.nHeads, nKvHeads: h.nKvHeads, vocabSize: h.vocabSize, maxSeqLen: h.seqLen, tieEmbeddings: h.shared });
    for (const [name, s] of sourceTensorShapes(c)) expect(model.tensors.get(name)?.shape, name).toEqual(s);
    const head = c.headDim, kvDim = c.nKvHeads * head, L = c.nLayers, dim = c.dim;
    const wqStart = h.vocabSize * dim + L * dim;
    const wkStart = wqStart + L * dim * dim;
    const layer = L - 1;
    const rawQ = readFloats(file, wqStart + layer * dim * dim, dim * dim);
    const rawK = readFloats(file, wkStart + layer * kvDim * dim, kvDim * dim);
    const q = model.tensors.get(`model.layers.${layer}.self_attn.q_proj.weight`)!.data as Float32Array;
    const k = model.tensors.get(`model.layers.${layer}.self_attn.k_proj.weight`)!.data as Float32Array;
    const row = (w: Float32Array, r: number) => Array.from(w.subarray(r * dim, (r + 1) * dim));
    for (const [hd, j] of [[0, 0], [1, 3], [c.nHeads - 1, head / 2 - 1]]) {
      expect(row(q, hd * head + j), `q head ${hd} row ${j}`).toEqual(row(rawQ, hd * head + 2 * j));
      expect(row(q, hd * head + head / 2 + j), `q head ${hd} row ${head / 2 + j}`).toEqual(row(rawQ, hd * head + 2 * j + 1));
    }
    const kh = c.nKvHeads - 1;
    expect(row(k, kh * head + 1)).toEqual(row(rawK, kh * head + 2));
    expect(row(k, kh * head + head / 2 + 1)).toEqual(row(rawK, kh * head + 3));
    // Unpermuted tensors are views into one mapping of the file.
    const mapped = ['model.embed_tokens.weight', 'model.layers.0.mlp.down_proj.weight', 'model.norm.weight'].map((n) => model.tensors.get(n)!.data.buffer);
    expect(new Set(mapped).size).toBe(1);
    const embedding = readFloats(file, 0, dim);
    expect(Array.from((model.tensors.get('model.embed_tokens.weight') as Tensor).data.subarray(0, dim))).toEqual(Array.from(embedding));
  });
});
