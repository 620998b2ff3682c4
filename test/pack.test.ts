// packModel and `w4a8 pack`: dequantized weights stay close to the source (4-bit error bound), K is
// zero-padded to the group size, embeddings become BF16 (round to nearest even), norms and biases stay
// exact, the result passes readPackedModel's validation; misuse gives typed errors.
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { packCommand } from '../lib/commands/pack.js';
import { W4a8Error } from '../lib/errors.js';
import { allLinearNames, int4Layer, linearShape, readPackedModel, writePackedModel } from '../lib/format/index.js';
import { decodeFp8, floatToBf16 } from '../lib/fp8.js';
import { importLlama2c } from '../lib/import/index.js';
import type { PackedModel, SourceModel, Tensor } from '../lib/model/types.js';
import { packModel, type PackOptions, type PackProgress } from '../lib/pack.js';
import { writeHfFolder } from './fixtures/hf-folder.js';
import { randomSource, tinyConfig } from './fixtures/models.js';
import { tempDir } from './fixtures/safetensors-bytes.js';
import { llama2cCheckpoints, missingModelsMessage } from './fixtures/shared-models.js';

const dir = tempDir('w4a8-pack-');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

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

/** Real weights of one packed linear layer [rows, Kp]: s_c[n] * fp8(s_g * (q - z)). */
function dequantized(model: PackedModel, linear: string): { values: Float32Array; rows: number; cols: number } {
  const w = int4Layer(model, linear);
  const values = decodeFp8(w.dequantize(), w.format);
  for (let n = 0; n < w.rows; n++) for (let k = 0; k < w.cols; k++) values[n * w.cols + k] *= w.channelScales[n];
  return { values, rows: w.rows, cols: w.cols };
}

/** Relative RMS error of the dequantized layer against the source over its K real inputs; the padding must be exactly 0. */
function layerError(model: PackedModel, source: SourceModel, linear: string): number {
  const { values, rows, cols: Kp } = dequantized(model, linear);
  const { cols: K } = linearShape(model.config, linear);
  expect(Kp, linear).toBe(Math.ceil(K / model.quant.groupSize) * model.quant.groupSize);
  const want = source.tensors.get(`${linear}.weight`)!.data as Float32Array;
  let err = 0, norm = 0, nonZeroPadding = 0;
  for (let n = 0; n < rows; n++) {
    for (let k = 0; k < K; k++) {
      err += (values[n * Kp + k] - want[n * K + k]) ** 2;
      norm += want[n * K + k] ** 2;
    }
    for (let k = K; k < Kp; k++) if (values[n * Kp + k] !== 0) nonZeroPadding++;
  }
  expect(nonZeroPadding, `${linear}: padded inputs ${K}..${Kp - 1} that dequantize to non-zero`).toBe(0);
  return Math.sqrt(err / norm);
}

function bytesOf(t: Tensor): Buffer {
  return Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

describe('packModel on a synthetic model', () => {
  it.each([
    { groupSize: 32 as const, weightFormat: 'e4m3fn' as const, scales: 'float' as const, symmetric: false, bound: 0.1 },
    { groupSize: 64 as const, weightFormat: 'e4m3' as const, scales: 'pow2' as const, symmetric: false, bound: 0.15 },
    { groupSize: 128 as const, weightFormat: 'e5m2' as const, scales: 'float' as const, symmetric: true, bound: 0.15 },
  ])('G=$groupSize $weightFormat $scales symmetric=$symmetric: every layer within $bound relative RMS, padding zero', async (o) => {
    const source = randomSource(tinyConfig(), 3);
    const model = await packModel(source, { ...o, method: 'rtn' });
    expect(model.quant).toEqual({ weightFormat: o.weightFormat, activationFormat: o.weightFormat, groupSize: o.groupSize, symmetric: o.symmetric, scales: o.scales, method: 'rtn' });
    for (const linear of allLinearNames(model.config)) expect(layerError(model, source, linear), linear).toBeLessThan(o.bound);
    expect(bytesOf(model.tensors.get('model.embed_tokens.weight')!)).toEqual(bytesOf({ dtype: 'BF16', shape: [], data: floatToBf16(source.tensors.get('model.embed_tokens.weight')!.data as Float32Array) }));
    expect(model.tensors.get('lm_head.weight')!.dtype).toBe('BF16');
    expect(model.tensors.get('model.layers.1.input_layernorm.weight')!.data).toEqual(source.tensors.get('model.layers.1.input_layernorm.weight')!.data);
  });

  it('keeps Qwen2 biases exact, ties embeddings, keeps a BF16 source embedding as is, and passes readPackedModel', async () => {
    const source = randomSource(tinyConfig({ qkvBias: true, tieEmbeddings: true }), 4);
    const embedding = floatToBf16(source.tensors.get('model.embed_tokens.weight')!.data as Float32Array);
    source.tensors.set('model.embed_tokens.weight', { dtype: 'BF16', shape: [40, 64], data: embedding });
    source.tokenizerJson = JSON.stringify({ // a tokenizer that loads (packModel refuses one that does not)
      version: '1.0', truncation: null, padding: null, added_tokens: [], normalizer: null, pre_tokenizer: { type: 'Whitespace' },
      post_processor: null, decoder: null, model: { type: 'WordLevel', vocab: { '<unk>': 0, hello: 1, world: 2 }, unk_token: '<unk>' },
    });
    source.chatTemplate = '{{ messages }}';
    const model = await packModel(source, { groupSize: 64, weightFormat: 'e4m3fn', activationFormat: 'e5m2', scales: 'float', method: 'rtn' });
    expect(model.quant.activationFormat).toBe('e5m2');
    expect(model.tensors.has('lm_head.weight')).toBe(false);
    expect(model.tensors.get('model.embed_tokens.weight')!.data).toBe(embedding);
    expect(model.tensors.get('model.layers.0.self_attn.v_proj.bias')!.data).toEqual(source.tensors.get('model.layers.0.self_attn.v_proj.bias')!.data);
    const file = path.join(dir, 'qwen.w4a8');
    await writePackedModel(file, model);
    const read = await readPackedModel(file);
    expect(read.chatTemplate).toBe('{{ messages }}');
    for (const [name, t] of model.tensors) expect(bytesOf(read.tensors.get(name)!).equals(bytesOf(t)), name).toBe(true);
  });

  it.each([false, true])('packs lm_head as a W4A8 layer with lmHead w4a8 (tied embeddings: %s), within the 4-bit bound, readable', async (tied) => {
    const source = randomSource(tinyConfig({ tieEmbeddings: tied }), 7);
    const model = await packModel(source, { groupSize: 32, method: 'rtn', lmHead: 'w4a8' });
    expect(model.quant.lmHead).toBe('w4a8');
    expect(model.tensors.has('lm_head.weight')).toBe(false);
    expect(model.tensors.get('model.embed_tokens.weight')!.dtype).toBe('BF16');
    expect(model.tensors.get('lm_head.qweight')!.shape).toEqual([40, 32]);
    // Tied: lm_head is quantized from the embedding.
    const head = source.tensors.get(tied ? 'model.embed_tokens.weight' : 'lm_head.weight')!;
    const withHead = { ...source, tensors: new Map(source.tensors).set('lm_head.weight', head) };
    expect(layerError(model, withHead, 'lm_head')).toBeLessThan(0.1);
    const file = path.join(dir, `head-${tied}.w4a8`);
    await writePackedModel(file, model);
    const read = await readPackedModel(file);
    expect(read.quant.lmHead).toBe('w4a8');
    for (const [name, t] of model.tensors) expect(bytesOf(read.tensors.get(name)!).equals(bytesOf(t)), name).toBe(true);
    // The quantization config and the tensors must agree, and lm_head's scales are checked like any layer's.
    const { lmHead: _, ...bf16Quant } = model.quant;
    await expectCode(() => writePackedModel(file, { ...model, quant: bf16Quant }), 'E_SHAPE',
      tied ? "unexpected tensor 'lm_head.qweight'" : "missing tensor 'lm_head.weight'");
    const badScales = new Map(model.tensors).set('lm_head.scales', { ...model.tensors.get('lm_head.scales')!, data: new Float32Array(40).fill(-1) });
    await expectCode(() => writePackedModel(file, { ...model, tensors: badScales }), 'E_SCALE', 'lm_head.scales');
  });

  it('reports progress once per linear layer, in any order but counting up to the total', async () => {
    const seen: PackProgress[] = [];
    await packModel(randomSource(tinyConfig(), 5), { groupSize: 32, concurrency: 3 }, (p) => seen.push(p));
    expect(seen.map((p) => p.done)).toEqual(Array.from({ length: 14 }, (_, i) => i + 1));
    expect(new Set(seen.map((p) => p.linear)).size).toBe(14);
    expect(seen.every((p) => p.total === 14 && (p.layer === 0 || p.layer === 1))).toBe(true);
  });

  const source = randomSource(tinyConfig(), 6);
  const withTensor = (name: string, t: Tensor | undefined): SourceModel => {
    const tensors = new Map(source.tensors);
    if (t) tensors.set(name, t);
    else tensors.delete(name);
    return { ...source, tensors };
  };
  const q = 'model.layers.0.self_attn.q_proj.weight';
  it.each([
    { label: 'method gptq without calibration', options: { method: 'gptq' }, code: 'E_OPTION', message: 'needs options.calibration' },
    { label: 'method dpq without calibration', options: { method: 'dpq' }, code: 'E_OPTION', message: 'needs options.calibration' },
    { label: 'an unknown method', options: { method: 'awq' }, code: 'E_OPTION', message: 'options.method' },
    { label: 'group size 48', options: { groupSize: 48 }, code: 'E_GROUP', message: 'options.groupSize' },
    { label: 'an unknown FP8 format', options: { weightFormat: 'e3m4' }, code: 'E_FORMAT', message: 'options.weightFormat' },
    { label: 'an unknown scale kind', options: { scales: 'log' }, code: 'E_OPTION', message: 'options.scales' },
    { label: 'concurrency 0', options: { concurrency: 0 }, code: 'E_OPTION', message: 'options.concurrency' },
    { label: 'an FP8 lm_head', options: { lmHead: 'fp8' }, code: 'E_OPTION', message: 'options.lmHead' },
  ])('refuses $label', async ({ options, code, message }) => {
    await expectCode(() => packModel(source, options as unknown as PackOptions), code, message);
  });

  it.each([
    { label: 'a missing tensor', model: () => withTensor(q, undefined), code: 'E_SHAPE', message: q },
    { label: 'a wrong shape', model: () => withTensor(q, { dtype: 'F32', shape: [32, 128], data: new Float32Array(4096) }), code: 'E_SHAPE', message: 'implies [64, 64]' },
    { label: 'a short data array', model: () => withTensor(q, { dtype: 'F32', shape: [64, 64], data: new Float32Array(10) }), code: 'E_LENGTH', message: q },
    { label: 'U8 weights', model: () => withTensor(q, { dtype: 'U8', shape: [64, 64], data: new Uint8Array(4096) }), code: 'E_TYPE', message: q },
    { label: 'an unexpected tensor', model: () => withTensor('model.layers.0.mlp.fc.weight', { dtype: 'F32', shape: [1], data: new Float32Array(1) }), code: 'E_SHAPE', message: 'mlp.fc' },
    { label: 'a NaN weight', model: () => withTensor(q, { dtype: 'F32', shape: [64, 64], data: new Float32Array(4096).fill(0.5).fill(NaN, 70, 71) }), code: 'E_FILE', message: 'NaN at [1, 6]' },
    { label: 'an invalid config', model: () => ({ ...source, config: { ...source.config, nKvHeads: 3 } }), code: 'E_OPTION', message: 'nKvHeads' },
    // (found by fuzzing the importers: these packed, and the file failed only when loaded or generating)
    { label: 'a NaN embedding', model: () => withTensor('model.embed_tokens.weight', { dtype: 'F32', shape: [40, 64], data: new Float32Array(40 * 64).fill(NaN, 65, 66) }), code: 'E_FILE', message: 'NaN at [1, 1]' },
    { label: 'a tokenizer that does not load', model: () => ({ ...source, tokenizerJson: '{"model": {}}' }), code: 'E_FILE', message: 'tokenizer cannot be loaded' },
  ])('refuses a source with $label', async ({ model, code, message }) => {
    await expectCode(() => packModel(model(), { groupSize: 32 }), code, message);
  });
});

const checkpoints = llama2cCheckpoints();
if (checkpoints.length === 0) console.warn(missingModelsMessage('llama2.c checkpoint'));
const trained = checkpoints[0];

describe('packing trained weights (the first llama2.c checkpoint in ../shared/models)', () => {
  if (!trained) {
    it.skip(`${missingModelsMessage('llama2.c checkpoint')}`, () => undefined);
    return;
  }
  it.each([32, 64, 128] as const)(`${path.basename(trained ?? '')}: G=%i, every layer within 4-bit error, K padded, file valid`, async (groupSize) => {
    const source = await importLlama2c(trained);
    const start = performance.now();
    const model = await packModel(source, { groupSize, weightFormat: 'e4m3fn', scales: 'float', method: 'rtn' });
    const ms = performance.now() - start;
    const errors = allLinearNames(model.config).map((linear) => layerError(model, source, linear));
    const worst = Math.max(...errors);
    console.log(`${path.basename(trained)} G=${groupSize}: packed in ${ms.toFixed(0)} ms, relative RMS error mean ${(errors.reduce((a, b) => a + b) / errors.length).toFixed(4)}, worst ${worst.toFixed(4)}`);
    // Asymmetric INT4 per group: a step of range/15, so an RMS error near 0.1 of the weights' RMS on Gaussian-like weights.
    expect(worst).toBeLessThan(0.16);
    const file = path.join(dir, `trained-${groupSize}.w4a8`);
    await writePackedModel(file, model);
    const read = await readPackedModel(file);
    expect(read.config).toEqual(model.config);
    const down = read.tensors.get('model.layers.0.mlp.down_proj.qweight')!;
    expect(down.shape).toEqual([model.config.dim, Math.ceil(model.config.hiddenDim / groupSize) * groupSize / 2]);
  });
});

describe('w4a8 pack', () => {
  const run = async (args: string[]) => {
    const lines: string[] = [];
    let progress = '';
    await packCommand(args, { log: (l) => lines.push(l), progress: { write: (s: string) => ((progress += s), true), isTTY: false } as unknown as NodeJS.WritableStream });
    return { lines, progress };
  };

  it('packs a Hugging Face folder with every option, printing a line per layer and a summary', async () => {
    const f = await writeHfFolder(path.join(dir, 'hf'), { architecture: 'Qwen2ForCausalLM', dtype: 'BF16', shards: 1, tie: false });
    const out = path.join(dir, 'cli-hf.w4a8');
    const { lines, progress } = await run([f.dir, '-o', out, '--group', '64', '--fp8', 'e4m3', '--act-fp8', 'e4m3fn', '--scales', 'pow2', '--symmetric', '--method', 'rtn']);
    expect(progress).toBe('packed layer 1/2\npacked layer 2/2\n');
    expect(lines[0]).toMatch(/^imported hf \(Hugging Face\): dim 64, MLP 80, 2 layers, 4\/2 heads, vocab 263, .*tokenizer, chat template/);
    expect(lines[1]).toMatch(/^packed 14 linear layers: RTN, G=64, symmetric, pow2 scales, weights e4m3, activations e4m3fn/);
    expect(lines[2]).toMatch(/^wrote .*cli-hf\.w4a8: \d+ tensors, [\d.]+ MB/);
    const model = await readPackedModel(out);
    expect(model.quant).toEqual({ weightFormat: 'e4m3', activationFormat: 'e4m3fn', groupSize: 64, symmetric: true, scales: 'pow2', method: 'rtn' });
    expect(model.config.qkvBias).toBe(true);
    expect(model.tokenizerJson).toBe(readFileSync(path.join(f.dir, 'tokenizer.json'), 'utf8'));
  });

  it.skipIf(!trained)('packs a llama2.c checkpoint, with --lm-head w4a8 too', async () => {
    const out = path.join(dir, 'cli-llama2c.w4a8');
    const { lines } = await run([trained!, '-o', out]);
    expect(lines[0]).toContain('(llama2.c)');
    expect((await readPackedModel(out)).quant.groupSize).toBe(128);
    const head = await run([trained!, '-o', out, '--lm-head', 'w4a8']);
    expect(head.lines[1]).toContain('lm_head W4A8');
    expect(head.progress).toContain('packed lm_head\n');
    const model = await readPackedModel(out);
    expect(model.quant.lmHead).toBe('w4a8');
    expect(model.tensors.has('lm_head.qweight')).toBe(true);
  });

  it.each([
    { label: 'no output', args: ['x'], code: 'E_OPTION', message: '--output is required' },
    { label: 'no input', args: ['-o', 'x.w4a8'], code: 'E_OPTION', message: 'one model path' },
    { label: 'an unknown flag', args: ['x', '-o', 'y', '--fast'], code: 'E_OPTION', message: '--fast' },
    { label: 'a bad group', args: ['x', '-o', 'y', '--group', '100'], code: 'E_GROUP', message: '--group' },
    { label: 'a bad format', args: ['x', '-o', 'y', '--fp8', 'fp8'], code: 'E_FORMAT', message: '--fp8' },
    { label: 'a bad scale kind', args: ['x', '-o', 'y', '--scales', 'int'], code: 'E_OPTION', message: '--scales' },
    { label: 'a bad lm_head kind', args: ['x', '-o', 'y', '--lm-head', 'fp8'], code: 'E_OPTION', message: '--lm-head' },
    { label: 'a missing model', args: [path.join(dir, 'none'), '-o', 'y'], code: 'E_IO', message: 'cannot open' },
  ])('refuses $label', async ({ args, code, message }) => {
    await expectCode(() => run(args), code, message);
  });

  it('accepts --method gptq on the command line but asks for calibration data', async () => {
    const f = await writeHfFolder(path.join(dir, 'hf-gptq'), { architecture: 'LlamaForCausalLM', dtype: 'F32', shards: 1, tie: true, tokenizer: false });
    await expectCode(() => run([f.dir, '-o', path.join(dir, 'gptq.w4a8'), '--method', 'gptq']), 'E_OPTION', 'needs calibration data');
    await expectCode(() => run([f.dir, '-o', path.join(dir, 'rtn.w4a8'), '--gar']), 'E_OPTION', '--gar is for --method gptq or dpq');
  });

  it('packs with --method dpq --gar from sampled calibration sequences', async () => {
    const f = await writeHfFolder(path.join(dir, 'hf-dpq'), { architecture: 'LlamaForCausalLM', dtype: 'F32', shards: 1, tie: true, tokenizer: false });
    const out = path.join(dir, 'dpq.w4a8');
    const { lines } = await run([f.dir, '-o', out, '--method', 'dpq', '--gar', '--calib-sample', '--calib-count', '4', '--calib-length', '16', '--damp', '0.05']);
    expect(lines.join('\n')).toContain('calibration: 4 sequences, 64 tokens');
    expect(lines.join('\n')).toContain('DPQ+GAR');
    const model = await readPackedModel(out);
    expect(model.quant.method).toBe('dpq');
    expect(model.quant.details).toMatchObject({ order: 'gar', damp: 0.05 });
  });
});
