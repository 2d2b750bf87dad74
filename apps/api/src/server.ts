import { loadConfig } from '@finetune/core';
import { buildApp, closeAppDeps, createAppDeps } from './app.ts';

const config = loadConfig();
const deps = createAppDeps(config);
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
