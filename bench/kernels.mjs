#!/usr/bin/env node
// `npm run bench:kernels`: the GEMM kernels on the shapes of real models, against the machine's limits.
//
// For every shape W [N outputs, K inputs] (written N×K, as Int4Weights rows × cols), every M (tokens) and every
// kernel (W4A8, W8A8, W4A16, FP32), on every CPU backend this machine runs: the median time of one call, the
// weight traffic in GB/s and the arithmetic in GFLOP/s, each beside the limit measured in the same run (a DRAM
// read-bandwidth probe and FMA-peak probes from the addon, native/bench/probes.h). Prints a table and the
// pass/miss lines of the performance targets, writes bench/results/kernels-<cpu>-<threads>t.json (plot data)
// and an SVG plot beside it (roofline, and GB/s and GFLOP/s against M per shape).
//
// How it measures:
// - One child process per backend, started with W4A8_ISA=<backend> and W4A8_THREADS=<threads>, so the addon
//   dispatches the normal way. The child asks the addon's backend() first: if the addon runs something other
//   than the requested backend (the CPU lacks it, it is not built, or the GEMM runner ignores W4A8_ISA), the
//   backend is reported as skipped, never measured under a wrong name.
// - The scalar reference is far too slow for these shapes (about 1 GFLOP/s): it runs only when asked for
//   (--backends reference) or when it is all the addon runs, and then only for calls of at most
//   --reference-max-gflop GFLOP.
// - Weights are random, built without packing cost (Int4Weights.fromParts / Fp8Weights.fromParts; FP8 codes
//   never NaN). Several copies of each weight set are used in turn, so that the weights of one call are not in
//   the caches from the previous one (a model streams every layer's weights from DRAM); --hot turns this off.
// - Each call is the addon's synchronous GEMM (activation quantization included, output preallocated, no JS
//   validation): warm-up, then calls until >= min iterations and >= the time budget; the median is reported.
// - Weight bytes: W4A8/W4A16 N·K/2 + N·(K/G)·(4+1) + 4N (codes, group scales, zeros, channel scales);
//   W8A8 N·K + 4N; FP32 4·N·K. FLOPs: 2·M·N·K. GB = 1e9 bytes.
//
// Options: --quick, --shapes 4096x4096,..., --m 1,4,..., --kernels w4a8,w8a8,w4a16,f32,
//   --backends avx2,avx512-fma,avx512,amx,reference, --threads N, --hot, --out DIR, --help (see usage()).
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { readJsonLines } from './lib/report.mjs';

const SCRIPT = fileURLToPath(import.meta.url);
const ROOT = path.resolve(path.dirname(SCRIPT), '..');

const KERNELS = ['w4a8', 'w8a8', 'w4a16', 'f32'];
const KERNEL_LABELS = { w4a8: 'W4A8', w8a8: 'W8A8', w4a16: 'W4A16', f32: 'FP32' };
// What the addon's dispatch knows (native/kernels/dispatch.h), slowest first. avx512-fma is the AVX-512 body
// without vdpbf16ps (the "AVX512-FMA path" of the AMX target).
const BACKENDS = ['reference', 'avx2', 'avx512-fma', 'avx512-bf16', 'avx512', 'amx'];
const DEFAULT_BACKENDS = ['avx2', 'avx512-fma', 'avx512', 'amx'];
// The arithmetic peak a backend is judged against, by what it computes with (native/kernels/dispatch.h): FP32
// FMA of its vector width, or for avx512 on a CPU with AVX512-BF16 the vdpbf16ps peak (two BF16 products per
// FP32 lane and instruction: twice the FP32 FMA rate, so the FP32 peak is no limit for it). No AMX probe yet:
// amx is judged against the best AVX-512 peak, which it is expected to exceed.
const PEAK_ISAS = {
  avx2: ['avx2'], 'avx512-fma': ['avx512'], 'avx512-bf16': ['avx512bf16', 'avx512'], avx512: ['avx512bf16', 'avx512'], amx: ['avx512bf16', 'avx512'],
};

const FULL_SHAPES = ['4096x4096', '4096x11008', '11008x4096', '8192x8192', '8192x28672'];
const FULL_M = [1, 4, 16, 64, 256];
const QUICK_SHAPES = ['4096x4096', '4096x11008'];
const QUICK_M = [1, 16, 64];

const FORMAT = 'e4m3fn';
// INT4 group size: 128 unless W4A8_BENCH_GROUP says 32 or 64 (an environment variable, so that the per-backend
// child processes see it too; the kernels have separate code for each G).
const GROUP_SIZE = (() => {
  const text = process.env.W4A8_BENCH_GROUP;
  if (text === undefined || text === '') return 128;
  if (!['32', '64', '128'].includes(text)) fail(`W4A8_BENCH_GROUP must be 32, 64 or 128, got '${text}'`);
  return Number(text);
})();
const SEED = 1;
const PROBE_BYTES = 1 << 30;

function usage() {
  return `usage: npm run bench:kernels -- [options]

  --quick                 2 shapes, M = 1,16,64, short time budgets (about a minute on 2 cores)
  --shapes LIST           N×K shapes, e.g. 4096x4096,4096x11008 (default: ${FULL_SHAPES.join(',')})
  --m LIST                token counts M (default: ${FULL_M.join(',')})
  --kernels LIST          of ${KERNELS.join(',')} (default: all)
  --backends LIST         of ${BACKENDS.join(',')} (default: ${DEFAULT_BACKENDS.join(',')}, those the addon runs)
  --threads N             W4A8_THREADS for the kernels and the probes' thread count (default: W4A8_THREADS or
                          the number of CPUs)
  --min-iters N           timed calls per case at least (default 10, quick 5)
  --budget SECONDS        time per case at least (default 0.5, quick 0.15); a case stops after 8 s (quick 2 s)
                          once it has 3 calls
  --reference-max-gflop X largest call (2·M·N·K / 1e9) the scalar reference runs (default 1)
  --hot                   reuse one copy of the weights (cache-resident for small shapes: not a DRAM figure)
  --no-tables             INT4 weights without prepared group tables (addon.prepareInt4Tables): the int16 W4A8
                          kernels then build them on every call
  --out DIR               where the JSON and SVG go (default bench/results)
  (environment) W4A8_BENCH_GROUP=32|64  INT4 group size of the weights (default 128)
  --replot FILE.json      only redraw the SVG of an earlier run (written beside the JSON)
  --cuda                  the GPU bench instead (bench/cuda-kernels.mjs: W4A8 vs cuBLAS BF16 vs cuBLASLt FP8, M = 1..4096,
                          ratios to the GPU's measured HBM bandwidth and FP8 peak); needs a CUDA build and a Hopper GPU
  --help`;
}

// ---- options -------------------------------------------------------------------------------------------

function fail(message) {
  console.error(`bench:kernels: ${message}`);
  process.exit(2);
}

function parseList(text, name, parse) {
  const items = text.split(',').map((s) => s.trim()).filter(Boolean);
  if (!items.length) fail(`--${name} must not be empty`);
  return items.map(parse);
}

function parseShape(text) {
  const m = /^(\d+)\s*[x×]\s*(\d+)$/.exec(text);
  if (!m) fail(`--shapes: '${text}' is not N×K (e.g. 4096x11008)`);
  const N = Number(m[1]), K = Number(m[2]);
  if (N < 1 || K < 1 || K % GROUP_SIZE !== 0) fail(`--shapes: ${text}: N, K must be >= 1 and K a multiple of ${GROUP_SIZE}`);
  return { name: `${N}x${K}`, N, K };
}

function positiveInteger(text, name) {
  const v = Number(text);
  if (!Number.isInteger(v) || v < 1) fail(`--${name} must be a positive integer, got '${text}'`);
  return v;
}

function positiveNumber(text, name) {
  const v = Number(text);
  if (!(v > 0) || !Number.isFinite(v)) fail(`--${name} must be a positive number, got '${text}'`);
  return v;
}

function choice(list, allowed, name) {
  for (const v of list) if (!allowed.includes(v)) fail(`--${name}: '${v}' is not one of ${allowed.join(', ')}`);
  return allowed.filter((v) => list.includes(v));  // canonical order, no duplicates
}

function readOptions(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        quick: { type: 'boolean' }, shapes: { type: 'string' }, m: { type: 'string' }, kernels: { type: 'string' },
        backends: { type: 'string' }, threads: { type: 'string' }, 'min-iters': { type: 'string' },
        budget: { type: 'string' }, 'reference-max-gflop': { type: 'string' }, hot: { type: 'boolean' },
        out: { type: 'string' }, help: { type: 'boolean' }, child: { type: 'string' }, replot: { type: 'string' },
        cuda: { type: 'boolean' }, 'no-tables': { type: 'boolean' },
      },
      strict: true,
    }).values;
  } catch (error) {
    fail(`${error.message}\n\n${usage()}`);
  }
  if (parsed.help) {
    console.log(usage());
    process.exit(0);
  }
  if (parsed.child) return { child: JSON.parse(parsed.child) };
  if (parsed.replot) return { replot: path.resolve(parsed.replot) };
  const quick = Boolean(parsed.quick);
  const envThreads = process.env.W4A8_THREADS;
  return {
    quick,
    shapes: parseList(parsed.shapes ?? (quick ? QUICK_SHAPES : FULL_SHAPES).join(','), 'shapes', parseShape),
    ms: [...new Set(parseList(parsed.m ?? (quick ? QUICK_M : FULL_M).join(','), 'm', (s) => positiveInteger(s, 'm')))].sort((a, b) => a - b),
    kernels: choice(parseList(parsed.kernels ?? KERNELS.join(','), 'kernels', String), KERNELS, 'kernels'),
    backends: parsed.backends === undefined ? null : choice(parseList(parsed.backends, 'backends', String), BACKENDS, 'backends'),
    threads: parsed.threads !== undefined ? positiveInteger(parsed.threads, 'threads')
      : envThreads ? positiveInteger(envThreads, 'threads (W4A8_THREADS)') : os.availableParallelism(),
    minIters: parsed['min-iters'] !== undefined ? positiveInteger(parsed['min-iters'], 'min-iters') : quick ? 5 : 10,
    minSeconds: parsed.budget !== undefined ? positiveNumber(parsed.budget, 'budget') : quick ? 0.15 : 0.5,
    maxSeconds: quick ? 2 : 8,
    referenceMaxGflop: parsed['reference-max-gflop'] !== undefined ? positiveNumber(parsed['reference-max-gflop'], 'reference-max-gflop') : 1,
    hot: Boolean(parsed.hot),
    tables: !parsed['no-tables'],
    out: path.resolve(parsed.out ?? path.join(ROOT, 'bench', 'results')),
    cuda: Boolean(parsed.cuda),
  };
}

// ---- the package and the addon -------------------------------------------------------------------------

async function loadPackage() {
  const index = path.join(ROOT, 'dist', 'index.js');
  if (!existsSync(index)) fail(`${index} is missing: build the TypeScript first (npx tsc -p tsconfig.json)`);
  const pkg = await import(pathToFileURL(index).href);
  const { native } = await import(pathToFileURL(path.join(ROOT, 'dist', 'native.js')).href);
  let addon;
  try {
    addon = native();
  } catch (error) {
    fail(error.message);
  }
  return { pkg, addon };
}

// ---- sizes ---------------------------------------------------------------------------------------------

function weightBytes(kernel, N, K) {
  if (kernel === 'w4a8' || kernel === 'w4a16') return (N * K) / 2 + N * (K / GROUP_SIZE) * (4 + 1) + 4 * N;
  if (kernel === 'w8a8') return N * K + 4 * N;
  return 4 * N * K;
}

const flopsOf = (M, N, K) => 2 * M * N * K;

// Weight sets: w4a8 and w4a16 share the INT4 weights.
const WEIGHT_SET = { w4a8: 'int4', w4a16: 'int4', w8a8: 'fp8', f32: 'f32' };

function l3Bytes() {
  try {
    const dir = '/sys/devices/system/cpu/cpu0/cache';
    for (let i = 0; i < 8; i++) {
      const index = path.join(dir, `index${i}`);
      if (!existsSync(index)) break;
      if (readFileSync(path.join(index, 'level'), 'utf8').trim() !== '3') continue;
      const m = /^(\d+)([KMG]?)/.exec(readFileSync(path.join(index, 'size'), 'utf8').trim());
      if (m) return Number(m[1]) * { '': 1, K: 1024, M: 1 << 20, G: 1 << 30 }[m[2]];
    }
  } catch { /* not Linux: fall through */ }
  return null;
}

// Bytes of weights cycled through so no call finds its weights in the caches: 8 × L3, at least 256 MiB, at
// most 1 GiB.
function rotationBytes() {
  return Math.min(1 << 30, Math.max(256 << 20, 8 * (l3Bytes() ?? 32 << 20)));
}

// ---- child: one backend --------------------------------------------------------------------------------

// Seeded xorshift32 fills a 1 MiB block, which is then repeated: cheap for gigabyte weights. The values are all
// finite (no NaN, no denormal FP32). Speed depends on them only mildly, in the avx2 W4A8 kernel: the group scales
// chosen here (0.004-0.05) put most groups' small entries on FP8's subnormal grid, its slower table rounding, and
// an activation group that spans more than 2^11 takes a second int16 plane (a few percent of groups here).
function randomBlock(seed, words) {
  const block = new Uint32Array(words);
  let s = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < words; i++) {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    block[i] = s;
  }
  return block;
}

function repeatFill(array, block) {
  const n = Math.min(array.length, block.length);
  array.set(block.subarray(0, n));
  for (let filled = n; filled < array.length; filled *= 2) array.copyWithin(filled, 0, Math.min(filled, array.length - filled));
  return array;
}

const BLOCK_WORDS = 1 << 18;

function randomBytes(length, seed, fix) {
  const block = new Uint8Array(randomBlock(seed, BLOCK_WORDS).buffer);
  if (fix) for (let i = 0; i < block.length; i++) block[i] = fix(block[i]);
  return repeatFill(new Uint8Array(length), block);
}

// Floats in [lo, hi).
function randomFloats(length, seed, lo = -1, hi = 1) {
  const bits = randomBlock(seed, Math.min(length, BLOCK_WORDS));
  const block = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) block[i] = lo + (hi - lo) * ((bits[i] >>> 8) / 16777216);
  return repeatFill(new Float32Array(length), block);
}

// e4m3fn NaN is S.1111.111 (0x7F, 0xFF): turned into ±448, the largest finite value.
const finiteE4m3fn = (b) => ((b & 0x7f) === 0x7f ? b ^ 1 : b);

function makeWeights(pkg, set, N, K, seed) {
  if (set === 'int4') {
    const groups = (N * K) / GROUP_SIZE;
    return pkg.Int4Weights.fromParts({
      rows: N, cols: K, groupSize: GROUP_SIZE, format: FORMAT,
      codes: randomBytes((N * K) / 2, seed),
      groupScales: randomFloats(groups, seed + 1, 0.004, 0.05),  // |s_g (q - z)| <= 0.75: inside E4M3 range
      zeros: randomBytes(groups, seed + 2, (b) => b & 15),
      channelScales: randomFloats(N, seed + 3, 0.005, 0.02),
    });
  }
  if (set === 'fp8') {
    return pkg.Fp8Weights.fromParts({
      rows: N, cols: K, format: FORMAT, codes: randomBytes(N * K, seed, finiteE4m3fn),
      channelScales: randomFloats(N, seed + 3, 0.005, 0.02),
    });
  }
  return { rows: N, cols: K, data: randomFloats(N * K, seed, -0.05, 0.05) };
}

// Another copy in separate memory (same values: only the addresses matter for the caches).
function copyWeights(pkg, set, w) {
  if (set === 'int4')
    return pkg.Int4Weights.fromParts({ rows: w.rows, cols: w.cols, groupSize: w.groupSize, format: w.format, codes: w.codes.slice(),
      groupScales: w.groupScales.slice(), zeros: w.zeros.slice(), channelScales: w.channelScales.slice() });
  if (set === 'fp8')
    return pkg.Fp8Weights.fromParts({ rows: w.rows, cols: w.cols, format: w.format, codes: w.codes.slice(), channelScales: w.channelScales.slice() });
  return { rows: w.rows, cols: w.cols, data: w.data.slice() };
}

// The INT4 weights as the model holds them: with the group tables of the int16 W4A8 kernels prepared once
// (addon.prepareInt4Tables; --no-tables: without, every call builds them).
function withTables(addon, w) {
  const plain = { rows: w.rows, cols: w.cols, groupSize: w.groupSize, format: w.format, codes: w.codes,
    groupScales: w.groupScales, zeros: w.zeros, channelScales: w.channelScales };
  const tables = addon.prepareInt4Tables(plain);
  return tables === undefined ? plain : { ...plain, tables };
}

// One addon call, synchronous; output preallocated.
function gemmCall(addon, kernel, x, M, w, out) {
  if (kernel === 'w4a8') return () => addon.gemmW4A8(x, M, w, FORMAT, undefined, out);
  if (kernel === 'w8a8') return () => addon.gemmW8A8(x, M, w, FORMAT, undefined, out);
  if (kernel === 'w4a16') return () => addon.gemmW4A16(x, M, w, out);
  return () => addon.gemmF32(x, M, w.data, w.rows, w.cols, out);
}

const now = () => Number(process.hrtime.bigint()) / 1e9;

// Warm-up (at least one call, up to 0.05 s), then timed calls until >= minIters and >= minSeconds; a slow case
// stops at maxSeconds once it has 3 calls. call(i) runs the i-th call (weights rotate with i).
function measure(call, { minIters, minSeconds, maxSeconds }) {
  let i = 0;
  const warm = now();
  do call(i++); while (now() - warm < 0.05 && i < 50);
  const samples = [];
  const start = now();
  for (;;) {
    const t0 = now();
    call(i++);
    samples.push(now() - t0);
    const elapsed = now() - start;
    if (samples.length >= minIters && elapsed >= minSeconds) break;
    if (samples.length >= 3 && elapsed >= maxSeconds) break;
    if (samples.length >= 1e5) break;
  }
  samples.sort((a, b) => a - b);
  const mid = samples.length >> 1;
  const median = samples.length % 2 ? samples[mid] : (samples[mid - 1] + samples[mid]) / 2;
  return { median, min: samples[0], max: samples[samples.length - 1], iterations: samples.length };
}

async function runChild(cfg) {
  const emit = (record) => process.stdout.write(`${JSON.stringify(record)}\n`);
  const { pkg, addon } = await loadPackage();
  const active = addon.backend();
  emit({ type: 'backend', requested: cfg.backend, name: active.name, reason: active.reason });
  if (active.name !== cfg.backend) return;

  const rotation = cfg.hot ? 0 : rotationBytes();
  const refCap = cfg.backend === 'reference' ? cfg.referenceMaxGflop * 1e9 : Infinity;
  for (const shape of cfg.shapes) {
    const { N, K } = shape;
    const sets = new Map();  // weight set -> copies, built on first use, dropped after its last kernel
    const order = KERNELS.filter((k) => cfg.kernels.includes(k)).sort((a, b) => WEIGHT_SET[a].localeCompare(WEIGHT_SET[b]));
    for (const [position, kernel] of order.entries()) {
      const ms = cfg.ms.filter((M) => flopsOf(M, N, K) <= refCap);
      for (const M of cfg.ms.filter((m) => !ms.includes(m)))
        emit({ type: 'skip', shape: shape.name, M, kernel, backend: cfg.backend,
          reason: `reference: ${(flopsOf(M, N, K) / 1e9).toFixed(2)} GFLOP per call > ${cfg.referenceMaxGflop}` });
      if (!ms.length) continue;
      const set = WEIGHT_SET[kernel];
      if (!sets.has(set)) {
        const first = makeWeights(pkg, set, N, K, SEED * 1000 + KERNELS.indexOf(kernel) * 10);
        const count = Math.max(1, Math.min(64, Math.ceil(rotation / weightBytes(kernel, N, K))));
        const copies = [first];
        while (copies.length < count) copies.push(copyWeights(pkg, set, first));
        sets.set(set, set === 'int4' && cfg.tables ? copies.map((w) => withTables(addon, w)) : copies);
      }
      const copies = sets.get(set);
      for (const M of ms) {
        const x = randomFloats(M * K, SEED + M);
        const out = new Float32Array(M * N);
        const calls = copies.map((w) => gemmCall(addon, kernel, x, M, w, out));
        const t = measure((i) => calls[i % calls.length](), cfg);
        emit({ type: 'result', shape: shape.name, N, K, M, kernel, backend: cfg.backend, seconds: t.median,
          minSeconds: t.min, maxSeconds: t.max, iterations: t.iterations, weightCopies: copies.length });
      }
      if (!order.slice(position + 1).some((k) => WEIGHT_SET[k] === set)) {
        sets.delete(set);
        globalThis.gc?.();
      }
    }
  }
}

// ---- parent --------------------------------------------------------------------------------------------

function runBackend(backend, opts, onRecord) {
  const cfg = {
    backend, shapes: opts.shapes, ms: opts.ms, kernels: opts.kernels, hot: opts.hot, tables: opts.tables,
    minIters: opts.minIters, minSeconds: opts.minSeconds, maxSeconds: opts.maxSeconds, referenceMaxGflop: opts.referenceMaxGflop,
  };
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--expose-gc', SCRIPT, '--child', JSON.stringify(cfg)], {
      cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'],
      env: { ...process.env, W4A8_ISA: backend, W4A8_THREADS: String(opts.threads) },
    });
    const records = [];
    readJsonLines(child.stdout, `[${backend}] `, (record) => {
      records.push(record);
      onRecord(record);
    });
    child.on('close', (code, signal) => resolve({ records, code, signal }));
  });
}

function probeLimits(addon, threads, label) {
  if (typeof addon.probeReadBandwidth !== 'function')
    fail('the addon has no probeReadBandwidth: rebuild it (npm run build:native)');
  const bandwidth = addon.probeReadBandwidth(PROBE_BYTES, threads);
  const available = addon.probeFmaIsas();
  const isas = available.filter((isa) => ['avx512', 'avx2', 'avx512bf16'].includes(isa));
  if (!isas.length) isas.push(available[0]);
  const fma = {};
  for (const isa of isas) fma[isa] = addon.probeFmaPeak(threads, isa);
  const peaks = Object.values(fma).map((p) => `${p.isa} ${p.gflops.toFixed(0)} GFLOP/s`).join(', ');
  console.error(`probes (${label}): read ${bandwidth.gbPerSecond.toFixed(1)} GB/s; peak ${peaks}`);
  return { bandwidth, fma };
}

// The best of the probe runs: the limit is what the machine can do, noise only lowers a measurement.
function bestLimits(runs) {
  const bandwidth = runs.map((r) => r.bandwidth).reduce((a, b) => (b.gbPerSecond > a.gbPerSecond ? b : a));
  const fma = {};
  for (const isa of Object.keys(runs[0].fma))
    fma[isa] = runs.map((r) => r.fma[isa]).reduce((a, b) => (b.gflops > a.gflops ? b : a));
  return { bandwidth, fma, runs };
}

function peakFor(limits, backend) {
  for (const isa of PEAK_ISAS[backend] ?? []) if (limits.fma[isa]) return limits.fma[isa];
  // reference, or a width the CPU lacks: the machine's best FP32 FMA peak.
  return Object.values(limits.fma).filter((p) => p.isa !== 'avx512bf16').reduce((a, b) => (b.gflops > a.gflops ? b : a));
}

const sig = (v, digits = 4) => (v === null || v === undefined || !Number.isFinite(v) ? null : Number(v.toPrecision(digits)));

function derive(results, limits) {
  const key = (r, kernel) => `${r.shape}|${r.M}|${r.backend}|${kernel}`;
  const byKey = new Map(results.map((r) => [key(r, r.kernel), r]));
  return results.map((r) => {
    const bytes = weightBytes(r.kernel, r.N, r.K);
    const flops = flopsOf(r.M, r.N, r.K);
    const gbPerSecond = bytes / r.seconds / 1e9;
    const gflops = flops / r.seconds / 1e9;
    const peak = peakFor(limits, r.backend);
    const f32 = byKey.get(key(r, 'f32'));
    return {
      shape: r.shape, N: r.N, K: r.K, M: r.M, kernel: r.kernel, backend: r.backend,
      ms: sig(r.seconds * 1e3), minMs: sig(r.minSeconds * 1e3), maxMs: sig(r.maxSeconds * 1e3), iterations: r.iterations,
      weightBytes: bytes, weightCopies: r.weightCopies, flops,
      gbPerSecond: sig(gbPerSecond), bandwidthRatio: sig(gbPerSecond / limits.bandwidth.gbPerSecond, 3),
      gflops: sig(gflops), peakIsa: peak.isa, peakRatio: sig(gflops / peak.gflops, 3),
      speedupVsF32: f32 ? sig(f32.seconds / r.seconds, 3) : null,
    };
  });
}

function sortResults(rows, opts) {
  const shapeIndex = (s) => opts.shapes.findIndex((x) => x.name === s);
  return rows.sort((a, b) => shapeIndex(a.shape) - shapeIndex(b.shape) || a.M - b.M
    || BACKENDS.indexOf(a.backend) - BACKENDS.indexOf(b.backend) || KERNELS.indexOf(a.kernel) - KERNELS.indexOf(b.kernel));
}

// ---- targets -------------------------------------------------------------------------------------------

const TARGET_SHAPE = '4096x11008';

function evaluateTargets(rows, limits, opts, cpuHasAmx) {
  const find = (backend, kernel, M) => rows.find((r) => r.shape === TARGET_SHAPE && r.backend === backend && r.kernel === kernel && r.M === M);
  const missing = (what) => ({ status: 'n/a', note: `${what} not measured in this run` });
  const threadsNote = opts.threads === 2 ? '' : ` (run with ${opts.threads} threads; the target is for 2: --threads 2)`;
  const targets = [];
  const add = (id, text, required, result) => targets.push({ id, text, required, ...result });
  const atLeast = (value, required, detail, note = '') =>
    ({ status: value >= required ? 'pass' : 'miss', value: sig(value, 3), detail, note });

  // This machine: AVX2, 2 threads.
  {
    const r = find('avx2', 'w4a8', 1);
    add('avx2-m1-bandwidth', `AVX2, M=1, ${TARGET_SHAPE}: W4A8 weight traffic >= 0.7 x read bandwidth`, 0.7, r
      ? atLeast(r.bandwidthRatio, 0.7, `${r.gbPerSecond.toFixed(1)} GB/s of ${limits.bandwidth.gbPerSecond.toFixed(1)} GB/s`, threadsNote)
      : missing('avx2 W4A8 M=1'));
  }
  {
    const r = find('avx2', 'w4a8', 64);
    add('avx2-m64-fma', `AVX2, M=64, ${TARGET_SHAPE}: W4A8 >= 0.8 x FP32 FMA peak`, 0.8, r
      ? atLeast(r.peakRatio, 0.8, `${r.gflops.toFixed(1)} GFLOP/s of ${peakFor(limits, 'avx2').gflops.toFixed(1)} GFLOP/s ${r.peakIsa} FMA`, threadsNote)
      : missing('avx2 W4A8 M=64'));
  }
  for (const [other, required] of [['f32', 3.5], ['w8a8', 1.8]]) {
    const a = find('avx2', 'w4a8', 1), b = find('avx2', other, 1);
    add(`avx2-m1-vs-${other}`, `AVX2, M=1, ${TARGET_SHAPE}: W4A8 >= ${required}x faster than ${KERNEL_LABELS[other]}`, required, a && b
      ? atLeast(b.ms / a.ms, required, `${ms3(a.ms)} ms vs ${ms3(b.ms)} ms`, threadsNote)
      : missing(`avx2 W4A8 and ${KERNEL_LABELS[other]} at M=1`));
  }
  // AVX512 + AMX Xeon.
  const noAmx = cpuHasAmx ? '' : 'this CPU has no AMX; ';
  {
    const r = find('amx', 'w4a8', 1);
    add('amx-m1-bandwidth', `AVX512+AMX Xeon, M=1, ${TARGET_SHAPE}: W4A8 (amx) weight traffic >= 0.7 x read bandwidth`, 0.7, r
      ? atLeast(r.bandwidthRatio, 0.7, `${r.gbPerSecond.toFixed(1)} GB/s of ${limits.bandwidth.gbPerSecond.toFixed(1)} GB/s`)
      : { status: 'n/a', note: `${noAmx}amx W4A8 M=1 not measured in this run` });
  }
  {
    const a = find('amx', 'w4a8', 256), b = find('avx512-fma', 'w4a8', 256);
    add('amx-m256-vs-avx512-fma', `AVX512+AMX Xeon, M=256, ${TARGET_SHAPE}: W4A8 amx >= 5x faster than avx512-fma`, 5, a && b
      ? atLeast(b.ms / a.ms, 5, `${ms3(a.ms)} ms vs ${ms3(b.ms)} ms`)
      : { status: 'n/a', note: `${noAmx}amx and avx512-fma W4A8 at M=256 not both measured in this run` });
  }
  return targets;
}

// ---- printing ------------------------------------------------------------------------------------------

const pct = (v) => (v === null ? '-' : `${(v * 100).toFixed(0)}%`);
const fixed = (v, d) => (v === null || v === undefined ? '-' : v.toFixed(d));
const ms3 = (v) => (v >= 100 ? v.toFixed(1) : v >= 10 ? v.toFixed(2) : v.toFixed(3));

function printTable(rows, limits) {
  const head = ['shape N×K', 'M', 'kernel', 'backend', 'ms/call', 'GB/s', '%BW', 'GFLOP/s', '%peak', 'peak', '×FP32', 'iters'];
  const body = rows.map((r) => [
    r.shape.replace('x', '×'), String(r.M), KERNEL_LABELS[r.kernel], r.backend, ms3(r.ms), fixed(r.gbPerSecond, 1),
    pct(r.bandwidthRatio), fixed(r.gflops, 1), pct(r.peakRatio), r.peakIsa, r.speedupVsF32 === null ? '-' : r.speedupVsF32.toFixed(2),
    String(r.iterations),
  ]);
  const left = new Set([0, 2, 3, 9]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((row) => row[i].length)));
  const line = (row) => row.map((c, i) => (left.has(i) ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ').trimEnd();
  console.log(line(head));
  let previous = null;
  for (const [i, row] of body.entries()) {
    const group = `${rows[i].shape}|${rows[i].M}`;
    if (previous !== null && group !== previous && rows[i].shape !== rows[i - 1].shape) console.log('');
    previous = group;
    console.log(line(row));
  }
  console.log(`%BW: weight bytes / time, of the read bandwidth ${limits.bandwidth.gbPerSecond.toFixed(1)} GB/s; ` +
    `%peak: 2·M·N·K / time, of the peak named in column peak (${Object.values(limits.fma).map((p) => `${p.isa} ${p.gflops.toFixed(0)} GFLOP/s`).join(', ')}); ` +
    '×FP32: FP32 time / this time, same backend.');
}

// ---- SVG -----------------------------------------------------------------------------------------------

const COLORS = { w4a8: '#d62728', w8a8: '#1f77b4', w4a16: '#2ca02c', f32: '#7f7f7f' };
const DASHES = { reference: '1,3', avx2: '2,2', 'avx512-fma': '6,3', 'avx512-bf16': '4,2', avx512: '', amx: '10,3,2,3' };
const MARKERS = { reference: 'x', avx2: 'circle', 'avx512-fma': 'square', 'avx512-bf16': 'square', avx512: 'triangle', amx: 'diamond' };

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const f1 = (v) => (Math.round(v * 10) / 10).toString();

function marker(kind, x, y, color) {
  const r = 3.5;
  if (kind === 'square') return `<rect x="${f1(x - r)}" y="${f1(y - r)}" width="${2 * r}" height="${2 * r}" fill="${color}"/>`;
  if (kind === 'triangle') return `<path d="M${f1(x)},${f1(y - r - 1)}L${f1(x + r + 0.5)},${f1(y + r)}L${f1(x - r - 0.5)},${f1(y + r)}Z" fill="${color}"/>`;
  if (kind === 'diamond') return `<path d="M${f1(x)},${f1(y - r - 1)}L${f1(x + r + 1)},${f1(y)}L${f1(x)},${f1(y + r + 1)}L${f1(x - r - 1)},${f1(y)}Z" fill="${color}"/>`;
  if (kind === 'x') return `<path d="M${f1(x - r)},${f1(y - r)}L${f1(x + r)},${f1(y + r)}M${f1(x - r)},${f1(y + r)}L${f1(x + r)},${f1(y - r)}" stroke="${color}" stroke-width="1.5"/>`;
  return `<circle cx="${f1(x)}" cy="${f1(y)}" r="${r}" fill="${color}"/>`;
}

function niceStep(span, count) {
  const raw = span / count;
  const p = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((s) => s >= raw);
}

const tickLabel = (v) => (v >= 10000 && v % 1000 === 0 ? `${v / 1000}k` : String(Number(v.toPrecision(4))));

// One chart: axes, grid, limit lines and series. Axis kinds: 'log2' (ticks at given values), 'log10', 'linear'.
function chart(c) {
  const { x0, y0, w, h } = c;
  const pad = { l: 58, r: 12, t: 24, b: 38 };
  const pw = w - pad.l - pad.r, ph = h - pad.t - pad.b;
  const axis = (kind, [lo, hi], size, flip) => {
    const t = kind === 'linear' ? (v) => (v - lo) / (hi - lo) : (v) => (Math.log(v) - Math.log(lo)) / (Math.log(hi) - Math.log(lo));
    return (v) => (flip ? size * (1 - t(v)) : size * t(v));
  };
  const sx = axis(c.xKind, c.xDomain, pw, false), sy = axis(c.yKind, c.yDomain, ph, true);
  const X = (v) => x0 + pad.l + sx(v), Y = (v) => y0 + pad.t + sy(v);
  const inside = (x, y) => x >= c.xDomain[0] && x <= c.xDomain[1] && y >= c.yDomain[0] && y <= c.yDomain[1];
  const out = [`<g>`, `<text x="${x0 + pad.l}" y="${y0 + 15}" font-size="13" font-weight="bold">${esc(c.title)}</text>`,
    `<rect x="${x0 + pad.l}" y="${y0 + pad.t}" width="${pw}" height="${ph}" fill="none" stroke="#999"/>`];
  for (const v of c.xTicks) {
    out.push(`<line x1="${f1(X(v))}" y1="${y0 + pad.t}" x2="${f1(X(v))}" y2="${y0 + pad.t + ph}" stroke="#eee"/>`);
    out.push(`<text x="${f1(X(v))}" y="${y0 + pad.t + ph + 14}" font-size="10" text-anchor="middle">${tickLabel(v)}</text>`);
  }
  for (const v of c.yTicks) {
    out.push(`<line x1="${x0 + pad.l}" y1="${f1(Y(v))}" x2="${x0 + pad.l + pw}" y2="${f1(Y(v))}" stroke="#eee"/>`);
    out.push(`<text x="${x0 + pad.l - 5}" y="${f1(Y(v) + 3)}" font-size="10" text-anchor="end">${tickLabel(v)}</text>`);
  }
  out.push(`<text x="${x0 + pad.l + pw / 2}" y="${y0 + h - 6}" font-size="11" text-anchor="middle">${esc(c.xLabel)}</text>`);
  out.push(`<text transform="translate(${x0 + 13},${y0 + pad.t + ph / 2}) rotate(-90)" font-size="11" text-anchor="middle">${esc(c.yLabel)}</text>`);
  // Limit lines; their labels above the line's left end, or (labelsInCorner) listed in the top-left corner.
  for (const [i, line] of (c.limits ?? []).entries()) {
    const pts = line.points.map(([x, y]) => `${f1(X(x))},${f1(Y(Math.min(Math.max(y, c.yDomain[0]), c.yDomain[1])))}`).join(' ');
    out.push(`<polyline points="${pts}" fill="none" stroke="#000" stroke-width="1.2" stroke-dasharray="5,4"/>`);
    const [lx, ly] = c.labelsInCorner ? [x0 + pad.l + 6, y0 + pad.t + 14 + 13 * i] : [X(line.points[0][0]) + 4, Y(line.points[0][1]) - 4];
    out.push(`<text x="${f1(lx)}" y="${f1(ly)}" font-size="10">${esc(line.label)}</text>`);
  }
  for (const s of c.series) {
    const pts = s.points.filter(([x, y]) => inside(x, y));
    if (s.line && pts.length > 1)
      out.push(`<polyline points="${pts.map(([x, y]) => `${f1(X(x))},${f1(Y(y))}`).join(' ')}" fill="none" stroke="${s.color}" stroke-width="1.5"${s.dash ? ` stroke-dasharray="${s.dash}"` : ''}/>`);
    for (const [x, y] of pts) out.push(marker(s.marker, X(x), Y(y), s.color));
  }
  out.push('</g>');
  return out.join('\n');
}

function linearTicks(max) {
  const step = niceStep(max, 5);
  const ticks = [];
  for (let v = 0; v <= max + 1e-9; v += step) ticks.push(Number(v.toPrecision(6)));
  return ticks;
}

function logTicks([lo, hi]) {
  const ticks = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++)
    for (const m of [1, 3]) {
      const v = m * 10 ** e;
      if (v >= lo && v <= hi) ticks.push(Number(v.toPrecision(3)));
    }
  return ticks;
}

function renderSvg(report) {
  const rows = report.results;
  const bw = report.limits.readBandwidth.gbPerSecond;
  // FMA peaks, highest first; peaks within 5% of each other share one line ("avx512/avx2").
  const peaks = [];
  for (const [isa, p] of Object.entries(report.limits.fmaPeak).sort((a, b) => b[1].gflops - a[1].gflops)) {
    const near = peaks.find((q) => Math.abs(q.gflops - p.gflops) <= 0.05 * q.gflops);
    if (near) near.isa += `/${isa}`;
    else peaks.push({ isa, gflops: p.gflops });
  }
  const backends = BACKENDS.filter((b) => rows.some((r) => r.backend === b));
  const kernels = KERNELS.filter((k) => rows.some((r) => r.kernel === k));
  const series = (subset, xOf, yOf, line) => {
    const list = [];
    for (const kernel of kernels)
      for (const backend of backends) {
        const points = subset.filter((r) => r.kernel === kernel && r.backend === backend).map((r) => [xOf(r), yOf(r)]);
        if (points.length) list.push({ color: COLORS[kernel], dash: DASHES[backend], marker: MARKERS[backend], points, line });
      }
    return list;
  };
  const W = 1100, panelH = 270;
  const parts = [];
  let y = 0;
  const m = report.machine;
  parts.push(`<text x="20" y="${(y += 24)}" font-size="16" font-weight="bold">w4a8 GEMM kernels: ${esc(m.cpu)}, ${report.config.threads} threads${report.config.quick ? ' (quick run)' : ''}</text>`);
  parts.push(`<text x="20" y="${(y += 18)}" font-size="12">read bandwidth ${bw.toFixed(1)} GB/s; peak ${peaks.map((p) => `${p.isa} ${p.gflops.toFixed(0)}`).join(', ')} GFLOP/s; ` +
    `median time per call; weights ${report.config.hot ? 'reused (cache-resident)' : 'cycled through ' + (report.config.rotationBytes / 2 ** 20).toFixed(0) + ' MiB of copies (from DRAM)'}</text>`);
  // Legend.
  y += 14;
  let lx = 20;
  for (const k of kernels) {
    parts.push(`<rect x="${lx}" y="${y}" width="14" height="10" fill="${COLORS[k]}"/><text x="${lx + 18}" y="${y + 9}" font-size="11">${KERNEL_LABELS[k]}</text>`);
    lx += 80;
  }
  lx += 20;
  for (const b of backends) {
    parts.push(`<line x1="${lx}" y1="${y + 5}" x2="${lx + 26}" y2="${y + 5}" stroke="#333" stroke-width="1.5"${DASHES[b] ? ` stroke-dasharray="${DASHES[b]}"` : ''}/>` +
      marker(MARKERS[b], lx + 13, y + 5, '#333') + `<text x="${lx + 30}" y="${y + 9}" font-size="11">${esc(b)}</text>`);
    lx += 110;
  }
  parts.push(`<text x="${lx + 10}" y="${y + 9}" font-size="11">- - - measured limit</text>`);
  y += 22;

  // Roofline: every measurement at its arithmetic intensity (FLOP per weight byte).
  if (rows.length) {
    const ai = (r) => r.flops / r.weightBytes;
    const xs = rows.map(ai), ys = rows.map((r) => r.gflops);
    const maxPeak = Math.max(...peaks.map((p) => p.gflops));
    const xDomain = [2 ** Math.floor(Math.log2(Math.min(...xs) / 1.5)), 2 ** Math.ceil(Math.log2(Math.max(...xs, (maxPeak / bw) * 4)))];
    const yDomain = [10 ** Math.floor(Math.log10(Math.min(...ys, xDomain[0] * bw) / 1.5)), 10 ** Math.ceil(Math.log10(maxPeak * 1.5))];
    const xTicks = [];
    for (let v = xDomain[0]; v <= xDomain[1]; v *= 4) xTicks.push(v);
    parts.push(chart({
      x0: 0, y0: y, w: W, h: 330, title: 'Roofline: GFLOP/s vs FLOP per weight byte (all shapes, all M)',
      xLabel: 'arithmetic intensity 2·M·N·K / weight bytes (FLOP/byte)', yLabel: 'GFLOP/s', xKind: 'log10', yKind: 'log10',
      xDomain, yDomain, xTicks, yTicks: logTicks(yDomain),
      labelsInCorner: true,
      limits: peaks.map((p) => ({ label: `roof: ${p.isa} peak ${p.gflops.toFixed(0)} GFLOP/s, read bandwidth ${bw.toFixed(1)} GB/s`,
        points: [[xDomain[0], xDomain[0] * bw], [p.gflops / bw, p.gflops], [xDomain[1], p.gflops]] })),
      series: series(rows, ai, (r) => r.gflops, false),
    }));
    y += 340;
  }

  // Per shape: GB/s and GFLOP/s against M.
  const shapes = report.config.shapes.filter((s) => rows.some((r) => r.shape === s));
  for (const shape of shapes) {
    const sub = rows.filter((r) => r.shape === shape);
    const ms = [...new Set(sub.map((r) => r.M))].sort((a, b) => a - b);
    const xDomain = [ms[0] / 1.4, ms[ms.length - 1] * 1.4];
    const gbMax = Math.max(bw, ...sub.map((r) => r.gbPerSecond)) * 1.1;
    const gfMax = Math.max(...peaks.map((p) => p.gflops), ...sub.map((r) => r.gflops)) * 1.1;
    const label = shape.replace('x', '×');
    parts.push(chart({
      x0: 0, y0: y, w: W / 2, h: panelH, title: `${label}: weight traffic`, xLabel: 'M (tokens)', yLabel: 'GB/s of weights',
      xKind: 'log2', yKind: 'linear', xDomain, yDomain: [0, gbMax], xTicks: ms, yTicks: linearTicks(gbMax),
      limits: [{ label: `read bandwidth ${bw.toFixed(1)} GB/s`, points: [[xDomain[0], bw], [xDomain[1], bw]] }],
      series: series(sub, (r) => r.M, (r) => r.gbPerSecond, true),
    }));
    parts.push(chart({
      x0: W / 2, y0: y, w: W / 2, h: panelH, title: `${label}: arithmetic`, xLabel: 'M (tokens)', yLabel: 'GFLOP/s',
      xKind: 'log2', yKind: 'linear', xDomain, yDomain: [0, gfMax], xTicks: ms, yTicks: linearTicks(gfMax),
      limits: peaks.map((p) => ({ label: `${p.isa} peak ${p.gflops.toFixed(0)} GFLOP/s`, points: [[xDomain[0], p.gflops], [xDomain[1], p.gflops]] })),
      series: series(sub, (r) => r.M, (r) => r.gflops, true),
    }));
    y += panelH + 10;
  }
  if (!rows.length) parts.push(`<text x="20" y="${(y += 30)}" font-size="14">no measurements (see the JSON's backends)</text>`);
  y += 10;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y}" viewBox="0 0 ${W} ${y}" font-family="sans-serif">\n` +
    `<rect width="${W}" height="${y}" fill="#fff"/>\n${parts.join('\n')}\n</svg>\n`;
}

// ---- main ----------------------------------------------------------------------------------------------

function cpuModel() {
  const model = os.cpus()[0]?.model?.trim() || os.arch();
  return model.replace(/\s+/g, ' ');
}

function slug(text) {
  return text.toLowerCase().replace(/\((r|tm)\)/g, '').replace(/\b(cpu|processor)\b/g, '').replace(/@.*$/, '')
    .replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '') || 'cpu';
}

function cpuFlags() {
  try {
    const info = readFileSync('/proc/cpuinfo', 'utf8');
    return new Set((/^flags\s*:(.*)$/m.exec(info)?.[1] ?? '').trim().split(/\s+/));
  } catch {
    return new Set();
  }
}

async function runParent(opts) {
  const started = now();
  const { addon } = await loadPackage();
  const flags = cpuFlags();
  const machine = {
    cpu: cpuModel(), logicalCpus: os.availableParallelism(), l3Bytes: l3Bytes(),
    isa: ['avx2', 'fma', 'avx512f', 'avx512bw', 'avx512vl', 'avx512dq', 'avx512vbmi', 'avx512_bf16', 'amx_bf16', 'amx_tile'].filter((f) => flags.has(f)),
    platform: `${os.platform()} ${os.arch()}`, node: process.version,
  };
  const rotation = opts.hot ? 0 : rotationBytes();
  console.log(`machine: ${machine.cpu}, ${machine.logicalCpus} logical CPUs, L3 ${machine.l3Bytes ? `${machine.l3Bytes / 2 ** 20} MiB` : 'unknown'}; ${machine.isa.join(' ')}`);
  console.log(`run: ${opts.threads} threads; shapes (N×K) ${opts.shapes.map((s) => s.name).join(', ')}; M ${opts.ms.join(',')}; ` +
    `kernels ${opts.kernels.join(',')}; >= ${opts.minIters} calls and >= ${opts.minSeconds} s per case; ` +
    `${opts.hot ? 'weights reused (hot)' : `weights cycled through ${(rotation / 2 ** 20).toFixed(0)} MiB of copies`}; ${FORMAT}, G=${GROUP_SIZE}; ` +
    `INT4 group tables ${opts.tables ? 'prepared once (as the model)' : 'built per call (--no-tables)'}`);

  const loadBefore = os.loadavg()[0];
  if (loadBefore > 0.5)
    console.log(`note: load average ${loadBefore.toFixed(2)} before the run: other processes compete for the CPUs, figures may be low`);
  const probeRuns = [probeLimits(addon, opts.threads, 'before')];

  // Backends, each in its own child.
  const results = [];
  const skipped = [];
  const backendStatus = [];
  const onRecord = (record) => {
    if (record.type === 'result') {
      results.push(record);
      const gb = weightBytes(record.kernel, record.N, record.K) / record.seconds / 1e9;
      const gf = flopsOf(record.M, record.N, record.K) / record.seconds / 1e9;
      console.error(`  ${record.backend.padEnd(10)} ${KERNEL_LABELS[record.kernel].padEnd(5)} ${record.shape.padStart(10)} M=${String(record.M).padEnd(4)}` +
        ` ${ms3(record.seconds * 1e3).padStart(8)} ms  ${gb.toFixed(1).padStart(6)} GB/s  ${gf.toFixed(1).padStart(7)} GFLOP/s  (${record.iterations} calls)`);
    } else if (record.type === 'skip') {
      skipped.push(record);
    }
  };
  const runOne = async (backend, note = '') => {
    console.error(`${backend}: starting (W4A8_ISA=${backend} W4A8_THREADS=${opts.threads})`);
    const { records, code, signal } = await runBackend(backend, opts, onRecord);
    const info = records.find((r) => r.type === 'backend');
    const status = { requested: backend, name: info?.name ?? null, reason: info?.reason ?? null, status: 'measured', note };
    if (!info) Object.assign(status, { status: 'failed', note: `child exited with ${signal ?? code} before reporting its backend` });
    else if (info.name !== backend) Object.assign(status, { status: 'skipped', note: `the addon runs ${info.name} instead` });
    else if (code !== 0) Object.assign(status, { status: 'failed', note: `child exited with ${signal ?? code}` });
    console.error(`${backend}: ${status.status}${status.reason ? ` (backend(): ${status.name}: ${status.reason})` : ''}${status.note ? `; ${status.note}` : ''}`);
    backendStatus.push(status);
    // Probe again after every measured backend: the limit is the best of all runs, and the runs' spread says
    // how steady the machine was meanwhile.
    if (status.status === 'measured') probeRuns.push(probeLimits(addon, opts.threads, `after ${backend}`));
    return status;
  };

  const explicit = opts.backends !== null;
  for (const backend of explicit ? opts.backends : DEFAULT_BACKENDS) await runOne(backend);
  if (!explicit && !backendStatus.some((s) => s.status === 'measured') && backendStatus.some((s) => s.name === 'reference')) {
    // The addon runs the scalar reference whatever W4A8_ISA says (no fast backend in this build): measure that,
    // on the calls it can finish, so the harness still reports something true.
    await runOne('reference', 'no fast backend is active in this build: the scalar reference is what the addon runs');
  }
  if (probeRuns.length === 1) probeRuns.push(probeLimits(addon, opts.threads, 'after'));
  const loadAfter = os.loadavg()[0];
  const limits = bestLimits(probeRuns);
  const rows = sortResults(derive(results, limits), opts);

  // Report.
  console.log('');
  console.log(`read bandwidth: ${limits.bandwidth.gbPerSecond.toFixed(1)} GB/s (${(limits.bandwidth.bytes / 2 ** 30).toFixed(2)} GiB, ` +
    `${limits.bandwidth.loads} loads, ${limits.bandwidth.threads} threads, best of ${limits.bandwidth.passes} passes x ${probeRuns.length} runs)`);
  for (const p of Object.values(limits.fma))
    console.log(`${p.isa === 'avx512bf16' ? 'BF16 dot peak: ' : 'FP32 FMA peak: '} ${p.gflops.toFixed(1)} GFLOP/s (${p.isa === 'avx512bf16' ? 'avx512bf16 vdpbf16ps' : p.isa}, ` +
      `${p.lanes} lanes x ${p.accumulators} chains, ${p.threads} threads, best of ${probeRuns.length} runs)`);
  const bwRuns = probeRuns.map((r) => r.bandwidth.gbPerSecond);
  if (Math.min(...bwRuns) < 0.85 * Math.max(...bwRuns))
    console.log(`note: read bandwidth varied ${Math.min(...bwRuns).toFixed(1)}-${Math.max(...bwRuns).toFixed(1)} GB/s between probe runs ` +
      '(other load, or a VM whose vCPUs move): ratios use the best, so they are conservative');
  console.log('backends:');
  for (const s of backendStatus)
    console.log(`  ${s.requested.padEnd(11)} ${s.status.padEnd(9)} ${s.name ? `backend(): ${s.name}: ${s.reason}` : ''}${s.note ? ` [${s.note}]` : ''}`);
  if (!backendStatus.some((s) => s.requested === 'reference'))
    console.log('  reference   not run   (scalar C++, about 1 GFLOP/s: far too slow for these shapes; --backends reference runs it on calls <= ' +
      `${opts.referenceMaxGflop} GFLOP)`);
  if (skipped.length) {
    const cases = [...new Set(skipped.map((s) => `${s.shape} M=${s.M}`))];
    console.log(`  reference skipped ${skipped.length} calls above ${opts.referenceMaxGflop} GFLOP (too slow): ${cases.join(', ')}`);
  }
  console.log('');
  if (rows.length) printTable(rows, limits);
  else console.log('no measurements');

  const cpuHasAmx = flags.has('amx_bf16') && flags.has('amx_tile');
  const targets = evaluateTargets(rows, limits, opts, cpuHasAmx);
  console.log('\ntargets:');
  for (const t of targets)
    console.log(`  ${t.status.toUpperCase().padEnd(4)}  ${t.text}${t.value !== undefined ? `: got ${t.value.toFixed(2)} (${t.detail})` : ''}${t.note ? ` [${t.note.trim()}]` : ''}`);

  // Files.
  const name = `kernels-${slug(machine.cpu)}-${opts.threads}t${opts.quick ? '-quick' : ''}`;
  const report = {
    schema: 'w4a8-bench-kernels/1',
    date: new Date().toISOString(),
    machine,
    config: {
      quick: opts.quick, threads: opts.threads, shapes: opts.shapes.map((s) => s.name), m: opts.ms, kernels: opts.kernels,
      backends: explicit ? opts.backends : DEFAULT_BACKENDS, format: FORMAT, groupSize: GROUP_SIZE, seed: SEED,
      minIterations: opts.minIters, minSeconds: opts.minSeconds, maxSeconds: opts.maxSeconds, hot: opts.hot, rotationBytes: rotation,
      int4Tables: opts.tables,
      referenceMaxGflop: opts.referenceMaxGflop, loadAverage: [sig(loadBefore, 3), sig(loadAfter, 3)],
      weightBytes: 'w4a8/w4a16: N*K/2 + N*(K/G)*5 + 4*N; w8a8: N*K + 4*N; f32: 4*N*K', flops: '2*M*N*K',
    },
    limits: {
      readBandwidth: { gbPerSecond: sig(limits.bandwidth.gbPerSecond), bytes: limits.bandwidth.bytes, threads: limits.bandwidth.threads,
        loads: limits.bandwidth.loads, passes: limits.bandwidth.passes, runs: probeRuns.map((r) => sig(r.bandwidth.gbPerSecond)) },
      fmaPeak: Object.fromEntries(Object.entries(limits.fma).map(([isa, p]) => [isa, { gflops: sig(p.gflops), threads: p.threads,
        lanes: p.lanes, accumulators: p.accumulators, runs: probeRuns.map((r) => sig(r.fma[isa].gflops)) }])),
    },
    backends: backendStatus.map((b) => ({ ...b, note: b.note || null })),
    skipped: skipped.map((s) => ({ shape: s.shape, M: s.M, kernel: s.kernel, backend: s.backend, reason: s.reason })),
    results: rows,
    targets: targets.map((t) => ({ id: t.id, text: t.text, status: t.status, value: t.value ?? null, required: t.required,
      detail: t.detail ?? null, note: t.note?.trim() || null })),
  };
  mkdirSync(opts.out, { recursive: true });
  const jsonFile = path.join(opts.out, `${name}.json`), svgFile = path.join(opts.out, `${name}.svg`);
  writeFileSync(jsonFile, `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(svgFile, renderSvg(report));
  console.log(`\nwrote ${path.relative(process.cwd(), jsonFile)} and ${path.relative(process.cwd(), svgFile)} (${(now() - started).toFixed(0)} s)`);
  if (backendStatus.some((s) => s.status === 'failed')) process.exitCode = 1;
}

const opts = readOptions(process.argv.slice(2));
if (opts.cuda) process.exitCode = (await import('./cuda-kernels.mjs')).runCudaBench(opts.out);
else if (opts.child) await runChild(opts.child);
else if (opts.replot) {
  const svgFile = opts.replot.replace(/\.json$/, '') + '.svg';
  writeFileSync(svgFile, renderSvg(JSON.parse(readFileSync(opts.replot, 'utf8'))));
  console.log(`wrote ${path.relative(process.cwd(), svgFile)}`);
} else await runParent(opts);
