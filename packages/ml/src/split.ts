import { mulberry32 } from './random.ts';

/**
 * Deterministic stratified train/val split for flat datasets (which arrive without a val set):
 * within each class, a seeded shuffle, then round(n × valFraction) samples go to val — but a
 * class always keeps at least one training sample, and gets a val sample only if it has ≥ 2.
 * Returns sample indices, each list in ascending order.
 */
export function stratifiedSplit(labels: ArrayLike<number>, valFraction: number, seed: number): { train: number[]; val: number[] } {
  const { train, val } = heldOutSplit(labels, { val: valFraction, test: 0 }, seed);
  return { train, val };
}

/**
 * The same stratified, seeded split with a test part as well. Within each class, after the seeded
 * shuffle, the first round(n × val) samples go to val and the next round(n × test) to test; a
 * class always keeps at least one training sample (val is served first). The validation part
 * depends on the val fraction and seed only, so with `test: 0` it is exactly `stratifiedSplit` and
 * a job that adds a test split keeps the validation set it had.
 */
export function heldOutSplit(
  labels: ArrayLike<number>,
  fractions: { val: number; test: number },
  seed: number,
): { train: number[]; val: number[]; test: number[] } {
  const { val: valFraction, test: testFraction } = fractions;
  if (!(valFraction >= 0 && valFraction < 1)) throw new Error(`valFraction must be in [0, 1), got ${valFraction}`);
  if (!(testFraction >= 0 && testFraction < 1)) throw new Error(`testFraction must be in [0, 1), got ${testFraction}`);
  if (!(valFraction + testFraction < 1)) throw new Error(`valFraction + testFraction must be below 1, got ${valFraction + testFraction}`);
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
  const test: number[] = [];
  for (const c of [...byClass.keys()].sort((a, b) => a - b)) {
    const idx = byClass.get(c)!;
    for (let i = idx.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [idx[i], idx[j]] = [idx[j]!, idx[i]!];
    }
    const nVal = Math.min(Math.round(idx.length * valFraction), idx.length - 1);
    const nTest = Math.min(Math.round(idx.length * testFraction), idx.length - 1 - nVal);
    val.push(...idx.slice(0, nVal));
    test.push(...idx.slice(nVal, nVal + nTest));
    train.push(...idx.slice(nVal + nTest));
  }
  const ascending = (a: number, b: number) => a - b;
  return { train: train.sort(ascending), val: val.sort(ascending), test: test.sort(ascending) };
}
