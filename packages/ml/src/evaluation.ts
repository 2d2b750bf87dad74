// The evaluation stored with every model: what scikit-learn's classification_report and
// confusion_matrix give, plus top-k accuracy and the validation examples the model got wrong
// most confidently (the first ones to look at when a dataset has labelling mistakes).

export interface ClassReport {
  label: string;
  precision: number;
  recall: number;
  f1: number;
  support: number;
}

export interface ConfidentError {
  id: string;
  label: string;
  predicted: string;
  confidence: number;
}

export interface Evaluation {
  samples: number;
  accuracy: number;
  topK: number;
  topKAccuracy: number;
  macroF1: number;
  perClass: ClassReport[];
  /** confusionMatrix[actual][predicted], rows and columns in `labels` order. */
  confusionMatrix: number[][];
  labels: string[];
  mostConfidentErrors: ConfidentError[];
}

export interface EvaluationInput {
  /** N × C class probabilities, row-major. */
  probabilities: Float32Array;
  /** N true class ids. */
  targets: ArrayLike<number>;
  labels: string[];
  /** N sample ids (e.g. archive paths), reported for the confident errors. */
  ids: string[];
  topK: number;
  maxErrors?: number;
}

export function evaluateClassifier(input: EvaluationInput): Evaluation {
  const { probabilities, targets, labels, ids } = input;
  const classes = labels.length;
  const n = targets.length;
  if (probabilities.length !== n * classes) {
    throw new Error(`probabilities has ${probabilities.length} values; expected ${n} × ${classes}`);
  }
  const k = Math.min(input.topK, classes);
  const confusion = labels.map(() => new Array<number>(classes).fill(0));
  const errors: ConfidentError[] = [];
  let correct = 0;
  let topKCorrect = 0;

  for (let i = 0; i < n; i++) {
    const row = probabilities.subarray(i * classes, (i + 1) * classes);
    const actual = targets[i]!;
    let predicted = 0;
    for (let c = 1; c < classes; c++) if (row[c]! > row[predicted]!) predicted = c;
    confusion[actual]![predicted]! += 1;
    if (predicted === actual) correct++;
    // Rank of the true class = how many classes scored strictly higher.
    let higher = 0;
    for (let c = 0; c < classes; c++) if (row[c]! > row[actual]!) higher++;
    if (higher < k) topKCorrect++;
    if (predicted !== actual) {
      errors.push({ id: ids[i] ?? String(i), label: labels[actual]!, predicted: labels[predicted]!, confidence: row[predicted]! });
    }
  }

  const perClass = labels.map((label, c) => {
    const truePositives = confusion[c]![c]!;
    const support = confusion[c]!.reduce((a, b) => a + b, 0);
    const predictedAs = confusion.reduce((sum, row) => sum + row[c]!, 0);
    const precision = predictedAs === 0 ? 0 : truePositives / predictedAs;
    const recall = support === 0 ? 0 : truePositives / support;
    const f1 = precision + recall === 0 ? 0 : (2 * precision * recall) / (precision + recall);
    return { label, precision, recall, f1, support };
  });
  const present = perClass.filter((c) => c.support > 0);

  return {
    samples: n,
    accuracy: n === 0 ? 0 : correct / n,
    topK: k,
    topKAccuracy: n === 0 ? 0 : topKCorrect / n,
    macroF1: present.length === 0 ? 0 : present.reduce((a, c) => a + c.f1, 0) / present.length,
    perClass,
    confusionMatrix: confusion,
    labels,
    mostConfidentErrors: errors.sort((a, b) => b.confidence - a.confidence).slice(0, input.maxErrors ?? 10),
  };
}
