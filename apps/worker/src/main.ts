import pino from 'pino';
import { loadConfig } from '@finetune/core';
import { startWorker } from './worker.ts';

const config = loadConfig();
const log = pino({ level: config.logLevel, base: { service: 'worker' } });
const worker = startWorker(config, log);

let closing = false;
async function shutdown(signal: string) {
  if (closing) return;
  closing = true;
  log.info({ signal }, 'shutting down');
  await worker.close();
  process.exit(0);
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));
