// Image decoding for datasets and prediction requests. Inputs are untrusted: sharp is told to
// fail on any decode error and to refuse images above a pixel limit (decompression bombs).
import sharp from 'sharp';
import path from 'node:path';

/** Extensions we accept as images: formats the prebuilt sharp/libvips decodes. SVG is left out
 * on purpose (it is a document format with external references, not a photo). */
export const IMAGE_EXTENSIONS: ReadonlySet<string> = new Set(['.png', '.jpg', '.jpeg', '.webp', '.gif', '.tif', '.tiff', '.avif']);

export function isImagePath(name: string): boolean {
  return IMAGE_EXTENSIONS.has(path.posix.extname(name).toLowerCase());
}

export const DEFAULT_MAX_PIXELS = 40_000_000;

export interface DecodeOptions {
  /** Refuse inputs with more pixels than this (width × height). Default 40 MP. */
  maxPixels?: number;
}

/**
 * Decodes any supported image to size × size × 3 RGB bytes (row-major HWC), after applying EXIF
 * orientation, dropping alpha, converting to sRGB and centre-cropping to a square (`fit: cover`).
 * Throws on anything sharp cannot fully decode. Bytes are a quarter of the memory of floats:
 * what training sets are held as.
 */
export async function decodeImageBytes(buf: Buffer, size: number, opts: DecodeOptions = {}): Promise<Uint8Array> {
  const { data, info } = await sharp(buf, {
    limitInputPixels: opts.maxPixels ?? DEFAULT_MAX_PIXELS,
    failOn: 'error',
    // Animated GIF/WebP: first frame only.
    pages: 1,
  })
    .rotate()
    .removeAlpha()
    .toColourspace('srgb')
    .resize(size, size, { fit: 'cover' })
    .raw({ depth: 'uchar' })
    .toBuffer({ resolveWithObject: true });
  if (info.channels !== 3 || info.width !== size || info.height !== size || data.length !== size * size * 3) {
    throw new Error(`unexpected decoded layout ${info.width}x${info.height}x${info.channels} (${data.length} bytes)`);
  }
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** As decodeImageBytes, scaled to floats in [0, 1]: the input the exported models take. */
export async function decodeImage(buf: Buffer, size: number, opts: DecodeOptions = {}): Promise<Float32Array> {
  const bytes = await decodeImageBytes(buf, size, opts);
  const out = new Float32Array(bytes.length);
  for (let i = 0; i < bytes.length; i++) out[i] = bytes[i]! / 255;
  return out;
}
