#!/usr/bin/env node
/**
 * w4a8 command line.
 *   w4a8 info                       backend and FP8 formats
 *   w4a8 demo [--rows N] [--cols K] [--tokens M] [--format F] [--group G] [--seed S]
 *       packs a seeded random layer to W4A8, W8A8 and W4A16, runs each GEMM off the main thread and
 *       prints its error against the FP32 product and its time.
 *   w4a8 pack <model-dir|file.bin> -o model.w4a8 [...]   imports and quantizes a model (commands/pack.ts)
 *   w4a8 eval <model> --text FILE [--reference SOURCE]   perplexity, KLD, top-1 agreement (commands/eval.ts)
 *   w4a8 sample <source> -o tokens.json                  token sequences sampled from the FP32 model
 */
import { W4a8Error } from './errors.js';
import { FP8_FORMATS, fp8FormatInfo } from './fp8.js';
import { backend, gemmF32Async, gemmW4A16Async, gemmW4A8Async, gemmW8A8Async } from './gemm.js';
import { checkFormat, pinned } from './validate.js';
import { Fp8Weights, Int4Weights, type GroupSize } from './weights.js';
import { GENERATE_USAGE, generateCommand, parseCommandArgs } from './commands/generate.js';
import { START_USAGE, startCommand } from './commands/start.js';
import { SERVE_USAGE, serveCommand } from './commands/serve.js';
import { PACK_USAGE, packCommand } from './commands/pack.js';
import { EVAL_USAGE, SAMPLE_USAGE, evalCommand, sampleCommand } from './commands/eval.js';
import { seededNormals } from './random.js';

const USAGE = `usage: w4a8 <command> [options]
commands:
  start [model.w4a8] [--batch 8] [--max-tokens 64] [--synthetic]
          batched decoding (default: the project's own model, models/default; see w4a8 start --help)
  generate [model.w4a8] [prompt] [options]   stream a continuation (see w4a8 generate --help)
  serve <model.w4a8> [--port 8080]           OpenAI-compatible HTTP server (see w4a8 serve --help)
  pack <model-dir|file.bin> -o <model.w4a8> [options]   quantize a model to W4A8 (see w4a8 pack --help)
  eval <model> (--text F | --tokens F | --sample N) [--reference SOURCE]
          perplexity, and KLD / top-1 agreement against the FP32 model (see w4a8 eval --help);
          eval --models [DIR]: every method on every trained model, as a table (npm run eval)
  sample <model-dir|file.bin> -o tokens.json   token sequences sampled from the FP32 model
  info    print the kernel backend and the FP8 formats
  demo    pack a random layer and compare W4A8, W8A8, W4A16 against FP32
          [--rows 4096] [--cols 4096] [--tokens 4] [--format e4m3fn] [--group 128] [--seed 1]`;


function relativeRmsError(got: Float32Array, want: Float32Array): number {
  let err = 0, norm = 0;
  for (let i = 0; i < want.length; i++) {
    err += (got[i] - want[i]) ** 2;
    norm += want[i] ** 2;
  }
  return Math.sqrt(err / norm);
}

async function timed<T>(run: () => Promise<T>): Promise<{ result: T; ms: number }> {
  const start = performance.now();
  const result = await run();
  return { result, ms: performance.now() - start };
}

/** The demo's largest layer: 2^28 FP32 weights (1 GiB). */
const DEMO_MAX_WEIGHTS = 2 ** 28;

function intOption(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new W4a8Error('E_OPTION', `--${name} must be a positive integer, got '${value}'`);
  return n;
}

async function demo(args: string[]): Promise<void> {
  const { values } = parseCommandArgs({
    args,
    options: {
      rows: { type: 'string' }, cols: { type: 'string' }, tokens: { type: 'string' },
      format: { type: 'string' }, group: { type: 'string' }, seed: { type: 'string' },
    },
  }, USAGE);
  const N = intOption(values.rows, 'rows', 4096);
  const K = intOption(values.cols, 'cols', 4096);
  const M = intOption(values.tokens, 'tokens', 4);
  // (the layer is made in memory as FP32: N x K floats, and M x N outputs)
  if (N * K > DEMO_MAX_WEIGHTS || M * Math.max(N, K) > DEMO_MAX_WEIGHTS)
    throw new W4a8Error('E_OPTION', `the demo layer is limited to ${DEMO_MAX_WEIGHTS} weights (--rows x --cols) and tokens x rows; got ${N} x ${K}, ${M} tokens`);
  const seed = intOption(values.seed, 'seed', 1);
  const format = checkFormat(values.format ?? 'e4m3fn', '--format');
  const groupSize = intOption(values.group, 'group', 128) as GroupSize;
  // In shared memory, so that the async calls below read it without copying it first (gemm.ts).
  const weights = pinned(seededNormals(N * K, seed).map((v) => v * 0.02));
  const x = seededNormals(M * K, seed + 1);
  console.log(`backend: ${backend().name} (${backend().reason})`);
  console.log(`layer: N=${N} K=${K}, M=${M} tokens, ${format}, group ${groupSize}, seeded random weights (seed ${seed})`);
  const int4 = await Int4Weights.packAsync(weights, N, K, { groupSize, format });
  const fp8 = await Fp8Weights.packAsync(weights, N, K, { format });
  const reference = await timed(() => gemmF32Async(x, { data: weights, rows: N, cols: K }));
  const int4Bytes = int4.codes.length + int4.groupScales.length * 4 + int4.zeros.length + N * 4;
  const runs = [
    { name: 'W4A8', bytes: int4Bytes, run: () => gemmW4A8Async(x, int4) },
    { name: 'W8A8', bytes: fp8.codes.length + N * 4, run: () => gemmW8A8Async(x, fp8) },
    { name: 'W4A16', bytes: int4Bytes, run: () => gemmW4A16Async(x, int4) },
  ];
  console.log('kernel   weight MB   time ms   rel. RMS error vs FP32');
  const row = (name: string, bytes: number, ms: number, error: string) =>
    console.log(`${name.padEnd(8)} ${(bytes / 1e6).toFixed(2).padStart(9)} ${ms.toFixed(1).padStart(9)}   ${error}`);
  row('FP32', N * K * 4, reference.ms, '(reference)');
  for (const r of runs) {
    const { result, ms } = await timed(r.run);
    row(r.name, r.bytes, ms, relativeRmsError(result as Float32Array, reference.result as Float32Array).toExponential(2));
  }
}

function info(): void {
  const b = backend();
  console.log(`backend: ${b.name} (${b.reason})`);
  for (const f of FP8_FORMATS) {
    const i = fp8FormatInfo(f);
    console.log(`${f.padEnd(7)} 1-${i.exponentBits}-${i.mantissaBits} bias ${i.bias}, max ${i.maxFinite}, ${i.hasInfinity ? 'inf/NaN' : 'NaN only'}`);
  }
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  if (command === 'info') return info();
  if (command === 'demo') return demo(rest);
  if (command === 'start') {
    if (rest.includes('--help')) return void console.log(START_USAGE);
    return startCommand(rest);
  }
  if (command === 'serve') {
    if (rest.includes('--help')) return void console.log(SERVE_USAGE);
    return serveCommand(rest);
  }
  if (command === 'pack') {
    if (rest.includes('--help')) return void console.log(PACK_USAGE);
    return packCommand(rest);
  }
  if (command === 'eval') {
    if (rest.includes('--help')) return void console.log(EVAL_USAGE);
    return evalCommand(rest);
  }
  if (command === 'sample') {
    if (rest.includes('--help')) return void console.log(SAMPLE_USAGE);
    return sampleCommand(rest);
  }
  if (command === 'generate') {
    if (rest.includes('--help')) return void console.log(GENERATE_USAGE);
    return generateCommand(rest);
  }
  console.log(USAGE);
  if (command !== undefined && command !== '--help' && command !== 'help') process.exitCode = 2;
}

main(process.argv.slice(2)).catch((error: unknown) => {
  // One line for every error; the stack of an unexpected one with W4A8_DEBUG=1.
  if (error instanceof W4a8Error) console.error(`w4a8: ${error.code}: ${error.message}`);
  else if (process.env.W4A8_DEBUG === '1') console.error(error);
  else console.error(`w4a8: unexpected error: ${(error as Error)?.message ?? String(error)} (W4A8_DEBUG=1 shows where)`);
  process.exitCode = 1;
});
