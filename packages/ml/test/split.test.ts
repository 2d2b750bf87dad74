import { describe, expect, it } from 'vitest';
import { heldOutSplit, stratifiedSplit } from '../src/split.ts';

describe('heldOutSplit', () => {
  // 3 classes: 20, 10 and 2 samples.
  const labels = [...Array.from({ length: 20 }, () => 0), ...Array.from({ length: 10 }, () => 1), 2, 2];

  it('draws stratified, disjoint val and test parts and keeps a training sample per class', () => {
    const { train, val, test } = heldOutSplit(labels, { val: 0.2, test: 0.3 }, 7);
    const count = (idx: number[], c: number) => idx.filter((i) => labels[i] === c).length;
    expect([count(val, 0), count(val, 1), count(val, 2)]).toEqual([4, 2, 0]);
    expect([count(test, 0), count(test, 1), count(test, 2)]).toEqual([6, 3, 1]);
    expect([count(train, 0), count(train, 1), count(train, 2)]).toEqual([10, 5, 1]);
    expect(new Set([...train, ...val, ...test]).size).toBe(labels.length);
    expect(train).toEqual([...train].sort((a, b) => a - b));
  });

  it('leaves the validation part as stratifiedSplit draws it, with or without a test part', () => {
    const plain = stratifiedSplit(labels, 0.25, 3);
    expect(heldOutSplit(labels, { val: 0.25, test: 0 }, 3)).toEqual({ ...plain, test: [] });
    expect(heldOutSplit(labels, { val: 0.25, test: 0.25 }, 3).val).toEqual(plain.val);
  });

  it('refuses fractions that leave nothing to train on', () => {
    expect(() => heldOutSplit(labels, { val: 0.5, test: 0.5 }, 1)).toThrow(/below 1/);
    expect(() => heldOutSplit(labels, { val: 0.2, test: -0.1 }, 1)).toThrow(/testFraction/);
  });
});
