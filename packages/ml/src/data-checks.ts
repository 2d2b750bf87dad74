// Data checks: what is wrong with a dataset that still decodes — the same image under two labels,
// validation images that are also training images, lopsided classes, odd sizes. Computed at
// upload from facts gathered in the one decode pass of inspectDatasetZip (no second read of the
// zip), stored with the dataset, shown at GET /v1/datasets/:id/report.
import { createHash } from 'node:crypto';
import sharp from 'sharp';
import type { DatasetEntry, DatasetSplit } from './dataset-zip.ts';

/** What one decodable image contributes to the checks. */
export interface ImageFacts {
  /** SHA-256 of the entry's bytes as stored in the archive (hex). */
  sha256: string;
  /** 64-bit difference hash (16 hex digits), or null if it could not be computed. */
  dhash: string | null;
  /** After EXIF orientation. */
  width: number;
  height: number;
  /** Decoded channels including alpha. */
  channels: number;
  greyscale: boolean;
}

export type Severity = 'info' | 'warning' | 'blocking';

export interface Finding {
  check: string;
  severity: Severity;
  message: string;
  /** The files concerned, at most MAX_FILES_PER_FINDING of them… */
  files: string[];
  /** …out of this many. */
  fileCount: number;
}

export interface DataReport {
  summary: { blocking: number; warnings: number; info: number };
  findings: Finding[];
}

export interface DataCheckInput {
  layout: 'flat' | 'split' | 'unlabelled';
  classes: string[];
  /** The images that decoded. */
  entries: DatasetEntry[];
  facts: ReadonlyMap<string, ImageFacts>;
  skipped: { path: string; reason: string }[];
  /** Entries not read at all (non-images, junk): only a number is known. */
  ignored: number;
}

export const MAX_FILES_PER_FINDING = 20;
/** Near-duplicate search compares every pair: bounded so a 50,000-image upload stays seconds. */
export const NEAR_DUPLICATE_MAX_IMAGES = 5_000;
/** dHash bits that may differ for two images to count as near-duplicates. */
export const NEAR_DUPLICATE_MAX_DISTANCE = 4;
export const IMBALANCE_RATIO = 3;
export const ASPECT_SPREAD = 2;

// ---------------------------------------------------------------------------------------------
// Facts

/**
 * One small decode serves two facts. dHash (Krawetz): greyscale, resize to 9×8 ignoring aspect,
 * one bit per horizontally adjacent pair (left brighter than right); robust to rescaling and
 * recompression, so re-saved copies of one photo land within a few bits of each other.
 * Greyscale is judged by content (R = G = B everywhere, within a little JPEG noise), not by the
 * file's colour space: a grey photo saved as RGB is still grey.
 */
async function pixelFacts(buf: Buffer, maxPixels: number): Promise<{ dhash: string; greyscale: boolean }> {
  const rgb = await sharp(buf, { limitInputPixels: maxPixels, failOn: 'error', pages: 1 })
    .rotate()
    .removeAlpha()
    .toColourspace('srgb')
    .resize(9, 8, { fit: 'fill' })
    .raw()
    .toBuffer();
  const luma = new Float64Array(72);
  let greyscale = true;
  for (let i = 0; i < 72; i++) {
    const [r, g, b] = [rgb[i * 3]!, rgb[i * 3 + 1]!, rgb[i * 3 + 2]!];
    luma[i] = 0.299 * r + 0.587 * g + 0.114 * b;
    if (Math.max(r, g, b) - Math.min(r, g, b) > 8) greyscale = false;
  }
  let hex = '';
  for (let y = 0; y < 8; y++) {
    let byte = 0;
    for (let x = 0; x < 8; x++) byte = (byte << 1) | (luma[y * 9 + x]! > luma[y * 9 + x + 1]! ? 1 : 0);
    hex += byte.toString(16).padStart(2, '0');
  }
  return { dhash: hex, greyscale };
}

/** Facts about an image that already decoded (decodeImage has vetted its format). */
export async function imageFacts(buf: Buffer, maxPixels: number): Promise<ImageFacts> {
  const sha256 = createHash('sha256').update(buf).digest('hex');
  const meta = await sharp(buf, { limitInputPixels: maxPixels, pages: 1 }).metadata();
  const swap = (meta.orientation ?? 1) >= 5; // EXIF 5–8 rotate by 90°
  const width = (swap ? meta.height : meta.width) ?? 0;
  const height = (swap ? meta.width : meta.height) ?? 0;
  const channels = meta.channels ?? 3;
  const pixels = await pixelFacts(buf, maxPixels).catch(() => null);
  const greyscale = pixels?.greyscale ?? (meta.space === 'b-w' || meta.space === 'grey16');
  return { sha256, dhash: pixels?.dhash ?? null, width, height, channels, greyscale };
}

// ---------------------------------------------------------------------------------------------
// Checks

function finding(check: string, severity: Severity, message: string, files: string[] = []): Finding {
  return { check, severity, message, files: files.slice(0, MAX_FILES_PER_FINDING), fileCount: files.length };
}

const plural = (n: number, word: string) =>
  `${n} ${n === 1 ? word : word.endsWith('y') ? `${word.slice(0, -1)}ies` : word.endsWith('s') ? `${word}es` : `${word}s`}`;
const quoteList = (names: string[], max = 10) =>
  names.slice(0, max).map((n) => JSON.stringify(n)).join(', ') + (names.length > max ? `, … (${names.length - max} more)` : '');

/** Leakage between two splits: held-out images whose bytes are also in the other split. */
const LEAKAGE_CHECKS: { check: string; splits: [DatasetSplit, DatasetSplit]; consequence: string }[] = [
  { check: 'train_val_leakage', splits: ['val', 'train'], consequence: 'validation scores would be inflated' },
  { check: 'train_test_leakage', splits: ['test', 'train'], consequence: 'test scores would be inflated' },
  { check: 'val_test_leakage', splits: ['test', 'val'], consequence: 'the test split is not independent of the data the best epoch and the calibration were chosen on' },
];

/** Identical bytes: across classes (label noise), across splits (leakage), within a class. */
function exactDuplicates(input: DataCheckInput): Finding[] {
  const groups = new Map<string, DatasetEntry[]>();
  for (const e of input.entries) {
    const sha = input.facts.get(e.path)?.sha256;
    if (!sha) continue;
    const group = groups.get(sha);
    if (group) group.push(e);
    else groups.set(sha, [e]);
  }
  const across: DatasetEntry[][] = [];
  const leaked = new Map<string, DatasetEntry[][]>(LEAKAGE_CHECKS.map((l) => [l.check, []]));
  const within: DatasetEntry[][] = [];
  for (const group of groups.values()) {
    if (group.length < 2) continue;
    const labels = new Set(group.map((e) => e.label));
    const splits = new Set<DatasetSplit>(group.map((e) => e.split));
    if (labels.size > 1) across.push(group);
    for (const { check, splits: [heldOut, other] } of LEAKAGE_CHECKS) {
      // Only the copies in the two splits concerned are named.
      if (splits.has(heldOut) && splits.has(other)) leaked.get(check)!.push(group.filter((e) => e.split === heldOut || e.split === other));
    }
    if (labels.size === 1 && splits.size === 1) within.push(group);
  }
  const example = (group: DatasetEntry[]) => group.map((e) => e.path).join(' = ');
  const files = (gs: DatasetEntry[][]) => gs.flatMap((g) => g.map((e) => e.path));
  const out: Finding[] = [];
  if (across.length > 0) {
    out.push(finding('duplicate_across_classes', 'blocking',
      `${plural(across.length, 'image')} appear${across.length === 1 ? 's' : ''} under more than one class (identical bytes): ` +
        `label noise — remove the wrong copies. E.g. ${example(across[0]!)}`,
      files(across)));
  }
  for (const { check, splits: [heldOut, other], consequence } of LEAKAGE_CHECKS) {
    const groups = leaked.get(check)!;
    if (groups.length === 0) continue;
    out.push(finding(check, 'blocking',
      `${plural(groups.length, 'image')} in ${heldOut}/ also appear${groups.length === 1 ? 's' : ''} in ${other}/ (identical bytes): ` +
        `${consequence}. E.g. ${example(groups[0]!)}`,
      files(groups)));
  }
  if (within.length > 0) {
    const extra = within.reduce((n, g) => n + g.length - 1, 0);
    out.push(finding('duplicate_within_class', 'warning',
      `${plural(extra, 'redundant copy')} of ${plural(within.length, 'image')} within the same class (identical bytes): ` +
        `they weigh those images more in training. E.g. ${example(within[0]!)}`,
      files(within)));
  }
  return out;
}

function popcount32(n: number): number {
  n -= (n >>> 1) & 0x55555555;
  n = (n & 0x33333333) + ((n >>> 2) & 0x33333333);
  return (((n + (n >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

/** Visually near-identical images (dHash within a few bits) under different classes. */
function nearDuplicates(input: DataCheckInput): Finding[] {
  // One representative per distinct content: exact copies are reported above.
  const seen = new Set<string>();
  const items: { entry: DatasetEntry; hi: number; lo: number }[] = [];
  for (const e of input.entries) {
    const f = input.facts.get(e.path);
    if (!f?.dhash || seen.has(f.sha256)) continue;
    seen.add(f.sha256);
    items.push({ entry: e, hi: Number.parseInt(f.dhash.slice(0, 8), 16), lo: Number.parseInt(f.dhash.slice(8), 16) });
  }
  const out: Finding[] = [];
  const compared = items.slice(0, NEAR_DUPLICATE_MAX_IMAGES);
  if (items.length > compared.length) {
    out.push(finding('near_duplicates_partial', 'info',
      `Near-duplicate search compares every pair of images, so it covered only the first ${NEAR_DUPLICATE_MAX_IMAGES} ` +
        `of ${items.length} distinct images (in archive order).`));
  }
  const pairs: [string, string][] = [];
  for (let i = 0; i < compared.length; i++) {
    const a = compared[i]!;
    for (let j = i + 1; j < compared.length; j++) {
      const b = compared[j]!;
      if (a.entry.label === b.entry.label) continue;
      if (popcount32((a.hi ^ b.hi) >>> 0) + popcount32((a.lo ^ b.lo) >>> 0) <= NEAR_DUPLICATE_MAX_DISTANCE) {
        pairs.push([a.entry.path, b.entry.path]);
      }
    }
  }
  if (pairs.length > 0) {
    out.push(finding('near_duplicate_across_classes', 'warning',
      `${plural(pairs.length, 'pair')} of near-identical images (perceptual hash within ${NEAR_DUPLICATE_MAX_DISTANCE} of 64 bits) ` +
        `sit under different classes: possibly the same picture labelled twice. E.g. ${pairs[0]![0]} ≈ ${pairs[0]![1]}`,
      pairs.flat()));
  }
  return out;
}

function classSizes(input: DataCheckInput): Finding[] {
  const total = new Map<string, number>(input.classes.map((c) => [c, 0]));
  const heldOut = { val: new Map<string, number>(), test: new Map<string, number>() };
  for (const e of input.entries) {
    total.set(e.label, (total.get(e.label) ?? 0) + 1);
    if (e.split !== 'train') heldOut[e.split].set(e.label, (heldOut[e.split].get(e.label) ?? 0) + 1);
  }
  const out: Finding[] = [];
  const sizes = [...total.entries()].sort((a, b) => b[1] - a[1]);
  const [largest, smallest] = [sizes[0], sizes[sizes.length - 1]];
  if (largest && smallest && smallest[1] > 0 && largest[1] / smallest[1] > IMBALANCE_RATIO) {
    out.push(finding('class_imbalance', 'warning',
      `Classes are imbalanced: ${JSON.stringify(largest[0])} has ${largest[1]} images, ${JSON.stringify(smallest[0])} ` +
        `${smallest[1]} (${(largest[1] / smallest[1]).toFixed(1)}×). Add images to the small classes, or train with ` +
        `hyperparameters.classWeights: "balanced".`));
  }
  if (input.layout === 'flat') {
    const tiny = input.classes.filter((c) => (total.get(c) ?? 0) < 2);
    if (tiny.length > 0) {
      out.push(finding('class_too_small_for_validation', 'warning',
        `${plural(tiny.length, 'class')} ${tiny.length === 1 ? 'has' : 'have'} fewer than 2 images, too few to hold any ` +
          `out for validation: ${quoteList(tiny)}.`,
        input.entries.filter((e) => tiny.includes(e.label)).map((e) => e.path)));
    }
  } else {
    // A split archive without val/ (or test/) has that part drawn from train/ per job: nothing to check.
    for (const [split, what] of [['val', 'Validation'], ['test', 'Test']] as const) {
      const counts = heldOut[split];
      if (counts.size === 0) continue;
      const empty = input.classes.filter((c) => (counts.get(c) ?? 0) === 0);
      if (empty.length > 0) {
        out.push(finding(`empty_${split}_class`, 'warning',
          `${plural(empty.length, 'class')} ${empty.length === 1 ? 'has' : 'have'} no ${what.toLowerCase()} images in ${split}/: ` +
            `${quoteList(empty)}. ${what} accuracy will not cover ${empty.length === 1 ? 'it' : 'them'}.`));
      }
    }
  }
  return out;
}

function skippedFiles(input: DataCheckInput): Finding[] {
  const out: Finding[] = [];
  const n = input.skipped.length;
  if (n > 0) {
    const shown = input.skipped.slice(0, 3).map((s) => `${s.path}: ${s.reason}`).join('; ');
    // A stray broken file is worth knowing; many are worth acting on.
    const severity = n / (n + input.entries.length) > 0.05 ? 'warning' : 'info';
    out.push(finding('unreadable_files', severity,
      `${plural(n, 'file')} could not be decoded and ${n === 1 ? 'was' : 'were'} left out (${shown}${n > 3 ? '; …' : ''}).`,
      input.skipped.map((s) => s.path)));
  }
  if (input.ignored > 0) {
    out.push(finding('ignored_files', 'info',
      `${plural(input.ignored, 'entry')} ${input.ignored === 1 ? 'was' : 'were'} not read: not an image by name, hidden, ` +
        `__MACOSX, a symlink, encrypted or unsupported compression.`));
  }
  return out;
}

function median(sorted: number[]): number {
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : Math.round((sorted[mid - 1]! + sorted[mid]!) / 2);
}

function imageShapes(input: DataCheckInput): Finding[] {
  const known = input.entries.flatMap((e) => {
    const f = input.facts.get(e.path);
    return f && f.width > 0 && f.height > 0 ? [{ path: e.path, ...f }] : [];
  });
  if (known.length === 0) return [];
  const out: Finding[] = [];
  const stat = (values: number[]) => {
    const s = [...values].sort((a, b) => a - b);
    return `${s[0]}/${median(s)}/${s[s.length - 1]}`;
  };
  out.push(finding('image_sizes', 'info',
    `Image sizes (min/median/max): width ${stat(known.map((k) => k.width))}, height ${stat(known.map((k) => k.height))} pixels.`));

  const byAspect = [...known].sort((a, b) => a.width / a.height - b.width / b.height);
  const narrow = byAspect[0]!;
  const wide = byAspect[byAspect.length - 1]!;
  const spread = wide.width / wide.height / (narrow.width / narrow.height);
  if (spread > ASPECT_SPREAD) {
    out.push(finding('aspect_ratio_spread', 'warning',
      `Aspect ratios vary ${spread.toFixed(1)}× (from ${narrow.width}×${narrow.height} to ${wide.width}×${wide.height}): ` +
        `images are centre-cropped to a square, so the edges of the widest and tallest are lost.`,
      [narrow.path, wide.path]));
  }

  const grey = known.filter((k) => k.greyscale);
  if (grey.length > 0 && grey.length < known.length) {
    const colour = known.filter((k) => !k.greyscale);
    const minority = grey.length <= colour.length ? { kind: 'greyscale', list: grey } : { kind: 'colour', list: colour };
    out.push(finding('greyscale_colour_mix', 'warning',
      `${grey.length} greyscale and ${colour.length} colour images: if colour follows the class, a model can learn ` +
        `colour instead of content. Listed: the ${minority.kind} ones.`,
      minority.list.map((k) => k.path)));
  }
  return out;
}

/** Every check over one dataset. Deterministic: same archive, same report. */
export function runDataChecks(input: DataCheckInput): DataReport {
  const findings = [
    ...exactDuplicates(input),
    ...nearDuplicates(input),
    ...classSizes(input),
    ...skippedFiles(input),
    ...imageShapes(input),
  ];
  const rank: Record<Severity, number> = { blocking: 0, warning: 1, info: 2 };
  findings.sort((a, b) => rank[a.severity] - rank[b.severity]);
  return {
    summary: {
      blocking: findings.filter((f) => f.severity === 'blocking').length,
      warnings: findings.filter((f) => f.severity === 'warning').length,
      info: findings.filter((f) => f.severity === 'info').length,
    },
    findings,
  };
}
