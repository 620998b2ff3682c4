/**
 * One model, every quantization method, the same data: the rows of the README results table.
 *   FP32           the source (createReferenceNativeModel), the reference of KLD and top-1
 *   W4A16-RTN      RTN-packed, dequantized to s_c·bf16(s_g(q−z)) and run through the FP32 path: FP32
 *                  activations, not BF16 (the runtime has no BF16-activation INT4 mode), so a slightly
 *                  optimistic W4A16
 *   W4A8-RTN       round to nearest
 *   W4A8-GPTQ      GPTQ sweep, INT4 error only (the FP8 rounding of the dequantized weight unseen)
 *   W4A8-DPQ       the sweep with the composite INT4 → FP8 quantizer and its group-scale search
 *   W4A8-DPQ+GAR   DPQ in group-aware order
 * The W4A8 rows run the native W4A8 runtime (FP8 activations per token, BF16 embeddings).
 */
import { createNativeModel, createReferenceNativeModel } from '../model/native-model.js';
import type { SourceModel } from '../model/types.js';
import type { NativeModelHandle } from '../native.js';
import { packModel, type PackOptions } from '../pack.js';
import type { GroupSize } from '../weights.js';
import { dequantizedSource } from './dequantize.js';
import { evaluateModel, type EvalResult } from './evaluate.js';

export interface CompareOptions {
  groupSize: GroupSize;
  calibration: Int32Array[];
  evaluation: Int32Array[];
  /** Evaluation window and stride (evaluate.ts defaults when absent). */
  context?: number;
  stride?: number;
  damp?: number;
  /** Called with each row as it is done. */
  onRow?: (row: CompareRow) => void;
}

export interface CompareRow {
  name: string;
  result: EvalResult;
  /** Seconds to pack (calibration included), for the packed rows. */
  packSeconds?: number;
}

export const COMPARED_METHODS: { name: string; options: PackOptions }[] = [
  { name: 'W4A8-RTN', options: { method: 'rtn' } },
  { name: 'W4A8-GPTQ', options: { method: 'gptq' } },
  { name: 'W4A8-DPQ', options: { method: 'dpq' } },
  { name: 'W4A8-DPQ+GAR', options: { method: 'dpq', gar: true } },
];

export async function compareMethods(source: SourceModel, options: CompareOptions): Promise<CompareRow[]> {
  const c = source.config;
  const reference = createReferenceNativeModel(source);
  const rows: CompareRow[] = [];
  const evaluate = async (name: string, handle: NativeModelHandle, packSeconds?: number) => {
    try {
      const result = await evaluateModel(handle, options.evaluation, c.vocabSize, c.maxSeqLen,
        { context: options.context, stride: options.stride, reference });
      const row: CompareRow = packSeconds === undefined ? { name, result } : { name, result, packSeconds };
      rows.push(row);
      options.onRow?.(row);
    } finally {
      if (handle !== reference) handle.dispose();
    }
  };
  try {
    await evaluate('FP32', reference);
    for (const method of COMPARED_METHODS) {
      const calibrated = method.options.method !== 'rtn';
      const start = performance.now();
      const packed = await packModel(source, {
        ...method.options, groupSize: options.groupSize,
        ...(calibrated ? { calibration: options.calibration, ...(options.damp === undefined ? {} : { damp: options.damp }) } : {}),
      });
      const seconds = (performance.now() - start) / 1000;
      if (method.options.method === 'rtn') {
        await evaluate('W4A16-RTN', createReferenceNativeModel(dequantizedSource(packed, source, 'w4a16')), seconds);
      }
      await evaluate(method.name, createNativeModel(packed), seconds);
    }
  } finally {
    reference.dispose();
  }
  return rows;
}

/** The rows as a Markdown table (perplexity, KLD vs FP32, top-1 agreement, pack time). */
export function markdownTable(model: string, rows: CompareRow[]): string[] {
  const lines = [
    `| ${model} | perplexity | KLD vs FP32 | top-1 agreement | pack time |`,
    '| --- | ---: | ---: | ---: | ---: |',
  ];
  for (const r of rows) {
    const kld = r.name === 'FP32' ? '0' : `${r.result.kld!.toFixed(4)} ± ${r.result.kldStdErr!.toFixed(4)}`;
    const top1 = `${(r.result.top1! * 100).toFixed(2)}%`;
    const pack = r.packSeconds === undefined ? '' : `${r.packSeconds.toFixed(1)} s`;
    lines.push(`| ${r.name} | ${r.result.perplexity.toFixed(3)} | ${kld} | ${top1} | ${pack} |`);
  }
  return lines;
}
