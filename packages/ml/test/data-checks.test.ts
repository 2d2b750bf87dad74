import { describe, it, expect, beforeAll } from 'vitest';
import sharp from 'sharp';
import { imageFacts, runDataChecks, MAX_FILES_PER_FINDING, NEAR_DUPLICATE_MAX_IMAGES, type DataCheckInput, type ImageFacts } from '../src/data-checks.ts';
import { inspectDatasetZip } from '../src/dataset-zip.ts';
import type { DatasetEntry } from '../src/dataset-zip.ts';
import { png, writeZip, LIMITS } from './fixtures.ts';

/** A left-to-right gradient, optionally mirrored: distinct dHashes, real pixels. */
async function gradient(width: number, height: number, mirrored = false, channels: 1 | 3 = 3): Promise<Buffer> {
  const raw = Buffer.alloc(width * height * channels);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const v = Math.round(((mirrored ? width - 1 - x : x) / (width - 1)) * 255);
      for (let c = 0; c < channels; c++) raw[(y * width + x) * channels + c] = c === 1 ? (v * y) % 256 : v;
    }
  }
  return sharp(raw, { raw: { width, height, channels } }).png().toBuffer();
}

const scrambled = (i: number) => ((BigInt(i + 1) * 0x9e3779b97f4a7c15n) & 0xffffffffffffffffn).toString(16).padStart(16, '0');

let n = 0;
/** Synthetic input: entries with hand-made facts (each distinct unless `sha` is shared). */
function input(spec: { path: string; sha?: string; dhash?: string; w?: number; h?: number; grey?: boolean }[], layout: 'flat' | 'split' = 'flat'): DataCheckInput {
  const entries: DatasetEntry[] = [];
  const facts = new Map<string, ImageFacts>();
  for (const s of spec) {
    const parts = s.path.split('/');
    const split = layout === 'split' ? (parts[0] === 'val' || parts[0] === 'test' ? parts[0] : 'train') : 'train';
    const label = layout === 'split' ? parts[1]! : parts[0]!;
    entries.push({ path: s.path, label, split });
    const id = n++;
    facts.set(s.path, {
      sha256: s.sha ?? `sha-${id}`,
      // By default a scrambled id: any two are ~32 bits apart.
      dhash: s.dhash ?? scrambled(id),
      width: s.w ?? 100,
      height: s.h ?? 100,
      channels: s.grey ? 1 : 3,
      greyscale: s.grey ?? false,
    });
  }
  const classes = [...new Set(entries.map((e) => e.label))].sort();
  return { layout, classes, entries, facts, skipped: [], ignored: 0 };
}

const checks = (report: ReturnType<typeof runDataChecks>) => report.findings.map((f) => `${f.severity}:${f.check}`);

describe('runDataChecks', () => {
  it('blocks an image under two classes and names both files; a copy within a class is a warning', () => {
    const report = runDataChecks(input([
      { path: 'cats/1.png', sha: 'x' },
      { path: 'dogs/7.png', sha: 'x' },
      { path: 'cats/2.png', sha: 'y' },
      { path: 'cats/3.png', sha: 'y' },
      { path: 'dogs/8.png' },
    ]));
    const across = report.findings.find((f) => f.check === 'duplicate_across_classes');
    expect(across).toMatchObject({ severity: 'blocking', files: ['cats/1.png', 'dogs/7.png'], fileCount: 2 });
    expect(across!.message).toContain('cats/1.png = dogs/7.png');
    expect(report.findings.find((f) => f.check === 'duplicate_within_class')).toMatchObject({ severity: 'warning', files: ['cats/2.png', 'cats/3.png'] });
    expect(report.summary.blocking).toBe(1);
    expect(report.findings[0]!.severity).toBe('blocking');
  });

  it('blocks train/val leakage in a split archive', () => {
    const report = runDataChecks(input([
      { path: 'train/a/1.png', sha: 'leak' },
      { path: 'train/b/1.png' },
      { path: 'val/a/9.png', sha: 'leak' },
      { path: 'val/b/2.png' },
    ], 'split'));
    expect(report.findings.find((f) => f.check === 'train_val_leakage')).toMatchObject({
      severity: 'blocking',
      files: ['train/a/1.png', 'val/a/9.png'],
    });
    expect(checks(report)).not.toContain('blocking:duplicate_across_classes');
  });

  it('blocks train/test and val/test leakage, naming the copies in the two splits concerned', () => {
    const report = runDataChecks(input([
      { path: 'train/a/1.png', sha: 'train-test' },
      { path: 'train/b/1.png' },
      { path: 'val/a/2.png', sha: 'val-test' },
      { path: 'val/b/2.png' },
      { path: 'test/a/3.png', sha: 'train-test' },
      { path: 'test/a/4.png', sha: 'val-test' },
      { path: 'test/b/5.png' },
    ], 'split'));
    expect(report.findings.find((f) => f.check === 'train_test_leakage')).toMatchObject({
      severity: 'blocking',
      files: ['train/a/1.png', 'test/a/3.png'],
      fileCount: 2,
    });
    expect(report.findings.find((f) => f.check === 'train_test_leakage')!.message).toContain('in test/ also appears in train/');
    expect(report.findings.find((f) => f.check === 'val_test_leakage')).toMatchObject({
      severity: 'blocking',
      files: ['val/a/2.png', 'test/a/4.png'],
    });
    expect(checks(report)).not.toContain('blocking:train_val_leakage');
    expect(checks(report)).not.toContain('warning:duplicate_within_class');
  });

  it('warns about a class missing from test/, and about no held-out folder that is absent', () => {
    const report = runDataChecks(input([{ path: 'train/a/1.png' }, { path: 'train/b/1.png' }, { path: 'test/a/2.png' }], 'split'));
    expect(report.findings.find((f) => f.check === 'empty_test_class')?.message).toBe(
      '1 class has no test images in test/: "b". Test accuracy will not cover it.',
    );
    // No val/ folder: validation is drawn from train/ per job, so no class lacks it.
    expect(checks(report)).not.toContain('warning:empty_val_class');
  });

  it('caps the files of a finding and keeps the full count', () => {
    const spec = Array.from({ length: 30 }, (_, i) => ({ path: `${i % 2 ? 'a' : 'b'}/${i}.png`, sha: 'same' }));
    const f = runDataChecks(input(spec)).findings.find((x) => x.check === 'duplicate_across_classes')!;
    expect(f.files).toHaveLength(MAX_FILES_PER_FINDING);
    expect(f.fileCount).toBe(30);
  });

  it('warns on near-duplicates across classes (Hamming ≤ 4) but not within a class or further apart', () => {
    const report = runDataChecks(input([
      { path: 'a/1.png', dhash: '0f0f0f0f0f0f0f0f' },
      { path: 'b/1.png', dhash: '0f0f0f0f0f0f0f00' }, // 4 bits away, other class
      { path: 'a/2.png', dhash: '0f0f0f0f0f0f0f0e' }, // 1 bit away, same class as a/1
      { path: 'b/2.png', dhash: 'f0f0f0f0f0f0f0f0' }, // far from everything
    ]));
    const near = report.findings.find((f) => f.check === 'near_duplicate_across_classes');
    expect(near?.severity).toBe('warning');
    // Pairs, in order: a/1 ≈ b/1 (4 bits), b/1 ≈ a/2 (3 bits).
    expect(near?.files).toEqual(['a/1.png', 'b/1.png', 'b/1.png', 'a/2.png']);
  });

  it('says when the near-duplicate search was capped', () => {
    const spec = Array.from({ length: NEAR_DUPLICATE_MAX_IMAGES + 1 }, (_, i) => ({
      path: `${i % 2 ? 'a' : 'b'}/${i}.png`,
      dhash: scrambled(i),
    }));
    const started = performance.now();
    const report = runDataChecks(input(spec));
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(report.findings.find((f) => f.check === 'near_duplicates_partial')?.severity).toBe('info');
  });

  it('warns on imbalance beyond 3× and suggests balanced class weights', () => {
    const spec = [...Array.from({ length: 7 }, (_, i) => ({ path: `big/${i}.png` })), { path: 'small/1.png' }, { path: 'small/2.png' }];
    const f = runDataChecks(input(spec)).findings.find((x) => x.check === 'class_imbalance');
    expect(f?.severity).toBe('warning');
    expect(f?.message).toContain('classWeights: "balanced"');
    expect(f?.message).toContain('3.5×');
    const even = [...Array.from({ length: 3 }, (_, i) => ({ path: `big/${i}.png` })), { path: 'small/1.png' }];
    expect(checks(runDataChecks(input(even)))).not.toContain('warning:class_imbalance');
  });

  it('warns on a flat class with one image, and on split classes with no val images', () => {
    expect(runDataChecks(input([{ path: 'a/1.png' }, { path: 'a/2.png' }, { path: 'b/1.png' }])).findings.find((f) => f.check === 'class_too_small_for_validation'))
      .toMatchObject({ severity: 'warning', files: ['b/1.png'] });
    const split = runDataChecks(input([{ path: 'train/a/1.png' }, { path: 'train/b/1.png' }, { path: 'val/a/2.png' }], 'split'));
    expect(split.findings.find((f) => f.check === 'empty_val_class')?.message).toContain('"b"');
  });

  it('reports skipped files with their reasons, a warning when they are many', () => {
    const base = input([{ path: 'a/1.png' }, { path: 'b/1.png' }]);
    const report = runDataChecks({ ...base, skipped: [{ path: 'a/bad.png', reason: 'not a JPEG, PNG image' }], ignored: 2 });
    expect(report.findings.find((f) => f.check === 'unreadable_files')).toMatchObject({ severity: 'warning', files: ['a/bad.png'] });
    expect(report.findings.find((f) => f.check === 'unreadable_files')!.message).toContain('a/bad.png: not a JPEG');
    expect(report.findings.find((f) => f.check === 'ignored_files')?.severity).toBe('info');
  });

  it('summarises sizes, warns on aspect spread > 2× and on a greyscale/colour mix', () => {
    const report = runDataChecks(input([
      { path: 'a/wide.png', w: 300, h: 100 },
      { path: 'a/sq.png', w: 100, h: 100 },
      { path: 'b/tall.png', w: 100, h: 200, grey: true },
    ]));
    expect(report.findings.find((f) => f.check === 'image_sizes')?.message).toContain('width 100/100/300, height 100/100/200');
    expect(report.findings.find((f) => f.check === 'aspect_ratio_spread')).toMatchObject({ files: ['b/tall.png', 'a/wide.png'] });
    expect(report.findings.find((f) => f.check === 'greyscale_colour_mix')).toMatchObject({ severity: 'warning', files: ['b/tall.png'] });
    const uniform = runDataChecks(input([{ path: 'a/1.png' }, { path: 'a/2.png' }, { path: 'b/1.png' }, { path: 'b/2.png' }]));
    expect(checks(uniform).filter((c) => !c.startsWith('info'))).toEqual([]);
  });
});

describe('facts from the inspection pass', () => {
  let left: Buffer;
  beforeAll(async () => {
    left = await gradient(64, 48);
  });

  it('hashes bytes and pixels: a resized re-encode is a near-duplicate, a mirror is not', async () => {
    const original = await imageFacts(left, 1e7);
    const resized = await imageFacts(await sharp(left).resize(40, 30).jpeg({ quality: 80 }).toBuffer(), 1e7);
    const mirrored = await imageFacts(await gradient(64, 48, true), 1e7);
    const distance = (a: string, b: string) => [...(BigInt(`0x${a}`) ^ BigInt(`0x${b}`)).toString(2)].filter((c) => c === '1').length;
    expect(original).toMatchObject({ width: 64, height: 48, channels: 3, greyscale: false });
    expect(original.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(original.dhash).toMatch(/^[0-9a-f]{16}$/);
    expect(resized.sha256).not.toBe(original.sha256);
    expect(distance(original.dhash!, resized.dhash!)).toBeLessThanOrEqual(4);
    expect(distance(original.dhash!, mirrored.dhash!)).toBeGreaterThan(4);
    expect((await imageFacts(await gradient(20, 10, false, 1), 1e7)).greyscale).toBe(true);
  });

  it('inspectDatasetZip returns facts for every decoded image, in one pass', async () => {
    const red = await png(255, 0, 0);
    const zip = writeZip({ 'train/a/1.png': red, 'train/b/1.png': left, 'val/a/1.png': red, 'val/b/x.png': 'garbage' });
    const summary = await inspectDatasetZip(zip, { ...LIMITS, maxPixels: 1e7 });
    expect([...summary.facts.keys()].sort()).toEqual(['train/a/1.png', 'train/b/1.png', 'val/a/1.png']);
    expect(summary.facts.get('train/a/1.png')!.sha256).toBe(summary.facts.get('val/a/1.png')!.sha256);
    const report = runDataChecks({ ...summary.index, facts: summary.facts, skipped: summary.skipped });
    expect(checks(report)).toEqual(expect.arrayContaining(['blocking:train_val_leakage', 'warning:empty_val_class', 'warning:unreadable_files']));
  });
});
