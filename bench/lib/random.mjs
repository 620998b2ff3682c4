// Seeded random fills for benchmark weights. A 1 MiB block from xorshift32 is repeated over large arrays:
// gigabytes of weights cost no generation time, and the engines' speed does not depend on the values (all
// finite, no NaN, no FP32 denormals).

export function xorshiftWords(seed, count) {
  const words = new Uint32Array(count);
  let s = (Math.imul(seed, 2654435761) >>> 0) || 1;
  for (let i = 0; i < count; i++) {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    words[i] = s;
  }
  return words;
}

/** Fills `array` with repeats of `block` (same element type). */
export function repeatFill(array, block) {
  const n = Math.min(array.length, block.length);
  array.set(block.subarray(0, n));
  for (let filled = n; filled < array.length; filled *= 2) array.copyWithin(filled, 0, Math.min(filled, array.length - filled));
  return array;
}

export const BLOCK_WORDS = 1 << 18;

export function randomBytes(length, seed, map) {
  const block = new Uint8Array(xorshiftWords(seed, BLOCK_WORDS).buffer);
  if (map) for (let i = 0; i < block.length; i++) block[i] = map(block[i]);
  return repeatFill(new Uint8Array(length), block);
}

/** Float32 values uniform in [lo, hi). */
export function randomFloats(length, seed, lo, hi) {
  const bits = xorshiftWords(seed, Math.min(length, BLOCK_WORDS));
  const block = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) block[i] = lo + (hi - lo) * ((bits[i] >>> 8) / 16777216);
  return repeatFill(new Float32Array(length), block);
}

/** Token ids uniform in [lo, hi), seeded: the prompts both engines are fed. */
export function randomTokenIds(count, seed, lo, hi) {
  const words = xorshiftWords(seed + 7919, count);
  return Array.from(words, (w) => lo + (w % (hi - lo)));
}
