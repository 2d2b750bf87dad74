import { mulberry32 } from './random.ts';

/**
 * Deterministic stratified train/val split for flat datasets (which arrive without a val set):
 * within each class, a seeded shuffle, then round(n × valFraction) samples go to val — but a
 * class always keeps at least one training sample, and gets a val sample only if it has ≥ 2.
 * Returns sample indices, each list in ascending order.
 */
export function stratifiedSplit(labels: ArrayLike<number>, valFraction: number, seed: number): { train: number[]; val: number[] } {
  if (!(valFraction >= 0 && valFraction < 1)) throw new Error(`valFraction must be in [0, 1), got ${valFraction}`);
  const byClass = new Map<number, number[]>();
  for (let i = 0; i < labels.length; i++) {
    const c = labels[i]!;
    let list = byClass.get(c);
    if (!list) byClass.set(c, (list = []));
    list.push(i);
  }
  const random = mulberry32(seed);
  const train: number[] = [];
  const val: number[] = [];
  for (const c of [...byClass.keys()].sort((a, b) => a - b)) {
    const idx = byClass.get(c)!;
    for (let i = idx.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [idx[i], idx[j]] = [idx[j]!, idx[i]!];
    }
    const nVal = Math.min(Math.round(idx.length * valFraction), idx.length - 1);
    val.push(...idx.slice(0, nVal));
    train.push(...idx.slice(nVal));
  }
  return { train: train.sort((a, b) => a - b), val: val.sort((a, b) => a - b) };
}
