import { DomainError, type JobSpec, type MlBackendChoice } from '@finetune/core';
import { initBackend, loadBaseModel, planMicroBatch } from '@finetune/ml';

/**
 * Refuses, at POST /v1/jobs, a spec whose training step cannot fit the training backend's memory
 * even one image at a time (422 `batch_exceeds_memory`, naming the need and the limit), so the
 * user hears it before any work rather than from a failed job. It runs the planner the worker
 * runs (packages/ml micro-batch.ts) on the base's layer shapes, against the memory budget of the
 * backend this process resolves ML_BACKEND to — the API and the workers share that setting (and
 * ML_MEMORY_BUDGET_BYTES). Any spec that fits is accepted: the worker splits a batch that does
 * not fit whole into micro-batches.
 *
 * Zoo bases only: they are loaded once per process (the zoo keeps them), where a base from a
 * trained model or a custom base would mean loading the tenant's weights from S3 on every POST.
 * Those are planned by the worker before their first step, which fails the job once (no retries)
 * with the same code and message.
 */
export class MemoryFitCheck {
  private backend: ReturnType<typeof initBackend> | undefined;

  constructor(private readonly backendChoice: MlBackendChoice) {}

  async check(spec: JobSpec, numClasses: number): Promise<void> {
    if (typeof spec.baseModel !== 'string' || spec.strategy === 'prototype') return;
    this.backend ??= initBackend(this.backendChoice);
    const backend = await this.backend;
    const base = await loadBaseModel(spec.baseModel);
    const plan = planMicroBatch({ model: base.model, strategy: spec.strategy, hyperparameters: spec.hyperparameters, backend, numClasses });
    if (!plan.fits) {
      throw new DomainError(plan.code, plan.message, 422, {
        perImageBytes: plan.perImageBytes,
        fixedBytes: plan.fixedBytes,
        budgetBytes: plan.budgetBytes,
      });
    }
  }
}
