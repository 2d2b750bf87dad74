// Object storage: the one place that speaks to S3 (MinIO in compose, s3rver in tests and
// `npm start`, AWS S3 in production). Services depend on the `ObjectStore` interface, not the SDK.
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  CopyObjectCommand,
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
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
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

/** A conditional read or copy found the object replaced since its ETag was taken (S3 412). */
export class ObjectChangedError extends Error {
  readonly code = 'object_changed';
  constructor(readonly key: string) {
    super(`object ${key} changed while it was being read`);
    this.name = 'ObjectChangedError';
  }
}

function isPreconditionFailed(error: unknown): boolean {
  return error instanceof S3ServiceException && (error.name === 'PreconditionFailed' || error.$metadata?.httpStatusCode === 412);
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
  /** `ifMatch`: only the version with this ETag (else ObjectChangedError). */
  getStream(key: string, options?: { ifMatch?: string | undefined }): Promise<Readable>;
  downloadToFile(key: string, path: string): Promise<void>;
  exists(key: string): Promise<boolean>;
  /** Deleting a missing key is not an error (S3 semantics). */
  delete(key: string): Promise<void>;
  /** Deletes every object under `prefix`; returns how many were deleted. */
  deletePrefix(prefix: string): Promise<number>;
  list(prefix: string): Promise<ObjectInfo[]>;
  /** Size and ETag of one object; null when it does not exist. */
  head(key: string): Promise<ObjectInfo | null>;
  /** A server-side copy: the bytes never pass through this process. `ifMatch`: only the version
   * with this ETag (else ObjectChangedError; S3 and MinIO check it, s3rver ignores it). */
  copy(fromKey: string, toKey: string, options?: { ifMatch?: string | undefined }): Promise<void>;
  /** A URL a client can PUT one object to without credentials, until it expires. */
  presignPut(key: string, options: PresignPutOptions): Promise<PresignedRequest>;
}

export interface PresignPutOptions {
  /** Bound into the signature: a PUT of any other length is refused by S3. */
  contentLength: number;
  expiresInSeconds: number;
}

export interface PresignedRequest {
  url: string;
  method: 'PUT';
  /** Headers the client must send as they are (they are part of the signature). */
  headers: Record<string, string>;
}

export type S3StoreOptions = Omit<Config['s3'], 'endpoint' | 'publicEndpoint'> & {
  endpoint: string;
  /** Where clients reach S3, for presigned URLs; default `endpoint`. */
  publicEndpoint?: string | undefined;
};

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
  /** Signs presigned URLs only (it sends nothing): the host is part of the signature, so the URL
   * must be signed for the address the client will use. */
  readonly #presigner: S3Client;

  constructor(options: S3StoreOptions) {
    if (!options.endpoint) throw new Error('S3ObjectStore needs an endpoint (S3_ENDPOINT)');
    this.bucket = options.bucket;
    this.client = S3ObjectStore.#client(options, options.endpoint);
    this.#presigner = options.publicEndpoint && options.publicEndpoint !== options.endpoint
      ? S3ObjectStore.#client(options, options.publicEndpoint)
      : this.client;
  }

  static #client(options: S3StoreOptions, endpoint: string): S3Client {
    return new S3Client({
      endpoint,
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
      // From memory, not a stream: the SDK retries a request whose body it can send again, and
      // never one with a stream body ("non-retryable streaming request"). A reset connection once
      // failed a dataset upload with a 500 that way. At most one part (5 MiB) is held.
      await this.client.send(
        new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: await readFile(path), ContentLength: size, ContentType: contentType }),
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

  async getStream(key: string, options: { ifMatch?: string | undefined } = {}): Promise<Readable> {
    try {
      const result = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key, IfMatch: options.ifMatch }));
      const body = result.Body;
      if (!body) throw new ObjectNotFoundError(key);
      return body instanceof Readable ? body : Readable.fromWeb(body as never);
    } catch (error) {
      if (isNotFound(error)) throw new ObjectNotFoundError(key);
      if (isPreconditionFailed(error)) throw new ObjectChangedError(key);
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

  async head(key: string): Promise<ObjectInfo | null> {
    try {
      const result = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return { key, size: result.ContentLength ?? 0, lastModified: result.LastModified, etag: result.ETag };
    } catch (error) {
      if (isNotFound(error)) return null;
      throw error;
    }
  }

  async copy(fromKey: string, toKey: string, options: { ifMatch?: string | undefined } = {}): Promise<void> {
    try {
      // One CopyObject takes objects up to 5 GiB, far above any MAX_UPLOAD_BYTES a dataset has.
      await this.client.send(
        new CopyObjectCommand({
          Bucket: this.bucket,
          Key: toKey,
          CopySource: `${this.bucket}/${encodeURIComponent(fromKey).replace(/%2F/g, '/')}`,
          CopySourceIfMatch: options.ifMatch,
        }),
      );
    } catch (error) {
      if (isNotFound(error)) throw new ObjectNotFoundError(fromKey);
      if (isPreconditionFailed(error)) throw new ObjectChangedError(fromKey);
      throw error;
    }
  }

  async presignPut(key: string, options: PresignPutOptions): Promise<PresignedRequest> {
    const command = new PutObjectCommand({ Bucket: this.bucket, Key: key, ContentLength: options.contentLength });
    const url = await getSignedUrl(this.#presigner, command, {
      expiresIn: options.expiresInSeconds,
      // Signed as a header, not hoisted into the query: S3 then refuses a body of another length.
      signableHeaders: new Set(['content-length']),
    });
    return { url, method: 'PUT', headers: { 'content-length': String(options.contentLength) } };
  }

  /** Releases the SDK's sockets. */
  destroy(): void {
    if (this.#presigner !== this.client) this.#presigner.destroy();
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
  /** A custom base's files: model.json and weights.bin (its shards concatenated in manifest order). */
  baseModelPrefix: (baseModelId: string): string => `base-models/${segment('baseModelId', baseModelId)}/`,
  baseModelFile: (baseModelId: string, file: 'model.json' | 'weights.bin'): string => `${keys.baseModelPrefix(baseModelId)}${file}`,
  batchPredictionPrefix: (id: string): string => `batch-predictions/${segment('batchPredictionId', id)}/`,
  /** JSON Lines, one per image, written in one upload when the run ends. */
  batchPredictionResults: (id: string): string => `${keys.batchPredictionPrefix(id)}results.jsonl`,
  /** Where a client PUTs a dataset zip through a presigned URL, until the upload is completed. */
  uploadsPrefix: (tenantId: string): string => `uploads/${segment('tenantId', tenantId)}/`,
  uploadSource: (tenantId: string, uploadId: string): string => `${keys.uploadsPrefix(tenantId)}${segment('uploadId', uploadId)}/source.zip`,
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
    getStream: (key, options) => store.getStream(key, options),
    downloadToFile: (key, path) => retry(() => store.downloadToFile(key, path)),
    exists: (key) => retry(() => store.exists(key)),
    delete: (key) => retry(() => store.delete(key)),
    deletePrefix: (prefix) => retry(() => store.deletePrefix(prefix)),
    list: (prefix) => retry(() => store.list(prefix)),
    head: (key) => retry(() => store.head(key)),
    copy: (fromKey, toKey, options) => retry(() => store.copy(fromKey, toKey, options)),
    presignPut: (key, options) => store.presignPut(key, options),
  };
}
