import { baseModelLabel, DomainError, type JobSpec, type MlBackendChoice, type PixelScale } from '@finetune/core';
import type { BaseModelsRepository, ModelsRepository } from '@finetune/db';
import {
  baseFromTrainedModel,
  customBaseFromTopology,
  initBackend,
  loadBaseModel,
  modelFromTopology,
  planMicroBatch,
  planStatisticsPass,
  requireBatchNormalization,
  type MicroBatchPlan,
  type tf,
} from '@finetune/ml';
import { keys, ObjectNotFoundError, type ObjectStore } from '@finetune/storage';

/** Layer graphs of custom and trained-model bases kept (see `graphOf`). */
const GRAPHS_CACHED = 32;

/** Where a non-zoo base's model.json is read from. checkSpec has found the base (the tenant's own, ready) already. */
export interface StoredBases {
  tenantId: string;
  store: ObjectStore;
  baseModels: BaseModelsRepository;
  models: ModelsRepository;
}

/**
 * Refuses, at POST /v1/jobs, a spec whose training step cannot fit the training backend's memory
 * even one image at a time (422 `batch_exceeds_memory`, naming the need and the limit), so the
 * user hears it before any work rather than from a failed job. It runs the planner the worker
 * runs (packages/ml micro-batch.ts) on the base's layer shapes, against the memory budget of the
 * backend this process resolves ML_BACKEND to — the API and the workers share that setting (and
 * ML_MEMORY_BUDGET_BYTES). Any spec that fits is accepted: the worker splits a batch that does
 * not fit whole into micro-batches. domain_adaptation is planned twice: its head training and,
 * first, the batch-norm statistics pass the worker runs before it.
 *
 * Every kind of base is planned: a zoo base as the zoo keeps it (loaded once per process); a
 * custom base or a trained model's base from its stored model.json alone — the planner reads
 * shapes and weight counts, never weight values, so the weights are not downloaded.
 */
export class MemoryFitCheck {
  private backend: ReturnType<typeof initBackend> | undefined;
  /**
   * Base (`base:<id>` / `model:<id>`) → its layer graph, least recently used first. Built once
   * and kept: a ready base's and a trained model's files never change. Each entry's weights (the
   * zeros topology.ts builds with) are freed as soon as it is built, so an entry holds no tensor
   * memory, and an evicted one is simply dropped. Concurrent first checks of a base share one build.
   */
  private readonly graphs = new Map<string, Promise<tf.LayersModel>>();

  constructor(private readonly backendChoice: MlBackendChoice) {}

  async check(spec: JobSpec, numClasses: number, stored: StoredBases): Promise<void> {
    if (spec.strategy === 'prototype') return;
    this.backend ??= initBackend(this.backendChoice);
    const backend = await this.backend;
    const model = typeof spec.baseModel === 'string' ? (await loadBaseModel(spec.baseModel)).model : await this.graphOf(spec.baseModel, stored);
    if (spec.strategy === 'domain_adaptation') {
      // What the worker does first: the same checks, on the same graph.
      requireBatchNormalization(model);
      refuseUnfit(planStatisticsPass(model, spec.hyperparameters, backend));
    }
    refuseUnfit(planMicroBatch({ model, strategy: spec.strategy, hyperparameters: spec.hyperparameters, backend, numClasses }));
  }

  private graphOf(ref: Exclude<JobSpec['baseModel'], string>, stored: StoredBases): Promise<tf.LayersModel> {
    const label = baseModelLabel(ref);
    const cached = this.graphs.get(label);
    if (cached) {
      this.graphs.delete(label);
      this.graphs.set(label, cached); // most recently used goes last
      return cached;
    }
    const building = buildGraph(ref, label, stored);
    this.graphs.set(label, building);
    // A failed build (S3 unavailable, say) is not kept: the next check tries again.
    building.catch(() => this.graphs.get(label) === building && this.graphs.delete(label));
    while (this.graphs.size > GRAPHS_CACHED) this.graphs.delete(this.graphs.keys().next().value as string);
    return building;
  }
}

function refuseUnfit(plan: MicroBatchPlan): void {
  if (!plan.fits) {
    throw new DomainError(plan.code, plan.message, 422, { perImageBytes: plan.perImageBytes, fixedBytes: plan.fixedBytes, budgetBytes: plan.budgetBytes });
  }
}

/**
 * The base the worker's resolve-base.ts builds for `ref`, made from its model.json alone, its
 * weights freed once built: what is left is the graph (layers, output shapes, weight shapes),
 * all the planner reads.
 */
async function buildGraph(ref: Exclude<JobSpec['baseModel'], string>, label: string, stored: StoredBases): Promise<tf.LayersModel> {
  if ('baseModelId' in ref) {
    const gone = () => new DomainError('unknown_base_model', `base model ${ref.baseModelId} (baseModel.baseModelId) does not exist or is not ready`, 422);
    const row = await stored.baseModels.get(stored.tenantId, ref.baseModelId);
    if (!row || row.status !== 'ready') throw gone();
    const custom = await customBaseFromTopology(
      await read(stored.store, keys.baseModelFile(row.id, 'model.json'), gone),
      { embeddingLayer: row.embeddingLayer, inputSize: row.inputSize, scale: row.scale as PixelScale },
      { id: label, source: row.name },
    );
    custom.dispose();
    return custom.base.model;
  }
  const gone = () => new DomainError('unknown_model', `model ${ref.modelId} (baseModel.modelId) does not exist`, 422);
  const row = await stored.models.get(stored.tenantId, ref.modelId);
  if (!row) throw gone();
  const json = JSON.parse((await read(stored.store, keys.modelFile(row.id, 'model.json'), gone)).toString('utf8')) as { modelTopology: object };
  const trained = await modelFromTopology(json.modelTopology);
  try {
    const base = baseFromTrainedModel(trained, { id: label });
    base.model.dispose();
    return base.model;
  } finally {
    trained.dispose();
  }
}

/** A base's stored file; gone with its files when it was deleted since checkSpec found it. */
async function read(store: ObjectStore, key: string, gone: () => DomainError): Promise<Buffer> {
  try {
    return await store.getBuffer(key);
  } catch (error) {
    throw error instanceof ObjectNotFoundError ? gone() : error;
  }
}
