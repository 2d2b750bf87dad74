import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { availableParallelism } from 'node:os';

// Configuration is parsed once, from the environment, into a typed object. A bad value fails
// start-up with every problem listed at once, not the first one found.

export const ML_BACKENDS = ['auto', 'tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'] as const;
export type MlBackendChoice = (typeof ML_BACKENDS)[number];

export interface Config {
  port: number;
  host: string;
  logLevel: string;
  /** Unset means "start an embedded Postgres" (only `npm start` does that). */
  databaseUrl: string | undefined;
  redisUrl: string;
  /** BullMQ key prefix: lets tests (or several deployments) share one Redis. */
  queuePrefix: string;
  s3: {
    /** Unset means "start the embedded S3-compatible server" (only `npm start` does that). */
    endpoint: string | undefined;
    region: string;
    bucket: string;
    accessKeyId: string;
    secretAccessKey: string;
    forcePathStyle: boolean;
    /** The endpoint presigned URLs are signed for: one clients can reach (S3_ENDPOINT may be an
     * address inside the deployment's network). Unset: the same as `endpoint`. */
    publicEndpoint: string | undefined;
  };
  /** How long a presigned dataset upload URL (POST /v1/datasets/uploads) stays valid. */
  uploadUrlTtlSeconds: number;
  mlBackend: MlBackendChoice;
  workerConcurrency: number;
  /**
   * Runs one training child process may serve: after a clean head-only run it takes the next
   * job instead of exiting (1: every run in a fresh process).
   */
  trainingChildMaxRuns: number;
  /** BullMQ lock duration; a worker that stops renewing for this long loses its job. */
  workerLockDurationMs: number;
  jobAttempts: number;
  /** First retry delay of a failed attempt; doubles per attempt. */
  jobRetryBackoffMs: number;
  /** Default and ceiling of a job's maxRuntimeSeconds. */
  maxJobRuntimeSeconds: number;
  /** How many of a job's most recent checkpoints are kept, besides its best one. */
  checkpointsKeepLast: number;
  /** domain_adaptation: images per domain its batch-norm statistics are estimated from (a seeded sample). */
  adaptationMaxImages: number;
  /**
   * Training seconds between two checkpoints of a job (0: every epoch). Every epoch still commits
   * its metrics; a killed run redoes at most this much training past its last checkpoint.
   */
  checkpointIntervalSeconds: number;
  /** How often a worker compares Postgres with the queue and re-enqueues stranded jobs. */
  reconcileIntervalMs: number;
  /** How often a worker's sweep controller looks at active sweeps (starts trials, takes ASHA decisions). */
  sweepControllerIntervalMs: number;
  /** How long a training run keeps retrying an unavailable S3 or Postgres before the attempt fails. */
  dependencyRetryMs: number;
  /** A graceful worker stop waits this long for runs to reach a batch boundary and hand over. */
  workerShutdownGraceMs: number;
  limits: {
    uploadBytes: number;
    datasetUncompressedBytes: number;
    datasetEntries: number;
    imageBytes: number;
    imagePixels: number;
    predictBytes: number;
    /** Decoded training images are held in memory as RGB bytes; refuse datasets above this. */
    trainingImageBytes: number;
    /** Largest JSON body (job specs); /predict's JSON form takes one MAX_PREDICT_BYTES image in base64. */
    jsonBodyBytes: number;
    /** A custom base model (model.json + weights, uncompressed), uploaded or fetched. */
    baseModelBytes: number;
    /** One fetch of a custom base's file from its URL (model.json or a weight shard). */
    baseModelFetchTimeoutMs: number;
    /** Whether a custom base's URL may point at a private, loopback or link-local address. */
    baseModelFetchPrivate: boolean;
  };
  http: {
    /** Fastify `trustProxy`: false, true (any peer), or the proxies' addresses/CIDRs. */
    trustProxy: boolean | string[];
    /** Origins allowed by CORS; empty means CORS is off (no CORS headers at all). '*' allows any. */
    corsOrigins: string[];
    /** The whole request (headers and body) must arrive within this; 0 disables. */
    requestTimeoutMs: number;
    /** A request body that delivers no byte for this long is answered 408; 0 disables. */
    uploadIdleTimeoutMs: number;
    /** An idle keep-alive connection is closed after this. */
    keepAliveTimeoutMs: number;
  };
  modelCacheSize: number;
  /** /predict micro-batching: requests for one model within `windowMs` of the first share a forward run of at most `maxImages` images; 0 ms runs each request alone. */
  predictBatch: { windowMs: number; maxImages: number };
  /** Worker threads /predict runs ONNX Runtime on; 0 runs it on the API's main thread (each run then holds the event loop). */
  predictWorkers: number;
  /** Serve the OpenAPI document (/openapi.json) and Swagger UI (/docs). */
  docsEnabled: boolean;
  dataDir: string;
  /** Per-API-key token buckets, shared by API replicas through Redis. */
  rateLimits: RateLimits;
  /** Per-tenant quotas where a tenant has none of its own; null is unlimited. */
  quotas: QuotaLimits;
  auth: {
    /** Server secret API keys are hashed under (HMAC-SHA-256). The API refuses to start without one. */
    apiKeySecret: string | undefined;
    /** A bootstrap admin key acting in the default tenant. */
    adminApiKey: string | undefined;
    /** How long the API trusts a cached key lookup without a change notification; 0: no cache. */
    keyCacheTtlMs: number;
  };
  /** Prometheus metrics: the API's GET /metrics and the worker's own listener. */
  metrics: {
    /** Serve GET /metrics (API and worker); off, /metrics is a 404 (the worker's /healthz stays). */
    enabled: boolean;
    /** When set, GET /metrics needs `Authorization: Bearer <token>`. */
    token: string | undefined;
    /** The worker's metrics and liveness listener (GET /metrics, GET /healthz); 0 disables it. */
    workerPort: number;
    workerHost: string;
  };
}

/** A token bucket: `burst` requests at once, refilled at `perMinute`. Null: no limit. */
export interface RateLimit {
  perMinute: number;
  burst: number;
}

export interface RateLimits {
  /** Every /v1 call. */
  default: RateLimit | null;
  /** POST /v1/models/:id/predict, on top of `default`. */
  predict: RateLimit | null;
  /** POST /v1/datasets, on top of `default`. */
  upload: RateLimit | null;
}

export interface QuotaLimits {
  /** Jobs queued, running or retrying at once. */
  concurrentJobs: number | null;
  /** Bytes of datasets, models and checkpoints stored. */
  storedBytes: number | null;
  /** Models kept. */
  models: number | null;
}

type Env = Record<string, string | undefined>;

/** The limits a dataset archive is read under, in the shape the zip reader takes. */
export function datasetZipLimits(limits: Config['limits']) {
  return {
    maxEntries: limits.datasetEntries,
    maxUncompressedBytes: limits.datasetUncompressedBytes,
    maxEntryBytes: limits.imageBytes,
  };
}

const PROXY_NAMES = new Set(['loopback', 'linklocal', 'uniquelocal']);

/** An IP, an IP/prefix, or one of proxy-addr's names: what Fastify's trustProxy list takes. */
function isProxyAddress(value: string): boolean {
  if (PROXY_NAMES.has(value)) return true;
  const [ip, prefix, ...rest] = value.split('/');
  const family = isIP(ip ?? '');
  if (family === 0 || rest.length > 0) return false;
  if (prefix === undefined) return true;
  return /^\d{1,3}$/.test(prefix) && Number(prefix) <= (family === 4 ? 32 : 128);
}

function isOrigin(value: string): boolean {
  try {
    const url = new URL(value);
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.origin === value;
  } catch {
    return false;
  }
}

export function loadConfig(env: Env = process.env): Config {
  const problems: string[] = [];

  const int = (name: string, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number => {
    const raw = env[name];
    if (raw === undefined || raw === '') return fallback;
    const value = Number(raw);
    if (!Number.isInteger(value) || value < min || value > max) {
      problems.push(`${name} must be an integer in [${min}, ${max}], got "${raw}"`);
      return fallback;
    }
    return value;
  };
  const bool = (name: string, fallback: boolean): boolean => {
    const raw = env[name]?.toLowerCase();
    if (raw === undefined || raw === '') return fallback;
    if (['1', 'true', 'yes', 'on'].includes(raw)) return true;
    if (['0', 'false', 'no', 'off'].includes(raw)) return false;
    problems.push(`${name} must be true or false, got "${env[name]}"`);
    return fallback;
  };
  const str = (name: string, fallback: string): string => env[name] || fallback;
  const list = (name: string): string[] =>
    (env[name] ?? '')
      .split(',')
      .map((v) => v.trim())
      .filter((v) => v !== '');
  // TRUST_PROXY: off by default, so X-Forwarded-* from clients is ignored unless an operator says
  // a proxy sets them. true trusts any peer; better, the proxies' addresses/CIDRs (or proxy-addr's
  // names loopback, linklocal, uniquelocal). No hop counts: Fastify 5 treats them as trusting
  // nothing, since they cannot tell a proxy from a client.
  const trustProxy = (): Config['http']['trustProxy'] => {
    const raw = env.TRUST_PROXY?.trim() ?? '';
    if (raw === '') return false;
    if (/^(1|true|yes|on)$/i.test(raw)) return true;
    if (/^(0|false|no|off)$/i.test(raw)) return false;
    const entries = list('TRUST_PROXY');
    const bad = entries.filter((e) => !isProxyAddress(e));
    if (bad.length > 0) {
      problems.push(`TRUST_PROXY must be true, false or a comma-separated list of IPs/CIDRs, got "${raw}"`);
      return false;
    }
    return entries;
  };
  const corsOrigins = (): string[] => {
    const origins = list('CORS_ORIGINS');
    const bad = origins.filter((o) => o !== '*' && !isOrigin(o));
    if (bad.length > 0) problems.push(`CORS_ORIGINS must be '*' or comma-separated origins like https://app.example.com, got "${bad.join(', ')}"`);
    return bad.length > 0 ? [] : origins;
  };
  const optional = (name: string): string | undefined => env[name] || undefined;
  // A secret comes from NAME, or else from the file NAME_FILE names (Docker/Kubernetes secrets,
  // the compose file's credentials volume), trimmed.
  const secret = (name: string): string | undefined => {
    if (env[name]) return env[name];
    const file = env[`${name}_FILE`];
    if (!file) return undefined;
    try {
      return readFileSync(file, 'utf8').trim() || undefined;
    } catch (error) {
      problems.push(`${name}_FILE: cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
      return undefined;
    }
  };
  // A rate limit of 0 per minute turns that bucket off; a burst defaults to a tenth of a minute.
  const rateLimit = (prefix: string, perMinute: number, burst: number): RateLimit | null => {
    const rate = int(`${prefix}_PER_MINUTE`, perMinute, 0, 10_000_000);
    const size = int(`${prefix}_BURST`, burst, 1, 10_000_000);
    return rate === 0 ? null : { perMinute: rate, burst: size };
  };
  // A quota of 0 is unlimited.
  const quota = (name: string, fallback: number): number | null => {
    const value = int(name, fallback, 0);
    return value === 0 ? null : value;
  };

  const backend = str('ML_BACKEND', 'auto');
  if (!(ML_BACKENDS as readonly string[]).includes(backend)) {
    problems.push(`ML_BACKEND must be one of ${ML_BACKENDS.join('|')}, got "${backend}"`);
  }
  const databaseUrl = optional('DATABASE_URL');
  if (databaseUrl && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    problems.push('DATABASE_URL must be a postgres:// or postgresql:// URL');
  }
  const redisUrl = str('REDIS_URL', 'redis://127.0.0.1:6379');
  if (!/^rediss?:\/\//.test(redisUrl)) problems.push('REDIS_URL must be a redis:// or rediss:// URL');
  const publicEndpoint = optional('S3_PUBLIC_ENDPOINT');
  if (publicEndpoint && !/^https?:\/\/[^/]/.test(publicEndpoint)) problems.push('S3_PUBLIC_ENDPOINT must be an http:// or https:// URL');

  const config: Config = {
    port: int('PORT', 3000, 0, 65535),
    host: str('HOST', '0.0.0.0'),
    logLevel: str('LOG_LEVEL', 'info'),
    databaseUrl,
    redisUrl,
    queuePrefix: str('QUEUE_PREFIX', 'finetune'),
    s3: {
      endpoint: optional('S3_ENDPOINT'),
      region: str('S3_REGION', 'us-east-1'),
      bucket: str('S3_BUCKET', 'finetune'),
      accessKeyId: str('S3_ACCESS_KEY_ID', 'S3RVER'),
      secretAccessKey: str('S3_SECRET_ACCESS_KEY', 'S3RVER'),
      forcePathStyle: bool('S3_FORCE_PATH_STYLE', true),
      publicEndpoint,
    },
    // SigV4 presigned URLs are valid for at most 7 days.
    uploadUrlTtlSeconds: int('UPLOAD_URL_TTL_SECONDS', 3600, 1, 7 * 24 * 3600),
    mlBackend: backend as MlBackendChoice,
    workerConcurrency: int('WORKER_CONCURRENCY', 1, 1, 64),
    trainingChildMaxRuns: int('TRAINING_CHILD_MAX_RUNS', 20, 1, 100_000),
    workerLockDurationMs: int('WORKER_LOCK_DURATION_MS', 60_000, 1_000, 3_600_000),
    jobAttempts: int('JOB_ATTEMPTS', 3, 1, 100),
    jobRetryBackoffMs: int('JOB_RETRY_BACKOFF_MS', 5_000, 0, 3_600_000),
    maxJobRuntimeSeconds: int('MAX_JOB_RUNTIME_SECONDS', 24 * 3600, 1, 30 * 24 * 3600),
    checkpointsKeepLast: int('CHECKPOINTS_KEEP_LAST', 1, 1, 1000),
    adaptationMaxImages: int('ADAPTATION_MAX_IMAGES', 500, 1, 100_000),
    checkpointIntervalSeconds: int('CHECKPOINT_INTERVAL_SECONDS', 10, 0, 24 * 3600),
    reconcileIntervalMs: int('RECONCILE_INTERVAL_MS', 30_000, 500, 3_600_000),
    sweepControllerIntervalMs: int('SWEEP_CONTROLLER_INTERVAL_MS', 500, 50, 60_000),
    dependencyRetryMs: int('DEPENDENCY_RETRY_MS', 120_000, 0, 3_600_000),
    workerShutdownGraceMs: int('WORKER_SHUTDOWN_GRACE_MS', 25_000, 0, 3_600_000),
    limits: {
      uploadBytes: int('MAX_UPLOAD_BYTES', 512 * 1024 * 1024, 1),
      datasetUncompressedBytes: int('MAX_DATASET_UNCOMPRESSED_BYTES', 2 * 1024 * 1024 * 1024, 1),
      datasetEntries: int('MAX_DATASET_ENTRIES', 100_000, 1),
      imageBytes: int('MAX_IMAGE_BYTES', 32 * 1024 * 1024, 1),
      imagePixels: int('MAX_IMAGE_PIXELS', 40_000_000, 1),
      predictBytes: int('MAX_PREDICT_BYTES', 16 * 1024 * 1024, 1),
      trainingImageBytes: int('MAX_TRAINING_IMAGE_BYTES', 4 * 1024 * 1024 * 1024, 1),
      jsonBodyBytes: int('MAX_JSON_BODY_BYTES', 1024 * 1024, 1024, 1024 * 1024 * 1024),
      baseModelBytes: int('MAX_BASE_MODEL_BYTES', 256 * 1024 * 1024, 1),
      baseModelFetchTimeoutMs: int('BASE_MODEL_FETCH_TIMEOUT_MS', 60_000, 100, 3_600_000),
      baseModelFetchPrivate: bool('BASE_MODEL_FETCH_PRIVATE', false),
    },
    http: {
      trustProxy: trustProxy(),
      corsOrigins: corsOrigins(),
      requestTimeoutMs: int('REQUEST_TIMEOUT_MS', 600_000, 0, 24 * 3_600_000),
      uploadIdleTimeoutMs: int('UPLOAD_IDLE_TIMEOUT_MS', 30_000, 0, 3_600_000),
      keepAliveTimeoutMs: int('KEEP_ALIVE_TIMEOUT_MS', 72_000, 1, 3_600_000),
    },
    modelCacheSize: int('MODEL_CACHE_SIZE', 4, 1, 1000),
    predictBatch: {
      // Off by default. On CPU ONNX Runtime already spreads one image over every core, so a shared
      // run saves little: measured side by side (bench/predict-batching.ts, MobileNetV2, 2 shared
      // cores, 8 connections), windows of 2, 5 and 20 ms gave no more req/s than 0 (medians 35,
      // 39, 39 against 41) while a lone request waited out the window (p50 21 ms → 26, 29, 46).
      // Worth a few ms where one large batch costs little more than one image (GPUs).
      windowMs: int('PREDICT_BATCH_WINDOW_MS', 0, 0, 1000),
      maxImages: int('PREDICT_MAX_BATCH', 32, 1, 1024),
    },
    // Two workers (one on a single core), each with half the ONNX Runtime threads. Measured side by
    // side (bench/predict-batching.ts --workers 0,1,2; MobileNetV2, 8 connections, 2 shared cores):
    // 42, 57 and 68 req/s for 0, 1 and 2 workers, a lone request's p50 23, 18 and 12 ms, and a
    // GET /v1/jobs/:id meanwhile p50 43, 11 and 20 ms; the API's RSS 455, 492 and 605 MB.
    predictWorkers: int('PREDICT_WORKERS', Math.min(2, availableParallelism()), 0, 64),
    docsEnabled: bool('DOCS_ENABLED', true),
    dataDir: str('DATA_DIR', '.data'),
    rateLimits: {
      default: rateLimit('RATE_LIMIT', 600, 120),
      predict: rateLimit('PREDICT_RATE_LIMIT', 300, 30),
      upload: rateLimit('UPLOAD_RATE_LIMIT', 12, 4),
    },
    quotas: {
      concurrentJobs: quota('QUOTA_CONCURRENT_JOBS', 20),
      storedBytes: quota('QUOTA_STORED_BYTES', 50 * 1024 * 1024 * 1024),
      models: quota('QUOTA_MODELS', 1000),
    },
    auth: {
      apiKeySecret: secret('API_KEY_SECRET'),
      adminApiKey: secret('ADMIN_API_KEY'),
      keyCacheTtlMs: int('API_KEY_CACHE_TTL_MS', 60_000, 0, 3_600_000),
    },
    metrics: {
      enabled: bool('METRICS_ENABLED', true),
      token: optional('METRICS_TOKEN'),
      workerPort: int('WORKER_METRICS_PORT', 9464, 0, 65535),
      // All interfaces, like the API's HOST: in a container Prometheus scrapes from outside it.
      workerHost: str('WORKER_METRICS_HOST', '0.0.0.0'),
    },
  };
  const { apiKeySecret, adminApiKey } = config.auth;
  if (apiKeySecret !== undefined && apiKeySecret.length < 32) {
    problems.push('API_KEY_SECRET must be at least 32 characters (e.g. `openssl rand -hex 32`)');
  }
  if (adminApiKey !== undefined && (adminApiKey.length < 24 || /\s/.test(adminApiKey))) {
    problems.push('ADMIN_API_KEY must be at least 24 characters with no whitespace (e.g. `openssl rand -hex 24`)');
  }
  const metricsToken = config.metrics.token;
  if (metricsToken !== undefined && (metricsToken.length < 16 || !/^[\x21-\x7e]+$/.test(metricsToken))) {
    problems.push('METRICS_TOKEN must be at least 16 printable characters with no whitespace (e.g. `openssl rand -hex 24`)');
  }

  if (problems.length > 0) {
    throw new Error(`Invalid configuration:\n  - ${problems.join('\n  - ')}`);
  }
  return config;
}
