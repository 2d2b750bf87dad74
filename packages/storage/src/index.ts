// Object storage: the one place that speaks to S3 (MinIO in compose, s3rver in tests and
// `npm start`, AWS S3 in production). Services depend on the `ObjectStore` interface, not the SDK.
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  S3ServiceException,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { retryTransient, type Config, type RetryOptions } from '@finetune/core';

export { startEmbeddedS3 } from './embedded.ts';
export type { EmbeddedS3, EmbeddedS3Options } from './embedded.ts';

/** Thrown by reads of a key that does not exist (S3 `NoSuchKey` / 404). */
export class ObjectNotFoundError extends Error {
  readonly code = 'object_not_found';
  constructor(readonly key: string) {
    super(`object ${key} does not exist`);
    this.name = 'ObjectNotFoundError';
  }
}

export interface ObjectInfo {
  key: string;
  size: number;
  lastModified: Date | undefined;
  etag: string | undefined;
}

export interface ObjectStore {
  /** Creates the bucket if it does not exist (idempotent). */
  ensureBucket(): Promise<void>;
  /** Throws unless the bucket is reachable (readiness probe). */
  ping(): Promise<void>;
  putBuffer(key: string, body: Buffer | Uint8Array | string, contentType?: string): Promise<void>;
  /** Streams `stream` up as a multipart upload; the body is never held in memory whole. Returns bytes sent. */
  putStream(key: string, stream: Readable, contentType?: string): Promise<number>;
  putFile(key: string, path: string, contentType?: string): Promise<void>;
  getBuffer(key: string): Promise<Buffer>;
  getStream(key: string): Promise<Readable>;
  downloadToFile(key: string, path: string): Promise<void>;
  exists(key: string): Promise<boolean>;
  /** Deleting a missing key is not an error (S3 semantics). */
  delete(key: string): Promise<void>;
  /** Deletes every object under `prefix`; returns how many were deleted. */
  deletePrefix(prefix: string): Promise<number>;
  list(prefix: string): Promise<ObjectInfo[]>;
}

export type S3StoreOptions = Omit<Config['s3'], 'endpoint'> & { endpoint: string };

/** Multipart part size for `putStream`/`putFile`: S3's minimum is 5 MiB. */
const PART_SIZE = 8 * 1024 * 1024;

function isNotFound(error: unknown): boolean {
  if (error instanceof S3ServiceException) {
    return (
      error.name === 'NoSuchKey' ||
      error.name === 'NotFound' ||
      error.$metadata?.httpStatusCode === 404
    );
  }
  return false;
}

function isMissingBucket(error: unknown): boolean {
  return (
    error instanceof S3ServiceException &&
    (error.name === 'NoSuchBucket' || error.name === 'NotFound' || error.$metadata?.httpStatusCode === 404)
  );
}

export class S3ObjectStore implements ObjectStore {
  readonly client: S3Client;
  readonly bucket: string;

  constructor(options: S3StoreOptions) {
    if (!options.endpoint) throw new Error('S3ObjectStore needs an endpoint (S3_ENDPOINT)');
    this.bucket = options.bucket;
    this.client = new S3Client({
      endpoint: options.endpoint,
      region: options.region,
      forcePathStyle: options.forcePathStyle,
      credentials: { accessKeyId: options.accessKeyId, secretAccessKey: options.secretAccessKey },
      // SDK ≥3.729 adds CRC32 checksums to every PUT by default; s3rver and older MinIO
      // reject or ignore them. Only send them where the operation requires it.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
  }

  async ensureBucket(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
      return;
    } catch (error) {
      if (!isMissingBucket(error)) throw error;
    }
    try {
      await this.client.send(new CreateBucketCommand({ Bucket: this.bucket }));
    } catch (error) {
      // Another process (API vs worker starting together) may have won the race.
      const name = (error as { name?: string }).name;
      if (name !== 'BucketAlreadyOwnedByYou' && name !== 'BucketAlreadyExists') throw error;
    }
  }

  async ping(): Promise<void> {
    await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
  }

  async putBuffer(key: string, body: Buffer | Uint8Array | string, contentType?: string): Promise<void> {
    await this.client.send(
      new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentType: contentType }),
    );
  }

  async putStream(key: string, stream: Readable, contentType?: string): Promise<number> {
    let bytes = 0;
    // Count through a pass-through rather than a 'data' listener, which would switch the
    // source into flowing mode behind the uploader's back.
    const counter = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        bytes += chunk.length;
        callback(null, chunk);
      },
    });
    stream.on('error', (error) => counter.destroy(error));
    stream.pipe(counter);
    const upload = new Upload({
      client: this.client,
      params: { Bucket: this.bucket, Key: key, Body: counter, ContentType: contentType },
      partSize: PART_SIZE,
      queueSize: 2,
      // A failed upload must not leave orphaned parts behind.
      leavePartsOnError: false,
    });
    await upload.done();
    return bytes;
  }

  async putFile(key: string, path: string, contentType?: string): Promise<void> {
    const { size } = await stat(path);
    if (size <= PART_SIZE) {
      await this.client.send(
        new PutObjectCommand({
          Bucket: this.bucket,
          Key: key,
          Body: createReadStream(path),
          ContentLength: size,
          ContentType: contentType,
        }),
      );
      return;
    }
    await this.putStream(key, createReadStream(path), contentType);
  }

  async getBuffer(key: string): Promise<Buffer> {
    const body = await this.getStream(key);
    const chunks: Buffer[] = [];
    for await (const chunk of body) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk));
    return Buffer.concat(chunks);
  }

  async getStream(key: string): Promise<Readable> {
    try {
      const result = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      const body = result.Body;
      if (!body) throw new ObjectNotFoundError(key);
      return body instanceof Readable ? body : Readable.fromWeb(body as never);
    } catch (error) {
      if (isNotFound(error)) throw new ObjectNotFoundError(key);
      throw error;
    }
  }

  async downloadToFile(key: string, path: string): Promise<void> {
    const body = await this.getStream(key);
    await mkdir(dirname(path), { recursive: true });
    await pipeline(body, createWriteStream(path));
  }

  async exists(key: string): Promise<boolean> {
    try {
      await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return true;
    } catch (error) {
      if (isNotFound(error)) return false;
      throw error;
    }
  }

  async delete(key: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
  }

  async deletePrefix(prefix: string): Promise<number> {
    if (prefix === '') throw new Error('deletePrefix refuses an empty prefix (it would empty the bucket)');
    let deleted = 0;
    // List everything first: deleting while paginating can skip keys on some S3 implementations.
    const keys = (await this.list(prefix)).map((o) => o.key);
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000);
      const result = await this.client.send(
        new DeleteObjectsCommand({
          Bucket: this.bucket,
          Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true },
        }),
      );
      const errors = result.Errors ?? [];
      if (errors.length > 0) {
        const first = errors[0];
        throw new Error(
          `deletePrefix(${prefix}): ${errors.length} objects not deleted, first ${first?.Key}: ${first?.Code} ${first?.Message}`,
        );
      }
      deleted += batch.length;
    }
    return deleted;
  }

  async list(prefix: string): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    let token: string | undefined;
    do {
      const page = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token }),
      );
      for (const o of page.Contents ?? []) {
        if (o.Key === undefined) continue;
        out.push({ key: o.Key, size: o.Size ?? 0, lastModified: o.LastModified, etag: o.ETag });
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return out;
  }

  /** Releases the SDK's sockets. */
  destroy(): void {
    this.client.destroy();
  }
}

function segment(name: string, value: string | number): string {
  const s = String(value);
  // Ids and file names become key path segments: refuse anything that could escape its prefix.
  if (s === '' || s === '.' || s === '..' || s.includes('/') || s.includes('\\')) {
    throw new Error(`invalid ${name} for a storage key: ${JSON.stringify(s)}`);
  }
  return s;
}

/** S3 key layout (README.md "Architecture" lists it). */
export const keys = {
  datasetPrefix: (datasetId: string): string => `datasets/${segment('datasetId', datasetId)}/`,
  datasetSource: (datasetId: string): string => `${keys.datasetPrefix(datasetId)}source.zip`,
  jobPrefix: (jobId: string): string => `jobs/${segment('jobId', jobId)}/`,
  checkpointsPrefix: (jobId: string): string => `${keys.jobPrefix(jobId)}checkpoints/`,
  /** One run's checkpoint of one epoch. The run id keeps a stale run (one that lost its lease)
   * from overwriting the objects a live run's checkpoint row points at. */
  checkpointPrefix: (jobId: string, epoch: number, runId: string): string =>
    `${keys.checkpointsPrefix(jobId)}${segment('epoch', epoch)}-${segment('runId', runId)}/`,
  modelPrefix: (modelId: string): string => `models/${segment('modelId', modelId)}/`,
  modelFile: (modelId: string, file: string): string => `${keys.modelPrefix(modelId)}${segment('file', file)}`,
  /** Embedding caches are per tenant: one tenant's cached features are never read for another's job. */
  embeddingCacheTenantPrefix: (tenantId: string): string => `cache/embeddings/${segment('tenantId', tenantId)}/`,
  embeddingCachePrefix: (tenantId: string, baseModel: string, datasetId: string): string =>
    `${keys.embeddingCacheTenantPrefix(tenantId)}${segment('baseModel', baseModel)}/${segment('datasetId', datasetId)}/`,
} as const;

/**
 * The store with every idempotent call retried while S3 is unavailable (connection refused,
 * 5xx, throttling), for up to `maxRetryTimeMs`: a training run rides out an S3 restart instead
 * of failing its attempt. Streaming calls are passed through (a consumed stream cannot be sent
 * again); their callers retry at a higher level.
 */
export function withRetries(store: ObjectStore, options: RetryOptions): ObjectStore {
  const retry = <T>(fn: () => Promise<T>) => retryTransient(fn, options);
  return {
    ensureBucket: () => retry(() => store.ensureBucket()),
    ping: () => store.ping(),
    putBuffer: (key, body, contentType) => retry(() => store.putBuffer(key, body, contentType)),
    putStream: (key, stream, contentType) => store.putStream(key, stream, contentType),
    putFile: (key, path, contentType) => retry(() => store.putFile(key, path, contentType)),
    getBuffer: (key) => retry(() => store.getBuffer(key)),
    getStream: (key) => store.getStream(key),
    downloadToFile: (key, path) => retry(() => store.downloadToFile(key, path)),
    exists: (key) => retry(() => store.exists(key)),
    delete: (key) => retry(() => store.delete(key)),
    deletePrefix: (prefix) => retry(() => store.deletePrefix(prefix)),
    list: (prefix) => retry(() => store.list(prefix)),
  };
}
