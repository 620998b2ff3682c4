/**
 * The one seeded generator of the project (mulberry32): the sampler, sampled calibration tokens, the
 * synthetic model and the demo all draw from it, so a seed means the same stream everywhere.
 */

/** Seeded 32-bit generator: each call gives the next uint32. */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

/** Seeded uniform [0, 1). */
export function seededRandom(seed: number): () => number {
  const next = mulberry32(seed);
  return () => next() / 4294967296;
}

/** `count` seeded normal samples times `std` (Box-Muller over uniforms in (0, 1), so log() never sees 0). */
export function seededNormals(count: number, seed: number, std = 1): Float32Array {
  const next = mulberry32(seed);
  const uniform = () => (next() + 0.5) / 4294967296;
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = std * Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
  return out;
}
