import { readFile } from 'node:fs/promises';
import { Option, type Command } from 'commander';
import { baseModelName, type Job, type MetricRow, type Page } from '../api-types.ts';
import { contextOf, parseId, parsePositiveInt, type Context } from '../context.ts';
import { CliError, EXIT, UsageError } from '../errors.ts';
import { duration, fixed, note, percent, printFields, printJson, printLine, printTable, when } from '../output.ts';
import { addPageOptions, fetchPages, type PageOptions } from '../paging.ts';
import { applySet, parseBaseModel, type Spec } from '../spec.ts';
import { watchJob } from '../watch.ts';
import { createWatchView } from '../watch-view.ts';

const STATUSES = ['queued', 'running', 'retrying', 'succeeded', 'failed', 'canceled'];

interface CreateOptions {
  dataset?: string;
  base?: string;
  strategy?: string;
  target?: string;
  targetTest?: string;
  epochs?: number;
  set?: string[];
  spec?: string;
  idempotencyKey?: string;
  watch?: boolean;
}

export function jobCommands(program: Command): void {
  const jobs = program.command('jobs').description('create, follow, list, cancel and delete training jobs');

  jobs
    .command('create')
    .description('start a training job (see the job spec in the README)')
    .addOption(new Option('--dataset <id>', 'the dataset to train on').argParser(parseId))
    .option('--base <model>', 'base model: a zoo id (mobilenet_v2, inception_v3, small_cnn), model:<id> of an earlier job, or base:<id> of a base you added')
    .option('--strategy <name>', 'feature_extraction, fine_tune, progressive_unfreezing, full, scratch, prototype, domain_adaptation')
    .addOption(new Option('--target <id>', 'domain_adaptation: the unlabelled dataset of the target domain (targetDatasetId)').argParser(parseId))
    .addOption(new Option('--target-test <id>', 'domain_adaptation: a labelled target-domain dataset to evaluate on (targetTestDatasetId)').argParser(parseId))
    .addOption(new Option('--epochs <n>', 'hyperparameters.epochs').argParser(parsePositiveInt))
    .option(
      '--set <key=value>',
      'hyperparameters.<key> (repeatable; dotted keys nest, values are JSON when they parse, else text); ' +
        'maxRuntimeSeconds and compareWithScratch set the top-level fields',
      (value: string, previous: string[] | undefined) => [...(previous ?? []), value],
    )
    .option('--spec <file>', 'start from a JSON job spec (- for stdin); the other options override it')
    .option('--idempotency-key <key>', 'retrying with the same key returns the same job instead of a second one')
    .option('--watch', 'follow the job until it ends (exit code 8 if it fails or is canceled)')
    .action(async (options: CreateOptions, command: Command) => {
      const ctx = contextOf(command);
      const spec = await buildSpec(options);
      const job = await ctx.client.json<Job>('POST', '/v1/jobs', {
        json: spec,
        headers: options.idempotencyKey ? { 'idempotency-key': options.idempotencyKey } : {},
      });
      if (!options.watch) {
        if (ctx.json) return printJson(job);
        return showJob(job);
      }
      if (!ctx.json) note(`created job ${job.id}`);
      await watchAndReport(ctx, job.id);
    });

  jobs
    .command('watch')
    .description('follow a job live until it ends (exit code 8 if it fails or is canceled)')
    .argument('<id>', 'job id', parseId)
    .action(async (id: string, _options: unknown, command: Command) => watchAndReport(contextOf(command), id));

  addPageOptions(jobs.command('ls').description('list jobs, newest first'))
    .addOption(new Option('--status <status>', 'only jobs in this state').choices(STATUSES))
    .action(async (options: PageOptions & { status?: string }, command: Command) => {
      const ctx = contextOf(command);
      const page = await fetchPages<Job>(ctx.client, '/v1/jobs', options, { status: options.status });
      if (ctx.json) return printJson(page);
      printTable(page.items, [
        { header: 'ID', value: (j) => j.id },
        { header: 'STATUS', value: (j) => j.status },
        { header: 'BASE', value: (j) => baseModelName(j.baseModel) },
        { header: 'STRATEGY', value: (j) => j.strategy },
        { header: 'EPOCH', value: (j) => `${j.progress.epoch}/${j.progress.epochs}`, right: true },
        { header: 'MODEL', value: (j) => j.modelId },
        { header: 'CREATED', value: (j) => when(j.createdAt) },
      ]);
      if (page.nextCursor) note(`more: --cursor ${page.nextCursor} (or --all)`);
    });

  jobs
    .command('get')
    .description('show one job: status, progress, best and last epoch, model, error')
    .argument('<id>', 'job id', parseId)
    .action(async (id: string, _options: unknown, command: Command) => {
      const ctx = contextOf(command);
      const job = await ctx.client.json<Job>('GET', `/v1/jobs/${id}`);
      if (ctx.json) return printJson(job);
      showJob(job);
    });

  jobs
    .command('metrics')
    .description('one row per epoch: loss, accuracy, learning rate, duration')
    .argument('<id>', 'job id', parseId)
    .action(async (id: string, _options: unknown, command: Command) => {
      const ctx = contextOf(command);
      const metrics = await ctx.client.json<Page<MetricRow>>('GET', `/v1/jobs/${id}/metrics`);
      if (ctx.json) return printJson(metrics);
      printTable(metrics.items, [
        { header: 'EPOCH', value: (m) => m.epoch, right: true },
        { header: 'LOSS', value: (m) => fixed(m.trainLoss), right: true },
        { header: 'ACC', value: (m) => percent(m.trainAccuracy), right: true },
        { header: 'VAL_LOSS', value: (m) => fixed(m.valLoss), right: true },
        { header: 'VAL_ACC', value: (m) => percent(m.valAccuracy), right: true },
        { header: 'LR', value: (m) => (m.learningRate === null ? null : m.learningRate.toPrecision(3)), right: true },
        { header: 'TIME', value: (m) => (m.durationMs === null ? null : duration(m.durationMs / 1000)), right: true },
        { header: 'STAGE', value: (m) => m.stage },
      ], '(no epoch finished yet)');
    });

  jobs
    .command('cancel')
    .description('cancel a job: a queued one never runs, a running one keeps its best epoch so far')
    .argument('<id>', 'job id', parseId)
    .action(async (id: string, _options: unknown, command: Command) => {
      const ctx = contextOf(command);
      const job = await ctx.client.json<Job>('POST', `/v1/jobs/${id}/cancel`);
      if (ctx.json) return printJson(job);
      printLine(job.status === 'canceled' ? `canceled job ${id}` : `cancel requested for job ${id} (${job.status}): it stops after its current batch`);
    });

  jobs
    .command('rm')
    .description('delete a finished job with its metrics, checkpoints and model')
    .argument('<id>', 'job id', parseId)
    .action(async (id: string, _options: unknown, command: Command) => {
      const ctx = contextOf(command);
      await ctx.client.request('DELETE', `/v1/jobs/${id}`);
      if (ctx.json) return printJson({ id, deleted: true });
      printLine(`deleted job ${id}`);
    });
}

async function buildSpec(options: CreateOptions): Promise<Spec> {
  let spec: Spec = {};
  if (options.spec !== undefined) {
    const text = await readSpecFile(options.spec);
    try {
      spec = JSON.parse(text) as Spec;
    } catch (error) {
      throw new UsageError(`--spec ${options.spec}: not JSON (${(error as Error).message})`);
    }
    if (!spec || typeof spec !== 'object' || Array.isArray(spec)) throw new UsageError(`--spec ${options.spec}: not a JSON object`);
  }
  if (options.dataset !== undefined) spec.datasetId = options.dataset;
  if (options.base !== undefined) spec.baseModel = parseBaseModel(options.base);
  if (options.strategy !== undefined) spec.strategy = options.strategy;
  if (options.target !== undefined) spec.targetDatasetId = options.target;
  if (options.targetTest !== undefined) spec.targetTestDatasetId = options.targetTest;
  if (options.epochs !== undefined) spec.hyperparameters = { ...spec.hyperparameters, epochs: options.epochs };
  for (const assignment of options.set ?? []) {
    try {
      applySet(spec, assignment);
    } catch (error) {
      throw new UsageError((error as Error).message);
    }
  }
  if (spec.datasetId === undefined) throw new UsageError('--dataset is required');
  if (spec.baseModel === undefined) throw new UsageError('--base is required');
  return spec;
}

async function readSpecFile(path: string): Promise<string> {
  try {
    if (path !== '-') return await readFile(path, 'utf8');
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  } catch (error) {
    throw new UsageError(`cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
}

async function watchAndReport(ctx: Context, id: string): Promise<void> {
  const view = createWatchView(id);
  let job: Job;
  try {
    job = await watchJob(ctx.client, id, view);
  } finally {
    view.stop();
  }
  if (ctx.json) printJson(job);
  else showJob(job);
  if (job.status !== 'succeeded') {
    const why = job.error ? ` (${job.error.code}: ${job.error.message})` : '';
    throw new CliError(`job ${id} ${job.status}${why}`, EXIT.jobFailed);
  }
}

function showJob(job: Job): void {
  const best = job.metrics?.best;
  const last = job.metrics?.last;
  printFields([
    ['id', job.id],
    ['status', job.status + (job.cancelRequested && job.status === 'running' ? ' (cancel requested)' : '')],
    ['dataset', job.datasetId],
    ['base', baseModelName(job.baseModel)],
    ['strategy', job.strategy],
    ['epoch', `${job.progress.epoch}/${job.progress.epochs} (${job.progress.percent}%)`],
    ['best epoch', best ? `${best.epoch}: val_acc ${percent(best.valAccuracy)}, val_loss ${fixed(best.valLoss)}, acc ${percent(best.trainAccuracy)}` : undefined],
    ['last epoch', last && last.epoch !== best?.epoch ? `${last.epoch}: val_acc ${percent(last.valAccuracy)}, loss ${fixed(last.trainLoss)}` : undefined],
    ['stop reason', job.stopReason ?? undefined],
    ['model', job.modelId],
    ['backend', job.backend ?? undefined],
    ['attempts', job.attempts > 1 || job.runs > 1 ? `${job.attempts} (runs ${job.runs})` : undefined],
    ['error', job.error ? `${job.error.code}: ${job.error.message}` : undefined],
    ['created', when(job.createdAt)],
    ['started', job.startedAt ? when(job.startedAt) : undefined],
    ['finished', job.finishedAt ? when(job.finishedAt) : undefined],
  ]);
}
