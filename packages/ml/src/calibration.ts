// Calibration: does a score of 0.9 mean "right 9 times in 10"? Expected calibration error measures
// it on held-out data; temperature scaling (Guo et al., "On Calibration of Modern Neural Networks",
// 2017) fixes most of it with one number fitted on the validation split: the model's logits are
// divided by T before the softmax. T > 1 softens an over-confident model, T < 1 sharpens an
// under-confident one; the argmax — and so accuracy — never changes.
//
// Every head here ends in a softmax, so the log of its probabilities is its logits up to a constant
// per row, which the softmax cancels: softmax(log p / T) = softmax(z / T). Calibration therefore
// works on the probabilities the evaluation already has, with no second pass over the images.

/** Temperatures the search may pick. */
export const TEMPERATURE_RANGE = { min: 0.05, max: 20 } as const;
/**
 * Standard deviation of the Gaussian prior on log T the fit maximises the posterior under. Without
 * one, a validation split the model gets entirely right pushes the NLL optimum to T → 0: every
 * later score becomes 1.0, which a handful of images cannot justify. The prior's weight is that of
 * one image against the whole split's NLL, so a large validation split barely feels it, while a
 * small or error-free one keeps T near 1.
 */
export const LOG_TEMPERATURE_PRIOR_SD = 1;
/** Guo et al.'s bin count for ECE. */
export const ECE_BINS = 15;
/** Probabilities that underflowed to 0 in float32 get this floor before the log. */
const PROBABILITY_FLOOR = 1e-45;

export interface ReliabilityBin {
  /** Confidence interval (lower, upper] of the bin. */
  lower: number;
  upper: number;
  count: number;
  /** Mean top-class probability of the samples in the bin. */
  confidence: number;
  /** Fraction of them classified correctly. */
  accuracy: number;
}

export interface CalibrationError {
  /** Σ over bins of |bin| / n × |accuracy − confidence|; 0 is perfectly calibrated. */
  ece: number;
  samples: number;
  /** The non-empty bins (a reliability diagram). */
  bins: ReliabilityBin[];
}

/**
 * Expected calibration error of N × C class probabilities (row-major) against true class ids, over
 * `bins` equal-width confidence bins, each (lower, upper] (a confidence of exactly 0 counts in the
 * first). Confidence is the top probability, correctness whether that class is the true one; ties
 * go to the lowest class id, as the evaluation's argmax does.
 */
export function expectedCalibrationError(probabilities: ArrayLike<number>, targets: ArrayLike<number>, classes: number, bins = ECE_BINS): CalibrationError {
  const n = targets.length;
  if (probabilities.length !== n * classes) throw new Error(`probabilities has ${probabilities.length} values; expected ${n} × ${classes}`);
  if (!(Number.isInteger(bins) && bins >= 1)) throw new Error(`bins must be a positive integer, got ${bins}`);
  const count = new Array<number>(bins).fill(0);
  const confidenceSum = new Array<number>(bins).fill(0);
  const correctSum = new Array<number>(bins).fill(0);
  for (let i = 0; i < n; i++) {
    let top = 0;
    for (let c = 1; c < classes; c++) if (probabilities[i * classes + c]! > probabilities[i * classes + top]!) top = c;
    const confidence = probabilities[i * classes + top]!;
    const bin = Math.min(bins - 1, Math.max(0, Math.ceil(confidence * bins) - 1));
    count[bin]! += 1;
    confidenceSum[bin]! += confidence;
    if (top === targets[i]) correctSum[bin]! += 1;
  }
  let ece = 0;
  const out: ReliabilityBin[] = [];
  for (let b = 0; b < bins; b++) {
    if (count[b] === 0) continue;
    const confidence = confidenceSum[b]! / count[b]!;
    const accuracy = correctSum[b]! / count[b]!;
    ece += (count[b]! / n) * Math.abs(accuracy - confidence);
    out.push({ lower: b / bins, upper: (b + 1) / bins, count: count[b]!, confidence, accuracy });
  }
  return { ece, samples: n, bins: out };
}

/** Row-wise log of probabilities: the logits up to a per-row constant (see the top of the file). */
export function logProbabilities(probabilities: ArrayLike<number>): Float64Array {
  return Float64Array.from(probabilities, (p) => Math.log(Math.max(p, PROBABILITY_FLOOR)));
}

/** softmax(logits / T), row by row, written into `out`. */
function scaledSoftmax(logits: ArrayLike<number>, classes: number, temperature: number, out: Float32Array | Float64Array): void {
  const rows = logits.length / classes;
  for (let i = 0; i < rows; i++) {
    let max = -Infinity;
    for (let c = 0; c < classes; c++) max = Math.max(max, logits[i * classes + c]! / temperature);
    let sum = 0;
    for (let c = 0; c < classes; c++) sum += Math.exp(logits[i * classes + c]! / temperature - max);
    for (let c = 0; c < classes; c++) out[i * classes + c] = Math.exp(logits[i * classes + c]! / temperature - max) / sum;
  }
}

/**
 * Temperature-scaled probabilities: softmax(log p / T) per row of N × C probabilities. T = 1
 * returns the input unchanged (the same array), so uncalibrated models score exactly as before.
 */
export function applyTemperature<T extends Float32Array | Float64Array>(probabilities: T, classes: number, temperature: number): T {
  if (temperature === 1) return probabilities;
  if (!(temperature > 0 && Number.isFinite(temperature))) throw new Error(`temperature must be a positive number, got ${temperature}`);
  const out = (probabilities instanceof Float32Array ? new Float32Array(probabilities.length) : new Float64Array(probabilities.length)) as T;
  scaledSoftmax(logProbabilities(probabilities), classes, temperature, out);
  return out;
}

/** Mean negative log-likelihood of the true classes under softmax(logits / T). */
export function negativeLogLikelihood(logits: ArrayLike<number>, targets: ArrayLike<number>, classes: number, temperature: number): number {
  const n = targets.length;
  if (n === 0) return 0;
  let total = 0;
  for (let i = 0; i < n; i++) {
    let max = -Infinity;
    for (let c = 0; c < classes; c++) max = Math.max(max, logits[i * classes + c]! / temperature);
    let sum = 0;
    for (let c = 0; c < classes; c++) sum += Math.exp(logits[i * classes + c]! / temperature - max);
    total += max + Math.log(sum) - logits[i * classes + targets[i]!]! / temperature;
  }
  return total / n;
}

/**
 * The temperature minimising the validation NLL plus the prior on log T (see
 * LOG_TEMPERATURE_PRIOR_SD), per image. The NLL is convex in 1/T (so unimodal in log T) and the
 * prior is convex in log T, with the minimum between the NLL's and T = 1; a golden-section search
 * over log T within TEMPERATURE_RANGE finds it to ~1e-9 in 60 steps: no gradient, no step size to
 * tune, deterministic.
 */
export function fitTemperature(logits: ArrayLike<number>, targets: ArrayLike<number>, classes: number): number {
  const n = targets.length;
  if (n === 0) return 1;
  const prior = 1 / (2 * LOG_TEMPERATURE_PRIOR_SD ** 2 * n);
  const nll = (logT: number) => negativeLogLikelihood(logits, targets, classes, Math.exp(logT)) + prior * logT * logT;
  const ratio = (Math.sqrt(5) - 1) / 2;
  let lo = Math.log(TEMPERATURE_RANGE.min);
  let hi = Math.log(TEMPERATURE_RANGE.max);
  let a = hi - ratio * (hi - lo);
  let b = lo + ratio * (hi - lo);
  let fa = nll(a);
  let fb = nll(b);
  for (let step = 0; step < 60; step++) {
    if (fa <= fb) {
      hi = b;
      b = a;
      fb = fa;
      a = hi - ratio * (hi - lo);
      fa = nll(a);
    } else {
      lo = a;
      a = b;
      fa = fb;
      b = lo + ratio * (hi - lo);
      fb = nll(b);
    }
  }
  const best = Math.exp((lo + hi) / 2);
  // The search only narrows in on a minimum; never return a temperature that does worse than none.
  return nll(Math.log(best)) <= nll(0) ? best : 1;
}

export interface CalibrationReport {
  /** Divide the logits by this before the softmax (1: no change). */
  temperature: number;
  fittedOn: 'validation';
  /** Validation images the temperature was fitted on. */
  fitSamples: number;
  /** Where the ECE, NLL and bins were measured: the test split when there is one (an
   * unbiased figure), else the validation split the temperature was fitted on (optimistic). */
  measuredOn: 'test' | 'validation';
  samples: number;
  eceBefore: number;
  eceAfter: number;
  nllBefore: number;
  nllAfter: number;
  /** Reliability diagram after scaling, on `measuredOn`. */
  bins: ReliabilityBin[];
}

export interface HeldOutProbabilities {
  /** N × C softmax outputs, row-major. */
  probabilities: Float32Array;
  targets: ArrayLike<number>;
}

/**
 * Fits a temperature on the validation split and measures calibration before and after on the test
 * split when there is one (else on validation). Null without validation data to fit on.
 */
export function calibrate(classes: number, validation: HeldOutProbabilities | null, test: HeldOutProbabilities | null = null): CalibrationReport | null {
  if (!validation || validation.targets.length === 0) return null;
  const temperature = fitTemperature(logProbabilities(validation.probabilities), validation.targets, classes);
  const measured = test && test.targets.length > 0 ? test : validation;
  const logits = logProbabilities(measured.probabilities);
  const after = expectedCalibrationError(applyTemperature(measured.probabilities, classes, temperature), measured.targets, classes);
  return {
    temperature,
    fittedOn: 'validation',
    fitSamples: validation.targets.length,
    measuredOn: measured === validation ? 'validation' : 'test',
    samples: measured.targets.length,
    eceBefore: expectedCalibrationError(measured.probabilities, measured.targets, classes).ece,
    eceAfter: after.ece,
    nllBefore: negativeLogLikelihood(logits, measured.targets, classes, 1),
    nllAfter: negativeLogLikelihood(logits, measured.targets, classes, temperature),
    bins: after.bins,
  };
}
