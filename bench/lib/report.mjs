// Shared pieces of the end-to-end and serving benchmarks: machine description, limits probes, plain-text
// tables and a small hand-written SVG chart.
import { existsSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export const now = () => Number(process.hrtime.bigint()) / 1e9;

/** Significant digits for JSON. */
export const sig = (v, digits = 4) => (v === null || v === undefined || !Number.isFinite(v) ? null : Number(v.toPrecision(digits)));

export function fail(name, message) {
  console.error(`${name}: ${message}`);
  process.exit(2);
}

/** The built package (dist/) and its addon. */
export async function loadPackage(name) {
  const index = path.join(ROOT, 'dist', 'index.js');
  if (!existsSync(index)) fail(name, `${index} is missing: build the TypeScript first (npx tsc -p tsconfig.json)`);
  const pkg = await import(pathToFileURL(index).href);
  const format = await import(pathToFileURL(path.join(ROOT, 'dist', 'format', 'index.js')).href);
  const { native } = await import(pathToFileURL(path.join(ROOT, 'dist', 'native.js')).href);
  let addon;
  try {
    addon = native();
  } catch (error) {
    fail(name, error.message);
  }
  return { pkg, format, addon };
}

export function cpuModel() {
  return (os.cpus()[0]?.model?.trim() || os.arch()).replace(/\s+/g, ' ');
}

export function slug(text) {
  return text.toLowerCase().replace(/\((r|tm)\)/g, '').replace(/\b(cpu|processor)\b/g, '').replace(/@.*$/, '')
    .replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '') || 'cpu';
}

export function machineInfo() {
  let flags = new Set();
  try {
    flags = new Set((/^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '').trim().split(/\s+/));
  } catch { /* not Linux */ }
  return {
    cpu: cpuModel(), logicalCpus: os.availableParallelism(), memoryBytes: os.totalmem(),
    isa: ['avx2', 'fma', 'avx512f', 'avx512bw', 'avx512vl', 'avx512_vnni', 'avx512_bf16', 'amx_bf16', 'amx_tile'].filter((f) => flags.has(f)),
    platform: `${os.platform()} ${os.arch()}`, node: process.version,
  };
}

export const loadAverage = () => os.loadavg().map((v) => sig(v, 3));

/** Peak and current resident memory of this process (Linux /proc; null elsewhere). */
export function memoryStatus() {
  try {
    const status = readFileSync('/proc/self/status', 'utf8');
    const kb = (key) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1]) * 1024 || null;
    return { peakRssBytes: kb('VmHWM'), rssBytes: kb('VmRSS') };
  } catch {
    return { peakRssBytes: null, rssBytes: process.memoryUsage.rss() };
  }
}

/**
 * The machine's limits from the addon's probes (native/bench/probes.h): DRAM read bandwidth and the best
 * arithmetic peak (the BF16 dot product where the CPU has it, else FP32 FMA), with `threads` threads.
 */
export function probeLimits(addon, threads) {
  if (typeof addon.probeReadBandwidth !== 'function') return null;
  const bandwidth = addon.probeReadBandwidth(1 << 30, threads);
  const isas = addon.probeFmaIsas().filter((isa) => ['avx512bf16', 'avx512', 'avx2'].includes(isa));
  const peaks = isas.map((isa) => addon.probeFmaPeak(threads, isa));
  const best = peaks.reduce((a, b) => (b.gflops > a.gflops ? b : a), peaks[0]);
  return { gbPerSecond: bandwidth.gbPerSecond, peakGflops: best?.gflops ?? null, peakIsa: best?.isa ?? null };
}

/** Best of several probe runs (noise only lowers a limit). */
export function bestLimits(runs) {
  const valid = runs.filter(Boolean);
  if (!valid.length) return null;
  const bw = Math.max(...valid.map((r) => r.gbPerSecond));
  const peak = valid.reduce((a, b) => ((b.peakGflops ?? 0) > (a.peakGflops ?? 0) ? b : a));
  return { gbPerSecond: bw, peakGflops: peak.peakGflops, peakIsa: peak.peakIsa, runs: valid.map((r) => ({ gbPerSecond: sig(r.gbPerSecond), peakGflops: sig(r.peakGflops) })) };
}

/** A plain-text table: columns right-aligned except those in `left`; '' rows print as blank lines. */
export function formatTable(head, rows, left = new Set([0])) {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.filter(Array.isArray).map((r) => String(r[i] ?? '').length)));
  const line = (row) => row.map((c, i) => (left.has(i) ? String(c ?? '').padEnd(widths[i]) : String(c ?? '').padStart(widths[i]))).join('  ').trimEnd();
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...rows.map((r) => (Array.isArray(r) ? line(r) : ''))].join('\n');
}

export const fixed = (v, digits = 1) => (v === null || v === undefined || !Number.isFinite(v) ? '-' : v.toFixed(digits));
export const pct = (v) => (v === null || v === undefined || !Number.isFinite(v) ? '-' : `${(v * 100).toFixed(0)}%`);
export const mib = (bytes) => (bytes ? (bytes / 2 ** 20).toFixed(0) : '-');

/** Median of numbers. */
export function median(values) {
  const s = [...values].sort((a, b) => a - b);
  if (!s.length) return null;
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** The q-quantile (0..1) of numbers, nearest rank. */
export function quantile(values, q) {
  const s = [...values].sort((a, b) => a - b);
  if (!s.length) return null;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}

// ---- SVG -----------------------------------------------------------------------------------------------

export const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const f1 = (v) => (Math.round(v * 10) / 10).toString();

export function logTicks([lo, hi]) {
  const ticks = [];
  const steps = Math.log10(hi / lo) > 3.5 ? [1] : [1, 2, 5];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++)
    for (const m of steps) {
      const v = m * 10 ** e;
      if (v >= lo && v <= hi) ticks.push(Number(v.toPrecision(3)));
    }
  return ticks;
}

const tickLabel = (v) => (v >= 10000 && v % 1000 === 0 ? `${v / 1000}k` : String(Number(v.toPrecision(3))));

/**
 * One log-log chart: { x0, y0, w, h, title, xLabel, yLabel, xDomain, yDomain, xTicks, yTicks,
 * limits: [{label, points}], series: [{label, color, points, dash}] } -> SVG group.
 */
export function chart(c) {
  const { x0, y0, w, h } = c;
  const pad = { l: 58, r: 12, t: 24, b: 38 };
  const pw = w - pad.l - pad.r, ph = h - pad.t - pad.b;
  const t = ([lo, hi], v) => (Math.log(v) - Math.log(lo)) / (Math.log(hi) - Math.log(lo));
  const X = (v) => x0 + pad.l + pw * t(c.xDomain, v), Y = (v) => y0 + pad.t + ph * (1 - t(c.yDomain, v));
  const clampY = (v) => Math.min(Math.max(v, c.yDomain[0]), c.yDomain[1]);
  const out = ['<g>', `<text x="${x0 + pad.l}" y="${y0 + 15}" font-size="13" font-weight="bold">${esc(c.title)}</text>`,
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
  for (const [i, line] of (c.limits ?? []).entries()) {
    const pts = line.points.map(([x, y]) => `${f1(X(x))},${f1(Y(clampY(y)))}`).join(' ');
    out.push(`<polyline points="${pts}" fill="none" stroke="${line.color ?? '#000'}" stroke-width="1.2" stroke-dasharray="5,4"/>`);
    out.push(`<text x="${x0 + pad.l + 6}" y="${y0 + pad.t + 13 + 13 * i}" font-size="10" fill="${line.color ?? '#000'}">${esc(line.label)}</text>`);
  }
  for (const [i, s] of c.series.entries()) {
    const pts = s.points.filter(([x, y]) => y > 0 && Number.isFinite(y));
    if (pts.length > 1)
      out.push(`<polyline points="${pts.map(([x, y]) => `${f1(X(x))},${f1(Y(clampY(y)))}`).join(' ')}" fill="none" stroke="${s.color}" stroke-width="1.8"/>`);
    for (const [x, y] of pts) out.push(`<circle cx="${f1(X(x))}" cy="${f1(Y(clampY(y)))}" r="3.5" fill="${s.color}"/>`);
    const lx = x0 + pad.l + pw - 150, ly = y0 + pad.t + ph - 12 - 14 * (c.series.length - 1 - i);
    out.push(`<rect x="${lx}" y="${ly - 8}" width="12" height="8" fill="${s.color}"/><text x="${lx + 16}" y="${ly}" font-size="11">${esc(s.label)}</text>`);
  }
  out.push('</g>');
  return out.join('\n');
}

/** Calls onRecord with each JSON line a child process writes to `stream`; other lines go to stderr after `prefix`. */
export function readJsonLines(stream, prefix, onRecord) {
  let pending = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk) => {
    pending += chunk;
    let nl;
    while ((nl = pending.indexOf('\n')) >= 0) {
      const line = pending.slice(0, nl);
      pending = pending.slice(nl + 1);
      let record;
      try {
        record = JSON.parse(line);
      } catch {
        process.stderr.write(`${prefix}${line}\n`);
        continue;
      }
      onRecord(record);
    }
  });
}
