// The web dashboard end to end, in a real browser (Debian's Chromium driven by playwright-core)
// against the real API and a real worker process: sign in, upload a dataset and see its
// thumbnails, start a job through the form, watch its learning curves grow, open the model, see
// its evaluation and predict with it. Plus the thumbnail endpoint it relies on, tenant-scoped.
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import sharp from 'sharp';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, TEST_ADMIN_API_KEY, type TestApp } from './support/app.ts';
import { expectProblem, listen } from './support/hostile.ts';
import { digitPng, mnistFolderZip } from './support/mnist-fixtures.ts';
import { killGroup, spawnWorker, type SpawnedProcess } from './support/processes.ts';

const CHROMIUM = '/usr/bin/chromium';
// Long enough (about 0.2 s an epoch here) that the job spans several of the events stream's 1 s
// reads and the fallback's 2 s polls, so the curve is seen growing, even on a loaded machine.
const EPOCHS = 20;
const POLLED_EPOCHS = 30;

let t: TestApp;
let base: string;
let worker: SpawnedProcess;
let context: BrowserContext;
let profile: string;
/** What the pages reported: uncaught errors and CSP violations fail the test. */
const pageProblems: string[] = [];

beforeAll(async () => {
  t = await buildTestApp();
  base = `http://127.0.0.1:${await listen(t)}`;
  worker = spawnWorker({ QUEUE_PREFIX: t.config.queuePrefix, LOG_LEVEL: 'warn' });
  profile = await mkdtemp(join(tmpdir(), 'finetune-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    acceptDownloads: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  context.setDefaultTimeout(20_000);
});

afterAll(async () => {
  await context?.close();
  if (worker) await killGroup(worker);
  await t?.close();
  if (profile) await rm(profile, { recursive: true, force: true });
});

async function openPage(): Promise<Page> {
  const page = await context.newPage();
  page.on('pageerror', (error) => pageProblems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (/Content Security Policy/i.test(message.text())) pageProblems.push(`CSP: ${message.text()}`);
  });
  await page.goto(`${base}/`);
  return page;
}

async function signIn(page: Page, key: string) {
  await page.getByLabel('API key').fill(key);
  await page.getByRole('button', { name: 'Sign in' }).click();
}

/**
 * Watches the loss chart of the job page until the job has succeeded with all its points drawn;
 * returns the train-point counts seen, each larger than the last.
 */
async function followCurve(page: Page, epochs: number): Promise<number[]> {
  const points = page.locator('#loss-chart circle.point.train');
  const seen: number[] = [];
  const deadline = Date.now() + 60_000;
  for (;;) {
    const count = await points.count();
    if (seen.at(-1) !== count) seen.push(count);
    const status = (await page.locator('#job-status').textContent()) ?? '';
    expect(['failed', 'canceled'], `job ${status}`).not.toContain(status);
    if (status === 'succeeded' && count === epochs) break;
    if (Date.now() > deadline) throw new Error(`the job did not finish: status ${status}, points seen ${seen.join(', ')}`);
    await page.waitForTimeout(100);
  }
  for (let i = 1; i < seen.length; i++) expect(seen[i]).toBeGreaterThan(seen[i - 1]!);
  expect(await page.locator('#accuracy-chart circle.point.val').count()).toBe(epochs);
  return seen;
}

describe('the dashboard', () => {
  it('is served at / with a CSP of its own, and the API keeps its strict one', async () => {
    const root = await request(t.app.server).get('/').expect(302);
    expect(root.headers.location).toBe('/dashboard/');
    await request(t.app.server).get('/dashboard').expect(301).expect('location', '/dashboard/');
    const page = await request(t.app.server).get('/dashboard/').expect(200).expect('content-type', /text\/html/);
    const csp = page.headers['content-security-policy'];
    expect(csp).toContain("script-src 'self'");
    expect(csp).toContain("connect-src 'self'");
    expect(csp).not.toContain('unsafe-inline');
    await request(t.app.server).get('/dashboard/js/main.js').expect(200).expect('content-type', /javascript/);
    // No script or stylesheet from anywhere else.
    expect(page.text).not.toMatch(/(src|href)="https?:/);
    const api = await request(t.app.server).get('/healthz').expect(200);
    expect(api.headers['content-security-policy']).toContain("default-src 'none'");
  });

  it('refuses a wrong key on the sign-in form', async () => {
    const page = await openPage();
    expect(new URL(page.url()).pathname).toBe('/dashboard/');
    await signIn(page, `ft_00000000_${randomBytes(32).toString('base64url')}`);
    await expect.poll(() => page.getByRole('alert').textContent()).toContain('not accepted');
    expect(await page.evaluate(() => sessionStorage.length)).toBe(0);
    await page.close();
  });

  it('takes a user from a zip to a trained model and a prediction', async () => {
    const started = Date.now();
    const page = await openPage();
    await signIn(page, TEST_ADMIN_API_KEY);
    await page.getByRole('heading', { name: 'Datasets' }).waitFor();

    // Upload a zip through the form; the dataset appears with its classes and thumbnails.
    await page.getByLabel('Zip of images').setInputFiles({ name: 'digits.zip', mimeType: 'application/zip', buffer: await mnistFolderZip([0, 1, 2], 16) });
    await page.getByLabel('Name (optional)').fill('browser digits');
    await page.getByRole('button', { name: 'Upload' }).click();
    await expect.poll(() => page.locator('#upload-form [role=alert]').textContent()).toContain('is ready: 48 images in 3 classes');
    const card = page.locator('article.dataset', { has: page.getByRole('heading', { name: 'browser digits' }) });
    await card.waitFor();
    expect(await card.locator('section.class h3').allInnerTexts()).toEqual(['0 16 images', '1 16 images', '2 16 images']);
    await page.waitForFunction(() => [...document.querySelectorAll<HTMLImageElement>('article.dataset .thumbs img')].some((img) => img.complete && img.naturalWidth > 0));

    // The job form: a validation error shows beside its field, then a valid job starts.
    await card.getByRole('link', { name: 'Train on this dataset' }).click();
    await page.locator('#baseModel option[value=small_cnn]').waitFor({ state: 'attached' });
    await page.getByLabel('Base model').selectOption('small_cnn');
    await page.getByLabel('Strategy').selectOption('scratch');
    expect(await page.getByLabel('Epochs').inputValue()).toBe('20'); // scratch's default
    await page.getByLabel('Epochs').fill('0');
    await page.getByRole('button', { name: 'Start job' }).click();
    const epochsError = page.locator('[data-field=epochs] .field-error');
    await expect.poll(() => epochsError.textContent()).toMatch(/>= 1/);
    expect(await page.getByLabel('Epochs').getAttribute('aria-invalid')).toBe('true');
    expect(await page.getByLabel('Batch size').getAttribute('aria-invalid')).toBeNull();

    await page.getByLabel('Epochs').fill(String(EPOCHS));
    await page.getByLabel('Batch size').fill('4');
    await page.getByRole('button', { name: 'Start job' }).click();
    await page.waitForURL(/#\/jobs\/[0-9a-f-]{36}$/);

    // The learning curve gains points while the job runs (the events stream, where the API has it).
    const seen = await followCurve(page, EPOCHS);
    expect(seen.filter((n) => n > 0 && n < EPOCHS).length, `point counts seen: ${seen.join(', ')}`).toBeGreaterThan(0);
    expect(await page.locator('#live-mode').getAttribute('data-mode')).toMatch(/^(stream|polling)$/);

    // The model: evaluation, prediction by picking and by dropping a file, download.
    await page.getByRole('link', { name: 'Open the model' }).click();
    const matrix = page.locator('#confusion-matrix');
    await matrix.waitFor();
    expect(await matrix.locator('tbody tr').count()).toBe(3);
    expect(await matrix.locator('thead th').allInnerTexts()).toEqual(['0', '1', '2']);
    const cells = (await matrix.locator('tbody td').allInnerTexts()).map(Number);
    expect(cells.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
    expect(await page.locator('#per-class tbody tr').count()).toBe(3);

    await page.getByLabel('choose one:').setInputFiles({ name: 'one.png', mimeType: 'image/png', buffer: await digitPng(1, 900) });
    await page.locator('#predicted').waitFor();
    expect(await page.locator('#predicted .label').textContent()).toMatch(/^[012]$/);
    expect(await page.locator('#prediction .bar-row').count()).toBe(3);

    const png = (await digitPng(2, 901)).toString('base64');
    await page.locator('#prediction').evaluate((el) => el.replaceChildren());
    await page.locator('#drop-zone').evaluate((zone, b64) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const data = new DataTransfer();
      data.items.add(new File([bytes], 'two.png', { type: 'image/png' }));
      zone.dispatchEvent(new DragEvent('drop', { dataTransfer: data, bubbles: true, cancelable: true }));
    }, png);
    await page.locator('#predicted').waitFor();
    expect(await page.locator('#predicted .label').textContent()).toMatch(/^[012]$/);

    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: /Download/ }).click()]);
    expect(download.suggestedFilename()).toMatch(/^model-[0-9a-f-]{36}\.zip$/);
    const zip = await readFile((await download.path())!);
    expect(zip.subarray(0, 2).toString()).toBe('PK');

    // The jobs list shows it finished, with its model; signing out forgets the key.
    await page.getByRole('link', { name: 'Jobs', exact: true }).click();
    const row = page.locator('#job-list tbody tr').first();
    await row.getByRole('link', { name: 'model' }).waitFor();
    expect(await row.locator('.status').textContent()).toBe('succeeded');
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByLabel('API key').waitFor();
    expect(await page.evaluate(() => sessionStorage.length)).toBe(0);

    expect(pageProblems).toEqual([]);
    await page.close();
    expect(Date.now() - started).toBeLessThan(110_000);
  });

  it('falls back to polling every 2 s where the API has no events stream', async () => {
    const datasetId = (await t.http.get('/v1/datasets').expect(200)).body.items[0].id as string;
    const spec = { datasetId, baseModel: 'small_cnn', strategy: 'scratch', hyperparameters: { epochs: POLLED_EPOCHS, batchSize: 4 } };
    const job = (await t.http.post('/v1/jobs').send(spec).expect(202)).body;
    const page = await openPage();
    // As an API without GET /v1/jobs/:id/events answers it.
    await page.route('**/v1/jobs/*/events', (route) =>
      route.fulfill({
        status: 404,
        contentType: 'application/problem+json',
        body: JSON.stringify({ type: 'urn:finetune:problem:route_not_found', title: 'Not Found', status: 404, code: 'route_not_found', detail: 'No route' }),
      }),
    );
    await signIn(page, TEST_ADMIN_API_KEY);
    await page.getByRole('heading', { name: 'Datasets' }).waitFor();
    await page.goto(`${base}/dashboard/#/jobs/${job.id}`);
    const seen = await followCurve(page, POLLED_EPOCHS);
    expect(await page.locator('#live-mode').getAttribute('data-mode')).toBe('polling');
    expect(seen.filter((n) => n > 0 && n < POLLED_EPOCHS).length, `point counts seen: ${seen.join(', ')}`).toBeGreaterThan(0);
    expect(pageProblems).toEqual([]);
    await page.close();
  });
});

describe('GET /v1/datasets/:id/samples', () => {
  it('answers a WebP thumbnail of the caller’s dataset, and 404 to another tenant', async () => {
    const zip = await mnistFolderZip([3, 4], 3);
    const dataset = (await t.http.post('/v1/datasets').attach('file', zip, 'd.zip').expect(201)).body;

    const thumb = await t.http.get(`/v1/datasets/${dataset.id}/samples?class=4&index=2`).buffer(true).expect(200).expect('content-type', 'image/webp');
    const meta = await sharp(thumb.body as Buffer).metadata();
    expect(meta.format).toBe('webp');
    expect(meta.width).toBe(28); // small images are not enlarged
    await t.http.get(`/v1/datasets/${dataset.id}/samples`).query({ path: 'digits/3/0.png' }).expect(200).expect('content-type', 'image/webp');

    expectProblem(await t.http.get(`/v1/datasets/${dataset.id}/samples?class=4&index=3`), 404, 'sample_not_found');
    expectProblem(await t.http.get(`/v1/datasets/${dataset.id}/samples?class=9`), 404, 'sample_not_found');
    expectProblem(await t.http.get(`/v1/datasets/${dataset.id}/samples?path=digits/3/99.png`), 404, 'sample_not_found');
    expectProblem(await t.http.get(`/v1/datasets/${dataset.id}/samples`), 400, 'invalid_sample_selector');
    expectProblem(await t.http.get(`/v1/datasets/${dataset.id}/samples?class=3&path=digits/3/0.png`), 400, 'invalid_sample_selector');
    expectProblem(await t.http.get(`/v1/datasets/${dataset.id}/samples?class=3&index=-1`), 400, 'validation_error');
    expectProblem(await request(t.app.server).get(`/v1/datasets/${dataset.id}/samples?class=3`), 401, 'unauthorized');

    // Another tenant's key: exactly the answer GET /v1/datasets/:id gives it.
    const tenant = (await t.http.post('/v1/tenants').send({ name: `other-${randomBytes(3).toString('hex')}` }).expect(201)).body;
    const key = (await t.http.post(`/v1/tenants/${tenant.id}/api-keys`).send({ name: 'other' }).expect(201)).body.key as string;
    const other = { authorization: `Bearer ${key}` };
    const theirs = await request(t.app.server).get(`/v1/datasets/${dataset.id}/samples?class=3`).set(other);
    expectProblem(theirs, 404, 'dataset_not_found');
    expectProblem(await request(t.app.server).get(`/v1/datasets/${dataset.id}`).set(other), 404, 'dataset_not_found');
    expect(theirs.body.detail).toBe((await request(t.app.server).get(`/v1/datasets/${dataset.id}`).set(other)).body.detail);

    // A deleted dataset has no samples, even while its local copy is still cached.
    await t.http.delete(`/v1/datasets/${dataset.id}`).expect(204);
    expectProblem(await t.http.get(`/v1/datasets/${dataset.id}/samples?class=3`), 404, 'dataset_not_found');
  });
});
