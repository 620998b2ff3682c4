/**
 * `w4a8 pack <model-dir|file.bin> -o model.w4a8 [options]`: imports a Hugging Face folder or a llama2.c
 * checkpoint, packs it to W4A8 (lib/pack.ts) and writes the .w4a8 file (lib/format). Progress goes to
 * stderr: a bar on a terminal, else one line per decoder layer; the summary goes to stdout.
 */
import { realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import cliProgress from 'cli-progress';
import { W4a8Error } from '../errors.js';
import { writePackedModel } from '../format/packed-write.js';
import { importHuggingFace } from '../import/hf.js';
import { importLlama2c } from '../import/llama2c.js';
import type { QuantMethod, SourceModel } from '../model/types.js';
import { packModel, type PackOptions } from '../pack.js';
import { loadSequences } from '../quant/data.js';
import { checkFormat } from '../validate.js';
import { choice, parseCommandArgs } from './generate.js';
import type { GroupSize } from '../weights.js';

export const PACK_USAGE = `w4a8 pack <model-dir|file.bin> -o <model.w4a8> [options]
  <model-dir>          Hugging Face folder (config.json + *.safetensors: Llama, Mistral, Qwen2)
  <file.bin>           llama2.c checkpoint (tokenizer.bin beside it is converted when present)
  -o, --output FILE    the packed model to write
  --group G            inputs per INT4 group: 32, 64 or 128 (default 128)
  --fp8 F              FP8 format of the dequantized weights: e4m3fn, e4m3 or e5m2 (default e4m3fn)
  --act-fp8 F          FP8 format of the activations (default: as --fp8)
  --scales S           group scales: float or pow2 (power of two, exact in E4M3; default float)
  --symmetric          symmetric INT4 (zero point 8) instead of asymmetric
  --method M           rtn (default), gptq (W4A8-GPTQ) or dpq (dual precision: composite INT4 -> FP8 error)
  --lm-head H          bf16 (default) or w4a8: lm_head packed like the linear layers (same method), a quarter
                       of its bytes per decoded token, at some cost in accuracy (see README)
  --tokenizer FILE     llama2.c tokenizer.bin (default: tokenizer.bin beside the checkpoint)
 gptq / dpq (calibrated, layer by layer; one of --calib-text, --calib-tokens, --calib-sample is required):
  --calib-text FILE    calibration text, tokenized with the model's tokenizer
  --calib-tokens FILE  calibration token ids (JSON [[ids...], ...] or one sequence per line)
  --calib-sample       sample the calibration sequences from the FP32 model (models without a tokenizer)
  --calib-count N      calibration sequences (default 64)
  --calib-length L     tokens per calibration sequence (default 256, at most the model's context)
  --calib-seed S       seed of --calib-sample (default 1; evaluate with another seed)
  --damp D             dampening: D * mean(diag H) added to diag(H) (default 0.01)
  --gar                group-aware reordering of the sweep (groups by max diag H, columns by diag H)
  --act-order          plain GPTQ act-order with static groups (group scales fixed before the sweep, so
                       the packed layout needs no runtime gather); for comparison, not with --gar
  --true-sequential    4 calibration passes per layer (o, gate/up, down inputs after q/k/v, o, gate/up
                       are quantized): a little more accurate, 4x the calibration time
  --scale-search / --no-scale-search
                       search each group's scale for the least Hessian-weighted error (default: on for dpq)`;

export interface CommandOutput {
  /** Summary lines. */
  log: (line: string) => void;
  /** Progress: a bar when it is a terminal, else plain lines. */
  progress: NodeJS.WritableStream & { isTTY?: boolean };
}

const DEFAULT_OUTPUT: CommandOutput = { log: (line) => console.log(line), progress: process.stderr };

function parse(args: string[]) {
  return parseCommandArgs({
    args, allowPositionals: true,
    options: {
      output: { type: 'string', short: 'o' }, group: { type: 'string' }, fp8: { type: 'string' }, 'act-fp8': { type: 'string' },
      scales: { type: 'string' }, symmetric: { type: 'boolean' }, method: { type: 'string' }, tokenizer: { type: 'string' },
      'lm-head': { type: 'string' },
      'calib-text': { type: 'string' }, 'calib-tokens': { type: 'string' }, 'calib-sample': { type: 'boolean' },
      'calib-count': { type: 'string' }, 'calib-length': { type: 'string' }, 'calib-seed': { type: 'string' },
      damp: { type: 'string' }, gar: { type: 'boolean' }, 'act-order': { type: 'boolean' }, 'true-sequential': { type: 'boolean' },
      'scale-search': { type: 'boolean' }, 'no-scale-search': { type: 'boolean' },
    },
  }, PACK_USAGE);
}

function positiveInt(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new W4a8Error('E_OPTION', `${name} must be a positive integer, got '${value}'`);
  return n;
}

function megabytes(bytes: number): string {
  return `${(bytes / 1e6).toFixed(bytes < 1e7 ? 2 : 1)} MB`;
}

function seconds(since: number): string {
  return `${((performance.now() - since) / 1000).toFixed(1)} s`;
}

/** Files a checkpoint folder's importer reads (lib/import/hf.ts), and the llama2.c tokenizer's default name. */
const READ_BESIDE = new Set(['config.json', 'generation_config.json', 'model.safetensors', 'model.safetensors.index.json',
  'tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja', 'tokenizer.bin']);

/**
 * The output must not replace what is being read: the checkpoint file, a file its importer reads beside it (weights
 * shards, index, config, tokenizer, chat template; llama2.c's tokenizer.bin) or the --tokenizer file. The rename
 * that finishes writing would destroy the source: `pack s.bin -o s.bin` did. Paths are compared after symlinks.
 */
async function refuseOverwritingInput(input: string, output: string, tokenizer: string | undefined): Promise<void> {
  const real = async (p: string) => realpath(p).catch(() => path.resolve(p));
  const inputPath = await real(input);
  const inputIsDir = await stat(inputPath).then((s) => s.isDirectory(), () => false);
  const out = path.join(await real(path.dirname(output)), path.basename(output));
  const folder = inputIsDir ? inputPath : path.dirname(inputPath);
  const clash = out === inputPath || (tokenizer !== undefined && out === (await real(tokenizer))) ||
    (path.dirname(out) === folder && (READ_BESIDE.has(path.basename(out)) || /\.safetensors$/.test(out)));
  if (clash) throw new W4a8Error('E_OPTION', `-o ${output} would overwrite the model being packed (${input}); write elsewhere`);
}

export async function packCommand(args: string[], output: CommandOutput = DEFAULT_OUTPUT): Promise<void> {
  const { values, positionals } = parse(args);
  if (positionals.length !== 1) throw new W4a8Error('E_OPTION', `one model path is required, got ${positionals.length}\n${PACK_USAGE}`);
  if (!values.output) throw new W4a8Error('E_OPTION', `-o/--output is required\n${PACK_USAGE}`);
  const input = positionals[0];
  await refuseOverwritingInput(input, values.output, values.tokenizer);
  const options: PackOptions = {
    groupSize: Number(choice(values.group, ['32', '64', '128'], '--group', '128')) as GroupSize,
    weightFormat: checkFormat(values.fp8 ?? 'e4m3fn', '--fp8'),
    scales: choice(values.scales, ['float', 'pow2'] as const, '--scales', 'float'),
    symmetric: values.symmetric ?? false,
    method: choice(values.method, ['rtn', 'gptq', 'dpq'] as const, '--method', 'rtn') as QuantMethod,
    lmHead: choice(values['lm-head'], ['bf16', 'w4a8'] as const, '--lm-head', 'bf16'),
  };
  if (values['act-fp8'] !== undefined) options.activationFormat = checkFormat(values['act-fp8'], '--act-fp8');
  const calibrated = options.method !== 'rtn';
  const calibrationFlags = ['calib-text', 'calib-tokens', 'calib-sample', 'calib-count', 'calib-length', 'calib-seed', 'damp', 'gar',
    'act-order', 'true-sequential', 'scale-search', 'no-scale-search'] as const;
  if (!calibrated) {
    const misplaced = calibrationFlags.find((flag) => values[flag] !== undefined);
    if (misplaced) throw new W4a8Error('E_OPTION', `--${misplaced} is for --method gptq or dpq`);
  } else {
    if (values.damp !== undefined) {
      const damp = Number(values.damp);
      if (!(damp >= 0 && damp <= 1)) throw new W4a8Error('E_OPTION', `--damp must be a number in [0, 1], got '${values.damp}'`);
      options.damp = damp;
    }
    if (values['scale-search'] && values['no-scale-search']) throw new W4a8Error('E_OPTION', '--scale-search and --no-scale-search contradict');
    if (values['scale-search'] || values['no-scale-search']) options.scaleSearch = values['scale-search'] === true;
    options.gar = values.gar ?? false;
    options.actOrder = values['act-order'] ?? false;
    options.trueSequential = values['true-sequential'] ?? false;
    if (values['calib-text'] === undefined && values['calib-tokens'] === undefined && !values['calib-sample'])
      throw new W4a8Error('E_OPTION', `--method ${options.method} needs calibration data: --calib-text FILE, --calib-tokens FILE or --calib-sample`);
  }

  let start = performance.now();
  let isFolder: boolean;
  try {
    isFolder = (await stat(input)).isDirectory();
  } catch (error) {
    throw new W4a8Error('E_IO', `cannot open '${input}': ${(error as Error).message}`);
  }
  if (isFolder && values.tokenizer !== undefined) throw new W4a8Error('E_OPTION', '--tokenizer is for llama2.c checkpoints; a Hugging Face folder brings its own');
  const source: SourceModel = isFolder ? await importHuggingFace(input)
    : await importLlama2c(input, values.tokenizer === undefined ? {} : { tokenizerPath: values.tokenizer });
  const c = source.config;
  const sourceBytes = [...source.tensors.values()].reduce((sum, t) => sum + t.data.byteLength, 0);
  output.log(`imported ${path.basename(input)} (${isFolder ? 'Hugging Face' : 'llama2.c'}): dim ${c.dim}, MLP ${c.hiddenDim}, ` +
    `${c.nLayers} layers, ${c.nHeads}/${c.nKvHeads} heads, vocab ${c.vocabSize}, ${megabytes(sourceBytes)}` +
    `${source.tokenizerJson ? ', tokenizer' : ''}${source.chatTemplate ? ', chat template' : ''} in ${seconds(start)}`);

  if (calibrated) {
    start = performance.now();
    options.calibration = await loadSequences(c, {
      textFile: values['calib-text'], tokensFile: values['calib-tokens'], sample: values['calib-sample'],
      count: positiveInt(values['calib-count'], '--calib-count', 64), length: positiveInt(values['calib-length'], '--calib-length', 256),
      seed: positiveInt(values['calib-seed'], '--calib-seed', 1),
    }, 'calibration', { source, tokenizer: source });
    const tokens = options.calibration.reduce((sum, s) => sum + s.length, 0);
    output.log(`calibration: ${options.calibration.length} sequences, ${tokens} tokens ` +
      `(${values['calib-text'] ?? values['calib-tokens'] ?? `sampled from the FP32 model, seed ${values['calib-seed'] ?? 1}`}) in ${seconds(start)}`);
  }

  start = performance.now();
  const bar = output.progress.isTTY
    ? new cliProgress.SingleBar({ stream: output.progress, format: 'packing [{bar}] {value}/{total} linear layers, {linear}{calibration}', hideCursor: true },
      cliProgress.Presets.shades_classic)
    : undefined;
  const perLayer = new Map<number, number>();
  const linearsPerLayer = 7;
  // Progress reports lm_head (--lm-head w4a8) as layer nLayers, with one linear.
  const layerName = (layer: number) => (layer === c.nLayers ? 'lm_head' : `layer ${layer + 1}/${c.nLayers}`);
  bar?.start(c.nLayers * linearsPerLayer + (options.lmHead === 'w4a8' ? 1 : 0), 0, { linear: '', calibration: '' });
  let calibratingLayer = -1;
  let packed;
  try {
    packed = await packModel(source, options, (p) => {
      if (p.calibration) {
        bar?.update(p.done, { linear: '', calibration: `calibrating ${layerName(p.layer)}: ${p.calibration.done}/${p.calibration.total} sequences` });
        if (!bar && p.layer !== calibratingLayer) output.progress.write(`calibrating ${layerName(p.layer)}\n`);
        calibratingLayer = p.layer;
        return;
      }
      bar?.update(p.done, { linear: p.linear, calibration: '' });
      const count = (perLayer.get(p.layer) ?? 0) + 1;
      perLayer.set(p.layer, count);
      if (!bar && (count === linearsPerLayer || p.layer === c.nLayers)) output.progress.write(`packed ${layerName(p.layer)}\n`);
    });
  } finally {
    bar?.stop();
  }
  const q = packed.quant;
  const order = q.details?.order === 'gar' ? '+GAR' : q.details?.order === 'act-order' ? '+act-order' : '';
  output.log(`packed ${c.nLayers * linearsPerLayer} linear layers: ${q.method.toUpperCase()}${order}, G=${q.groupSize}, ` +
    `${q.symmetric ? 'symmetric' : 'asymmetric'}, ${q.scales} scales, weights ${q.weightFormat}, activations ${q.activationFormat}` +
    `${q.lmHead === 'w4a8' ? ', lm_head W4A8' : ''} in ${seconds(start)}`);

  start = performance.now();
  const written = await writePackedModel(values.output, packed);
  output.log(`wrote ${written.path}: ${written.tensors} tensors, ${megabytes(written.bytes)} ` +
    `(${(sourceBytes / written.bytes).toFixed(1)}x smaller than the source) in ${seconds(start)}`);
}
