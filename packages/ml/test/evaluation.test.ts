import { describe, expect, it } from 'vitest';
import { evaluateClassifier } from '../src/evaluation.ts';

describe('evaluateClassifier', () => {
  // 3 classes, 6 samples. Predictions (argmax): a→a, a→b, b→b, b→b, c→a, c→c.
  const probabilities = Float32Array.from([
    0.8, 0.1, 0.1,
    0.3, 0.6, 0.1,
    0.1, 0.7, 0.2,
    0.2, 0.5, 0.3,
    0.9, 0.07, 0.03,
    0.1, 0.2, 0.7,
  ]);
  const targets = [0, 0, 1, 1, 2, 2];
  const ids = ['a1', 'a2', 'b1', 'b2', 'c1', 'c2'];
  const report = evaluateClassifier({ probabilities, targets, labels: ['a', 'b', 'c'], ids, topK: 2 });

  it('computes accuracy, the confusion matrix and per-class precision/recall/F1/support', () => {
    expect(report.accuracy).toBeCloseTo(4 / 6);
    expect(report.confusionMatrix).toEqual([
      [1, 1, 0],
      [0, 2, 0],
      [1, 0, 1],
    ]);
    const [a, b, c] = report.perClass;
    expect(a).toMatchObject({ label: 'a', precision: 0.5, recall: 0.5, support: 2 });
    expect(b!.precision).toBeCloseTo(2 / 3);
    expect(b!.recall).toBe(1);
    expect(b!.f1).toBeCloseTo(0.8);
    expect(c).toMatchObject({ precision: 1, recall: 0.5, support: 2 });
    expect(report.macroF1).toBeCloseTo((0.5 + 0.8 + 2 / 3) / 3);
  });

  it('counts top-k hits by the rank of the true class', () => {
    // Top-2 misses only c1: its true class c scores lowest of the three.
    expect(report.topK).toBe(2);
    expect(report.topKAccuracy).toBeCloseTo(5 / 6);
  });

  it('lists the most confident errors first, with ids', () => {
    expect(report.mostConfidentErrors).toEqual([
      { id: 'c1', label: 'c', predicted: 'a', confidence: expect.closeTo(0.9, 5) },
      { id: 'a2', label: 'a', predicted: 'b', confidence: expect.closeTo(0.6, 5) },
    ]);
  });

  it('rejects probabilities of the wrong shape', () => {
    expect(() => evaluateClassifier({ probabilities: new Float32Array(5), targets, labels: ['a', 'b', 'c'], ids, topK: 1 })).toThrow(/expected 6 × 3/);
  });
});
