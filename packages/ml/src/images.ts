// Image decoding for datasets and prediction requests. Inputs are untrusted: only the accepted
// formats reach sharp at all (by their leading bytes, whatever the file is called), sharp is told
// to fail on any decode error and to refuse images above a pixel limit (decompression bombs).
import sharp from 'sharp';
import path from 'node:path';
import { DomainError } from '@finetune/core';

/** Extensions we accept as images: formats the prebuilt sharp/libvips decodes. SVG is left out
 * on purpose (it is a document format with external references, not a photo). */
export const IMAGE_EXTENSIONS: ReadonlySet<string> = new Set(['.png', '.jpg', '.jpeg', '.webp', '.gif', '.tif', '.tiff', '.avif']);

export function isImagePath(name: string): boolean {
  return IMAGE_EXTENSIONS.has(path.posix.extname(name).toLowerCase());
}

export const DEFAULT_MAX_PIXELS = 40_000_000;

/** The formats we decode, as sharp names them (AVIF is sharp's `heif` with AV1 compression). */
export type ImageFormat = 'jpeg' | 'png' | 'webp' | 'gif' | 'tiff' | 'avif';
export const ACCEPTED_FORMATS = 'JPEG, PNG, WebP, GIF, TIFF, AVIF';

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const ascii = (buf: Buffer, start: number, end: number) => buf.toString('latin1', start, end);

/**
 * The format an image claims by its signature (magic bytes), or null for anything else. libvips
 * would otherwise pick a loader by sniffing itself and happily decode SVG — a document whose
 * rendering costs are unbounded (a 2 KB `<use>` fan-out takes seconds of CPU) — or other formats
 * no one meant to accept. Cheap: looks at the first bytes only.
 */
export function sniffImageFormat(buf: Buffer): ImageFormat | null {
  if (buf.length < 12) return null;
  if (buf[0] === 0xff && buf[1] === 0xd8 && buf[2] === 0xff) return 'jpeg';
  if (buf.subarray(0, 8).equals(PNG_SIGNATURE)) return 'png';
  const head6 = ascii(buf, 0, 6);
  if (head6 === 'GIF87a' || head6 === 'GIF89a') return 'gif';
  if (ascii(buf, 0, 4) === 'RIFF' && ascii(buf, 8, 12) === 'WEBP') return 'webp';
  const head4 = ascii(buf, 0, 4);
  // Classic TIFF (42) and BigTIFF (43), either byte order.
  if (head4 === 'II*\0' || head4 === 'MM\0*' || head4 === 'II+\0' || head4 === 'MM\0+') return 'tiff';
  // ISO-BMFF: [size]['ftyp'][major brand][minor version][compatible brands…]; AVIF names `avif`
  // or `avis` among the brands. HEIC (HEVC) is left out: sharp's prebuilt libvips cannot decode it.
  if (ascii(buf, 4, 8) === 'ftyp') {
    const boxEnd = Math.min(buf.readUInt32BE(0), buf.length, 4096);
    const brands = [ascii(buf, 8, 12)];
    for (let at = 16; at + 4 <= boxEnd; at += 4) brands.push(ascii(buf, at, at + 4));
    if (brands.includes('avif') || brands.includes('avis')) return 'avif';
  }
  return null;
}

/**
 * Image formats we recognise and refuse, by name (SVG being the one sharp would otherwise decode,
 * at unbounded cost); anything else unrecognised (a PDF, text, noise) is simply not an image.
 */
function refusedFormat(buf: Buffer): string | null {
  const text = buf.toString('latin1', 0, Math.min(buf.length, 4096));
  if (/<svg[\s>]/i.test(text)) return 'SVG';
  if (ascii(buf, 4, 8) === 'ftyp' && /^(heic|heix|hevc|hevx|heim|heis|mif1|msf1)$/.test(ascii(buf, 8, 12))) return 'HEIC/HEIF';
  if (ascii(buf, 0, 2) === 'BM' && buf.length >= 14 && buf.readUInt32LE(6) === 0) return 'BMP';
  if (buf.subarray(0, 12).equals(JP2_SIGNATURE) || (buf[0] === 0xff && buf[1] === 0x4f && buf[2] === 0xff && buf[3] === 0x51)) return 'JPEG 2000';
  if ((buf[0] === 0xff && buf[1] === 0x0a) || ascii(buf, 4, 8) === 'JXL ') return 'JPEG XL';
  if (ascii(buf, 0, 4) === '8BPS') return 'Photoshop';
  return null;
}

const JP2_SIGNATURE = Buffer.from([0, 0, 0, 0x0c, 0x6a, 0x50, 0x20, 0x20, 0x0d, 0x0a, 0x87, 0x0a]);

/** sharp's name for what it will decode must agree with the signature (belt and braces: a file
 * could carry one format's magic and be taken by another loader). */
function matches(sniffed: ImageFormat, meta: sharp.Metadata): boolean {
  if (sniffed === 'avif') return meta.format === 'heif' && meta.compression === 'av1';
  return meta.format === sniffed;
}

export interface DecodeOptions {
  /** Refuse inputs with more pixels than this (width × height). Default 40 MP. */
  maxPixels?: number;
}

/**
 * Decodes any supported image to size × size × 3 RGB bytes (row-major HWC), after applying EXIF
 * orientation, dropping alpha, converting to sRGB and centre-cropping to a square (`fit: cover`).
 * Nothing but the accepted formats reaches the decoder: a recognisable other format (SVG, HEIC,
 * BMP, …) throws DomainError('unsupported_image_format', 415), other data a plain Error, as does
 * anything sharp cannot fully decode. Bytes are a quarter of the memory of floats:
 * what training sets are held as.
 */
export async function decodeImageBytes(buf: Buffer, size: number, opts: DecodeOptions = {}): Promise<Uint8Array> {
  const sniffed = sniffImageFormat(buf);
  if (!sniffed) {
    const refused = refusedFormat(buf);
    if (refused) throw new DomainError('unsupported_image_format', `${refused} images are not accepted (only ${ACCEPTED_FORMATS})`, 415);
    throw new Error(`not a ${ACCEPTED_FORMATS} image`);
  }
  const image = sharp(buf, {
    limitInputPixels: opts.maxPixels ?? DEFAULT_MAX_PIXELS,
    failOn: 'error',
    // Animated GIF/WebP: first frame only.
    pages: 1,
  });
  const meta = await image.metadata();
  if (!matches(sniffed, meta)) throw new Error(`starts like ${sniffed} but reads as ${meta.format}${meta.compression ? `/${meta.compression}` : ''}`);
  const { data, info } = await image
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
