import { forwardImages, type ForwardResult, type InferencePool, type tf } from '@finetune/ml';
import type { ApiMetrics } from '../metrics/metrics.ts';

/** One caller's rows of a forward run: its images' outputs, in its order. */
export type ForwardRows = Pick<ForwardResult, 'output' | 'shape'>;

export interface PredictBatchOptions {
  /** How long a run waits for more requests after its first one arrives; 0: every request runs alone. */
  windowMs: number;
  /** Images in one run at most: a run that reaches it starts at once. */
  maxImages: number;
}

interface Caller {
  images: readonly Float32Array[];
  resolve: (rows: ForwardRows) => void;
  reject: (error: unknown) => void;
}

interface OpenBatch {
  callers: Caller[];
  images: number;
  timer: NodeJS.Timeout;
}

/**
 * Micro-batching for /predict: requests for the same loaded model and input size that arrive
 * within `windowMs` of the first share one forward pass, and each caller gets its own rows back.
 * Callers hand in decoded, validated images only — a bad image is refused before it gets here,
 * so it never fails another caller's run — and score their rows themselves (their thresholds
 * differ). An error in a shared run rejects every caller in it.
 *
 * What it buys depends on the engine: on a GPU one large batch costs little more than one image;
 * on CPU, ONNX Runtime already spreads one image over every core, and a batch mostly saves the
 * per-run overhead, which the window's wait can outweigh (see PREDICT_BATCH_WINDOW_MS's default).
 *
 * Each run (shared or not) goes to the inference pool's worker threads when the API has one
 * (PREDICT_WORKERS above 0), so the event loop keeps serving while it runs.
 */
export class PredictBatcher {
  /** Batches still taking requests, by model and by image length (the input size). */
  private readonly open = new Map<tf.LayersModel, Map<number, OpenBatch>>();

  constructor(
    private readonly options: PredictBatchOptions,
    /** Observes each run's image count. Absent when metrics are off. */
    private readonly metrics?: Pick<ApiMetrics, 'predictBatchImages'>,
    /** Where ONNX Runtime runs (PREDICT_WORKERS); absent: in this thread, holding the event loop for each run. */
    private readonly pool?: InferencePool,
  ) {}

  /** The model's outputs for `images` (all of one size), from a run they may share with other requests. */
  forward(model: tf.LayersModel, images: readonly Float32Array[]): Promise<ForwardRows> {
    return new Promise((resolve, reject) => {
      const caller: Caller = { images, resolve, reject };
      const { windowMs, maxImages } = this.options;
      // Alone: batching is off, or the request fills a run by itself.
      if (windowMs === 0 || images.length === 0 || images.length >= maxImages) {
        void this.run(model, [caller]);
        return;
      }
      const width = images[0]!.length;
      let byWidth = this.open.get(model);
      if (!byWidth) this.open.set(model, (byWidth = new Map()));
      let batch = byWidth.get(width);
      // No room left: the open batch starts now, and this request opens the next one.
      if (batch && batch.images + images.length > maxImages) {
        this.start(model, width);
        batch = undefined;
      }
      if (!batch) {
        batch = { callers: [], images: 0, timer: setTimeout(() => this.start(model, width), windowMs) };
        byWidth.set(width, batch);
      }
      batch.callers.push(caller);
      batch.images += images.length;
      if (batch.images >= maxImages) this.start(model, width);
    });
  }

  /** Closes the open batch for this model and width and runs it. */
  private start(model: tf.LayersModel, width: number): void {
    const byWidth = this.open.get(model);
    const batch = byWidth?.get(width);
    if (!byWidth || !batch) return;
    clearTimeout(batch.timer);
    byWidth.delete(width);
    if (byWidth.size === 0) this.open.delete(model);
    void this.run(model, batch.callers);
  }

  private async run(model: tf.LayersModel, callers: Caller[]): Promise<void> {
    const images = callers.flatMap((c) => c.images);
    this.metrics?.predictBatchImages.observe(images.length);
    let result: ForwardResult;
    try {
      // One engine call for the whole run: the run never holds more than maxImages images,
      // except a single request larger than that, which goes through in maxImages chunks.
      result = await forwardImages(model, images, { batchSize: this.options.maxImages, ...(this.pool ? { pool: this.pool } : {}) });
    } catch (error) {
      for (const caller of callers) caller.reject(error);
      return;
    }
    const { output, shape } = result;
    const width = shape.reduce((a, b) => a * b, 1);
    let row = 0;
    for (const caller of callers) {
      const rows = caller.images.length;
      caller.resolve({ output: output.subarray(row * width, (row + rows) * width), shape });
      row += rows;
    }
  }
}
