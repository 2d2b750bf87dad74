// Domain adaptation through the web dashboard, in a real browser (Debian's Chromium driven by
// playwright-core) against the real API and a real worker process: upload an unlabelled dataset
// with the form's kind choice, start a domain_adaptation job whose target selects offer only the
// datasets each can take (with the API's refusals shown beside their fields), and open the model
// to see its target-domain evaluation and what was adapted.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import request from 'supertest';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, type TestApp } from './support/app.ts';
import { listen } from './support/hostile.ts';
import { mnistFolderZip, shiftedDigitPng, zipOf } from './support/mnist-fixtures.ts';
import { killGroup, spawnWorker, type SpawnedProcess } from './support/processes.ts';

const CHROMIUM = '/usr/bin/chromium';

let t: TestApp;
let base: string;
let worker: SpawnedProcess;
let context: BrowserContext;
let profile: string;
/** A tenant of its own, so the form's dataset lists hold exactly what this test uploaded. */
let auth: { authorization: string };
let key: string;
/** What the pages reported: uncaught errors and CSP violations fail the test. */
const pageProblems: string[] = [];

beforeAll(async () => {
  t = await buildTestApp();
  base = `http://127.0.0.1:${await listen(t)}`;
  worker = spawnWorker({ QUEUE_PREFIX: t.config.queuePrefix, LOG_LEVEL: 'warn' });
  const tenant = (await t.http.post('/v1/tenants').send({ name: `da-dashboard-${randomBytes(3).toString('hex')}` }).expect(201)).body;
  key = (await t.http.post(`/v1/tenants/${tenant.id}/api-keys`).send({ name: 'browser' }).expect(201)).body.key as string;
  auth = { authorization: `Bearer ${key}` };
  profile = await mkdtemp(join(tmpdir(), 'finetune-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
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

/** A labelled dataset of the test's tenant, uploaded through the API. */
async function uploadLabelled(zip: Buffer, name: string): Promise<{ id: string; kind: string }> {
  return (await request(t.app.server).post('/v1/datasets').set(auth).field('name', name).attach('file', zip, `${name}.zip`).expect(201)).body;
}

/** Colour-cast digits (another camera's look), `<folder><digit>-<index>.png`. */
async function shiftedFiles(digits: number[], perClass: number, offset: number, folder: (digit: number) => string) {
  const files: Record<string, Uint8Array> = {};
  for (const digit of digits) {
    for (let i = offset; i < offset + perClass; i++) files[`${folder(digit)}${digit}-${i}.png`] = await shiftedDigitPng(digit, i, 'colour_cast');
  }
  return files;
}

const optionValues = (page: Page, select: string) => page.locator(`${select} option`).evaluateAll((options) => options.map((o) => (o as HTMLOptionElement).value));

describe('the dashboard, domain adaptation', () => {
  it('uploads an unlabelled dataset, starts a domain_adaptation job and shows its target evaluation', { timeout: 300_000 }, async () => {
    const source = await uploadLabelled(await mnistFolderZip([0, 1], 4), 'source digits');
    const targetTest = await uploadLabelled(zipOf(await shiftedFiles([0, 1], 3, 200, (d) => `${d}/`)), 'target test digits');
    const foreign = await uploadLabelled(zipOf(await shiftedFiles([7, 8], 2, 200, (d) => `${d}/`)), 'other digits');

    const page = await openPage();
    await page.getByLabel('API key').fill(key);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.getByRole('heading', { name: 'Datasets' }).waitFor();

    // The upload form: kind unlabelled takes images in no class folders (at the root, or anywhere).
    expect(await page.getByLabel('Kind').inputValue()).toBe('labelled');
    await page.getByLabel('Kind').selectOption('unlabelled');
    expect(await page.locator('#dataset-file-hint').textContent()).toContain('no class folders');
    const unlabelledZip = zipOf({ ...(await shiftedFiles([0, 1], 3, 100, () => '')), ...(await shiftedFiles([0], 2, 110, () => 'more/')) });
    await page.getByLabel('Zip of images').setInputFiles({ name: 'street.zip', mimeType: 'application/zip', buffer: unlabelledZip });
    await page.getByLabel('Name (optional)').fill('browser target');
    await page.getByRole('button', { name: 'Upload' }).click();
    await expect.poll(() => page.locator('#upload-form [role=alert]').textContent()).toContain('is ready: 8 unlabelled images');
    // The form is ready for the next upload, labelled again.
    expect(await page.getByLabel('Kind').inputValue()).toBe('labelled');

    // Listed with its kind and its image count; no class table.
    const card = page.locator('article.dataset', { has: page.getByRole('heading', { name: 'browser target' }) });
    await card.waitFor();
    expect(await card.locator('.kind').textContent()).toBe('unlabelled');
    expect(await card.locator('.unlabelled-count').textContent()).toContain('8 unlabelled images');
    expect(await card.locator('section.class').count()).toBe(0);
    const sourceCard = page.locator('article.dataset', { has: page.getByRole('heading', { name: 'source digits' }) });
    expect(await sourceCard.locator('.kind').textContent()).toBe('labelled');
    expect(await sourceCard.locator('section.class').count()).toBe(2);
    const target = (await request(t.app.server).get('/v1/datasets?limit=10').set(auth).expect(200)).body.items.find((d: { name: string }) => d.name === 'browser target');
    expect(target).toMatchObject({ kind: 'unlabelled', layout: 'unlabelled', classes: [] });

    // "Adapt a model to it" opens the job form on domain_adaptation with that target chosen.
    await card.getByRole('link', { name: 'Adapt a model to it' }).click();
    await page.locator('#baseModel option[value=mobilenet_v2]').waitFor({ state: 'attached' });
    expect(await page.getByLabel('Strategy').inputValue()).toBe('domain_adaptation');
    expect(await page.getByLabel('Target dataset', { exact: true }).inputValue()).toBe(target.id);
    await page.getByRole('link', { name: 'Datasets', exact: true }).click();
    await page.getByRole('heading', { name: 'Datasets' }).waitFor();

    // The job form: the target fields appear with domain_adaptation only; each select offers
    // only the datasets it can take (training and target test: labelled; target: unlabelled).
    await page.getByRole('link', { name: 'New job', exact: true }).first().click();
    await page.locator('#baseModel option[value=mobilenet_v2]').waitFor({ state: 'attached' });
    expect(await page.locator('[data-field=targetDatasetId]').isHidden()).toBe(true);
    expect(await optionValues(page, '#strategy')).toContain('domain_adaptation');
    await page.getByLabel('Strategy').selectOption('domain_adaptation');
    expect(await page.locator('[data-field=targetDatasetId]').isVisible()).toBe(true);
    expect(await page.locator('[data-field=adaptationLayers]').isVisible()).toBe(true);
    expect(await page.locator('#compareWithScratch').isHidden()).toBe(true);
    const labelled = [source.id, targetTest.id, foreign.id].sort();
    expect((await optionValues(page, '#datasetId')).sort()).toEqual(labelled);
    expect(await optionValues(page, '#targetDatasetId')).toEqual(['', target.id]);
    expect(await optionValues(page, '#targetTestDatasetId')).toEqual(['', ...(await optionValues(page, '#datasetId'))]);
    expect(await page.getByLabel('Target dataset', { exact: true }).getAttribute('aria-required')).toBe('true');

    await page.getByLabel('Dataset', { exact: true }).selectOption(source.id);
    await page.getByLabel('Base model').selectOption('mobilenet_v2');
    await page.getByLabel('Epochs').fill('1');
    await page.getByLabel('Batch size').fill('4');
    await page.getByLabel('Adapted batch-norm layers').fill('5');

    // No target chosen: the API's refusal shows beside the target field.
    await page.getByRole('button', { name: 'Start job' }).click();
    const targetError = page.locator('[data-field=targetDatasetId] .field-error');
    await expect.poll(() => targetError.textContent()).toContain('needs targetDatasetId');
    expect(await page.getByLabel('Target dataset', { exact: true }).getAttribute('aria-invalid')).toBe('true');
    expect(await page.locator('#job-form [role=alert]').textContent()).toContain('invalid_spec');

    // A target test set with classes the training data lacks: beside the target test field.
    await page.getByLabel('Target dataset', { exact: true }).selectOption(target.id);
    await page.getByLabel('Target test dataset (optional)').selectOption(foreign.id);
    await page.getByRole('button', { name: 'Start job' }).click();
    const testError = page.locator('[data-field=targetTestDatasetId] .field-error');
    await expect.poll(() => testError.textContent()).toContain('classes the training dataset lacks');
    expect(await page.locator('#job-form [role=alert]').textContent()).toContain('class_mismatch');
    expect(await targetError.isHidden()).toBe(true);

    await page.getByLabel('Target test dataset (optional)').selectOption(targetTest.id);
    await page.getByRole('button', { name: 'Start job' }).click();
    await page.waitForURL(/#\/jobs\/[0-9a-f-]{36}$/);
    const jobId = /#\/jobs\/([0-9a-f-]{36})$/.exec(page.url())![1]!;
    const job = (await request(t.app.server).get(`/v1/jobs/${jobId}`).set(auth).expect(200)).body;
    expect(job.spec).toMatchObject({
      datasetId: source.id,
      baseModel: 'mobilenet_v2',
      strategy: 'domain_adaptation',
      targetDatasetId: target.id,
      targetTestDatasetId: targetTest.id,
      compareWithScratch: false,
      hyperparameters: { epochs: 1, batchSize: 4, adaptationLayers: 5 },
    });

    // The job page follows it to the end, and says how long the adaptation took.
    const deadline = Date.now() + 240_000;
    for (;;) {
      const status = (await page.locator('#job-status').textContent()) ?? '';
      expect(['failed', 'canceled'], `job ${status}: ${await page.locator('main [role=alert]').first().textContent()}`).not.toContain(status);
      if (status === 'succeeded') break;
      if (Date.now() > deadline) throw new Error(`the job did not finish: status ${status}`);
      await page.waitForTimeout(500);
    }
    const summary = page.locator('#job-summary');
    await summary.getByText('Adaptation', { exact: true }).waitFor();
    expect(await summary.textContent()).toMatch(/Adaptation\d+\.\d s/);
    expect(await summary.textContent()).toContain(target.id.slice(0, 8));

    // The model: the target-domain evaluation as its own section, and the adaptation facts.
    await page.getByRole('link', { name: 'Open the model' }).click();
    const section = page.locator('#target-evaluation');
    await section.waitFor();
    expect(await section.getByRole('heading', { level: 2 }).textContent()).toBe('Target domain: evaluation on 6 target test images');
    expect(await section.locator('#target-confusion-matrix tbody tr').count()).toBe(2);
    const cells = (await section.locator('#target-confusion-matrix tbody td').allInnerTexts()).map(Number);
    expect(cells.reduce((a, b) => a + b, 0)).toBe(6);
    expect(await section.locator('#target-per-class tbody tr').count()).toBe(2);
    expect(await section.locator('dl').textContent()).toMatch(/Accuracy\d+\.\d %/);
    const { modelId } = (await request(t.app.server).get(`/v1/jobs/${jobId}`).set(auth).expect(200)).body;
    const model = (await request(t.app.server).get(`/v1/models/${modelId}`).set(auth).expect(200)).body;
    expect(model.targetEvaluation.samples).toBe(6);
    expect(await page.locator('main dl').first().textContent()).toContain(`Target accuracy${(model.targetEvaluation.accuracy * 100).toFixed(1)} %`);

    const facts = page.locator('#adaptation dl');
    const fact = async (term: string) => (await facts.locator('div', { has: page.locator('dt', { hasText: new RegExp(`^${term}$`) }) }).locator('dd').textContent())?.trim();
    expect(await fact('Method')).toContain('AdaBN');
    expect(await fact('Source images')).toBe(String(model.metrics.adaptation.sourceImages));
    expect(await fact('Target images')).toBe('8');
    expect(await fact('Batch-norm layers adapted')).toBe('5');
    expect(await fact('Target dataset')).toBe(target.id.slice(0, 8));
    expect(await fact('Target test dataset')).toBe(targetTest.id.slice(0, 8));

    // The validation (source-domain) evaluation is still there, apart from the target's.
    expect(await page.locator('#confusion-matrix').count()).toBe(1);

    expect(pageProblems).toEqual([]);
    await page.close();
  });
});
