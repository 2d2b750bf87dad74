// A custom base uploaded as a zip: model.json and the weight files its manifest names, at the root
// or inside one top-level folder (as zipping a tensorflowjs_converter output folder gives). The
// archive is user input, read with the same guards as dataset zips: yauzl's strict names and
// entry-size validation, our own check of every name, a cap on the entries read and on the bytes
// they inflate to (as inflated, not as declared), and nothing written to disk.
import yauzl from 'yauzl';
import type { Entry, ZipFile } from 'yauzl';
import { posix } from 'node:path';
import { DomainError } from '@finetune/core';
import { parseModelJson, type ParsedModelJson } from './custom-base.ts';

export interface BaseModelZipLimits {
  /** Central-directory records (files and folders). */
  maxEntries: number;
  /** model.json plus its weight files, uncompressed. */
  maxBytes: number;
}

export interface BaseModelFiles {
  modelJson: Buffer;
  parsed: ParsedModelJson;
  /** The weight files concatenated in manifest order: what tfjs loads. */
  weights: Buffer;
}

function zipError(code: string, message: string, status = 422): DomainError {
  return new DomainError(code, message, status);
}

function openZip(zipPath: string): Promise<ZipFile> {
  return new Promise((resolve, reject) => {
    yauzl.open(zipPath, { lazyEntries: true, autoClose: false, decodeStrings: true, strictFileNames: true, validateEntrySizes: true }, (err, zip) =>
      err || !zip ? reject(zipError('invalid_zip', `not a readable zip archive: ${err?.message ?? 'no zipfile'}`, 400)) : resolve(zip),
    );
  });
}

function unsafe(name: string): boolean {
  if (name.includes('\\') || name.includes('\0') || name.startsWith('/') || /^[a-zA-Z]:/.test(name)) return true;
  return name.replace(/\/$/, '').split('/').some((s) => s === '..' || s === '.' || s === '');
}

function isSymlink(entry: Entry): boolean {
  return entry.versionMadeBy >> 8 === 3 && ((entry.externalFileAttributes >>> 16) & 0o170000) === 0o120000;
}

function junk(name: string): boolean {
  return name.split('/').some((s) => s.startsWith('.') || s === '__MACOSX');
}

/** yauzl's own name checks (strictFileNames) surface as plain Errors while iterating: keep their meaning. */
async function* entriesOf(zip: ZipFile): AsyncGenerator<Entry> {
  try {
    for await (const entry of (zip as unknown as { eachEntry(): AsyncIterable<Entry> }).eachEntry()) yield entry;
  } catch (error) {
    const message = (error as Error).message;
    if (/^(invalid characters in fileName|absolute path|invalid relative path)/.test(message)) {
      throw zipError('unsafe_entry_name', `unsafe entry name in archive: ${message}`, 400);
    }
    throw zipError('invalid_zip', `not a readable zip archive: ${message}`, 400);
  }
}

async function readEntry(zip: ZipFile, entry: Entry, maxBytes: number): Promise<Buffer> {
  const stream = await new Promise<NodeJS.ReadableStream>((resolve, reject) =>
    zip.openReadStream(entry, (err, s) => (err || !s ? reject(zipError('invalid_zip', `entry ${entry.fileName} cannot be read: ${err?.message}`, 400)) : resolve(s))),
  );
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      total += chunk.length;
      if (total > maxBytes) throw zipError('model_too_large', `the model's files inflate beyond ${maxBytes} bytes`, 413);
      chunks.push(chunk);
    }
  } catch (error) {
    (stream as NodeJS.ReadableStream & { destroy(): void }).destroy();
    if (error instanceof DomainError) throw error;
    throw zipError('invalid_zip', `entry ${entry.fileName} cannot be read: ${(error as Error).message}`, 400);
  }
  return Buffer.concat(chunks, total);
}

/**
 * Finds model.json (exactly one, at the root or one folder down), reads it, then reads exactly
 * the weight files its manifest names (relative to it) and concatenates them in manifest order.
 */
export async function readBaseModelZip(zipPath: string, limits: BaseModelZipLimits): Promise<BaseModelFiles> {
  const zip = await openZip(zipPath);
  try {
    if (zip.entryCount > limits.maxEntries) throw zipError('too_many_entries', `the archive has ${zip.entryCount} entries; the limit is ${limits.maxEntries}`, 400);
    const entries = new Map<string, Entry>();
    for await (const entry of entriesOf(zip)) {
      const name = entry.fileName;
      if (unsafe(name)) throw zipError('unsafe_entry_name', `unsafe entry name in archive: ${JSON.stringify(name).slice(0, 200)}`, 400);
      if (name.endsWith('/') || junk(name) || isSymlink(entry)) continue;
      entries.set(name, entry);
    }
    const candidates = [...entries.keys()].filter((n) => posix.basename(n) === 'model.json' && n.split('/').length <= 2);
    if (candidates.length === 0) throw zipError('model_json_missing', 'the archive has no model.json (at its root or in one top-level folder)');
    if (candidates.length > 1) throw zipError('ambiguous_model', `the archive has several model.json files: ${candidates.join(', ')}`);
    const jsonName = candidates[0]!;
    const dir = posix.dirname(jsonName) === '.' ? '' : `${posix.dirname(jsonName)}/`;

    let budget = limits.maxBytes;
    const take = async (entry: Entry): Promise<Buffer> => {
      if (entry.uncompressedSize > budget) throw zipError('model_too_large', `the model's files exceed ${limits.maxBytes} bytes`, 413);
      const data = await readEntry(zip, entry, budget);
      budget -= data.length;
      return data;
    };
    const modelJson = await take(entries.get(jsonName)!);
    const parsed = parseModelJson(modelJson);
    const shards: Buffer[] = [];
    for (const path of parsed.weightPaths) {
      const entry = entries.get(`${dir}${path}`);
      if (!entry) throw zipError('weights_missing', `weight file ${path} (named in model.json's weightsManifest) is not in the archive`);
      shards.push(await take(entry));
    }
    return { modelJson, parsed, weights: Buffer.concat(shards) };
  } catch (error) {
    if (error instanceof DomainError) throw error;
    throw zipError('invalid_zip', `not a readable zip archive: ${(error as Error).message}`, 400);
  } finally {
    zip.close();
  }
}
