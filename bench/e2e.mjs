#!/usr/bin/env node
// `npm run bench:e2e`: whole-model generation speed of w4a8 beside llama.cpp (Q4_0, through node-llama-cpp) on
// the same models, the same token ids and the same thread count.
//
// Models: a 1B-class and (opt-in, --with-7b) a 7B-class synthetic Llama that this bench writes itself (random
// weights, real shapes: bench/lib/models.mjs), and every trained model found in ../shared/models or $W4A8_MODELS (imported from
// FP32, packed to W4A8 with RTN, and quantized to a Q4_0 GGUF with llama-quantize's recipe). Files are cached in
// --cache (default: the system temp folder) and reused by later runs.
//
// For every model and engine, in a child process of its own (so peak RSS is the engine's):
//   load time; prefill: time to first token of one prompt (--prefill-tokens ids) and prompt tokens / TTFT,
//   median of a few runs; decode tokens/s at batch 1, 4, 16, 64: B different prompts generated together, each
//   for a fixed number of tokens (end-of-sequence ignored by both engines); peak RSS (VmHWM) of the process.
//   w4a8: W4a8Model.fromPacked(...).stream(ids, {temperature: 0}) with maxBatch = the largest batch, B requests
//   at once (they join one continuous batch); W4A8_THREADS = --threads.
//   llama.cpp: getLlama({gpu: false, maxThreads}), a context with B sequences (threads {ideal, min} = --threads),
//   sequence.evaluate(ids, {temperature: 0}) on each (node-llama-cpp batches the sequences of one context).
// Each model runs --repeat rounds (default 2), alternating the engines, and the best round of each engine is kept
// per figure: other processes on a shared machine only ever lower a figure (each round's figures stay in the JSON).
// Decode tokens/s counts only steps where every sequence of the batch is decoding: from the step that gives the
// last sequence its first token (prefill done for all) to the last token, the tokens produced after that step
// over that time. Greedy sampling on both sides.
//
// Limits beside the figures (STYLE.md rule 7), from the addon's probes with the same thread count: decode at
// batch B cannot beat min(B x read bandwidth / weight bytes per step, peak FLOP/s / (2 x multiply-adds per token));
// prefill cannot beat the compute bound. Weight bytes per step: every layer matrix and the output matrix of each
// engine's own file (w4a8: INT4 codes + group scales/zeros + channel scales + BF16 lm_head, or a packed one with
// --lm-head w4a8; GGUF: Q4_0 + Q6_K).
// KV-cache and activation traffic are left out (short contexts here).
//
// Prints tables with the ratios and the PASS/MISS lines of the targets, writes bench/results/e2e-<cpu>.json and a
// hand-written SVG beside it (decode tokens/s against batch for both engines, with their roofs).
import { spawn } from 'node:child_process';
import { ensureLlamaCpp, importLlamaCpp } from './lib/llama-peer.mjs';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import {
  SYNTHETIC_SHAPES, cachedBuild, discoverTrainedModels, matmulParams, syntheticConfig, syntheticPacked, w4a8StepBytes,
  writeGgufFromSource, writeSyntheticGguf,
} from './lib/models.mjs';
import { randomTokenIds } from './lib/random.mjs';
import {
  ROOT, bestLimits, chart, esc, fail as failWith, fixed, formatTable, loadAverage, loadPackage, logTicks, machineInfo, median,
  memoryStatus, mib, now, pct, probeLimits, readJsonLines, sig, slug,
} from './lib/report.mjs';

const SCRIPT = fileURLToPath(import.meta.url);
const NAME = 'bench:e2e';
const fail = (message) => failWith(NAME, message);
const ENGINES = ['w4a8', 'llama.cpp'];
const SEED = 1;
const CHILD_TIMEOUT_S = 30 * 60;

// What each kind of model runs (quick: shorter). decodeTokens[B]: tokens each of the B sequences generates;
// budgetSeconds: a decode run (and the prefill runs together) stop early past it, so that a slow engine (e.g.
// llama.cpp's spinning thread barriers on a loaded machine) cannot stretch the bench without bound.
const PLANS = {
  tiny: {
    full: { prefillTokens: 128, prefillReps: 5, decodePromptTokens: 16, batches: [1, 4, 16, 64], decodeTokens: { 1: 256, 4: 256, 16: 128, 64: 64 }, budgetSeconds: 60 },
    quick: { prefillTokens: 64, prefillReps: 3, decodePromptTokens: 16, batches: [1, 4, 16, 64], decodeTokens: { 1: 128, 4: 128, 16: 64, 64: 32 }, budgetSeconds: 10 },
  },
  '1b': {
    full: { prefillTokens: 128, prefillReps: 3, decodePromptTokens: 16, batches: [1, 4, 16, 64], decodeTokens: { 1: 48, 4: 32, 16: 24, 64: 16 }, budgetSeconds: 90 },
    quick: { prefillTokens: 64, prefillReps: 2, decodePromptTokens: 8, batches: [1, 4, 16, 64], decodeTokens: { 1: 16, 4: 12, 16: 10, 64: 6 }, budgetSeconds: 20 },
  },
  '7b': {
    full: { prefillTokens: 32, prefillReps: 1, decodePromptTokens: 8, batches: [1, 4, 16], decodeTokens: { 1: 8, 4: 6, 16: 5 }, budgetSeconds: 120 },
    quick: { prefillTokens: 16, prefillReps: 1, decodePromptTokens: 8, batches: [1, 4], decodeTokens: { 1: 5, 4: 4 }, budgetSeconds: 60 },
  },
};

function usage() {
  return `usage: npm run bench:e2e -- [options]

  --quick               the 1B-class model and the trained models only, short sequences (a few minutes)
  --with-7b             also the 7B-class synthetic model (slow on 2 cores: ~4 GB of weights per token; about
                        10-15 minutes more, and ~8 GB of files in the cache)
  --models LIST         only these: synthetic-1b, synthetic-7b and the ids of ../shared/models (e.g. stories260K)
  --engines LIST        of ${ENGINES.join(',')} (default: both)
  --threads N           threads of both engines (default: W4A8_THREADS or the number of CPUs)
  --batches LIST        decode batch sizes (default: per model, 1,4,16,64; 7B: 1,4,16)
  --decode-tokens N     tokens generated per sequence at every batch size (default: per model and batch)
  --prefill-tokens N    prompt length of the prefill / time-to-first-token runs (default: per model)
  --repeat N            rounds per model, alternating the engines; the best round of each is kept (default 2,
                        quick 1): other processes' load only ever lowers a figure
  --settle SECONDS      before each engine run, wait up to this long for the 1-minute load average to drop below
                        the thread count (default 0: don't wait; the load average is recorded either way)
  --cache DIR           where the model files are built and kept (default: ${path.join(os.tmpdir(), 'w4a8-bench')})
  --clean               remove the files this run built from the cache at the end
  --lm-head H           w4a8's lm_head: bf16 (default) or w4a8 (packed like the linear layers, as
                        \`w4a8 pack --lm-head w4a8\` does; llama.cpp's output matrix is Q6_K either way)
  --kv-cache T          w4a8's KV cache: bf16 (default, as the runtime's) or f32 (llama.cpp's is F16 either way)
  --out DIR             where the JSON and SVG go (default bench/results)
  --replot FILE.json    only redraw the SVG of an earlier run
  --help`;
}

function positiveInteger(text, name) {
  const v = Number(text);
  if (!Number.isInteger(v) || v < 1) fail(`--${name} must be a positive integer, got '${text}'`);
  return v;
}

function readOptions(argv) {
  let v;
  try {
    v = parseArgs({
      args: argv, strict: true,
      options: {
        quick: { type: 'boolean' }, 'with-7b': { type: 'boolean' }, models: { type: 'string' }, engines: { type: 'string' },
        threads: { type: 'string' }, batches: { type: 'string' }, 'decode-tokens': { type: 'string' }, 'prefill-tokens': { type: 'string' },
        cache: { type: 'string' }, clean: { type: 'boolean' }, settle: { type: 'string' }, repeat: { type: 'string' }, out: { type: 'string' }, replot: { type: 'string' }, help: { type: 'boolean' },
        child: { type: 'string' }, 'lm-head': { type: 'string' }, 'kv-cache': { type: 'string' },
      },
    }).values;
  } catch (error) {
    fail(`${error.message}\n\n${usage()}`);
  }
  if (v.help) {
    console.log(usage());
    process.exit(0);
  }
  if (v.child) return { child: JSON.parse(v.child) };
  if (v.replot) return { replot: path.resolve(v.replot) };
  const list = (text) => text.split(',').map((s) => s.trim()).filter(Boolean);
  const engines = v.engines ? list(v.engines) : ENGINES;
  for (const e of engines) if (!ENGINES.includes(e)) fail(`--engines: '${e}' is not one of ${ENGINES.join(', ')}`);
  const envThreads = process.env.W4A8_THREADS;
  return {
    quick: Boolean(v.quick), with7b: Boolean(v['with-7b']),
    models: v.models ? list(v.models).map((m) => (m === '1b' ? 'synthetic-1b' : m === '7b' ? 'synthetic-7b' : m)) : null,
    engines: ENGINES.filter((e) => engines.includes(e)),
    threads: v.threads ? positiveInteger(v.threads, 'threads') : envThreads ? positiveInteger(envThreads, 'threads (W4A8_THREADS)') : os.availableParallelism(),
    batches: v.batches ? [...new Set(list(v.batches).map((b) => positiveInteger(b, 'batches')))].sort((a, b) => a - b) : null,
    decodeTokens: v['decode-tokens'] ? positiveInteger(v['decode-tokens'], 'decode-tokens') : null,
    prefillTokens: v['prefill-tokens'] ? positiveInteger(v['prefill-tokens'], 'prefill-tokens') : null,
    cache: path.resolve(v.cache ?? path.join(os.tmpdir(), 'w4a8-bench')),
    clean: Boolean(v.clean),
    lmHead: v['lm-head'] === undefined || v['lm-head'] === 'bf16' ? 'bf16'
      : v['lm-head'] === 'w4a8' ? 'w4a8' : fail(`--lm-head must be bf16 or w4a8, got '${v['lm-head']}'`),
    kvCache: v['kv-cache'] ?? null,  // checked, and defaulted to the runtime's DEFAULT_KV_CACHE, once the package is loaded
    settle: v.settle ? positiveInteger(v.settle, 'settle') : 0,
    repeat: v.repeat ? positiveInteger(v.repeat, 'repeat') : v.quick ? 1 : 2,
    out: path.resolve(v.out ?? path.join(ROOT, 'bench', 'results')),
  };
}

// ---- children: one engine on one model --------------------------------------------------------------------

const emit = (record) => process.stdout.write(`${JSON.stringify(record)}\n`);

/**
 * Tokens/s over the steps where every sequence decodes. The last sequence to get its first token marks the
 * start (its first token's step); each sequence's token nearest in time to that mark was made by that same
 * step (all sequences of a step get their tokens together, a whole step away from the next ones), and the
 * tokens after it were made later. Time: from the mark to the last token.
 */
function decodeRate(results) {
  const lastToStart = results.reduce((a, r) => (r.times[0] > a.times[0] ? r : a));
  const mark = lastToStart.times[0];
  let tokens = 0;
  for (const r of results) {
    let k = 0;
    for (let i = 1; i < r.times.length; i++) if (Math.abs(r.times[i] - mark) < Math.abs(r.times[k] - mark)) k = i;
    tokens += r.times.length - 1 - k;
  }
  const seconds = Math.max(...results.map((r) => r.times[r.times.length - 1])) - mark;
  return { tokens, seconds, tokensPerSecond: seconds > 0 ? tokens / seconds : null, generated: results.reduce((s, r) => s + r.tokens.length, 0) };
}

// The same measurements for both engines; generate(prompts, maxTokens) -> [{start, times, tokens}] per prompt.
async function measureEngine(cfg, generate) {
  await generate([cfg.prompts.warmup], 4, Infinity);
  const ttfts = [];
  const prefillDeadline = now() + cfg.plan.budgetSeconds;
  for (let r = 0; r < cfg.plan.prefillReps && (r === 0 || now() < prefillDeadline); r++) {
    const [res] = await generate([cfg.prompts.prefill], 1, Infinity);
    ttfts.push(res.times[0] - res.start);
  }
  emit({ type: 'prefill', promptTokens: cfg.prompts.prefill.length, ttftSeconds: median(ttfts), runs: ttfts });
  for (const batch of cfg.plan.batches) {
    const maxTokens = cfg.plan.decodeTokens[batch];
    const t0 = now();
    const results = await generate(cfg.prompts.decode.slice(0, batch), maxTokens, t0 + cfg.plan.budgetSeconds);
    const rate = decodeRate(results);
    const short = results.filter((r) => r.tokens.length !== maxTokens).length;
    emit({ type: 'decode', batch, maxTokens, ...rate, wallSeconds: now() - t0, shortSequences: short,
      stoppedByBudget: short > 0 && now() - t0 >= cfg.plan.budgetSeconds, firstTokens: batch === 1 ? results[0].tokens.slice(0, 16) : undefined });
  }
  emit({ type: 'memory', ...memoryStatus() });
}

async function childW4a8(cfg) {
  const { pkg } = await loadPackage(NAME);
  emit({ type: 'engine', backend: pkg.backend(), threads: process.env.W4A8_THREADS ?? null });
  const t0 = now();
  const packed = await pkg.readPackedModel(cfg.w4a8File);
  // Generate exactly maxTokens like llama.cpp does below: no end-of-sequence token stops a benchmark sequence.
  packed.config = { ...packed.config, eosTokenIds: [] };
  const model = pkg.W4a8Model.fromPacked(packed, {
    maxBatch: Math.max(...cfg.plan.batches), contextLength: cfg.contextLength, prefillChunk: 256, kvCache: cfg.kvCache,
  });
  emit({ type: 'load', seconds: now() - t0, ...memoryStatus() });
  await measureEngine(cfg, (prompts, maxTokens, deadline) => Promise.all(prompts.map(async (prompt) => {
    const times = [], tokens = [];
    const start = now();
    for await (const chunk of model.stream(prompt, { maxTokens, temperature: 0 })) {
      const t = now();
      for (const id of chunk.tokenIds) { times.push(t); tokens.push(id); }
      if (t > deadline && tokens.length >= 2) break;
    }
    return { start, times, tokens };
  })));
  await model.dispose();
}

async function loadLlama(threads) {
  const { getLlama } = await importLlamaCpp();
  // build 'never' + skipDownload: use the prebuilt binary of the npm package or fail; never fetch or compile.
  const llama = await getLlama({ gpu: false, build: 'never', skipDownload: true, logLevel: 'error', maxThreads: threads, progressLogs: false });
  return llama;
}

async function childLlama(cfg) {
  const t0 = now();
  let llama;
  try {
    llama = await loadLlama(cfg.threads);
  } catch (error) {
    emit({ type: 'unavailable', reason: `node-llama-cpp cannot start here: ${error.message}` });
    return;
  }
  emit({ type: 'engine', backend: `llama.cpp ${llama.llamaCppRelease?.release ?? ''} (${llama.buildType} binary, gpu ${llama.gpu})`.trim(),
    systemInfo: llama.systemInfo, threads: cfg.threads });
  const model = await llama.loadModel({ modelPath: cfg.ggufFile, gpuLayers: 0 });
  emit({ type: 'load', seconds: now() - t0, ...memoryStatus() });
  await measureEngine(cfg, async (prompts, maxTokens, deadline) => {
    const context = await model.createContext({
      contextSize: cfg.contextLength, sequences: prompts.length, batchSize: 512, threads: { ideal: cfg.threads, min: cfg.threads },
    });
    try {
      return await Promise.all(prompts.map(async (prompt) => {
        const sequence = context.getSequence();
        const times = [], tokens = [];
        const start = now();
        for await (const token of sequence.evaluate(prompt, { temperature: 0, yieldEogToken: true })) {
          const t = now();
          times.push(t);
          tokens.push(token);
          if (tokens.length >= maxTokens || (t > deadline && tokens.length >= 2)) break;
        }
        return { start, times, tokens };
      }));
    } finally {
      await context.dispose();
    }
  });
  await model.dispose();
  await llama.dispose();
}

/** Greedy tokens of the full-precision model on each side: w4a8's FP32 reference runtime and llama.cpp on an F32 GGUF. */
async function childReference(cfg) {
  const tokens = [];
  if (cfg.engine === 'w4a8') {
    const { pkg } = await loadPackage(NAME);
    const { createReferenceNativeModel } = await import(pathToFileURL(path.join(ROOT, 'dist', 'model', 'native-model.js')).href);
    const source = await pkg.importModel(cfg.source);
    const handle = createReferenceNativeModel(source);
    const vocab = source.config.vocabSize;
    const id = handle.createSequence(cfg.prompt.length + cfg.tokens + 1);
    const logits = new Float32Array(vocab);
    let feed = cfg.prompt;
    while (tokens.length < cfg.tokens) {
      await handle.step(Int32Array.of(id), Int32Array.of(feed.length), Int32Array.from(feed), logits);
      let best = 0;
      for (let j = 1; j < vocab; j++) if (logits[j] > logits[best]) best = j;
      tokens.push(best);
      feed = [best];
    }
    handle.dispose();
  } else {
    const llama = await loadLlama(cfg.threads);
    const model = await llama.loadModel({ modelPath: cfg.ggufFile, gpuLayers: 0 });
    const context = await model.createContext({ contextSize: cfg.prompt.length + cfg.tokens + 8, sequences: 1, threads: { ideal: cfg.threads, min: cfg.threads } });
    for await (const token of context.getSequence().evaluate(cfg.prompt, { temperature: 0, yieldEogToken: true })) {
      tokens.push(token);
      if (tokens.length >= cfg.tokens) break;
    }
    await context.dispose();
    await model.dispose();
    await llama.dispose();
  }
  emit({ type: 'reference', tokens });
}

async function runChild(cfg) {
  if (cfg.task === 'reference') return childReference(cfg);
  if (cfg.engine === 'w4a8') return childW4a8(cfg);
  return childLlama(cfg);
}

// ---- parent ------------------------------------------------------------------------------------------------

function spawnChild(cfg, threads, label) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [SCRIPT, '--child', JSON.stringify(cfg)], {
      cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, W4A8_THREADS: String(threads) },
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_TIMEOUT_S * 1000);
    const records = [];
    let errors = '';
    readJsonLines(child.stdout, `  [${label}] `, (record) => {
      records.push(record);
      progress(label, record);
    });
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk) => {
      errors += chunk;
      for (const line of chunk.split('\n')) if (line.trim()) process.stderr.write(`  [${label}] ${line}\n`);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ records, code, signal, errors: errors.trim().split('\n').slice(-5).join(' | ') });
    });
  });
}

function progress(label, r) {
  const say = (text) => process.stderr.write(`  ${label}: ${text}\n`);
  if (r.type === 'engine') say(`${typeof r.backend === 'string' ? r.backend : `${r.backend.name} (${r.backend.reason})`}`);
  else if (r.type === 'load') say(`loaded in ${r.seconds.toFixed(1)} s, RSS ${mib(r.rssBytes)} MiB`);
  else if (r.type === 'prefill') say(`prefill ${r.promptTokens} tokens: TTFT ${(r.ttftSeconds * 1e3).toFixed(0)} ms = ${(r.promptTokens / r.ttftSeconds).toFixed(1)} tokens/s`);
  else if (r.type === 'decode') say(`decode batch ${r.batch}: ${r.tokensPerSecond?.toFixed(2)} tokens/s (${r.tokens} tokens in ${r.seconds.toFixed(2)} s; wall ${r.wallSeconds.toFixed(1)} s)`);
  else if (r.type === 'unavailable') say(r.reason);
}

/** The plan of a model: its kind's plan, with the command line's overrides. */
function planFor(kind, opts) {
  const base = PLANS[kind][opts.quick ? 'quick' : 'full'];
  const batches = opts.batches ?? base.batches;
  const decodeTokens = {};
  for (const b of batches) decodeTokens[b] = opts.decodeTokens ?? base.decodeTokens[b] ?? base.decodeTokens[Math.max(...base.batches)];
  return { ...base, batches, decodeTokens, prefillTokens: opts.prefillTokens ?? base.prefillTokens };
}

function kindOfParams(params) {
  return params < 50e6 ? 'tiny' : params < 3e9 ? '1b' : '7b';
}

/** Token-id prompts both engines get: ids in [lo, vocab), trained models' prompts start with BOS. */
function promptsFor(plan, vocab, bos) {
  const lo = Math.min(3, vocab - 1);
  const make = (count, seed) => [...(bos === undefined ? [] : [bos]), ...randomTokenIds(count - (bos === undefined ? 0 : 1), seed, lo, vocab)];
  return {
    warmup: make(8, SEED + 100),
    prefill: make(plan.prefillTokens, SEED + 200),
    decode: Array.from({ length: Math.max(...plan.batches) }, (_, i) => make(plan.decodePromptTokens, SEED + 300 + i)),
  };
}

async function prepareSynthetic(key, opts, format) {
  const shape = SYNTHETIC_SHAPES[key];
  const contextLength = shape.maxSeqLen;
  return cachedBuild(opts.cache, `${shape.id}${headSuffix(opts)}`, async (base) => {
    process.stderr.write(`building ${shape.id}: ${base}.w4a8 and ${base}.gguf (random weights) ...\n`);
    const t0 = now();
    const packed = syntheticPacked(format, shape, SEED, opts.lmHead);
    const written = await format.writePackedModel(`${base}.w4a8`, packed);
    const gguf = writeSyntheticGguf(`${base}.gguf`, shape, contextLength, SEED);
    process.stderr.write(`  built in ${(now() - t0).toFixed(0)} s (${mib(written.bytes)} + ${mib(gguf.bytes)} MiB)\n`);
    return {
      id: shape.id, label: `${shape.label}${headLabel(opts)}`, kind: key, trained: false, lmHead: opts.lmHead, config: syntheticConfig(shape), groupSize: packed.quant.groupSize,
      w4a8File: `${base}.w4a8`, w4a8Bytes: written.bytes, w4a8StepBytes: w4a8StepBytes(packed),
      ggufFile: `${base}.gguf`, ggufBytes: gguf.bytes, ggufStepBytes: gguf.stepBytes, ggufTypes: gguf.types,
    };
  });
}

const TRAINED_GROUP = 32;

// --lm-head w4a8: other files in the cache, and said in every model's label.
const headSuffix = (opts) => (opts.lmHead === 'w4a8' ? '-lmhead-w4a8' : '');
const headLabel = (opts) => (opts.lmHead === 'w4a8' ? ', w4a8 lm_head W4A8' : '');

async function prepareTrained(entry, opts, pkg, format) {
  return cachedBuild(opts.cache, `trained-${slug(entry.id)}${headSuffix(opts)}`, async (base) => {
    process.stderr.write(`converting ${entry.id} (${entry.source}) ...\n`);
    const source = await pkg.importModel(entry.source);
    // G = 32: the same granularity as Q4_0's blocks, so both files quantize the weights alike.
    const packed = await pkg.packModel(source, { groupSize: TRAINED_GROUP, lmHead: opts.lmHead });
    const written = await pkg.writePackedModel(`${base}.w4a8`, packed);
    const gguf = writeGgufFromSource(`${base}.gguf`, source, entry.id, format.tensorToFloat32);
    const params = matmulParams(source.config);
    const description = {
      id: entry.id, label: `${entry.id} (trained, ${entry.kind}: dim ${source.config.dim}, MLP ${source.config.hiddenDim}, ` +
        `${source.config.nLayers} layers, ${source.config.nHeads}/${source.config.nKvHeads} heads, vocab ${source.config.vocabSize})${headLabel(opts)}`,
      lmHead: opts.lmHead,
      kind: kindOfParams(params), trained: true, source: entry.source, config: source.config, groupSize: TRAINED_GROUP,
      w4a8File: `${base}.w4a8`, w4a8Bytes: written.bytes, w4a8StepBytes: w4a8StepBytes(packed),
    };
    if (gguf.skipped) return { ...description, ggufSkipped: gguf.skipped };
    // An F32 GGUF too, when small: llama.cpp on it must reproduce w4a8's FP32 reference (a check of the converter).
    let ggufF32File = null;
    if (params < 50e6) {
      writeGgufFromSource(`${base}.f32.gguf`, source, entry.id, format.tensorToFloat32, { allF32: true });
      ggufF32File = `${base}.f32.gguf`;
    }
    return { ...description, ggufFile: `${base}.gguf`, ggufBytes: gguf.bytes, ggufStepBytes: gguf.stepBytes, ggufTypes: gguf.types, ggufF32File };
  });
}

function collect(records) {
  const get = (type) => records.find((r) => r.type === type);
  const engine = get('engine'), load = get('load'), prefill = get('prefill'), memory = get('memory');
  return {
    backend: engine ? (typeof engine.backend === 'string' ? engine.backend : `${engine.backend.name}: ${engine.backend.reason}`) : null,
    systemInfo: engine?.systemInfo ?? null,
    loadSeconds: sig(load?.seconds), rssAfterLoadBytes: load?.rssBytes ?? null,
    prefill: prefill ? { promptTokens: prefill.promptTokens, ttftMs: sig(prefill.ttftSeconds * 1e3), tokensPerSecond: sig(prefill.promptTokens / prefill.ttftSeconds),
      runsMs: prefill.runs.map((s) => sig(s * 1e3)) } : null,
    decode: records.filter((r) => r.type === 'decode').map((r) => ({
      batch: r.batch, tokensPerSecond: sig(r.tokensPerSecond), maxTokens: r.maxTokens, measuredTokens: r.tokens, seconds: sig(r.seconds),
      wallSeconds: sig(r.wallSeconds), shortSequences: r.shortSequences, stoppedByBudget: r.stoppedByBudget ?? false, firstTokens: r.firstTokens,
    })),
    peakRssBytes: memory?.peakRssBytes ?? null,
  };
}

async function runParent(opts) {
  const started = now();
  const { pkg, format, addon } = await loadPackage(NAME);
  opts.kvCache ??= pkg.DEFAULT_KV_CACHE;
  if (!pkg.KV_CACHE_TYPES.includes(opts.kvCache)) fail(`--kv-cache must be one of ${pkg.KV_CACHE_TYPES.join(', ')}, got '${opts.kvCache}'`);
  const machine = machineInfo();
  const loadBefore = loadAverage();
  console.log(`machine: ${machine.cpu}, ${machine.logicalCpus} logical CPUs, ${(machine.memoryBytes / 2 ** 30).toFixed(0)} GiB; ${machine.isa.join(' ')}`);
  console.log(`w4a8 kernels: ${pkg.backend().name} (${pkg.backend().reason}); threads ${opts.threads} for both engines; w4a8 KV cache ${opts.kvCache}`);
  console.log(`load average before: ${loadBefore.join(', ')}${loadBefore[0] > 0.5 ? ' (other processes share the CPUs: figures may be low and noisy)' : ''}`);
  if (opts.engines.includes('llama.cpp')) {
    const missing = await ensureLlamaCpp();
    if (missing) console.log(`llama.cpp: unavailable: ${missing}`);
  }
  const probes = [probeLimits(addon, opts.threads)];

  // Models.
  const trained = discoverTrainedModels(process.env.W4A8_MODELS ?? path.join(ROOT, '..', 'shared', 'models'));
  if (!trained.length) console.log('note: no trained model in ../shared/models (absent): only the synthetic models run');
  const wanted = opts.models ?? ['synthetic-1b', ...(opts.with7b ? ['synthetic-7b'] : []), ...trained.map((t) => t.id)];
  const known = ['synthetic-1b', 'synthetic-7b', ...trained.map((t) => t.id)];
  for (const m of wanted) if (!known.includes(m)) fail(`--models: '${m}' is not one of ${known.join(', ')}`);
  if (!wanted.includes('synthetic-7b')) console.log('note: the 7B-class model is opt-in (--with-7b): ~4 GB of weights per token on this machine');

  const models = [];
  const built = [];
  for (const id of wanted) {
    let description;
    if (id.startsWith('synthetic-')) description = await prepareSynthetic(id.slice('synthetic-'.length), opts, format);
    else description = await prepareTrained(trained.find((t) => t.id === id), opts, pkg, format);
    if (!description.cached) built.push(description);
    const plan = planFor(description.kind, opts);
    const config = description.config;
    const contextLength = Math.min(config.maxSeqLen, Math.max(plan.prefillTokens + 8, plan.decodePromptTokens + Math.max(...Object.values(plan.decodeTokens)) + 8));
    const prompts = promptsFor(plan, config.vocabSize, description.trained ? config.bosTokenId : undefined);
    const params = matmulParams(config);
    const model = { ...description, params, plan, contextLength, engines: {}, check: null };
    models.push(model);
    console.log(`\n${model.label}`);
    console.log(`  files: ${model.w4a8File} (${mib(model.w4a8Bytes)} MiB, W4A8 G=${model.groupSize})` +
      (model.ggufFile ? `, ${model.ggufFile} (${mib(model.ggufBytes)} MiB, ${Object.entries(model.ggufTypes).filter(([k]) => k.startsWith('ffn') || k.startsWith('attn') || k === 'output.weight').map(([k, t]) => `${k.replace('.weight', '')} ${t}`).join(', ')})` : '') +
      `${model.cached ? ' [cached]' : ''}`);
    // Rounds alternate the engines, so that a burst of load from other processes hits both alike; the best
    // round of each engine is kept (other load only ever lowers a figure).
    const rounds = Object.fromEntries(opts.engines.map((e) => [e, []]));
    for (let round = 1; round <= opts.repeat; round++) {
      for (const engine of opts.engines) {
        if (engine === 'llama.cpp' && !model.ggufFile) {
          if (round === 1) console.log(`  llama.cpp: skipped: ${model.ggufSkipped}`);
          rounds[engine].push({ status: 'skipped', reason: model.ggufSkipped });
          continue;
        }
        if (round > 1 && rounds[engine].some((r) => r.status === 'unavailable')) continue;
        const cfg = { engine, w4a8File: model.w4a8File, ggufFile: model.ggufFile, threads: opts.threads, plan, prompts, contextLength, kvCache: opts.kvCache };
        await settle(opts);
        const loadAtStart = loadAverage();
        const run = await spawnChild(cfg, opts.threads, `${model.id} ${engine}${opts.repeat > 1 ? ` #${round}` : ''}`);
        const loadAtEnd = loadAverage();
        const unavailable = run.records.find((r) => r.type === 'unavailable');
        const result = collect(run.records);
        let outcome;
        if (unavailable) outcome = { status: 'unavailable', reason: unavailable.reason };
        else if (run.code !== 0 || !run.records.some((r) => r.type === 'memory'))
          outcome = { status: 'failed', reason: `child exited with ${run.signal ?? run.code}: ${run.errors}`, ...result };
        else outcome = { status: 'measured', ...result };
        outcome.loadAverage = { start: loadAtStart, end: loadAtEnd };
        if (outcome.status !== 'measured') console.log(`  ${engine}: ${outcome.status}: ${outcome.reason}`);
        rounds[engine].push(outcome);
      }
    }
    for (const engine of opts.engines) model.engines[engine] = bestOfRounds(rounds[engine]);
    // Converter check (small trained models): the FP32 model on both sides must pick the same greedy tokens.
    if (model.ggufF32File && opts.engines.includes('llama.cpp') && model.engines['llama.cpp']?.status === 'measured') {
      const base = { task: 'reference', prompt: prompts.prefill.slice(0, 16), tokens: 24, threads: opts.threads };
      const a = await spawnChild({ ...base, engine: 'w4a8', source: model.source }, opts.threads, `${model.id} check`);
      const b = await spawnChild({ ...base, engine: 'llama.cpp', ggufFile: model.ggufF32File }, opts.threads, `${model.id} check`);
      const ta = a.records.find((r) => r.type === 'reference')?.tokens, tb = b.records.find((r) => r.type === 'reference')?.tokens;
      if (ta && tb) {
        let same = 0;
        while (same < ta.length && ta[same] === tb[same]) same++;
        model.check = { tokens: ta.length, agreeingPrefix: same, w4a8Fp32: ta, llamaCppF32: tb };
        console.log(`  converter check: FP32 greedy tokens, w4a8 reference runtime vs llama.cpp on the F32 GGUF: first ${same}/${ta.length} identical`);
      }
    }
  }
  probes.push(probeLimits(addon, opts.threads));
  const limits = bestLimits(probes);
  const loadAfter = loadAverage();

  // Derived figures.
  for (const model of models) {
    for (const [engine, r] of Object.entries(model.engines)) {
      if (r.status !== 'measured') continue;
      const stepBytes = engine === 'w4a8' ? model.w4a8StepBytes : model.ggufStepBytes;
      for (const d of r.decode) {
        d.roofTokensPerSecond = limits ? sig(roof(limits, d.batch, stepBytes, model.params)) : null;
        d.roofRatio = d.roofTokensPerSecond ? sig(d.tokensPerSecond / d.roofTokensPerSecond, 3) : null;
      }
      if (r.prefill && limits?.peakGflops) {
        r.prefill.roofTokensPerSecond = sig((limits.peakGflops * 1e9) / (2 * model.params));
        r.prefill.roofRatio = sig(r.prefill.tokensPerSecond / r.prefill.roofTokensPerSecond, 3);
      }
    }
  }

  const report = {
    schema: 'w4a8-bench-e2e/1', date: new Date().toISOString(), machine,
    config: {
      quick: opts.quick, threads: opts.threads, engines: opts.engines, kvCache: opts.kvCache, seed: SEED, rounds: opts.repeat, loadAverage: { before: loadBefore, after: loadAfter },
      decodeTokensPerSecond: 'tokens after the step in which the last sequence of the batch got its first token / time from that step to the last token',
      roof: 'min(batch x read bandwidth / weight bytes per step, peak FLOP/s / (2 x multiply-adds per token))',
      sampling: 'greedy (temperature 0); end-of-sequence ignored by both engines; token ids in, no tokenizer',
    },
    limits: limits && { readBandwidthGBps: sig(limits.gbPerSecond), peakGflops: sig(limits.peakGflops), peakIsa: limits.peakIsa, runs: limits.runs },
    models: models.map((m) => ({
      id: m.id, label: m.label, trained: m.trained, config: m.config, params: m.params, plan: m.plan, contextLength: m.contextLength,
      files: { w4a8: { bytes: m.w4a8Bytes, stepBytes: m.w4a8StepBytes, groupSize: m.groupSize },
        gguf: m.ggufFile ? { bytes: m.ggufBytes, stepBytes: m.ggufStepBytes, types: m.ggufTypes } : { skipped: m.ggufSkipped } },
      engines: m.engines, check: m.check,
    })),
  };
  report.targets = evaluateTargets(report);

  printReport(report);
  mkdirSync(opts.out, { recursive: true });
  const name = `e2e-${slug(machine.cpu)}-${opts.threads}t${opts.quick ? '-quick' : ''}${headSuffix(opts)}${opts.kvCache !== pkg.DEFAULT_KV_CACHE ? `-kv-${opts.kvCache}` : ''}`;
  const jsonFile = path.join(opts.out, `${name}.json`), svgFile = path.join(opts.out, `${name}.svg`);
  writeFileSync(jsonFile, `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(svgFile, renderSvg(report));
  if (opts.clean) for (const b of built) for (const f of [b.w4a8File, b.ggufFile, b.ggufF32File]) if (f) rmSync(f, { force: true });
  console.log(`\nload average after: ${loadAfter.join(', ')}`);
  console.log(`wrote ${path.relative(process.cwd(), jsonFile)} and ${path.relative(process.cwd(), svgFile)} (${(now() - started).toFixed(0)} s)`);
  if (models.some((m) => Object.values(m.engines).some((e) => e.status === 'failed'))) process.exitCode = 1;
}

/**
 * One engine's result from its rounds: per batch the round with the most tokens/s, the prefill of the round with
 * the shortest TTFT, the largest peak RSS; every round's figures are kept in `rounds`.
 */
function bestOfRounds(rounds) {
  const measured = rounds.filter((r) => r.status === 'measured');
  if (!measured.length) return rounds[rounds.length - 1];
  const best = structuredClone(measured[0]);
  best.prefill = measured.map((r) => r.prefill).filter(Boolean).reduce((a, b) => (b.ttftMs < a.ttftMs ? b : a), best.prefill);
  best.decode = best.decode.map((d) => measured.map((r) => r.decode.find((x) => x.batch === d.batch)).filter(Boolean)
    .reduce((a, b) => ((b.tokensPerSecond ?? 0) > (a.tokensPerSecond ?? 0) ? b : a)));
  best.peakRssBytes = Math.max(...measured.map((r) => r.peakRssBytes ?? 0)) || null;
  best.loadSeconds = Math.min(...measured.map((r) => r.loadSeconds ?? Infinity));
  best.loadAverage = { start: rounds[0].loadAverage?.start, end: rounds[rounds.length - 1].loadAverage?.end };
  best.rounds = rounds.map((r) => ({
    status: r.status, loadAverage: r.loadAverage, ttftMs: r.prefill?.ttftMs ?? null,
    decodeTokensPerSecond: Object.fromEntries((r.decode ?? []).map((d) => [d.batch, d.tokensPerSecond])),
  }));
  return best;
}

/** Waits (up to --settle seconds) for the 1-minute load average to fall below the thread count. */
async function settle(opts) {
  if (!opts.settle) return;
  const until = now() + opts.settle;
  if (os.loadavg()[0] < opts.threads) return;
  process.stderr.write(`  waiting up to ${opts.settle} s for the load average (${os.loadavg()[0].toFixed(2)}) to fall below ${opts.threads} ...\n`);
  while (now() < until && os.loadavg()[0] >= opts.threads) await new Promise((r) => setTimeout(r, 5000));
}

function roof(limits, batch, stepBytes, params) {
  const bandwidth = (batch * limits.gbPerSecond * 1e9) / stepBytes;
  const compute = limits.peakGflops ? (limits.peakGflops * 1e9) / (2 * params) : Infinity;
  return Math.min(bandwidth, compute);
}

// ---- targets -----------------------------------------------------------------------------------------------

function evaluateTargets(report) {
  const targets = [];
  for (const m of report.models) {
    const w = m.engines.w4a8, l = m.engines['llama.cpp'];
    const at = (r, b) => r?.status === 'measured' ? r.decode.find((d) => d.batch === b)?.tokensPerSecond ?? null : null;
    const w1 = at(w, 1), l1 = at(l, 1), w16 = at(w, 16);
    if (l) {
      const why = l.status !== 'measured' ? `llama.cpp ${l.status}: ${l.reason}` : null;
      for (const [id, need, text] of [['vs-llama-cpp', 1.0, 'batch-1 decode >= 1.0x llama.cpp Q4_0'], ['vs-llama-cpp-stretch', 1.3, 'stretch: batch-1 decode >= 1.3x llama.cpp Q4_0']])
        targets.push(w1 && l1 ? { id: `${m.id}:${id}`, model: m.id, text, required: need, value: sig(w1 / l1, 3), status: w1 / l1 >= need ? 'pass' : 'miss',
          detail: `${w1.toFixed(2)} vs ${l1.toFixed(2)} tokens/s` } : { id: `${m.id}:${id}`, model: m.id, text, required: need, value: null, status: 'n/a', detail: why ?? 'not measured' });
    }
    targets.push(w1 && w16 ? { id: `${m.id}:batching`, model: m.id, text: 'w4a8 decode at 16 concurrent requests >= 6x batch 1', required: 6,
      value: sig(w16 / w1, 3), status: w16 / w1 >= 6 ? 'pass' : 'miss', detail: `${w16.toFixed(2)} vs ${w1.toFixed(2)} tokens/s` }
      : { id: `${m.id}:batching`, model: m.id, text: 'w4a8 decode at 16 concurrent requests >= 6x batch 1', required: 6, value: null, status: 'n/a', detail: 'batch 1 and 16 not both measured' });
  }
  return targets;
}

// ---- printing ----------------------------------------------------------------------------------------------

function printReport(report) {
  const L = report.limits;
  console.log('');
  if (L) console.log(`limits (${report.config.threads} threads, best of ${L.runs.length} probe runs): read bandwidth ${L.readBandwidthGBps} GB/s, ` +
    `peak ${L.peakGflops} GFLOP/s (${L.peakIsa})`);
  const engines = report.config.engines;
  // Table 1: load, prefill, memory.
  const rows1 = [];
  for (const m of report.models) {
    for (const e of engines) {
      const r = m.engines[e];
      if (!r) continue;
      const stepBytes = e === 'w4a8' ? m.files.w4a8.stepBytes : m.files.gguf.stepBytes;
      if (r.status !== 'measured') { rows1.push([m.id, e, stepBytes ? mib(stepBytes) : '-', r.status, '', '', '', '', '', '', '']); continue; }
      const other = m.engines[e === 'w4a8' ? 'llama.cpp' : 'w4a8'];
      const ratio = e === 'w4a8' && other?.status === 'measured' ? fixed(r.prefill.tokensPerSecond / other.prefill.tokensPerSecond, 2) : '';
      rows1.push([m.id, e, mib(stepBytes), fixed(r.loadSeconds, 1), String(r.prefill.promptTokens), fixed(r.prefill.ttftMs, 0),
        fixed(r.prefill.tokensPerSecond, 1), `${fixed(r.prefill.roofTokensPerSecond, 0)} (${pct(r.prefill.roofRatio)})`, ratio, mib(r.peakRssBytes),
        `${r.loadAverage.start[0]}-${r.loadAverage.end[0]}`]);
    }
    rows1.push('');
  }
  console.log('\nprefill, time to first token, memory');
  console.log(formatTable(['model', 'engine', 'MiB/step', 'load s', 'prompt', 'TTFT ms', 'prefill tok/s', 'compute roof (%)', 'w4a8/llama', 'peak RSS MiB', 'load avg'],
    rows1.slice(0, -1), new Set([0, 1])));
  console.log('MiB/step: weight bytes one decode step reads (layer matrices + output matrix); compute roof: peak FLOP/s / (2 x multiply-adds per token); ' +
    'peak RSS: VmHWM of the engine\'s process over the whole run (mapped weights it touched + KV caches + runtime); ' +
    `load avg: the machine's 1-minute load average when the engine's run started-ended (${report.config.threads} threads used; above that, other processes took CPU time)`);

  // Table 2: decode.
  const rows2 = [];
  for (const m of report.models) {
    const w = m.engines.w4a8, l = m.engines['llama.cpp'];
    const batches = [...new Set([...(w?.decode ?? []), ...(l?.decode ?? [])].map((d) => d.batch))].sort((a, b) => a - b);
    const w1 = w?.decode?.find((d) => d.batch === 1)?.tokensPerSecond;
    for (const b of batches) {
      const wd = w?.status === 'measured' ? w.decode.find((d) => d.batch === b) : null;
      const ld = l?.status === 'measured' ? l.decode.find((d) => d.batch === b) : null;
      rows2.push([m.id, String(b),
        wd ? fixed(wd.tokensPerSecond, 2) : '-', wd ? `${fixed(wd.roofTokensPerSecond, 1)} (${pct(wd.roofRatio)})` : '-',
        ld ? fixed(ld.tokensPerSecond, 2) : l && l.status !== 'measured' ? l.status : '-', ld ? `${fixed(ld.roofTokensPerSecond, 1)} (${pct(ld.roofRatio)})` : '-',
        wd && ld ? `${fixed(wd.tokensPerSecond / ld.tokensPerSecond, 2)}x` : '-',
        wd && w1 ? `${fixed(wd.tokensPerSecond / w1, 2)}x` : '-',
        wd ? `${wd.measuredTokens}/${fixed(wd.seconds, 1)}s` : '-']);
    }
    rows2.push('');
  }
  console.log('\ndecode (tokens/s over all sequences of the batch, prefill excluded)');
  console.log(formatTable(['model', 'batch', 'w4a8 tok/s', 'w4a8 roof (%)', 'llama.cpp tok/s', 'llama roof (%)', 'w4a8/llama', 'w4a8 vs B=1', 'w4a8 tokens/time'],
    rows2.slice(0, -1), new Set([0])));
  console.log('roof: min(batch x read bandwidth / that engine\'s weight bytes per step, peak FLOP/s / (2 x multiply-adds per token)); ' +
    'llama.cpp multiplies Q4_0 x Q8_0 with integer dot products, so the FLOP roof (the w4a8 kernels\' instruction) is only indicative for it');
  for (const m of report.models) for (const [e, r] of Object.entries(m.engines))
    if (r.status !== 'measured') console.log(`note: ${m.id} ${e} ${r.status}: ${r.reason}`);
  const loaded = report.models.flatMap((m) => Object.entries(m.engines).filter(([, r]) => r.loadAverage && Math.max(r.loadAverage.start[0], r.loadAverage.end[0]) > report.config.threads + 0.5)
    .map(([e]) => `${m.id} ${e}`));
  if (loaded.length)
    console.log(`note: other processes loaded the machine during ${loaded.join(', ')} (load average above ${report.config.threads} threads): every figure is low, ` +
      'llama.cpp\'s most (its threads spin-wait at a barrier after every operation; when another process holds a core, each barrier waits a scheduler ' +
      'time slice, which dominates small models such as stories260K). Rerun on a quiet machine, or with --settle, for figures to compare.');
  const budget = report.models.flatMap((m) => Object.entries(m.engines).flatMap(([e, r]) => (r.decode ?? []).filter((d) => d.stoppedByBudget).map((d) => `${m.id} ${e} B=${d.batch}`)));
  if (budget.length) console.log(`note: stopped by the time budget before every sequence had all its tokens (figures over the tokens made): ${budget.join(', ')}`);
  for (const m of report.models) {
    const b1 = Object.entries(m.engines).filter(([, r]) => r.rounds?.length > 1)
      .map(([e, r]) => `${e} ${r.rounds.map((x) => fixed(x.decodeTokensPerSecond?.[1], 2)).join(', ')}`);
    if (b1.length) console.log(`rounds ${m.id}, batch-1 tokens/s of each round (the best is in the table): ${b1.join('; ')}`);
  }
  for (const m of report.models) if (m.check)
    console.log(`converter check ${m.id}: FP32 greedy tokens identical for ${m.check.agreeingPrefix}/${m.check.tokens} (w4a8 FP32 reference vs llama.cpp F32 GGUF)`);

  console.log('\ntargets:');
  for (const t of report.targets)
    console.log(`  ${t.status.toUpperCase().padEnd(4)}  ${t.model}: ${t.text}${t.value !== null ? `: got ${t.value.toFixed(2)}x` : ''} (${t.detail})`);
}

// ---- SVG ---------------------------------------------------------------------------------------------------

const COLORS = { w4a8: '#d62728', 'llama.cpp': '#1f77b4' };

function renderSvg(report) {
  const W = 1100, panelW = W / 2, panelH = 300;
  const parts = [];
  let y = 0;
  const L = report.limits;
  parts.push(`<text x="20" y="${(y += 24)}" font-size="16" font-weight="bold">w4a8 vs llama.cpp (Q4_0): decode tokens/s against batch size, ${esc(report.machine.cpu)}, ${report.config.threads} threads${report.config.quick ? ' (quick run)' : ''}</text>`);
  parts.push(`<text x="20" y="${(y += 18)}" font-size="12">${esc(L ? `measured in this run: read bandwidth ${L.readBandwidthGBps} GB/s, peak ${L.peakGflops} GFLOP/s (${L.peakIsa}); ` : '')}` +
    `1-minute load average ${report.config.loadAverage.before[0]} before, ${report.config.loadAverage.after[0]} after (the bench's own run counts ${report.config.threads})</text>`);
  parts.push(`<text x="20" y="${(y += 16)}" font-size="12">dashed: each engine's roof, min(B x bandwidth / its weight bytes per step, peak FLOP/s / (2 x multiply-adds per token)); greedy, same token ids</text>`);
  y += 10;
  const models = report.models.filter((m) => Object.values(m.engines).some((e) => e.status === 'measured'));
  models.forEach((m, i) => {
    const x0 = (i % 2) * panelW, y0 = y + Math.floor(i / 2) * (panelH + 44);
    const series = [], limits = [];
    for (const [engine, r] of Object.entries(m.engines)) {
      if (r.status !== 'measured' || !r.decode.length) continue;
      series.push({ label: `${engine}`, color: COLORS[engine], points: r.decode.map((d) => [d.batch, d.tokensPerSecond]) });
      if (r.decode[0].roofTokensPerSecond)
        limits.push({ label: `${engine} roof`, color: COLORS[engine], points: r.decode.map((d) => [d.batch, d.roofTokensPerSecond]) });
    }
    const xs = series.flatMap((s) => s.points.map((p) => p[0]));
    const ys = [...series, ...limits].flatMap((s) => s.points.map((p) => p[1])).filter((v) => v > 0);
    const xDomain = [Math.min(...xs) / 1.4, Math.max(...xs) * 1.4];
    const yDomain = [10 ** Math.floor(Math.log10(Math.min(...ys) / 1.2)), 10 ** Math.ceil(Math.log10(Math.max(...ys) * 1.2))];
    parts.push(chart({
      x0, y0, w: panelW, h: panelH, title: m.label.length > 80 ? `${m.id}` : m.label, xLabel: 'batch (concurrent sequences)', yLabel: 'decode tokens/s (all sequences)',
      xDomain, yDomain, xTicks: [...new Set(xs)].sort((a, b) => a - b), yTicks: logTicks(yDomain), limits, series,
    }));
    Object.entries(m.engines).filter(([, r]) => r.status === 'measured' && r.prefill).forEach(([e, r], line) => {
      const note = `${e}: prefill ${fixed(r.prefill.tokensPerSecond, 0)} tok/s (${r.prefill.promptTokens} tokens), TTFT ${fixed(r.prefill.ttftMs, 0)} ms, peak RSS ${mib(r.peakRssBytes)} MiB`;
      parts.push(`<text x="${x0 + 58}" y="${y0 + panelH + 12 + 13 * line}" font-size="10" fill="${COLORS[e]}">${esc(note)}</text>`);
    });
  });
  y += Math.ceil(models.length / 2) * (panelH + 44) + 10;
  if (!models.length) parts.push(`<text x="20" y="${(y += 30)}" font-size="14">no measurements</text>`);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y}" viewBox="0 0 ${W} ${y}" font-family="sans-serif">\n` +
    `<rect width="${W}" height="${y}" fill="#fff"/>\n${parts.join('\n')}\n</svg>\n`;
}

// ---- main --------------------------------------------------------------------------------------------------

const opts = readOptions(process.argv.slice(2));
if (opts.child) await runChild(opts.child);
else if (opts.replot) {
  const svgFile = opts.replot.replace(/\.json$/, '') + '.svg';
  writeFileSync(svgFile, renderSvg(JSON.parse(readFileSync(opts.replot, 'utf8'))));
  console.log(`wrote ${path.relative(process.cwd(), svgFile)}`);
} else await runParent(opts);
