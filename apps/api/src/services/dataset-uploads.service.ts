import { randomUUID } from 'node:crypto';
import { checkStorageQuota, DomainError, effectiveQuotas, NotFoundError } from '@finetune/core';
import { tenantUsage, type Dataset, type DatasetUpload, type DatasetUploadsRepository } from '@finetune/db';
import { keys, ObjectChangedError, ObjectNotFoundError, type PresignedRequest } from '@finetune/storage';
import type { AppDeps } from '../deps.ts';
import { checkDatasetName, createDataset, stageArchive, uploadTooLarge, type StagedArchive } from './datasets.service.ts';

// Direct-to-storage uploads: the API hands out a presigned PUT URL and the zip goes from the
// client to S3 without passing through the API; completing the upload then reads it back once
// and runs the same inspection as a multipart upload before it becomes a dataset.

export type UploadDeps = AppDeps & { uploads: DatasetUploadsRepository };

/** Where log lines go (pino's and Fastify's loggers fit). */
export interface SweepLogger {
  info(object: object, message: string): void;
  warn(object: object, message: string): void;
}

export interface NewUpload {
  filename: string;
  size: number;
  name?: string | undefined;
  /** labelled (default) or unlabelled, as the multipart upload's `kind` field. */
  kind?: 'labelled' | 'unlabelled' | undefined;
}

export interface CreatedUpload {
  upload: DatasetUpload;
  request: PresignedRequest;
}

/**
 * Refuses an upload that could never become a dataset: above MAX_UPLOAD_BYTES (413), or more
 * than the tenant's storage has room for, counting what its open uploads have declared (403).
 * The binding check is the dataset's own, under the tenant's lock, when the upload completes.
 */
export async function createUpload(deps: UploadDeps, tenantId: string, input: NewUpload, now = new Date()): Promise<CreatedUpload> {
  const { limits, uploadUrlTtlSeconds } = deps.config;
  if (input.size > limits.uploadBytes) throw uploadTooLarge(limits.uploadBytes);
  const name = input.name === undefined ? null : checkDatasetName(input.name);
  await checkRoomFor(deps, tenantId, input.size, now);

  const id = randomUUID();
  const storageKey = keys.uploadSource(tenantId, id);
  const expiresAt = new Date(now.getTime() + uploadUrlTtlSeconds * 1000);
  // Signing is local (no request to S3). Should the row not be written, the URL is never handed
  // out: no object can exist without a row for the sweep to find.
  const request = await deps.store.presignPut(storageKey, { contentLength: input.size, expiresInSeconds: uploadUrlTtlSeconds });
  const upload = await deps.uploads.create({ id, tenantId, storageKey, filename: input.filename, sizeBytes: input.size, name, kind: input.kind ?? 'labelled', expiresAt });
  return { upload, request };
}

async function checkRoomFor(deps: UploadDeps, tenantId: string, size: number, now: Date): Promise<void> {
  const tenant = await deps.tenants.get(tenantId);
  if (!tenant) throw new NotFoundError('tenant', tenantId);
  const limits = effectiveQuotas(tenant, deps.config.quotas);
  if (limits.storedBytes === null) return;
  const reserved = await deps.uploads.reservedBytes(tenantId, now);
  checkStorageQuota(await tenantUsage(deps.db, tenantId), limits, size + reserved);
}

export interface CompletedUpload {
  dataset: Dataset;
  /** False when the upload had already been completed: the same dataset, answered again. */
  created: boolean;
}

/**
 * Turns an uploaded object into a dataset. Completing twice is idempotent: the second call
 * answers the dataset the first created (as long as it exists), so a client whose connection
 * dropped may simply retry.
 */
export async function completeUpload(deps: UploadDeps, tenantId: string, uploadId: string, now = new Date()): Promise<CompletedUpload> {
  let upload = await deps.uploads.get(tenantId, uploadId);
  for (let attempt = 0; ; attempt++) {
    if (!upload) throw new NotFoundError('upload', uploadId);
    const done = await finished(deps, upload, now);
    if (done) return done;
    if (await deps.uploads.claim(tenantId, uploadId, now)) break;
    // Claimed or expired in between: answer as the row now says.
    upload = await deps.uploads.get(tenantId, uploadId);
    if (attempt > 0) throw inProgress(uploadId);
  }

  let staged: StagedArchive | undefined;
  try {
    const object = await deps.store.head(upload.storageKey);
    if (!object) throw new DomainError('upload_not_uploaded', `nothing has been uploaded for upload ${uploadId} yet: PUT the zip to its URL first`, 409);
    const maxBytes = Math.min(Number(upload.sizeBytes), deps.config.limits.uploadBytes);
    if (object.size > maxBytes) {
      throw object.size > deps.config.limits.uploadBytes
        ? uploadTooLarge(deps.config.limits.uploadBytes)
        : uploadTooLarge(maxBytes, 'the size declared for it');
    }
    // The version that was measured is the one read and the one copied (ETag): a client PUTting
    // again meanwhile cannot swap the inspected archive for another.
    const stored = { key: upload.storageKey, etag: object.etag };
    staged = await stageArchive(deps, {
      stream: await deps.store.getStream(upload.storageKey, { ifMatch: object.etag }),
      filename: upload.filename,
      maxBytes,
      stored,
    });
    const dataset = await createDataset(deps, tenantId, staged, upload.name ?? undefined, upload.kind);
    await deps.uploads.complete(uploadId, dataset.id);
    // The dataset has its own copy; a staged object that outlives this is only wasted space.
    await deps.store.delete(upload.storageKey).catch(() => undefined);
    return { dataset, created: true };
  } catch (error) {
    const failure = asUploadError(error, uploadId);
    // A refused archive leaves nothing behind; a missing one, a full quota or an outage keeps
    // what there is, so the client can fix that and complete again.
    if (failure instanceof DomainError && refusesContent(failure)) {
      await deps.store.delete(upload.storageKey).catch(() => undefined);
    }
    await deps.uploads.release(uploadId);
    throw failure;
  } finally {
    await staged?.discard();
  }
}

/** The answer for an upload that can no longer be completed, or undefined if it can. */
async function finished(deps: UploadDeps, upload: DatasetUpload, now: Date): Promise<CompletedUpload | undefined> {
  if (upload.status === 'completed') {
    const dataset = upload.datasetId ? await deps.datasets.get(upload.tenantId, upload.datasetId) : null;
    if (dataset?.status === 'ready') return { dataset, created: false };
    throw new DomainError('upload_completed', `upload ${upload.id} was completed and its dataset has since been deleted`, 409);
  }
  if (upload.status === 'expired' || upload.expiresAt <= now) {
    throw new DomainError('upload_expired', `upload ${upload.id} expired at ${upload.expiresAt.toISOString()}: create a new one`, 410);
  }
  if (upload.status === 'completing') throw inProgress(upload.id);
  return undefined;
}

const inProgress = (id: string) => new DomainError('upload_in_progress', `upload ${id} is being completed by another request`, 409);

function asUploadError(error: unknown, uploadId: string): unknown {
  if (error instanceof ObjectNotFoundError) {
    return new DomainError('upload_not_uploaded', `nothing has been uploaded for upload ${uploadId} yet: PUT the zip to its URL first`, 409);
  }
  if (error instanceof ObjectChangedError) {
    return new DomainError('upload_changed', `the object of upload ${uploadId} was replaced while it was being completed: complete it again`, 409);
  }
  return error;
}

/** Errors about the archive itself (too large, empty, refused by the inspection). */
function refusesContent(error: DomainError): boolean {
  return error.status === 413 || error.status === 422 || error.code === 'empty_upload';
}

/**
 * Deletes the objects of uploads nobody completed and marks them expired; returns how many.
 * Object first, then row: a failure in between leaves a row the next sweep finishes.
 */
export async function sweepExpiredUploads(deps: UploadDeps, now = new Date()): Promise<number> {
  let swept = 0;
  for (const upload of await deps.uploads.due(now)) {
    await deps.store.delete(upload.storageKey);
    await deps.uploads.markExpired(upload.id);
    swept++;
  }
  return swept;
}

export const SWEEP_INTERVAL_MS = 60_000;

/** Runs the sweep now and every SWEEP_INTERVAL_MS until `stop()`, which waits for a running one. */
export function startUploadSweep(deps: UploadDeps, log: SweepLogger): { stop(): Promise<void> } {
  let running: Promise<void> | undefined;
  const sweep = () => {
    running ??= sweepExpiredUploads(deps)
      .then((swept) => {
        if (swept > 0) log.info({ swept }, 'expired dataset uploads removed');
      })
      .catch((error: unknown) => log.warn({ err: error }, 'dataset upload sweep failed; retried next interval'))
      .finally(() => {
        running = undefined;
      });
  };
  sweep();
  const timer = setInterval(sweep, SWEEP_INTERVAL_MS);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}

export function presentUpload({ upload, request }: CreatedUpload) {
  return { uploadId: upload.id, url: request.url, method: request.method, headers: request.headers, expiresAt: upload.expiresAt.toISOString() };
}
