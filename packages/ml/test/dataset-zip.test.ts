import { describe, it, expect, beforeAll } from 'vitest';
import { zipSync } from 'fflate';
import sharp from 'sharp';
import { DatasetError } from '@finetune/core';
import { indexDatasetZip, inspectDatasetZip, readZipEntries } from '../src/dataset-zip.ts';
import { png, writeZip, writeBytes, LIMITS } from './fixtures.ts';

let red: Buffer;
let blue: Buffer;
beforeAll(async () => {
  red = await png(255, 0, 0);
  blue = await png(0, 0, 255);
});

async function expectCode(p: Promise<unknown>, code: string): Promise<DatasetError> {
  const error = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(error, `expected DatasetError ${code}`).toBeInstanceOf(DatasetError);
  expect((error as DatasetError).code).toBe(code);
  expect((error as DatasetError).status).toBe(422);
  return error as DatasetError;
}

/** Offsets of a 4-byte little-endian signature in a buffer. */
function findSig(buf: Uint8Array, sig: number): number[] {
  const out: number[] = [];
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  for (let i = 0; i + 4 <= buf.length; i++) if (view.getUint32(i, true) === sig) out.push(i);
  return out;
}

describe('indexDatasetZip: layouts', () => {
  it('reads a flat <class>/<img> archive, sorted classes, all train, junk ignored', async () => {
    const zip = writeZip({
      'dogs/1.png': blue,
      'cats/1.png': red,
      'cats/2.PNG': red,
      'cats/2019/deeper.png': red,
      'cats/notes.txt': 'hello',
      '.DS_Store': 'x',
      'cats/.hidden.png': red,
      '__MACOSX/cats/._1.png': 'x',
    });
    const index = await indexDatasetZip(zip, LIMITS);
    expect(index.layout).toBe('flat');
    expect(index.classes).toEqual(['cats', 'dogs']);
    expect(index.entries).toHaveLength(4);
    expect(index.entries.every((e) => e.split === 'train')).toBe(true);
    expect(index.entries.find((e) => e.path === 'cats/2019/deeper.png')?.label).toBe('cats');
    expect(index.ignored).toBe(4);
  });

  it('reads a train/ + validation/ + test/ split archive: test/ is the test split', async () => {
    const zip = writeZip({
      'train/a/1.png': red,
      'train/b/1.png': blue,
      'validation/a/2.png': red,
      'val/b/2.png': blue,
      'test/a/3.png': red,
      'Test/b/sub/4.png': blue,
    });
    const index = await indexDatasetZip(zip, LIMITS);
    expect(index.layout).toBe('split');
    expect(index.classes).toEqual(['a', 'b']);
    expect(index.entries.map((e) => [e.path, e.label, e.split])).toEqual([
      ['train/a/1.png', 'a', 'train'],
      ['train/b/1.png', 'b', 'train'],
      ['validation/a/2.png', 'a', 'val'],
      ['val/b/2.png', 'b', 'val'],
      ['test/a/3.png', 'a', 'test'],
      ['Test/b/sub/4.png', 'b', 'test'],
    ]);
    expect(index.ignored).toBe(0);
  });

  it('reads train/ + test/ without val/, and refuses a class found only in test/', async () => {
    const index = await indexDatasetZip(writeZip({ 'train/a/1.png': red, 'train/b/1.png': blue, 'test/b/2.png': blue }), LIMITS);
    expect(index.entries.map((e) => e.split)).toEqual(['train', 'train', 'test']);
    const error = await expectCode(
      indexDatasetZip(writeZip({ 'train/a/1.png': red, 'train/b/1.png': blue, 'test/c/2.png': blue }), LIMITS),
      'unexpected_layout',
    );
    expect(error.message).toBe('Classes present only in test/: c');
  });

  it('counts the test split per class when inspecting', async () => {
    const zip = writeZip({ 'train/a/1.png': red, 'train/b/1.png': blue, 'val/a/2.png': red, 'test/a/3.png': red, 'test/b/4.png': blue, 'test/b/5.png': blue });
    const summary = await inspectDatasetZip(zip, { ...LIMITS, maxPixels: 1e8 });
    expect(summary.counts).toEqual({ train: { a: 1, b: 1 }, val: { a: 1, b: 0 }, test: { a: 1, b: 2 } });
  });

  it('unwraps one top-level folder (split and flat)', async () => {
    const split = await indexDatasetZip(
      writeZip({
        'hymenoptera_data/': new Uint8Array(0),
        'hymenoptera_data/train/ants/x.jpg': red,
        'hymenoptera_data/train/bees/y.jpg': blue,
        'hymenoptera_data/val/ants/z.jpg': red,
      }),
      LIMITS,
    );
    expect(split.layout).toBe('split');
    expect(split.classes).toEqual(['ants', 'bees']);
    expect(split.entries[0]).toEqual({ path: 'hymenoptera_data/train/ants/x.jpg', label: 'ants', split: 'train' });

    const flat = await indexDatasetZip(writeZip({ 'digits/0/a.png': red, 'digits/1/b.png': blue }), LIMITS);
    expect(flat.layout).toBe('flat');
    expect(flat.classes).toEqual(['0', '1']);
  });

  it('accepts a class folder literally named like an Object prototype key', async () => {
    const index = await indexDatasetZip(writeZip({ 'constructor/a.png': red, 'toString/b.png': blue }), LIMITS);
    expect(index.layout).toBe('flat');
    expect(index.classes).toEqual(['constructor', 'toString']);
  });
});

describe('unlabelled archives (kind unlabelled)', () => {
  it('takes images at any depth, with no classes and no splits, and skips junk as usual', async () => {
    const zip = writeZip({ 'a.png': red, 'street/b.png': blue, 'train/x/c.png': red, '.DS_Store': 'x', 'notes.txt': 'x' });
    const index = await indexDatasetZip(zip, LIMITS, 'unlabelled');
    expect(index).toMatchObject({ layout: 'unlabelled', classes: [], ignored: 2 });
    expect(index.entries).toEqual([
      { path: 'a.png', label: '', split: 'train' },
      { path: 'street/b.png', label: '', split: 'train' },
      { path: 'train/x/c.png', label: '', split: 'train' },
    ]);
    const summary = await inspectDatasetZip(writeZip({ 'a.png': red, 'b.png': new TextEncoder().encode('not an image at all') }), { ...LIMITS, maxPixels: 1e6 }, 32, 'unlabelled');
    expect(summary.images).toBe(1);
    expect(summary.skipped.map((f) => f.path)).toEqual(['b.png']);
  });

  it('refuses one with no decodable image, and the hostile names a labelled one refuses', async () => {
    await expectCode(inspectDatasetZip(writeZip({ 'a.png': new TextEncoder().encode('nope') }), { ...LIMITS, maxPixels: 1e6 }, 32, 'unlabelled'), 'empty_archive');
    await expectCode(indexDatasetZip(writeZip({ 'notes.txt': 'x' }), LIMITS, 'unlabelled'), 'empty_archive');
    const zip = zipSync({ 'aaaaaa.png': red });
    const name = findSig(zip, 0x02014b50).map((o) => o + 46)[0]!;
    zip.set(new TextEncoder().encode('../a.p'), name);
    await expectCode(indexDatasetZip(writeBytes(zip), LIMITS, 'unlabelled'), 'unsafe_entry_name');
  });
});

describe('indexDatasetZip: hostile and unusable archives', () => {
  it('invalid_zip: not a zip, truncated, corrupt central directory', async () => {
    await expectCode(indexDatasetZip(writeBytes(new TextEncoder().encode('definitely not a zip')), LIMITS), 'invalid_zip');
    await expectCode(indexDatasetZip(writeBytes(new Uint8Array(0)), LIMITS), 'invalid_zip');

    const good = zipSync({ 'a/1.png': red, 'b/1.png': blue });
    await expectCode(indexDatasetZip(writeBytes(good.subarray(0, good.length - 30)), LIMITS), 'invalid_zip');

    const broken = good.slice();
    const cd = findSig(broken, 0x02014b50)[1]!; // second central-directory record
    broken[cd] = 0x00;
    await expectCode(indexDatasetZip(writeBytes(broken), LIMITS), 'invalid_zip');
  });

  it('empty_archive: no image entries', async () => {
    await expectCode(indexDatasetZip(writeZip({ 'README.txt': 'hi', '.DS_Store': 'x', 'a/': new Uint8Array(0) }), LIMITS), 'empty_archive');
  });

  it.each([
    ['../x.png'],
    ['a/../../x.png'],
    ['/x.png'],
    ['C:\\x.png'],
    ['C:/x.png'],
    ['cats\\x.png'],
    ['cats/./x.png'],
    ['cats//x.png'],
  ])('unsafe_entry_name: %j', async (name) => {
    const zip = writeZip({ 'cats/ok.png': red, [name]: red, 'dogs/ok.png': blue });
    const error = await expectCode(indexDatasetZip(zip, LIMITS), 'unsafe_entry_name');
    expect(error.message).toContain('x.png');
  });

  it('unsafe_entry_name: duplicate entry names', async () => {
    // fflate's object API cannot repeat a name, so rename a second entry in place.
    const bytes = zipSync({ 'cats/a.png': red, 'cats/b.png': blue, 'dogs/c.png': blue });
    const text = Buffer.from(bytes);
    let at = text.indexOf('cats/b.png');
    while (at !== -1) {
      text.write('cats/a.png', at, 'latin1');
      at = text.indexOf('cats/b.png', at + 1);
    }
    await expectCode(indexDatasetZip(writeBytes(text), LIMITS), 'unsafe_entry_name');
  });

  it('too_many_entries: counted from the central directory before reading it', async () => {
    const zip = writeZip({ 'a/1.png': red, 'a/2.png': red, 'b/1.png': blue, 'b/2.png': blue });
    await expectCode(indexDatasetZip(zip, { ...LIMITS, maxEntries: 3 }), 'too_many_entries');
    await expect(indexDatasetZip(zip, { ...LIMITS, maxEntries: 4 })).resolves.toBeTruthy();
  });

  it('archive_too_large: declared entry size or declared total over the limit', async () => {
    const big = new Uint8Array(200_000); // compresses to almost nothing
    const zip = writeZip({ 'a/big.png': big, 'b/1.png': blue }, 6);
    await expectCode(indexDatasetZip(zip, { ...LIMITS, maxEntryBytes: 100_000 }), 'archive_too_large');
    const many = writeZip({ 'a/1.png': big, 'a/2.png': big, 'b/1.png': big }, 6);
    await expectCode(indexDatasetZip(many, { ...LIMITS, maxUncompressedBytes: 500_000 }), 'archive_too_large');
  });

  it('too_few_classes: one class folder', async () => {
    await expectCode(indexDatasetZip(writeZip({ 'cats/a.png': red, 'cats/b.png': red }), LIMITS), 'too_few_classes');
    await expectCode(indexDatasetZip(writeZip({ 'train/cats/a.png': red, 'val/cats/b.png': red }), LIMITS), 'too_few_classes');
  });

  it('unexpected_layout: images at the root, next to class folders, val-only classes, stray split folders', async () => {
    await expectCode(indexDatasetZip(writeZip({ 'a.png': red, 'cats/b.png': red, 'dogs/c.png': blue }), LIMITS), 'unexpected_layout');
    await expectCode(
      indexDatasetZip(writeZip({ 'data/a.png': red, 'data/cats/b.png': red, 'data/dogs/c.png': blue }), LIMITS),
      'unexpected_layout',
    );
    const valOnly = await expectCode(
      indexDatasetZip(writeZip({ 'train/a/1.png': red, 'train/b/1.png': blue, 'val/c/1.png': red }), LIMITS),
      'unexpected_layout',
    );
    expect(valOnly.message).toContain('c');
    await expectCode(indexDatasetZip(writeZip({ 'train/a/1.png': red, 'train/b/1.png': blue, 'extra/c/1.png': red }), LIMITS), 'unexpected_layout');
    await expectCode(indexDatasetZip(writeZip({ 'train/1.png': red, 'train/b/1.png': blue, 'train/c/1.png': red }), LIMITS), 'unexpected_layout');
    await expectCode(indexDatasetZip(writeZip({ 'val/a/1.png': red, 'val/b/1.png': blue }), LIMITS), 'unexpected_layout');
  });
});

describe('readZipEntries', () => {
  it('streams the selected entries in archive order', async () => {
    const zip = writeZip({ 'a/1.png': red, 'a/2.png': red, 'b/1.png': blue, 'b/x.txt': 'no' }, 6);
    const seen: [string, number][] = [];
    await readZipEntries(zip, null, LIMITS, async (p, data) => void seen.push([p, data.length]));
    expect(seen).toEqual([
      ['a/1.png', red.length],
      ['a/2.png', red.length],
      ['b/1.png', blue.length],
    ]);
    const some: string[] = [];
    await readZipEntries(zip, new Set(['b/1.png']), LIMITS, async (p) => void some.push(p));
    expect(some).toEqual(['b/1.png']);
  });

  it('runs up to `concurrency` entries at once, started in archive order, and throws the first failure after the rest settle', async () => {
    const files: Record<string, Uint8Array> = {};
    for (let i = 0; i < 12; i++) files[`c/${String(i).padStart(2, '0')}.png`] = red;
    const zip = writeZip(files);
    const started: string[] = [];
    const finished: string[] = [];
    let inFlight = 0;
    let most = 0;
    // Each entry waits at a gate; the latest started is let through first (when three are in
    // flight, or once the last entry has started), so completion order is not archive order —
    // decided by the gates, not by timers a loaded machine could reorder.
    const gates: (() => void)[] = [];
    const releaseLatest = () => gates.pop()?.();
    const count = Object.keys(files).length;
    await readZipEntries(
      zip,
      null,
      LIMITS,
      async (p) => {
        started.push(p);
        most = Math.max(most, ++inFlight);
        const gate = new Promise<void>((resolve) => gates.push(resolve));
        if (inFlight === 3 || started.length === count) releaseLatest();
        await gate;
        inFlight--;
        finished.push(p);
        if (started.length === count) releaseLatest();
      },
      undefined,
      { concurrency: 3 },
    );
    expect(started).toEqual(Object.keys(files));
    expect(finished).not.toEqual(started);
    expect(finished.sort()).toEqual(Object.keys(files));
    expect(most).toBe(3);

    let running = 0;
    let settled = 0;
    await expect(
      readZipEntries(
        zip,
        null,
        LIMITS,
        async (p) => {
          running++;
          await new Promise((r) => setTimeout(r, 10));
          running--;
          settled++;
          if (p === 'c/04.png') throw new Error('bad image c/04.png');
        },
        undefined,
        { concurrency: 4 },
      ),
    ).rejects.toThrow('bad image c/04.png');
    // Nothing was still running when it threw, and no entry started after the failure was seen
    // beyond those already in flight.
    expect(running).toBe(0);
    expect(settled).toBeLessThan(12);
  });

  it('rejects an entry that inflates beyond its (lying) declared size', async () => {
    // A 1 MB entry whose headers claim 1,000 bytes: passes the index, caught while inflating.
    const bytes = zipSync({ 'a/bomb.png': [new Uint8Array(1_000_000), { level: 9 }], 'b/1.png': [blue, { level: 0 }] });
    const view = new DataView(bytes.buffer);
    for (const off of findSig(bytes, 0x04034b50)) if (view.getUint32(off + 22, true) === 1_000_000) view.setUint32(off + 22, 1000, true);
    for (const off of findSig(bytes, 0x02014b50)) if (view.getUint32(off + 24, true) === 1_000_000) view.setUint32(off + 24, 1000, true);
    const zip = writeBytes(bytes);
    const limits = { ...LIMITS, maxEntryBytes: 100_000 };
    const index = await indexDatasetZip(zip, limits);
    expect(index.entries).toHaveLength(2);
    const got: string[] = [];
    await expectCode(
      readZipEntries(zip, null, limits, async (p) => void got.push(p)),
      'archive_too_large',
    );
    expect(got).toEqual([]);
    await expectCode(inspectDatasetZip(zip, { ...limits, maxPixels: 1e6 }), 'archive_too_large');
  });
});

describe('inspectDatasetZip', () => {
  it('decodes every image, counts per split and class, skips corrupt and oversized images', async () => {
    const huge = await sharp({ create: { width: 3000, height: 3000, channels: 3, background: '#0f0' } }).png().toBuffer();
    const jpeg = await sharp(red).jpeg().toBuffer();
    const zip = writeZip({
      'set/train/a/1.png': red,
      'set/train/a/2.jpg': jpeg,
      'set/train/a/bad.png': 'this is not a png',
      'set/train/a/truncated.jpg': jpeg.subarray(0, Math.floor(jpeg.length / 2)),
      'set/train/b/1.png': blue,
      'set/train/b/huge.png': huge,
      'set/val/a/1.png': red,
      'set/val/b/1.png': blue,
      'set/val/b/2.png': blue,
    });
    const summary = await inspectDatasetZip(zip, { ...LIMITS, maxPixels: 1_000_000 });
    expect(summary.index.layout).toBe('split');
    expect(summary.counts).toEqual({ train: { a: 2, b: 1 }, val: { a: 1, b: 2 }, test: { a: 0, b: 0 } });
    expect(summary.skipped.map((s) => s.path)).toEqual(['set/train/a/bad.png', 'set/train/a/truncated.jpg', 'set/train/b/huge.png']);
    expect(summary.skipped.find((s) => s.path.endsWith('huge.png'))?.reason).toMatch(/pixel limit/);
    expect(summary.index.entries).toHaveLength(6);
    expect(summary.index.classes).toEqual(['a', 'b']);
  });

  it('skips an entry whose deflate stream is corrupt', async () => {
    const bytes = zipSync({ 'a/1.png': [red, { level: 0 }], 'a/broken.png': [red, { level: 6 }], 'b/1.png': [blue, { level: 0 }] });
    const view = new DataView(bytes.buffer);
    const local = findSig(bytes, 0x04034b50)[1]!;
    const dataStart = local + 30 + view.getUint16(local + 26, true) + view.getUint16(local + 28, true);
    bytes.fill(0xff, dataStart, dataStart + 8); // BTYPE=11: invalid deflate block
    const summary = await inspectDatasetZip(writeBytes(bytes), { ...LIMITS, maxPixels: 1e6 });
    expect(summary.counts.train).toEqual({ a: 1, b: 1 });
    expect(summary.skipped).toHaveLength(1);
    expect(summary.skipped[0]!.path).toBe('a/broken.png');
    expect(summary.skipped[0]!.reason).toMatch(/unreadable zip entry/);
  });

  it('empty_class when a class has no decodable training image', async () => {
    const zip = writeZip({ 'cats/1.png': red, 'dogs/1.png': 'garbage', 'dogs/2.png': 'garbage' });
    const error = await expectCode(inspectDatasetZip(zip, { ...LIMITS, maxPixels: 1e6 }), 'empty_class');
    expect(error.message).toContain('dogs');
  });

  it('handles a few thousand images at a reasonable rate', async () => {
    const files: Record<string, Uint8Array> = {};
    const variants = await Promise.all([0, 64, 128, 192].map((v) => png(v, 255 - v, v, 64)));
    for (let i = 0; i < 2000; i++) files[`c${i % 4}/${i}.png`] = variants[i % 4]!;
    const zip = writeZip(files);
    const t0 = performance.now();
    const summary = await inspectDatasetZip(zip, { ...LIMITS, maxEntries: 10_000, maxPixels: 1e6 });
    const ms = performance.now() - t0;
    expect(summary.index.entries).toHaveLength(2000);
    console.log(`inspectDatasetZip: 2000 64×64 PNGs in ${ms.toFixed(0)} ms (${((2000 / ms) * 1000).toFixed(0)} images/s)`);
  });
});
