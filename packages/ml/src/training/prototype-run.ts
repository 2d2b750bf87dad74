// The `prototype` strategy: no loop, one "epoch" that computes the class means. Its training
// state only says "done": the prototypes are a deterministic function of the data, so a resume
// recomputes them.
import { tf } from '../backend.ts';
import { serializeModel } from '../export.ts';
import { runFrozen } from './batches.ts';
import { buildPrototypeHead, classPrototypes } from './prototype.ts';
import type { FeatureMemo } from './stage.ts';
import type { LayerGraph } from './surgery.ts';
import { encodeTrainingState, type RunDescription, type TrainingState } from './training-state.ts';
import type { EpochReport, LabelledImages, TrainClassifierOptions, TrainClassifierResult } from './types.ts';
import { composeClassifier } from './weights.ts';

export async function prototypeRun(
  opts: TrainClassifierOptions,
  p: { graph: LayerGraph; dim: number; val: LabelledImages | null; memo: FeatureMemo; pixels: () => Promise<void>; run: RunDescription; resume: TrainingState | null },
): Promise<TrainClassifierResult> {
  const { graph, dim, val, memo } = p;
  const t0 = performance.now();
  const numClasses = opts.labels.length;
  const size = opts.inputSize;
  const base = opts.base.model;
  const embed = (split: LabelledImages) => async () => {
    await p.pixels();
    return runFrozen(base, split.images, size, dim, 32);
  };
  const trainX = await memo('train', graph.outputName, embed(opts.train));
  const head = buildPrototypeHead(classPrototypes(trainX, opts.train.labels, numClasses, dim), numClasses, dim);
  try {
    const model = () => composeClassifier(graph, head, new Map());
    if (p.resume) return { model: model(), bestEpoch: 1, epochsRun: 1, stopped: false, stoppedEarly: false, trainableLayers: [], history: p.resume.history };

    const score = async (x: Float32Array, y: Int32Array) => {
      const [l, c] = tf.tidy(() => {
        const probs = head.predict(tf.tensor2d(x, [y.length, dim])) as tf.Tensor;
        const labels = tf.tensor1d(y, 'int32');
        const loss = tf.metrics.categoricalCrossentropy(tf.oneHot(labels, numClasses), probs).mean();
        return [loss, tf.sum(tf.equal(tf.argMax(probs, -1), labels))];
      });
      const [lv, cv] = await Promise.all([l!.data(), c!.data()]);
      tf.dispose([l!, c!]);
      return { loss: lv[0]!, acc: cv[0]! / y.length };
    };
    const tr = await score(trainX, opts.train.labels);
    const v = val ? await score(await memo('val', graph.outputName, embed(val)), val.labels) : null;
    const report: EpochReport = {
      epoch: 1,
      trainLoss: tr.loss,
      trainAcc: tr.acc,
      valLoss: v?.loss ?? null,
      valAcc: v?.acc ?? null,
      learningRate: 0,
      baseLearningRate: null,
      durationMs: performance.now() - t0,
      isBest: true,
      trainableLayers: [],
    };
    await opts.onEpochEnd?.({
      ...report,
      checkpoint: async () => ({ ...(await serializeModel(head, { metadata: { cutLayer: graph.outputName, labels: opts.labels } })), cutLayer: graph.outputName }),
      state: async () =>
        encodeTrainingState({
          run: p.run,
          epoch: 1,
          stage: 0,
          stageEpoch: 1,
          stageDone: true,
          stoppedEarly: false,
          earlyStopping: { best: null, wait: 0 },
          random: { shuffle: 0, augment: 0, dropout: 0 }, // nothing random here
          everTrained: [],
          best: { epoch: 1, acc: v?.acc ?? tr.acc, loss: v?.loss ?? tr.loss },
          history: [report],
          head: new Map(),
          trained: new Map(),
          bestWeights: new Map(),
          optimizers: null,
        }),
    });
    return { model: model(), bestEpoch: 1, epochsRun: 1, stopped: false, stoppedEarly: false, trainableLayers: [], history: [report] };
  } finally {
    head.dispose();
  }
}
