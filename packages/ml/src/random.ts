/** A seeded stream of floats in [0, 1) whose whole state is one uint32. */
export interface Random {
  (): number;
  /** The uint32 this stream continues from: `mulberry32(r.state())` draws what `r` would draw
   * next, so a stream can be saved and resumed in another process. */
  state(): number;
}

/** Seeded PRNG (mulberry32): uint32 state → floats in [0, 1). Small, fast, well distributed;
 * everything a seed must make reproducible (splits, shuffles, dropout, augmentation) uses it.
 * The state is itself a seed, which is what makes `state()` enough to resume a stream. */
export function mulberry32(seed: number): Random {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return Object.assign(next, { state: () => a });
}
