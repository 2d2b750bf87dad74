// Test fixtures built in-process: real PNG/JPEG bytes from sharp, zips from fflate (which,
// unlike real zip tools, will write any entry name, e.g. '../x.png').
import sharp from 'sharp';
import { zipSync, type Zippable } from 'fflate';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

export async function png(r: number, g: number, b: number, size = 8): Promise<Buffer> {
  return sharp({ create: { width: size, height: size, channels: 3, background: { r, g, b } } }).png().toBuffer();
}

const dir = mkdtempSync(path.join(tmpdir(), 'ml-test-'));
let counter = 0;

/** Writes a zip of `files` (name → bytes) to a temp file and returns its path. */
export function writeZip(files: Record<string, Uint8Array | string>, level: 0 | 6 = 0): string {
  const z: Zippable = {};
  for (const [name, data] of Object.entries(files)) {
    z[name] = [typeof data === 'string' ? new TextEncoder().encode(data) : data, { level }];
  }
  const file = path.join(dir, `t${counter++}.zip`);
  writeFileSync(file, zipSync(z));
  return file;
}

export function writeBytes(bytes: Uint8Array, name = `raw${counter++}.bin`): string {
  const file = path.join(dir, name);
  writeFileSync(file, bytes);
  return file;
}

export const LIMITS = { maxEntries: 1000, maxUncompressedBytes: 50_000_000, maxEntryBytes: 5_000_000 };
