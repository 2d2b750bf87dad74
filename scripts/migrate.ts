// `npm run db:migrate`: applies prisma/migrations to DATABASE_URL (creating the database if it
// is missing). Any failure exits non-zero: CI must never go green on a failed migration.
import { applyMigrations, ensureDatabase, redact } from '../packages/db/src/migrate.ts';

const databaseUrl = process.env.DATABASE_URL;
if (!databaseUrl) {
  console.error('db:migrate: DATABASE_URL is not set');
  process.exit(2);
}

if (await ensureDatabase(databaseUrl)) console.log(`db:migrate: created database ${redact(databaseUrl)}`);
const applied = await applyMigrations(databaseUrl);
console.log(
  applied.length === 0
    ? 'db:migrate: database is up to date'
    : `db:migrate: applied ${applied.length} migration(s): ${applied.join(', ')}`,
);
