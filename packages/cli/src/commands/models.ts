import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import type { Command } from 'commander';
import { baseModelName, type Model } from '../api-types.ts';
import { contextOf, parseId } from '../context.ts';
import { CliError, EXIT, NetworkError } from '../errors.ts';
import { bytes, fixed, note, percent, printFields, printJson, printLine, printTable, when } from '../output.ts';
import { addPageOptions, fetchPages, type PageOptions } from '../paging.ts';
import { byteBar } from '../progress.ts';

export function modelCommands(program: Command): void {
  const models = program.command('models').description('list, show and download trained models');

  addPageOptions(models.command('ls').description('list models, newest first'))
    .option('--job <id>', 'only the model of this job', parseId)
    .option('--dataset <id>', 'only models trained on this dataset', parseId)
    .action(async (options: PageOptions & { job?: string; dataset?: string }, command: Command) => {
      const ctx = contextOf(command);
      const page = await fetchPages<Model>(ctx.client, '/v1/models', options, { jobId: options.job, datasetId: options.dataset });
      if (ctx.json) return printJson(page);
      printTable(page.items, [
        { header: 'ID', value: (m) => m.id },
        { header: 'JOB', value: (m) => m.jobId },
        { header: 'BASE', value: (m) => baseModelName(m.baseModel) },
        { header: 'STRATEGY', value: (m) => m.strategy },
        { header: 'LABELS', value: (m) => String(m.labels.length) },
        { header: 'CREATED', value: (m) => when(m.createdAt) },
      ]);
      if (page.nextCursor) note(`more: --cursor ${page.nextCursor} (or --all)`);
    });

  models
    .command('get')
    .description('show one model: labels, input, metrics, evaluation')
    .argument('<id>', 'model id', parseId)
    .action(async (id: string, _options: unknown, command: Command) => {
      const ctx = contextOf(command);
      const model = await ctx.client.json<Model>('GET', `/v1/models/${id}`);
      if (ctx.json) return printJson(model);
      const metrics = (model.metrics ?? {}) as Record<string, number | null | undefined>;
      printFields([
        ['id', model.id],
        ['job', model.jobId],
        ['base', model.baseModel],
        ['strategy', model.strategy],
        ['labels', model.labels.join(', ')],
        ['input', `[N, ${model.inputSize}, ${model.inputSize}, 3], RGB scaled to [0, 1]`],
        ['best epoch', metrics.bestEpoch ?? undefined],
        ['val accuracy', percent(metrics.valAccuracy)],
        ['val loss', fixed(metrics.valLoss)],
        ['eval accuracy', model.evaluation?.accuracy === undefined ? undefined : percent(model.evaluation.accuracy)],
        ['transfer gain', model.transferGain === null ? undefined : `${(model.transferGain * 100).toFixed(1)} pt`],
        ['files', model.files.join(', ')],
        ['created', when(model.createdAt)],
      ]);
    });

  models
    .command('download')
    .description('download the model as a zip: model.json, weights.bin, labels.json, metadata.json (tfjs layers format)')
    .argument('<id>', 'model id', parseId)
    .option('-o, --output <file>', 'where to write the zip (default: model-<id>.zip)')
    .action(async (id: string, options: { output?: string }, command: Command) => {
      const ctx = contextOf(command);
      const output = options.output ?? `model-${id}.zip`;
      const response = await ctx.client.request('GET', `/v1/models/${id}/download`, { headers: { accept: 'application/zip' } });
      if (!response.body) throw new CliError('the server sent no body', EXIT.server);
      const length = Number(response.headers.get('content-length') ?? 0);
      const bar = byteBar('download', length);
      let received = 0;
      const count = new Transform({
        transform(chunk: Buffer, _encoding, done) {
          received += chunk.length;
          if (length > 0) bar.update(received);
          done(null, chunk);
        },
      });
      // Written beside the target and renamed at the end: an interrupted download never
      // leaves a truncated zip under the name asked for.
      const partial = `${output}.part`;
      try {
        await pipeline(Readable.fromWeb(response.body as WebReadableStream<Uint8Array>), count, createWriteStream(partial));
        await rename(partial, output);
      } catch (error) {
        await rm(partial, { force: true });
        if ((error as NodeJS.ErrnoException).syscall) {
          const code = (error as NodeJS.ErrnoException).code;
          // A local file problem (no such directory, no permission) is the caller's to fix.
          if (code !== 'ECONNRESET' && code !== 'EPIPE') throw new CliError(`cannot write ${output}: ${code}`, EXIT.usage);
        }
        throw new NetworkError(ctx.client.baseUrl, error);
      } finally {
        bar.stop();
      }
      if (ctx.json) return printJson({ id, file: output, bytes: received });
      printLine(`saved ${output} (${bytes(received)})`);
    });
}
