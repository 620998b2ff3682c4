// The command line end to end on a Hugging Face folder (Qwen2 layout: q/k/v biases, tied embeddings,
// a real BPE tokenizer and a chat template): `w4a8 pack`, then `w4a8 generate` as a user runs them,
// and the packed model through the runtime against the float64 reference.
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { readPackedModel } from '../lib/format/index.js';
import { W4a8Model } from '../lib/model/model.js';
import { writeHfFolder } from './fixtures/hf-folder.js';
import { tempDir } from './fixtures/safetensors-bytes.js';
import { packedLogits } from './reference/llama-ref.js';

const run = promisify(execFile);
const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'cli.js');
let modelFile: string;

beforeAll(async () => {
  const dir = tempDir('w4a8-cli-');
  const folder = await writeHfFolder(path.join(dir, 'qwen2'), { architecture: 'Qwen2ForCausalLM', dtype: 'BF16', shards: 2, tie: true, tokenizer: true });
  modelFile = path.join(dir, 'qwen2.w4a8');
  const { stdout } = await run(process.execPath, [cli, 'pack', folder.dir, '-o', modelFile, '--group', '32', '--fp8', 'e4m3']);
  expect(stdout).toContain('wrote');
}, 60_000);

describe('w4a8 CLI on a Hugging Face folder', () => {
  it('generate streams text and reports tokens/s', async () => {
    const { stdout } = await run(process.execPath, [cli, 'generate', modelFile, 'hello world', '--max-tokens', '12', '--temperature', '0']);
    expect(stdout.startsWith('hello world')).toBe(true);
    expect(stdout).toMatch(/\d+ tokens in [\d.]+ s: [\d.]+ tokens\/s/);
    const batch = await run(process.execPath, [cli, 'generate', modelFile, 'hello', '--batch', '3', '--max-tokens', '6', '--chat']);
    expect(batch.stdout).toMatch(/batch 3: \d+ tokens/);
    const bf16 = await run(process.execPath, [cli, 'generate', modelFile, 'hello', '--max-tokens', '6', '--kv-cache', 'bf16']);
    expect(bf16.stdout).toMatch(/\d+ tokens in [\d.]+ s/);
  });

  it('bad arguments give a clear message and a non-zero exit', async () => {
    await expect(run(process.execPath, [cli, 'generate', path.join(path.dirname(modelFile), 'missing.w4a8')])).rejects.toMatchObject({ code: 1 });
    await expect(run(process.execPath, [cli, 'generate', modelFile, 'x', '--max-tokens', 'many'])).rejects.toMatchObject({ stderr: expect.stringContaining('--max-tokens') });
    await expect(run(process.execPath, [cli, 'generate', modelFile, 'x', '--kv-cache', 'f16'])).rejects.toMatchObject({ stderr: expect.stringContaining('--kv-cache') });
    // (found by fuzzing the CLI: these printed a raw Node stack trace, or ran with a nonsense value)
    for (const args of [
      ['generate', modelFile, '--foo'], ['generate', modelFile, 'x', '--max-tokens'], ['generate', modelFile, 'x', '--max-tokens', '-5'],
      ['generate', modelFile, 'x', '--batch', '0'], ['generate', modelFile, '--tokens', ''], ['serve', modelFile, '--port', '-1'],
      ['start', '--bar'], ['demo', '--rows', '1000000', '--cols', '1000000'],
    ]) await expect(run(process.execPath, [cli, ...args]), args.join(' ')).rejects.toMatchObject({ code: 1, stderr: expect.stringMatching(/^w4a8: E_OPTION: /) });
    // -o must not replace the checkpoint being read
    const source = path.join(path.dirname(modelFile), 'qwen2');
    for (const name of ['model.safetensors', 'chat_template.jinja', 'config.json'])
      await expect(run(process.execPath, [cli, 'pack', source, '-o', path.join(source, name)]), name)
        .rejects.toMatchObject({ stderr: expect.stringContaining('would overwrite the model being packed') });
  });

  it('runs Qwen2 biases and tied embeddings like the float64 reference', async () => {
    const packed = await readPackedModel(modelFile);
    expect(packed.config.qkvBias).toBe(true);
    const model = W4a8Model.fromPacked(packed);
    const tokens = model.tokenize('hello world');
    const want = packedLogits(packed, tokens);
    const result = await model.complete(tokens, { maxTokens: 1, temperature: 0 });
    const last = want[tokens.length - 1];
    let best = 0;
    for (let i = 1; i < last.length; i++) if (last[i] > last[best]) best = i;
    expect(result.tokenIds[0] === best || packed.config.eosTokenIds.includes(best)).toBe(true);
    await model.dispose();
  });
});
