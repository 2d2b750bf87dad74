import { randomUUID } from 'node:crypto';
import Type, { type Static } from 'typebox';
import { BASE_MODELS, DomainError, MAX_CUSTOM_INPUT_SIZE, NotFoundError, type PixelScale } from '@finetune/core';
import type { BaseModelRow, BaseModelsRepository } from '@finetune/db';
import type { BaseModelFetchQueue } from '@finetune/queue';
import { buildCustomBase, initBackend, readBaseModelZip, singleShardModelJson } from '@finetune/ml';
import { keys } from '@finetune/storage';
import type { AppDeps } from '../deps.ts';
import { validatorCompiler } from '../plugins/validation.ts';
import { checkDatasetName, type StagedArchive } from './datasets.service.ts';

/** What custom bases need beyond the app's dependencies: their rows and the fetch queue. */
export interface BaseModelDeps {
  bases: BaseModelsRepository;
  queue: BaseModelFetchQueue;
}

/** Entries a base-model zip may have: model.json and its shards (tensorflowjs_converter writes 4 MB shards). */
const MAX_ZIP_ENTRIES = 2_000;

const Scale = Type.Union([Type.Literal('0_1'), Type.Literal('-1_1'), Type.Literal('0_255')], {
  default: '0_1',
  description: 'pixel range the model was trained on: 0_1 (x/255), -1_1 (x/127.5 - 1, Keras MobileNet/EfficientNetV2 "tf" mode), 0_255 (raw)',
});
const Settings = {
  name: Type.Optional(Type.String({ maxLength: 200 })),
  embeddingLayer: Type.String({ minLength: 1, maxLength: 200, description: 'the layer whose output is the embedding: a vector, or a feature map that is average-pooled' }),
  inputSize: Type.Optional(Type.Integer({ minimum: 8, maximum: MAX_CUSTOM_INPUT_SIZE, description: "square input edge; needed when the model's input size is not fixed" })),
  scale: Type.Optional(Scale),
};

/** The JSON form: a hosted model.json a worker fetches. */
export const BaseModelUrlBody = Type.Object(
  { url: Type.String({ minLength: 1, maxLength: 2000, description: "a hosted model.json (http or https); its weight files are fetched relative to it" }), ...Settings },
  { additionalProperties: false },
);
/** The multipart form's text fields (the zip is the `file` part). */
export const BaseModelZipFields = Type.Object(Settings, { additionalProperties: false });

type UrlBody = Static<typeof BaseModelUrlBody>;
type ZipFields = Static<typeof BaseModelZipFields>;

const compile = validatorCompiler();
const validateUrlBody = compile({ schema: BaseModelUrlBody, httpPart: 'body', method: 'POST', url: '/v1/base-models' }) as ((v: unknown) => boolean) & { errors?: unknown[] };
const validateZipFields = compile({ schema: BaseModelZipFields, httpPart: 'body', method: 'POST', url: '/v1/base-models' }) as ((v: unknown) => boolean) & { errors?: unknown[] };

/** Answered by the problem mapper as any schema failure is: 400 validation_error with the paths. */
function validated<T>(validate: ((v: unknown) => boolean) & { errors?: unknown[] }, value: unknown): T {
  if (validate(value)) return value as T;
  throw Object.assign(new Error('invalid body'), { validation: validate.errors ?? [], validationContext: 'body', statusCode: 400 });
}

export function parseUrlBody(body: unknown): UrlBody {
  const parsed = validated<UrlBody>(validateUrlBody, body);
  let url: URL;
  try {
    url = new URL(parsed.url);
  } catch {
    throw new DomainError('invalid_url', 'url is not a URL', 400);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new DomainError('invalid_url', `only http and https URLs are fetched (got ${url.protocol})`, 400);
  if (url.username || url.password) throw new DomainError('invalid_url', 'URLs with credentials are not fetched', 400);
  return parsed;
}

/** Multipart text fields arrive as strings: inputSize is parsed here, everything else as sent. */
export function parseZipFields(fields: Record<string, string>): ZipFields {
  const value: Record<string, unknown> = { ...fields };
  if (fields.inputSize !== undefined) value.inputSize = /^\d{1,5}$/.test(fields.inputSize) ? Number(fields.inputSize) : fields.inputSize;
  return validated<ZipFields>(validateZipFields, value);
}

function nameOf(given: string | undefined, fallback: string): string {
  const name = given === undefined ? '' : checkDatasetName(given).trim();
  return name || fallback;
}

/**
 * A zip upload, validated here before anything is stored: the files (model.json and the shards its
 * manifest names), the model (it loads, the embedding layer exists, its output is a vector or a
 * feature map), then the files go to S3 and the row is created `ready` within the storage quota.
 * Anything refused leaves nothing behind.
 */
export async function createFromZip(deps: AppDeps, bd: BaseModelDeps, tenantId: string, staged: StagedArchive, fields: ZipFields): Promise<BaseModelRow> {
  const { limits } = deps.config;
  const files = await readBaseModelZip(staged.zipPath, { maxEntries: MAX_ZIP_ENTRIES, maxBytes: limits.baseModelBytes });
  await initBackend(deps.config.mlBackend);
  const id = randomUUID();
  const scale: PixelScale = fields.scale ?? '0_1';
  const built = await buildCustomBase(files.modelJson, files.weights, { embeddingLayer: fields.embeddingLayer, inputSize: fields.inputSize, scale }, { id, source: 'upload' });
  built.dispose();
  const modelJson = singleShardModelJson(files.parsed);
  try {
    await deps.store.putBuffer(keys.baseModelFile(id, 'model.json'), modelJson, 'application/json');
    await deps.store.putBuffer(keys.baseModelFile(id, 'weights.bin'), files.weights, 'application/octet-stream');
    return await bd.bases.createReady(
      {
        id,
        tenantId,
        name: nameOf(fields.name, staged.filename.replace(/\.zip$/i, '').slice(0, 200) || id),
        source: 'zip',
        embeddingLayer: fields.embeddingLayer,
        scale,
        storagePrefix: keys.baseModelPrefix(id),
      },
      { ...built.facts, sizeBytes: modelJson.length + files.weights.length },
      deps.config.quotas,
    );
  } catch (error) {
    await deps.store.deletePrefix(keys.baseModelPrefix(id)).catch(() => undefined);
    throw error;
  }
}

/** A URL: the row is `pending` and a worker fetches, validates and stores the model. */
export async function createFromUrl(bd: BaseModelDeps, tenantId: string, body: UrlBody): Promise<BaseModelRow> {
  const id = randomUUID();
  const row = await bd.bases.createPending({
    id,
    tenantId,
    name: nameOf(body.name, new URL(body.url).pathname.split('/').filter(Boolean).slice(-2, -1)[0] ?? id),
    source: 'url',
    url: body.url,
    inputSize: body.inputSize ?? null,
    embeddingLayer: body.embeddingLayer,
    scale: body.scale ?? '0_1',
    storagePrefix: keys.baseModelPrefix(id),
  });
  try {
    await bd.queue.enqueue(id);
  } catch (error) {
    await bd.bases.discardPending(id);
    throw new DomainError('queue_unavailable', `the base-model queue is unavailable: ${(error as Error).message}`, 503);
  }
  return row;
}

export async function getBaseModel(bd: BaseModelDeps, tenantId: string, id: string): Promise<BaseModelRow> {
  const row = await bd.bases.get(tenantId, id);
  if (!row) throw new NotFoundError('base_model', id);
  return row;
}

/** Refused (409) while an unfinished job uses it; its files and cached embeddings go with it. */
export async function deleteBaseModel(deps: AppDeps, bd: BaseModelDeps, tenantId: string, id: string): Promise<void> {
  const row = await bd.bases.delete(tenantId, id);
  if (!row) throw new NotFoundError('base_model', id);
  await bd.queue.removeWaiting(id).catch(() => undefined);
  await deps.store.deletePrefix(keys.baseModelPrefix(id));
  // Its cached embeddings: cache/embeddings/<tenant>/base-<id>/<dataset>/… (resolve-base's cacheName).
  await deps.store.deletePrefix(`${keys.embeddingCacheTenantPrefix(tenantId)}base-${id}/`);
}

export function presentBaseModel(row: BaseModelRow) {
  return {
    id: row.id,
    kind: 'custom' as const,
    name: row.name,
    status: row.status,
    source: row.source as 'zip' | 'url',
    url: row.url,
    inputSize: row.inputSize,
    embeddingSize: row.embeddingSize,
    embeddingLayer: row.embeddingLayer,
    pooled: row.pooled,
    scale: row.scale as PixelScale,
    layerCount: row.layerCount,
    sizeBytes: Number(row.sizeBytes),
    available: row.status === 'ready',
    pretrained: true,
    error: row.errorCode ? { code: row.errorCode, message: row.errorMessage ?? '' } : null,
    createdAt: row.createdAt.toISOString(),
    readyAt: row.readyAt?.toISOString() ?? null,
  };
}

/** The zoo, then the tenant's own bases (newest first). */
export async function listBaseModels(bd: BaseModelDeps, tenantId: string) {
  const custom = await bd.bases.list(tenantId);
  return [...BASE_MODELS.map((b) => ({ ...b, kind: 'zoo' as const })), ...custom.map(presentBaseModel)];
}
