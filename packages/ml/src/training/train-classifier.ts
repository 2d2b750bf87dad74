// The transfer-learning engine: one entry point for every strategy.
//
// The base is split at a cut (surgery.ts) into a frozen bottom and a trainable top:
//   image ─ bottom (frozen, inference mode) ─► cut features ─ top (copies, train) ─► embedding ─ head ─► probabilities
// The bottom's outputs are computed once per split and cached (the caller can memoise them
// across jobs via `frozenFeatures`), unless augmentation is on, in which case the bottom runs
// per batch on augmented images. The top always runs with training=false: tfjs-layers'
// BatchNormalization would otherwise use batch statistics and move its averages even when
// frozen (STACK.md), so BN trains gamma/beta only and its moving statistics never change — the
// Keras fine-tuning recipe. Only `scratch` runs BN in training mode (nothing to preserve). Only
// the head's Dropout is ever in training mode.
//
// Strategies → cuts: feature_extraction: above the whole base; fine_tune: `unfreeze` moved to a
// block boundary; progressive_unfreezing: one cut per stage, moving down; full / scratch: below
// the input (everything trains; scratch from seeded random weights); prototype: no loop.
import { DomainError, type Hyperparameters, type Strategy, type Unfreeze } from '@finetune/core';
import { tf } from '../backend.ts';
import { mulberry32 } from '../random.ts';
import { serializeModel, type SerializedModel } from '../export.ts';
import type { BaseModel } from '../zoo.ts';
import { augmentationEnabled, augmentBatch } from './augment.ts';
import { buildClassifierHead, classificationLoss, classWeightVector, headLogits, l2Penalty } from './head.ts';
import { applyDecoupledWeightDecay, disposeOptimizer, makeOptimizer, setLearningRate } from './optimizers.ts';
import { buildPrototypeHead, classPrototypes } from './prototype.ts';
import { DEFAULT_STAGE_FRACTIONS, defaultStageEpochs, learningRateForEpoch } from './schedule.ts';
import {
  applyCopies,
  frozenCut,
  hashSeed,
  initialWeights,
  inputCut,
  layerGraph,
  rebuild,
  resolveUnfreeze,
  tensorShape,
  validCuts,
  type Cut,
  type LayerGraph,
} from './surgery.ts';

export interface LabelledImages {
  /** Each image RGB uint8 (0..255), inputSize × inputSize × 3, row-major HWC. */
  images: Uint8Array[];
  labels: Int32Array;
}

export interface EpochReport {
  /** 1-based, global across stages. */
  epoch: number;
  /** 1-based stage (progressive_unfreezing only). */
  stage?: number;
  /** Mean optimised loss over the epoch's batches (class weights, label smoothing, l2 included). */
  trainLoss: number;
  trainAcc: number;
  /** Plain cross-entropy on the validation set (no smoothing, no weights); null without one. */
  valLoss: number | null;
  valAcc: number | null;
  /** The head's learning rate this epoch. */
  learningRate: number;
  /** The base layers' rate this epoch (learningRate × baseLearningRateMultiplier); null when no base layer trains. */
  baseLearningRate: number | null;
  durationMs: number;
  isBest: boolean;
  /** Base layers (with weights) that trained this epoch. */
  trainableLayers: string[];
}

export interface CheckpointData extends SerializedModel {
  /** The cut the checkpoint starts at: its model takes that layer's output (or the image). */
  cutLayer: string;
}

export interface EpochEvent extends EpochReport {
  /** Serialises the current trainable part (unfrozen top + head, this epoch's weights) as a
   * standard layers model: cut features → probabilities. Valid only during the callback. */
  checkpoint: () => Promise<CheckpointData>;
}

export interface TrainClassifierOptions {
  strategy: Strategy;
  /** image → embedding: a zoo base or baseFromTrainedModel(...). Never modified or disposed. */
  base: BaseModel;
  inputSize: number;
  train: LabelledImages;
  val: LabelledImages | null;
  /** Class names; class id i is labels[i]. */
  labels: string[];
  hyperparameters: Hyperparameters;
  /**
   * Memo for frozen-part outputs (N × prod(cut shape) float32, in image order). `cut` is the
   * layer whose output is cached (the base's output layer for feature_extraction/prototype).
   * The key says nothing about the base model, the dataset or the split: the caller adds those.
   */
  frozenFeatures?: (key: { cut: string; split: 'train' | 'val' }, compute: () => Promise<Float32Array>) => Promise<Float32Array>;
  onEpochEnd?: (e: EpochEvent) => Promise<void>;
  /** Checked after every batch; true → stop (a partial epoch is discarded). */
  shouldStop?: () => boolean | Promise<boolean>;
}

export interface TrainClassifierResult {
  /** image → probabilities with the best epoch's weights. The caller disposes it. */
  model: tf.LayersModel;
  /** 0 when no epoch completed. */
  bestEpoch: number;
  epochsRun: number;
  /** shouldStop returned true. */
  stopped: boolean;
  stoppedEarly: boolean;
  /** Base layers that trained in any stage (empty for feature_extraction and prototype). */
  trainableLayers: string[];
  history: EpochReport[];
}

/** Above this many bytes of cached cut features per split, the bottom runs per batch instead. */
export const MAX_FEATURE_CACHE_BYTES = 1024 ** 3;
const EVAL_BATCH = 64;

const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

interface PlannedStage {
  index: number;
  cut: Cut;
  epochs: number;
  learningRate: number;
}

/** The stages a strategy trains in (one for every strategy but progressive_unfreezing). */
export function planStages(strategy: Strategy, hp: Hyperparameters, graph: LayerGraph): PlannedStage[] {
  const one = (cut: Cut): PlannedStage[] => [{ index: 1, cut, epochs: hp.epochs, learningRate: hp.learningRate }];
  switch (strategy) {
    case 'feature_extraction':
    case 'prototype':
      return one(frozenCut(graph));
    case 'fine_tune':
      return one(resolveUnfreeze(graph, hp.unfreeze ?? { topLayers: Math.max(1, Math.round(graph.order.length * DEFAULT_STAGE_FRACTIONS[1])) }));
    case 'full':
    case 'scratch':
      return one(inputCut(graph));
    case 'progressive_unfreezing': {
      if (hp.stages) {
        const stages = hp.stages.map((s, i) => ({ index: i + 1, cut: resolveUnfreeze(graph, s.unfreeze), epochs: s.epochs, learningRate: s.learningRate ?? hp.learningRate }));
        for (let i = 1; i < stages.length; i++) {
          if (stages[i]!.cut.position > stages[i - 1]!.cut.position) {
            throw new DomainError('invalid_stages', `stage ${i + 1} unfreezes fewer layers than stage ${i}; stages must unfreeze further down`, 422);
          }
        }
        return stages;
      }
      return defaultProgressiveStages(graph, hp);
    }
    default:
      throw new DomainError('unknown_strategy', `unknown strategy ${String(strategy)}`, 422);
  }
}

/** Head only → the top ~10% of layers → the top ~35%, each at a block boundary, each
 * strictly deeper than the last; epochs split by defaultStageEpochs. */
function defaultProgressiveStages(graph: LayerGraph, hp: Hyperparameters): PlannedStage[] {
  const cuts: Cut[] = [frozenCut(graph)];
  const all = validCuts(graph);
  for (const fraction of DEFAULT_STAGE_FRACTIONS.slice(1)) {
    const prev = cuts[cuts.length - 1]!;
    let cut: Cut | undefined = resolveUnfreeze(graph, { topLayers: Math.max(1, Math.round(graph.order.length * fraction)) });
    if (cut.trainableLayers.length <= prev.trainableLayers.length) cut = all.find((c) => c.trainableLayers.length > prev.trainableLayers.length);
    if (cut) cuts.push(cut);
  }
  const epochs = defaultStageEpochs(hp.epochs, cuts.length);
  return epochs.map((e, i) => ({ index: i + 1, cut: cuts[i]!, epochs: e, learningRate: hp.learningRate }));
}

function product(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function checkSplit(name: string, d: LabelledImages, pixels: number, numClasses: number): void {
  if (d.images.length !== d.labels.length) throw new Error(`${name}: ${d.images.length} images but ${d.labels.length} labels`);
  d.images.forEach((img, i) => {
    if (img.length !== pixels) throw new Error(`${name}: image ${i} has ${img.length} bytes; expected ${pixels}`);
  });
  d.labels.forEach((c, i) => {
    if (c < 0 || c >= numClasses) throw new Error(`${name}: label ${i} = ${c} is not a class id in [0, ${numClasses})`);
  });
}

/** Images (by index) → float32 [n, S, S, 3] in [0, 1]. */
function imageBatch(images: Uint8Array[], indices: ArrayLike<number>, size: number): tf.Tensor4D {
  const pixels = size * size * 3;
  const buf = new Float32Array(indices.length * pixels);
  for (let j = 0; j < indices.length; j++) {
    const img = images[indices[j]!]!;
    for (let p = 0; p < pixels; p++) buf[j * pixels + p] = img[p]! / 255;
  }
  return tf.tensor4d(buf, [indices.length, size, size, 3]);
}

function range(start: number, end: number): number[] {
  return Array.from({ length: end - start }, (_, i) => start + i);
}

function shuffled(n: number, random: () => number): Uint32Array {
  const order = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    const t = order[i]!;
    order[i] = order[j]!;
    order[j] = t;
  }
  return order;
}

/** Runs `model` (inference) over images in batches; returns outputs row-major. */
async function runFrozen(model: tf.LayersModel, images: Uint8Array[], size: number, width: number, batchSize: number): Promise<Float32Array> {
  const out = new Float32Array(images.length * width);
  for (let start = 0; start < images.length; start += batchSize) {
    const idx = range(start, Math.min(images.length, start + batchSize));
    const y = tf.tidy(() => model.predict(imageBatch(images, idx, size)) as tf.Tensor);
    try {
      out.set(await y.data<'float32'>(), start * width);
    } finally {
      y.dispose();
    }
    await yieldToEventLoop();
  }
  return out;
}

type WeightMap = Map<string, tf.Tensor[]>;

function disposeMap(m: WeightMap | null | undefined): void {
  m?.forEach((ws) => ws.forEach((w) => w.dispose()));
  m?.clear();
}

/** Clones of a model's per-layer weights, keyed by layer name (layers with weights only). */
function snapshotLayers(model: tf.LayersModel, into: WeightMap): void {
  for (const layer of model.layers) {
    if (layer.weights.length === 0) continue;
    into.get(layer.name)?.forEach((w) => w.dispose());
    into.set(layer.name, layer.getWeights().map((w) => w.clone()));
  }
}

/** Appends copies of the head's layers (weights from `weights`, else the head's) after `x`. */
function applyHeadCopies(head: tf.LayersModel, x: tf.SymbolicTensor, weights?: WeightMap): tf.SymbolicTensor {
  const g = layerGraph(head);
  return applyCopies(g, x, { from: g.inputName, to: g.outputName, layers: g.order, weights: (n) => weights?.get(n) });
}

/** The deployable model: base layers (weights from `weights`, else the base's) + head. */
function composeClassifier(graph: LayerGraph, head: tf.LayersModel, weights: WeightMap): tf.LayersModel {
  const input = tf.input({ shape: graph.inputShape, name: graph.inputName });
  const embedding = applyCopies(graph, input, { from: graph.inputName, to: graph.outputName, layers: graph.order, weights: (n) => weights.get(n) });
  return tf.model({ inputs: input, outputs: applyHeadCopies(head, embedding, weights), name: 'classifier' });
}

export async function trainClassifier(opts: TrainClassifierOptions): Promise<TrainClassifierResult> {
  const hp = opts.hyperparameters;
  const size = opts.inputSize;
  const numClasses = opts.labels.length;
  if (numClasses < 1) throw new Error('trainClassifier: no classes');
  const graph = layerGraph(opts.base.model);
  if (graph.inputShape.join() !== [size, size, 3].join()) {
    throw new Error(`trainClassifier: base takes [${graph.inputShape}] but inputSize is ${size}`);
  }
  const dim = product(tensorShape(graph, graph.outputName));
  checkSplit('train', opts.train, size * size * 3, numClasses);
  const val = opts.val && opts.val.images.length > 0 ? opts.val : null;
  if (val) checkSplit('val', val, size * size * 3, numClasses);
  const n = opts.train.images.length;
  if (n === 0) throw new Error('trainClassifier: no training images');

  const memo = (split: 'train' | 'val', cut: string, compute: () => Promise<Float32Array>) =>
    opts.frozenFeatures ? opts.frozenFeatures({ cut, split }, compute) : compute();

  if (opts.strategy === 'prototype') return prototypeRun(opts, graph, dim, val, memo);

  const stages = planStages(opts.strategy, hp, graph);
  const scratch = opts.strategy === 'scratch';
  const baseMultiplier = scratch ? 1 : hp.baseLearningRateMultiplier;
  const aug = augmentationEnabled(hp.augmentation) ? hp.augmentation! : null;
  const batchSize = Math.max(1, Math.min(hp.batchSize, n));
  const classWeights = classWeightVector(hp.classWeights, opts.labels, opts.train.labels);

  const shuffleRandom = mulberry32(hp.seed);
  const augRandom = mulberry32(hashSeed(hp.seed, 'augment'));
  const dropRandom = mulberry32(hashSeed(hp.seed, 'dropout'));
  const dropSeed = () => Math.floor(dropRandom() * 2 ** 31);

  const head = buildClassifierHead(dim, numClasses, hp.head, hp.seed);
  // Current weights of base layers that have trained (or were re-initialised), by layer name.
  const trained: WeightMap = new Map();
  if (scratch) {
    for (const name of graph.order) {
      const layer = graph.model.getLayer(name);
      if (layer.weights.length > 0) trained.set(name, initialWeights(layer, hashSeed(hp.seed, name)));
    }
  }
  let best: { epoch: number; acc: number; loss: number; weights: WeightMap } | null = null;
  const history: EpochReport[] = [];
  const everTrained = new Set<string>();
  let epoch = 0;
  let stopped = false;
  let stoppedEarly = false;

  try {
    for (const stage of stages) {
      const cut = stage.cut;
      const cutShape = tensorShape(graph, cut.cutLayer);
      const featureWidth = product(cutShape);
      const atInput = cut.position === 0;
      const fullyFrozen = cut.topLayers.length === 0;
      // The frozen bottom: the base itself when it is all frozen, else copies up to the cut.
      const bottom = atInput ? null : fullyFrozen ? opts.base.model : rebuild(graph, { from: graph.inputName, to: cut.cutLayer, layers: graph.order.slice(0, cut.position), name: 'frozen_bottom' });
      const top = fullyFrozen
        ? null
        : rebuild(graph, { from: cut.cutLayer, to: graph.outputName, layers: cut.topLayers, weights: (name) => trained.get(name), name: 'trainable_top', trainable: true });
      const headOpt = makeOptimizer(hp, stage.learningRate);
      const baseOpt = top ? makeOptimizer(hp, stage.learningRate * baseMultiplier) : null;
      try {
        const canCache = !atInput && featureWidth * 4 * Math.max(n, val?.images.length ?? 0) <= MAX_FEATURE_CACHE_BYTES;
        const trainFeatures = canCache && !aug ? await memo('train', cut.cutLayer, () => runFrozen(bottom!, opts.train.images, size, featureWidth, 32)) : null;
        const valFeatures = canCache && val ? await memo('val', cut.cutLayer, () => runFrozen(bottom!, val.images, size, featureWidth, 32)) : null;

        /** Model input for these samples: cached features, or images (augmented) through the bottom. */
        const inputFor = (split: LabelledImages, features: Float32Array | null, idx: ArrayLike<number>, augment: boolean): tf.Tensor => {
          if (features) {
            const buf = new Float32Array(idx.length * featureWidth);
            for (let j = 0; j < idx.length; j++) buf.set(features.subarray(idx[j]! * featureWidth, (idx[j]! + 1) * featureWidth), j * featureWidth);
            return tf.tensor(buf, [idx.length, ...cutShape]);
          }
          return tf.tidy(() => {
            let x = imageBatch(split.images, idx, size);
            if (augment && aug) x = augmentBatch(x, aug, augRandom);
            return bottom ? (bottom.predict(x) as tf.Tensor) : x;
          });
        };

        const headVars = head.trainableWeights.map((w) => w.read() as tf.Variable);
        const baseVars = top ? top.trainableWeights.map((w) => w.read() as tf.Variable) : [];
        const allVars = [...headVars, ...baseVars];
        const stageTrainable = cut.trainableLayers;
        stageTrainable.forEach((l) => everTrained.add(l));

        const evaluate = async (): Promise<{ loss: number; acc: number } | null> => {
          if (!val) return null;
          let lossSum = 0;
          let correct = 0;
          for (let start = 0; start < val.images.length; start += EVAL_BATCH) {
            const idx = range(start, Math.min(val.images.length, start + EVAL_BATCH));
            const [l, c] = tf.tidy(() => {
              const x = inputFor(val, valFeatures, idx, false);
              const emb = top ? (top.apply(x, { training: false }) as tf.Tensor) : x;
              const logits = headLogits(head, emb, false);
              const labels = tf.tensor1d(val.labels.subarray(start, start + idx.length), 'int32');
              const loss = tf.mul(classificationLoss(logits, labels, { numClasses }), idx.length);
              return [loss, tf.sum(tf.equal(tf.argMax(logits, -1), labels))];
            });
            const [lv, cv] = await Promise.all([l!.data(), c!.data()]);
            l!.dispose();
            c!.dispose();
            lossSum += lv[0]!;
            correct += cv[0]!;
            await yieldToEventLoop();
          }
          return { loss: lossSum / val.images.length, acc: correct / val.images.length };
        };

        let esBest: number | null = null;
        let esWait = 0;
        const stageHp = { ...hp, epochs: stage.epochs };
        for (let e = 1; e <= stage.epochs && !stopped; e++) {
          const t0 = performance.now();
          const lr = learningRateForEpoch(stageHp, e, stage.learningRate);
          setLearningRate(headOpt, lr);
          if (baseOpt) setLearningRate(baseOpt, lr * baseMultiplier);
          const order = shuffled(n, shuffleRandom);
          let lossSum = 0;
          let correct = 0;
          let seen = 0;
          let partial = false;
          for (let start = 0; start < n; start += batchSize) {
            const idx = order.subarray(start, Math.min(n, start + batchSize));
            const x = inputFor(opts.train, trainFeatures, idx, true);
            const labelArr = Int32Array.from(idx, (i) => opts.train.labels[i]!);
            const labels = tf.tensor1d(labelArr, 'int32');
            const weights = classWeights ? tf.tensor1d(Float32Array.from(labelArr, (c) => classWeights[c]!)) : null;
            let correctT: tf.Tensor | undefined;
            const { value, grads } = tf.variableGrads(() => {
              const emb = top ? (top.apply(x, { training: scratch }) as tf.Tensor) : x;
              const logits = headLogits(head, emb, true, dropSeed);
              correctT = tf.keep(tf.sum(tf.equal(tf.argMax(logits, -1), labels)));
              const loss = classificationLoss(logits, labels, { numClasses, labelSmoothing: hp.labelSmoothing, sampleWeights: weights });
              const penalty = l2Penalty(allVars, hp.l2);
              return penalty ? tf.add(loss, penalty) : loss;
            }, allVars);
            try {
              // Gradients in a fixed order: tfjs optimizers key their state by position.
              headOpt.applyGradients(headVars.map((v) => ({ name: v.name, tensor: grads[v.name]! })));
              if (baseOpt) baseOpt.applyGradients(baseVars.map((v) => ({ name: v.name, tensor: grads[v.name]! })));
              if (hp.optimizer === 'adamw') {
                applyDecoupledWeightDecay(headVars, lr, hp.weightDecay);
                applyDecoupledWeightDecay(baseVars, lr * baseMultiplier, hp.weightDecay);
              }
              const [lv, cv] = await Promise.all([value.data(), correctT!.data()]);
              lossSum += lv[0]! * idx.length;
              correct += cv[0]!;
              seen += idx.length;
            } finally {
              tf.dispose(grads);
              tf.dispose([value, x, labels, correctT!]);
              weights?.dispose();
            }
            if (opts.shouldStop && (await opts.shouldStop())) {
              stopped = true;
              partial = start + batchSize < n;
              if (partial) break;
            }
            await yieldToEventLoop();
          }
          if (partial) break;

          epoch++;
          const trainLoss = lossSum / seen;
          const trainAcc = correct / seen;
          const v = await evaluate();
          const acc = v ? v.acc : trainAcc;
          const loss = v ? v.loss : trainLoss;
          const isBest = best === null || acc > best.acc || (acc === best.acc && loss < best.loss);
          if (isBest) {
            const weights: WeightMap = new Map();
            for (const [name, ws] of trained) if (!cut.topLayers.includes(name)) weights.set(name, ws.map((w) => w.clone()));
            if (top) snapshotLayers(top, weights);
            snapshotLayers(head, weights);
            disposeMap(best?.weights);
            best = { epoch, acc, loss, weights };
          }
          const report: EpochReport = {
            epoch,
            ...(opts.strategy === 'progressive_unfreezing' ? { stage: stage.index } : {}),
            trainLoss,
            trainAcc,
            valLoss: v ? v.loss : null,
            valAcc: v ? v.acc : null,
            learningRate: lr,
            baseLearningRate: top ? lr * baseMultiplier : null,
            durationMs: performance.now() - t0,
            isBest,
            trainableLayers: stageTrainable,
          };
          history.push(report);
          await opts.onEpochEnd?.({
            ...report,
            checkpoint: async () => {
              const input = tf.input({ shape: cutShape, name: atInput ? graph.inputName : `${cut.cutLayer}_features` });
              const emb = top ? applyCopies(graph, input, { from: cut.cutLayer, to: graph.outputName, layers: cut.topLayers, weights: (l) => top.getLayer(l).getWeights() }) : input;
              const m = tf.model({ inputs: input, outputs: applyHeadCopies(head, emb), name: 'checkpoint' });
              try {
                const s = await serializeModel(m, { metadata: { cutLayer: cut.cutLayer, epoch: report.epoch, labels: opts.labels } });
                return { ...s, cutLayer: cut.cutLayer };
              } finally {
                m.dispose();
              }
            },
          });
          if (!stopped && opts.shouldStop && (await opts.shouldStop())) stopped = true;

          if (hp.earlyStopping) {
            const { monitor, patience, minDelta } = hp.earlyStopping;
            const useVal = monitor.startsWith('val_') && v !== null;
            const value = monitor.endsWith('loss') ? (useVal ? v!.loss : trainLoss) : useVal ? v!.acc : trainAcc;
            const sign = monitor.endsWith('loss') ? -1 : 1; // maximise sign × value
            if (esBest === null || sign * (value - esBest) > minDelta) {
              esBest = value;
              esWait = 0;
            } else if (++esWait >= patience) {
              stoppedEarly = true;
              break; // ends this stage; progressive unfreezing goes on to the next
            }
          }
        }
      } finally {
        // Keep what the top learned for later stages (and the final model), then free the stage.
        if (top) snapshotLayers(top, trained);
        if (bottom && bottom !== opts.base.model) bottom.dispose();
        top?.dispose();
        disposeOptimizer(headOpt);
        if (baseOpt) disposeOptimizer(baseOpt);
      }
      if (stopped) break;
    }

    let finalWeights = best?.weights;
    if (!finalWeights) {
      // No epoch completed: the weights as they are.
      finalWeights = new Map([...trained].map(([k, ws]) => [k, ws.map((w) => w.clone())]));
      snapshotLayers(head, finalWeights);
    }
    const model = composeClassifier(graph, head, finalWeights);
    if (!best) disposeMap(finalWeights);
    return {
      model,
      bestEpoch: best?.epoch ?? 0,
      epochsRun: epoch,
      stopped,
      stoppedEarly,
      trainableLayers: graph.order.filter((l) => everTrained.has(l)),
      history,
    };
  } finally {
    disposeMap(best?.weights);
    disposeMap(trained);
    head.dispose();
  }
}

async function prototypeRun(
  opts: TrainClassifierOptions,
  graph: LayerGraph,
  dim: number,
  val: LabelledImages | null,
  memo: (split: 'train' | 'val', cut: string, compute: () => Promise<Float32Array>) => Promise<Float32Array>,
): Promise<TrainClassifierResult> {
  const t0 = performance.now();
  const numClasses = opts.labels.length;
  const size = opts.inputSize;
  const base = opts.base.model;
  const trainX = await memo('train', graph.outputName, () => runFrozen(base, opts.train.images, size, dim, 32));
  const head = buildPrototypeHead(classPrototypes(trainX, opts.train.labels, numClasses, dim), numClasses, dim);
  try {
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
    const v = val ? await score(await memo('val', graph.outputName, () => runFrozen(base, val.images, size, dim, 32)), val.labels) : null;
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
    });
    const model = composeClassifier(graph, head, new Map());
    return { model, bestEpoch: 1, epochsRun: 1, stopped: false, stoppedEarly: false, trainableLayers: [], history: [report] };
  } finally {
    head.dispose();
  }
}

export type { Unfreeze };
