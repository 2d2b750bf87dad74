// Micro-batching: how many images one forward + backward pass may hold so that a training step
// fits the backend's memory. epoch.ts splits each step's batch into micro-batches of that size
// and sums their gradients, so the optimizer still sees the requested batchSize.
//
// Why: every activation of the trainable part is kept until the backward pass, so a step's
// memory grows with the batch. On tfjs' wasm backend (the service's default) a full MobileNetV2
// step at 224² peaks at ~290 MiB of tensors per image, against a heap that cannot grow past
// 4 GiB: batch 8 fitted, batch 16 aborted with "memory access out of bounds" and scratch (BN
// in training mode, ~490 MiB per image) with "Aborted()".
//
// The model, per stage (the trainable part is that stage's top + head):
//   forward + backward:  resident + gradients + microBatch × perImage ≤ budget
//   optimizer update:    resident + optimizer ≤ budget
//   resident   tensors alive before the step: the base, the weights kept so far and the best
//              epoch's, ~3 × the base's weights. Estimated from the model, not measured with
//              tf.memory(): the plan must depend on the spec alone, so that a resumed run
//              picks the micro-batch the interrupted one had and stays bit-identical.
//   gradients  trainable weights × 4: a micro-batch's gradients, their running sum, and Adam's
//              two slots from the step before
//   optimizer  trainable weights × OPTIMIZER_COPIES: gradients, their running sum, the slots
//              (Adam's m and v) and the temporaries tfjs' optimizers keep for every variable
//              until applyGradients returns (measured: Adam's step alone peaks at ~17 × the
//              weights, 1.4 GiB for a full InceptionV3)
//   perImage   4 bytes × (the top's input + Σ its layers' output sizes) × ACTIVATION_COPIES:
//              the tape keeps a layer's inputs and outputs, the backward pass adds gradients of
//              the same sizes and the conv gradient kernels' windows. Calibrated on wasm:
//              MobileNetV2 / InceptionV3 full 3.5 / 4.3 (BN frozen), scratch 5.9 / ? (BN
//              training: moments and the normalised copy too); the factors keep ~20% above.
//   budget     wasm: 85% of the heap's hard maximum (emscripten's getHeapMax() in
//              tfjs-backend-wasm 4.22: 4 GiB − 64 KiB); the rest is malloc fragmentation and
//              XNNPACK's scratch. tensorflow-gpu: 80% of the smallest GPU's memory
//              (nvidia-smi). tensorflow / cpu: half the host's memory.
//              ML_MEMORY_BUDGET_BYTES overrides it (operators; the fault tests use it to push
//              the planner past what wasm can really hold).
import { execFileSync } from 'node:child_process';
import { totalmem } from 'node:os';
import { DomainError, type Hyperparameters, type Optimizer, type Strategy } from '@finetune/core';
import { activeBackend, tf, type BackendName } from '../backend.ts';
import { product } from './batches.ts';
import { planStages } from './stages.ts';
import { layerGraph, tensorShape, type Cut, type LayerGraph } from './surgery.ts';

/** tfjs-backend-wasm 4.22's emscripten heap limit (getHeapMax(): 4 GiB − one 64 KiB page). */
export const WASM_HEAP_MAX_BYTES = 4 * 1024 ** 3 - 64 * 1024;
export const MEMORY_BUDGET_ENV = 'ML_MEMORY_BUDGET_BYTES';

const WASM_BUDGET_FRACTION = 0.85;
const GPU_BUDGET_FRACTION = 0.8;
const HOST_BUDGET_FRACTION = 0.5;
/** Activation bytes per image ÷ 4·Σ(layer output sizes): BN frozen (inference mode) / BN in training mode. */
const ACTIVATION_COPIES = { frozenStatistics: 5, batchStatistics: 7.5 } as const;
/** Copies of the trainable weights held while micro-batches run forward and backward. */
const GRADIENT_COPIES = 4;
/** Copies of the trainable weights held during the optimizer's update (see above). */
const OPTIMIZER_COPIES: Record<Optimizer, number> = { sgd: 4, rmsprop: 14, adam: 19, adamw: 19 };
/** What a run keeps of the base before any step, as copies of its weights (planMicroBatch's estimate). */
const RESIDENT_COPIES = 3;

export interface MemoryBudget {
  bytes: number;
  /** Where the number comes from, for messages. */
  source: string;
}

/** The memory a training step may use on `backend` (ML_MEMORY_BUDGET_BYTES wins when set). */
export function memoryBudget(backend: BackendName, env: NodeJS.ProcessEnv = process.env): MemoryBudget {
  const set = env[MEMORY_BUDGET_ENV];
  if (set !== undefined && set !== '') {
    const bytes = Number(set);
    if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new Error(`${MEMORY_BUDGET_ENV} must be a positive integer number of bytes, got '${set}'`);
    return { bytes, source: MEMORY_BUDGET_ENV };
  }
  switch (backend) {
    case 'wasm':
      return { bytes: Math.floor(WASM_HEAP_MAX_BYTES * WASM_BUDGET_FRACTION), source: 'the wasm heap (4 GiB maximum)' };
    case 'tensorflow-gpu': {
      const gpu = gpuMemoryBytes();
      if (gpu) return { bytes: Math.floor(gpu * GPU_BUDGET_FRACTION), source: 'the GPU memory' };
      return { bytes: Math.floor(totalmem() * HOST_BUDGET_FRACTION), source: 'host memory (no GPU size from nvidia-smi)' };
    }
    default:
      return { bytes: Math.floor(totalmem() * HOST_BUDGET_FRACTION), source: 'host memory' };
  }
}

/** The smallest GPU's memory in bytes, or null when nvidia-smi cannot say. */
function gpuMemoryBytes(): number | null {
  try {
    const out = execFileSync('nvidia-smi', ['--query-gpu=memory.total', '--format=csv,noheader,nounits'], { encoding: 'utf8', timeout: 5_000 });
    const mib = out.split('\n').map(Number).filter((n) => Number.isFinite(n) && n > 0);
    return mib.length > 0 ? Math.min(...mib) * 1024 ** 2 : null;
  } catch {
    return null;
  }
}

/** One stage's memory needs (bytes). */
export interface StepMemory {
  perImageBytes: number;
  gradientBytes: number;
  optimizerBytes: number;
}

/** The memory model above for the part of `graph` above `cut`, plus a head with `headParams` weights. */
export function stepMemory(graph: LayerGraph, cut: Cut, p: { batchStatistics: boolean; optimizer: Optimizer; headParams: number }): StepMemory {
  let elements = product(tensorShape(graph, cut.cutLayer));
  let params = p.headParams;
  for (const name of cut.topLayers) {
    elements += product(tensorShape(graph, name));
    params += graph.model.getLayer(name).countParams();
  }
  const copies = p.batchStatistics ? ACTIVATION_COPIES.batchStatistics : ACTIVATION_COPIES.frozenStatistics;
  return { perImageBytes: Math.ceil(4 * elements * copies), gradientBytes: 4 * params * GRADIENT_COPIES, optimizerBytes: 4 * params * OPTIMIZER_COPIES[p.optimizer] };
}

/** The resident part of the model above, for a base `model` (bytes). */
export function residentBytes(model: tf.LayersModel): number {
  return RESIDENT_COPIES * 4 * model.countParams();
}

export type MicroBatchPlan =
  | {
      fits: true;
      /** Images per forward + backward pass (= batchSize when no accumulation is needed). */
      microBatch: number;
      batchSize: number;
      perImageBytes: number;
      fixedBytes: number;
      budgetBytes: number;
    }
  | {
      fits: false;
      /** Not even one image fits: the spec cannot run on this backend. */
      code: 'batch_exceeds_memory';
      message: string;
      perImageBytes: number;
      fixedBytes: number;
      budgetBytes: number;
    };

/** The largest micro-batch (≤ batchSize) whose step fits `budget`, given what is resident already. */
export function fitMicroBatch(need: StepMemory, p: { batchSize: number; residentBytes: number; budget: MemoryBudget; what: string }): MicroBatchPlan {
  const fixedBytes = p.residentBytes + need.gradientBytes;
  const room = p.budget.bytes - fixedBytes;
  const updateFits = p.residentBytes + need.optimizerBytes <= p.budget.bytes;
  const microBatch = updateFits ? Math.min(p.batchSize, Math.floor(room / Math.max(1, need.perImageBytes))) : 0;
  const sizes = { perImageBytes: need.perImageBytes, fixedBytes, budgetBytes: p.budget.bytes };
  if (microBatch >= 1) return { fits: true, microBatch, batchSize: p.batchSize, ...sizes };
  const mib = (b: number) => `${Math.ceil(b / 1024 ** 2)} MiB`;
  return {
    fits: false,
    code: 'batch_exceeds_memory',
    message:
      `${p.what} needs ~${mib(p.residentBytes + Math.max(need.gradientBytes + need.perImageBytes, need.optimizerBytes))} ` +
      `(weights, gradients and optimizer state, and ~${mib(need.perImageBytes)} per image), more than the ${mib(p.budget.bytes)} ` +
      `of ${p.budget.source} even one image at a time; ` +
      `unfreeze fewer layers, use a smaller base model, or run on a backend with more memory (ML_BACKEND=tensorflow or tensorflow-gpu)`,
    ...sizes,
  };
}

/**
 * Whether a job can train before any work starts (for the API, to refuse with 422): the
 * micro-batch each stage of `strategy` would use on `backend`, the smallest of them returned.
 * `model` is the base (a zoo base or a trained model cut back to one; only its shapes are read, so
 * one built from its topology alone, weights released, plans the same); `headParams` defaults to
 * a linear head over its embedding (the head's weights are small beside any base's).
 * Throws what planStages throws for an invalid spec (unknown layer, bad stages).
 */
export function planMicroBatch(p: {
  model: tf.LayersModel;
  strategy: Strategy;
  hyperparameters: Hyperparameters;
  backend: BackendName;
  budget?: MemoryBudget;
  numClasses?: number;
  /** What the step is, for the message (default: the strategy and stage). */
  what?: string;
}): MicroBatchPlan {
  const graph = layerGraph(p.model);
  const budget = p.budget ?? memoryBudget(p.backend);
  const embedding = product(tensorShape(graph, graph.outputName));
  const widths = [embedding, ...p.hyperparameters.head.hiddenUnits, Math.max(2, p.numClasses ?? 2)];
  const headParams = widths.slice(1).reduce((sum, w, i) => sum + (widths[i]! + 1) * w, 0);
  const resident = residentBytes(p.model);
  let best: MicroBatchPlan | null = null;
  if (p.strategy === 'prototype') {
    return { fits: true, microBatch: p.hyperparameters.batchSize, batchSize: p.hyperparameters.batchSize, perImageBytes: 0, fixedBytes: resident, budgetBytes: budget.bytes };
  }
  for (const stage of planStages(p.strategy, p.hyperparameters, graph)) {
    const need = stepMemory(graph, stage.cut, { batchStatistics: p.strategy === 'scratch', optimizer: p.hyperparameters.optimizer, headParams });
    const plan = fitMicroBatch(need, { batchSize: p.hyperparameters.batchSize, residentBytes: resident, budget, what: p.what ?? `strategy ${p.strategy} (stage ${stage.index})` });
    if (!plan.fits) return plan;
    if (!best || (best.fits && plan.microBatch < best.microBatch)) best = plan;
  }
  return best!;
}

/** Thrown by trainClassifier when not even one image fits: the same spec fails every time. */
export function cannotFit(plan: Extract<MicroBatchPlan, { fits: false }>): DomainError {
  return new DomainError(plan.code, plan.message, 422, { perImageBytes: plan.perImageBytes, fixedBytes: plan.fixedBytes, budgetBytes: plan.budgetBytes });
}

/** The backend tensors live on now, for the budget (tests that set 'cpu' directly count as cpu). */
export function currentBackend(): BackendName {
  const name = tf.getBackend();
  const chosen = activeBackend();
  if (chosen && (chosen === name || (chosen === 'tensorflow-gpu' && name === 'tensorflow'))) return chosen;
  if (name === 'wasm' || name === 'cpu') return name;
  if (name === 'tensorflow') return 'tensorflow';
  return 'cpu';
}
