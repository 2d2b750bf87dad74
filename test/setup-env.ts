// Runs in every test worker before each test file: points `loadConfig()` at the services that
// test/global-setup.ts started for this run. The run's values win over the caller's environment,
// so a developer's DATABASE_URL can never be the database the tests truncate.
//
// Each test file then gets a database of its own (a copy of the run's migrated one) and a queue
// prefix of its own. A deployment has one database per queue; so does each file. Without this,
// a file's leftover unfinished jobs would be found by another file's worker when it reconciles
// Postgres with its queue, and trained there.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';

const env = inject('testEnv');
for (const [name, value] of Object.entries(env)) process.env[name] = value;
// tfjs wasm loads everywhere (the native bindings need libtensorflow downloads); a developer may still pick another backend explicitly.
process.env.ML_BACKEND ||= 'wasm';

const fileId = randomBytes(4).toString('hex');
const url = new URL(env.DATABASE_URL);
const template = decodeURIComponent(url.pathname.slice(1));
const database = `${template}_f${fileId}`;
url.pathname = '/postgres';
const admin = new pg.Client({ connectionString: url.toString() });
await admin.connect();
try {
  // Names are ours (hex suffixes): quoting is enough.
  await admin.query(`CREATE DATABASE "${database}" TEMPLATE "${template}"`);
} finally {
  await admin.end();
}
url.pathname = `/${database}`;
process.env.DATABASE_URL = url.toString();
process.env.QUEUE_PREFIX = `${env.QUEUE_PREFIX}-${fileId}`;
