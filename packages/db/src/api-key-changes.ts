import pg from 'pg';

/** The channel the api_keys trigger notifies, with the changed key's prefix (migration 20261125000100). */
export const API_KEY_CHANNEL = 'finetune_api_keys';

export interface ApiKeyChangeHandlers {
  /** A key with this prefix was updated (revoked) or deleted. */
  changed(prefix: string): void;
  /** LISTEN is in place: from now on every change is reported. */
  listening(): void;
  /** The connection is gone: changes may be missed until `listening` again. */
  lost(): void;
}

/**
 * A connection of its own that LISTENs for API key changes, reconnecting after `retryMs` when
 * it is lost (Postgres restarted, the backend was terminated). Notifications sent while it is
 * down are lost for good, which is why `lost` is reported.
 */
export class ApiKeyChanges {
  /** The connection being made or listening; null between attempts and once closed. */
  private client: pg.Client | null = null;
  private isListening = false;
  private retry: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(
    private readonly databaseUrl: string,
    private readonly handlers: ApiKeyChangeHandlers,
    private readonly retryMs = 1_000,
  ) {}

  /** The first attempt to listen; a failure schedules the next one rather than throwing. */
  async start(): Promise<void> {
    if (this.closed || this.client || this.retry) return;
    await this.connect();
  }

  /** The server process id of the listening connection, or null while not listening. */
  get backendPid(): number | null {
    return this.isListening ? ((this.client as pg.Client & { processID?: number }).processID ?? null) : null;
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.retry) clearTimeout(this.retry);
    this.retry = null;
    const client = this.client;
    this.client = null;
    this.isListening = false;
    await client?.end().catch(() => undefined);
  }

  private async connect(): Promise<void> {
    // keepAlive: a connection that silently died (a half-open TCP connection) is noticed.
    const client = new pg.Client({ connectionString: this.databaseUrl, keepAlive: true });
    this.client = client;
    client.on('notification', (message) => {
      if (message.channel === API_KEY_CHANNEL && message.payload) this.handlers.changed(message.payload);
    });
    client.on('error', () => this.drop(client));
    client.on('end', () => this.drop(client));
    try {
      await client.connect();
      await client.query(`LISTEN ${API_KEY_CHANNEL}`);
    } catch {
      this.drop(client);
      return;
    }
    if (this.client !== client) return; // closed, or lost while LISTEN was answered
    this.isListening = true;
    this.handlers.listening();
  }

  /** A connection failed or ended: report it and try again, unless it was already replaced. */
  private drop(client: pg.Client): void {
    client.end().catch(() => undefined);
    if (this.client !== client) return;
    this.client = null;
    this.isListening = false;
    this.handlers.lost();
    if (this.closed) return;
    this.retry = setTimeout(() => {
      this.retry = null;
      void this.connect();
    }, this.retryMs);
    this.retry.unref();
  }
}
