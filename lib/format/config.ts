/**
 * Checks of ModelConfig and QuantConfig values, field by field, wherever they come from (a packed
 * file's metadata: code E_FILE; an in-memory model handed to the writer or packer: E_OPTION).
 * Each returns a fresh object holding only the known fields, so that what is written is canonical;
 * an unknown field is refused rather than dropped, since it may mean a newer writer.
 */
import { W4a8Error, type W4a8ErrorCode } from '../errors.js';
import type { ModelConfig, QuantConfig, QuantMethod, RopeScaling } from '../model/types.js';
import { FP8_FORMATS, MAX_DIMENSION, describe, type Fp8Format } from '../validate.js';

export const QUANT_METHODS: readonly QuantMethod[] = ['rtn', 'gptq', 'dpq'];

class FieldChecker {
  constructor(private readonly code: W4a8ErrorCode) {}

  fail(field: string, message: string): never {
    throw new W4a8Error(this.code, `${field} ${message}`);
  }

  object(value: unknown, field: string): Record<string, unknown> {
    if (typeof value !== 'object' || value === null || Array.isArray(value)) this.fail(field, `must be an object, got ${describe(value)}`);
    return value as Record<string, unknown>;
  }

  onlyKeys(o: Record<string, unknown>, field: string, keys: readonly string[]): void {
    for (const key of Object.keys(o)) if (!keys.includes(key)) this.fail(`${field}.${key}`, 'is not a known field');
  }

  dimension(value: unknown, field: string): number {
    if (!Number.isInteger(value) || (value as number) < 1 || (value as number) > MAX_DIMENSION)
      this.fail(field, `must be an integer in [1, ${MAX_DIMENSION}], got ${describe(value)}`);
    return value as number;
  }

  /** A finite number > 0 that stays so as an FP32 (the native model takes these as floats). */
  positive(value: unknown, field: string): number {
    if (typeof value !== 'number' || !Number.isFinite(Math.fround(value)) || Math.fround(value) <= 0)
      this.fail(field, `must be a finite number > 0 (also as an FP32), got ${describe(value)}`);
    return value;
  }

  boolean(value: unknown, field: string): boolean {
    if (typeof value !== 'boolean') this.fail(field, `must be a boolean, got ${describe(value)}`);
    return value;
  }

  choice<T>(value: unknown, choices: readonly T[], field: string): T {
    if (!choices.includes(value as T)) this.fail(field, `must be one of ${choices.map((c) => JSON.stringify(c)).join(', ')}, got ${describe(value)}`);
    return value as T;
  }

  tokenId(value: unknown, field: string, vocabSize: number): number {
    if (!Number.isInteger(value) || (value as number) < 0 || (value as number) >= vocabSize)
      this.fail(field, `must be a token id in [0, ${vocabSize}), got ${describe(value)}`);
    return value as number;
  }
}

const MODEL_KEYS = [
  'architecture', 'dim', 'hiddenDim', 'nLayers', 'nHeads', 'nKvHeads', 'headDim', 'vocabSize', 'maxSeqLen', 'ropeTheta',
  'ropeScaling', 'rmsNormEps', 'tieEmbeddings', 'qkvBias', 'bosTokenId', 'eosTokenIds',
] as const;

/**
 * A valid ModelConfig: every size a positive integer, nHeads a multiple of nKvHeads, headDim even
 * (RoPE rotates pairs), norms/theta positive, token ids inside the vocabulary. The attention width
 * nHeads * headDim usually equals dim; it need not (the tensor shapes use nHeads * headDim).
 */
export function checkModelConfig(value: unknown, name: string, code: W4a8ErrorCode): ModelConfig {
  const c = new FieldChecker(code);
  const o = c.object(value, name);
  c.onlyKeys(o, name, MODEL_KEYS);
  const f = (key: string) => `${name}.${key}`;
  const config: ModelConfig = {
    architecture: c.choice(o.architecture, ['llama'] as const, f('architecture')),
    dim: c.dimension(o.dim, f('dim')),
    hiddenDim: c.dimension(o.hiddenDim, f('hiddenDim')),
    nLayers: c.dimension(o.nLayers, f('nLayers')),
    nHeads: c.dimension(o.nHeads, f('nHeads')),
    nKvHeads: c.dimension(o.nKvHeads, f('nKvHeads')),
    headDim: c.dimension(o.headDim, f('headDim')),
    vocabSize: c.dimension(o.vocabSize, f('vocabSize')),
    maxSeqLen: c.dimension(o.maxSeqLen, f('maxSeqLen')),
    ropeTheta: c.positive(o.ropeTheta, f('ropeTheta')),
    rmsNormEps: c.positive(o.rmsNormEps, f('rmsNormEps')),
    tieEmbeddings: c.boolean(o.tieEmbeddings, f('tieEmbeddings')),
    qkvBias: c.boolean(o.qkvBias, f('qkvBias')),
    eosTokenIds: [],
  };
  if (config.nHeads % config.nKvHeads !== 0)
    c.fail(f('nHeads'), `(${config.nHeads}) must be a multiple of ${name}.nKvHeads (${config.nKvHeads})`);
  if (config.headDim % 2 !== 0) c.fail(f('headDim'), `must be even (RoPE rotates pairs), got ${config.headDim}`);
  if (config.nHeads * config.headDim > MAX_DIMENSION) c.fail(f('nHeads'), `* headDim is over ${MAX_DIMENSION}`);
  if (o.ropeScaling !== undefined) config.ropeScaling = checkRopeScaling(o.ropeScaling, f('ropeScaling'), c);
  if (o.bosTokenId !== undefined) config.bosTokenId = c.tokenId(o.bosTokenId, f('bosTokenId'), config.vocabSize);
  const eos = o.eosTokenIds;
  if (!Array.isArray(eos)) c.fail(f('eosTokenIds'), `must be a list of token ids, got ${describe(eos)}`);
  config.eosTokenIds = (eos as unknown[]).map((id, i) => c.tokenId(id, `${f('eosTokenIds')}[${i}]`, config.vocabSize));
  return config;
}

function checkRopeScaling(value: unknown, name: string, c: FieldChecker): RopeScaling {
  const o = c.object(value, name);
  const type = c.choice(o.type, ['linear', 'llama3'] as const, `${name}.type`);
  if (type === 'linear') {
    c.onlyKeys(o, name, ['type', 'factor']);
    return { type, factor: c.positive(o.factor, `${name}.factor`) };
  }
  c.onlyKeys(o, name, ['type', 'factor', 'lowFreqFactor', 'highFreqFactor', 'originalMaxPositionEmbeddings']);
  const scaling = {
    type,
    factor: c.positive(o.factor, `${name}.factor`),
    lowFreqFactor: c.positive(o.lowFreqFactor, `${name}.lowFreqFactor`),
    highFreqFactor: c.positive(o.highFreqFactor, `${name}.highFreqFactor`),
    originalMaxPositionEmbeddings: c.dimension(o.originalMaxPositionEmbeddings, `${name}.originalMaxPositionEmbeddings`),
  };
  // Llama 3 interpolates between the two wavelength bounds: they must not coincide.
  if (scaling.highFreqFactor <= scaling.lowFreqFactor)
    c.fail(`${name}.highFreqFactor`, `(${scaling.highFreqFactor}) must be greater than lowFreqFactor (${scaling.lowFreqFactor})`);
  return scaling;
}

const QUANT_KEYS = ['weightFormat', 'activationFormat', 'groupSize', 'symmetric', 'scales', 'method', 'lmHead', 'details'] as const;

export function checkQuantConfig(value: unknown, name: string, code: W4a8ErrorCode): QuantConfig {
  const c = new FieldChecker(code);
  const o = c.object(value, name);
  c.onlyKeys(o, name, QUANT_KEYS);
  const f = (key: string) => `${name}.${key}`;
  const quant: QuantConfig = {
    weightFormat: c.choice<Fp8Format>(o.weightFormat, FP8_FORMATS, f('weightFormat')),
    activationFormat: c.choice<Fp8Format>(o.activationFormat, FP8_FORMATS, f('activationFormat')),
    groupSize: c.choice(o.groupSize, [32, 64, 128] as const, f('groupSize')),
    symmetric: c.boolean(o.symmetric, f('symmetric')),
    scales: c.choice(o.scales, ['float', 'pow2'] as const, f('scales')),
    method: c.choice(o.method, QUANT_METHODS, f('method')),
  };
  if (o.lmHead !== undefined) quant.lmHead = c.choice(o.lmHead, ['w4a8'] as const, f('lmHead'));
  if (o.details !== undefined) quant.details = c.object(o.details, f('details'));
  return quant;
}
