import { baseModelLabel, DomainError, type BaseModelRef } from '@finetune/core';
import type { ModelsRepository } from '@finetune/db';
import { baseFromTrainedModel, loadBaseModel, loadModelFromFiles, type BaseModel } from '@finetune/ml';
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
 * The base a job starts from: a zoo model, or a model an earlier job trained with its head cut
 * off (pretrain on a data-rich task, transfer to the scarce one).
 */
export async function resolveBase(store: ObjectStore, models: ModelsRepository, tenantId: string, ref: BaseModelRef): Promise<ResolvedBase> {
  if (typeof ref === 'string') {
    return { base: await loadBaseModel(ref), label: ref, cacheName: ref, dispose: () => undefined };
  }
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
