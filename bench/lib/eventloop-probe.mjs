// Preloaded into a `w4a8 serve` child by bench/serve.mjs (node --import ./bench/lib/eventloop-probe.mjs
// dist/cli.js serve ...), so the server's own event loop is measured without touching lib/.
//
// perf_hooks.monitorEventLoopDelay samples how late a 2 ms timer fires: the delay every request on that
// loop waits behind JS work (sampling, SSE writes, JSON) before it is served. On SIGUSR2 the histogram since
// the previous signal is written, as JSON, to the file named by W4A8_BENCH_PROBE_FILE (temporary file +
// rename, so a reader never sees half of it), and the histogram starts again:
//   { sequence, count, minMs, meanMs, p50Ms, p99Ms, maxMs, memory: process.memoryUsage(), heapSpaces }
// where heapSpaces gives each V8 heap space's committed and used bytes (which part of the heap grows).
// With W4A8_BENCH_PROBE_GC=1 (and node --expose-gc) a full garbage collection runs before memory is read, to tell
// garbage not yet collected from memory that stays. Without W4A8_BENCH_PROBE_FILE the module does nothing.
import { renameSync, writeFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import v8 from 'node:v8';

const file = process.env.W4A8_BENCH_PROBE_FILE;
if (file) {
  const histogram = monitorEventLoopDelay({ resolution: 2 });
  histogram.enable();
  let sequence = 0;
  const ms = (ns) => (Number.isFinite(ns) ? ns / 1e6 : null);
  const collect = process.env.W4A8_BENCH_PROBE_GC === '1' && typeof globalThis.gc === 'function';
  process.on('SIGUSR2', () => {
    const empty = histogram.count === 0;
    if (collect) globalThis.gc();
    const snapshot = {
      sequence: ++sequence, count: histogram.count,
      minMs: empty ? null : ms(histogram.min), meanMs: empty ? null : ms(histogram.mean),
      p50Ms: empty ? null : ms(histogram.percentile(50)), p99Ms: empty ? null : ms(histogram.percentile(99)),
      maxMs: empty ? null : ms(histogram.max), memory: process.memoryUsage(), collected: collect,
      heapSpaces: Object.fromEntries(v8.getHeapSpaceStatistics().map((h) => [h.space_name, { committed: h.space_size, used: h.space_used_size }])),
    };
    writeFileSync(`${file}.tmp`, JSON.stringify(snapshot));
    renameSync(`${file}.tmp`, file);
    histogram.reset();
  });
}
