// The packed model file: write -> read round trips bit for bit with aligned zero-copy views; every
// corruption of the container, the metadata or the tensor set is an E_FILE error, never a crash.
import { readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { W4a8Error } from '../lib/errors.js';
import {
  int4Layer, packedTensorSpecs, readPackedModel, readSafetensors, storedToFloat32, storedToTensor, writePackedModel,
  writeSafetensors,
} from '../lib/format/index.js';
import { encodePackedMetadata } from '../lib/format/packed-metadata.js';
import type { Tensor } from '../lib/model/types.js';
import { native, type ValueRule } from '../lib/native.js';
import { rng } from './oracle/fp8-oracle.js';
import { randomPacked, tinyConfig, tinyQuant } from './fixtures/models.js';
import { readHeader, safetensorsBytes, tempDir, writeBytes } from './fixtures/safetensors-bytes.js';

const dir = tempDir();
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function expectCode(run: () => Promise<unknown>, code: string, messagePart?: string): Promise<void> {
  try {
    await run();
  } catch (error) {
    expect(error, String(error)).toBeInstanceOf(W4a8Error);
    expect((error as W4a8Error).code, (error as Error).message).toBe(code);
    if (messagePart) expect((error as Error).message).toContain(messagePart);
    return;
  }
  expect.fail(`expected a W4a8Error ${code}`);
}

function bytesOf(t: Tensor): Uint8Array {
  return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

const model = randomPacked(tinyConfig(), tinyQuant(), 7);
const goodFile = path.join(dir, 'good.w4a8');

describe('packed file round trip', () => {
  it('reads back every tensor bit for bit, with the metadata', async () => {
    const result = await writePackedModel(goodFile, model);
    expect(result.tensors).toBe(model.tensors.size);
    expect(result.bytes).toBe(readFileSync(goodFile).length);
    const read = await readPackedModel(goodFile);
    expect(read.config).toEqual(model.config);
    expect(read.quant).toEqual(model.quant);
    expect(read.tokenizerJson).toBe(model.tokenizerJson);
    expect(read.tokenizerConfigJson).toBe(model.tokenizerConfigJson);
    expect(read.chatTemplate).toBe(model.chatTemplate);
    expect([...read.tensors.keys()].sort()).toEqual([...model.tensors.keys()].sort());
    for (const [name, t] of model.tensors) {
      const r = read.tensors.get(name)!;
      expect(r.dtype, name).toBe(t.dtype);
      expect(r.shape, name).toEqual(t.shape);
      expect(r.data.constructor, name).toBe(t.data.constructor);
      expect(Buffer.compare(bytesOf(r), bytesOf(t)), name).toBe(0);
    }
  });

  it('gives aligned views into one mapping (zero copy), and int4Layer wraps the parts', async () => {
    const read = await readPackedModel(goodFile);
    const buffers = new Set([...read.tensors.values()].map((t) => t.data.buffer));
    expect(buffers.size).toBe(1);
    for (const [name, t] of read.tensors) expect(t.data.byteOffset % t.data.BYTES_PER_ELEMENT, name).toBe(0);
    const w = int4Layer(read, 'model.layers.1.mlp.down_proj');
    expect([w.rows, w.cols, w.groupSize]).toEqual([64, 96, 32]); // K = 80 padded to 96
  });

  it('lays tensors out F32, then BF16, then U8, without holes, from an 8-byte aligned data section', () => {
    const { header, dataStart } = readHeader(readFileSync(goodFile));
    expect(dataStart % 8).toBe(0);
    const entries = Object.entries(header).filter(([k]) => k !== '__metadata__').sort((a, b) => a[1].data_offsets[0] - b[1].data_offsets[0]);
    const rank = { F32: 0, BF16: 1, F16: 1, U8: 2 } as Record<string, number>;
    let cursor = 0, lastRank = 0;
    for (const [name, e] of entries) {
      expect(e.data_offsets[0], name).toBe(cursor);
      expect(rank[e.dtype], name).toBeGreaterThanOrEqual(lastRank);
      cursor = e.data_offsets[1];
      lastRank = rank[e.dtype];
    }
  });

  it.each([
    { label: 'Qwen2-style biases, tied embeddings, G=128 e5m2 pow2 symmetric', config: { qkvBias: true, tieEmbeddings: true }, quant: { groupSize: 128 as const, weightFormat: 'e5m2' as const, scales: 'pow2' as const, symmetric: true } },
    { label: 'Llama 3 rope scaling, G=64, gptq recorded', config: { ropeScaling: { type: 'llama3' as const, factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 } }, quant: { groupSize: 64 as const, method: 'gptq' as const, details: { damp: 0.01 } } },
  ])('round trips $label', async ({ config, quant }) => {
    const m = randomPacked(tinyConfig(config), tinyQuant(quant), 11);
    delete m.tokenizerJson;
    delete m.chatTemplate;
    const file = path.join(dir, 'variant.w4a8');
    await writePackedModel(file, m);
    const read = await readPackedModel(file);
    expect(read.config).toEqual(m.config);
    expect(read.quant).toEqual(m.quant);
    expect(read.tokenizerJson).toBeUndefined();
    for (const [name, t] of m.tensors) expect(Buffer.compare(bytesOf(read.tensors.get(name)!), bytesOf(t)), name).toBe(0);
  });

  it('refuses to write an invalid model, and a failed write leaves no file behind', async () => {
    const target = path.join(dir, 'refused.w4a8');
    const without = new Map(model.tensors);
    without.delete('model.layers.0.self_attn.q_proj.scales');
    await expectCode(() => writePackedModel(target, { ...model, tensors: without }), 'E_SHAPE', 'q_proj.scales');
    const wrongKind = new Map(model.tensors);
    const scales = model.tensors.get('model.norm.weight')!;
    wrongKind.set('model.norm.weight', { ...scales, data: new Uint16Array(scales.data.length) });
    await expectCode(() => writePackedModel(target, { ...model, tensors: wrongKind }), 'E_TYPE', 'model.norm.weight');
    await expectCode(() => writePackedModel(target, { ...model, config: { ...model.config, nKvHeads: 3 } }), 'E_OPTION', 'nKvHeads');
    await expectCode(() => writePackedModel(path.join(dir, 'no-such-dir', 'x.w4a8'), model), 'E_IO');
    expect(readdirSync(dir).filter((f) => f.startsWith('.') || f.startsWith('refused'))).toEqual([]);
  });

  it('replaces an existing file atomically, even one that is mapped and being read', async () => {
    const file = path.join(dir, 'replace.w4a8');
    await writePackedModel(file, model);
    const before = await readPackedModel(file);
    const other = randomPacked(tinyConfig(), tinyQuant(), 99);
    await writePackedModel(file, other);
    const after = await readPackedModel(file);
    const name = 'model.embed_tokens.weight';
    expect(Buffer.compare(bytesOf(after.tensors.get(name)!), bytesOf(other.tensors.get(name)!))).toBe(0);
    expect(Buffer.compare(bytesOf(before.tensors.get(name)!), bytesOf(model.tensors.get(name)!))).toBe(0);
  });
});

describe('corrupt containers give E_FILE', () => {
  const good = () => readFileSync(goodFile);
  const read = (bytes: Uint8Array, name: string) => readPackedModel(writeBytes(dir, name, bytes));

  it('a truncated file, at any point', async () => {
    const bytes = good();
    const { dataStart } = readHeader(bytes);
    for (const length of [0, 4, 7, 8, 20, dataStart - 1, dataStart, dataStart + 3, bytes.length - 1])
      await expectCode(() => read(bytes.subarray(0, length), `truncated-${length}`), 'E_FILE');
  });

  it('a header length beyond the file', async () => {
    const bytes = Buffer.from(good());
    bytes.writeBigUInt64LE(BigInt(bytes.length), 0);
    await expectCode(() => read(bytes, 'long-header'), 'E_FILE', 'past the end');
    bytes.writeBigUInt64LE(0xffffffffffffffffn, 0);
    await expectCode(() => read(bytes, 'huge-header'), 'E_FILE', 'past the end');
  });

  it('a header that is not JSON, not UTF-8, or not an object', async () => {
    await expectCode(() => read(safetensorsBytes('{"a": '), 'bad-json'), 'E_FILE', 'not valid JSON');
    await expectCode(() => read(safetensorsBytes(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]).toString('latin1')), 'latin1'), 'E_FILE');
    const invalidUtf8 = safetensorsBytes('{"x":"ab"}');
    invalidUtf8[14] = 0xff;
    await expectCode(() => read(invalidUtf8, 'bad-utf8'), 'E_FILE', 'UTF-8');
    await expectCode(() => read(safetensorsBytes('[1, 2]'), 'array'), 'E_FILE', 'not a JSON object');
  });

  const f32 = new Uint8Array(16);
  const entry = (dtype: unknown, shape: unknown, offsets: unknown) => ({ t: { dtype, shape, data_offsets: offsets } });
  it.each([
    { label: 'unknown dtype', header: entry('Q4_K', [4], [0, 16]), message: 'unknown dtype' },
    { label: 'shape/size mismatch', header: entry('F32', [5], [0, 16]), message: 'needs 20' },
    { label: 'negative dimension', header: entry('F32', [-4], [0, 16]), message: 'non-negative integers' },
    { label: 'fractional dimension', header: entry('F32', [2.5], [0, 16]), message: 'non-negative integers' },
    { label: 'shape not a list', header: entry('F32', '4', [0, 16]), message: 'non-negative integers' },
    { label: 'offsets out of range', header: entry('F32', [4], [16, 32]), message: 'past the data section' },
    { label: 'offsets reversed', header: entry('F32', [0], [16, 0]), message: 'end before' },
    { label: 'offsets not integers', header: entry('F32', [4], [0, '16']), message: 'two non-negative integers' },
    { label: 'unknown entry field', header: { t: { dtype: 'F32', shape: [4], data_offsets: [0, 16], extra: 1 } }, message: "unknown field 'extra'" },
    { label: 'metadata value not a string', header: { __metadata__: { format: 1 }, ...entry('F32', [4], [0, 16]) }, message: '__metadata__.format' },
    { label: 'overlapping tensors', header: { a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, b: { dtype: 'F32', shape: [2], data_offsets: [8, 16] } }, message: 'overlaps' },
    { label: 'a hole between tensors', header: { a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [1], data_offsets: [12, 16] } }, message: 'hole' },
    { label: 'data past the last tensor', header: entry('F32', [2], [0, 8]), message: 'hole' },
  ])('$label', async ({ header, message }) => {
    await expectCode(() => readSafetensors(writeBytes(dir, 'bad.safetensors', safetensorsBytes(header, f32))), 'E_FILE', message);
  });

  it('random byte flips anywhere in the header never crash: the file reads or fails with E_FILE', async () => {
    const bytes = good();
    const { dataStart } = readHeader(bytes);
    const random = rng(2024);
    for (let trial = 0; trial < 150; trial++) {
      const broken = Buffer.from(bytes);
      for (let flips = 0; flips < 1 + Math.floor(random() * 3); flips++)
        broken[Math.floor(random() * dataStart)] = Math.floor(random() * 256);
      try {
        await read(broken, 'flipped');
      } catch (error) {
        expect((error as W4a8Error).code, `trial ${trial}: ${(error as Error).message}`).toBe('E_FILE');
      }
    }
  });

  it('a path that is missing or a folder', async () => {
    await expectCode(() => readPackedModel(path.join(dir, 'missing.w4a8')), 'E_IO');
    await expectCode(() => readPackedModel(dir), 'E_FILE', 'not a regular file');
  });
});

describe('packed-model checks give E_FILE', () => {
  /** Writes a container with the packed metadata (optionally changed) and the tensors (optionally changed). */
  async function variant(name: string, change: { metadata?: Record<string, string | undefined>; tensors?: (t: Map<string, Tensor>) => void }) {
    const metadata: Record<string, string> = { ...encodePackedMetadata(model) };
    for (const [k, v] of Object.entries(change.metadata ?? {})) {
      if (v === undefined) delete metadata[k];
      else metadata[k] = v;
    }
    const tensors = new Map(model.tensors);
    change.tensors?.(tensors);
    const file = path.join(dir, `${name}.w4a8`);
    await writeSafetensors(file, tensors, metadata);
    return file;
  }
  const config = (c: object) => JSON.stringify({ ...model.config, ...c });
  const quant = (q: object) => JSON.stringify({ ...model.quant, ...q });
  const q = 'model.layers.0.self_attn.q_proj';

  it.each([
    { label: 'a foreign safetensors file', change: { metadata: { format: undefined } }, message: 'not a w4a8 packed model' },
    { label: 'an unknown format version', change: { metadata: { format_version: '2' } }, message: 'format_version "2" is not supported' },
    { label: 'missing config', change: { metadata: { config: undefined } }, message: 'config is missing' },
    { label: 'config not JSON', change: { metadata: { config: '{dim: 64' } }, message: 'config is not valid JSON' },
    { label: 'nHeads not a multiple of nKvHeads', change: { metadata: { config: config({ nKvHeads: 3 }) } }, message: 'nKvHeads' },
    { label: 'a missing config field', change: { metadata: { config: config({ dim: undefined }) } }, message: 'config.dim' },
    { label: 'an unknown config field', change: { metadata: { config: config({ slidingWindow: 4 }) } }, message: 'config.slidingWindow' },
    { label: 'odd headDim', change: { metadata: { config: config({ headDim: 15, nHeads: 4 }) } }, message: 'headDim' },
    { label: 'eos id outside the vocabulary', change: { metadata: { config: config({ eosTokenIds: [40] }) } }, message: 'eosTokenIds[0]' },
    { label: 'a group size that is not 32/64/128', change: { metadata: { quantization: quant({ groupSize: 48 }) } }, message: 'groupSize' },
    { label: 'an unknown FP8 format', change: { metadata: { quantization: quant({ weightFormat: 'e3m4' }) } }, message: 'weightFormat' },
    { label: 'tokenizer not JSON', change: { metadata: { tokenizer: '{' } }, message: 'tokenizer' },
    { label: 'a missing required tensor', change: { tensors: (t: Map<string, Tensor>) => t.delete(`${q}.zeros`) }, message: `missing tensor '${q}.zeros'` },
    { label: 'a missing lm_head (untied)', change: { tensors: (t: Map<string, Tensor>) => t.delete('lm_head.weight') }, message: "'lm_head.weight'" },
    {
      label: 'a packed part with K not padded to the group', message: 'expected [64, 48]',
      change: { tensors: (t: Map<string, Tensor>) => t.set('model.layers.1.mlp.down_proj.qweight', { dtype: 'U8', shape: [64, 40], data: new Uint8Array(64 * 40) }) },
    },
    {
      label: 'a part of the wrong dtype', message: 'is BF16, expected F32',
      change: { tensors: (t: Map<string, Tensor>) => t.set(`${q}.scales`, { dtype: 'BF16', shape: [64, 2], data: new Uint16Array(128) }) },
    },
    {
      label: 'an unexpected tensor', message: "unexpected tensor 'model.layers.2.mlp.up_proj.qweight'",
      change: { tensors: (t: Map<string, Tensor>) => t.set('model.layers.2.mlp.up_proj.qweight', { dtype: 'U8', shape: [1], data: new Uint8Array(1) }) },
    },
    // (Found by fuzzing: 2^24 layers made the table of expected tensors exhaust the heap before any comparison.)
    { label: 'a layer count far beyond the tensors', change: { metadata: { config: config({ nLayers: 1 << 24 }) } }, message: 'a 16777216-layer model' },
    { label: 'a ropeTheta that underflows FP32', change: { metadata: { config: config({ ropeTheta: 1e-300 }) } }, message: 'also as an FP32' },
    { label: 'an rmsNormEps that overflows FP32', change: { metadata: { config: config({ rmsNormEps: 1e300 }) } }, message: 'also as an FP32' },
    {
      label: 'a NaN norm weight', message: "'model.layers.1.input_layernorm.weight'[2] is NaN, expected a finite value",
      change: { tensors: (t: Map<string, Tensor>) => { const n = t.get('model.layers.1.input_layernorm.weight')!; t.set('model.layers.1.input_layernorm.weight', { ...n, data: (n.data as Float32Array).map((v, i) => (i === 2 ? NaN : v)) }); } },
    },
  ])('$label', async ({ label, change, message }) => {
    await expectCode(async () => readPackedModel(await variant(label.replace(/\W+/g, '-'), change)), 'E_FILE', message);
  });

  const replaced = (name: string, edit: (data: Float32Array | Uint8Array) => void) => (t: Map<string, Tensor>) => {
    const old = t.get(name)!;
    const data = old.data.slice();
    edit(data as Float32Array | Uint8Array);
    t.set(name, { ...old, data });
  };
  it.each([
    { label: 'a zero point over 15', part: 'zeros', edit: (d: Float32Array | Uint8Array) => (d[3] = 16), message: "zeros'[3] is 16" },
    { label: 'a zero group scale', part: 'scales', edit: (d: Float32Array | Uint8Array) => (d[0] = 0), message: "scales'[0] is 0" },
    { label: 'a NaN channel scale', part: 'channel_scale', edit: (d: Float32Array | Uint8Array) => (d[5] = NaN), message: "channel_scale'[5] is NaN" },
    { label: 'an infinite group scale', part: 'scales', edit: (d: Float32Array | Uint8Array) => (d[1] = -Infinity), message: 'finite scale' },
  ])('values: $label (E_FILE on read; the writer refuses them too, checkValues: false skips them)', async ({ label, part, edit, message }) => {
    const tensors = replaced(`${q}.${part}`, edit);
    const file = await variant(label.replace(/\W+/g, '-'), { tensors });
    await expectCode(() => readPackedModel(file), 'E_FILE', message);
    expect((await readPackedModel(file, { checkValues: false })).tensors.size).toBe(model.tensors.size);
    const bad = new Map(model.tensors);
    tensors(bad);
    await expectCode(() => writePackedModel(path.join(dir, 'refused-values.w4a8'), { ...model, tensors: bad }), part === 'zeros' ? 'E_CODE' : 'E_SCALE', message);
  });

  it('a symmetric model whose zero points are not all 8', async () => {
    const symmetric = randomPacked(tinyConfig(), tinyQuant({ symmetric: true }), 3);
    const zeros = symmetric.tensors.get(`${q}.zeros`)!;
    symmetric.tensors.set(`${q}.zeros`, { ...zeros, data: (zeros.data as Uint8Array).map((z, i) => (i === 2 ? 7 : z)) });
    await expectCode(() => writePackedModel(path.join(dir, 'refused-sym.w4a8'), symmetric), 'E_CODE', '8 (symmetric)');
  });
});

// The value scan behind those checks (native/addon/scan_bindings.cpp), on a worker thread (opening a file) and on
// the caller's (writing one): the first offending element, across its 4096-element blocks, for every rule.
describe('the native value scan', () => {
  const scan = (array: Uint8Array | Float32Array, rule: ValueRule) => native().firstViolation(array, rule)[0];
  const scanAsync = async (array: Uint8Array | Float32Array, rule: ValueRule) => (await native().firstViolationAsync(array, rule))[0];
  const random = rng(11);
  const cases: { rule: ValueRule; make: (n: number) => Uint8Array | Float32Array; bad: number[]; good: number[] }[] = [
    { rule: 'zero-point', make: (n) => Uint8Array.from({ length: n }, () => Math.floor(random() * 16)), bad: [16, 255], good: [0, 15] },
    { rule: 'symmetric-zero-point', make: (n) => new Uint8Array(n).fill(8), bad: [7, 9, 0], good: [8] },
    { rule: 'scale', make: (n) => Float32Array.from({ length: n }, () => random() + 1e-3), bad: [0, -0, -1, NaN, Infinity, -Infinity], good: [1e-45, 3.4e38] },
    { rule: 'finite', make: (n) => Float32Array.from({ length: n }, () => random() * 2 - 1), bad: [NaN, Infinity, -Infinity], good: [0, -0, 1e-45, -3.4e38] },
  ];
  it.each(cases)('$rule: the first bad element, or -1', async ({ rule, make, bad, good }) => {
    for (const n of [0, 1, 4095, 4096, 4097, 12289]) {
      const clean = make(n);
      for (const v of good) if (n > 0) clean[Math.floor(random() * n)] = v;
      expect(scan(clean, rule)).toBe(-1);
      expect(await scanAsync(clean, rule)).toBe(-1);
      for (const v of bad) {
        for (const at of new Set([0, n - 1, Math.floor(random() * n), 4095, 4096].filter((i) => i >= 0 && i < n))) {
          const data = clean.slice();
          data[at] = v;
          if (at + 7 < n) data[at + 7] = v; // a later one does not hide the first
          expect(scan(data, rule), `${rule} n=${n} at=${at} v=${v}`).toBe(at);
          expect(await scanAsync(data, rule)).toBe(at);
        }
      }
    }
  });

  it('refuses a wrong array kind or rule in the addon (E_TYPE)', () => {
    for (const [array, rule] of [[new Float32Array(4), 'zero-point'], [new Uint8Array(4), 'scale'], [[1, 2], 'finite'], [new Float32Array(4), 'nan']] as const)
      expect(() => native().firstViolation(array as Float32Array, rule as ValueRule)).toThrow(expect.objectContaining({ code: 'E_TYPE' }));
  });
});

describe('foreign safetensors', () => {
  it('copies a misaligned F32 tensor into an aligned array, and widens F16/BF16/F64 exactly', async () => {
    // u8 [1] at 0, then F32 [2] at byte 1 (misaligned), then F16/BF16/F64.
    const data = new Uint8Array(1 + 8 + 4 + 4 + 8);
    const view = new DataView(data.buffer);
    data[0] = 7;
    view.setFloat32(1, 1.5, true);
    view.setFloat32(5, -2.25, true);
    view.setUint16(9, 0x3c00, true); // F16 1.0
    view.setUint16(11, 0x0001, true); // F16 smallest subnormal 2^-24
    view.setUint16(13, 0xc049, true); // BF16 -3.140625
    view.setUint16(15, 0x7f80, true); // BF16 +inf
    view.setFloat64(17, 0.1, true);
    const header = {
      __metadata__: { source: 'test' },
      u: { dtype: 'U8', shape: [1], data_offsets: [0, 1] },
      f: { dtype: 'F32', shape: [2], data_offsets: [1, 9] },
      h: { dtype: 'F16', shape: [2], data_offsets: [9, 13] },
      b: { dtype: 'BF16', shape: [2], data_offsets: [13, 17] },
      d: { dtype: 'F64', shape: [1, 1], data_offsets: [17, 25] },
    };
    const file = writeBytes(dir, 'foreign.safetensors', safetensorsBytes(header, data));
    const st = await readSafetensors(file);
    expect(st.metadata).toEqual({ source: 'test' });
    const f = storedToTensor('f', st.tensors.get('f')!, file);
    expect(f.data.byteOffset % 4).toBe(0);
    expect([...f.data]).toEqual([1.5, -2.25]);
    expect([...storedToFloat32('h', st.tensors.get('h')!, file)]).toEqual([1, 2 ** -24]);
    expect([...storedToFloat32('b', st.tensors.get('b')!, file)]).toEqual([-3.140625, Infinity]);
    expect([...storedToFloat32('d', st.tensors.get('d')!, file)]).toEqual([Math.fround(0.1)]);
    await expectCode(async () => storedToFloat32('u', st.tensors.get('u')!, file), 'E_FILE', 'floating-point');
  });

  it('writes an empty tensor and an empty file', async () => {
    const file = path.join(dir, 'empty.safetensors');
    await writeSafetensors(file, new Map([['e', { dtype: 'F32', shape: [0, 3], data: new Float32Array(0) }]]));
    const st = await readSafetensors(file);
    expect(st.tensors.get('e')!.shape).toEqual([0, 3]);
    writeFileSync(file, '');
    await expectCode(() => readSafetensors(file), 'E_FILE', 'shorter than');
  });

  it('has every packed tensor spec in a file written by the writer', () => {
    expect(packedTensorSpecs(model.config, model.quant.groupSize).size).toBe(model.tensors.size);
  });
});

