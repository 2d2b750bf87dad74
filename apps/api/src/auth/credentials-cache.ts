import { ApiKeyChanges, type ApiKeyCredentials } from '@finetune/db';

export interface CredentialsCacheOptions {
  /** How long an entry is trusted without a notification (API_KEY_CACHE_TTL_MS); 0 turns the cache off. */
  ttlMs: number;
  /** Entries kept at most; the oldest goes first. */
  maxEntries?: number;
  /** Wait between attempts to listen again after the connection was lost. */
  retryMs?: number;
}

interface Entry {
  row: ApiKeyCredentials;
  expiresAt: number;
}

/**
 * API key credentials by prefix, cached in memory. A lookup is a database round trip on every
 * authenticated request: without it `GET /v1/jobs/:id` served 15 % more requests a second
 * (side by side under wrk, the API process being the bottleneck). A revoked key must
 * still fail at once, so an entry lives only while a Postgres LISTEN connection delivers the
 * api_keys trigger's notifications (every update and delete of a key, by any process or by hand):
 *
 *  - a notification drops the prefix's entry; the process that revokes a key also drops it
 *    itself (`forget`) before answering, so its own next request cannot race the notification;
 *  - while that connection is down nothing is cached and every request reads the database, and
 *    everything cached before is dropped (notifications sent meanwhile are lost);
 *  - a lookup that was in flight when any change arrived is not cached (it may predate it);
 *  - each entry also expires after `ttlMs`, a bound for a connection that died unnoticed.
 *
 * Only keys that exist are cached: an unknown prefix costs its caller a lookup every time, and
 * cannot fill the memory.
 */
export class CredentialsCache {
  private readonly entries = new Map<string, Entry>();
  private readonly changes: ApiKeyChanges | null;
  private readonly maxEntries: number;
  /** Bumped by every change and loss: a lookup started under an older one is not cached. */
  private generation = 0;
  private live = false;

  constructor(
    private readonly lookup: (prefix: string) => Promise<ApiKeyCredentials | null>,
    databaseUrl: string,
    private readonly options: CredentialsCacheOptions,
  ) {
    this.maxEntries = options.maxEntries ?? 10_000;
    this.changes =
      options.ttlMs > 0
        ? new ApiKeyChanges(
            databaseUrl,
            {
              changed: (prefix) => this.forget(prefix),
              listening: () => {
                this.generation++;
                this.live = true;
              },
              lost: () => {
                this.live = false;
                this.clear();
              },
            },
            options.retryMs,
          )
        : null;
  }

  /** Starts listening for changes; until then (and whenever that fails) nothing is cached. */
  async start(): Promise<void> {
    await this.changes?.start();
  }

  async close(): Promise<void> {
    this.live = false;
    this.clear();
    await this.changes?.close();
  }

  /** Whether entries are being kept: the change notifications are arriving. */
  get caching(): boolean {
    return this.live;
  }

  /** The server process id of the listening connection (tests terminate it), or null. */
  get listenerPid(): number | null {
    return this.changes?.backendPid ?? null;
  }

  async credentials(prefix: string): Promise<ApiKeyCredentials | null> {
    const now = Date.now();
    const hit = this.entries.get(prefix);
    if (hit && hit.expiresAt > now && this.live) return hit.row;
    const generation = this.generation;
    const row = await this.lookup(prefix);
    if (row && this.live && generation === this.generation) {
      this.entries.delete(prefix);
      if (this.entries.size >= this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
      this.entries.set(prefix, { row, expiresAt: now + this.options.ttlMs });
    }
    return row;
  }

  /** Drops what is cached for `prefix`, and keeps lookups in flight from caching. */
  forget(prefix: string): void {
    this.generation++;
    this.entries.delete(prefix);
  }

  private clear(): void {
    this.generation++;
    this.entries.clear();
  }
}
