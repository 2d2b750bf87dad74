// The committed migrations must build exactly the schema the Prisma client was generated from.
//
// Why this test exists: offline, `prisma migrate deploy` runs with a stub engine and exits 0 having
// done nothing (its engine cannot be downloaded here), so migrations are applied by our own runner (packages/db/src/migrate.ts)
// and nothing else would notice a migration that drifted from prisma/schema.prisma. Here the
// schema file is parsed (a small parser for the subset it uses, cross-checked against the
// generated client so the parser cannot silently miss a field), the expected Postgres shape is
// derived from Prisma's documented type mapping and naming conventions, and compared with what
// the migrated database actually has. A round trip through the generated client then exercises
// every model and column with Prisma's real query compiler.
import { randomBytes, randomUUID } from 'node:crypto';
import { cp, mkdtemp, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PrismaPg } from '@prisma/adapter-pg';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../packages/core/src/config.ts';
import {
  applyMigrations,
  DEFAULT_MIGRATIONS_DIR,
  ensureDatabase,
  readMigrations,
} from '../packages/db/src/migrate.ts';
import { Prisma, PrismaClient } from '../packages/db/src/generated/client.ts';
import * as generatedEnums from '../packages/db/src/generated/enums.ts';

const root = fileURLToPath(new URL('..', import.meta.url));

// ---------------------------------------------------------------------------------------------
// A parser for the prisma/schema.prisma subset this repo uses.

interface SchemaField {
  name: string;
  type: string;
  list: boolean;
  optional: boolean;
  attrs: string;
}
interface SchemaModel {
  name: string;
  table: string;
  fields: SchemaField[];
  blockAttrs: string[];
}
interface ParsedSchema {
  models: Map<string, SchemaModel>;
  enums: Map<string, string[]>;
}

function stripComments(text: string): string {
  // `//` (and `///` doc comments) to end of line, outside string literals.
  return text
    .split('\n')
    .map((line) => {
      let inString = false;
      for (let i = 0; i < line.length; i++) {
        if (line[i] === '"' && line[i - 1] !== '\\') inString = !inString;
        if (!inString && line[i] === '/' && line[i + 1] === '/') return line.slice(0, i);
      }
      return line;
    })
    .join('\n');
}

function parseSchema(text: string): ParsedSchema {
  const models = new Map<string, SchemaModel>();
  const enums = new Map<string, string[]>();
  const source = stripComments(text);
  for (const match of source.matchAll(/^\s*(model|enum|type|view)\s+(\w+)\s*\{([\s\S]*?)^\s*\}/gm)) {
    const [, kind, name, body] = match as unknown as [string, string, string, string];
    const lines = body
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean);
    if (kind === 'enum') {
      enums.set(name, lines.filter((l) => !l.startsWith('@@')).map((l) => l.split(/\s+/)[0]!));
      continue;
    }
    if (kind !== 'model') throw new Error(`schema parser: unsupported block "${kind} ${name}"`);
    const fields: SchemaField[] = [];
    const blockAttrs: string[] = [];
    for (const line of lines) {
      if (line.startsWith('@@')) {
        blockAttrs.push(line);
        continue;
      }
      const m = /^(\w+)\s+(\w+)(\[\])?(\?)?\s*(.*)$/.exec(line);
      if (!m) throw new Error(`schema parser: cannot read field line in ${name}: ${line}`);
      fields.push({ name: m[1]!, type: m[2]!, list: !!m[3], optional: !!m[4], attrs: m[5] ?? '' });
    }
    const map = blockAttrs.map((a) => /^@@map\("([^"]+)"\)/.exec(a)?.[1]).find(Boolean);
    models.set(name, { name, table: map ?? name, fields, blockAttrs });
  }
  return { models, enums };
}

const fieldList = (args: string): string[] =>
  args
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);

interface ExpectedColumn {
  table: string;
  column: string;
  dataType: string; // information_schema data_type, or udt_name for enums/arrays
  nullable: boolean;
  hasDefault: boolean;
  defaultValue?: string;
}
interface ExpectedIndex {
  table: string;
  name: string;
  columns: string[];
  unique: boolean;
  primary: boolean;
}
interface ExpectedForeignKey {
  table: string;
  name: string;
  columns: string[];
  refTable: string;
  refColumns: string[];
  onDelete: string;
  onUpdate: string;
}

const SCALAR_TYPES: Record<string, string> = {
  String: 'text',
  Int: 'integer',
  BigInt: 'bigint',
  Float: 'double precision',
  Boolean: 'boolean',
  DateTime: 'timestamp without time zone',
  Json: 'jsonb',
  Decimal: 'numeric',
  Bytes: 'bytea',
};
const NATIVE_TYPES: Record<string, string> = { Uuid: 'uuid', Text: 'text', Timestamptz: 'timestamp with time zone' };
const REFERENTIAL_ACTIONS: Record<string, string> = {
  Cascade: 'CASCADE',
  SetNull: 'SET NULL',
  Restrict: 'RESTRICT',
  NoAction: 'NO ACTION',
  SetDefault: 'SET DEFAULT',
};

/** Prisma's Postgres mapping and constraint naming conventions, applied to the parsed schema. */
function expectedShape(schema: ParsedSchema) {
  const columns: ExpectedColumn[] = [];
  const indexes: ExpectedIndex[] = [];
  const foreignKeys: ExpectedForeignKey[] = [];
  for (const model of schema.models.values()) {
    const { table } = model;
    for (const f of model.fields) {
      if (schema.models.has(f.type)) {
        const rel = /@relation\(([^)]*)\)/.exec(f.attrs)?.[1];
        const fields = rel && /fields:\s*\[([^\]]*)\]/.exec(rel)?.[1];
        if (!rel || !fields) continue; // the back-relation side holds no column
        const references = /references:\s*\[([^\]]*)\]/.exec(rel)?.[1] ?? '';
        const onDelete = /onDelete:\s*(\w+)/.exec(rel)?.[1] ?? (f.optional ? 'SetNull' : 'Restrict');
        const onUpdate = /onUpdate:\s*(\w+)/.exec(rel)?.[1] ?? 'Cascade';
        const cols = fieldList(fields);
        foreignKeys.push({
          table,
          name: `${table}_${cols.join('_')}_fkey`,
          columns: cols,
          refTable: schema.models.get(f.type)!.table,
          refColumns: fieldList(references),
          onDelete: REFERENTIAL_ACTIONS[onDelete]!,
          onUpdate: REFERENTIAL_ACTIONS[onUpdate]!,
        });
        continue;
      }
      if (/@map\(/.test(f.attrs)) throw new Error('schema parser: field @map is not supported; extend the test');
      const native = /@db\.(\w+)/.exec(f.attrs)?.[1];
      let dataType: string;
      if (schema.enums.has(f.type)) dataType = f.list ? `_${f.type}` : f.type;
      else {
        const base = native ? NATIVE_TYPES[native] : SCALAR_TYPES[f.type];
        if (!base) throw new Error(`schema parser: no mapping for ${f.type} ${native ?? ''}`);
        dataType = f.list ? `_${base === 'text' ? 'text' : base}` : base;
      }
      const def = /@default\(((?:[^()]|\([^()]*\))*)\)/.exec(f.attrs)?.[1];
      columns.push({
        table,
        column: f.name,
        dataType,
        // Prisma creates scalar lists as nullable array columns.
        nullable: f.optional || f.list,
        hasDefault: def !== undefined,
        defaultValue: def,
      });
      if (/@id\b/.test(f.attrs)) indexes.push({ table, name: `${table}_pkey`, columns: [f.name], unique: true, primary: true });
      if (/@unique\b/.test(f.attrs)) indexes.push({ table, name: `${table}_${f.name}_key`, columns: [f.name], unique: true, primary: false });
    }
    for (const attr of model.blockAttrs) {
      const m = /^@@(id|unique|index)\(\[([^\]]*)\]/.exec(attr);
      if (!m) continue;
      if (/name:|map:/.test(attr)) throw new Error(`schema parser: named ${attr} is not supported; extend the test`);
      const cols = fieldList(m[2]!);
      if (m[1] === 'id') indexes.push({ table, name: `${table}_pkey`, columns: cols, unique: true, primary: true });
      if (m[1] === 'unique') indexes.push({ table, name: `${table}_${cols.join('_')}_key`, columns: cols, unique: true, primary: false });
      if (m[1] === 'index') indexes.push({ table, name: `${table}_${cols.join('_')}_idx`, columns: cols, unique: false, primary: false });
    }
  }
  return { columns, indexes, foreignKeys };
}

const byKey = <T>(items: T[], key: (t: T) => string) => [...items].sort((a, b) => key(a).localeCompare(key(b)));

// ---------------------------------------------------------------------------------------------

const config = loadConfig();
const databaseUrl = config.databaseUrl!;
let schemaText: string;
let schema: ParsedSchema;
let db: pg.Client;

beforeAll(async () => {
  schemaText = await readFile(join(root, 'prisma/schema.prisma'), 'utf8');
  schema = parseSchema(schemaText);
  db = new pg.Client({ connectionString: databaseUrl });
  await db.connect();
});
afterAll(async () => {
  await db?.end();
});

describe('schema parser agrees with the generated client', () => {
  it('the client was generated from the current schema.prisma (else: npm run db:generate)', async () => {
    const classTs = await readFile(join(root, 'packages/db/src/generated/internal/class.ts'), 'utf8');
    const inline = /"inlineSchema":\s*("(?:[^"\\]|\\.)*")/.exec(classTs)?.[1];
    expect(inline, 'inlineSchema not found in the generated client').toBeDefined();
    // Whitespace-insensitive: `prisma generate` stores the schema formatted.
    const norm = (s: string) =>
      s
        .split('\n')
        .map((l) => l.trim().replace(/\s+/g, ' '))
        .filter(Boolean)
        .join('\n');
    expect(norm(JSON.parse(inline!) as string)).toBe(norm(schemaText));
  });

  it('models, scalar fields and enums match the client', () => {
    expect([...schema.models.keys()].sort()).toEqual(Object.values(Prisma.ModelName).sort());
    for (const model of schema.models.values()) {
      const fieldEnum = (Prisma as unknown as Record<string, Record<string, string>>)[`${model.name}ScalarFieldEnum`];
      expect(fieldEnum, `${model.name}ScalarFieldEnum`).toBeDefined();
      const scalars = model.fields.filter((f) => !schema.models.has(f.type)).map((f) => f.name);
      expect(scalars.sort(), model.name).toEqual(Object.values(fieldEnum!).sort());
    }
    for (const [name, values] of schema.enums) {
      const generated = (generatedEnums as Record<string, Record<string, string>>)[name];
      expect(Object.values(generated ?? {}), name).toEqual(values);
    }
  });
});

describe('the migrated database matches schema.prisma', () => {
  it('records every committed migration as applied, with its checksum', async () => {
    const local = await readMigrations();
    expect(local.length).toBeGreaterThan(0);
    const { rows } = await db.query(
      `SELECT migration_name, checksum, finished_at, applied_steps_count, rolled_back_at
         FROM "_prisma_migrations" ORDER BY migration_name`,
    );
    expect(rows.map((r) => [r.migration_name, r.checksum])).toEqual(local.map((m) => [m.name, m.checksum]));
    for (const r of rows) {
      expect(r.finished_at).toBeInstanceOf(Date);
      expect(r.rolled_back_at).toBeNull();
      expect(r.applied_steps_count).toBe(1);
    }
  });

  it('enums', async () => {
    const { rows } = await db.query<{ name: string; values: string[] }>(
      `SELECT t.typname AS name, array_agg(e.enumlabel::text ORDER BY e.enumsortorder) AS values
         FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
         JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE n.nspname = current_schema() GROUP BY t.typname ORDER BY t.typname`,
    );
    expect(Object.fromEntries(rows.map((r) => [r.name, r.values]))).toEqual(Object.fromEntries(schema.enums));
  });

  it('tables and columns: types, nullability, defaults', async () => {
    const expected = expectedShape(schema).columns;
    const { rows } = await db.query(
      `SELECT table_name, column_name, data_type, udt_name, is_nullable, column_default, datetime_precision
         FROM information_schema.columns
        WHERE table_schema = current_schema() AND table_name <> '_prisma_migrations'`,
    );
    const actual = rows.map((r) => ({
      table: r.table_name as string,
      column: r.column_name as string,
      dataType: r.data_type === 'USER-DEFINED' || r.data_type === 'ARRAY' ? (r.udt_name as string) : (r.data_type as string),
      nullable: r.is_nullable === 'YES',
      hasDefault: r.column_default !== null,
    }));
    const key = (c: { table: string; column: string }) => `${c.table}.${c.column}`;
    expect(byKey(actual, key)).toEqual(
      byKey(
        expected.map(({ defaultValue: _d, ...c }) => c),
        key,
      ),
    );

    // Defaults: Prisma writes now() as CURRENT_TIMESTAMP, enum values cast to the enum type,
    // string literals as text.
    const pgDefault = (def: string, dataType: string) => {
      if (def === 'now()') return 'CURRENT_TIMESTAMP';
      if (schema.enums.has(dataType)) return `'${def}'::"${dataType}"`;
      if (def.startsWith('"') && def.endsWith('"')) return `'${def.slice(1, -1)}'::text`;
      return def;
    };
    for (const col of expected.filter((c) => c.hasDefault)) {
      const row = rows.find((r) => r.table_name === col.table && r.column_name === col.column)!;
      const want = pgDefault(col.defaultValue!, col.dataType);
      expect(row.column_default, key(col)).toBe(want);
    }
    // DateTime columns keep milliseconds, like Prisma's TIMESTAMP(3).
    for (const r of rows.filter((r) => String(r.data_type).startsWith('timestamp'))) {
      expect(r.datetime_precision, `${r.table_name}.${r.column_name}`).toBe(3);
    }
  });

  it('primary keys, unique constraints and indexes (names, columns, order)', async () => {
    const { rows } = await db.query(
      `SELECT t.relname AS table, i.relname AS name, ix.indisunique AS unique, ix.indisprimary AS primary,
              array_agg(a.attname::text ORDER BY k.ord) AS columns
         FROM pg_index ix
         JOIN pg_class t ON t.oid = ix.indrelid
         JOIN pg_class i ON i.oid = ix.indexrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
         CROSS JOIN LATERAL unnest(ix.indkey) WITH ORDINALITY AS k(attnum, ord)
         JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
        WHERE n.nspname = current_schema() AND t.relname <> '_prisma_migrations'
        GROUP BY t.relname, i.relname, ix.indisunique, ix.indisprimary`,
    );
    const key = (i: ExpectedIndex) => `${i.table}.${i.name}`;
    expect(byKey(rows as ExpectedIndex[], key)).toEqual(byKey(expectedShape(schema).indexes, key));
  });

  it('foreign keys with their referential actions', async () => {
    const { rows } = await db.query(
      `SELECT c.conname AS name, t.relname AS table, rt.relname AS "refTable",
              (SELECT array_agg(a.attname::text ORDER BY k.ord) FROM unnest(c.conkey) WITH ORDINALITY k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum) AS columns,
              (SELECT array_agg(a.attname::text ORDER BY k.ord) FROM unnest(c.confkey) WITH ORDINALITY k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum) AS "refColumns",
              c.confdeltype AS del, c.confupdtype AS upd
         FROM pg_constraint c
         JOIN pg_class t ON t.oid = c.conrelid
         JOIN pg_class rt ON rt.oid = c.confrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
        WHERE c.contype = 'f' AND n.nspname = current_schema()`,
    );
    const action: Record<string, string> = { a: 'NO ACTION', r: 'RESTRICT', c: 'CASCADE', n: 'SET NULL', d: 'SET DEFAULT' };
    const actual = rows.map(({ del, upd, ...r }) => ({ ...r, onDelete: action[del], onUpdate: action[upd] }));
    const key = (f: { table: string; name: string }) => `${f.table}.${f.name}`;
    expect(byKey(actual as ExpectedForeignKey[], key)).toEqual(byKey(expectedShape(schema).foreignKeys, key));
  });
});

describe('round trip through the generated client (Prisma 7 + @prisma/adapter-pg)', () => {
  it('creates and reads one row of every model', async () => {
    const prisma = new PrismaClient({ adapter: new PrismaPg({ connectionString: databaseUrl }) });
    const tenantId = randomUUID();
    const otherTenantId = randomUUID();
    const datasetId = randomUUID();
    const jobId = randomUUID();
    const modelId = randomUUID();
    try {
      await prisma.tenant.create({ data: { id: tenantId, name: 'ants' } });
      await prisma.tenant.create({ data: { id: otherTenantId, name: 'bees' } });
      const apiKey = await prisma.apiKey.create({
        data: { id: randomUUID(), tenantId, prefix: randomBytes(4).toString('hex'), keyHash: 'f'.repeat(64) },
      });
      expect(apiKey).toMatchObject({ role: 'member', name: null, revokedAt: null });
      expect(apiKey.createdAt).toBeInstanceOf(Date);

      const dataset = await prisma.dataset.create({
        data: {
          id: datasetId,
          tenantId,
          name: 'ants and bees',
          storageKey: `datasets/${datasetId}/source.zip`,
          sizeBytes: 5_000_000_000n, // past 2^32: BIGINT, not INTEGER
          sha256: 'a'.repeat(64),
          layout: 'split',
          classes: ['ants', 'bees'],
          counts: { train: { ants: 3, bees: 2 }, val: { ants: 1, bees: 1 }, skipped: 0 },
        },
      });
      expect(dataset.status).toBe('ready');
      expect(dataset.createdAt).toBeInstanceOf(Date);

      const job = await prisma.job.create({
        data: {
          id: jobId,
          tenant: { connect: { id: tenantId } },
          dataset: { connect: { id: datasetId } },
          baseModel: 'mobilenet_v2',
          strategy: 'feature_extraction',
          spec: { hyperparameters: { epochs: 2 } },
          idempotencyKey: `key-${jobId}`,
          epochs: 2,
        },
      });
      expect(job).toMatchObject({ status: 'queued', cancelRequested: false, epoch: 0, attempts: 0, backend: null });

      await prisma.epochMetric.create({
        data: { jobId, epoch: 1, trainLoss: 0.5, trainAcc: 0.75, valLoss: null, valAcc: 0.8, learningRate: 1e-3, durationMs: 1234 },
      });
      await prisma.checkpoint.create({
        data: { jobId, epoch: 1, storagePrefix: `jobs/${jobId}/checkpoints/1/`, sizeBytes: 6_000_000_000n, trainLoss: 0.5, trainAcc: 0.75, valLoss: null, valAcc: 0.8, elapsedMs: 1234 },
      });
      await prisma.model.create({
        data: {
          id: modelId,
          tenantId,
          jobId,
          baseModel: 'mobilenet_v2',
          labels: ['ants', 'bees'],
          inputSize: 224,
          storagePrefix: `models/${modelId}/`,
          metrics: { valAcc: 0.8 },
        },
      });
      await prisma.job.update({ where: { id: jobId }, data: { status: 'succeeded', finishedAt: new Date() } });

      const full = await prisma.job.findUniqueOrThrow({
        where: { id: jobId },
        include: { dataset: true, metrics: true, checkpoints: true, model: true },
      });
      expect(full.dataset?.sizeBytes).toBe(5_000_000_000n);
      expect(full.dataset?.classes).toEqual(['ants', 'bees']);
      expect(full.dataset?.counts).toEqual({ train: { ants: 3, bees: 2 }, val: { ants: 1, bees: 1 }, skipped: 0 });
      expect(full.metrics).toEqual([expect.objectContaining({ epoch: 1, trainAcc: 0.75, valLoss: null, durationMs: 1234 })]);
      expect(full.checkpoints).toEqual([expect.objectContaining({ epoch: 1, sizeBytes: 6_000_000_000n, valLoss: null, elapsedMs: 1234 })]);
      expect(full.updatedAt.getTime()).toBeGreaterThanOrEqual(job.updatedAt.getTime());
      expect(full.model).toMatchObject({ id: modelId, labels: ['ants', 'bees'], metrics: { valAcc: 0.8 } });
      expect(full.status).toBe('succeeded');

      // The idempotency key is unique per tenant (P2002); another tenant may use the same one.
      await expect(
        prisma.job.create({
          data: { id: randomUUID(), tenantId, baseModel: 'x', strategy: 'x', spec: {}, idempotencyKey: `key-${jobId}`, epochs: 1 },
        }),
      ).rejects.toMatchObject({ code: 'P2002' });
      const otherJobId = randomUUID();
      await prisma.job.create({
        data: { id: otherJobId, tenantId: otherTenantId, baseModel: 'x', strategy: 'x', spec: {}, idempotencyKey: `key-${jobId}`, epochs: 1 },
      });
      await prisma.job.delete({ where: { id: otherJobId } });

      // Deleting the dataset keeps the job (SET NULL); deleting the job cascades to the rest.
      await prisma.dataset.delete({ where: { id: datasetId } });
      expect((await prisma.job.findUniqueOrThrow({ where: { id: jobId } })).datasetId).toBeNull();
      await prisma.job.delete({ where: { id: jobId } });
      expect(await prisma.epochMetric.count({ where: { jobId } })).toBe(0);
      expect(await prisma.checkpoint.count({ where: { jobId } })).toBe(0);
      expect(await prisma.model.count({ where: { id: modelId } })).toBe(0);
    } finally {
      await prisma.job.deleteMany({ where: { id: jobId } });
      await prisma.dataset.deleteMany({ where: { id: datasetId } });
      // Deleting a tenant takes its keys with it (CASCADE); its data must go first (RESTRICT).
      await prisma.tenant.deleteMany({ where: { id: { in: [tenantId, otherTenantId] } } });
      expect(await prisma.apiKey.count({ where: { tenantId } })).toBe(0);
      await prisma.$disconnect();
    }
  });
});

describe('applyMigrations', () => {
  // A scratch database and a copy of the migrations, so edits cannot touch the shared ones.
  let scratchUrl: string;
  let dir: string;

  beforeAll(async () => {
    const url = new URL(databaseUrl);
    url.pathname = `/${url.pathname.slice(1)}_m${randomBytes(3).toString('hex')}`;
    scratchUrl = url.toString();
    expect(await ensureDatabase(scratchUrl)).toBe(true);
    expect(await ensureDatabase(scratchUrl)).toBe(false);
    dir = await mkdtemp(join(tmpdir(), 'finetune-migrations-'));
    await cp(DEFAULT_MIGRATIONS_DIR, dir, { recursive: true });
  });
  afterAll(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
    if (!scratchUrl) return;
    const url = new URL(scratchUrl);
    const name = url.pathname.slice(1);
    url.pathname = '/postgres';
    const admin = new pg.Client({ connectionString: url.toString() });
    await admin.connect();
    await admin.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
    await admin.end();
  });

  const rowsOf = async () => {
    const client = new pg.Client({ connectionString: scratchUrl });
    await client.connect();
    try {
      return (
        await client.query(
          'SELECT migration_name, finished_at, rolled_back_at, logs FROM "_prisma_migrations" ORDER BY started_at',
        )
      ).rows;
    } finally {
      await client.end();
    }
  };

  it('applies each migration once, even when two runners race (advisory lock)', async () => {
    const local = await readMigrations(dir);
    const [a, b] = await Promise.all([applyMigrations(scratchUrl, dir), applyMigrations(scratchUrl, dir)]);
    expect([...a, ...b]).toEqual(local.map((m) => m.name));
    expect(await applyMigrations(scratchUrl, dir)).toEqual([]);
    expect(await rowsOf()).toHaveLength(local.length);
  });

  it('rolls back and records a failing migration, then applies it once fixed', async () => {
    const name = '99990101000000_broken';
    await mkdir(join(dir, name));
    await writeFile(join(dir, name, 'migration.sql'), 'CREATE TABLE "half_done" (id int);\nSELECT no_such_function();\n');
    await expect(applyMigrations(scratchUrl, dir)).rejects.toThrow(/99990101000000_broken failed.*no_such_function/);
    const failed = (await rowsOf()).filter((r) => r.migration_name === name);
    expect(failed).toHaveLength(1);
    expect(failed[0]).toMatchObject({ finished_at: null, logs: expect.stringContaining('no_such_function') });
    expect(failed[0]!.rolled_back_at).toBeInstanceOf(Date);

    await writeFile(join(dir, name, 'migration.sql'), 'CREATE TABLE "half_done" (id int);\n');
    expect(await applyMigrations(scratchUrl, dir)).toEqual([name]);
    expect(await applyMigrations(scratchUrl, dir)).toEqual([]);
  });

  it('refuses to run when an applied migration was edited (checksum mismatch)', async () => {
    const [first] = await readMigrations(dir);
    const file = join(dir, first!.name, 'migration.sql');
    await writeFile(file, `${await readFile(file, 'utf8')}\n-- edited after being applied\n`);
    await expect(applyMigrations(scratchUrl, dir)).rejects.toThrow(/checksum mismatch/);
  });

  it('refuses to run past a migration Prisma left unfinished (P3009)', async () => {
    const client = new pg.Client({ connectionString: scratchUrl });
    await client.connect();
    await client.query(
      `INSERT INTO "_prisma_migrations" (id, checksum, migration_name, started_at, applied_steps_count)
       VALUES ($1, $2, 'stuck', now(), 0)`,
      [randomUUID(), '0'.repeat(64)],
    );
    await client.end();
    await expect(applyMigrations(scratchUrl, dir)).rejects.toThrow(
      /stuck started but never finished/,
    );
  });
});

describe('the tenants migration', () => {
  it('gives rows that predate tenants to the default tenant', async () => {
    const url = new URL(databaseUrl);
    url.pathname = `/${url.pathname.slice(1)}_t${randomBytes(3).toString('hex')}`;
    const scratch = url.toString();
    const dir = await mkdtemp(join(tmpdir(), 'finetune-migrations-'));
    try {
      await ensureDatabase(scratch);
      const all = await readMigrations();
      const tenants = all.findIndex((m) => m.name.endsWith('_tenants'));
      expect(tenants).toBeGreaterThan(0);
      // Everything before it, then a dataset, a job and a model, then the rest.
      for (const m of all.slice(0, tenants)) await cp(join(DEFAULT_MIGRATIONS_DIR, m.name), join(dir, m.name), { recursive: true });
      await applyMigrations(scratch, dir);
      const client = new pg.Client({ connectionString: scratch });
      await client.connect();
      try {
        const [d, j, m] = [randomUUID(), randomUUID(), randomUUID()];
        await client.query(
          `INSERT INTO datasets (id, name, "storageKey", "sizeBytes", sha256, layout, classes, counts) VALUES ($1, 'old', 'k', 1, 's', 'flat', '{a,b}', '{}')`,
          [d],
        );
        await client.query(`INSERT INTO jobs (id, "datasetId", "baseModel", strategy, spec, "idempotencyKey", epochs) VALUES ($1, $2, 'x', 'x', '{}', 'k1', 1)`, [j, d]);
        await client.query(`INSERT INTO models (id, "jobId", "baseModel", labels, "inputSize", "storagePrefix", metrics) VALUES ($1, $2, 'x', '{a,b}', 1, 'p', '{}')`, [m, j]);
        for (const mig of all.slice(tenants)) await cp(join(DEFAULT_MIGRATIONS_DIR, mig.name), join(dir, mig.name), { recursive: true });
        expect(await applyMigrations(scratch, dir)).toEqual(all.slice(tenants).map((x) => x.name));
        const owners = await client.query(
          `SELECT (SELECT "tenantId"::text FROM datasets) AS d, (SELECT "tenantId"::text FROM jobs) AS j, (SELECT "tenantId"::text FROM models) AS m,
                  (SELECT name FROM tenants WHERE id = '00000000-0000-4000-8000-000000000000') AS name`,
        );
        expect(owners.rows[0]).toEqual({ d: '00000000-0000-4000-8000-000000000000', j: '00000000-0000-4000-8000-000000000000', m: '00000000-0000-4000-8000-000000000000', name: 'default' });
      } finally {
        await client.end();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
      const admin = new URL(scratch);
      const name = admin.pathname.slice(1);
      admin.pathname = '/postgres';
      const c = new pg.Client({ connectionString: admin.toString() });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
      await c.end();
    }
  });
});
