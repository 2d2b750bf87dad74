// A job's checkpoints: written atomically, pruned to the best and the last few, read back to
// resume. A checkpoint's objects go up first, under a prefix of their own; the Postgres row
// that makes them visible is committed after. A crash at any point leaves either a whole
// checkpoint or none (plus stray objects, swept).
//
// Every epoch commits its metrics row at once; its checkpoint is written when one is due: after
// `intervalSeconds` of training since the last one (0: after every epoch), and at the end of the
// run (`flush`). Head-only epochs take milliseconds while a checkpoint costs several S3 writes
// and a commit, so a checkpoint per epoch would cost more than the training; with the cadence a
// killed run redoes at most `intervalSeconds` of training (plus the unfinished epoch) from the
// last checkpoint, and a resume forgets the metrics rows after it, which are trained and
// committed again. Between checkpoints the newest epoch and the best one are held in memory
// (taken during their epoch's callback, the only time the trainer can give them), so the run's
// end and every due checkpoint also write the best epoch's if it has none yet: retention keeps
// the best epoch's checkpoint as it did with one per epoch. The final model does not depend on
// it: it comes from the best weights the trainer keeps in memory, which every checkpoint's state
// also carries.
import { bestEpoch } from '@finetune/core';
import type { Checkpoint, EpochMetricInput, JobsRepository } from '@finetune/db';
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

/** An epoch's checkpoint, taken during its callback, written now or later. */
interface Taken {
  epoch: number;
  elapsedMs: number;
  /** Under this run's lease: a stale run never overwrites a live run's objects. */
  prefix: string;
  files: Array<[name: string, body: Uint8Array, type: string]>;
}

export class JobCheckpoints {
  private readonly intervalMs: number;
  /** Training time since the last checkpoint this run wrote (or since the run began). */
  private sinceLastMs = 0;
  /** The newest epoch, when its checkpoint is not written yet. */
  private latest: Taken | null = null;
  /** The best epoch so far, when its checkpoint is not written yet. */
  private best: Taken | null = null;

  constructor(
    private readonly store: ObjectStore,
    private readonly jobs: JobsRepository,
    private readonly jobId: string,
    private readonly lease: string,
    private readonly keepLast: number,
    intervalSeconds = 0,
  ) {
    this.intervalMs = intervalSeconds * 1000;
  }

  /**
   * After every completed epoch (within its callback): commits the epoch's metrics, with its
   * checkpoint when one is due, and keeps it to write later otherwise.
   */
  async commitEpoch(event: EpochEvent, elapsedMs: number): Promise<void> {
    const taken = await this.take(event, elapsedMs);
    this.sinceLastMs += event.durationMs;
    const metric = epochMetric(event);
    if (this.sinceLastMs < this.intervalMs) {
      await this.jobs.recordEpoch(this.jobId, this.lease, metric, null);
      this.latest = taken;
      if (event.isBest) this.best = taken;
      return;
    }
    // The best epoch's checkpoint, if it is not this one and has none yet, goes with it.
    const best = !event.isBest && this.best ? this.best : null;
    await this.write([taken, ...(best ? [best] : [])], async () => {
      await this.jobs.recordEpoch(this.jobId, this.lease, metric, checkpointRow(taken));
      if (best) await this.jobs.recordCheckpoints(this.jobId, this.lease, [{ epoch: best.epoch, ...checkpointRow(best) }]);
    });
  }

  /**
   * Writes the checkpoints still held in memory — the newest epoch's and the best one's — when
   * the training ends, however it ends (the last epoch, early stopping, cancel, a spent budget,
   * a handover): the next run of a handed-over job resumes from the newest epoch.
   */
  async flush(): Promise<void> {
    const pending = [this.latest, this.best].filter((t, i, all): t is Taken => t !== null && all.findIndex((o) => o?.epoch === t.epoch) === i);
    if (pending.length === 0) return;
    await this.write(pending, () => this.jobs.recordCheckpoints(this.jobId, this.lease, pending.map((t) => ({ epoch: t.epoch, ...checkpointRow(t) }))));
  }

  /** The epoch's checkpoint objects: the trainable part as a layers model, and the training state. */
  private async take(event: EpochEvent, elapsedMs: number): Promise<Taken> {
    const model = await event.checkpoint();
    const state = await event.state();
    return {
      epoch: event.epoch,
      elapsedMs,
      prefix: keys.checkpointPrefix(this.jobId, event.epoch, this.lease.slice(0, 8)),
      files: [
        [CHECKPOINT_FILES.model, model.modelJson, 'application/json'],
        [CHECKPOINT_FILES.weights, model.weights, 'application/octet-stream'],
        [CHECKPOINT_FILES.state, state, 'application/octet-stream'],
      ],
    };
  }

  /** Uploads the checkpoints' objects, then `commit`s their rows, then prunes. */
  private async write(taken: Taken[], commit: () => Promise<void>): Promise<void> {
    // Side by side: the rows committed below are what make them checkpoints, whatever order they land in.
    await Promise.all(taken.flatMap((t) => t.files.map(([file, body, type]) => this.store.putBuffer(`${t.prefix}${file}`, body, type))));
    try {
      await commit();
    } catch (error) {
      // Not committed: nothing points at these objects.
      if (error instanceof LeaseLostError) await Promise.all(taken.map((t) => this.store.deletePrefix(t.prefix).catch(() => undefined)));
      throw error;
    }
    this.sinceLastMs = 0;
    this.latest = null;
    this.best = null;
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

function epochMetric(event: EpochEvent): EpochMetricInput {
  return {
    epoch: event.epoch,
    stage: event.stage ?? null,
    trainLoss: event.trainLoss,
    trainAcc: event.trainAcc,
    valLoss: event.valLoss,
    valAcc: event.valAcc,
    learningRate: event.learningRate,
    durationMs: Math.round(event.durationMs),
  };
}

function checkpointRow(t: Taken): { storagePrefix: string; sizeBytes: number; elapsedMs: number } {
  return { storagePrefix: t.prefix, sizeBytes: t.files.reduce((sum, [, body]) => sum + body.byteLength, 0), elapsedMs: t.elapsedMs };
}
