// addon.prepareInt4Tables (native/kernels/int4_tables.h): the same W4A8 outputs with the prepared group tables
// as without, bit for bit, on every group size and format, and the misuse paths (tables of other arrays,
// a value that is not tables) rejected with typed errors.
import { describe, expect, it } from 'vitest';
import { Int4Weights, type GroupSize } from '../lib/index.js';
import { native, type NativeInt4Weights } from '../lib/native.js';
import { FORMATS } from './oracle/fp8-oracle.js';
import { randomArray } from './helpers.js';

function plain(w: Int4Weights): NativeInt4Weights {
  return { rows: w.rows, cols: w.cols, groupSize: w.groupSize, format: w.format, codes: w.codes, groupScales: w.groupScales,
    zeros: w.zeros, channelScales: w.channelScales };
}

describe('prepared INT4 group tables', () => {
  for (const format of FORMATS)
    for (const G of [32, 64, 128] as GroupSize[])
      it(`give the same outputs bit for bit (${format}, G = ${G}, M = 1 and 3, odd N and group counts)`, () => {
        const seed = 40 + G + format.length;
        const N = 9, K = G * 3;
        const w = plain(Int4Weights.pack(randomArray(N * K, seed, 0.3), N, K, { groupSize: G, format }));
        const tables = native().prepareInt4Tables(w);
        expect(tables).toBeDefined();
        for (const M of [1, 3]) {
          const x = randomArray(M * K, seed + M, 2);
          const without = native().gemmW4A8(x, M, w, 'e4m3fn', undefined, new Float32Array(M * N));
          const withTables = native().gemmW4A8(x, M, { ...w, tables }, 'e4m3fn', undefined, new Float32Array(M * N));
          expect(new Uint32Array(withTables.buffer)).toEqual(new Uint32Array(without.buffer));
        }
      });

  it('are refused for other arrays and when they are not tables', () => {
    const w = plain(Int4Weights.pack(randomArray(4 * 128, 5, 0.3), 4, 128, { groupSize: 128 }));
    const tables = native().prepareInt4Tables(w);
    const copy = { ...w, zeros: w.zeros.slice(), tables };
    const x = randomArray(128, 6, 1);
    expect(() => native().gemmW4A8(x, 1, copy, 'e4m3fn', undefined, new Float32Array(4)))
      .toThrow(expect.objectContaining({ code: 'E_SHAPE', message: expect.stringMatching(/tables were prepared from other arrays/) }));
    const notTables = { ...w, tables: {} as never };
    expect(() => native().gemmW4A8(x, 1, notTables, 'e4m3fn', undefined, new Float32Array(4)))
      .toThrow(expect.objectContaining({ code: 'E_TYPE', message: expect.stringMatching(/must come from prepareInt4Tables/) }));
  });
});
