// /predict settings side by side: one API process per PREDICT_BATCH_WINDOW_MS value (and, with
// --workers, per PREDICT_WORKERS value), all on the same stack (bench/stack.ts) and the same
// MobileNetV2 model, measured in turns (the order rotates every repetition) so each setting sees
// the same machine state. The `predict` and `latency` rows of bench/run.ts for every setting:
// req/s, p50 and p99 at 8 connections and at 1, how many images the API's forward runs held on
// average (finetune_predict_batch_images), and the latency of GET /v1/jobs/:id (20 requests a
// second, one connection) while the 8 connections predict: what a cheap request waits behind
// predictions.
//
//   node --conditions=development --import tsx bench/predict-batching.ts [--windows 0,2,5] [--connections 8] [--quick]
//   node --conditions=development --import tsx bench/predict-batching.ts --workers 0,1,2 [--windows 0] [--ml-threads 1,2]
//
// Writes bench/results/predict-batching.md, or predict-pool.md with --workers (-quick with --quick).
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { availableParallelism, cpus, loadavg } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { digitPng, mnistFolderZip } from '../test/support/mnist-fixtures.ts';
import { Stack } from './stack.ts';
import { fmt, summarize } from './stats.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const QUICK = argv.includes('--quick');
const option = (name: string, fallback: string) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] ?? fallback : fallback);
const BY_WORKERS = argv.includes('--workers');
const WINDOWS = option('--windows', BY_WORKERS ? '0' : '0,2,5').split(',').map(Number);
if (WINDOWS.some((w) => !Number.isInteger(w) || w < 0 || w > 1000)) throw new Error(`--windows: whole milliseconds 0–1000, got ${option('--windows', '')}`);
// Without --workers every API takes PREDICT_WORKERS from the environment (its default unless set).
const WORKERS: (number | undefined)[] = BY_WORKERS ? option('--workers', '0,1,2').split(',').map(Number) : [undefined];
if (WORKERS.some((n) => n !== undefined && (!Number.isInteger(n) || n < 0 || n > 64))) throw new Error(`--workers: whole numbers 0–64, got ${option('--workers', '')}`);
// ML_THREADS per API (the pool divides it among its workers); unset: every core.
const ML_THREADS: (number | undefined)[] = argv.includes('--ml-threads') ? option('--ml-threads', '').split(',').map(Number) : [undefined];
if (ML_THREADS.some((n) => n !== undefined && (!Number.isInteger(n) || n < 1 || n > 1024))) throw new Error(`--ml-threads: whole numbers 1–1024, got ${option('--ml-threads', '')}`);
const CONNECTIONS = Number(option('--connections', '8'));
const P = QUICK ? { seconds: 5, reps: 2 } : { seconds: 15, reps: 3 };
/** GET /v1/jobs/:id while predictions run: a light, steady probe, not a load of its own. */
const PROBE_RATE = 20;

interface Setting {
  window: number;
  workers: number | undefined;
  mlThreads: number | undefined;
  label: string;
  env: NodeJS.ProcessEnv;
}
const SETTINGS: Setting[] = WINDOWS.flatMap((window) =>
  WORKERS.flatMap((workers) =>
    ML_THREADS.map((mlThreads) => ({
      window,
      workers,
      mlThreads,
      label: `window ${window} ms${workers === undefined ? '' : `, ${workers} workers`}${mlThreads === undefined ? '' : `, ML_THREADS ${mlThreads}`}`,
      env: {
        PREDICT_BATCH_WINDOW_MS: String(window),
        ...(workers === undefined ? {} : { PREDICT_WORKERS: String(workers) }),
        ...(mlThreads === undefined ? {} : { ML_THREADS: String(mlThreads) }),
      },
    })),
  ),
);

function log(message: string) {
  console.log(`[predict-batching ${new Date().toISOString().slice(11, 19)} load ${loadavg()[0]!.toFixed(1)}] ${message}`);
}

async function cannon(opts: autocannon.Options): Promise<autocannon.Result> {
  const result = await autocannon(opts);
  if (result.non2xx > 0 || result.errors > 0) throw new Error(`${opts.url}: ${result.non2xx} non-2xx, ${result.errors} errors`);
  return result;
}

/** finetune_predict_batch_images' count (runs) and sum (images) on one API. */
async function runs(baseUrl: string): Promise<{ runs: number; images: number }> {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  const sample = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  return { runs: sample('finetune_predict_batch_images_count'), images: sample('finetune_predict_batch_images_sum') };
}

interface Measured {
  rate: number[];
  p50: number[];
  p99: number[];
  rateAlone: number[];
  p50Alone: number[];
  p99Alone: number[];
  imagesPerRun: number[];
  probeP50: number[];
  probeP99: number[];
  load: number[];
  /** The API process's resident memory after the runs (its workers' sessions included), MB. */
  rssMb: number[];
}

/** VmRSS of a process, in MB (Linux); NaN elsewhere. */
async function rssMb(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? NaN) / 1024;
}

async function main(): Promise<void> {
  const startedAt = new Date();
  const loadBefore = loadavg();
  log(`${QUICK ? 'quick' : 'full'} run; ${SETTINGS.map((s) => s.label).join('; ')}; ${CONNECTIONS} connections; ${cpus().length} cores`);
  const stack = await Stack.start();
  const measured = new Map<Setting, Measured>(
    SETTINGS.map((s) => [s, { rate: [], p50: [], p99: [], rateAlone: [], p50Alone: [], p99Alone: [], imagesPerRun: [], probeP50: [], probeP99: [], load: [], rssMb: [] }]),
  );
  try {
    // The model bench/run.ts's predict row serves when its job row did not run.
    const datasetId = await stack.uploadDataset(await mnistFolderZip([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 5), 'predict-batching');
    const { job } = await stack.runJob({ datasetId, baseModel: 'mobilenet_v2', strategy: 'feature_extraction', hyperparameters: { epochs: 10, batchSize: 32, seed: 7 } });
    await stack.stopWorker(); // the model is trained: only the APIs share the cores from here
    const body = JSON.stringify({ instances: [{ b64: (await digitPng(3, 900)).toString('base64') }] });
    const apis = new Map<Setting, string>();
    const pids = new Map<Setting, number>();
    for (const s of SETTINGS) {
      const { baseUrl, pid } = await stack.startApi(s.env);
      apis.set(s, baseUrl);
      pids.set(s, pid);
    }
    const opts = (s: Setting) => ({ url: `${apis.get(s)}/v1/models/${job.modelId}/predict`, method: 'POST' as const, headers: { ...stack.headers, 'content-type': 'application/json' }, body });
    const probe = (s: Setting) => ({ url: `${apis.get(s)}/v1/jobs/${job.id}`, headers: stack.headers, connections: 1, overallRate: PROBE_RATE });
    // Warm-up: each API loads the model and opens its ONNX Runtime session (in its workers too).
    for (const s of SETTINGS) await cannon({ ...opts(s), connections: Math.max(1, s.workers ?? 1), amount: 20 });

    for (let rep = 0; rep < P.reps; rep++) {
      const order = SETTINGS.map((_, i) => SETTINGS[(i + rep) % SETTINGS.length]!);
      for (const s of order) {
        const m = measured.get(s)!;
        m.load.push(loadavg()[0]!);
        const before = await runs(apis.get(s)!);
        const [r, p] = await Promise.all([cannon({ ...opts(s), connections: CONNECTIONS, duration: P.seconds }), cannon({ ...probe(s), duration: P.seconds })]);
        const after = await runs(apis.get(s)!);
        const alone = await cannon({ ...opts(s), connections: 1, duration: P.seconds });
        m.rate.push(r.requests.average);
        m.p50.push(r.latency.p50);
        m.p99.push(r.latency.p99);
        m.rateAlone.push(alone.requests.average);
        m.p50Alone.push(alone.latency.p50);
        m.p99Alone.push(alone.latency.p99);
        m.imagesPerRun.push((after.images - before.images) / (after.runs - before.runs));
        m.probeP50.push(p.latency.p50);
        m.probeP99.push(p.latency.p99);
        m.rssMb.push(await rssMb(pids.get(s)!));
        log(
          `${s.label}: ${r.requests.average.toFixed(1)} req/s, p50 ${r.latency.p50} ms, p99 ${r.latency.p99} ms, ${m.imagesPerRun.at(-1)!.toFixed(2)} images/run; ` +
            `GET job meanwhile p50 ${p.latency.p50} ms, p99 ${p.latency.p99} ms; 1 connection ${alone.requests.average.toFixed(1)} req/s, p50 ${alone.latency.p50} ms, p99 ${alone.latency.p99} ms`,
        );
      }
    }
  } finally {
    await stack.close();
  }

  const loadAfter = loadavg();
  const ms = (xs: number[]) => fmt(summarize(xs), ' ms', 0);
  const lines = [
    `# /predict ${BY_WORKERS ? 'inference pool (PREDICT_WORKERS)' : 'micro-batching'}${QUICK ? ' (--quick)' : ''}`,
    '',
    `${startedAt.toISOString()}, ${((Date.now() - startedAt.getTime()) / 60_000).toFixed(1)} min; ${cpus().length} × ${cpus()[0]?.model ?? 'CPU'}; ` +
      `load average (1/5/15 min) ${loadBefore.map((x) => x.toFixed(1)).join(' / ')} at start, ${loadAfter.map((x) => x.toFixed(1)).join(' / ')} at the end. ` +
      `One 28×28 PNG per request (decoded to 224×224), MobileNetV2 \`feature_extraction\` model, ${P.seconds} s autocannon runs, settings in turns; ` +
      `GET /v1/jobs/:id at ${PROBE_RATE} req/s on one connection during the ${CONNECTIONS}-connection runs.`,
    '',
    `| PREDICT_BATCH_WINDOW_MS | PREDICT_WORKERS | ML_THREADS | ${CONNECTIONS} connections: req/s | p50 | p99 | GET job meanwhile: p50 | p99 | images per forward run | 1 connection: req/s | p50 | p99 | API RSS | load (1 min) |`,
    '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|',
    ...SETTINGS.map((s) => {
      const m = measured.get(s)!;
      return (
        `| ${s.window} | ${s.workers ?? 'default'} | ${s.mlThreads ?? `default (${availableParallelism()})`} | ${fmt(summarize(m.rate), '')} | ${ms(m.p50)} | ${ms(m.p99)} | ${ms(m.probeP50)} | ${ms(m.probeP99)} | ` +
        `${fmt(summarize(m.imagesPerRun), '', 2)} | ${fmt(summarize(m.rateAlone), '')} | ${ms(m.p50Alone)} | ${ms(m.p99Alone)} | ${fmt(summarize(m.rssMb), ' MB', 0)} | ${fmt(summarize(m.load), '')} |`
      );
    }),
    '',
  ].join('\n');
  console.log(`\n${lines}`);
  const file = path.join(HERE, 'results', `${BY_WORKERS ? 'predict-pool' : 'predict-batching'}${QUICK ? '-quick' : ''}.md`);
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, lines);
  log(`written to ${path.relative(process.cwd(), file)}`);
}

await main();
// ioredis/pg handles are closed; s3rver and fetch keep-alive sockets may linger.
process.exit(0);
