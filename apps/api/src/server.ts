import { loadConfig } from '@finetune/core';
import { leaseTimings, reconcile } from '@finetune/queue';
import { AuthConfigError, buildApp, checkAuthConfig, closeAppDeps, createAppDeps } from './app.ts';

const config = loadConfig();
const deps = createAppDeps(config);
try {
  await checkAuthConfig(deps);
} catch (error) {
  if (!(error instanceof AuthConfigError)) throw error;
  // One clear line, no stack: what is missing and how to provide it.
  console.error(`[api] refusing to start: ${error.message}`);
  await closeAppDeps(deps).catch(() => undefined);
  process.exit(1);
}
await deps.store.ensureBucket();
const app = await buildApp(deps);

let closing = false;
async function shutdown(signal: string) {
  if (closing) return;
  closing = true;
  app.log.info({ signal }, 'shutting down');
  await app.close();
  await closeAppDeps(deps);
  process.exit(0);
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));

await app.listen({ port: config.port, host: config.host });

// Jobs stranded while no worker watched (Redis came back empty, an enqueue was lost) are
// re-enqueued now rather than at the next worker sweep.
reconcile(deps.jobs, deps.queue, { graceMs: 5_000, staleAfterMs: leaseTimings(config.workerLockDurationMs).staleAfterMs }).then(
  (report) => app.log.info(report, 'start-up reconciliation'),
  (err: unknown) => app.log.warn({ err }, 'start-up reconciliation failed; the workers retry it periodically'),
);
