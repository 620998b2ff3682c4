#!/usr/bin/env node
// `npm run bench:kernels -- --cuda`: the GPU side of the kernel bench. Runs the CUDA benchmark of the native
// test binary (build/w4a8_cuda_tests --bench: the W4A8 GEMM beside cuBLAS BF16 and cuBLASLt FP8 for the CPU
// bench's shapes and M = 1..4096, with the GPU's measured HBM read bandwidth and FP8/BF16 peaks), then prints the
// ratios the CUDA issue's targets are stated in and writes JSON and an SVG plot to bench/results/.
// Needs a build with CUDA (W4A8_CUDA=on or auto with nvcc) and a Hopper GPU; see native/tests/cuda/RESULTS.md.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chart, esc, fixed, formatTable, logTicks, slug } from './lib/report.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BINARY = path.join(ROOT, 'build', 'w4a8_cuda_tests');
const COLORS = { w4a8: '#d62728', bf16: '#1f77b4', fp8: '#2ca02c' };

export function runCudaBench(outDir) {
  if (!existsSync(BINARY)) {
    console.error(`bench:kernels --cuda: ${BINARY} is missing: build with CUDA (npx cmake-js compile --CDW4A8_CUDA=on)`);
    return 2;
  }
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'w4a8-cuda-bench-'));
  const jsonIn = path.join(tmp, 'bench.json');
  const run = spawnSync(BINARY, ['--bench', '--json', jsonIn], { stdio: 'inherit' });
  if (run.status !== 0 || !existsSync(jsonIn)) {
    console.error(`bench:kernels --cuda: the CUDA bench failed (status ${run.status}); is there a Hopper GPU?`);
    return run.status || 1;
  }
  reportCudaBench(JSON.parse(readFileSync(jsonIn, 'utf8')), outDir);
  return 0;
}

/** Prints the ratios of the native bench's JSON and writes them with a plot into outDir. */
export function reportCudaBench(bench, outDir) {
  const rows = bench.rows.map((r) => {
    const tflops = (us) => (us > 0 ? r.flops / us / 1e6 : null);
    return {
      ...r, w4a8GBs: r.weightBytes / r.w4a8Us / 1e3, w4a8Tflops: tflops(r.w4a8Us), bf16Tflops: tflops(r.bf16Us), fp8Tflops: tflops(r.fp8Us),
      ofHbm: r.weightBytes / r.w4a8Us / 1e3 / bench.hbmReadGBs, vsBf16: r.bf16Us > 0 ? r.bf16Us / r.w4a8Us : null,
      vsFp8: r.fp8Us > 0 ? r.fp8Us / r.w4a8Us : null,
    };
  });
  console.log(`\n${bench.device}: HBM read ${bench.hbmReadGBs} GB/s, FP8 peak ${bench.fp8PeakTflops} TFLOP/s, BF16 ${bench.bf16PeakTflops} TFLOP/s`);
  console.log(formatTable(['shape', 'M', 'W4A8 µs', 'GB/s', 'of HBM', 'TFLOP/s', 'vs cuBLAS BF16', 'vs cuBLASLt FP8'],
    rows.map((r) => [r.shape, r.M, fixed(r.w4a8Us, 1), fixed(r.w4a8GBs, 0), fixed(r.ofHbm, 2), fixed(r.w4a8Tflops, 1),
      r.vsBf16 === null ? '-' : `${r.vsBf16.toFixed(2)}x`, r.vsFp8 === null ? '-' : `${r.vsFp8.toFixed(2)}x`])));
  mkdirSync(outDir, { recursive: true });
  const name = `kernels-cuda-${slug(bench.device)}`;
  writeFileSync(path.join(outDir, `${name}.json`), `${JSON.stringify({ ...bench, rows }, null, 2)}\n`);
  writeFileSync(path.join(outDir, `${name}.svg`), plot(bench, rows));
  console.log(`wrote ${path.join(outDir, name)}.json and .svg`);
}

/** Per shape: TFLOP/s of W4A8, cuBLAS BF16 and cuBLASLt FP8 against M, and W4A8's fraction of HBM bandwidth. */
function plot(bench, rows) {
  const W = 1000, H = 300;
  const shapes = [...new Set(rows.map((r) => r.shape))];
  const parts = [`<text x="20" y="24" font-size="16" font-weight="bold">w4a8 CUDA kernels: ${esc(bench.device)}</text>`,
    `<text x="20" y="42" font-size="12">HBM read ${bench.hbmReadGBs} GB/s; FP8 peak ${bench.fp8PeakTflops} TFLOP/s; BF16 ${bench.bf16PeakTflops} TFLOP/s</text>`];
  let y = 56;
  for (const shape of shapes) {
    const sub = rows.filter((r) => r.shape === shape);
    const ms = sub.map((r) => r.M);
    const xDomain = [Math.min(...ms) / 1.4, Math.max(...ms) * 1.4];
    const values = sub.flatMap((r) => [r.w4a8Tflops, r.bf16Tflops, r.fp8Tflops]).filter((v) => v > 0);
    const yDomain = [Math.min(...values) / 1.5, Math.max(bench.fp8PeakTflops, ...values) * 1.5];
    const series = ['w4a8', 'bf16', 'fp8'].map((k) => ({
      label: { w4a8: 'W4A8 (this project)', bf16: 'cuBLAS BF16', fp8: 'cuBLASLt FP8 (W8A8)' }[k], color: COLORS[k],
      points: sub.map((r) => [r.M, r[`${k}Tflops`]]),
    }));
    parts.push(chart({ x0: 0, y0: y, w: W / 2, h: H, title: `${shape.replace('x', '×')}: TFLOP/s`, xLabel: 'M (tokens)', yLabel: 'TFLOP/s',
      xDomain, yDomain, xTicks: ms.filter((m, i) => i % 2 === 0), yTicks: logTicks(yDomain),
      limits: [{ label: `FP8 peak ${bench.fp8PeakTflops}`, points: [[xDomain[0], bench.fp8PeakTflops], [xDomain[1], bench.fp8PeakTflops]] }], series }));
    const hb = sub.map((r) => [r.M, r.ofHbm]).filter(([, v]) => v > 0);
    const hDomain = [Math.min(0.01, ...hb.map(([, v]) => v)), 2];
    parts.push(chart({ x0: W / 2, y0: y, w: W / 2, h: H, title: `${shape.replace('x', '×')}: W4A8 weight traffic / HBM bandwidth`,
      xLabel: 'M (tokens)', yLabel: 'fraction of HBM read bandwidth', xDomain, yDomain: hDomain, xTicks: ms.filter((m, i) => i % 2 === 0),
      yTicks: logTicks(hDomain), limits: [{ label: 'target 0.7', points: [[xDomain[0], 0.7], [xDomain[1], 0.7]] }],
      series: [{ label: 'W4A8', color: COLORS.w4a8, points: hb }] }));
    y += H + 10;
  }
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y + 10}" font-family="sans-serif">\n` +
    `<rect width="100%" height="100%" fill="white"/>\n${parts.join('\n')}\n</svg>\n`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) process.exitCode = runCudaBench(path.join(ROOT, 'bench', 'results'));
