import { randomBytes } from 'node:crypto';
import { expect } from 'vitest';
import type { FastifyInstance } from 'fastify';
import supertest from 'supertest';
import { loadConfig, type Config } from '@finetune/core';
import { buildApp, closeAppDeps, createAppDeps, type AppDeps, type BuildOptions } from '@finetune/api';
import { DEFAULT_TENANT_ID } from '@finetune/db';
import { keys } from '@finetune/storage';

/** This test process's bootstrap admin key and server secret (every buildTestApp uses them). */
export const TEST_ADMIN_API_KEY = `ft_${randomBytes(4).toString('hex')}_${randomBytes(32).toString('base64url')}`;
export const TEST_API_KEY_SECRET = randomBytes(32).toString('hex');

export interface TestApp {
  app: FastifyInstance;
  deps: AppDeps;
  config: Config;
  /** Headers that authenticate as the bootstrap admin (default tenant): `.set(t.auth)`. */
  auth: { authorization: string };
  /** A supertest agent on the app that sends the admin key with every request. */
  http: ReturnType<typeof supertest.agent>;
  /** The tenant the admin key acts in. */
  tenantId: string;
  close(): Promise<void>;
}

/**
 * The real app on the test Postgres, Redis and S3 server the global setup started, with
 * ADMIN_API_KEY and API_KEY_SECRET set (the caller's `env` may override them).
 */
export async function buildTestApp(env: Record<string, string> = {}, options: BuildOptions = {}): Promise<TestApp> {
  const config = loadConfig({ ...process.env, ADMIN_API_KEY: TEST_ADMIN_API_KEY, API_KEY_SECRET: TEST_API_KEY_SECRET, ...env });
  const deps = createAppDeps(config);
  await deps.store.ensureBucket();
  // Created here rather than on the first request: tests insert rows for it directly.
  await deps.tenants.ensureDefault();
  const app = await buildApp(deps, { ...options, logger: options.logger ?? false });
  await app.ready();
  const auth = { authorization: `Bearer ${config.auth.adminApiKey ?? TEST_ADMIN_API_KEY}` };
  return {
    app,
    deps,
    config,
    auth,
    http: supertest.agent(app.server).set(auth),
    tenantId: DEFAULT_TENANT_ID,
    async close() {
      await app.close();
      await closeAppDeps(deps);
    },
  };
}

/** Polls until `check` returns a value, with a deadline; the failure names what it waited for. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 120_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/**
 * POSTs a job, waits until it ends, and expects it to have succeeded: the job as GET answers it
 * and its model. A failure shows the job's error in the assertion.
 */
// Bodies as supertest gives them: untyped JSON, as the tests read them.
export async function trainModel(t: TestApp, spec: object, timeoutMs = 150_000): Promise<{ job: any; model: any }> {
  const created = await t.http.post('/v1/jobs').send(spec).expect(202);
  const job = await waitFor(
    'job to finish',
    async () => {
      const res = await t.http.get(`/v1/jobs/${created.body.id}`).expect(200);
      return ['succeeded', 'failed', 'canceled'].includes(res.body.status) ? res.body : undefined;
    },
    timeoutMs,
  );
  expect(job.error).toBeNull();
  expect(job.status).toBe('succeeded');
  return { job, model: (await t.http.get(`/v1/models/${job.modelId}`).expect(200)).body };
}

/** A model's exported weights (weights.bin) as floats, read from the store. */
export async function modelWeights(t: TestApp, modelId: string): Promise<Float32Array> {
  const bytes = await t.deps.store.getBuffer(keys.modelFile(modelId, 'weights.bin'));
  return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
}

/** The largest absolute difference between two equally long arrays. */
export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}

