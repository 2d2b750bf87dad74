import { createHash, randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { datasetZipLimits, DomainError, NotFoundError } from '@finetune/core';
import type { Dataset } from '@finetune/db';
import { inspectDatasetZip, runDataChecks, type DataReport } from '@finetune/ml';
import { keys } from '@finetune/storage';
import type { AppDeps } from '../deps.ts';

export interface DatasetCounts {
  train: Record<string, number>;
  val: Record<string, number>;
  /** Absent on datasets uploaded before the test split existed (their test/ was not read). */
  test?: Record<string, number>;
  /** Images of an unlabelled dataset (which has no classes, so nothing in the splits above). */
  unlabelled?: number;
  skipped: number;
  ignored: number;
  skippedFiles: { path: string; reason: string }[];
}

export const MAX_DATASET_NAME_LENGTH = 200;

// C0 and C1 control characters and DEL (NUL among them, which Postgres text refuses), and lone
// surrogates: nothing a person types into a name.
// eslint-disable-next-line no-control-regex
const NAME_FORBIDDEN = /[\u0000-\u001f\u007f-\u009f]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
// eslint-disable-next-line no-control-regex
const NAME_FORBIDDEN_ALL = new RegExp(NAME_FORBIDDEN.source, 'g');

/**
 * A `name` as the client sent it: refused rather than repaired, so what is stored is what was
 * asked for. `truncated` is the multipart field-size limit having cut the value.
 */
export function checkDatasetName(name: string, truncated = false): string {
  if (truncated || [...name].length > MAX_DATASET_NAME_LENGTH) {
    throw new DomainError('name_too_long', `name must be at most ${MAX_DATASET_NAME_LENGTH} characters`, 400);
  }
  if (NAME_FORBIDDEN.test(name)) {
    throw new DomainError('invalid_name', 'name must not contain control characters', 400);
  }
  return name;
}

export type DatasetKind = 'labelled' | 'unlabelled';

/** The multipart `kind` field: labelled (class folders, the default) or unlabelled (images only). */
export function checkDatasetKind(value: unknown): DatasetKind {
  if (value === 'labelled' || value === 'unlabelled') return value;
  throw new DomainError('invalid_kind', `kind must be "labelled" or "unlabelled" (got ${JSON.stringify(value)})`, 400);
}

/** The name a dataset gets without one: the upload's file name, made storable rather than
 * refused (it is a default, not something the client asked for). */
function defaultName(filename: string, id: string): string {
  const cleaned = filename.replace(NAME_FORBIDDEN_ALL, ' ').replace(/\.zip$/i, '').trim();
  return [...cleaned].slice(0, MAX_DATASET_NAME_LENGTH).join('').trim() || id;
}

/** An upload written to a private temp dir; `discard()` removes it whatever happens next. */
export interface StagedArchive {
  zipPath: string;
  filename: string;
  sizeBytes: number;
  sha256: string;
  /** The archive is already in the object store (a direct upload) as this version of this key:
   * the dataset's copy is made there, server-side, instead of uploading `zipPath`. */
  stored?: { key: string; etag: string | undefined } | undefined;
  discard: () => Promise<void>;
}

/** `what` names the limit: MAX_UPLOAD_BYTES by default, or a direct upload's declared size. */
export function uploadTooLarge(limit: number, what = 'the upload limit'): DomainError {
  return new DomainError('upload_too_large', `the archive exceeds ${what} (${limit} bytes)`, 413);
}

export interface ArchiveSource {
  stream: Readable;
  filename: string;
  /** Whether the multipart size limit cut the stream short. */
  truncated?: () => boolean;
  /** Bytes past which the stream is refused (413) as it is read. */
  maxBytes?: number;
  stored?: StagedArchive['stored'];
}

/**
 * Streams an uploaded zip — a multipart part, or an object a client PUT to S3 — to a temp file
 * (never whole in memory), hashing it on the way.
 */
export async function stageArchive(deps: AppDeps, upload: ArchiveSource): Promise<StagedArchive> {
  const dir = await mkdtemp(join(tmpdir(), 'finetune-upload-'));
  const discard = () => rm(dir, { recursive: true, force: true });
  try {
    const zipPath = join(dir, 'source.zip');
    const hash = createHash('sha256');
    const { maxBytes } = upload;
    let sizeBytes = 0;
    const hashing = new Transform({
      transform(chunk: Buffer, _encoding, done) {
        sizeBytes += chunk.length;
        if (maxBytes !== undefined && sizeBytes > maxBytes) return done(uploadTooLarge(maxBytes, 'the size allowed for it'));
        hash.update(chunk);
        done(null, chunk);
      },
    });
    await pipeline(upload.stream, hashing, createWriteStream(zipPath));
    if (upload.truncated?.()) throw uploadTooLarge(deps.config.limits.uploadBytes);
    if (sizeBytes === 0) throw new DomainError('empty_upload', 'the uploaded file is empty', 400);
    return { zipPath, filename: upload.filename, sizeBytes, sha256: hash.digest('hex'), stored: upload.stored, discard };
  } catch (error) {
    await discard();
    throw error;
  }
}

/**
 * Inspects a staged archive — hostile names, bombs, undecodable images, too few classes — and
 * only a valid one streams on to S3 and gets a row. A rejected upload leaves nothing behind.
 */
export async function createDataset(
  deps: AppDeps,
  tenantId: string,
  staged: StagedArchive,
  name: string | undefined,
  kind: DatasetKind = 'labelled',
): Promise<Dataset> {
  const { limits } = deps.config;
  const summary = await inspectDatasetZip(staged.zipPath, { ...datasetZipLimits(limits), maxPixels: limits.imagePixels }, undefined, kind);
  const report = runDataChecks({
    layout: summary.index.layout,
    classes: summary.index.classes,
    entries: summary.index.entries,
    facts: summary.facts,
    skipped: summary.skipped,
    ignored: summary.index.ignored,
  });

  const id = randomUUID();
  const storageKey = keys.datasetSource(id);
  if (staged.stored) await deps.store.copy(staged.stored.key, storageKey, { ifMatch: staged.stored.etag });
  else await deps.store.putFile(storageKey, staged.zipPath);
  const counts: DatasetCounts = {
    train: summary.counts.train,
    val: summary.counts.val,
    test: summary.counts.test,
    ...(kind === 'unlabelled' ? { unlabelled: summary.images } : {}),
    skipped: summary.skipped.length,
    ignored: summary.index.ignored,
    // Enough to tell the user what went wrong without storing a list as long as the archive.
    skippedFiles: summary.skipped.slice(0, 50),
  };
  try {
    return await deps.datasets.create({
      id,
      tenantId,
      name: (name === undefined ? '' : checkDatasetName(name).trim()) || defaultName(staged.filename, id),
      kind,
      storageKey,
      sizeBytes: BigInt(staged.sizeBytes),
      sha256: staged.sha256,
      layout: summary.index.layout,
      classes: summary.index.classes,
      counts: counts as object,
      // Findings name files and checks, never keys taken from the archive: plain JSON is safe.
      report: report as object,
    }, deps.config.quotas);
  } catch (error) {
    await deps.store.delete(storageKey);
    throw error;
  }
}

export async function getDataset(deps: AppDeps, tenantId: string, id: string): Promise<Dataset> {
  const dataset = await deps.datasets.get(tenantId, id);
  if (!dataset || dataset.status !== 'ready') throw new NotFoundError('dataset', id);
  return dataset;
}

/**
 * Only one of several concurrent deletes of a dataset wins `beginDelete`; the others find it
 * already going and answer 404, as for any dataset that is not (or no longer) there. If the
 * objects cannot be removed, the dataset is put back so the delete can be retried.
 */
export async function deleteDataset(deps: AppDeps, tenantId: string, id: string): Promise<void> {
  const dataset = await deps.datasets.beginDelete(tenantId, id);
  if (!dataset) throw new NotFoundError('dataset', id);
  try {
    await deps.store.deletePrefix(keys.datasetPrefix(id));
    // Cached embeddings live under cache/embeddings/<tenantId>/<base>/<datasetId>/ for every base used.
    const cached = await deps.store.list(keys.embeddingCacheTenantPrefix(tenantId));
    const prefixes = new Set(cached.map((o) => o.key).filter((k) => k.includes(`/${id}/`)).map((k) => k.slice(0, k.indexOf(`/${id}/`) + id.length + 2)));
    for (const prefix of prefixes) await deps.store.deletePrefix(prefix);
  } catch (error) {
    await deps.datasets.abortDelete(tenantId, id).catch(() => undefined);
    throw error;
  }
  await deps.datasets.finishDelete(tenantId, id);
}

/** The data checks of a dataset (tenant-scoped like getDataset). Datasets uploaded before the
 * checks existed have none: 404 report_unavailable. */
export async function getDatasetReport(deps: AppDeps, tenantId: string, id: string) {
  const dataset = await getDataset(deps, tenantId, id);
  const report = dataset.report as unknown as DataReport | null;
  if (!report) throw new DomainError('report_unavailable', `dataset ${id} was uploaded before data checks existed; upload it again to check it`, 404);
  return { datasetId: dataset.id, summary: report.summary, findings: report.findings };
}

export function presentDataset(dataset: Dataset) {
  const counts = dataset.counts as unknown as DatasetCounts;
  const report = dataset.report as unknown as DataReport | null;
  const total = (split: Record<string, number>) => Object.values(split).reduce((a, b) => a + b, 0);
  return {
    id: dataset.id,
    name: dataset.name,
    status: dataset.status,
    kind: dataset.kind,
    layout: dataset.layout,
    classes: dataset.classes,
    counts: { ...counts, test: counts.test ?? {}, images: total(counts.train) + total(counts.val) + total(counts.test ?? {}) + (counts.unlabelled ?? 0) },
    sizeBytes: Number(dataset.sizeBytes),
    sha256: dataset.sha256,
    report: report ? { blocking: report.summary.blocking, warnings: report.summary.warnings } : null,
    createdAt: dataset.createdAt.toISOString(),
  };
}
