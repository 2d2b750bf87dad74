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
    const key = this.key(cut, split, ids, engine);
    try {
      const bytes = await this.store.getBuffer(key);
      this.hits += 1;
      // Copy into an aligned buffer: a Buffer's byteOffset need not be a multiple of 4.
      const out = new Float32Array(bytes.length / 4);
      new Uint8Array(out.buffer).set(bytes);
      return out;
    } catch (error) {
      if (!(error instanceof ObjectNotFoundError)) throw error;
    }
    this.misses += 1;
    const features = await compute();
    await this.store.putBuffer(key, Buffer.from(features.buffer, features.byteOffset, features.byteLength), 'application/octet-stream');
    return features;
  }
}
