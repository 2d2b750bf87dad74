// Image-folder zip datasets. The archive is user input, so hostile input is the normal case:
// entry names are validated (zip-slip), sizes are checked both as declared in the central
// directory and as actually inflated (zip bombs lie in headers), and nothing is written to disk.
//
// Accepted layouts (optionally wrapped in ONE top-level folder, e.g. `hymenoptera_data/…`):
//   flat:   <class>/<image>                                   → every entry has split 'train'
//   split:  train/<class>/<image> + val|validation/<class>/<image> + test/<class>/<image>
//           (val/ and test/ optional; test/ is the held-out test split, never trained or selected on)
//   unlabelled (kind=unlabelled): images anywhere, folders or not; no classes, no splits — the
//           target domain of domain adaptation.
// The first folder under the root (or under train/ val/ test/) names the class; deeper subfolders are
// allowed and belong to that class (`cats/2019/a.jpg` → cats). Ambiguity, by design: an archive
// whose images all sit at least two folders deep under a single top-level folder is read as
// wrapped, so `cats/2019/a.jpg` + `cats/2020/b.jpg` alone means classes 2019 and 2020.
import yauzl from 'yauzl';
import type { Entry, ZipFile } from 'yauzl';
import type { Readable } from 'node:stream';
import { DatasetError } from '@finetune/core';
import { decodeImage, isImagePath } from './images.ts';
import { imageFacts, type ImageFacts } from './data-checks.ts';

export interface ZipLimits {
  /** Max central-directory records (files + folders). */
  maxEntries: number;
  /** Max sum of the declared uncompressed sizes of the image entries. */
  maxUncompressedBytes: number;
  /** Max size of one image entry, declared and actually inflated. */
  maxEntryBytes: number;
}

export type DatasetSplit = 'train' | 'val' | 'test';

export interface DatasetEntry {
  path: string;
  label: string;
  split: DatasetSplit;
}

/** labelled: class folders, what jobs train on. unlabelled: images only (a domain-adaptation target). */
export type DatasetKind = 'labelled' | 'unlabelled';

export interface DatasetIndex {
  layout: 'flat' | 'split' | 'unlabelled';
  /** Sorted by code point. A label's index in this array is its class id. Empty when unlabelled
   * (whose entries all have label '' and split 'train'). */
  classes: string[];
  /** In archive order. */
  entries: DatasetEntry[];
  /** Entries skipped without reading: folders excluded, non-images, dotfiles, __MACOSX,
   *  symlinks, encrypted or unsupported-compression entries. */
  ignored: number;
}

export interface DatasetSummary {
  /** The index with `entries` filtered to the images that decoded. */
  index: DatasetIndex;
  counts: { train: Record<string, number>; val: Record<string, number>; test: Record<string, number> };
  /** Images that decoded (every split; the whole count of an unlabelled dataset). */
  images: number;
  skipped: { path: string; reason: string }[];
  /** Per decoded image (by path): content hashes, size, colour — the input of runDataChecks. */
  facts: Map<string, ImageFacts>;
}

const SPLIT_DIRS = new Map<string, DatasetSplit>([
  ['train', 'train'],
  ['val', 'val'],
  ['validation', 'val'],
  ['test', 'test'],
]);

// ---------------------------------------------------------------------------------------------
// yauzl plumbing

function openZip(zipPath: string): Promise<ZipFile> {
  return new Promise((resolve, reject) => {
    yauzl.open(
      zipPath,
      {
        lazyEntries: true,
        autoClose: true,
        decodeStrings: true,
        // yauzl then rejects names with backslashes instead of silently rewriting them to '/'.
        strictFileNames: true,
        validateEntrySizes: true,
      },
      (err, zip) => (err || !zip ? reject(mapZipError(err ?? new Error('no zipfile'))) : resolve(zip)),
    );
  });
}

/** yauzl reports everything as a plain Error; sort its messages into our codes. */
function mapZipError(err: Error, where?: string): DatasetError {
  if (err instanceof DatasetError) return err;
  const msg = err.message;
  if (/^(invalid characters in fileName|absolute path|invalid relative path)/.test(msg)) {
    return new DatasetError('unsafe_entry_name', `Unsafe entry name in archive: ${msg}`);
  }
  if (/too many bytes in the stream/.test(msg)) {
    return new DatasetError('archive_too_large', `An entry inflates beyond its declared size (${msg})`);
  }
  return new DatasetError('invalid_zip', `Not a readable zip archive${where ? ` (${where})` : ''}: ${msg}`);
}

async function* iterateEntries(zip: ZipFile): AsyncGenerator<Entry> {
  try {
    // eachEntry() is yauzl 3.3+'s async iterator over lazily read central-directory records.
    for await (const entry of (zip as unknown as { eachEntry(): AsyncIterable<Entry> }).eachEntry()) yield entry;
  } catch (error) {
    throw mapZipError(error as Error, 'central directory');
  }
}

function openReadStream(zip: ZipFile, entry: Entry): Promise<Readable> {
  return new Promise((resolve, reject) => {
    zip.openReadStream(entry, (err, stream) => (err || !stream ? reject(err ?? new Error('no stream')) : resolve(stream)));
  });
}

/** Reads one entry, aborting as soon as the inflated bytes pass `maxBytes`. */
async function readEntry(zip: ZipFile, entry: Entry, maxBytes: number): Promise<Buffer> {
  const stream = await openReadStream(zip, entry);
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      total += chunk.length;
      if (total > maxBytes) {
        throw new DatasetError('archive_too_large', `Entry ${entry.fileName} inflates beyond ${maxBytes} bytes`);
      }
      chunks.push(chunk);
    }
  } catch (error) {
    stream.destroy();
    throw error;
  }
  return Buffer.concat(chunks, total);
}

// ---------------------------------------------------------------------------------------------
// Names

/** Belt and braces on top of yauzl's own checks (which see the same names). */
function unsafeReason(name: string): string | null {
  if (name.includes('\\')) return 'contains a backslash';
  if (name.includes('\0')) return 'contains a NUL byte';
  if (name.startsWith('/') || /^[a-zA-Z]:/.test(name)) return 'is absolute';
  const segments = name.replace(/\/$/, '').split('/');
  if (segments.some((s) => s === '..')) return "contains '..'";
  if (segments.some((s) => s === '' || s === '.')) return 'contains an empty or "." path segment';
  return null;
}

function isHiddenOrJunk(segments: string[]): boolean {
  return segments.some((s) => s.startsWith('.') || s === '__MACOSX' || s === 'Thumbs.db' || s === 'desktop.ini');
}

function isSymlink(entry: Entry): boolean {
  const madeBy = entry.versionMadeBy >> 8;
  const mode = (entry.externalFileAttributes >>> 16) & 0o170000;
  return madeBy === 3 /* unix */ && mode === 0o120000;
}

function byCodePoint(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

// ---------------------------------------------------------------------------------------------
// Index

/**
 * Reads the central directory only (no entry data) and works out the layout, classes and
 * splits. Throws DatasetError: invalid_zip, unsafe_entry_name, too_many_entries,
 * archive_too_large, empty_archive, unexpected_layout, too_few_classes.
 */
export async function indexDatasetZip(zipPath: string, limits: ZipLimits, kind: DatasetKind = 'labelled'): Promise<DatasetIndex> {
  const zip = await openZip(zipPath);
  if (zip.entryCount > limits.maxEntries) {
    zip.close();
    throw new DatasetError('too_many_entries', `Archive has ${zip.entryCount} entries; the limit is ${limits.maxEntries}`);
  }

  const images: string[][] = [];
  const seen = new Set<string>();
  let ignored = 0;
  let declared = 0;
  for await (const entry of iterateEntries(zip)) {
    const name = entry.fileName;
    const unsafe = unsafeReason(name);
    if (unsafe) {
      zip.close();
      throw new DatasetError('unsafe_entry_name', `Unsafe entry name in archive: ${JSON.stringify(name)} ${unsafe}`);
    }
    if (seen.has(name)) {
      zip.close();
      throw new DatasetError('unsafe_entry_name', `Duplicate entry name in archive: ${JSON.stringify(name)}`);
    }
    seen.add(name);
    if (name.endsWith('/')) continue; // folder record: not counted as ignored
    const segments = name.split('/');
    if (
      isHiddenOrJunk(segments) ||
      !isImagePath(name) ||
      isSymlink(entry) ||
      entry.isEncrypted() ||
      (entry.compressionMethod !== 0 && entry.compressionMethod !== 8)
    ) {
      ignored++;
      continue;
    }
    if (entry.uncompressedSize > limits.maxEntryBytes) {
      zip.close();
      throw new DatasetError('archive_too_large', `Entry ${name} is ${entry.uncompressedSize} bytes; the per-image limit is ${limits.maxEntryBytes}`);
    }
    declared += entry.uncompressedSize;
    if (declared > limits.maxUncompressedBytes) {
      zip.close();
      throw new DatasetError('archive_too_large', `Images in the archive exceed ${limits.maxUncompressedBytes} bytes uncompressed`);
    }
    images.push(segments);
  }

  if (images.length === 0) {
    throw new DatasetError('empty_archive', `Archive contains no images (${IMAGE_LIST})`);
  }
  if (kind === 'unlabelled') {
    return { layout: 'unlabelled', classes: [], entries: images.map((s) => ({ path: s.join('/'), label: '', split: 'train' })), ignored };
  }
  return layoutOf(images, ignored);
}

const IMAGE_LIST = 'png, jpg, jpeg, webp, gif, tif, tiff, avif';

function layoutOf(images: string[][], ignored: number): DatasetIndex {
  const atRoot = images.find((s) => s.length === 1);
  if (atRoot) {
    throw new DatasetError('unexpected_layout', `Image ${atRoot.join('/')} is at the archive root; put images in one folder per class`);
  }
  // One wrapper folder (e.g. `hymenoptera_data/`) around everything: strip it when everything
  // under it is itself in folders. A lone `train/` is a (train-only) split layout, not a wrapper.
  let prefix = '';
  const tops = new Set(images.map((s) => s[0]!));
  if (tops.size === 1) {
    const top = [...tops][0]!;
    const deep = images.filter((s) => s.length >= 3).length;
    if (!SPLIT_DIRS.has(top.toLowerCase()) && deep === images.length) {
      prefix = `${top}/`;
      images = images.map((s) => s.slice(1));
    } else if (!SPLIT_DIRS.has(top.toLowerCase()) && deep > 0) {
      const shallow = images.find((s) => s.length === 2)!;
      throw new DatasetError(
        'unexpected_layout',
        `Image ${shallow.join('/')} sits directly in ${top}/ next to class folders; put every image in a class folder`,
      );
    }
  }

  const splitTops = new Set(images.map((s) => s[0]!.toLowerCase()));
  const isSplit = splitTops.has('train') || splitTops.has('val') || splitTops.has('validation');
  const entries: DatasetEntry[] = [];

  if (!isSplit) {
    for (const s of images) entries.push({ path: prefix + s.join('/'), label: s[0]!, split: 'train' });
  } else {
    const stray = images.find((s) => !SPLIT_DIRS.has(s[0]!.toLowerCase()));
    if (stray) {
      throw new DatasetError(
        'unexpected_layout',
        `${prefix}${stray[0]}/ sits next to train/ and val/; a split archive may only contain train/, val/ (or validation/) and test/`,
      );
    }
    for (const s of images) {
      const split = SPLIT_DIRS.get(s[0]!.toLowerCase())!;
      if (s.length < 3) {
        throw new DatasetError('unexpected_layout', `Image ${prefix}${s.join('/')} is not inside a class folder under ${s[0]}/`);
      }
      entries.push({ path: prefix + s.join('/'), label: s[1]!, split });
    }
    if (!entries.some((e) => e.split === 'train')) {
      throw new DatasetError('unexpected_layout', 'Split archive has no images under train/');
    }
    const trainClasses = new Set(entries.filter((e) => e.split === 'train').map((e) => e.label));
    // A class the model never trains on cannot be predicted: in val/ or test/ it only lowers scores.
    for (const split of ['val', 'test'] as const) {
      const heldOutOnly = [...new Set(entries.filter((e) => e.split === split && !trainClasses.has(e.label)).map((e) => e.label))];
      if (heldOutOnly.length > 0) {
        throw new DatasetError('unexpected_layout', `Classes present only in ${split}/: ${heldOutOnly.sort(byCodePoint).join(', ')}`);
      }
    }
  }

  const classes = [...new Set(entries.map((e) => e.label))].sort(byCodePoint);
  if (classes.length < 2) {
    throw new DatasetError('too_few_classes', `Found ${classes.length} class folder(s) (${classes.join(', ')}); at least 2 are needed`);
  }
  return { layout: isSplit ? 'split' : 'flat', classes, entries, ignored };
}

// ---------------------------------------------------------------------------------------------
// Reading

/**
 * Streams the data of the entries named in `paths` (all image-like entries when null), in
 * archive order, to `onEntry`. With `concurrency` n > 1, up to n `onEntry` calls run at once
 * (they start in archive order but may finish in any; a caller that keeps an order records it
 * when its call starts); the default 1 awaits each before reading the next. The first error of
 * an `onEntry` is thrown once the calls in flight have settled. maxEntryBytes is enforced on the bytes actually inflated, and yauzl additionally rejects an
 * entry whose data is longer than its declared size. If `onEntryError` is given, an entry whose
 * data cannot be read (corrupt deflate stream) is reported there and skipped; size violations
 * always throw.
 */
export async function readZipEntries(
  zipPath: string,
  paths: Set<string> | null,
  limits: ZipLimits,
  onEntry: (path: string, data: Buffer) => Promise<void>,
  onEntryError?: (path: string, error: Error) => void,
  options: { concurrency?: number } = {},
): Promise<void> {
  const zip = await openZip(zipPath);
  if (zip.entryCount > limits.maxEntries) {
    zip.close();
    throw new DatasetError('too_many_entries', `Archive has ${zip.entryCount} entries; the limit is ${limits.maxEntries}`);
  }
  let total = 0;
  const concurrency = Math.max(1, options.concurrency ?? 1);
  const inFlight = new Set<Promise<void>>();
  // Set by a failed onEntry (a cast: TypeScript cannot see the callback assign it).
  let failure = null as { error: unknown } | null;
  const iterator = iterateEntries(zip);
  try {
    for await (const entry of iterator) {
      const name = entry.fileName;
      if (name.endsWith('/')) continue;
      if (paths ? !paths.has(name) : !isImagePath(name) || unsafeReason(name) !== null) continue;
      if (entry.uncompressedSize > limits.maxEntryBytes) {
        throw new DatasetError('archive_too_large', `Entry ${name} is ${entry.uncompressedSize} bytes; the per-image limit is ${limits.maxEntryBytes}`);
      }
      let data: Buffer;
      try {
        data = await readEntry(zip, entry, limits.maxEntryBytes);
      } catch (error) {
        const mapped = error instanceof DatasetError ? error : mapZipError(error as Error, name);
        if (mapped.code === 'archive_too_large' || !onEntryError) throw mapped;
        onEntryError(name, error as Error);
        continue;
      }
      total += data.length;
      if (total > limits.maxUncompressedBytes) {
        throw new DatasetError('archive_too_large', `Images in the archive exceed ${limits.maxUncompressedBytes} bytes uncompressed`);
      }
      // onEntry starts in archive order; up to `concurrency` of them run at once (sharp decodes on
      // libuv's pool, so one at a time would leave all but one core idle), and the next entry is
      // read only when one finishes, so memory holds at most that many images.
      const task = onEntry(name, data).catch((error: unknown) => void (failure ??= { error }));
      inFlight.add(task);
      void task.finally(() => inFlight.delete(task));
      if (inFlight.size >= concurrency) await Promise.race(inFlight);
      if (failure) throw failure.error;
    }
    await Promise.all(inFlight);
    if (failure) throw failure.error;
  } finally {
    // Nothing runs on after we return or throw.
    await Promise.all(inFlight);
    // Closes the zip (autoClose) if we left the loop early.
    await iterator.return(undefined);
    zip.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Inspect

/**
 * Index + decode every image once (at `imageSize`, small by default, to check decodability).
 * Images that fail are reported in `skipped` and dropped from `index.entries`. Throws
 * DatasetError('empty_class') naming classes with no decodable train image, and
 * 'too_few_classes' if fewer than two classes are left.
 */
export async function inspectDatasetZip(
  zipPath: string,
  limits: ZipLimits & { maxPixels: number },
  imageSize = 32,
  kind: DatasetKind = 'labelled',
): Promise<DatasetSummary> {
  const index = await indexDatasetZip(zipPath, limits, kind);
  const byPath = new Map(index.entries.map((e) => [e.path, e]));
  const ok = new Set<string>();
  const skipped: { path: string; reason: string }[] = [];
  const facts = new Map<string, ImageFacts>();

  // sharp decodes on libuv's thread pool: keep a few decodes in flight while the next entries
  // are inflated, instead of strictly alternating read → decode.
  const inFlight = new Set<Promise<void>>();
  const MAX_IN_FLIGHT = 4;
  await readZipEntries(
    zipPath,
    new Set(byPath.keys()),
    limits,
    async (path, data) => {
      // The facts come from the bytes already in hand: the data checks need no second pass.
      // Only for images that decoded (sharp has seen their format vetted); a failure there
      // leaves the image in the dataset, merely unchecked.
      const p: Promise<void> = decodeImage(data, imageSize, { maxPixels: limits.maxPixels }).then(
        async () => {
          ok.add(path);
          const f = await imageFacts(data, limits.maxPixels).catch(() => null);
          if (f) facts.set(path, f);
        },
        (error: Error) => void skipped.push({ path, reason: decodeFailureReason(error) }),
      );
      const tracked = p.finally(() => inFlight.delete(tracked));
      inFlight.add(tracked);
      if (inFlight.size >= MAX_IN_FLIGHT) await Promise.race(inFlight);
    },
    (path, error) => skipped.push({ path, reason: `unreadable zip entry: ${error.message}` }),
  );
  await Promise.all(inFlight);

  const entries = index.entries.filter((e) => ok.has(e.path));
  skipped.sort((a, b) => byCodePoint(a.path, b.path));
  if (kind === 'unlabelled') {
    if (entries.length === 0) throw new DatasetError('empty_archive', 'No image in the archive decodes');
    return { index: { ...index, entries }, counts: { train: {}, val: {}, test: {} }, images: entries.length, skipped, facts };
  }
  // Class names are folder names from the archive: `__proto__`, `constructor`, `toString` are
  // ordinary classes here. Counted in Maps (an object literal would resolve those names to
  // Object.prototype's members and let an empty class through the check below), returned as
  // null-prototype records, on which every name is an own property.
  const tally = { train: new Map<string, number>(), val: new Map<string, number>(), test: new Map<string, number>() };
  for (const e of entries) tally[e.split].set(e.label, (tally[e.split].get(e.label) ?? 0) + 1);
  const record = (split: Map<string, number>): Record<string, number> => {
    const out = Object.create(null) as Record<string, number>;
    for (const c of index.classes) out[c] = split.get(c) ?? 0;
    return out;
  };
  const counts: DatasetSummary['counts'] = { train: record(tally.train), val: record(tally.val), test: record(tally.test) };
  const empty = index.classes.filter((c) => !tally.train.has(c));
  if (empty.length > 0) {
    throw new DatasetError('empty_class', `No decodable training images for class(es): ${empty.join(', ')}`);
  }
  if (index.classes.length < 2) {
    throw new DatasetError('too_few_classes', `Only ${index.classes.length} class(es) have decodable images; at least 2 are needed`);
  }
  return { index: { ...index, entries }, counts, images: entries.length, skipped, facts };
}

function decodeFailureReason(error: Error): string {
  // sharp messages can be multi-line and mention internal paths; keep the first line.
  return (error.message.split('\n')[0] ?? 'decode failed').slice(0, 200);
}
