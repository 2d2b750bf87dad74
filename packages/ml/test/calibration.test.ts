import { describe, expect, it } from 'vitest';
import {
  applyTemperature,
  calibrate,
  expectedCalibrationError,
  fitTemperature,
  logProbabilities,
  negativeLogLikelihood,
  TEMPERATURE_RANGE,
} from '../src/calibration.ts';
import { mulberry32 } from '../src/random.ts';

function softmaxRows(logits: number[], classes: number, scale = 1): Float32Array {
  const out = new Float32Array(logits.length);
  for (let i = 0; i < logits.length / classes; i++) {
    const row = logits.slice(i * classes, (i + 1) * classes).map((z) => z * scale);
    const max = Math.max(...row);
    const sum = row.reduce((s, z) => s + Math.exp(z - max), 0);
    row.forEach((z, c) => (out[i * classes + c] = Math.exp(z - max) / sum));
  }
  return out;
}

/**
 * Labels drawn from softmax(z) — so softmax(z) is calibrated by construction — and a model that
 * outputs softmax(sharpness × z): over-confident for sharpness > 1, under-confident below 1.
 */
function syntheticSet(n: number, classes: number, sharpness: number, seed: number) {
  const random = mulberry32(seed);
  const logits: number[] = [];
  const targets: number[] = [];
  for (let i = 0; i < n; i++) {
    const z = Array.from({ length: classes }, () => 2 * (random() + random() + random() - 1.5));
    const p = softmaxRows(z, classes);
    let u = random();
    let y = 0;
    while (y < classes - 1 && u >= p[y]!) u -= p[y++]!;
    logits.push(...z);
    targets.push(y);
  }
  return { probabilities: softmaxRows(logits, classes, sharpness), targets };
}

describe('expectedCalibrationError', () => {
  it('matches a hand computation', () => {
    // Bin (0.9, 1]: confidences 0.95, 0.95, one right → |0.5 − 0.95| × 2/4 = 0.225.
    // Bin (0.6, 0.7]: confidences 0.62, 0.68, one right → |0.5 − 0.65| × 2/4 = 0.075.
    const probabilities = Float64Array.from([0.95, 0.05, 0.05, 0.95, 0.62, 0.38, 0.32, 0.68]);
    const targets = [0, 0, 0, 0];
    const report = expectedCalibrationError(probabilities, targets, 2, 10);
    expect(report.ece).toBeCloseTo(0.3, 12);
    expect(report.samples).toBe(4);
    expect(report.bins).toHaveLength(2);
    expect(report.bins[0]).toMatchObject({ count: 2, accuracy: 0.5 });
    expect(report.bins[0]!.lower).toBeCloseTo(0.6);
    expect(report.bins[0]!.confidence).toBeCloseTo(0.65, 12);
    expect(report.bins[1]!.upper).toBe(1);
    expect(report.bins[1]!.confidence).toBeCloseTo(0.95, 12);
  });

  it('is 0 when confidence equals accuracy in every bin, and refuses mismatched sizes', () => {
    // Four samples at confidence 0.75, three right.
    const probabilities = Float64Array.from([0.75, 0.25, 0.75, 0.25, 0.75, 0.25, 0.75, 0.25]);
    expect(expectedCalibrationError(probabilities, [0, 0, 0, 1], 2).ece).toBeCloseTo(0, 12);
    expect(() => expectedCalibrationError(probabilities, [0, 0, 0], 2)).toThrow(/expected 3 × 2/);
  });
});

describe('temperature scaling', () => {
  it('fits T > 1 to an over-confident model and lowers its NLL and ECE', () => {
    const classes = 4;
    const validation = syntheticSet(3000, classes, 3, 1);
    const temperature = fitTemperature(logProbabilities(validation.probabilities), validation.targets, classes);
    // The model sharpened calibrated logits 3×: the fit should undo about that much.
    expect(temperature).toBeGreaterThan(2.5);
    expect(temperature).toBeLessThan(3.5);

    const test = syntheticSet(3000, classes, 3, 2);
    const report = calibrate(classes, validation, test)!;
    expect(report.temperature).toBe(temperature);
    expect(report).toMatchObject({ fittedOn: 'validation', fitSamples: 3000, measuredOn: 'test', samples: 3000 });
    expect(report.nllAfter).toBeLessThan(report.nllBefore);
    expect(report.eceAfter).toBeLessThan(report.eceBefore / 3);
    expect(report.eceBefore).toBeGreaterThan(0.1);
    expect(report.bins.reduce((n, b) => n + b.count, 0)).toBe(3000);
  });

  it('fits T < 1 to an under-confident model', () => {
    const classes = 3;
    const validation = syntheticSet(3000, classes, 0.4, 3);
    const temperature = fitTemperature(logProbabilities(validation.probabilities), validation.targets, classes);
    expect(temperature).toBeGreaterThan(0.3);
    expect(temperature).toBeLessThan(0.5);
    const logits = logProbabilities(validation.probabilities);
    expect(negativeLogLikelihood(logits, validation.targets, classes, temperature)).toBeLessThan(negativeLogLikelihood(logits, validation.targets, classes, 1));
  });

  it('keeps the argmax, leaves T = 1 untouched, and stays in range on separable data', () => {
    const probabilities = Float32Array.from([0.7, 0.2, 0.1, 0.1, 0.3, 0.6]);
    expect(applyTemperature(probabilities, 3, 1)).toBe(probabilities);
    const softer = applyTemperature(probabilities, 3, 2);
    expect(softer[0]).toBeLessThan(0.7);
    expect(softer[0]! + softer[1]! + softer[2]!).toBeCloseTo(1, 6);
    expect(softer[0]).toBeGreaterThan(softer[1]!);
    expect(softer[5]).toBeGreaterThan(softer[4]!);
    // softmax(log p / 2) = √p normalised.
    const root = [0.7, 0.2, 0.1].map(Math.sqrt);
    expect(softer[1]).toBeCloseTo(root[1]! / (root[0]! + root[1]! + root[2]!), 6);

    // Every validation image right: the NLL alone keeps falling as T → 0 (every score → 1.0);
    // the prior on log T stops a few images from getting there.
    const separable = Float32Array.from([0.9, 0.1, 0.2, 0.8, 0.7, 0.3]);
    const logits = logProbabilities(separable);
    expect(negativeLogLikelihood(logits, [0, 1, 0], 2, TEMPERATURE_RANGE.min)).toBeLessThan(negativeLogLikelihood(logits, [0, 1, 0], 2, 0.5));
    const t = fitTemperature(logits, [0, 1, 0], 2);
    expect(t).toBeLessThan(1);
    expect(t).toBeGreaterThan(0.3);
    expect(calibrate(2, null)).toBeNull();
  });
});
