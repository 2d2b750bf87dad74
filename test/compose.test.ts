// docker-compose.yml and the Dockerfiles cannot be run here (no Docker engine), so they are
// checked two ways: the compose CLI validates the file where one is installed (docker-compose v1
// from apt, or the `docker compose` plugin), and the structure the deployment depends on
// (services, healthchecks, start-up ordering, persistence, matching credentials) is asserted
// everywhere from the file itself.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../packages/core/src/config.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const composeFile = join(root, 'docker-compose.yml');

// ---------------------------------------------------------------------------------------------
// A parser for the YAML subset docker-compose.yml is written in (no YAML library is a dependency
// and none is added for one test): block mappings and sequences, flow sequences of scalars,
// plain / single- / double-quoted scalars, comments. Anything else throws, naming the line.

type Yaml = string | number | boolean | null | Yaml[] | { [key: string]: Yaml };
interface Line {
  indent: number;
  text: string;
  no: number;
}

function stripComment(text: string): string {
  let quote: string | null = null;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quote) {
      if (c === '\\' && quote === '"') i++;
      else if (c === quote) quote = null;
    } else if (c === '"' || c === "'") quote = c;
    else if (c === '#' && (i === 0 || /\s/.test(text[i - 1]!))) return text.slice(0, i);
  }
  return text;
}

function scalar(raw: string, no: number): Yaml {
  const s = raw.trim();
  if (s.startsWith('"')) {
    if (!s.endsWith('"') || s.length < 2) throw new Error(`yaml line ${no}: unterminated string`);
    return JSON.parse(s) as string;
  }
  if (s.startsWith("'")) return s.slice(1, -1).replace(/''/g, "'");
  if (s.startsWith('[')) return flowSequence(s, no);
  if (/^[&*!|>{]/.test(s)) throw new Error(`yaml line ${no}: unsupported syntax "${s}" (extend the test parser)`);
  if (s === '' || s === '~' || s === 'null') return null;
  if (s === 'true' || s === 'false') return s === 'true';
  if (/^-?\d+(\.\d+)?$/.test(s)) return Number(s);
  return s;
}

function flowSequence(s: string, no: number): Yaml[] {
  if (!s.endsWith(']')) throw new Error(`yaml line ${no}: multi-line flow sequences are unsupported`);
  const items: string[] = [];
  let current = '';
  let quote: string | null = null;
  for (let i = 1; i < s.length - 1; i++) {
    const c = s[i]!;
    if (quote) {
      current += c;
      if (c === '\\' && quote === '"') current += s[++i];
      else if (c === quote) quote = null;
    } else if (c === '"' || c === "'") {
      quote = c;
      current += c;
    } else if (c === ',') {
      items.push(current);
      current = '';
    } else current += c;
  }
  if (current.trim()) items.push(current);
  return items.map((item) => scalar(item, no));
}

function parseYaml(text: string): Yaml {
  const lines: Line[] = text
    .split('\n')
    .map((raw, i) => ({ raw: stripComment(raw).replace(/\s+$/, ''), no: i + 1 }))
    .filter((l) => l.raw.trim() !== '')
    .map((l) => {
      if (/^\s*\t/.test(l.raw)) throw new Error(`yaml line ${l.no}: tab indentation`);
      return { indent: l.raw.length - l.raw.trimStart().length, text: l.raw.trim(), no: l.no };
    });
  let pos = 0;

  function block(indent: number): Yaml {
    const first = lines[pos];
    if (!first || first.indent < indent) return null;
    return first.text.startsWith('- ') || first.text === '-' ? sequence(first.indent) : mapping(first.indent);
  }

  function keyValue(text: string, no: number): [string, string] {
    const m = /^("(?:[^"\\]|\\.)*"|'[^']*'|[^:'"]+?)\s*:(?:\s+(.*))?$/.exec(text);
    if (!m) throw new Error(`yaml line ${no}: expected "key: value", got "${text}"`);
    const key = m[1]!.startsWith('"') || m[1]!.startsWith("'") ? String(scalar(m[1]!, no)) : m[1]!;
    return [key, m[2] ?? ''];
  }

  function mapping(indent: number, inline?: { key: string; value: string; no: number }): Yaml {
    const out: { [key: string]: Yaml } = {};
    const add = (key: string, value: string, no: number) => {
      if (key in out) throw new Error(`yaml line ${no}: duplicate key "${key}"`);
      out[key] = value === '' ? block(indent + 1) : scalar(value, no);
    };
    if (inline) add(inline.key, inline.value, inline.no);
    while (pos < lines.length && lines[pos]!.indent === indent && !lines[pos]!.text.startsWith('- ')) {
      const line = lines[pos++]!;
      const [key, value] = keyValue(line.text, line.no);
      add(key, value, line.no);
    }
    if (pos < lines.length && lines[pos]!.indent > indent) {
      throw new Error(`yaml line ${lines[pos]!.no}: unexpected indentation`);
    }
    return out;
  }

  function sequence(indent: number): Yaml[] {
    const out: Yaml[] = [];
    while (pos < lines.length && lines[pos]!.indent === indent && lines[pos]!.text.startsWith('-')) {
      const line = lines[pos++]!;
      const rest = line.text.slice(1).trim();
      if (rest === '') out.push(block(indent + 1));
      else if (/^[^"'[][^:]*:(\s|$)/.test(rest)) {
        // "- key: value" opens a mapping whose further keys are indented to align with `key`.
        const [key, value] = keyValue(rest, line.no);
        const childIndent = indent + (line.text.length - rest.length);
        out.push(mapping(childIndent, { key, value, no: line.no }));
      } else out.push(scalar(rest, line.no));
    }
    return out;
  }

  const result = block(0);
  if (pos !== lines.length) throw new Error(`yaml line ${lines[pos]!.no}: could not parse`);
  return result;
}

// ---------------------------------------------------------------------------------------------

type Service = {
  image?: string;
  build?: { context: string; dockerfile: string };
  command?: string[];
  entrypoint?: string[];
  environment?: Record<string, string | number | boolean>;
  healthcheck?: { test: string[] };
  depends_on?: Record<string, { condition: string }>;
  volumes?: string[];
  profiles?: string[];
  deploy?: { resources: { reservations: { devices: Array<Record<string, unknown>> } } };
};
const compose = parseYaml(readFileSync(composeFile, 'utf8')) as {
  services: Record<string, Service>;
  volumes: Record<string, unknown>;
};
const services = compose.services;
const svc = (name: string): Service => {
  const s = services[name];
  if (!s) throw new Error(`docker-compose.yml has no service "${name}"`);
  return s;
};
const APPS = ['api', 'worker', 'worker-gpu'];

function composeCli(): string[] | undefined {
  for (const cmd of [['docker-compose'], ['docker', 'compose']]) {
    const r = spawnSync(cmd[0]!, [...cmd.slice(1), 'version'], { encoding: 'utf8', timeout: 30_000 });
    if (r.status === 0) return cmd;
  }
  return undefined;
}
const cli = composeCli();

describe('docker-compose.yml', () => {
  it.skipIf(!cli)(`is valid for the compose CLI (${cli?.join(' ') ?? 'none installed: structure checked below'})`, () => {
    for (const extra of [[], ['--profile', 'gpu']]) {
      const r = spawnSync(cli![0]!, [...cli!.slice(1), '-f', composeFile, ...extra, 'config', '-q'], {
        cwd: root,
        encoding: 'utf8',
        timeout: 60_000,
        // Nothing to set first: the credentials come from the one-shot `credentials` service.
        env: Object.fromEntries(Object.entries(process.env).filter(([k]) => k !== 'API_KEY_SECRET' && k !== 'ADMIN_API_KEY')),
      });
      expect(r.stderr, `${cli!.join(' ')} ${extra.join(' ')} config -q`).not.toMatch(/error|invalid/i);
      expect(r.status).toBe(0);
    }
  });

  it('the test parser reads it (sanity: nested lists and quoted commas)', () => {
    expect(parseYaml('a:\n  - x: 1\n    y: "p, q"\n  - [b, "c, d", \'e\']\n')).toEqual({
      a: [{ x: 1, y: 'p, q' }, ['b', 'c, d', 'e']],
    });
    expect(Object.keys(services).sort()).toEqual(
      ['api', 'credentials', 'migrate', 'minio', 'minio-init', 'postgres', 'redis', 'worker', 'worker-gpu'].sort(),
    );
  });

  it('postgres 16 and redis with persistence and healthchecks', () => {
    expect(svc('postgres').image).toMatch(/^postgres:16/);
    expect(svc('postgres').healthcheck?.test.join(' ')).toMatch(/pg_isready/);
    expect(svc('postgres').volumes?.some((v) => v.endsWith(':/var/lib/postgresql/data'))).toBe(true);

    const redis = svc('redis');
    expect(redis.command?.join(' ')).toMatch(/--appendonly yes/);
    expect(redis.command?.join(' ')).toMatch(/--maxmemory-policy noeviction/);
    expect(redis.healthcheck?.test).toEqual(['CMD', 'redis-cli', 'ping']);
    expect(redis.volumes?.some((v) => v.endsWith(':/data'))).toBe(true);
    for (const v of ['postgres-data', 'redis-data', 'minio-data']) expect(compose.volumes).toHaveProperty(v);
  });

  it('minio with a healthcheck and a one-shot bucket creation', () => {
    expect(svc('minio').healthcheck?.test.length).toBeGreaterThan(0);
    const init = svc('minio-init');
    expect(init.image).toMatch(/^minio\/mc/);
    expect(init.depends_on?.minio?.condition).toBe('service_healthy');
    expect(init.entrypoint?.join(' ')).toMatch(/mc mb --ignore-existing/);
    expect(init.environment?.S3_BUCKET).toBe(svc('api').environment?.S3_BUCKET);
  });

  it('a one-shot migrate service running the real `prisma migrate deploy`', () => {
    const migrate = svc('migrate');
    expect(migrate.command?.join(' ')).toMatch(/prisma migrate deploy/);
    expect(migrate.depends_on?.postgres?.condition).toBe('service_healthy');
    expect(migrate.environment?.DATABASE_URL).toBe(svc('api').environment?.DATABASE_URL);
  });

  it('api and workers start only after healthy services, migrations and the bucket', () => {
    for (const name of APPS) {
      const deps = svc(name).depends_on ?? {};
      expect(deps.postgres?.condition, name).toBe('service_healthy');
      expect(deps.redis?.condition, name).toBe('service_healthy');
      expect(deps.minio?.condition, name).toBe('service_healthy');
      expect(deps.migrate?.condition, name).toBe('service_completed_successfully');
      expect(deps['minio-init']?.condition, name).toBe('service_completed_successfully');
    }
    const api = svc('api');
    expect(api.healthcheck?.test.join(' ')).toMatch(/\/healthz/);
    expect(api.healthcheck?.test.join(' ')).toContain(`:${api.environment?.PORT}/`);
    // Every long-running service has a healthcheck; the workers' is their metrics listener's /healthz.
    for (const name of ['postgres', 'redis', 'minio', ...APPS]) expect(svc(name).healthcheck?.test.length, name).toBeGreaterThan(0);
    for (const name of APPS.filter((n) => n !== 'api')) {
      const port = loadConfig(Object.fromEntries(Object.entries(svc(name).environment ?? {}).map(([k, v]) => [k, String(v)]))).metrics.workerPort;
      expect(svc(name).healthcheck?.test.join(' '), name).toContain(`:${port}/healthz`);
    }
  });

  it('the apps\' environment parses with loadConfig and matches the services\' credentials', async () => {
    const pgEnv = svc('postgres').environment!;
    const minioEnv = svc('minio').environment!;
    // The credentials service's command, run for real into a directory standing in for its volume.
    const volume = svc('credentials').volumes![0]!.split(':');
    const dir = await mkdtemp(join(tmpdir(), 'finetune-credentials-'));
    try {
      const command = svc('credentials').command!.map((arg) => (arg === volume[1] ? dir : arg));
      const created = spawnSync(command[0]!, command.slice(1), { cwd: root, encoding: 'utf8', timeout: 60_000 });
      expect(created.status, created.stderr).toBe(0);
      expect(created.stdout).toMatch(/created an admin API key/);
      expect(svc('api').volumes).toContain(`${volume[0]}:${volume[1]}:ro`);
      // Compose interpolation with nothing set: `${X:-}` is empty.
      const interpolate = (v: unknown) => String(v).replace(/\$\{\w+:-([^}]*)\}/g, '$1').replaceAll(volume[1]!, dir);
      for (const name of [...APPS, 'migrate']) {
        const env = Object.fromEntries(Object.entries(svc(name).environment ?? {}).map(([k, v]) => [k, interpolate(v)]));
        const config = loadConfig(env);
        if (name === 'api') {
          expect(config.auth.apiKeySecret).toMatch(/^[0-9a-f]{64}$/);
          expect(config.auth.adminApiKey).toMatch(/^ft_[0-9a-f]{8}_/);
        }
        checkServiceEnv(name, config, pgEnv, minioEnv);
      }
      // A secret file that is not there is a configuration problem, named as such.
      expect(() => loadConfig({ API_KEY_SECRET_FILE: join(dir, 'missing') })).toThrow(/API_KEY_SECRET_FILE: cannot read .*missing \(ENOENT\)/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  /** A service's configuration points at the compose file's own Postgres, Redis and MinIO. */
  function checkServiceEnv(name: string, config: ReturnType<typeof loadConfig>, pgEnv: Record<string, unknown>, minioEnv: Record<string, unknown>) {
    const db = new URL(config.databaseUrl!);
    expect([db.username, db.password, db.hostname, db.pathname], name).toEqual([
      pgEnv.POSTGRES_USER,
      pgEnv.POSTGRES_PASSWORD,
      'postgres',
      `/${pgEnv.POSTGRES_DB}`,
    ]);
    if (name === 'migrate') return;
    expect(new URL(config.redisUrl).hostname).toBe('redis');
    expect(config.s3).toMatchObject({
      endpoint: 'http://minio:9000',
      accessKeyId: minioEnv.MINIO_ROOT_USER,
      secretAccessKey: minioEnv.MINIO_ROOT_PASSWORD,
      forcePathStyle: true,
    });
  }

  it('builds from Dockerfiles that exist; the GPU worker pins CUDA 11.2 + cuDNN 8 and one GPU', () => {
    for (const s of Object.values(services)) {
      if (s.build) expect(existsSync(join(root, s.build.context, s.build.dockerfile)), s.build.dockerfile).toBe(true);
    }
    const cpu = readFileSync(join(root, 'Dockerfile'), 'utf8');
    expect(cpu).toMatch(/^FROM node:20-bookworm-slim/m);
    expect(cpu).toMatch(/npm ci/);

    const gpu = svc('worker-gpu');
    expect(gpu.build?.dockerfile).toBe('Dockerfile.gpu');
    expect(gpu.profiles).toEqual(['gpu']);
    expect(gpu.environment).toMatchObject({ ML_BACKEND: 'tensorflow-gpu', WORKER_CONCURRENCY: '1' });
    expect(gpu.deploy?.resources.reservations.devices[0]).toMatchObject({ driver: 'nvidia', capabilities: ['gpu'] });
    const dockerfileGpu = readFileSync(join(root, 'Dockerfile.gpu'), 'utf8');
    expect(dockerfileGpu).toMatch(/^FROM nvidia\/cuda:11\.2\.2-cudnn8-runtime-ubuntu20\.04$/m);
    for (const v of ['ML_BACKEND=tensorflow-gpu', 'WORKER_CONCURRENCY=1', 'CUDA_CACHE_PATH=', 'CUDA_CACHE_MAXSIZE=', 'CUDA_VISIBLE_DEVICES=']) {
      expect(dockerfileGpu).toContain(v);
    }
  });
});
