// node-llama-cpp, the llama.cpp engine bench:e2e compares with, is not a dependency of the project: its
// package pulls ~700 MB of prebuilt binaries, and this registry mirror lacks its macOS/Windows/riscv
// packages, which would leave package-lock.json unusable for `npm ci`. The bench installs it on first use
// into bench/.peer/ (git-ignored) from the npm registry; the Linux x64 CPU binary comes prebuilt, so
// nothing is compiled or downloaded from elsewhere. A node-llama-cpp the user installed wins.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const LLAMA_CPP_PACKAGE = 'node-llama-cpp@3.22.1';
const peerDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '.peer');
const peerEntry = path.join(peerDir, 'node_modules', 'node-llama-cpp', 'dist', 'index.js');

async function userInstalled() {
  try {
    return await import('node-llama-cpp');
  } catch {
    return undefined;
  }
}

/** Installs node-llama-cpp into bench/.peer/ unless it can be imported already; returns why not, or undefined. */
export async function ensureLlamaCpp() {
  if (existsSync(peerEntry) || (await userInstalled())) return undefined;
  console.log(`installing ${LLAMA_CPP_PACKAGE} into ${peerDir} (once; the llama.cpp side of the comparison)`);
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  const result = spawnSync(npm, ['install', '--prefix', peerDir, '--no-save', '--no-audit', '--no-fund', '--ignore-scripts', LLAMA_CPP_PACKAGE],
    { stdio: 'inherit' });
  return result.status === 0 && existsSync(peerEntry) ? undefined : `npm install ${LLAMA_CPP_PACKAGE} failed (status ${result.status})`;
}

/** The node-llama-cpp module: the user's, else bench/.peer's. */
export async function importLlamaCpp() {
  if (existsSync(peerEntry)) return import(pathToFileURL(peerEntry).href);
  const module = await userInstalled();
  if (module) return module;
  throw new Error(`node-llama-cpp is not installed (bench:e2e installs ${LLAMA_CPP_PACKAGE} into bench/.peer on its first run)`);
}
