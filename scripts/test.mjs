#!/usr/bin/env node
// `npm test`: dist/ rebuilt, the native unit tests (build/w4a8_native_tests), then every vitest suite; ends with one
// plain line "N passed, N failed" summing both, and exits non-zero if anything failed or nothing ran.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
let passed = 0;
let failed = 0;

// dist/ first, from the current sources: a test runs the package in a child process (batch invariance under a
// forced instruction set), and `npm test` must not test stale JS.
const tsc = spawnSync(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(root, 'tsconfig.json')],
  { stdio: 'inherit' });
if (tsc.status !== 0) {
  console.error('tsc failed: dist/ was not rebuilt');
  failed++;
}

const nativeTests = path.join(root, 'build', 'w4a8_native_tests');
if (!existsSync(nativeTests)) {
  console.error(`missing ${nativeTests}: run \`npm install\` (or \`npm run build:native\`) first`);
  failed++;
} else {
  const run = spawnSync(nativeTests, [], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  process.stdout.write(run.stdout);
  const counts = /native: (\d+) passed, (\d+) failed/.exec(run.stdout ?? '');
  if (counts) {
    passed += Number(counts[1]);
    failed += Number(counts[2]);
  }
  if (!counts || run.status !== 0) failed += counts ? 0 : 1;
}

// The CUDA suite (build/w4a8_cuda_tests: kernels and the GPU decoder step against the CPU) needs a GPU: it
// runs with W4A8_CUDA_TESTS=1, and is otherwise skipped with a line that says so.
const cudaTests = path.join(root, 'build', 'w4a8_cuda_tests');
if (process.env.W4A8_CUDA_TESTS === '1') {
  if (!existsSync(cudaTests)) {
    console.error(`W4A8_CUDA_TESTS=1 but ${cudaTests} is missing: the addon was built without CUDA (no nvcc found, or W4A8_CUDA=off)`);
    failed++;
  } else {
    const run = spawnSync(cudaTests, [], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    process.stdout.write(run.stdout ?? '');
    const counts = /cuda: (\d+) passed, (\d+) failed/.exec(run.stdout ?? '');
    if (counts) {
      passed += Number(counts[1]);
      failed += Number(counts[2]);
    }
    if (!counts || run.status !== 0) failed += counts ? 0 : 1;
  }
} else {
  console.log(existsSync(cudaTests)
    ? 'cuda: GPU tests skipped (built; run them on a machine with a GPU: W4A8_CUDA_TESTS=1 npm test)'
    : 'cuda: GPU tests skipped (the addon was built without CUDA)');
}

const reportDir = mkdtempSync(path.join(tmpdir(), 'w4a8-test-'));
const report = path.join(reportDir, 'vitest.json');
const vitest = spawnSync(process.execPath,
  [path.join(root, 'node_modules', 'vitest', 'vitest.mjs'), 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${report}`],
  { cwd: root, stdio: 'inherit', env: { ...process.env, FORCE_COLOR: process.env.FORCE_COLOR ?? '0' } });
if (existsSync(report)) {
  const result = JSON.parse(readFileSync(report, 'utf8'));
  passed += result.numPassedTests;
  failed += result.numFailedTests;
  if (result.numTotalTests === 0 || (vitest.status !== 0 && result.numFailedTests === 0)) failed++;
} else {
  failed++;
}
rmSync(reportDir, { recursive: true, force: true });

console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed > 0 || passed === 0 ? 1 : 0;
