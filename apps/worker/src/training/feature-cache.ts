import { createHash } from 'node:crypto';
import { keys, ObjectNotFoundError, type ObjectStore } from '@finetune/storage';

/**
 * The embedding cache: outputs of a frozen base (or the frozen bottom of a partly unfrozen
 * one) stored in S3 per dataset × base model × preprocessing × split. Frozen layers never
 * change, so a second job or a sweep on the same data skips the expensive forward pass.
 *
 * The key's variant hash covers everything that changes the numbers: the input size and
 * resize mode, the decoder, the layer the features are taken at, which images (in which
 * order) make up the split, and the engine that ran the layers (ONNX Runtime or tfjs round
 * differently, so their features never mix).
 */
export class FeatureCache {
  hits = 0;
  misses = 0;

  constructor(
    private readonly store: ObjectStore,
    private readonly tenantId: string,
    private readonly baseModel: string,
    private readonly datasetId: string,
    private readonly preprocessing: Record<string, unknown>,
  ) {}

  key(cut: string, split: string, ids: string[], engine?: string): string {
    const variant = createHash('sha256')
      .update(JSON.stringify({ ...this.preprocessing, cut, ids, engine }))
      .digest('hex')
      .slice(0, 32);
    const safeCut = cut.replace(/[^A-Za-z0-9_.-]/g, '_');
    return `${keys.embeddingCachePrefix(this.tenantId, this.baseModel, this.datasetId)}${variant}/${safeCut}-${split}.f32`;
  }

  async getOrCompute(cut: string, split: string, ids: string[], engine: string, compute: () => Promise<Float32Array>): Promise<Float32Array> {
    const cached = await this.lookup(cut, split, ids, engine);
    if (cached) return cached;
    this.misses += 1;
    const features = await compute();
    await this.store.putBuffer(this.key(cut, split, ids, engine), Buffer.from(features.buffer, features.byteOffset, features.byteLength), 'application/octet-stream');
    return features;
  }

  /** The cached features, counted as a hit; null (not counted) when there are none. */
  async lookup(cut: string, split: string, ids: string[], engine: string): Promise<Float32Array | null> {
    const bytes = await this.read(this.key(cut, split, ids, engine));
    if (!bytes) return null;
    this.hits += 1;
    // Copy into an aligned buffer: a Buffer's byteOffset need not be a multiple of 4.
    const out = new Float32Array(bytes.length / 4);
    new Uint8Array(out.buffer).set(bytes);
    return out;
  }

  /** Whether the features are cached, without reading or counting them. */
  has(cut: string, split: string, ids: string[], engine: string): Promise<boolean> {
    return this.store.exists(this.key(cut, split, ids, engine));
  }

  /**
   * Which images of the archive did not decode when a run last decoded it with these settings
   * (null when no run has): with it, a later run knows its splits' ids — and so its cache keys —
   * without decoding anything. `maxPixels` changes which images decode, so it is part of the key.
   */
  async unreadableImages(maxPixels: number): Promise<string[] | null> {
    const bytes = await this.read(this.decodedKey(maxPixels));
    if (!bytes) return null;
    const record = JSON.parse(bytes.toString('utf8')) as { unreadable?: unknown };
    return Array.isArray(record.unreadable) && record.unreadable.every((p) => typeof p === 'string') ? record.unreadable : null;
  }

  async recordUnreadableImages(maxPixels: number, unreadable: string[]): Promise<void> {
    await this.store.putBuffer(this.decodedKey(maxPixels), Buffer.from(JSON.stringify({ unreadable })), 'application/json');
  }

  private decodedKey(maxPixels: number): string {
    const variant = createHash('sha256')
      .update(JSON.stringify({ ...this.preprocessing, maxPixels }))
      .digest('hex')
      .slice(0, 32);
    return `${keys.embeddingCachePrefix(this.tenantId, this.baseModel, this.datasetId)}${variant}/decoded.json`;
  }

  private async read(key: string): Promise<Buffer | null> {
    try {
      return await this.store.getBuffer(key);
    } catch (error) {
      if (error instanceof ObjectNotFoundError) return null;
      throw error;
    }
  }
}
