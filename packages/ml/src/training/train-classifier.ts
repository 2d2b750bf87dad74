// The transfer-learning engine: one entry point for every strategy.
//
// The base is split at a cut (surgery.ts) into a frozen bottom and a trainable top:
//   image ─ bottom (frozen, inference mode) ─► cut features ─ top (copies, train) ─► embedding ─ head ─► probabilities
// The bottom's outputs are computed once per split and cached (the caller can memoise them
// across jobs via `frozenFeatures`), unless augmentation is on, in which case the bottom runs
// per batch on augmented images. The top always runs with training=false: tfjs-layers'
// BatchNormalization would otherwise use batch statistics and move its averages even when
// frozen (a known tfjs-layers behaviour), so BN trains gamma/beta only and its moving statistics never change — the
// Keras fine-tuning recipe. Only `scratch` runs BN in training mode (nothing to preserve). Only
// the head's Dropout is ever in training mode.
//
// Strategies → cuts: feature_extraction: above the whole base; fine_tune: `unfreeze` moved to a
// block boundary; progressive_unfreezing: one cut per stage, moving down; full / scratch: below
// the input (everything trains; scratch from seeded random weights); prototype: no loop.
//
// Pieces: stages.ts plans the stages, stage.ts sets one up, epoch.ts runs an epoch over
// batches.ts' batches, early-stopping.ts and weights.ts (BestWeights) judge and keep epochs,
// training-state.ts is the resume blob. This file holds what spans the whole run — the head,
// the weights trained so far, the best epoch, history, RNG streams — and is the only place that
// both writes the state after an epoch and reads it back, so the two cannot drift apart.
import type { Unfreeze } from '@finetune/core';
import { tf } from '../backend.ts';
import { mulberry32, type Random } from '../random.ts';
import { augmentationEnabled } from './augment.ts';
import { checkSplit, product } from './batches.ts';
import { registerTrainingGradients } from './gradients.ts';
import { EarlyStopping, type EarlyStoppingState } from './early-stopping.ts';
import { evaluate, trainEpoch, type BatchEvent } from './epoch.ts';
import { buildClassifierHead, classWeightVector } from './head.ts';
import { findLearningRate, type LearningRateFinderResult } from './lr-finder.ts';
import { disposeOptimizer, makeOptimizer, optimizerState, restoreOptimizerState } from './optimizers.ts';
import { prototypeRun } from './prototype-run.ts';
import { cannotFit, currentBackend, fitMicroBatch, memoryBudget, residentBytes, stepMemory } from './micro-batch.ts';
import { learningRateForEpoch, oneCycleAt, stageWarmupFactor } from './schedule.ts';
import { openStage, type FeatureMemo, type StageSession } from './stage.ts';
import { baseRateFactors, planStages, type PlannedStage } from './stages.ts';
import { hashSeed, initialWeights, layerGraph, tensorShape, type LayerGraph } from './surgery.ts';
import { checkRun, decodeTrainingState, encodeTrainingState, TrainingStateError, type RunDescription, type TensorData, type TrainingState } from './training-state.ts';
import type { EpochReport, LabelledImages, TrainClassifierOptions, TrainClassifierResult } from './types.ts';
import { BestWeights, checkWeightShapes, cloneMap, composeClassifier, disposeMap, snapshotLayers, weightData, weightMapFrom, type WeightMap } from './weights.ts';

export { MAX_FEATURE_CACHE_BYTES } from './stage.ts';
export { planStages } from './stages.ts';
export type { CheckpointData, EpochEvent, EpochReport, LabelledImages, TrainClassifierOptions, TrainClassifierResult } from './types.ts';

/** Where a stage starts: its first epoch, and (mid-stage resume) the state it had reached. */
interface StageStart {
  firstEpoch: number;
  earlyStopping?: EarlyStoppingState;
}

/** Optimizer states a resumed run loads into the optimizers of the first stage it opens. */
type SavedOptimizers = NonNullable<TrainingState['optimizers']>;

/** Where in the plan an epoch ended, and the stage's early-stopping counters there. */
interface StatePosition {
  stage: number;
  stageEpoch: number;
  stageDone: boolean;
  earlyStopping: EarlyStopping;
}

interface RunSetup {
  opts: TrainClassifierOptions;
  graph: LayerGraph;
  dim: number;
  val: LabelledImages | null;
  memo: FeatureMemo;
  /** Resolves once the images are decoded (at once unless the caller deferred decoding). */
  pixels: () => Promise<void>;
  run: RunDescription;
}

export async function trainClassifier(opts: TrainClassifierOptions): Promise<TrainClassifierResult> {
  const setup = prepare(opts);
  // A damaged or foreign blob fails here, before any work.
  const resume = opts.resumeFrom ? decodeTrainingState(opts.resumeFrom) : null;
  if (resume) checkRun(resume, setup.run);
  if (opts.strategy === 'prototype') return prototypeRun(opts, { ...setup, resume });

  const run = new ClassifierRun(setup, planStages(opts.strategy, opts.hyperparameters, setup.graph));
  try {
    let next = { stage: 0, start: { firstEpoch: 1 } as StageStart };
    if (resume) next = run.restore(resume);
    else {
      run.initialise();
      // Before any epoch, so a resumed run finds the chosen rate in its state and never repeats it.
      if (opts.hyperparameters.learningRate === 'auto') await run.findLearningRate();
    }
    for (let s = next.stage; s < run.stages.length && !run.stopped; s++) {
      await run.trainStage(s, s === next.stage ? next.start : { firstEpoch: 1 });
    }
    return run.result();
  } finally {
    run.dispose();
  }
}

function prepare(opts: TrainClassifierOptions): RunSetup {
  registerTrainingGradients();
  const size = opts.inputSize;
  const numClasses = opts.labels.length;
  if (numClasses < 1) throw new Error('trainClassifier: no classes');
  const graph = layerGraph(opts.base.model);
  if (graph.inputShape.join() !== [size, size, 3].join()) {
    throw new Error(`trainClassifier: base takes [${graph.inputShape}] but inputSize is ${size}`);
  }
  // Sizes come from the labels: with deferred decoding the images are not there yet.
  const val = opts.val && opts.val.labels.length > 0 ? opts.val : null;
  const checkSplits = (images: boolean) => {
    checkSplit('train', opts.train, size * size * 3, numClasses, images);
    if (val) checkSplit('val', val, size * size * 3, numClasses, images);
  };
  checkSplits(!opts.loadImages);
  if (opts.train.labels.length === 0) throw new Error('trainClassifier: no training images');
  let loading: Promise<void> | null = null;
  const pixels = opts.loadImages ? () => (loading ??= opts.loadImages!().then(() => checkSplits(true))) : () => Promise.resolve();
  return {
    opts,
    graph,
    dim: product(tensorShape(graph, graph.outputName)),
    val,
    memo: (split, cut, compute) => (opts.frozenFeatures ? opts.frozenFeatures({ cut, split }, compute) : compute()),
    pixels,
    run: { base: opts.base.info.id, strategy: opts.strategy, hyperparameters: opts.hyperparameters, labels: opts.labels, train: opts.train.labels.length, val: val?.labels.length ?? 0 },
  };
}

/** Everything that outlives a stage; what a training state captures and restores. */
class ClassifierRun {
  private readonly opts: TrainClassifierOptions;
  private readonly hp: TrainClassifierOptions['hyperparameters'];
  private readonly head: tf.LayersModel;
  /** Current weights of base layers that have trained (or were re-initialised), by layer name. */
  private trained: WeightMap = new Map();
  private readonly best = new BestWeights();
  private history: EpochReport[] = [];
  private everTrained = new Set<string>();
  private epoch = 0;
  stopped = false;
  private stoppedEarly = false;
  private random: { shuffle: Random; augment: Random; dropout: Random };
  private readonly scratch: boolean;
  /** Base layer → its rate ÷ the head's (baseLearningRateMultiplier or layerLearningRateDecay). */
  private readonly rateFactors: Map<string, number>;
  /** The run's rate: the spec's, or the range test's choice (learningRate "auto"). */
  private learningRate: number;
  private finder: LearningRateFinderResult | null = null;
  /** The head's optimizer and each trained base layer's: they live for the run, so progressive
   * unfreezing carries their moments into the next stage; a newly unfrozen layer gets a fresh one. */
  private headOpt: tf.Optimizer | null = null;
  private readonly baseOpts = new Map<string, tf.Optimizer>();
  /** After restore: states to load into the optimizers when the next stage opens. */
  private savedOptimizers: SavedOptimizers | null = null;
  private readonly batchSize: number;
  private readonly classWeights: Float32Array | null;
  /** The smallest micro-batch a stage of this call trained with (null before the first). */
  private microBatch: number | null = null;

  constructor(
    private readonly setup: RunSetup,
    readonly stages: PlannedStage[],
  ) {
    this.opts = setup.opts;
    this.hp = setup.opts.hyperparameters;
    this.scratch = this.opts.strategy === 'scratch';
    this.rateFactors = baseRateFactors(setup.graph, this.hp, this.scratch);
    this.learningRate = this.hp.learningRate === 'auto' ? NaN : this.hp.learningRate;
    this.batchSize = Math.max(1, Math.min(this.hp.batchSize, this.opts.train.labels.length));
    this.classWeights = classWeightVector(this.hp.classWeights, this.opts.labels, this.opts.train.labels);
    const seed = this.hp.seed;
    this.random = { shuffle: mulberry32(seed), augment: mulberry32(hashSeed(seed, 'augment')), dropout: mulberry32(hashSeed(seed, 'dropout')) };
    this.head = buildClassifierHead(setup.dim, this.opts.labels.length, this.hp.head, seed);
  }

  /** A fresh run: scratch re-initialises every base layer from the seed. */
  initialise(): void {
    if (!this.scratch) return;
    for (const name of this.setup.graph.order) {
      const layer = this.setup.graph.model.getLayer(name);
      if (layer.weights.length > 0) this.trained.set(name, initialWeights(layer, hashSeed(this.hp.seed, name)));
    }
  }

  async trainStage(index: number, start: StageStart): Promise<void> {
    const { opts, hp, setup } = this;
    const stage = this.stages[index]!;
    // Before the stage allocates anything: a spec that cannot fit fails here, before any work.
    const microBatch = this.planMicroBatch(stage);
    this.microBatch = Math.min(this.microBatch ?? microBatch, microBatch);
    const session = await this.openSession(stage, {
      head: (this.headOpt ??= makeOptimizer(hp, this.learningRate)),
      base: (layer) => this.baseOpts.get(layer) ?? this.baseOpts.set(layer, makeOptimizer(hp, this.learningRate)).get(layer)!,
    });
    try {
      if (this.savedOptimizers) await this.restoreOptimizers(session, this.savedOptimizers);
      this.savedOptimizers = null;
      stage.cut.trainableLayers.forEach((l) => this.everTrained.add(l));
      const earlyStopping = new EarlyStopping(hp.earlyStopping, start.earlyStopping);
      const unfreezesMore = index > 0 && stage.cut.trainableLayers.length > this.stages[index - 1]!.cut.trainableLayers.length;
      const rates = this.stageRates(stage, unfreezesMore);
      const dropSeed = () => Math.floor(this.random.dropout() * 2 ** 31);
      for (let e = start.firstEpoch; e <= stage.epochs && !this.stopped; e++) {
        const t0 = performance.now();
        const lr = rates(e, 0).learningRate;
        const outcome = await trainEpoch({
          net: session,
          train: opts.train,
          features: session.trainFeatures,
          input: session.input,
          hp,
          rates: (batch) => rates(e, batch),
          batchSize: this.batchSize,
          microBatch,
          numClasses: opts.labels.length,
          classWeights: this.classWeights,
          shuffle: this.random.shuffle,
          dropSeed,
          shouldStop: opts.shouldStop,
          ...(opts.onBatchEnd ? { onBatchEnd: (b: BatchEvent) => opts.onBatchEnd!({ ...b, epoch: this.epoch + 1, stage: index + 1 }) } : {}),
        });
        if (outcome.stopped) this.stopped = true;
        if (!outcome.complete) break;

        this.epoch++;
        const v = setup.val ? await evaluate({ net: session, val: setup.val, features: session.valFeatures, input: session.input, numClasses: opts.labels.length }) : null;
        const acc = v ? v.acc : outcome.trainAcc;
        const loss = v ? v.loss : outcome.trainLoss;
        const isBest = this.best.improves(acc, loss);
        if (isBest) this.best.set(this.epoch, acc, loss, session.snapshot());
        // Decided before the callback so that state() already knows whether this stage is over.
        const endsStage = earlyStopping.update({ trainLoss: outcome.trainLoss, trainAcc: outcome.trainAcc, valLoss: v?.loss ?? null, valAcc: v?.acc ?? null });
        if (endsStage) this.stoppedEarly = true;
        const report: EpochReport = {
          epoch: this.epoch,
          ...(opts.strategy === 'progressive_unfreezing' ? { stage: stage.index } : {}),
          trainLoss: outcome.trainLoss,
          trainAcc: outcome.trainAcc,
          valLoss: v ? v.loss : null,
          valAcc: v ? v.acc : null,
          learningRate: lr,
          // The top block's rate (with layerLearningRateDecay the blocks below train slower).
          baseLearningRate: session.baseGroups.length > 0 ? lr * Math.max(...session.baseGroups.map((g) => g.rateFactor)) : null,
          durationMs: performance.now() - t0,
          isBest,
          trainableLayers: stage.cut.trainableLayers,
        };
        this.history.push(report);
        await this.announce(report, session, { stage: index, stageEpoch: e, stageDone: endsStage || e === stage.epochs, earlyStopping });
        if (!this.stopped && opts.shouldStop && (await opts.shouldStop())) this.stopped = true;
        if (endsStage) break; // progressive unfreezing goes on to the next stage
      }
    } finally {
      session.close();
    }
  }

  private openSession(stage: PlannedStage, optimizers: Parameters<typeof openStage>[0]['optimizers'], finder = false): Promise<StageSession> {
    const { opts, hp, setup } = this;
    return openStage({
      graph: setup.graph,
      base: opts.base.model,
      stage,
      head: this.head,
      trained: this.trained,
      optimizers,
      rateFactors: this.rateFactors,
      keepWeights: !finder,
      scratch: this.scratch,
      size: opts.inputSize,
      train: opts.train,
      val: setup.val,
      augmentation: augmentationEnabled(hp.augmentation) ? hp.augmentation! : null,
      // The range test draws from streams of its own: the run's stay as they would be without it.
      augRandom: finder ? mulberry32(hashSeed(hp.seed, 'lr_find_augment')) : this.random.augment,
      memo: setup.memo,
      pixels: setup.pixels,
    });
  }

  /**
   * The step rates of a stage: (1-based epoch, 0-based batch) → head rate and SGD momentum.
   * one_cycle: fastai's cycle over the stage's steps (each stage of progressive unfreezing runs
   * its own cycle, as fastai's fine_tune does). Otherwise the per-epoch schedule, and a stage
   * that unfreezes new layers after the first (`warm`) ramps up over its first epoch unless
   * warmupEpochs already warms it.
   */
  private stageRates(stage: PlannedStage, warm: boolean): (epoch: number, batch: number) => { learningRate: number; momentum: number | null } {
    const { hp } = this;
    const base = stage.learningRate ?? this.learningRate;
    const stepsPerEpoch = Math.ceil(this.opts.train.labels.length / this.batchSize);
    const schedule = hp.lrSchedule;
    if (schedule.type === 'one_cycle') {
      const total = stage.epochs * stepsPerEpoch;
      return (e, b) => oneCycleAt(schedule, base, (e - 1) * stepsPerEpoch + b, total);
    }
    const stageHp = { ...hp, epochs: stage.epochs };
    const warmSteps = warm && hp.warmupEpochs === 0 ? stepsPerEpoch : 0;
    return (e, b) => ({ learningRate: learningRateForEpoch(stageHp, e, base) * stageWarmupFactor((e - 1) * stepsPerEpoch + b, warmSteps), momentum: null });
  }

  /** learningRate "auto": the range test on the first stage's trainable part; sets the run's rate. */
  async findLearningRate(): Promise<void> {
    const { opts, hp } = this;
    const stage = this.stages[0]!;
    const microBatch = this.planMicroBatch(stage);
    this.finder = await findLearningRate({
      open: (optimizers) => this.openSession(stage, optimizers, true),
      head: this.head,
      makeOptimizer: () => makeOptimizer(hp, 1),
      step: { train: opts.train, hp, microBatch, numClasses: opts.labels.length, classWeights: this.classWeights },
      batchSize: this.batchSize,
      seed: hp.seed,
    });
    this.learningRate = this.finder.chosen;
    await opts.onLearningRateFinder?.(this.finder);
  }

  /**
   * The largest micro-batch (≤ batchSize) whose step fits the backend's memory (micro-batch.ts).
   * A function of the spec and the backend only, so a resumed run plans what the first one did.
   */
  private planMicroBatch(stage: PlannedStage): number {
    const need = stepMemory(this.setup.graph, stage.cut, { batchStatistics: this.scratch, optimizer: this.hp.optimizer, headParams: this.head.countParams() });
    const what = `strategy ${this.opts.strategy}${this.stages.length > 1 ? ` (stage ${stage.index})` : ''} on ${this.opts.base.info.id}`;
    const plan = fitMicroBatch(need, { batchSize: this.batchSize, residentBytes: residentBytes(this.opts.base.model), budget: memoryBudget(currentBackend()), what });
    if (!plan.fits) throw cannotFit(plan);
    return plan.microBatch;
  }

  result(): TrainClassifierResult {
    const best = this.best.weights;
    // No epoch completed (stopped in the first): the weights as they are.
    const weights = best ?? cloneMap(this.trained);
    if (!best) snapshotLayers(this.head, weights);
    try {
      return {
        model: composeClassifier(this.setup.graph, this.head, weights),
        bestEpoch: this.best.score?.epoch ?? 0,
        epochsRun: this.epoch,
        stopped: this.stopped,
        stoppedEarly: this.stoppedEarly,
        trainableLayers: this.setup.graph.order.filter((l) => this.everTrained.has(l)),
        history: this.history,
        microBatchSize: this.microBatch ?? this.batchSize,
        learningRateFinder: this.finder,
      };
    } finally {
      if (!best) disposeMap(weights);
    }
  }

  dispose(): void {
    if (this.headOpt) disposeOptimizer(this.headOpt);
    this.baseOpts.forEach(disposeOptimizer);
    this.best.dispose();
    disposeMap(this.trained);
    this.head.dispose();
  }

  private async announce(report: EpochReport, session: StageSession, at: StatePosition): Promise<void> {
    if (!this.opts.onEpochEnd) return;
    // After the callback the loop moves on, and a state taken then would mix two epochs.
    let live = true;
    try {
      await this.opts.onEpochEnd({
        ...report,
        checkpoint: () => session.checkpoint({ epoch: report.epoch, labels: this.opts.labels }),
        state: () => (live ? this.captureState(session, at) : Promise.reject(new Error(`state() of epoch ${report.epoch} called after its onEpochEnd returned`))),
      });
    } finally {
      live = false;
    }
  }

  private async captureState(session: StageSession, at: StatePosition): Promise<Uint8Array> {
    const headWeights = new Map(this.head.layers.filter((l) => l.weights.length > 0).map((l) => [l.name, l.getWeights()]));
    const state: TrainingState = {
      run: this.setup.run,
      epoch: this.epoch,
      stage: at.stage,
      stageEpoch: at.stageEpoch,
      stageDone: at.stageDone,
      stoppedEarly: this.stoppedEarly,
      earlyStopping: at.earlyStopping.state(),
      random: { shuffle: this.random.shuffle.state(), augment: this.random.augment.state(), dropout: this.random.dropout.state() },
      everTrained: this.setup.graph.order.filter((l) => this.everTrained.has(l)),
      best: this.best.score,
      history: [...this.history],
      head: await weightData(headWeights),
      trained: await session.trainedData(),
      bestWeights: await weightData(this.best.weights ?? new Map()),
      // Kept even when the stage is done: the next stage goes on with them.
      optimizers: await this.optimizerStates(),
      learningRateFinder: this.finder,
    };
    return encodeTrainingState(state);
  }

  /** Loads a state (checked against this run first, so a mismatch leaves nothing half-set); returns where to go on. */
  restore(s: TrainingState): { stage: number; start: StageStart } {
    const { graph } = this.setup;
    const fail = (why: string): never => {
      throw new TrainingStateError(`training state does not fit this run: ${why}`);
    };
    const stage = this.stages[s.stage] ?? fail(`stage ${s.stage + 1} of ${this.stages.length}`);
    if (s.epoch < 1 || !s.best) fail('no completed epoch');
    if (s.stageEpoch < 1 || s.stageEpoch > stage.epochs) fail(`epoch ${s.stageEpoch} of a ${stage.epochs}-epoch stage`);
    if (!s.stageDone && s.stageEpoch === stage.epochs) fail('the last epoch of a stage is not marked done');
    if (!s.optimizers) fail('no optimizer state');
    // The stage that goes on (or the next): it trains every layer an earlier stage trained.
    const nextStage = s.stageDone ? this.stages[s.stage + 1] : stage;
    const stray = nextStage && [...s.optimizers!.base.keys()].find((l) => !nextStage.cut.trainableLayers.includes(l));
    if (stray) fail(`optimizer state for base layer ${stray}, which stage ${nextStage.index} does not train`);
    if (this.hp.learningRate === 'auto' && !s.learningRateFinder) fail('learningRate "auto" without the range test\'s result');
    const unknown = s.everTrained.find((l) => !graph.order.includes(l));
    if (unknown) fail(`unknown layer ${unknown}`);
    const headLayers = this.head.layers.filter((l) => l.weights.length > 0).map((l) => l.name);
    if (headLayers.some((l) => !s.head.has(l)) || s.head.size !== headLayers.length) fail(`head weights for [${[...s.head.keys()]}], expected [${headLayers}]`);
    checkWeightShapes('head', s.head, [this.head]);
    checkWeightShapes('trained', s.trained, [graph.model]);
    checkWeightShapes('best', s.bestWeights, [graph.model, this.head]);
    if (headLayers.some((l) => !s.bestWeights.has(l))) fail('the best weights lack the head');

    const head = weightMapFrom(s.head);
    head.forEach((ws, name) => this.head.getLayer(name).setWeights(ws));
    disposeMap(head);
    this.trained = weightMapFrom(s.trained);
    this.best.set(s.best!.epoch, s.best!.acc, s.best!.loss, weightMapFrom(s.bestWeights));
    this.history = [...s.history];
    this.everTrained = new Set(s.everTrained);
    this.epoch = s.epoch;
    this.stoppedEarly = s.stoppedEarly;
    this.random = { shuffle: mulberry32(s.random.shuffle), augment: mulberry32(s.random.augment), dropout: mulberry32(s.random.dropout) };
    this.savedOptimizers = s.optimizers;
    if (s.learningRateFinder) {
      this.finder = s.learningRateFinder;
      this.learningRate = s.learningRateFinder.chosen;
    }
    return s.stageDone ? { stage: s.stage + 1, start: { firstEpoch: 1 } } : { stage: s.stage, start: { firstEpoch: s.stageEpoch + 1, earlyStopping: s.earlyStopping } };
  }

  private async optimizerStates(): Promise<SavedOptimizers> {
    const base = new Map<string, TensorData[]>();
    for (const [layer, o] of this.baseOpts) base.set(layer, await optimizerState(o));
    return { head: await optimizerState(this.headOpt!), base };
  }

  /** Loads saved states into the optimizers the session just made (the layers a new stage adds start fresh). */
  private async restoreOptimizers(session: StageSession, saved: SavedOptimizers): Promise<void> {
    await restoreOptimizerState(session.headOpt, session.headVars, saved.head);
    for (const g of session.baseGroups) {
      const state = saved.base.get(g.layer);
      if (state) await restoreOptimizerState(g.optimizer, g.vars, state);
    }
  }
}

export type { Unfreeze };
