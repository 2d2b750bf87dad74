import { baseModelLabel, DomainError, type BaseModelRef, type PixelScale } from '@finetune/core';
import type { BaseModelsRepository, ModelsRepository } from '@finetune/db';
import { baseFromTrainedModel, buildCustomBase, loadBaseModel, loadModelFromFiles, type BaseModel } from '@finetune/ml';
import { keys, type ObjectStore } from '@finetune/storage';

export interface ResolvedBase {
  base: BaseModel;
  /** As recorded on models: the zoo id, or `model:<id>`. */
  label: string;
  /** Embedding-cache namespace (a key segment: no slash). */
  cacheName: string;
  /** Frees what this job loaded; zoo bases stay cached in the process. */
  dispose: () => void;
}

/**
 * The base a job starts from: a zoo model, a model an earlier job trained with its head cut
 * off (pretrain on a data-rich task, transfer to the scarce one), or a custom base the tenant
 * added (rebuilt from its stored files as it was validated).
 */
export async function resolveBase(
  store: ObjectStore,
  repos: { models: ModelsRepository; baseModels: BaseModelsRepository },
  tenantId: string,
  ref: BaseModelRef,
): Promise<ResolvedBase> {
  if (typeof ref === 'string') {
    return { base: await loadBaseModel(ref), label: ref, cacheName: ref, dispose: () => undefined };
  }
  if ('baseModelId' in ref) return resolveCustomBase(store, repos.baseModels, tenantId, ref.baseModelId);
  const { models } = repos;
  // Only the job's own tenant's models: another tenant's is as unknown as a missing one.
  const row = await models.get(tenantId, ref.modelId);
  if (!row) throw new DomainError('unknown_model', `model ${ref.modelId} (baseModel.modelId) does not exist`, 422);
  const trained = await loadModelFromFiles(
    await store.getBuffer(keys.modelFile(row.id, 'model.json')),
    await store.getBuffer(keys.modelFile(row.id, 'weights.bin')),
  );
  const label = baseModelLabel(ref);
  const base = baseFromTrainedModel(trained, {
    id: label,
    source: `model ${row.id} (trained by job ${row.jobId} on ${row.baseModel})`,
  });
  return {
    base,
    label,
    cacheName: `model-${row.id}`,
    dispose: () => {
      base.model.dispose();
      trained.dispose();
    },
  };
}

async function resolveCustomBase(store: ObjectStore, baseModels: BaseModelsRepository, tenantId: string, id: string): Promise<ResolvedBase> {
  // Only the job's own tenant's bases: another tenant's is as unknown as a missing one.
  const row = await baseModels.get(tenantId, id);
  if (!row || row.status !== 'ready') throw new DomainError('unknown_base_model', `base model ${id} (baseModel.baseModelId) does not exist or is not ready`, 422);
  const label = baseModelLabel({ baseModelId: id });
  const custom = await buildCustomBase(
    await store.getBuffer(keys.baseModelFile(id, 'model.json')),
    await store.getBuffer(keys.baseModelFile(id, 'weights.bin')),
    { embeddingLayer: row.embeddingLayer, inputSize: row.inputSize, scale: row.scale as PixelScale },
    { id: label, source: row.source === 'url' ? (row.url ?? 'a URL') : `an upload (${row.name})` },
  );
  // The embedding cache is keyed by base: each custom base gets its own namespace.
  return { base: custom.base, label, cacheName: `base-${id}`, dispose: custom.dispose };
}
