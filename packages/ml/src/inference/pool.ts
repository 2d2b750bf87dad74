// A pool of worker threads that run converted models on ONNX Runtime. onnxruntime-node's
// session.run executes synchronously on the thread that calls it, so in-process inference holds
// the event loop for the whole batch: nothing else is served meanwhile. Through the pool the
// main thread only converts the model (once; convertToOnnx in runner.ts) and moves images to a
// worker and outputs back, with their buffers transferred rather than copied.
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { mlThreads } from '../threads.ts';
import type { FromWorker, PoolWorkerData, ToWorker } from './pool-protocol.ts';

/**
 * The worker holding a batch stopped (a crash, or the pool closed) before answering. The batch
 * did not fail in the engine, so it is not retried on tfjs: the API answers 503.
 */
export class InferenceWorkerLost extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'InferenceWorkerLost';
  }
}

/** A model converted to ONNX, as the pool's workers open it. */
export interface PooledModel {
  /** SHA-256 of `bytes`: the same graph and weights are one session in a worker, however often the model is loaded. */
  key: string;
  bytes: Uint8Array;
  inputName: string;
  outputName: string;
  /** Keras shapes without the batch dimension. */
  inputShape: number[];
  outputShape: number[];
}

export interface InferencePoolOptions {
  workers: number;
  /** ONNX Runtime intra-op threads per worker. Default: poolThreads(workers). */
  threads?: number;
  /** Sessions a worker keeps open; past it, the least recently used one is released. */
  sessionsPerWorker: number;
  /** A worker stopped (and is being replaced): for logs. */
  onWorkerExit?: (event: { worker: number; reason: string; failedRuns: number }) => void;
}

/**
 * Intra-op threads for each of `workers` workers: their share of ML_THREADS (or of the cores),
 * at least one, so that all workers running at once use the cores without contending for them.
 */
export function poolThreads(workers: number, env: Record<string, string | undefined> = process.env): number {
  return Math.max(1, Math.floor(mlThreads(env) / Math.max(1, workers)));
}

interface Task {
  id: number;
  model: PooledModel;
  input: Float32Array;
  count: number;
  resolve: (output: Float32Array) => void;
  reject: (error: Error) => void;
  /** Test hook: the worker exits on receiving this run. */
  exit: boolean;
}

interface Slot {
  index: number;
  worker: Worker | null;
  /** The one batch this worker is running; a worker takes the next only after answering. */
  task: Task | null;
  /** The keys of the sessions it holds, least recently used first (mirrors the worker's map). */
  loaded: Map<string, true>;
  /** It started (its module loaded); one that dies before this would die again at once. */
  ready: boolean;
  error: Error | null;
  /** Deaths before starting in a row: the pause before the next attempt doubles with each. */
  startFailures: number;
  respawn: NodeJS.Timeout | null;
}

// Compiled, this module is pool.js beside pool-worker.js; from source (tsx, vitest) both are .ts.
const WORKER_FILE = new URL(`./pool-worker${path.extname(fileURLToPath(import.meta.url))}`, import.meta.url);
const MAX_RESPAWN_PAUSE_MS = 30_000;

/**
 * The compiled worker starts as it is. From source it needs tsx, which a worker thread does not
 * get from the process's `--import tsx` (nor under Vitest): it registers tsx's loader first.
 */
function startWorker(workerData: PoolWorkerData): Worker {
  if (!WORKER_FILE.pathname.endsWith('.ts')) return new Worker(WORKER_FILE, { workerData });
  const require = createRequire(import.meta.url);
  const tsxPackage = require.resolve('tsx/package.json');
  const exports = (require('tsx/package.json') as { exports: Record<string, { import: { default: string } }> }).exports;
  const tsxApi = new URL(exports['./esm/api']!.import.default, pathToFileURL(tsxPackage)).href;
  const bootstrap = `import(${JSON.stringify(tsxApi)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(WORKER_FILE.href)}); });`;
  return new Worker(bootstrap, { eval: true, workerData });
}

/**
 * `workers` threads, each holding ONNX Runtime sessions for the models it has been sent (at most
 * `sessionsPerWorker`, least recently used released first) and running one batch at a time.
 * Batches wait in one queue and go to the first idle worker, preferring one that already holds
 * the model. A worker that dies fails only the batch it held (InferenceWorkerLost) and is
 * replaced at once; the replacement opens its sessions again as batches need them.
 */
export class InferencePool {
  readonly size: number;
  readonly threads: number;
  private readonly slots: Slot[] = [];
  private readonly queue: Task[] = [];
  private nextId = 1;
  private answered = 0;
  private started = false;
  private closed = false;
  private exitNext = false;

  constructor(private readonly options: InferencePoolOptions) {
    if (!Number.isInteger(options.workers) || options.workers < 1) throw new Error(`an inference pool needs at least one worker (got ${options.workers})`);
    this.size = options.workers;
    this.threads = options.threads ?? poolThreads(options.workers);
    for (let index = 0; index < this.size; index++) {
      this.slots.push({ index, worker: null, task: null, loaded: new Map(), ready: false, error: null, startFailures: 0, respawn: null });
    }
  }

  /** `count` images (NHWC float32, `input`) through the model; `input`'s buffer moves to the worker. */
  run(model: PooledModel, input: Float32Array, count: number): Promise<Float32Array> {
    if (this.closed) return Promise.reject(new InferenceWorkerLost('the inference pool is closed'));
    // Workers start with the first batch: a process that never predicts runs none.
    if (!this.started) {
      this.started = true;
      for (const slot of this.slots) this.spawn(slot);
    }
    if (this.slots.every((slot) => slot.worker === null)) {
      const reason = this.slots.find((slot) => slot.error)?.error?.message ?? 'no worker is running';
      return Promise.reject(new InferenceWorkerLost(`the inference workers fail to start: ${reason}`));
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ id: this.nextId++, model, input, count, resolve, reject, exit: this.exitNext });
      this.exitNext = false;
      this.dispatch();
    });
  }

  /** Batches being run by a worker now. */
  get busy(): number {
    return this.slots.filter((slot) => slot.task !== null).length;
  }

  /** Batches waiting for an idle worker. */
  get queued(): number {
    return this.queue.length;
  }

  /** Batches a worker has answered with outputs, since the pool started. */
  get completed(): number {
    return this.answered;
  }

  /** Test hook: the worker that receives the next batch exits holding it, as a crash would. */
  exitOnNextRun(): void {
    this.exitNext = true;
  }

  /** Stops every worker; batches not yet answered fail with InferenceWorkerLost. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const lost = new InferenceWorkerLost('the inference pool closed');
    for (const task of this.queue.splice(0)) task.reject(lost);
    await Promise.all(
      this.slots.map(async (slot) => {
        if (slot.respawn) clearTimeout(slot.respawn);
        slot.task?.reject(lost);
        slot.task = null;
        const worker = slot.worker;
        slot.worker = null;
        await worker?.terminate();
      }),
    );
  }

  private spawn(slot: Slot): void {
    slot.respawn = null;
    slot.ready = false;
    slot.error = null;
    slot.loaded.clear();
    let worker: Worker;
    try {
      worker = startWorker({ threads: this.threads });
    } catch (error) {
      this.startFailed(slot, (error as Error).message.split('\n')[0]!);
      return;
    }
    slot.worker = worker;
    // An idle worker does not keep the process alive; one running a batch does (send()).
    worker.unref();
    worker.on('message', (message: FromWorker) => {
      if (message.type === 'ready') {
        slot.ready = true;
        slot.startFailures = 0;
        return;
      }
      const task = slot.task;
      if (slot.worker !== worker || !task || task.id !== message.id) return;
      slot.task = null;
      worker.unref();
      if (message.type === 'result') {
        this.answered++;
        task.resolve(message.output);
      } else {
        task.reject(new Error(message.message));
      }
      this.dispatch();
    });
    worker.on('error', (error) => {
      slot.error = error;
    });
    worker.on('exit', (code) => this.exited(slot, worker, code));
  }

  private exited(slot: Slot, worker: Worker, code: number): void {
    if (slot.worker !== worker) return; // terminated by close()
    const reason = slot.error ? slot.error.message.split('\n')[0]! : `exit code ${code}`;
    const task = slot.task;
    slot.worker = null;
    slot.task = null;
    slot.loaded.clear();
    task?.reject(new InferenceWorkerLost(`the inference worker running this batch stopped (${reason})`));
    if (this.closed) return;
    this.options.onWorkerExit?.({ worker: slot.index, reason, failedRuns: task ? 1 : 0 });
    if (slot.ready) {
      this.spawn(slot);
      this.dispatch();
      return;
    }
    this.startFailed(slot, reason);
  }

  /**
   * The worker died before starting (its module would not load): it would again at once, so the
   * slot waits before the next attempt, and with no worker left the queue fails rather than waits.
   */
  private startFailed(slot: Slot, reason: string): void {
    slot.error = new Error(reason);
    slot.startFailures++;
    const pause = Math.min(MAX_RESPAWN_PAUSE_MS, 1000 * 2 ** (slot.startFailures - 1));
    slot.respawn = setTimeout(() => this.spawn(slot), pause);
    slot.respawn.unref();
    if (this.slots.every((s) => s.worker === null)) {
      const lost = new InferenceWorkerLost(`the inference workers fail to start: ${reason}`);
      for (const queued of this.queue.splice(0)) queued.reject(lost);
    }
  }

  private dispatch(): void {
    while (this.queue.length > 0) {
      const idle = this.slots.filter((slot) => slot.worker !== null && slot.task === null);
      if (idle.length === 0) return;
      const task = this.queue.shift()!;
      this.send(idle.find((slot) => slot.loaded.has(task.model.key)) ?? idle[0]!, task);
    }
  }

  private send(slot: Slot, task: Task): void {
    const worker = slot.worker!;
    const { model } = task;
    if (slot.loaded.delete(model.key)) {
      slot.loaded.set(model.key, true); // most recently used goes last
    } else {
      while (slot.loaded.size >= this.options.sessionsPerWorker) {
        const oldest = slot.loaded.keys().next().value as string;
        slot.loaded.delete(oldest);
        worker.postMessage({ type: 'drop', key: oldest } satisfies ToWorker);
      }
      // Copied into the worker: the bytes stay here for the other workers and for replacements.
      worker.postMessage({ type: 'load', key: model.key, bytes: model.bytes } satisfies ToWorker);
      slot.loaded.set(model.key, true);
    }
    slot.task = task;
    worker.ref();
    // Only a whole buffer can be transferred; a view into a larger one is copied first.
    const whole = task.input.byteOffset === 0 && task.input.byteLength === task.input.buffer.byteLength;
    const input = whole ? task.input : task.input.slice();
    const message: ToWorker = {
      type: 'run',
      id: task.id,
      key: model.key,
      input,
      dims: [task.count, ...model.inputShape],
      inputName: model.inputName,
      outputName: model.outputName,
      ...(task.exit ? { exit: true } : {}),
    };
    worker.postMessage(message, [input.buffer as ArrayBuffer]);
  }
}
