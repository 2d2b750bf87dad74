import { describe, it, expect, beforeAll } from 'vitest';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import sharp from 'sharp';
import { DomainError } from '@finetune/core';
import { initBackend, tf } from '../src/backend.ts';
import { loadBaseModel, loadModelFromUrl, buildSmallCnn } from '../src/zoo.ts';
import { computeEmbeddings } from '../src/embed.ts';
import { decodeImage } from '../src/images.ts';
import { serializeModel } from '../src/export.ts';

beforeAll(async () => {
  await initBackend('wasm');
});

async function photo(seed: number, size: number): Promise<Float32Array> {
  // A noisy gradient image: something with texture, unlike a flat colour.
  const w = 96;
  const raw = Buffer.alloc(w * w * 3);
  let s = seed;
  for (let i = 0; i < raw.length; i++) {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    raw[i] = ((i % (w * 3)) * 2 + (s % 64) + seed * 40) & 0xff;
  }
  return decodeImage(await sharp(raw, { raw: { width: w, height: w, channels: 3 } }).png().toBuffer(), size);
}

describe('loadBaseModel', () => {
  it('mobilenet_v2: standalone [N,224,224,3] → [N,1280] model; cached; embeddings on wasm', async () => {
    const t0 = performance.now();
    const base = await loadBaseModel('mobilenet_v2');
    const loadMs = performance.now() - t0;
    expect(await loadBaseModel('mobilenet_v2')).toBe(base);
    expect(base.info.embeddingSize).toBe(1280);
    expect(base.model.inputs[0]!.shape).toEqual([null, 224, 224, 3]);
    expect(base.model.outputs[0]!.shape).toEqual([null, 1280]);
    expect(base.model.layers.some((l) => l.name.startsWith('dense'))).toBe(false);

    const images = await Promise.all(Array.from({ length: 32 }, (_, i) => photo(i % 4, 224)));
    const before = tf.memory().numTensors;
    const progress: number[] = [];
    const t1 = performance.now();
    const emb = await computeEmbeddings(base, images, 16, (done, total) => {
      expect(total).toBe(32);
      progress.push(done);
    });
    const embedMs = performance.now() - t1;
    expect(tf.memory().numTensors).toBe(before);
    expect(progress).toEqual([16, 32]);
    expect(emb.length).toBe(32 * 1280);
    expect(emb.every(Number.isFinite)).toBe(true);
    const row = (i: number) => emb.subarray(i * 1280, (i + 1) * 1280);
    // Same image → same embedding (batch position does not matter); different images differ.
    for (let k = 0; k < 1280; k++) expect(Math.abs(row(4)[k]! - row(0)[k]!)).toBeLessThan(1e-4);
    let diff = 0;
    for (let k = 0; k < 1280; k++) diff += Math.abs(row(0)[k]! - row(1)[k]!);
    expect(diff).toBeGreaterThan(1);
    // Equal to a direct predict on one image.
    const direct = tf.tidy(() => (base.model.predict(tf.tensor4d(images[1]!, [1, 224, 224, 3])) as tf.Tensor).dataSync());
    for (let k = 0; k < 1280; k += 97) expect(row(1)[k]).toBeCloseTo(direct[k]!, 3);
    console.log(
      `mobilenet_v2: load ${loadMs.toFixed(0)} ms; embed 32 images at batch 16 on wasm: ${embedMs.toFixed(0)} ms ` +
        `(${((32 / embedMs) * 1000).toFixed(1)} images/s)`,
    );
  });

  it('inception_v3: [N,299,299,3] → [N,2048]', async () => {
    const t0 = performance.now();
    const base = await loadBaseModel('inception_v3');
    const loadMs = performance.now() - t0;
    expect(base.model.outputs[0]!.shape).toEqual([null, 2048]);
    const t1 = performance.now();
    const emb = await computeEmbeddings(base, [await photo(1, 299)], 1);
    expect(emb.length).toBe(2048);
    expect(emb.every(Number.isFinite)).toBe(true);
    console.log(`inception_v3: load ${loadMs.toFixed(0)} ms, 1 image ${(performance.now() - t1).toFixed(0)} ms`);
  });

  it('small_cnn: seeded, [N,28,28,3] → [N,128]', async () => {
    const base = await loadBaseModel('small_cnn');
    expect(base.model.outputs[0]!.shape).toEqual([null, 128]);
    const imgs = [await photo(2, 28), await photo(3, 28)];
    const a = await computeEmbeddings(base, imgs, 8);
    expect(a.length).toBe(256);
    const again = buildSmallCnn(28, 128, 1234);
    const b = await computeEmbeddings({ info: base.info, model: again }, imgs, 8);
    expect(Array.from(b)).toEqual(Array.from(a));
    again.dispose();
  });

  it('unknown id → DomainError unknown_base_model (422)', async () => {
    const error = await loadBaseModel('resnet_9000').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DomainError);
    expect((error as DomainError).code).toBe('unknown_base_model');
    expect((error as DomainError).status).toBe(422);
  });

  it('computeEmbeddings rejects images of the wrong size', async () => {
    const base = await loadBaseModel('small_cnn');
    await expect(computeEmbeddings(base, [new Float32Array(10)], 4)).rejects.toThrow(/expected 28×28×3/);
  });
});

describe('loadModelFromUrl', () => {
  it('loads a layers model over HTTP (model.json + weights.bin) and predicts the same', async () => {
    const model = tf.sequential({
      layers: [tf.layers.dense({ inputShape: [4], units: 3, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: 7 }) })],
    });
    const { modelJson, weights } = await serializeModel(model);
    const requests: string[] = [];
    const server = http.createServer((req, res) => {
      requests.push(req.url ?? '');
      if (req.url === '/hub/m/model.json') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(modelJson);
      } else if (req.url === '/hub/m/weights.bin') {
        res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(weights);
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const { port } = server.address() as AddressInfo;
      const loaded = await loadModelFromUrl(`http://127.0.0.1:${port}/hub/m/model.json`);
      expect(requests).toEqual(['/hub/m/model.json', '/hub/m/weights.bin']);
      const x = tf.tensor2d([[1, 2, 3, 4], [-1, 0, 0.5, 2]]);
      const [p1, p2] = [model.predict(x) as tf.Tensor, loaded.predict(x) as tf.Tensor];
      expect(Array.from(p2.dataSync())).toEqual(Array.from(p1.dataSync()));
      tf.dispose([x, p1, p2]);
      loaded.dispose();
      await expect(loadModelFromUrl(`http://127.0.0.1:${port}/missing/model.json`)).rejects.toThrow(/404/);
    } finally {
      server.close();
      model.dispose();
    }
    await expect(loadModelFromUrl('file:///etc/passwd')).rejects.toMatchObject({ code: 'invalid_model_url' });
    await expect(loadModelFromUrl('not a url')).rejects.toMatchObject({ code: 'invalid_model_url' });
  });
});
