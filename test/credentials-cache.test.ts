// API key lookups are cached in memory only while Postgres reports every key change: a key
// revoked by another API process, or by hand in SQL, must fail as soon as the notification
// arrives, and nothing is cached while the notifications might be missed.
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import pg from 'pg';
import request from 'supertest';
import { ApiKeysRepository, createDb, type ApiKeyCredentials, type Db } from '@finetune/db';
import { CredentialsCache } from '../apps/api/src/auth/credentials-cache.ts';
import { buildTestApp, type TestApp } from './support/app.ts';

const DATABASE_URL = process.env.DATABASE_URL!;
let db: Db;
let keys: ApiKeysRepository;
let sql: pg.Client;
const tenantId = randomUUID();
const caches: CredentialsCache[] = [];

beforeAll(async () => {
  db = createDb(DATABASE_URL);
  keys = new ApiKeysRepository(db);
  await db.tenant.create({ data: { id: tenantId, name: 'credentials cache' } });
  // Changes "by hand", on a connection of their own.
  sql = new pg.Client({ connectionString: DATABASE_URL });
  await sql.connect();
});

afterEach(async () => {
  await Promise.all(caches.splice(0).map((c) => c.close()));
});

afterAll(async () => {
  await sql.end();
  await db.$disconnect();
});

async function newKey(): Promise<string> {
  const prefix = randomBytes(4).toString('hex');
  await keys.create({ id: randomUUID(), tenantId, name: null, prefix, keyHash: randomBytes(32).toString('hex'), role: 'member' });
  return prefix;
}

/** A cache on the real repository that counts its database lookups. */
async function countingCache(options: { ttlMs?: number; retryMs?: number } = {}) {
  const counter = { lookups: 0 };
  const cache = new CredentialsCache(
    (prefix) => {
      counter.lookups++;
      return keys.credentialsByPrefix(prefix);
    },
    DATABASE_URL,
    { ttlMs: options.ttlMs ?? 60_000, retryMs: options.retryMs ?? 100 },
  );
  caches.push(cache);
  await cache.start();
  /** How many database lookups `calls` requests for `prefix` made. */
  const lookupsFor = async (prefix: string, calls = 2) => {
    const before = counter.lookups;
    for (let i = 0; i < calls; i++) await cache.credentials(prefix);
    return counter.lookups - before;
  };
  return { cache, counter, lookupsFor };
}

describe('CredentialsCache', () => {
  it('serves a key from memory while listening, and drops it when the key is revoked or deleted in SQL', async () => {
    const { cache, counter, lookupsFor } = await countingCache();
    expect(cache.caching).toBe(true);
    const prefix = await newKey();
    expect((await cache.credentials(prefix))?.revokedAt).toBeNull();
    expect(await lookupsFor(prefix)).toBe(0);
    expect(counter.lookups).toBe(1);

    await sql.query('UPDATE api_keys SET "revokedAt" = now() WHERE prefix = $1', [prefix]);
    await expect.poll(async () => (await cache.credentials(prefix))?.revokedAt ?? null, { timeout: 2_000, interval: 20 }).toBeInstanceOf(Date);
    const afterRevoke = counter.lookups;
    expect(afterRevoke).toBeGreaterThan(1);

    await sql.query('DELETE FROM api_keys WHERE prefix = $1', [prefix]);
    await expect.poll(() => cache.credentials(prefix), { timeout: 2_000, interval: 20 }).toBeNull();
    // An unknown prefix is never cached: each call asks the database.
    expect(await lookupsFor(prefix)).toBe(2);
  });

  it('caches nothing while its connection is down, forgets what it had, and listens again', async () => {
    const { cache, lookupsFor } = await countingCache({ retryMs: 300 });
    const prefix = await newKey();
    expect(await lookupsFor(prefix)).toBe(1);
    const pid = cache.listenerPid;
    expect(pid).toEqual(expect.any(Number));

    await sql.query('SELECT pg_terminate_backend($1)', [pid]);
    await expect.poll(() => cache.caching, { timeout: 2_000, interval: 10 }).toBe(false);
    // Down: a revocation whose notification nobody receives is seen on the very next request.
    await sql.query('UPDATE api_keys SET "revokedAt" = now() WHERE prefix = $1', [prefix]);
    expect((await cache.credentials(prefix))?.revokedAt).toBeInstanceOf(Date);

    await expect.poll(() => cache.caching, { timeout: 5_000, interval: 20 }).toBe(true);
    expect(cache.listenerPid).not.toBe(pid);
    await sql.query('UPDATE api_keys SET "revokedAt" = NULL WHERE prefix = $1', [prefix]);
    await expect.poll(async () => (await cache.credentials(prefix))?.revokedAt ?? 'active', { timeout: 2_000, interval: 20 }).toBe('active');
    // Cached again: a call that asks the database no more (the first ones may have raced the
    // notification of that last change, and so were not kept).
    await expect.poll(() => lookupsFor(prefix, 1), { timeout: 2_000, interval: 20 }).toBe(0);
  });

  it('does not cache a lookup that a change overtook', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let lookups = 0;
    const row: ApiKeyCredentials = { id: randomUUID(), tenantId, prefix: 'abcd1234', keyHash: '00', role: 'member', revokedAt: null };
    const cache = new CredentialsCache(
      async () => {
        lookups++;
        if (lookups === 1) await gate;
        return row;
      },
      DATABASE_URL,
      { ttlMs: 60_000 },
    );
    caches.push(cache);
    await cache.start();
    const first = cache.credentials('abcd1234');
    cache.forget('abcd1234'); // the key changed while the first lookup was in flight
    release();
    await first;
    await cache.credentials('abcd1234');
    expect(lookups).toBe(2);
    await cache.credentials('abcd1234');
    expect(lookups).toBe(2);
  });

  it('with API_KEY_CACHE_TTL_MS=0 never caches and opens no connection', async () => {
    const { cache, lookupsFor } = await countingCache({ ttlMs: 0 });
    const prefix = await newKey();
    expect(await lookupsFor(prefix)).toBe(2);
    expect(cache.caching).toBe(false);
    expect(cache.listenerPid).toBeNull();
  });

  it('an entry expires after its TTL even without a notification', async () => {
    const { lookupsFor } = await countingCache({ ttlMs: 150 });
    const prefix = await newKey();
    expect(await lookupsFor(prefix)).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(await lookupsFor(prefix, 1)).toBe(1);
  });
});

describe('two API processes', () => {
  let one: TestApp;
  let two: TestApp;
  beforeAll(async () => {
    [one, two] = await Promise.all([buildTestApp(), buildTestApp()]);
  });
  afterAll(async () => {
    await Promise.all([one?.close(), two?.close()]);
  });

  it('a key revoked through one is refused by the other within a second, though the other had it cached', async () => {
    const created = await one.http.post(`/v1/tenants/${one.tenantId}/api-keys`).send({ name: 'two processes' }).expect(201);
    const onTwo = () => request(two.app.server).get('/v1/jobs').set('authorization', `Bearer ${created.body.key}`);
    await onTwo().expect(200);
    await onTwo().expect(200);
    expect(two.deps.credentials.caching).toBe(true);

    await one.http.delete(`/v1/api-keys/${created.body.id}`).expect(204);
    const revokedAt = Date.now();
    await expect.poll(async () => (await onTwo()).status, { timeout: 1_000, interval: 5 }).toBe(401);
    expect(Date.now() - revokedAt).toBeLessThan(1_000);
  });
});
