/**
 * `w4a8 eval <model> (--text FILE | --tokens FILE | --sample N) [--reference SOURCE] [...]`
 *   perplexity (sliding window), and with an FP32 reference the mean KL divergence of the token
 *   distributions and the top-1 agreement (lib/quant/evaluate.ts). <model> is a packed .w4a8 file or a
 *   source (Hugging Face folder, llama2.c checkpoint) run in FP32.
 * `w4a8 eval --models [DIR]`
 *   every trained model under DIR (default ../shared/models, or W4A8_MODELS) packed with each method
 *   (lib/quant/compare.ts) and evaluated on the same data: the README results table. `npm run eval`.
 * `w4a8 sample <source> -o tokens.json --count N --length L --seed S`
 *   token sequences sampled from the FP32 model, for models without a tokenizer.
 */
import { existsSync, readdirSync, statSync } from 'node:fs';
import { readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { W4a8Error } from '../errors.js';
import { readPackedModel } from '../format/packed-read.js';
import { importModel } from '../import/index.js';
import { looksLikeLlama2c } from '../import/llama2c.js';
import { createNativeModel, createReferenceNativeModel } from '../model/native-model.js';
import type { ModelConfig, SourceModel } from '../model/types.js';
import type { NativeModelHandle } from '../native.js';
import { compareMethods, markdownTable, type CompareRow } from '../quant/compare.js';
import { loadSequences, tokenizeText } from '../quant/data.js';
import { evaluateModel } from '../quant/evaluate.js';
import { cutSequences, readTokenFile, sampleSequences, writeTokenFile } from '../quant/tokens.js';
import type { GroupSize } from '../weights.js';
import { DEFAULT_KV_CACHE, KV_CACHE_TYPES } from '../model/types.js';
import { choice } from './generate.js';

export const EVAL_USAGE = `w4a8 eval <model.w4a8 | model-dir | file.bin> [options]
  --text FILE          evaluation text, tokenized with the model's tokenizer (one stream, sliding window)
  --tokens FILE        token ids instead (JSON [[ids...], ...] or one sequence per line)
  --sample N           N sequences sampled from the --reference model (models without a tokenizer)
  --length L           tokens per sampled sequence (default 256), --seed S (default 2)
  --reference SOURCE   the FP32 model (Hugging Face folder or llama2.c .bin): adds KLD and top-1 agreement
  --context N          window length (default min(512, model context)); --stride N (default context/2)
  --max-tokens N       evaluate at most N tokens of --text (default all)
  --json FILE          also write the result as JSON
  --kv-cache bf16|f32  KV cache elements of the evaluated model (default bf16)
w4a8 eval --models [DIR] [--group G] [--json FILE]
  every trained model under DIR (default ../shared/models or W4A8_MODELS): FP32, W4A16-RTN, W4A8-RTN,
  W4A8-GPTQ, W4A8-DPQ, W4A8-DPQ+GAR on the same data, as a Markdown table (npm run eval)
  --calib-count N (default 64) --calib-length L (default 256) --eval-count N (default 64)
  --eval-length L (default 256) --eval-tokens N (text: default 16384)`;

export const SAMPLE_USAGE = `w4a8 sample <model-dir | file.bin> -o tokens.json [options]
  sequences sampled from the FP32 model (temperature 1 unless --temperature): token ids for
  calibration (pack --calib-tokens) and evaluation (eval --tokens) of models without a tokenizer
  --count N (default 64)  --length L (default 256)  --seed S (default 1)  --temperature T (default 1)`;

export interface EvalOutput {
  log: (line: string) => void;
  progress: NodeJS.WritableStream & { isTTY?: boolean };
}

const DEFAULT_OUTPUT: EvalOutput = { log: (line) => console.log(line), progress: process.stderr };

function int(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new W4a8Error('E_OPTION', `--${name} must be a positive integer, got '${value}'`);
  return n;
}

function optionalInt(value: string | undefined, name: string): number | undefined {
  return value === undefined ? undefined : int(value, name, 0);
}

async function isPacked(file: string): Promise<boolean> {
  try {
    return (await stat(file)).isFile() && file.endsWith('.w4a8');
  } catch (error) {
    throw new W4a8Error('E_IO', `cannot open '${file}': ${(error as Error).message}`);
  }
}

function percent(x: number): string {
  return `${(x * 100).toFixed(2)}%`;
}

export async function evalCommand(args: string[], output: EvalOutput = DEFAULT_OUTPUT): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      args, allowPositionals: true,
      options: {
        text: { type: 'string' }, tokens: { type: 'string' }, sample: { type: 'string' }, length: { type: 'string' },
        seed: { type: 'string' }, reference: { type: 'string' }, context: { type: 'string' }, stride: { type: 'string' },
        'max-tokens': { type: 'string' }, json: { type: 'string' }, models: { type: 'boolean' }, group: { type: 'string' },
        'calib-count': { type: 'string' }, 'calib-length': { type: 'string' }, 'eval-count': { type: 'string' },
        'eval-length': { type: 'string' }, 'eval-tokens': { type: 'string' }, 'kv-cache': { type: 'string' },
      },
    });
  } catch (error) {
    throw new W4a8Error('E_OPTION', `${(error as Error).message}\n${EVAL_USAGE}`);
  }
  const { values, positionals } = parsed;
  if (values.models) return evalModels(positionals, values, output);
  if (positionals.length !== 1) throw new W4a8Error('E_OPTION', `one model path is required, got ${positionals.length}\n${EVAL_USAGE}`);
  const file = positionals[0];
  const sources = [values.text, values.tokens, values.sample].filter((v) => v !== undefined).length;
  if (sources !== 1) throw new W4a8Error('E_OPTION', `give exactly one of --text, --tokens, --sample\n${EVAL_USAGE}`);
  if (values.sample !== undefined && values.reference === undefined)
    throw new W4a8Error('E_OPTION', '--sample draws from the FP32 model: give it with --reference');

  let start = performance.now();
  let config: ModelConfig;
  let handle: NativeModelHandle;
  let tokenizer: { tokenizerJson?: string; tokenizerConfigJson?: string };
  const kvCache = choice(values['kv-cache'], KV_CACHE_TYPES, '--kv-cache', DEFAULT_KV_CACHE);
  if (await isPacked(file)) {
    const packed = await readPackedModel(file);
    config = packed.config;
    handle = createNativeModel(packed, kvCache);
    tokenizer = packed;
    output.log(`model ${path.basename(file)}: W4A8-${packed.quant.method.toUpperCase()}${packed.quant.details?.order === 'gar' ? '+GAR' : ''}, ` +
      `G=${packed.quant.groupSize}, weights ${packed.quant.weightFormat}, activations ${packed.quant.activationFormat}` +
      `, KV cache ${kvCache}`);
  } else {
    const source = await importModel(file);
    config = source.config;
    handle = createReferenceNativeModel(source, kvCache);
    tokenizer = source;
    output.log(`model ${path.basename(file)}: FP32 source, KV cache ${kvCache}`);
  }
  let reference: NativeModelHandle | undefined;
  let referenceSource: SourceModel | undefined;
  try {
    if (values.reference !== undefined) {
      referenceSource = await importModel(values.reference);
      const r = referenceSource.config;
      if (r.vocabSize !== config.vocabSize || r.dim !== config.dim || r.nLayers !== config.nLayers)
        throw new W4a8Error('E_OPTION', `--reference ${values.reference} is not the model's source (vocab/dim/layers differ)`);
      reference = createReferenceNativeModel(referenceSource);
    }
    let sequences: Int32Array[];
    let data: string;
    if (values.text !== undefined) {
      let stream = tokenizeText(tokenizer, await readFile(values.text, 'utf8').catch((error: Error) => {
        throw new W4a8Error('E_IO', `cannot read '${values.text}': ${error.message}`);
      }), '--text');
      const max = optionalInt(values['max-tokens'], 'max-tokens');
      if (max !== undefined) stream = stream.subarray(0, max);
      sequences = [stream];
      data = `${values.text} (${stream.length} tokens)`;
    } else if (values.tokens !== undefined) {
      sequences = await readTokenFile(values.tokens, config.vocabSize);  // long sequences: sliding windows
      data = values.tokens;
    } else {
      sequences = await loadSequences(config, {
        sample: true, count: int(values.sample, 'sample', 1), length: int(values.length, 'length', 256), seed: int(values.seed, 'seed', 2),
      }, 'evaluation', { source: referenceSource });
      data = `${sequences.length} sequences sampled from the reference, seed ${values.seed ?? 2}`;
    }
    const context = optionalInt(values.context, 'context'), stride = optionalInt(values.stride, 'stride');
    start = performance.now();
    const result = await evaluateModel(handle, sequences, config.vocabSize, config.maxSeqLen, {
      context, stride, reference,
      onProgress: output.progress.isTTY ? (done, total) => output.progress.write(`\revaluating ${done}/${total} tokens`) : undefined,
    });
    if (output.progress.isTTY) output.progress.write('\n');
    output.log(`data: ${data}; ${result.tokens} tokens scored in ${((performance.now() - start) / 1000).toFixed(1)} s`);
    output.log(`perplexity ${result.perplexity.toFixed(4)}` + (result.referencePerplexity !== undefined
      ? ` (FP32 reference ${result.referencePerplexity.toFixed(4)}), mean KLD ${result.kld!.toFixed(6)} ± ${result.kldStdErr!.toFixed(6)}, ` +
        `top-1 agreement ${percent(result.top1!)}` : ''));
    if (values.json !== undefined) await writeFile(values.json, `${JSON.stringify({ model: file, data, ...result }, null, 2)}\n`);
  } finally {
    handle.dispose();
    reference?.dispose();
  }
}

interface FoundModel {
  name: string;
  path: string;
  /** Text files beside it (for models with a tokenizer). */
  texts: string[];
}

/** Trained models one folder below dir: Hugging Face folders (config.json) and llama2.c checkpoints. */
export function findModels(dir: string): FoundModel[] {
  if (!existsSync(dir)) return [];
  const found: FoundModel[] = [];
  for (const entry of readdirSync(dir).sort()) {
    const folder = path.join(dir, entry);
    if (!statSync(folder).isDirectory()) continue;
    const files = readdirSync(folder).sort();
    const texts = files.filter((f) => f.endsWith('.txt')).map((f) => path.join(folder, f));
    if (files.includes('config.json')) {
      found.push({ name: entry, path: folder, texts });
      continue;
    }
    for (const f of files)
      if (f.endsWith('.bin') && f !== 'tokenizer.bin' && looksLikeLlama2c(path.join(folder, f)))
        found.push({ name: f.replace(/\.bin$/, ''), path: path.join(folder, f), texts });
  }
  return found;
}

function defaultModelsDir(): string {
  return process.env.W4A8_MODELS ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'shared', 'models');
}

/** Calibration and evaluation data of a model: its text (first half calibrates, second half evaluates), or FP32 samples. */
async function modelData(model: FoundModel, source: SourceModel, o: Record<string, string | boolean | undefined>) {
  const c = source.config;
  const calibCount = int(o['calib-count'] as string | undefined, 'calib-count', 64);
  const calibLength = Math.min(c.maxSeqLen, int(o['calib-length'] as string | undefined, 'calib-length', 256));
  if (source.tokenizerJson && model.texts.length > 0) {
    const pick = (re: RegExp) => model.texts.find((t) => re.test(path.basename(t)));
    const calibFile = pick(/calib|train/i), evalFile = pick(/eval|valid|test/i);
    const read = async (f: string) => tokenizeText(source, await readFile(f, 'utf8'), f);
    let calibStream: Int32Array, evalStream: Int32Array, description: string;
    if (calibFile && evalFile && calibFile !== evalFile) {
      [calibStream, evalStream] = [await read(calibFile), await read(evalFile)];
      description = `text: calibration ${path.basename(calibFile)}, evaluation ${path.basename(evalFile)}`;
    } else {
      const all = await read(model.texts[0]);
      const half = Math.floor(all.length / 2);
      [calibStream, evalStream] = [all.subarray(0, half), all.subarray(half)];
      description = `text ${path.basename(model.texts[0])}: first half calibrates, second half evaluates`;
    }
    const evalTokens = int(o['eval-tokens'] as string | undefined, 'eval-tokens', 16384);
    return {
      calibration: cutSequences(calibStream, calibCount, calibLength),
      evaluation: [evalStream.subarray(0, evalTokens)],
      description,
    };
  }
  const evalCount = int(o['eval-count'] as string | undefined, 'eval-count', 64);
  const evalLength = Math.min(c.maxSeqLen, int(o['eval-length'] as string | undefined, 'eval-length', 256));
  const sample = (count: number, length: number, seed: number) =>
    loadSequences(c, { sample: true, count, length, seed }, 'samples', { source });
  return {
    calibration: await sample(calibCount, calibLength, 1),
    evaluation: await sample(evalCount, evalLength, 2),
    description: `no tokenizer/text: sequences sampled from the FP32 model at temperature 1 (calibration seed 1: ` +
      `${calibCount} x ${calibLength} tokens; evaluation seed 2: ${evalCount} x ${evalLength} tokens)`,
  };
}

async function evalModels(positionals: string[], o: Record<string, string | boolean | undefined>, output: EvalOutput): Promise<void> {
  if (positionals.length > 1) throw new W4a8Error('E_OPTION', `--models takes one folder, got ${positionals.length}`);
  const dir = positionals[0] ?? defaultModelsDir();
  const groupSize = Number(o.group ?? 128) as GroupSize;
  if (![32, 64, 128].includes(groupSize)) throw new W4a8Error('E_GROUP', `--group must be 32, 64 or 128, got '${String(o.group)}'`);
  const models = findModels(dir);
  if (models.length === 0) {
    output.log(`SKIPPED: no trained model found under ${dir} (set W4A8_MODELS or pass a folder)`);
    return;
  }
  const report: { model: string; data: string; groupSize: number; rows: CompareRow[] }[] = [];
  for (const model of models) {
    const source = await importModel(model.path);
    const c = source.config;
    const data = await modelData(model, source, o);
    output.log(`\n${model.name}: dim ${c.dim}, MLP ${c.hiddenDim}, ${c.nLayers} layers, vocab ${c.vocabSize}; G=${groupSize}, e4m3fn; ${data.description}`);
    if (!output.progress.isTTY) output.progress.write(`evaluating ${model.name} ...\n`);
    const rows = await compareMethods(source, {
      groupSize, calibration: data.calibration, evaluation: data.evaluation,
      onRow: (row) => output.progress.write(`  ${row.name}: perplexity ${row.result.perplexity.toFixed(3)}\n`),
    });
    for (const line of markdownTable(model.name, rows)) output.log(line);
    report.push({ model: model.name, data: data.description, groupSize, rows });
  }
  if (typeof o.json === 'string') await writeFile(o.json, `${JSON.stringify(report, null, 2)}\n`);
}

export async function sampleCommand(args: string[], output: EvalOutput = DEFAULT_OUTPUT): Promise<void> {
  let parsed;
  try {
    parsed = parseArgs({
      args, allowPositionals: true,
      options: {
        output: { type: 'string', short: 'o' }, count: { type: 'string' }, length: { type: 'string' }, seed: { type: 'string' },
        temperature: { type: 'string' },
      },
    });
  } catch (error) {
    throw new W4a8Error('E_OPTION', `${(error as Error).message}\n${SAMPLE_USAGE}`);
  }
  const { values, positionals } = parsed;
  if (positionals.length !== 1) throw new W4a8Error('E_OPTION', `one model path is required\n${SAMPLE_USAGE}`);
  if (!values.output) throw new W4a8Error('E_OPTION', `-o/--output is required\n${SAMPLE_USAGE}`);
  const temperature = values.temperature === undefined ? 1 : Number(values.temperature);
  if (!(temperature >= 0 && temperature <= 100)) throw new W4a8Error('E_OPTION', `--temperature must be in [0, 100], got '${values.temperature}'`);
  const source = await importModel(positionals[0]);
  const c = source.config;
  const count = int(values.count, 'count', 64), length = Math.min(c.maxSeqLen, int(values.length, 'length', 256));
  const seed = int(values.seed, 'seed', 1);
  const start = performance.now();
  const handle = createReferenceNativeModel(source);
  let sequences;
  try {
    sequences = await sampleSequences(handle, { count, length, seed, temperature, firstToken: c.bosTokenId ?? 1, vocabSize: c.vocabSize });
  } finally {
    handle.dispose();
  }
  await writeTokenFile(values.output, sequences);
  output.log(`wrote ${values.output}: ${count} sequences of ${length} tokens sampled from ${path.basename(positionals[0])} ` +
    `(FP32, temperature ${temperature}, seed ${seed}) in ${((performance.now() - start) / 1000).toFixed(1)} s`);
}
