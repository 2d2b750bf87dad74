import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import type { Logger } from 'pino';
import { datasetZipLimits, isDomainError, type Config } from '@finetune/core';
import { BatchPredictionsRepository, DatasetsRepository, ModelsRepository, type BatchCounts, type BatchPrediction, type Db } from '@finetune/db';
import {
  createBatchPredictEvents,
  createBatchPredictWorker,
  failureCode,
  failureMessage,
  UnrecoverableError,
  WaitingError,
  type BatchPredictJob,
  type QueueSettings,
} from '@finetune/queue';
import { keys, ObjectNotFoundError, type ObjectStore } from '@finetune/storage';

// Batch prediction runs in the worker process itself, not in a child like training: it is
// forward passes only, in batches through the one inference runner (ONNX Runtime off this thread,
// or tfjs), which yields to the event loop between batches, and sharp decodes on libuv's pool. So
// the lock is renewed on time, and memory holds one chunk of images, never the dataset.

/** Images decoded and classified together; progress (counts.done) is recorded after each chunk. */
export const BATCH_CHUNK = 32;
/** Classes listed per image, as POST /v1/models/:id/predict gives. */
const TOP_K = 5;

/** A failure with a code: deterministic ones fail the batch at once, the rest are retried. */
class BatchFailure extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly retry = false,
  ) {
    super(message);
  }
}
/** The row was taken over (the run was presumed dead) or deleted: write nothing more. */
class RunLost extends Error {}
/** The worker is shutting down: hand the batch back; the next run starts over. */
class Handover extends Error {}

interface Deps {
  batches: BatchPredictionsRepository;
  models: ModelsRepository;
  datasets: DatasetsRepository;
  store: ObjectStore;
  config: Config;
  log: Logger;
  state: { closing: boolean };
}

type Outcome = { status: 'succeeded'; counts: BatchCounts; recorded: boolean } | { status: 'skipped' | 'lease_lost' };

export function createBatchPredictProcessor(deps: Deps) {
  const { batches, log, state } = deps;
  return async function processBatchPrediction(job: BatchPredictJob, token?: string): Promise<Outcome> {
    const id = job.data.batchPredictionId;
    const claim = await batches.claim(id);
    if (!claim) return { status: 'skipped' };
    const { row, lease } = claim;
    const runLog = log.child({ batchPredictionId: id, run: row.runs, lease: lease.slice(0, 8) });
    const workDir = await mkdtemp(join(tmpdir(), 'finetune-batch-'));
    try {
      const counts = await runBatch(deps, row, lease, workDir);
      // The results are in S3 before the row says succeeded: a reader never sees a partial file.
      const recorded = await batches.succeed(id, lease, counts);
      // Deleted while running: its objects belong to nothing. (Taken over: the live run owns the key.)
      if (!recorded && !(await batches.get(id))) await deps.store.deletePrefix(keys.batchPredictionPrefix(id));
      runLog.info({ ...counts, recorded }, 'batch prediction finished');
      return { status: 'succeeded', counts, recorded };
    } catch (error) {
      if (error instanceof RunLost) {
        runLog.info('batch prediction taken over or deleted; this run stops');
        return { status: 'lease_lost' };
      }
      if (error instanceof Handover) {
        const requeued = await batches.requeue(id, lease);
        runLog.info({ requeued }, 'batch prediction handed back for shutdown');
        if (requeued && token) {
          await job.moveToWait(token);
          throw new WaitingError();
        }
        return { status: 'lease_lost' };
      }
      const failure = classify(error);
      const lastAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
      runLog.warn({ code: failure.code, retry: failure.retry, lastAttempt, err: failure.message }, 'batch prediction run failed');
      if (failure.retry && !lastAttempt) {
        await batches.requeue(id, lease, { code: failure.code, message: failure.message });
        throw failure;
      }
      await batches.fail(id, { code: failure.code, message: failure.message }, lease);
      throw new UnrecoverableError(`${failure.code}: ${failure.message}`);
    } finally {
      await rm(workDir, { recursive: true, force: true });
    }
  };
}

function classify(error: unknown): BatchFailure {
  if (error instanceof BatchFailure) return error;
  if (error instanceof ObjectNotFoundError) return new BatchFailure('object_not_found', `${error.message}: the dataset or model files are gone`);
  // Bad archives (DatasetError) and other domain errors are deterministic.
  if (isDomainError(error)) return new BatchFailure(error.code, error.message);
  // S3, Postgres or the engine unavailable: another attempt may succeed.
  return new BatchFailure('batch_prediction_error', (error as Error).message, true);
}

/** Classifies every image of the dataset into a local JSON Lines file, then uploads it whole. */
async function runBatch(deps: Deps, row: BatchPrediction, lease: string, workDir: string): Promise<BatchCounts> {
  const { batches, store, config, state } = deps;
  const model = row.modelId ? await deps.models.get(row.tenantId, row.modelId) : null;
  if (!model) throw new BatchFailure('model_not_found', `model ${row.modelId} was deleted`);
  const dataset = row.datasetId ? await deps.datasets.get(row.tenantId, row.datasetId) : null;
  if (!dataset || dataset.status !== 'ready') throw new BatchFailure('dataset_not_found', `dataset ${row.datasetId} was deleted`);

  // Loaded on the first batch, not at start-up: a worker that only trains never loads tfjs here.
  const { decodeImage, indexDatasetZip, initBackend, loadModelFromFiles, predictImages, readZipEntries } = await import('@finetune/ml');
  // The same reader and limits as training: the archive is user input.
  const zipPath = join(workDir, 'source.zip');
  await store.downloadToFile(dataset.storageKey, zipPath);
  const limits = datasetZipLimits(config.limits);
  const index = await indexDatasetZip(zipPath, limits, dataset.kind);
  const counts: BatchCounts = { total: index.entries.length, done: 0, failed: 0 };
  const owned = async () => {
    if (!(await batches.progress(row.id, lease, counts))) throw new RunLost();
  };
  await owned();

  await initBackend(config.mlBackend);
  const net = await loadModelFromFiles(
    await store.getBuffer(keys.modelFile(model.id, 'model.json')),
    await store.getBuffer(keys.modelFile(model.id, 'weights.bin')),
  );
  // Scored as POST /v1/models/:id/predict scores: calibrated, "unknown" below the model's threshold.
  const scoring = { temperature: (model.calibration as { temperature?: number } | null)?.temperature ?? 1, threshold: model.confidenceThreshold };
  const resultsPath = join(workDir, 'results.jsonl');
  const out = createWriteStream(resultsPath);
  const write = async (line: object) => {
    if (!out.write(`${JSON.stringify(line)}\n`)) await once(out, 'drain');
  };

  // One chunk: archive entries in archive order, each its bytes or why it could not be read.
  let chunk: { path: string; data?: Buffer; error?: string }[] = [];
  const flush = async () => {
    if (state.closing) throw new Handover();
    const decoded = await Promise.all(
      chunk.map(async (entry) => {
        if (!entry.data) return { path: entry.path, error: entry.error ?? 'unreadable' };
        try {
          return { path: entry.path, pixels: await decodeImage(entry.data, model.inputSize, { maxPixels: config.limits.imagePixels }) };
        } catch (error) {
          // sharp's messages can be multi-line and name internal paths: the first line says enough.
          return { path: entry.path, error: `not a decodable image: ${((error as Error).message.split('\n')[0] ?? '').slice(0, 200)}` };
        }
      }),
    );
    const images = decoded.flatMap((d) => ('pixels' in d && d.pixels ? [d.pixels] : []));
    const predictions = images.length > 0 ? await predictImages(net, images, model.inputSize, model.labels, Math.min(TOP_K, model.labels.length), undefined, scoring) : [];
    let next = 0;
    for (const d of decoded) {
      if ('pixels' in d) await write({ path: d.path, ...predictions[next++]! });
      else {
        await write({ path: d.path, error: d.error });
        counts.failed += 1;
      }
    }
    counts.done += decoded.length;
    chunk = [];
    await owned();
  };

  try {
    await readZipEntries(
      zipPath,
      new Set(index.entries.map((e) => e.path)),
      limits,
      async (path, data) => {
        chunk.push({ path, data });
        if (chunk.length >= BATCH_CHUNK) await flush();
      },
      (path, error) => chunk.push({ path, error: `unreadable zip entry: ${error.message}` }),
    );
    if (chunk.length > 0) await flush();
  } finally {
    net.dispose();
    out.end();
    await once(out, 'close');
  }
  await store.putFile(keys.batchPredictionResults(row.id), resultsPath, 'application/x-ndjson');
  return counts;
}

/**
 * The worker process's batch-prediction consumer: one run at a time (inference already uses every
 * core), plus the queue's verdict on runs that never reached a processor — one whose workers kept
 * dying (stalled too often) ends `failed` instead of `running` forever.
 */
export function startBatchPredictConsumer({ config, db, store, log, settings }: { config: Config; db: Db; store: ObjectStore; log: Logger; settings: QueueSettings }) {
  const state = { closing: false };
  const batches = new BatchPredictionsRepository(db);
  const processor = createBatchPredictProcessor({
    batches,
    models: new ModelsRepository(db),
    datasets: new DatasetsRepository(db),
    store,
    config,
    log,
    state,
  });
  const worker = createBatchPredictWorker(processor, { ...settings, concurrency: 1, lockDurationMs: config.workerLockDurationMs });
  worker.on('error', (err) => log.error({ err }, 'batch-predict worker error'));
  const { events, close: closeEvents } = createBatchPredictEvents(settings);
  events.on('error', (err) => log.warn({ err }, 'batch-predict queue events error'));
  events.on('failed', ({ jobId, failedReason }) => {
    if (failureCode(failedReason) !== 'worker_lost') return; // the processor recorded everything else
    batches.fail(jobId, { code: 'worker_lost', message: failureMessage(failedReason) }).then(
      (failed) => failed && log.warn({ batchPredictionId: jobId }, 'batch prediction failed by the queue'),
      (err: unknown) => log.error({ err, batchPredictionId: jobId }, 'recording a queue failure failed'),
    );
  });
  return {
    isRunning: () => !state.closing && worker.isRunning(),
    /** A run in progress stops at its next chunk and goes back to the queue. */
    async close() {
      state.closing = true;
      try {
        await worker.close();
      } finally {
        await closeEvents().catch(() => undefined);
      }
    },
  };
}
