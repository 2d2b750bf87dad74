import type { Logger } from 'pino';
import { isDomainError, type Config } from '@finetune/core';
import { BaseModelsRepository, type Db } from '@finetune/db';
import {
  BASE_MODEL_FETCH_QUEUE,
  createBaseModelFetchWorker,
  createWorkerConnection,
  failureCode,
  failureMessage,
  QueueEvents,
  UnrecoverableError,
  type BaseModelFetchJob,
  type QueueSettings,
} from '@finetune/queue';
import { buildCustomBase, initBackend, singleShardModelJson } from '@finetune/ml';
import { customBaseLabel } from '@finetune/core';
import { keys, type ObjectStore } from '@finetune/storage';
import { fetchModelFiles } from '../base-models/fetch-files.ts';

// A custom base given by URL: fetched, validated exactly as a zip upload is (it loads, the
// embedding layer exists, its output is a vector or a poolable feature map), stored in S3, and
// only then `ready`. Runs in the worker process: it is downloads plus one model load.

interface Deps {
  bases: BaseModelsRepository;
  store: ObjectStore;
  config: Config;
  log: Logger;
}

type Outcome = { status: 'ready' | 'skipped' | 'deleted' };

export function createBaseModelFetchProcessor(deps: Deps) {
  const { bases, store, config, log } = deps;
  return async function processBaseModelFetch(job: BaseModelFetchJob): Promise<Outcome> {
    const id = job.data.baseModelId;
    const row = await bases.claim(id);
    if (!row || !row.url) return { status: 'skipped' };
    const runLog = log.child({ baseModelId: id, attempt: row.attempts });
    try {
      const files = await fetchModelFiles(row.url, {
        maxBytes: config.limits.baseModelBytes,
        timeoutMs: config.limits.baseModelFetchTimeoutMs,
        allowPrivate: config.limits.baseModelFetchPrivate,
        maxRetryTimeMs: config.limits.baseModelFetchTimeoutMs,
      });
      await initBackend(config.mlBackend);
      const built = await buildCustomBase(
        files.modelJson,
        files.weights,
        { embeddingLayer: row.embeddingLayer, inputSize: row.inputSize, scale: row.scale as never },
        { id: customBaseLabel(id), source: row.url },
      );
      built.dispose();
      const modelJson = singleShardModelJson(files.parsed);
      await store.putBuffer(keys.baseModelFile(id, 'model.json'), modelJson, 'application/json');
      await store.putBuffer(keys.baseModelFile(id, 'weights.bin'), files.weights, 'application/octet-stream');
      const ready = await bases.markReady(id, { ...built.facts, sizeBytes: modelJson.length + files.weights.length }, config.quotas);
      if (!ready) {
        // Deleted while it was being fetched: what was written belongs to nothing.
        await store.deletePrefix(keys.baseModelPrefix(id));
        return { status: 'deleted' };
      }
      runLog.info({ ...built.facts }, 'custom base model ready');
      return { status: 'ready' };
    } catch (error) {
      await store.deletePrefix(keys.baseModelPrefix(id)).catch(() => undefined);
      const lastAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      // A bad URL, model or quota fails the same way every time; a network or S3 failure may pass.
      if (!isDomainError(error) && !lastAttempt) {
        runLog.warn({ err: (error as Error).message }, 'base model fetch failed; retrying');
        throw error;
      }
      const failure = isDomainError(error) ? { code: error.code, message: error.message } : { code: 'fetch_failed', message: (error as Error).message };
      await bases.fail(id, failure);
      runLog.warn(failure, 'custom base model failed');
      throw new UnrecoverableError(`${failure.code}: ${failure.message}`);
    }
  };
}

export function startBaseModelFetchConsumer({ config, db, store, log, settings }: { config: Config; db: Db; store: ObjectStore; log: Logger; settings: QueueSettings }) {
  const bases = new BaseModelsRepository(db);
  const worker = createBaseModelFetchWorker(createBaseModelFetchProcessor({ bases, store, config, log }), {
    ...settings,
    concurrency: 1,
    lockDurationMs: config.workerLockDurationMs,
  });
  worker.on('error', (err) => log.error({ err }, 'base-model-fetch worker error'));
  // A fetch whose worker died too often never reaches the processor again: record it here.
  const connection = createWorkerConnection(settings.redisUrl);
  const events = new QueueEvents(BASE_MODEL_FETCH_QUEUE, { connection, prefix: settings.prefix });
  events.on('error', (err) => log.warn({ err }, 'base-model-fetch queue events error'));
  events.on('failed', ({ jobId, failedReason }) => {
    if (failureCode(failedReason) !== 'worker_lost') return;
    bases.fail(jobId, { code: 'worker_lost', message: failureMessage(failedReason) }).catch((err: unknown) => log.error({ err, baseModelId: jobId }, 'recording a queue failure failed'));
  });
  return {
    async close() {
      try {
        await worker.close();
      } finally {
        await events.close().catch(() => undefined);
        connection.disconnect();
      }
    },
  };
}
