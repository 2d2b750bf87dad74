// Real images for the engine-equivalence tests (MNIST digits from the `mnist` package, PNG
// encoded and decoded by sharp like uploads), and the tolerance ORT and tfjs must agree within.
import { createRequire } from 'node:module';
import sharp from 'sharp';
import { decodeImageBytes } from '../../src/images.ts';

const mnist = createRequire(import.meta.url)('mnist') as Record<number, { get(i: number): number[] }>;

/** `n` digits (0, 1, 2, … in turn) as RGB bytes at size × size. */
export async function digits(n: number, size: number): Promise<Uint8Array[]> {
  return Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const gray = Buffer.from(mnist[i % 10]!.get(Math.floor(i / 10)).map((v) => Math.round(v * 255)));
      const png = await sharp(gray, { raw: { width: 28, height: 28, channels: 1 } }).toColourspace('srgb').png().toBuffer();
      return decodeImageBytes(png, size);
    }),
  );
}

export function asFloats(images: Uint8Array[]): Float32Array[] {
  return images.map((img) => Float32Array.from(img, (v) => v / 255));
}

/**
 * ORT and tfjs must agree within 1e-4 × the largest |value| of the tfjs output. Both compute
 * in float32 but in a different order (ORT folds BatchNorm into the convolutions and picks its
 * own GEMM blocking), so results differ by rounding: measured ≤ 3e-6 relative on MobileNetV2
 * and InceptionV3. A wrong mapping (a pad on the wrong side, a transposed kernel) is off by
 * 1e-1 relative or more, so 1e-4 leaves rounding a 30× margin and catches every real error.
 */
export const RELATIVE_TOLERANCE = 1e-4;

export function agreement(ort: ArrayLike<number>, tfjs: ArrayLike<number>): { maxDiff: number; scale: number; relative: number } {
  if (ort.length !== tfjs.length) throw new Error(`lengths differ: ${ort.length} vs ${tfjs.length}`);
  let maxDiff = 0;
  let scale = 0;
  for (let i = 0; i < tfjs.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(ort[i]! - tfjs[i]!));
    scale = Math.max(scale, Math.abs(tfjs[i]!));
  }
  return { maxDiff, scale, relative: maxDiff / Math.max(scale, 1e-12) };
}
