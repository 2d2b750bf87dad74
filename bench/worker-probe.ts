// The real worker (`startWorker`, as apps/worker/src/main.ts runs it) in a process of its own,
// which also answers bench/run.ts over IPC with its resident memory and tfjs tensor count.
// Started with --expose-gc so a probe measures live memory, not garbage not yet collected.
import pino from 'pino';
import { loadConfig } from '@finetune/core';
import { tf } from '@finetune/ml';
import { startWorker } from '@finetune/worker';

export interface WorkerProbe {
  type: 'probe';
  rssBytes: number;
  heapUsedBytes: number;
  numTensors: number;
}

const worker = startWorker(loadConfig(), pino({ level: process.env.LOG_LEVEL ?? 'warn', base: { service: 'worker' } }));

process.on('message', (message: { type: string }) => {
  if (message.type === 'probe') {
    (globalThis as { gc?: () => void }).gc?.();
    const mem = process.memoryUsage();
    process.send?.({ type: 'probe', rssBytes: mem.rss, heapUsedBytes: mem.heapUsed, numTensors: tf.memory().numTensors } satisfies WorkerProbe);
  } else if (message.type === 'stop') {
    worker.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  }
});
process.send?.({ type: 'ready' });
