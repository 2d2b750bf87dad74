// Applies the committed prisma/migrations/*/migration.sql files with the `pg` driver.
//
// Why not `prisma migrate deploy`: the Prisma CLI downloads its native schema engine at start-up,
// and offline (this repo's dev/CI machines) it fails or, with a stub engine, exits 0 having applied
// nothing. This runner keeps Prisma's bookkeeping exactly (the `_prisma_migrations` table, its
// columns, sha256 checksums, and the advisory lock key), so a later real `prisma migrate deploy`
// (docker-compose, production) sees these migrations as applied, and the two never run at once.
import { createHash, randomUUID } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';

export const DEFAULT_MIGRATIONS_DIR = fileURLToPath(new URL('../../../prisma/migrations', import.meta.url));

/** The key Prisma's schema engine passes to pg_advisory_lock: shared so both runners exclude each other. */
const PRISMA_ADVISORY_LOCK_KEY = 72707369;

// Prisma's own DDL for its bookkeeping table (schema-engine, postgres flavour).
const CREATE_MIGRATIONS_TABLE = `
CREATE TABLE IF NOT EXISTS "_prisma_migrations" (
    "id"                    VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum"              VARCHAR(64) NOT NULL,
    "finished_at"           TIMESTAMPTZ,
    "migration_name"        VARCHAR(255) NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        TIMESTAMPTZ,
    "started_at"            TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count"   INTEGER NOT NULL DEFAULT 0
)`;

export class MigrationError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'MigrationError';
  }
}

export interface LocalMigration {
  name: string;
  sql: string;
  checksum: string;
}

/** Committed migrations in name order (Prisma's `<timestamp>_<name>` sorts chronologically). */
export async function readMigrations(migrationsDir: string = DEFAULT_MIGRATIONS_DIR): Promise<LocalMigration[]> {
  const entries = await readdir(migrationsDir, { withFileTypes: true });
  const out: LocalMigration[] = [];
  for (const entry of entries.filter((e) => e.isDirectory()).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    let bytes: Buffer;
    try {
      bytes = await readFile(join(migrationsDir, entry.name, 'migration.sql'));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new MigrationError(`migration ${entry.name} has no migration.sql`);
      }
      throw error;
    }
    out.push({
      name: entry.name,
      sql: bytes.toString('utf8'),
      // Prisma's checksum: sha256 of the file's bytes, lower-case hex.
      checksum: createHash('sha256').update(bytes).digest('hex'),
    });
  }
  return out;
}

interface MigrationRow {
  migration_name: string;
  checksum: string;
  finished_at: Date | null;
  rolled_back_at: Date | null;
}

function withDatabase(databaseUrl: string, database: string): string {
  const url = new URL(databaseUrl);
  url.pathname = `/${encodeURIComponent(database)}`;
  return url.toString();
}

export function databaseName(databaseUrl: string): string {
  const name = decodeURIComponent(new URL(databaseUrl).pathname.replace(/^\//, ''));
  if (!name) throw new MigrationError(`DATABASE_URL names no database: ${redact(databaseUrl)}`);
  return name;
}

/** The URL without its password, for messages. */
export function redact(databaseUrl: string): string {
  try {
    const url = new URL(databaseUrl);
    if (url.password) url.password = '***';
    return url.toString();
  } catch {
    return '<unparseable url>';
  }
}

function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/**
 * Creates the database named in `databaseUrl` unless it exists, connecting to the server's
 * `postgres` database to do so. Returns true if it was created.
 */
export async function ensureDatabase(databaseUrl: string): Promise<boolean> {
  const name = databaseName(databaseUrl);
  const admin = new pg.Client({ connectionString: withDatabase(databaseUrl, 'postgres') });
  await admin.connect();
  try {
    const found = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    if (found.rowCount) return false;
    try {
      await admin.query(`CREATE DATABASE ${quoteIdent(name)}`);
      return true;
    } catch (error) {
      // 42P04 duplicate_database: a concurrent start-up created it first.
      if ((error as { code?: string }).code === '42P04') return false;
      throw error;
    }
  } finally {
    await admin.end();
  }
}

/**
 * Applies every committed migration not yet recorded in `_prisma_migrations`, each in its own
 * transaction, under Prisma's advisory lock. Returns the names applied (empty when up to date).
 * Throws if an applied migration's file changed, or if a migration failed earlier and was not
 * resolved (Prisma's P3009), or if a migration fails now (its transaction is rolled back and the
 * failure recorded, rolled back, with its error in `logs`).
 */
export async function applyMigrations(
  databaseUrl: string,
  migrationsDir: string = DEFAULT_MIGRATIONS_DIR,
): Promise<string[]> {
  const local = await readMigrations(migrationsDir);
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  const applied: string[] = [];
  try {
    // Session-level lock: held across the per-migration transactions below.
    await client.query('SELECT pg_advisory_lock($1)', [PRISMA_ADVISORY_LOCK_KEY]);
    try {
      await client.query(CREATE_MIGRATIONS_TABLE);
      const { rows } = await client.query<MigrationRow>(
        'SELECT migration_name, checksum, finished_at, rolled_back_at FROM "_prisma_migrations" ORDER BY started_at',
      );
      const live = rows.filter((r) => r.rolled_back_at === null);

      const failed = live.filter((r) => r.finished_at === null);
      if (failed.length > 0) {
        const names = failed.map((r) => r.migration_name).join(', ');
        throw new MigrationError(
          `migration(s) ${names} started but never finished (Prisma P3009). Inspect the database, then run ` +
            '`npx prisma migrate resolve --rolled-back <name>` (or --applied) before migrating again.',
        );
      }

      const done = new Map(live.map((r) => [r.migration_name, r]));
      const changed = local.filter((m) => done.has(m.name) && done.get(m.name)!.checksum !== m.checksum);
      if (changed.length > 0) {
        throw new MigrationError(
          `migration(s) ${changed.map((m) => m.name).join(', ')} were modified after being applied ` +
            '(checksum mismatch). Never edit an applied migration: add a new one.',
        );
      }

      for (const migration of local) {
        if (done.has(migration.name)) continue;
        const startedAt = new Date();
        try {
          await client.query('BEGIN');
          await client.query(migration.sql);
          await client.query(
            `INSERT INTO "_prisma_migrations"
               (id, checksum, finished_at, migration_name, logs, rolled_back_at, started_at, applied_steps_count)
             VALUES ($1, $2, now(), $3, NULL, NULL, $4, 1)`,
            [randomUUID(), migration.checksum, migration.name, startedAt],
          );
          await client.query('COMMIT');
        } catch (error) {
          await client.query('ROLLBACK').catch(() => undefined);
          const message = error instanceof Error ? error.message : String(error);
          // Recorded as rolled back: the transaction guarantees nothing of it remains, so both
          // this runner and `prisma migrate deploy` may retry it once the file is fixed.
          await client
            .query(
              `INSERT INTO "_prisma_migrations"
                 (id, checksum, finished_at, migration_name, logs, rolled_back_at, started_at, applied_steps_count)
               VALUES ($1, $2, NULL, $3, $4, now(), $5, 0)`,
              [randomUUID(), migration.checksum, migration.name, message, startedAt],
            )
            .catch(() => undefined);
          throw new MigrationError(`migration ${migration.name} failed and was rolled back: ${message}`, {
            cause: error,
          });
        }
        applied.push(migration.name);
      }
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [PRISMA_ADVISORY_LOCK_KEY]).catch(() => undefined);
    }
  } finally {
    await client.end();
  }
  return applied;
}
