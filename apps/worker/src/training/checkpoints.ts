// A job's checkpoints: written atomically, pruned to the best and the last few, read back to
// resume. A checkpoint's objects go up first, under a prefix of their own; the Postgres row
// that makes them visible is committed after, with the epoch's metrics, in one transaction. A
// crash at any point leaves either a whole checkpoint or none (plus stray objects, swept).
import { bestEpoch } from '@finetune/core';
import type { Checkpoint, JobsRepository } from '@finetune/db';
import { LeaseLostError } from '@finetune/db';
import type { EpochEvent } from '@finetune/ml';
import { keys, ObjectNotFoundError, type ObjectStore } from '@finetune/storage';

export const CHECKPOINT_FILES = { model: 'model.json', weights: 'weights.bin', state: 'state.bin' } as const;

export interface ResumePoint {
  epoch: number;
  state: Uint8Array;
  elapsedMs: number;
}

/** The epochs retention keeps: the best one and the `keepLast` most recent. */
export function epochsToKeep(checkpoints: Checkpoint[], keepLast: number): Set<number> {
  const keep = new Set<number>();
  const byEpoch = [...checkpoints].sort((a, b) => b.epoch - a.epoch);
  byEpoch.slice(0, keepLast).forEach((c) => keep.add(c.epoch));
  const best = bestEpoch(checkpoints);
  if (best) keep.add(best.epoch);
  return keep;
}

export class JobCheckpoints {
  constructor(
    private readonly store: ObjectStore,
    private readonly jobs: JobsRepository,
    private readonly jobId: string,
    private readonly lease: string,
    private readonly keepLast: number,
  ) {}

  /** Writes the epoch's checkpoint and commits it with the epoch's metrics, then prunes. */
  async save(event: EpochEvent, elapsedMs: number): Promise<void> {
    const prefix = keys.checkpointPrefix(this.jobId, event.epoch, this.lease.slice(0, 8));
    const model = await event.checkpoint();
    const state = await event.state();
    const files: Array<[string, Uint8Array, string]> = [
      [CHECKPOINT_FILES.model, model.modelJson, 'application/json'],
      [CHECKPOINT_FILES.weights, model.weights, 'application/octet-stream'],
      [CHECKPOINT_FILES.state, state, 'application/octet-stream'],
    ];
    // Side by side: the row below is what makes them a checkpoint, whatever order they land in.
    await Promise.all(files.map(([file, body, type]) => this.store.putBuffer(`${prefix}${file}`, body, type)));
    const sizeBytes = files.reduce((sum, [, body]) => sum + body.byteLength, 0);
    try {
      await this.jobs.recordEpoch(
        this.jobId,
        this.lease,
        {
          epoch: event.epoch,
          stage: event.stage ?? null,
          trainLoss: event.trainLoss,
          trainAcc: event.trainAcc,
          valLoss: event.valLoss,
          valAcc: event.valAcc,
          learningRate: event.learningRate,
          durationMs: Math.round(event.durationMs),
        },
        { storagePrefix: prefix, sizeBytes, elapsedMs },
      );
    } catch (error) {
      // Not committed: nothing points at these objects.
      if (error instanceof LeaseLostError) await this.store.deletePrefix(prefix).catch(() => undefined);
      throw error;
    }
    await this.prune();
  }

  /** Keeps the best checkpoint and the last `keepLast`; rows go first so none points at deleted objects. */
  async prune(): Promise<void> {
    const all = await this.jobs.checkpoints(this.jobId);
    const keep = epochsToKeep(all, this.keepLast);
    const drop = all.filter((c) => !keep.has(c.epoch));
    if (drop.length === 0) return;
    await this.jobs.deleteCheckpoints(this.jobId, drop.map((c) => c.epoch));
    await Promise.all(drop.map((c) => this.store.deletePrefix(c.storagePrefix)));
  }

  /**
   * The newest checkpoint a run can resume from. One whose state cannot be read (objects lost)
   * is forgotten, with the epochs after the usable one, which are then trained again.
   */
  async resumePoint(): Promise<ResumePoint | null> {
    const newestFirst = (await this.jobs.checkpoints(this.jobId)).sort((a, b) => b.epoch - a.epoch);
    for (const c of newestFirst) {
      try {
        const state = await this.store.getBuffer(`${c.storagePrefix}${CHECKPOINT_FILES.state}`);
        await this.forgetAfter(c.epoch);
        return { epoch: c.epoch, state, elapsedMs: c.elapsedMs };
      } catch (error) {
        if (!(error instanceof ObjectNotFoundError)) throw error;
      }
    }
    await this.forgetAfter(0);
    return null;
  }

  private async forgetAfter(epoch: number): Promise<void> {
    const dropped = await this.jobs.forgetEpochsAfter(this.jobId, this.lease, epoch);
    for (const prefix of dropped) await this.store.deletePrefix(prefix);
  }

  /** Deletes objects no checkpoint row points at (writes of runs that died or were fenced). */
  async sweepStray(): Promise<void> {
    const live = new Set((await this.jobs.checkpoints(this.jobId)).map((c) => c.storagePrefix));
    const objects = await this.store.list(keys.checkpointsPrefix(this.jobId));
    for (const o of objects) {
      const prefix = o.key.slice(0, o.key.lastIndexOf('/') + 1);
      if (!live.has(prefix)) await this.store.delete(o.key);
    }
  }
}
