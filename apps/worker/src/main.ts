import pino from 'pino';
import { loadConfig } from '@finetune/core';
import { verifyGpu } from '@finetune/ml';
import { startWorker } from './worker.ts';
import { startMetricsServer } from './metrics/index.ts';

const config = loadConfig();
const log = pino({ level: config.logLevel, base: { service: 'worker' } });
// Training runs in child processes, which would each find out; a GPU worker without a usable GPU
// must not start at all.
if (config.mlBackend === 'tensorflow-gpu') {
  try {
    log.info({ gpus: await verifyGpu() }, 'GPU visible');
  } catch (error) {
    log.fatal((error as Error).message);
    process.exit(1);
  }
}
const worker = startWorker(config, log);
const { workerPort, workerHost, enabled, token } = config.metrics;
const metricsServer =
  workerPort === 0
    ? null
    : startMetricsServer({ host: workerHost, port: workerPort, registry: enabled ? worker.metrics.registry : null, token, live: worker.isRunning, log });

let closing = false;
async function shutdown(signal: string) {
  if (closing) return;
  closing = true;
  log.info({ signal }, 'shutting down: running jobs stop at a batch boundary and go back to the queue');
  try {
    await worker.close();
    await metricsServer?.close();
    process.exit(0);
  } catch (err) {
    log.error({ err }, 'shutdown failed');
    process.exit(1);
  }
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));
