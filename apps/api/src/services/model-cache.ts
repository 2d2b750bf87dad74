import { initBackend, loadModelFromFiles, type tf } from '@finetune/ml';
import type { MlBackendChoice } from '@finetune/core';
import type { ApiMetrics } from '../metrics/metrics.ts';

/**
 * A small LRU of loaded models for /predict. Loading means two S3 reads and building the
 * graph (about a second for MobileNetV2), so the hot models stay in memory; concurrent first
 * requests for one model share a single load.
 */
export class ModelCache {
  private readonly entries = new Map<string, Promise<tf.LayersModel>>();
  private backend: Promise<string> | undefined;

  constructor(
    private readonly capacity: number,
    private readonly backendChoice: MlBackendChoice,
    /** Counts hits and misses; /predict times itself with it. Absent when metrics are off. */
    readonly metrics?: Pick<ApiMetrics, 'cacheHits' | 'cacheMisses' | 'predictSeconds'>,
  ) {}

  async get(id: string, load: () => Promise<{ modelJson: Buffer; weights: Buffer }>): Promise<tf.LayersModel> {
    const cached = this.entries.get(id);
    if (cached) {
      this.metrics?.cacheHits.inc();
      this.entries.delete(id);
      this.entries.set(id, cached); // most recently used goes last
      return cached;
    }
    this.metrics?.cacheMisses.inc();
    this.backend ??= initBackend(this.backendChoice);
    await this.backend;
    const loading = load().then(({ modelJson, weights }) => loadModelFromFiles(modelJson, weights));
    this.entries.set(id, loading);
    loading.catch(() => this.entries.delete(id));
    this.evict();
    return loading;
  }

  private evict(): void {
    while (this.entries.size > this.capacity) {
      const oldest = this.entries.keys().next().value as string;
      const model = this.entries.get(oldest);
      this.entries.delete(oldest);
      void model?.then((m) => m.dispose()).catch(() => undefined);
    }
  }

  /** Drops a model (it was deleted): the next request for it loads again, or finds it gone. */
  forget(id: string): void {
    const model = this.entries.get(id);
    this.entries.delete(id);
    void model?.then((m) => m.dispose()).catch(() => undefined);
  }

  clear(): void {
    for (const model of this.entries.values()) void model.then((m) => m.dispose()).catch(() => undefined);
    this.entries.clear();
  }
}
