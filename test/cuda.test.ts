// Device selection (W4a8Model.create/load with {device}): validation, the typed error when CUDA is asked for
// and unavailable, 'auto' falling back to the CPU. Where a GPU is present (W4A8_CUDA_TESTS=1), greedy
// generation on the GPU equals the CPU's; the logit-level comparison is the native suite
// (build/w4a8_cuda_tests, native/tests/cuda/model_tests.cpp).
import { beforeAll, describe, expect, it } from 'vitest';
import { W4a8Error } from '../lib/errors.js';
import { cudaDevice, type CudaDeviceInfo } from '../lib/model/device.js';
import { W4a8Model } from '../lib/model/model.js';
import { syntheticSourceModel } from '../lib/model/synthetic.js';
import { packModel } from '../lib/pack.js';
import type { PackedModel } from '../lib/model/types.js';

const wantGpu = process.env.W4A8_CUDA_TESTS === '1';
let cuda: CudaDeviceInfo;
let packed: PackedModel;

beforeAll(async () => {
  cuda = await cudaDevice();
  const source = syntheticSourceModel({ dim: 64, hiddenDim: 172, nLayers: 2, nHeads: 8, nKvHeads: 4, maxSeqLen: 64 }, 5);
  packed = await packModel(source, { groupSize: 32, weightFormat: 'e4m3fn', scales: 'float', method: 'rtn' });
  if (!cuda.available) console.log(`cuda.test: no usable GPU (${cuda.reason}); GPU generation tests skipped`);
});

describe('device selection', () => {
  it('reports why CUDA is unavailable, or the GPU', () => {
    if (cuda.available) expect(cuda.name.length).toBeGreaterThan(0);
    else expect(cuda.reason.length).toBeGreaterThan(0);
  });

  it('rejects an unknown device with E_OPTION', async () => {
    await expect(W4a8Model.create(packed, { device: 'tpu' as never })).rejects.toMatchObject({ code: 'E_OPTION' });
    expect(() => W4a8Model.fromPacked(packed, { device: 'cuda' })).toThrow(W4a8Error);
  });

  it("'cpu' runs on the CPU and says so", async () => {
    const model = await W4a8Model.create(packed, { device: 'cpu' });
    expect(model.backend.device).toBe('cpu');
    expect(model.backend.name.length).toBeGreaterThan(0);
    await model.dispose();
  });

  it("'auto' picks the GPU when there is one, else the CPU", async () => {
    const model = await W4a8Model.create(packed, { device: 'auto' });
    expect(model.backend.device).toBe(cuda.available ? 'cuda' : 'cpu');
    expect((await model.complete([256, 72, 105], { maxTokens: 4, temperature: 0 })).generatedTokens).toBe(4);
    await model.dispose();
  });

  it("'cuda' without a GPU rejects with E_UNSUPPORTED", async () => {
    if (cuda.available) return;
    await expect(W4a8Model.create(packed, { device: 'cuda' })).rejects.toMatchObject({ code: 'E_UNSUPPORTED' });
  });
});

describe.runIf(wantGpu)('on the GPU (W4A8_CUDA_TESTS=1)', () => {
  it('greedy generation equals the CPU', async () => {
    expect(cuda.available, cuda.reason).toBe(true);
    const gpu = await W4a8Model.create(packed, { device: 'cuda' });
    const cpu = await W4a8Model.create(packed, { device: 'cpu' });
    expect(gpu.backend.device).toBe('cuda');
    const prompt = [256, 72, 101, 108, 108, 111];
    const a = await cpu.complete(prompt, { maxTokens: 16, temperature: 0 });
    const b = await gpu.complete(prompt, { maxTokens: 16, temperature: 0 });
    expect(b.tokenIds).toEqual(a.tokenIds);
    await Promise.all([gpu.dispose(), cpu.dispose()]);
  });
});
