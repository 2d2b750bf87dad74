import { applyTemperature, calibrate, evaluateClassifier, type CalibrationReport, type Evaluation } from '@finetune/ml';

/** A held-out split's model outputs: N × C softmax probabilities, with true classes and ids. */
export interface HeldOutOutputs {
  probabilities: Float32Array;
  targets: ArrayLike<number>;
  /** Archive paths, named in the evaluation's most confident errors. */
  ids: string[];
}

export interface HeldOutReport {
  /** On the validation split — the one early stopping and the best epoch were chosen on. */
  evaluation: Evaluation | null;
  /** On the test split, which no choice saw. */
  testEvaluation: Evaluation | null;
  /** Why `evaluation` is null: never a silent fallback to the training images. */
  evaluationNote: string | null;
  /** Temperature scaling fitted on validation (measured on test when there is one). */
  calibration: CalibrationReport | null;
}

export const NO_VALIDATION_NOTE =
  'no validation data: validationSplit is 0 and the archive has no val/ folder, so the best epoch was chosen on training accuracy ' +
  'and nothing was there to calibrate with. The model is not evaluated on its training images; testEvaluation reports the test split when there is one.';

/**
 * The model's reports on its held-out splits: a temperature fitted on the validation outputs,
 * then the evaluation of each split on the calibrated scores (so the confidences it lists are the
 * ones /predict serves; accuracy and the confusion matrix do not change with the temperature).
 */
export function heldOutReport(labels: string[], topK: number, validation: HeldOutOutputs | null, test: HeldOutOutputs | null): HeldOutReport {
  const classes = labels.length;
  const calibration = calibrate(classes, validation, test);
  const temperature = calibration?.temperature ?? 1;
  const evaluate = (split: HeldOutOutputs) =>
    evaluateClassifier({ probabilities: applyTemperature(split.probabilities, classes, temperature), targets: split.targets, labels, ids: split.ids, topK });
  return {
    evaluation: validation ? evaluate(validation) : null,
    testEvaluation: test ? evaluate(test) : null,
    evaluationNote: validation ? null : NO_VALIDATION_NOTE,
    calibration,
  };
}

/** The split a comparison (the scratch baseline's transfer gain) is measured on: test when there is one. */
export function comparisonSplit<T>(splits: { val: T | null; test: T | null }): { split: 'test' | 'validation'; data: T } | null {
  if (splits.test) return { split: 'test', data: splits.test };
  if (splits.val) return { split: 'validation', data: splits.val };
  return null;
}
