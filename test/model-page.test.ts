// The page in every model download, in a real browser (Debian's Chromium driven by
// playwright-core): the zip, unzipped and served by a bare static file server, loads the model
// with the TensorFlow.js bundled beside it and classifies an image the way the API's /predict
// does (same label, same score), without a request leaving that server.
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { extname, join, normalize } from 'node:path';
import { unzipSync } from 'fflate';
import sharp from 'sharp';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { keys } from '@finetune/storage';
import { buildTestApp, type TestApp } from './support/app.ts';
import { createTinyModel } from './support/hostile.ts';
import { digitPng } from './support/mnist-fixtures.ts';

const CHROMIUM = '/usr/bin/chromium';
const MODEL_FILES = ['labels.json', 'metadata.json', 'model.json', 'weights.bin'];
const PAGE_FILES = ['app.js', 'index.html', 'style.css', 'tf.min.js'];
const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.bin': 'application/octet-stream',
};
/** As strict as a static host can be: the page must need nothing inline, evaluated or remote. */
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:";

let t: TestApp;
let browser: Browser;
const cleanup: (() => Promise<unknown>)[] = [];

beforeAll(async () => {
  t = await buildTestApp();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

afterAll(async () => {
  for (const step of cleanup.reverse()) await step();
  await browser?.close();
  await t?.close();
});

async function downloadZip(modelId: string): Promise<Record<string, Uint8Array>> {
  const res = await t.http
    .get(`/v1/models/${modelId}/download`)
    .buffer(true)
    .parse((response, done) => {
      const chunks: Buffer[] = [];
      response.on('data', (c: Buffer) => chunks.push(c));
      response.on('end', () => done(null, Buffer.concat(chunks)));
    })
    .expect(200)
    .expect('content-type', 'application/zip');
  return unzipSync(new Uint8Array(res.body as Buffer));
}

/** Serves `dir` on a free loopback port, as any static file server would (plus a strict CSP). */
async function serve(dir: string): Promise<string> {
  const server: Server = createServer(async (req, res) => {
    const path = normalize(decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname)).replace(/^\/+/, '') || 'index.html';
    try {
      const body = await readFile(join(dir, path));
      res.writeHead(200, { 'content-type': TYPES[extname(path)] ?? 'application/octet-stream', 'content-security-policy': CSP });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanup.push(() => new Promise((resolve) => server.close(resolve)));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

interface ModelPage {
  page: Page;
  origin: string;
  /** Every URL the page asked for, and every error or CSP complaint it logged. */
  requests: string[];
  problems: string[];
}

/** Downloads the model, unzips it to a temp dir, serves that and opens its index.html. */
async function openModelPage(modelId: string): Promise<ModelPage> {
  const files = await downloadZip(modelId);
  expect(Object.keys(files).sort()).toEqual([...MODEL_FILES, ...PAGE_FILES].sort());
  const dir = await mkdtemp(join(tmpdir(), 'finetune-model-page-'));
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  for (const [name, data] of Object.entries(files)) await writeFile(join(dir, name), data);
  const origin = await serve(dir);

  const page = await browser.newPage();
  cleanup.push(() => page.close());
  const requests: string[] = [];
  const problems: string[] = [];
  page.on('request', (r) => requests.push(r.url()));
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' || /Content Security Policy/i.test(message.text())) problems.push(`console: ${message.text()}`);
  });
  await page.goto(`${origin}/`);
  await page.waitForFunction(() => document.getElementById('status')?.textContent?.startsWith('Ready') || document.querySelector('[role=alert]'));
  expect(await page.locator('#status').textContent()).toMatch(/^Ready/);
  return { page, origin, requests, problems };
}

/** Picks `png` in the page's file input; the label and score the page then shows. */
async function classifyInPage(page: Page, name: string, png: Buffer): Promise<{ label: string; score: number }> {
  await page.getByLabel('choose one').setInputFiles({ name, mimeType: 'image/png', buffer: png });
  await page.waitForFunction((file) => {
    const status = document.getElementById('status')?.textContent ?? '';
    return status.startsWith(`${file}:`) || status.startsWith(`${file} could not`);
  }, name);
  expect(await page.locator('#status').textContent()).toMatch(new RegExp(`^${name}: `));
  return {
    label: (await page.locator('#top-label').textContent()) ?? '',
    score: Number(await page.locator('#top-score').getAttribute('value')),
  };
}

async function apiPredict(modelId: string, png: Buffer): Promise<{ label: string; score: number }> {
  const res = await t.http.post(`/v1/models/${modelId}/predict`).attach('file', png, 'image.png').expect(200);
  return res.body.predictions[0];
}

/** Deterministic noise (mulberry32), so a failure reproduces. */
function noisePng(width: number, height: number, seed: number): Promise<Buffer> {
  let a = seed;
  const next = () => {
    a = (a + 0x6d2b79f5) | 0;
    let x = Math.imul(a ^ (a >>> 15), 1 | a);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
  const raw = Buffer.alloc(width * height * 3);
  for (let i = 0; i < raw.length; i++) raw[i] = Math.floor(next() * 256);
  return sharp(raw, { raw: { width, height, channels: 3 } }).png().toBuffer();
}

/** A smooth colour field, as a photo's downscaling sees it more than noise. */
function gradientPng(width: number, height: number): Promise<Buffer> {
  const raw = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      raw[i] = Math.round(127.5 + 127.5 * Math.sin(x / 9));
      raw[i + 1] = Math.round((255 * y) / (height - 1));
      raw[i + 2] = Math.round(127.5 + 127.5 * Math.cos((x + y) / 13));
    }
  }
  return sharp(raw, { raw: { width, height, channels: 3 } }).png().toBuffer();
}

/** Solid-colour image with solid bands of another colour on both long ends. */
function bandedPng(width: number, height: number, centre: [number, number, number], band: [number, number, number], bandWidth: number) {
  const raw = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) raw.set(x < bandWidth || x >= width - bandWidth ? band : centre, (y * width + x) * 3);
  }
  return sharp(raw, { raw: { width, height, channels: 3 } }).png().toBuffer();
}

/**
 * Replaces the tiny model's random weights with ones whose answer is known: the logit of 'red'
 * is `gain` × (mean red − mean blue) over the inner 20 × 20 pixels, and 'blue' its negative, so
 * P(red) = sigmoid(2 × gain × (mean R − mean B)). Border pixels weigh nothing: how a resize
 * filter blends across a crop edge does not count, where the crop is does.
 */
async function setColourProbeWeights(modelId: string, gain: number) {
  const modelJson = JSON.parse((await t.deps.store.getBuffer(keys.modelFile(modelId, 'model.json'))).toString('utf8'));
  const specs = modelJson.weightsManifest[0].weights as { name: string; shape: number[] }[];
  const size = 28;
  const inner = (v: number) => v >= 4 && v < size - 4;
  const perPixel = gain / (20 * 20);
  const parts = specs.map(({ name, shape }) => {
    const values = new Float32Array(shape.reduce((a, b) => a * b, 1));
    if (name.endsWith('/kernel')) {
      // Flattened [y][x][channel] rows, 2 columns (red, blue).
      for (let y = 0; y < size; y++) {
        for (let x = 0; x < size; x++) {
          if (!inner(y) || !inner(x)) continue;
          const row = (y * size + x) * 3;
          values[row * 2 + 0] = perPixel; // R → red
          values[row * 2 + 1] = -perPixel;
          values[(row + 2) * 2 + 0] = -perPixel; // B → blue
          values[(row + 2) * 2 + 1] = perPixel;
        }
      }
    }
    return Buffer.from(values.buffer);
  });
  await t.deps.store.putBuffer(keys.modelFile(modelId, 'weights.bin'), Buffer.concat(parts));
}

describe('the page in a model download', () => {
  it('classifies like /predict, offline, in a browser', async () => {
    const started = Date.now();
    const { modelId } = await createTinyModel(t);
    const { page, origin, requests, problems } = await openModelPage(modelId);
    // The model's `files` name what the zip holds; the page says what it runs on.
    expect([...(await t.http.get(`/v1/models/${modelId}`).expect(200)).body.files].sort()).toEqual([...MODEL_FILES, ...PAGE_FILES].sort());
    expect(await page.locator('#about').textContent()).toMatch(/2 classes, 28 × 28 input\. .*TensorFlow\.js 4\.\d+\.\d+ \((webgl|cpu)\)/);

    // Pixels the model sees unresized (28 × 28, or a 28-pixel short side to crop): the same
    // numbers as the API, so a swapped channel, a wrong scale or a half-pixel shift shows.
    const exact: [string, Buffer][] = [
      ['digit.png', await digitPng(3, 0)],
      ['noise.png', await noisePng(28, 28, 1)],
      ['wide-noise.png', await noisePng(101, 28, 2)],
      ['tall-noise.png', await noisePng(28, 61, 3)],
    ];
    for (const [name, png] of exact) {
      const [inPage, api] = [await classifyInPage(page, name, png), await apiPredict(modelId, png)];
      expect(inPage.label, name).toBe(api.label);
      expect(Math.abs(inPage.score - api.score), `${name}: page ${inPage.score}, API ${api.score}`).toBeLessThan(1e-3);
    }
    // Downscaled: the canvas's filter is not libvips' Lanczos, so close, not equal.
    const smooth = await gradientPng(240, 160);
    const [inPage, api] = [await classifyInPage(page, 'gradient.png', smooth), await apiPredict(modelId, smooth)];
    expect(inPage.label).toBe(api.label);
    expect(Math.abs(inPage.score - api.score), `page ${inPage.score}, API ${api.score}`).toBeLessThan(1e-2);

    expect(await page.locator('#top-k li').count()).toBe(2);
    expect(await page.locator('#top-k meter').count()).toBe(2);
    expect(problems).toEqual([]);
    const elsewhere = requests.filter((url) => !url.startsWith(`${origin}/`) && !url.startsWith('data:'));
    expect(elsewhere).toEqual([]);
    expect(requests.some((url) => url.endsWith('/tf.min.js'))).toBe(true);
    expect(Date.now() - started).toBeLessThan(60_000);
  });

  it('gives the answer known from its weights, cropping as the API does', async () => {
    const { modelId } = await createTinyModel(t, ['red', 'blue']);
    await setColourProbeWeights(modelId, 2);
    const { page, problems } = await openModelPage(modelId);

    // A reddish square between blue bands that a cover crop drops: 'red', with
    // P = sigmoid(4 × (200 − 120) / 255) ≈ 0.778. Squeezed or letterboxed, the blue would win.
    const banded = await bandedPng(300, 200, [200, 60, 120], [0, 0, 255], 50);
    const expected = 1 / (1 + Math.exp(-4 * (80 / 255)));
    const inPage = await classifyInPage(page, 'banded.png', banded);
    const api = await apiPredict(modelId, banded);
    expect(api.label).toBe('red');
    expect(api.score).toBeCloseTo(expected, 3);
    expect(inPage.label).toBe('red');
    expect(Math.abs(inPage.score - api.score), `page ${inPage.score}, API ${api.score}`).toBeLessThan(1e-3);
    // The bars: both classes, the best first.
    expect(await page.locator('#top-k li > span:first-child').allTextContents()).toEqual(['red', 'blue']);

    // Dropped anywhere on the page rather than picked: a plain blue-ish portrait.
    const blue = (await bandedPng(200, 300, [40, 90, 230], [255, 0, 0], 0)).toString('base64');
    await page.evaluate((b64) => {
      const data = new DataTransfer();
      data.items.add(new File([Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))], 'dropped.png', { type: 'image/png' }));
      document.body.dispatchEvent(new DragEvent('drop', { dataTransfer: data, bubbles: true, cancelable: true }));
    }, blue);
    await page.waitForFunction(() => document.getElementById('status')?.textContent?.startsWith('dropped.png: '));
    expect(await page.locator('#top-label').textContent()).toBe('blue');
    expect(problems).toEqual([]);
  });
});
