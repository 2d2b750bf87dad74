import type { FastifyInstance } from 'fastify';
import { loadConfig, type Config } from '@finetune/core';
import { buildApp, closeAppDeps, createAppDeps, type AppDeps } from '@finetune/api';

export interface TestApp {
  app: FastifyInstance;
  deps: AppDeps;
  config: Config;
  close(): Promise<void>;
}

/** The real app on the test Postgres, Redis and S3 server the global setup started. */
export async function buildTestApp(env: Record<string, string> = {}): Promise<TestApp> {
  const config = loadConfig({ ...process.env, ...env });
  const deps = createAppDeps(config);
  await deps.store.ensureBucket();
  const app = await buildApp(deps, { logger: false });
  await app.ready();
  return {
    app,
    deps,
    config,
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
