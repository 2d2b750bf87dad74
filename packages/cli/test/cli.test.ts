import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { strFromU8, unzipSync } from 'fflate';
import { buildTestApp, TEST_ADMIN_API_KEY, type TestApp } from '../../../test/support/app.ts';
import { listen } from '../../../test/support/hostile.ts';
import { digitPng, mnistFolderZip } from '../../../test/support/mnist-fixtures.ts';
import { freePort, spawnWorker, type SpawnedProcess } from '../../../test/support/processes.ts';
import { runCli, shown, type CliResult } from './run-cli.ts';

// The `finetune` CLI as a user runs it — a child process with FINETUNE_URL and FINETUNE_API_KEY —
// against the real API on a port and a real worker process, on real Postgres, Redis and S3:
// upload → train → watch → download → predict, and the exit code of every kind of failure.

let t: TestApp;
let worker: SpawnedProcess;
let url: string;
let dir: string;

const cli = (args: string[], env: { url?: string; apiKey?: string } = {}) => runCli(args, { url, apiKey: TEST_ADMIN_API_KEY, ...env });

function json<T = Record<string, any>>(result: CliResult): T {
  expect(result.code, shown(result)).toBe(0);
  return JSON.parse(result.stdout) as T;
}

beforeAll(async () => {
  const queuePrefix = `${process.env.QUEUE_PREFIX}-cli-${randomBytes(4).toString('hex')}`;
  t = await buildTestApp({ QUEUE_PREFIX: queuePrefix });
  url = `http://127.0.0.1:${await listen(t)}`;
  worker = spawnWorker({ QUEUE_PREFIX: queuePrefix, LOG_LEVEL: 'warn' });
  dir = await mkdtemp(join(tmpdir(), 'finetune-cli-test-'));
  await writeFile(join(dir, 'digits.zip'), await mnistFolderZip([0, 1], 20));
  await writeFile(join(dir, 'zero.png'), await digitPng(0, 900));
  await writeFile(join(dir, 'one.png'), await digitPng(1, 900));
});

afterAll(async () => {
  await worker?.stop();
  await t?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('usage errors (exit 2)', () => {
  it('--help lists the commands and the exit codes, and exits 0', async () => {
    const help = await cli(['--help']);
    expect(help.code, shown(help)).toBe(0);
    for (const command of ['datasets', 'jobs', 'models', 'predict', 'usage']) expect(help.stdout).toContain(command);
    expect(help.stdout).toContain('Exit codes');
  });

  it('an unknown command, a missing argument, a malformed id or --set, an unreadable file', async () => {
    const cases = [
      ['bogus'],
      ['datasets', 'get'],
      ['jobs', 'get', 'not-a-uuid'],
      ['jobs', 'create', '--base', 'small_cnn'],
      ['jobs', 'create', '--dataset', randomUUID(), '--base', 'small_cnn', '--set', 'novalue'],
      ['jobs', 'create', '--dataset', randomUUID(), '--base', 'small_cnn', '--epochs', 'ten'],
      ['datasets', 'upload', join(dir, 'missing.zip')],
      ['jobs', 'ls', '--limit', '500'],
    ];
    const results = await Promise.all(cases.map((args) => cli(args)));
    for (const result of results) {
      expect(result.code, shown(result)).toBe(2);
      expect(result.stdout).toBe('');
      expect(result.stderr.length).toBeGreaterThan(0);
    }
    expect(results[6]!.stderr).toContain('ENOENT');
  });
});

describe('errors from the API and the network', () => {
  it('an unknown id is exit 3 with the problem title, detail and code', async () => {
    const id = randomUUID();
    const result = await cli(['jobs', 'get', id]);
    expect(result.code, shown(result)).toBe(3);
    expect(result.stderr).toContain('Not Found');
    expect(result.stderr).toContain('job_not_found');
    expect(result.stderr).toContain(id);
    expect(result.stdout).toBe('');
  });

  it('a bad key is exit 4, and so is no key (with a hint)', async () => {
    const bad = await cli(['datasets', 'ls'], { apiKey: `ft_deadbeef_${randomBytes(32).toString('base64url')}` });
    expect(bad.code, shown(bad)).toBe(4);
    expect(bad.stderr).toContain('unauthorized');
    const none = await runCli(['datasets', 'ls'], { url });
    expect(none.code, shown(none)).toBe(4);
    expect(none.stderr).toContain('FINETUNE_API_KEY');
  });

  it('no server is exit 7', async () => {
    const result = await cli(['usage'], { url: `http://127.0.0.1:${await freePort()}` });
    expect(result.code, shown(result)).toBe(7);
    expect(result.stderr).toContain('ECONNREFUSED');
  });

  it('a rate limit is exit 5', async () => {
    const limited = await buildTestApp({ RATE_LIMIT_PER_MINUTE: '1', RATE_LIMIT_BURST: '1', QUEUE_PREFIX: `${process.env.QUEUE_PREFIX}-cli-rl-${randomBytes(4).toString('hex')}` });
    try {
      const limitedUrl = `http://127.0.0.1:${await listen(limited)}`;
      // A key of its own: the bucket is per key, so nothing else shares it.
      const key = await createKey();
      const first = await cli(['usage'], { url: limitedUrl, apiKey: key });
      expect(first.code, shown(first)).toBe(0);
      const second = await cli(['usage'], { url: limitedUrl, apiKey: key });
      expect(second.code, shown(second)).toBe(5);
      expect(second.stderr).toContain('rate_limited');
    } finally {
      await limited.close();
    }
  });
});

async function createKey(): Promise<string> {
  const res = await t.http.post(`/v1/tenants/${t.tenantId}/api-keys`).send({ name: 'cli rate limit' }).expect(201);
  return res.body.key as string;
}

describe('datasets upload --direct', () => {
  it('creates an upload, PUTs the zip to object storage and completes it', async () => {
    const dataset = json(await cli(['--json', 'datasets', 'upload', join(dir, 'digits.zip'), '--direct', '--name', 'cli direct']));
    expect(dataset).toMatchObject({ name: 'cli direct', classes: ['0', '1'], counts: { images: 40 } });
    expect(await t.deps.store.list(`uploads/${t.tenantId}/`)).toEqual([]);
  });
});

describe('upload → train → watch → download → predict', () => {
  let datasetId: string;
  let jobId: string;
  let modelId: string;

  it('uploads a dataset and lists and shows it', async () => {
    const upload = await cli(['datasets', 'upload', join(dir, 'digits.zip'), '--name', 'cli digits']);
    expect(upload.code, shown(upload)).toBe(0);
    datasetId = /^id:\s+(\S+)$/m.exec(upload.stdout)?.[1] ?? '';
    expect(datasetId).toMatch(/^[0-9a-f-]{36}$/);
    expect(upload.stdout).toMatch(/^images:\s+40$/m);

    const list = await cli(['datasets', 'ls']);
    expect(list.code, shown(list)).toBe(0);
    expect(list.stdout).toMatch(/^ID\s+NAME\s+STATUS/);
    expect(list.stdout).toContain(datasetId);

    const got = json(await cli(['--json', 'datasets', 'get', datasetId]));
    expect(got).toMatchObject({ id: datasetId, name: 'cli digits', classes: ['0', '1'], counts: { images: 40 } });
  });

  it('creates a job with --set, watches it to success, and shows its metrics', { timeout: 150_000 }, async () => {
    const created = json(
      await cli([
        '--json', 'jobs', 'create', '--dataset', datasetId, '--base', 'small_cnn', '--strategy', 'scratch', '--epochs', '2',
        '--set', 'batchSize=8', '--set', 'seed=5', '--set', 'optimizer=adam', '--set', 'earlyStopping.patience=5',
        '--set', 'maxRuntimeSeconds=600',
      ]),
    );
    jobId = created.id;
    // The API answers with the job as it is after enqueueing it: a warm worker may have claimed it already.
    expect(['queued', 'running']).toContain(created.status);
    expect(created.spec).toMatchObject({
      maxRuntimeSeconds: 600,
      hyperparameters: { epochs: 2, batchSize: 8, seed: 5, optimizer: 'adam', earlyStopping: { patience: 5 } },
    });

    const watched = await cli(['jobs', 'watch', jobId]);
    expect(watched.code, shown(watched)).toBe(0);
    // Progress goes to stderr (plain lines: not a terminal); the final job to stdout.
    expect(watched.stderr).toMatch(/epoch 1\/2 {2}loss \d/);
    expect(watched.stderr).toMatch(/epoch 2\/2 {2}loss \d/);
    expect(watched.stderr).toContain(`job ${jobId}: succeeded`);
    expect(watched.stdout).toMatch(/^status:\s+succeeded$/m);
    modelId = /^model:\s+(\S+)$/m.exec(watched.stdout)?.[1] ?? '';
    expect(modelId).toMatch(/^[0-9a-f-]{36}$/);

    const metrics = await cli(['jobs', 'metrics', jobId]);
    expect(metrics.code, shown(metrics)).toBe(0);
    expect(metrics.stdout.trim().split('\n')).toHaveLength(3); // header + 2 epochs
    const metricsJson = json<{ items: unknown[] }>(await cli(['--json', 'jobs', 'metrics', jobId]));
    expect(metricsJson.items).toHaveLength(2);

    const list = await cli(['jobs', 'ls', '--status', 'succeeded']);
    expect(list.stdout).toContain(jobId);
    const got = json(await cli(['--json', 'jobs', 'get', jobId]));
    expect(got).toMatchObject({ id: jobId, status: 'succeeded', modelId });
  });

  it('lists, shows and downloads the model', async () => {
    const list = await cli(['models', 'ls']);
    expect(list.code, shown(list)).toBe(0);
    expect(list.stdout).toContain(modelId);
    const filtered = json(await cli(['--json', 'models', 'ls', '--job', jobId]));
    expect(filtered.items.map((m: { id: string }) => m.id)).toEqual([modelId]);

    const got = await cli(['models', 'get', modelId]);
    expect(got.code, shown(got)).toBe(0);
    expect(got.stdout).toMatch(/^labels:\s+0, 1$/m);

    const out = join(dir, 'model.zip');
    const download = await cli(['models', 'download', modelId, '-o', out]);
    expect(download.code, shown(download)).toBe(0);
    expect(download.stdout).toContain(out);
    const files = unzipSync(new Uint8Array(await readFile(out)));
    expect(Object.keys(files).sort()).toEqual(['app.js', 'index.html', 'labels.json', 'metadata.json', 'model.json', 'style.css', 'tf.min.js', 'weights.bin']);
    expect(JSON.parse(strFromU8(files['labels.json']!))).toEqual(['0', '1']);
  });

  it('predicts one image (multipart) and several (base64 JSON)', async () => {
    const one = await cli(['predict', modelId, join(dir, 'zero.png')]);
    expect(one.code, shown(one)).toBe(0);
    expect(one.stdout).toMatch(/^FILE\s+LABEL\s+SCORE\s+TOP/);
    expect(one.stdout).toMatch(/zero\.png\s+[01]\s+\d\.\d{4}/);

    const both = json<{ predictions: { file: string; label: string; score: number; top: unknown[] }[] }>(
      await cli(['--json', 'predict', modelId, join(dir, 'zero.png'), join(dir, 'one.png')]),
    );
    expect(both.predictions).toHaveLength(2);
    for (const p of both.predictions) {
      expect(['0', '1']).toContain(p.label);
      expect(p.top.length).toBeGreaterThan(0);
    }
  });

  it('shows usage', async () => {
    const usage = await cli(['usage']);
    expect(usage.code, shown(usage)).toBe(0);
    expect(usage.stdout).toContain('concurrent jobs');
    expect(usage.stdout).toContain('RATE LIMIT');
  });

  it('a canceled job watches to exit 8; a refused request is exit 6; rm removes', { timeout: 60_000 }, async () => {
    const created = json(
      await cli(['--json', 'jobs', 'create', '--dataset', datasetId, '--base', 'small_cnn', '--strategy', 'scratch', '--epochs', '300']),
    );
    const cancel = await cli(['jobs', 'cancel', created.id]);
    expect(cancel.code, shown(cancel)).toBe(0);
    const watched = await cli(['jobs', 'watch', created.id]);
    expect(watched.code, shown(watched)).toBe(8);
    expect(watched.stderr).toContain('canceled');

    // Finished: not cancelable (409), a client error.
    const again = await cli(['jobs', 'cancel', jobId]);
    expect(again.code, shown(again)).toBe(6);
    expect(again.stderr).toContain('job_not_cancelable');

    for (const id of [created.id, jobId]) {
      const removed = await cli(['jobs', 'rm', id]);
      expect(removed.code, shown(removed)).toBe(0);
    }
    expect((await cli(['jobs', 'get', jobId])).code).toBe(3);
    expect((await cli(['models', 'get', modelId])).code).toBe(3);
    const dropped = await cli(['datasets', 'rm', datasetId]);
    expect(dropped.code, shown(dropped)).toBe(0);
    expect((await cli(['datasets', 'get', datasetId])).code).toBe(3);
  });
});
