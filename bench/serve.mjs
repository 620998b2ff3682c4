#!/usr/bin/env node
// `npm run bench:serve`: a load test of `w4a8 serve` on loopback.
//
// Starts `node --import ./bench/lib/eventloop-probe.mjs dist/cli.js serve <model> --host 127.0.0.1 --port <free>
// --max-batch 32` as a child process (W4A8_THREADS = --threads), then, for 1, 8, 16 and 32 concurrent clients,
// each client sends streaming completions (POST /v1/completions, stream: true, token-id prompts, temperature 0,
// max_tokens fixed) one after another, a bounded number of requests per phase and a bounded time. Per phase:
//   aggregate tokens/s   generated tokens (the server's /metrics w4a8_generated_tokens_total, after - before) /
//                        phase wall time: what the server delivers to all clients together
//   request latency      p50 / p99 from sending the request to the end of its event stream ([DONE])
//   first event          p50 / p99 time to the first streamed event (the first token's text)
//   errors               non-200 answers, broken streams, streams without [DONE], time-outs (must be 0)
//   event-loop delay     p99 / max of the server process (perf_hooks.monitorEventLoopDelay, via the preloaded
//                        probe: SIGUSR2 before and after the phase)
// Then the RSS stability check: first a warm-up (--rss-warmup requests from 8 concurrent clients, not measured:
// V8 grows its young generation with the survivors of the first scavenges, up to a fixed cap, a one-time step of
// ~10-15 MiB that is not a leak); then --rss-requests sequential short requests; the server's resident memory
// (/metrics process_resident_memory_bytes) after the first 5 % of them is the baseline, sampled every 100, with
// the V8 heap spaces beside it (which part of the heap, if any, grows). The target is judged on RSS less the young
// generation, which V8 resizes by up to ~30 MiB on its own (a drop as often as a rise); raw RSS is printed too.
// The server is killed at the end (SIGTERM, then SIGKILL). Only 127.0.0.1 is ever contacted.
//
// Model: by default the synthetic Llama of `w4a8 start` (lib/model/synthetic.ts: ~30M parameters, byte-level
// tokenizer; RANDOM weights), packed to W4A8 once and cached, with its end-of-sequence token disabled so every
// request generates exactly max_tokens tokens; --model serves any .w4a8 instead.
//
// Prints a table and the PASS/MISS target lines; writes bench/results/serve-<cpu>-<threads>t.json.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { randomTokenIds } from './lib/random.mjs';
import {
  ROOT, fail as failWith, fixed, formatTable, loadAverage, loadPackage, machineInfo, median, mib, now, quantile, sig, slug,
} from './lib/report.mjs';

const NAME = 'bench:serve';
const fail = (message) => failWith(NAME, message);
const SCRIPT_DIR = path.dirname(fileURLToPath(import.meta.url));
const PROBE = path.join(SCRIPT_DIR, 'lib', 'eventloop-probe.mjs');
const MODEL_BUILD_VERSION = 1;
const SEED = 1;

function usage() {
  return `usage: npm run bench:serve -- [options]

  --quick               shorter: fewer requests per phase, 300 RSS requests (about a minute or two)
  --model FILE.w4a8     serve this model (default: the synthetic model of 'w4a8 start', built and cached)
  --clients LIST        concurrent streaming clients per phase (default 1,8,16,32)
  --max-tokens N        max_tokens of each request (default 32, quick 16)
  --prompt-tokens N     prompt length in token ids (default 16)
  --requests N          requests per phase at least (default 8, quick 4; each client does ceil(N / clients), at
                        least 2)
  --phase-seconds S     no new request starts in a phase after S seconds (default 120, quick 60)
  --rss-requests N      sequential requests of the RSS check (default 2000, quick 300; 0 skips it)
  --rss-warmup N        requests (8 concurrent clients, max_tokens 16) before the RSS check's baseline (default
                        1000, quick 200; 0: none)
  --gc                  RSS check: the server runs with --expose-gc and collects garbage before each memory sample
                        (tells garbage not yet collected from memory that stays; off by default)
  --threads N           W4A8_THREADS of the server (default: W4A8_THREADS or the number of CPUs)
  --cache DIR           where the default model is built (default: ${path.join(os.tmpdir(), 'w4a8-bench')})
  --out DIR             where the JSON goes (default bench/results)
  --help`;
}

function positiveInteger(text, name, min = 1) {
  const v = Number(text);
  if (!Number.isInteger(v) || v < min) fail(`--${name} must be an integer >= ${min}, got '${text}'`);
  return v;
}

function readOptions(argv) {
  let v;
  try {
    v = parseArgs({
      args: argv, strict: true,
      options: {
        quick: { type: 'boolean' }, model: { type: 'string' }, clients: { type: 'string' }, 'max-tokens': { type: 'string' },
        'prompt-tokens': { type: 'string' }, requests: { type: 'string' }, 'phase-seconds': { type: 'string' },
        'rss-requests': { type: 'string' }, 'rss-warmup': { type: 'string' }, gc: { type: 'boolean' }, threads: { type: 'string' }, cache: { type: 'string' }, out: { type: 'string' },
        help: { type: 'boolean' },
      },
    }).values;
  } catch (error) {
    fail(`${error.message}\n\n${usage()}`);
  }
  if (v.help) {
    console.log(usage());
    process.exit(0);
  }
  const quick = Boolean(v.quick);
  const envThreads = process.env.W4A8_THREADS;
  return {
    quick,
    model: v.model ? path.resolve(v.model) : null,
    clients: v.clients ? [...new Set(v.clients.split(',').map((c) => positiveInteger(c.trim(), 'clients')))].sort((a, b) => a - b) : [1, 8, 16, 32],
    maxTokens: v['max-tokens'] ? positiveInteger(v['max-tokens'], 'max-tokens') : quick ? 16 : 32,
    promptTokens: v['prompt-tokens'] ? positiveInteger(v['prompt-tokens'], 'prompt-tokens') : 16,
    requests: v.requests ? positiveInteger(v.requests, 'requests') : quick ? 4 : 8,
    phaseSeconds: v['phase-seconds'] ? positiveInteger(v['phase-seconds'], 'phase-seconds') : quick ? 60 : 120,
    rssRequests: v['rss-requests'] !== undefined ? positiveInteger(v['rss-requests'], 'rss-requests', 0) : quick ? 300 : 2000,
    rssWarmup: v['rss-warmup'] !== undefined ? positiveInteger(v['rss-warmup'], 'rss-warmup', 0) : quick ? 200 : 1000,
    gc: Boolean(v.gc),
    threads: v.threads ? positiveInteger(v.threads, 'threads') : envThreads ? positiveInteger(envThreads, 'threads (W4A8_THREADS)') : os.availableParallelism(),
    cache: path.resolve(v.cache ?? path.join(os.tmpdir(), 'w4a8-bench')),
    out: path.resolve(v.out ?? path.join(ROOT, 'bench', 'results')),
  };
}

// ---- the model ---------------------------------------------------------------------------------------------

/** The synthetic model of `w4a8 start`, packed like start does (RTN, G=128, e4m3fn), end-of-sequence disabled. */
async function defaultModel(cacheDir) {
  const file = path.join(cacheDir, `serve-synthetic.v${MODEL_BUILD_VERSION}.w4a8`);
  if (existsSync(file)) return file;
  mkdirSync(cacheDir, { recursive: true });
  const { pkg } = await loadPackage(NAME);
  process.stderr.write(`building the synthetic model of 'w4a8 start' (random weights): ${file} ...\n`);
  const source = pkg.syntheticSourceModel();
  source.config = { ...source.config, eosTokenIds: [] };  // every request generates exactly max_tokens tokens
  const packed = await pkg.packModel(source, { groupSize: 128, weightFormat: 'e4m3fn', scales: 'float', method: 'rtn' });
  await pkg.writePackedModel(file, packed);
  return file;
}

// ---- the server child --------------------------------------------------------------------------------------

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

async function startServer(model, port, threads, probeFile, gc) {
  const args = [...(gc ? ['--expose-gc'] : []), '--import', PROBE, path.join(ROOT, 'dist', 'cli.js'), 'serve', model, '--host', '127.0.0.1', '--port', String(port), '--max-batch', '32'];
  const child = spawn(process.execPath, args, {
    cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, W4A8_THREADS: String(threads), W4A8_BENCH_PROBE_FILE: probeFile, W4A8_BENCH_PROBE_GC: gc ? '1' : '0' },
  });
  let output = '';
  child.stdout.on('data', (c) => { output += c; });
  child.stderr.on('data', (c) => { output += c; });
  const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  const deadline = now() + 120;
  while (now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) break;
    if (/w4a8 serving/.test(output)) return { child, exited, output: () => output };
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill('SIGKILL');
  fail(`the server did not start: ${output.trim().slice(-600)}`);
}

async function stopServer(server) {
  if (server.child.exitCode !== null || server.child.signalCode !== null) return server.exited;
  server.child.kill('SIGTERM');
  const timer = setTimeout(() => server.child.kill('SIGKILL'), 5000);
  const result = await server.exited;
  clearTimeout(timer);
  return result;
}

/** The probe's histogram since the previous call (SIGUSR2; the probe answers through its file). */
async function probeSnapshot(server, probeFile, expected) {
  server.child.kill('SIGUSR2');
  const deadline = now() + 10;
  while (now() < deadline) {
    try {
      const snapshot = JSON.parse(readFileSync(probeFile, 'utf8'));
      if (snapshot.sequence >= expected) return snapshot;
    } catch { /* not written yet */ }
    await new Promise((r) => setTimeout(r, 20));
  }
  return null;
}

// ---- HTTP ----------------------------------------------------------------------------------------------------

const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

function get(port, urlPath) {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: urlPath, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    }).on('error', reject);
  });
}

async function metrics(port) {
  const { body } = await get(port, '/metrics');
  const value = (name) => Number(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.eE+-]+)$`, 'm').exec(body)?.[1] ?? 0);
  return { generatedTokens: value('w4a8_generated_tokens_total'), promptTokens: value('w4a8_prompt_tokens_total'), rssBytes: value('process_resident_memory_bytes') };
}

/** One streaming completion; resolves (never rejects) with its outcome and timings. */
function streamCompletion(port, body, timeoutMs) {
  return new Promise((resolve) => {
    const start = now();
    let firstEventAt = null, events = 0, done = false, finishReason = null, pending = '';
    const finish = (outcome) => resolve({ latency: now() - start, firstEvent: firstEventAt === null ? null : firstEventAt - start, events, finishReason, ...outcome });
    const req = http.request({ host: '127.0.0.1', port, path: '/v1/completions', method: 'POST', agent, timeout: timeoutMs,
      headers: { 'content-type': 'application/json' } }, (res) => {
      res.setEncoding('utf8');
      if (res.statusCode !== 200) {
        let text = '';
        res.on('data', (c) => { text += c; });
        res.on('end', () => finish({ ok: false, status: res.statusCode, error: `HTTP ${res.statusCode}: ${text.slice(0, 200)}` }));
        return;
      }
      res.on('data', (chunk) => {
        pending += chunk;
        let end;
        while ((end = pending.indexOf('\n\n')) >= 0) {
          const event = pending.slice(0, end);
          pending = pending.slice(end + 2);
          if (!event.startsWith('data: ')) continue;
          const data = event.slice(6);
          if (data === '[DONE]') { done = true; continue; }
          try {
            const choice = JSON.parse(data).choices?.[0];
            if (choice?.finish_reason) finishReason = choice.finish_reason;
            else { events++; firstEventAt ??= now(); }
          } catch { /* counted as a broken stream below if [DONE] never comes */ }
        }
      });
      res.on('end', () => finish(done ? { ok: true, status: 200 } : { ok: false, status: 200, error: 'the stream ended without [DONE]' }));
      res.on('error', (error) => finish({ ok: false, status: 200, error: error.message }));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (error) => finish({ ok: false, status: null, error: error.message }));
    req.end(JSON.stringify(body));
  });
}

// ---- phases --------------------------------------------------------------------------------------------------

function requestBody(opts, vocab, index) {
  return {
    prompt: randomTokenIds(opts.promptTokens, SEED + index, 0, Math.min(vocab, 256)), max_tokens: opts.maxTokens,
    temperature: 0, stream: true,
  };
}

async function runPhase(server, port, opts, clients, probeFile, probeSequence, vocab) {
  const perClient = Math.max(2, Math.ceil(opts.requests / clients));
  const before = await metrics(port);
  await probeSnapshot(server, probeFile, probeSequence.next++);  // resets the histogram
  const started = now();
  const stopAt = started + opts.phaseSeconds;
  let index = 0;
  const outcomes = [];
  await Promise.all(Array.from({ length: clients }, async () => {
    for (let r = 0; r < perClient && now() < stopAt; r++) outcomes.push(await streamCompletion(port, requestBody(opts, vocab, index++), 600_000));
  }));
  const seconds = now() - started;
  const loop = await probeSnapshot(server, probeFile, probeSequence.next++);
  const after = await metrics(port);
  const ok = outcomes.filter((o) => o.ok);
  const latencies = ok.map((o) => o.latency), firsts = ok.map((o) => o.firstEvent).filter((v) => v !== null);
  const tokens = after.generatedTokens - before.generatedTokens;
  return {
    clients, requests: outcomes.length, requestsPerClient: perClient, errors: outcomes.length - ok.length,
    errorSamples: [...new Set(outcomes.filter((o) => !o.ok).map((o) => o.error))].slice(0, 5),
    wrongLength: ok.filter((o) => o.finishReason !== 'length').length,
    generatedTokens: tokens, seconds: sig(seconds), tokensPerSecond: sig(tokens / seconds),
    latencyMs: { p50: sig(quantile(latencies, 0.5) * 1e3), p99: sig(quantile(latencies, 0.99) * 1e3), max: sig(Math.max(...latencies) * 1e3) },
    firstEventMs: { p50: sig(quantile(firsts, 0.5) * 1e3), p99: sig(quantile(firsts, 0.99) * 1e3) },
    eventLoopDelayMs: loop ? { p50: sig(loop.p50Ms), p99: sig(loop.p99Ms), max: sig(loop.maxMs), mean: sig(loop.meanMs), samples: loop.count } : null,
    rssBytes: after.rssBytes, loadAverage: loadAverage(),
  };
}

async function rssCheck(server, port, opts, vocab, probeFile, probeSequence) {
  const count = opts.rssRequests;
  const warmupClients = 8;
  let warmupErrors = 0, warmupIndex = 0;
  await Promise.all(Array.from({ length: warmupClients }, async () => {
    while (warmupIndex < opts.rssWarmup) {
      const outcome = await streamCompletion(port, requestBody({ ...opts, maxTokens: 16 }, vocab, 20_000 + (warmupIndex++ % 997)), 600_000);
      if (!outcome.ok) warmupErrors++;
    }
  }));
  const samples = [];
  const baselineAt = Math.max(1, Math.round(count * 0.05));
  let errors = 0;
  const errorSamples = new Set();
  const started = now();
  for (let i = 0; i < count; i++) {
    const outcome = await streamCompletion(port, { ...requestBody({ ...opts, maxTokens: 4 }, vocab, 10_000 + (i % 997)) }, 60_000);
    if (!outcome.ok) { errors++; errorSamples.add(outcome.error); }
    const n = i + 1;
    if (n === baselineAt || n % 100 === 0 || n === count) {
      const snapshot = await probeSnapshot(server, probeFile, probeSequence.next++);
      const memory = snapshot?.memory ?? {};
      samples.push({ requests: n, rssBytes: (await metrics(port)).rssBytes, heapTotalBytes: memory.heapTotal ?? null, heapUsedBytes: memory.heapUsed ?? null,
        externalBytes: memory.external ?? null, arrayBuffersBytes: memory.arrayBuffers ?? null, heapSpaces: snapshot?.heapSpaces ?? null });
    }
    if (n % 500 === 0) process.stderr.write(`  RSS check: ${n}/${count} requests, RSS ${mib(samples[samples.length - 1].rssBytes)} MiB\n`);
  }
  const baseline = samples.find((s) => s.requests === baselineAt)?.rssBytes ?? samples[0].rssBytes;
  const last = samples[samples.length - 1].rssBytes;
  const after = samples.filter((s) => s.requests >= baselineAt).map((s) => s.rssBytes);
  const first = samples.find((s) => s.requests === baselineAt) ?? samples[0], end = samples[samples.length - 1];
  const youngBytes = (sample) => sample.heapSpaces?.new_space?.committed ?? null;
  // RSS less V8's young generation (new space): V8 grows and shrinks that buffer of short-lived objects on its own
  // (up to 2 x --max-semi-space-size, 32 MiB by default; shrunk again when allocation slows), which moves RSS by up
  // to ~30 MiB either way without anything being kept. What is left is what a leak would grow.
  const steady = (sample) => (youngBytes(sample) === null ? null : sample.rssBytes - youngBytes(sample));
  const steadyAfter = samples.filter((s) => s.requests >= baselineAt).map(steady);
  const steadyChange = steady(first) === null ? null : {
    baselineBytes: steady(first), finalBytes: steady(end), finalChange: sig(steady(end) / steady(first) - 1, 3),
    maxChange: sig(Math.max(...steadyAfter.map((b) => Math.abs(b / steady(first) - 1))), 3),
  };
  return {
    withoutYoungGeneration: steadyChange,
    requests: count, maxTokens: 4, errors, garbageCollectedBeforeSamples: opts.gc, warmupRequests: opts.rssWarmup, warmupClients, warmupErrors,
    youngGenerationBytes: { baseline: youngBytes(first), final: youngBytes(end) },
    heapTotalBytes: { baseline: first.heapTotalBytes, final: end.heapTotalBytes }, heapUsedBytes: { baseline: first.heapUsedBytes, final: end.heapUsedBytes }, externalBytes: { baseline: first.externalBytes, final: end.externalBytes }, errorSamples: [...errorSamples].slice(0, 5), seconds: sig(now() - started),
    baselineAfterRequests: baselineAt, baselineBytes: baseline, finalBytes: last,
    finalChange: sig(last / baseline - 1, 3), maxChange: sig(Math.max(...after.map((b) => Math.abs(b / baseline - 1))), 3),
    samples,
  };
}

// ---- main ----------------------------------------------------------------------------------------------------

async function main() {
  const opts = readOptions(process.argv.slice(2));
  const started = now();
  if (!existsSync(path.join(ROOT, 'dist', 'cli.js'))) fail('dist/cli.js is missing: build the TypeScript first (npx tsc -p tsconfig.json)');
  const machine = machineInfo();
  const model = opts.model ?? await defaultModel(opts.cache);
  if (!existsSync(model)) fail(`--model: ${model} does not exist`);
  const { pkg } = await loadPackage(NAME);
  const packed = await pkg.readPackedModel(model, { checkValues: false });
  const vocab = packed.config.vocabSize;
  const loadBefore = loadAverage();
  console.log(`machine: ${machine.cpu}, ${machine.logicalCpus} logical CPUs; server threads ${opts.threads}; kernels ${pkg.backend().name}`);
  console.log(`model: ${model} (dim ${packed.config.dim}, ${packed.config.nLayers} layers, vocab ${vocab}${opts.model ? '' : ', synthetic RANDOM weights, end-of-sequence disabled'})`);
  if (!packed.tokenizerJson) console.log('note: this model has no tokenizer: the server streams no text events for it, so first-event times are missing');
  console.log(`load average before: ${loadBefore.join(', ')}${loadBefore[0] > 0.5 ? ' (other processes share the CPUs: figures may be low and noisy)' : ''}`);
  console.log(`requests: prompt ${opts.promptTokens} token ids, max_tokens ${opts.maxTokens}, temperature 0, stream: true; loopback only`);

  const port = await freePort();
  const probeFile = path.join(os.tmpdir(), `w4a8-bench-serve-probe-${process.pid}.json`);
  const server = await startServer(model, port, opts.threads, probeFile, opts.gc);
  const probeSequence = { next: 1 };
  let phases = [], rss = null, exit;
  try {
    // Warm-up: the first requests page the weights in and size the buffers.
    for (let i = 0; i < 3; i++) await streamCompletion(port, requestBody(opts, vocab, 50_000 + i), 600_000);
    for (const clients of opts.clients) {
      process.stderr.write(`phase: ${clients} concurrent clients ...\n`);
      const phase = await runPhase(server, port, opts, clients, probeFile, probeSequence, vocab);
      process.stderr.write(`  ${phase.requests} requests, ${phase.tokensPerSecond} tokens/s, p99 latency ${phase.latencyMs.p99} ms, ` +
        `event loop p99 ${phase.eventLoopDelayMs?.p99} ms, errors ${phase.errors}\n`);
      phases.push(phase);
    }
    if (opts.rssRequests > 0) {
      process.stderr.write(`RSS check: ${opts.rssWarmup} warm-up requests (${8} clients), then ${opts.rssRequests} sequential requests (max_tokens 4) ...\n`);
      rss = await rssCheck(server, port, opts, vocab, probeFile, probeSequence);
    }
  } finally {
    exit = await stopServer(server);
    rmSync(probeFile, { force: true });
    agent.destroy();
  }
  const loadAfter = loadAverage();

  // Table.
  const single = phases.find((p) => p.clients === 1);
  console.log('');
  console.log(formatTable(
    ['clients', 'requests', 'errors', 'tokens', 'tokens/s', 'x 1 client', 'latency p50 ms', 'p99 ms', 'first event p50 ms', 'p99 ms', 'event loop p99 ms', 'max ms', 'RSS MiB', 'load'],
    phases.map((p) => [String(p.clients), String(p.requests), String(p.errors), String(p.generatedTokens), fixed(p.tokensPerSecond, 1),
      single ? `${fixed(p.tokensPerSecond / single.tokensPerSecond, 2)}x` : '-', fixed(p.latencyMs.p50, 0), fixed(p.latencyMs.p99, 0),
      fixed(p.firstEventMs.p50, 0), fixed(p.firstEventMs.p99, 0), fixed(p.eventLoopDelayMs?.p99, 1), fixed(p.eventLoopDelayMs?.max, 1),
      mib(p.rssBytes), String(p.loadAverage[0])]),
    new Set()));
  console.log('tokens/s: the server\'s generated tokens (/metrics) / phase wall time, all clients together; latency: request to [DONE]; ' +
    'first event: request to the first streamed token text; event loop: delay of the server\'s event loop during the phase (limit: 20 ms p99)');
  if (phases.some((p) => p.wrongLength)) console.log(`note: ${phases.reduce((s, p) => s + p.wrongLength, 0)} requests ended before max_tokens (finish_reason not 'length')`);
  for (const p of phases) if (p.errors) console.log(`errors at ${p.clients} clients: ${p.errorSamples.join(' | ')}`);
  if (rss) {
    console.log(`\nRSS over ${rss.requests} sequential requests (max_tokens 4, ${rss.seconds} s, after ${rss.warmupRequests} warm-up requests): ${mib(rss.baselineBytes)} MiB after ${rss.baselineAfterRequests} ` +
      `-> ${mib(rss.finalBytes)} MiB at the end (${(rss.finalChange * 100).toFixed(1)}%, largest deviation ${(rss.maxChange * 100).toFixed(1)}%); errors ${rss.errors}`);
    console.log(`  of which the V8 heap ${mib(rss.heapTotalBytes.baseline)} -> ${mib(rss.heapTotalBytes.final)} MiB (in use ${mib(rss.heapUsedBytes.baseline)} -> ${mib(rss.heapUsedBytes.final)} MiB), external (ArrayBuffers, addon) ` +
      `${mib(rss.externalBytes.baseline)} -> ${mib(rss.externalBytes.final)} MiB; the rest is native memory of the addon and the runtime${opts.gc ? ' (garbage collected before each sample: --gc)' : ''}`);
    if (rss.withoutYoungGeneration)
      console.log(`  V8 young generation (new space) ${mib(rss.youngGenerationBytes.baseline)} -> ${mib(rss.youngGenerationBytes.final)} MiB (V8 sizes it to the allocation rate, up to a cap); ` +
        `RSS without it ${mib(rss.withoutYoungGeneration.baselineBytes)} -> ${mib(rss.withoutYoungGeneration.finalBytes)} MiB (${(rss.withoutYoungGeneration.finalChange * 100).toFixed(1)}%, largest deviation ${(rss.withoutYoungGeneration.maxChange * 100).toFixed(1)}%)`);
    console.log(`  samples (requests: MiB): ${rss.samples.filter((s, i) => i % Math.ceil(rss.samples.length / 10) === 0 || i === rss.samples.length - 1).map((s) => `${s.requests}: ${mib(s.rssBytes)}`).join(', ')}`);
  }

  // Targets.
  const targets = [];
  const at = (c) => phases.find((p) => p.clients === c);
  const add = (id, text, status, value, detail) => targets.push({ id, text, status, value, detail });
  const p16 = at(16), p32 = at(32);
  add('batching', 'aggregate decode tokens/s at 16 concurrent requests >= 6x a single request', p16 && single ? (p16.tokensPerSecond / single.tokensPerSecond >= 6 ? 'pass' : 'miss') : 'n/a',
    p16 && single ? sig(p16.tokensPerSecond / single.tokensPerSecond, 3) : null, p16 && single ? `${p16.tokensPerSecond} vs ${single.tokensPerSecond} tokens/s (end to end, prefill included)` : 'phases 1 and 16 not both run');
  add('event-loop', 'server event-loop delay p99 <= 20 ms while generating for 32 clients', p32?.eventLoopDelayMs ? (p32.eventLoopDelayMs.p99 <= 20 ? 'pass' : 'miss') : 'n/a',
    p32?.eventLoopDelayMs?.p99 ?? null, p32?.eventLoopDelayMs ? `p99 ${p32.eventLoopDelayMs.p99} ms, max ${p32.eventLoopDelayMs.max} ms` : 'phase 32 not run');
  const errors = phases.reduce((s, p) => s + p.errors, 0) + (rss?.errors ?? 0) + (rss?.warmupErrors ?? 0);
  const total = phases.reduce((s, p) => s + p.requests, 0) + (rss?.requests ?? 0) + (rss?.warmupRequests ?? 0);
  add('errors', 'zero failed requests', errors === 0 ? 'pass' : 'miss', errors, `${errors} of ${total} requests failed`);
  // Judged on RSS without V8's young generation when the probe reports it (see rssCheck); the raw RSS is beside it.
  const judged = rss?.withoutYoungGeneration ?? rss;
  add('rss', `RSS stable (within 5%) across ${opts.rssRequests} sequential requests${rss?.withoutYoungGeneration ? ' (less V8\'s young generation)' : ''}`,
    rss ? (Math.abs(judged.finalChange) <= 0.05 ? 'pass' : 'miss') : 'n/a', rss ? judged.finalChange : null,
    rss ? `${mib(judged.baselineBytes)} -> ${mib(judged.finalBytes)} MiB (largest deviation ${(judged.maxChange * 100).toFixed(1)}%); raw RSS ${mib(rss.baselineBytes)} -> ${mib(rss.finalBytes)} MiB ` +
      `(${(rss.finalChange * 100).toFixed(1)}%${rss.withoutYoungGeneration ? `, young generation ${mib(rss.youngGenerationBytes.baseline)} -> ${mib(rss.youngGenerationBytes.final)} MiB` : ''})${opts.rssRequests < 2000 ? '; fewer than the 2,000 of the target' : ''}` : 'skipped');
  console.log('\ntargets:');
  for (const t of targets) console.log(`  ${t.status.toUpperCase().padEnd(4)}  ${t.text}: ${t.detail}`);

  const report = {
    schema: 'w4a8-bench-serve/1', date: new Date().toISOString(), machine,
    config: { quick: opts.quick, model, synthetic: !opts.model, modelConfig: packed.config, threads: opts.threads, maxBatch: 32, clients: opts.clients,
      maxTokens: opts.maxTokens, promptTokens: opts.promptTokens, requests: opts.requests, phaseSeconds: opts.phaseSeconds,
      rssRequests: opts.rssRequests, gc: opts.gc, loadAverage: { before: loadBefore, after: loadAfter } },
    phases, rss, targets, server: { exit },
  };
  mkdirSync(opts.out, { recursive: true });
  const file = path.join(opts.out, `serve-${slug(machine.cpu)}-${opts.threads}t${opts.quick ? '-quick' : ''}.json`);
  writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
  console.log(`\nload average after: ${loadAfter.join(', ')}`);
  console.log(`wrote ${path.relative(process.cwd(), file)} (${(now() - started).toFixed(0)} s)`);
  if (errors) process.exitCode = 1;
}

await main();
