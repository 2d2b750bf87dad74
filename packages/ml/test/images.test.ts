import { describe, it, expect } from 'vitest';
import sharp from 'sharp';
import { decodeImage, isImagePath, IMAGE_EXTENSIONS } from '../src/images.ts';

/** Pixel (x, y) of a size×size×3 decode, as 0..255 integers. */
function px(data: Float32Array, size: number, x: number, y: number): number[] {
  const i = (y * size + x) * 3;
  return [data[i]!, data[i + 1]!, data[i + 2]!].map((v) => Math.round(v * 255));
}

describe('decodeImage', () => {
  it('returns size×size×3 floats in [0, 1]', async () => {
    const img = await sharp({ create: { width: 40, height: 30, channels: 3, background: { r: 255, g: 128, b: 0 } } }).png().toBuffer();
    const out = await decodeImage(img, 16);
    expect(out).toBeInstanceOf(Float32Array);
    expect(out.length).toBe(16 * 16 * 3);
    expect(Math.min(...out)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...out)).toBeLessThanOrEqual(1);
    expect(px(out, 16, 8, 8)).toEqual([255, 128, 0]);
  });

  it('applies EXIF orientation before resizing', async () => {
    // Stored 20×10: left half red, right half blue. EXIF orientation 6 = rotate 90° clockwise
    // for display, so the displayed image is 10×20 with red on top and blue at the bottom.
    const raw = Buffer.alloc(20 * 10 * 3);
    for (let y = 0; y < 10; y++)
      for (let x = 0; x < 20; x++) raw.set(x < 10 ? [255, 0, 0] : [0, 0, 255], (y * 20 + x) * 3);
    const jpeg = await sharp(raw, { raw: { width: 20, height: 10, channels: 3 } })
      .jpeg({ quality: 100 })
      .withMetadata({ orientation: 6 })
      .toBuffer();
    expect((await sharp(jpeg).metadata()).orientation).toBe(6);
    // fit: cover crops the centre 10×10 of the displayed 10×20, so use a wide-enough size:
    // the top rows come from the red half, the bottom rows from the blue half.
    const out = await decodeImage(jpeg, 8);
    const top = px(out, 8, 4, 0);
    const bottom = px(out, 8, 4, 7);
    expect(top[0]).toBeGreaterThan(200);
    expect(top[2]).toBeLessThan(60);
    expect(bottom[2]).toBeGreaterThan(200);
    expect(bottom[0]).toBeLessThan(60);
  });

  it('drops alpha (RGBA and grey+alpha) and converts greyscale to RGB', async () => {
    const rgba = await sharp({ create: { width: 8, height: 8, channels: 4, background: { r: 0, g: 255, b: 0, alpha: 0.2 } } }).png().toBuffer();
    expect(px(await decodeImage(rgba, 4), 4, 1, 1)).toEqual([0, 255, 0]);
    const grey = await sharp(Buffer.alloc(64, 100), { raw: { width: 8, height: 8, channels: 1 } }).toColourspace('b-w').png().toBuffer();
    expect((await sharp(grey).metadata()).channels).toBe(1);
    // libvips' b-w → sRGB conversion may round 100 to 99.
    for (const v of px(await decodeImage(grey, 4), 4, 1, 1)) expect(Math.abs(v - 100)).toBeLessThanOrEqual(2);
    const ga = Buffer.alloc(128);
    for (let i = 0; i < 64; i++) ga.set([100, 128], i * 2);
    const greyAlpha = await sharp(ga, { raw: { width: 8, height: 8, channels: 2 } }).toColourspace('b-w').png().toBuffer();
    expect((await sharp(greyAlpha).metadata()).channels).toBe(2);
    for (const v of px(await decodeImage(greyAlpha, 4), 4, 1, 1)) expect(Math.abs(v - 100)).toBeLessThanOrEqual(2);
  });

  it('reduces 16-bit PNGs to the same [0, 1] scale', async () => {
    const png16 = await sharp({ create: { width: 8, height: 8, channels: 3, background: { r: 255, g: 0, b: 51 } } })
      .toColourspace('rgb16')
      .png()
      .toBuffer();
    expect((await sharp(png16).metadata()).depth).toBe('ushort');
    expect(px(await decodeImage(png16, 4), 4, 1, 1)).toEqual([255, 0, 51]);
  });

  it('decodes webp, gif, tiff and avif', async () => {
    const base = sharp({ create: { width: 8, height: 8, channels: 3, background: { r: 0, g: 0, b: 255 } } });
    for (const fmt of ['webp', 'gif', 'tiff', 'avif'] as const) {
      const buf = await base.clone().toFormat(fmt, fmt === 'webp' || fmt === 'avif' ? { lossless: true } : {}).toBuffer();
      const p = px(await decodeImage(buf, 4), 4, 1, 1);
      expect(p[2], fmt).toBeGreaterThan(240);
    }
  });

  it('throws on garbage, truncated data and images over the pixel limit', async () => {
    await expect(decodeImage(Buffer.from('not an image'), 8)).rejects.toThrow();
    const jpeg = await sharp({ create: { width: 64, height: 64, channels: 3, background: '#888' } }).jpeg().toBuffer();
    await expect(decodeImage(jpeg.subarray(0, jpeg.length >> 1), 8)).rejects.toThrow();
    const big = await sharp({ create: { width: 2000, height: 2000, channels: 3, background: '#888' } }).png().toBuffer();
    await expect(decodeImage(big, 8, { maxPixels: 1_000_000 })).rejects.toThrow(/pixel limit/);
    await expect(decodeImage(big, 8, { maxPixels: 4_000_000 })).resolves.toHaveLength(8 * 8 * 3);
  });
});

describe('isImagePath', () => {
  it('matches supported extensions case-insensitively', () => {
    expect(isImagePath('a/b.JPG')).toBe(true);
    expect(isImagePath('a/b.jpeg')).toBe(true);
    expect(isImagePath('a/b.svg')).toBe(false);
    expect(isImagePath('a/b.txt')).toBe(false);
    expect(isImagePath('a/png')).toBe(false);
    expect(IMAGE_EXTENSIONS.has('.webp')).toBe(true);
  });
});
