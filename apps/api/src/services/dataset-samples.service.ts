import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { datasetZipLimits, DomainError } from '@finetune/core';
import { indexDatasetZip, readZipEntries, type DatasetEntry, type DatasetKind } from '@finetune/ml';
import type { AppDeps } from '../deps.ts';
import { getDataset, type DatasetCounts } from './datasets.service.ts';

// One image of a stored dataset, as a small thumbnail: what the dashboard shows per class and
// beside a model's most confident mistakes. The object store has no range reads, so the zip is
// copied to a private temp dir once and kept for a few minutes: a page asks for a dozen
// thumbnails of one dataset at once, and each would otherwise download the whole archive.

export const THUMBNAIL_SIZE = 128;
export const THUMBNAIL_TYPE = 'image/webp';

/** Which image: the `index`-th of a class (train images first, then val, in archive order), or
 * an archive path (as a model's `evaluation.mostConfidentErrors[].id` names it). */
export type SampleSelector = { class: string; index: number } | { path: string };

interface LocalArchive {
  dir: string;
  zipPath: string;
  /** Images that decoded when the dataset was uploaded, by class. */
  byClass: Map<string, DatasetEntry[]>;
  paths: Set<string>;
}

interface CachedArchive {
  ready: Promise<LocalArchive>;
  readers: number;
  lastUsed: number;
}

export interface SampleArchiveOptions {
  /** Local copies kept at once (each the size of its zip). */
  maxArchives?: number;
  /** A copy nobody asked for during this long is removed. */
  idleMs?: number;
}

/** Local copies of dataset zips, keyed by dataset id (a dataset's zip never changes). */
export class SampleArchives {
  private readonly archives = new Map<string, CachedArchive>();
  private readonly maxArchives: number;
  private readonly idleMs: number;
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly deps: AppDeps, options: SampleArchiveOptions = {}) {
    this.maxArchives = options.maxArchives ?? 2;
    this.idleMs = options.idleMs ?? 5 * 60_000;
    // A temp copy that cannot be removed now is tried again on the next sweep: never a request's error.
    this.sweeper = setInterval(() => void this.evict(Infinity).catch(() => undefined), Math.min(this.idleMs, 60_000));
    this.sweeper.unref();
  }

  /** Runs `use` on the dataset's local copy, which stays on disk until `use` has finished. */
  async with<T>(datasetId: string, storageKey: string, kind: DatasetKind, use: (archive: LocalArchive) => Promise<T>): Promise<T> {
    let cached = this.archives.get(datasetId);
    if (!cached) {
      const created: CachedArchive = { ready: this.fetch(storageKey, kind), readers: 0, lastUsed: Date.now() };
      this.archives.set(datasetId, created);
      // A failed download is not kept: the next request tries again.
      created.ready.catch(() => {
        if (this.archives.get(datasetId) === created) this.archives.delete(datasetId);
      });
      cached = created;
    }
    cached.readers++;
    cached.lastUsed = Date.now();
    try {
      return await use(await cached.ready);
    } finally {
      cached.readers--;
      cached.lastUsed = Date.now();
      await this.evict(this.maxArchives).catch(() => undefined);
    }
  }

  /** Removes every local copy (the app is closing). */
  async close(): Promise<void> {
    clearInterval(this.sweeper);
    await Promise.all([...this.archives.keys()].map((id) => this.remove(id)));
  }

  private async fetch(storageKey: string, kind: DatasetKind): Promise<LocalArchive> {
    const dir = await mkdtemp(join(tmpdir(), 'finetune-samples-'));
    try {
      const zipPath = join(dir, 'source.zip');
      await this.deps.store.downloadToFile(storageKey, zipPath);
      // The central directory only: which entry is which class. Inspected at upload, so this
      // cannot fail on a stored dataset short of corruption.
      const index = await indexDatasetZip(zipPath, datasetZipLimits(this.deps.config.limits), kind);
      const byClass = new Map<string, DatasetEntry[]>();
      const ordered = (['train', 'val', 'test'] as const).flatMap((split) => index.entries.filter((e) => e.split === split));
      for (const entry of ordered) byClass.set(entry.label, [...(byClass.get(entry.label) ?? []), entry]);
      return { dir, zipPath, byClass, paths: new Set(index.entries.map((e) => e.path)) };
    } catch (error) {
      await rm(dir, { recursive: true, force: true });
      throw error;
    }
  }

  /** Drops copies idle for `idleMs`, and the least recently used idle ones above `keep`. */
  private async evict(keep: number): Promise<void> {
    const now = Date.now();
    const idle = [...this.archives.entries()].filter(([, a]) => a.readers === 0).sort(([, a], [, b]) => a.lastUsed - b.lastUsed);
    let over = this.archives.size - keep;
    for (const [id, archive] of idle) {
      if (over <= 0 && now - archive.lastUsed < this.idleMs) continue;
      over--;
      await this.remove(id);
    }
  }

  private async remove(datasetId: string): Promise<void> {
    const cached = this.archives.get(datasetId);
    if (!cached) return;
    this.archives.delete(datasetId);
    const archive = await cached.ready.catch(() => undefined);
    if (archive) await rm(archive.dir, { recursive: true, force: true });
  }
}

/**
 * The chosen image of the caller's dataset as a WebP thumbnail (at most THUMBNAIL_SIZE on its
 * longer side). Another tenant's dataset is a 404 exactly as GET /v1/datasets/:id answers it.
 */
export async function datasetSample(deps: AppDeps, archives: SampleArchives, tenantId: string, datasetId: string, selector: SampleSelector): Promise<Buffer> {
  const dataset = await getDataset(deps, tenantId, datasetId);
  const skipped = new Set(((dataset.counts as unknown as DatasetCounts).skippedFiles ?? []).map((f) => f.path));
  const data = await archives.with(dataset.id, dataset.storageKey, dataset.kind, async (archive) => {
    let path: string;
    if ('path' in selector) {
      if (!archive.paths.has(selector.path) || skipped.has(selector.path)) {
        throw new DomainError('sample_not_found', `dataset ${datasetId} has no image ${selector.path}`, 404);
      }
      path = selector.path;
    } else {
      if (!dataset.classes.includes(selector.class)) {
        throw new DomainError('sample_not_found', `dataset ${datasetId} has no class ${JSON.stringify(selector.class)}`, 404);
      }
      const images = (archive.byClass.get(selector.class) ?? []).filter((e) => !skipped.has(e.path));
      const entry = images[selector.index];
      if (!entry) {
        throw new DomainError('sample_not_found', `class ${JSON.stringify(selector.class)} has ${images.length} image(s); index ${selector.index} is past the end`, 404);
      }
      path = entry.path;
    }
    let found: Buffer | undefined;
    await readZipEntries(archive.zipPath, new Set([path]), datasetZipLimits(deps.config.limits), async (_path, bytes) => {
      found = bytes;
    });
    if (!found) throw new DomainError('sample_not_found', `dataset ${datasetId} has no image ${path}`, 404);
    return found;
  });
  try {
    return await sharp(data, { limitInputPixels: deps.config.limits.imagePixels })
      .rotate()
      .resize(THUMBNAIL_SIZE, THUMBNAIL_SIZE, { fit: 'inside', withoutEnlargement: true })
      .webp({ quality: 80 })
      .toBuffer();
  } catch {
    // Only images that decoded at upload are counted, but the upload kept just the first 50
    // names of those that did not.
    throw new DomainError('undecodable_sample', 'this image could not be decoded', 422);
  }
}
