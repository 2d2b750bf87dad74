import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import type { Command } from 'commander';
import type { Dataset, Page } from '../api-types.ts';
import { contextOf, parseId } from '../context.ts';
import { UsageError } from '../errors.ts';
import { multipartFromFile } from '../multipart.ts';
import { bytes, note, printFields, printJson, printLine, printTable, when } from '../output.ts';
import { addPageOptions, fetchPages, type PageOptions } from '../paging.ts';
import { byteBar, interactive } from '../progress.ts';

export function datasetCommands(program: Command): void {
  const datasets = program.command('datasets').description('upload, list, show and delete datasets (image-folder zips)');

  datasets
    .command('upload')
    .description('upload a zip of <class>/<image> (or train/<class>/…, val/<class>/…)')
    .argument('<zip>', 'the dataset zip')
    .option('--name <name>', 'a name for the dataset (default: none)')
    .action(async (file: string, options: { name?: string }, command: Command) => {
      const ctx = contextOf(command);
      const size = await fileSize(file);
      const bar = byteBar('upload', size);
      if (!interactive() && !ctx.json) note(`uploading ${basename(file)} (${bytes(size)})…`);
      let finished = false;
      const body = multipartFromFile(
        options.name === undefined ? {} : { name: options.name },
        { name: 'file', path: file, size, contentType: 'application/zip' },
        (sent) => {
          bar.update(sent);
          if (sent >= size && !finished) {
            finished = true;
            bar.stop();
            if (!ctx.json) note('uploaded; the server is checking every entry of the zip…');
          }
        },
      );
      let dataset: Dataset;
      try {
        dataset = await ctx.client.json<Dataset>('POST', '/v1/datasets', {
          body: body.body,
          headers: { 'content-type': body.contentType, 'content-length': String(body.length) },
        });
      } finally {
        if (!finished) bar.stop();
      }
      if (ctx.json) return printJson(dataset);
      showDataset(dataset);
    });

  addPageOptions(datasets.command('ls').description('list datasets, newest first')).action(
    async (options: PageOptions, command: Command) => {
      const ctx = contextOf(command);
      const page = await fetchPages<Dataset>(ctx.client, '/v1/datasets', options);
      if (ctx.json) return printJson(page);
      printDatasets(page);
    },
  );

  datasets
    .command('get')
    .description('show one dataset: classes, image counts, skipped files')
    .argument('<id>', 'dataset id', parseId)
    .action(async (id: string, _options: unknown, command: Command) => {
      const ctx = contextOf(command);
      const dataset = await ctx.client.json<Dataset>('GET', `/v1/datasets/${id}`);
      if (ctx.json) return printJson(dataset);
      showDataset(dataset);
    });

  datasets
    .command('rm')
    .description('delete a dataset (refused while an unfinished job needs it; models trained on it remain)')
    .argument('<id>', 'dataset id', parseId)
    .action(async (id: string, _options: unknown, command: Command) => {
      const ctx = contextOf(command);
      await ctx.client.request('DELETE', `/v1/datasets/${id}`);
      if (ctx.json) return printJson({ id, deleted: true });
      printLine(`deleted dataset ${id}`);
    });
}

async function fileSize(path: string): Promise<number> {
  try {
    const info = await stat(path);
    if (!info.isFile()) throw new UsageError(`${path} is not a file`);
    return info.size;
  } catch (error) {
    if (error instanceof UsageError) throw error;
    throw new UsageError(`cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
}

function printDatasets(page: Page<Dataset>): void {
  printTable(page.items, [
    { header: 'ID', value: (d) => d.id },
    { header: 'NAME', value: (d) => d.name },
    { header: 'STATUS', value: (d) => d.status },
    { header: 'CLASSES', value: (d) => d.classes.length, right: true },
    { header: 'IMAGES', value: (d) => d.counts.images, right: true },
    { header: 'SIZE', value: (d) => bytes(d.sizeBytes), right: true },
    { header: 'CREATED', value: (d) => when(d.createdAt) },
  ]);
  if (page.nextCursor) note(`more: --cursor ${page.nextCursor} (or --all)`);
}

function showDataset(d: Dataset): void {
  printFields([
    ['id', d.id],
    ['name', d.name],
    ['status', d.status],
    ['layout', d.layout],
    ['images', d.counts.images],
    ['skipped', d.counts.skipped],
    ['size', bytes(d.sizeBytes)],
    ['sha256', d.sha256],
    ['created', when(d.createdAt)],
  ]);
  printLine();
  const hasVal = Object.values(d.counts.val ?? {}).some((n) => n > 0);
  printTable(d.classes, [
    { header: 'CLASS', value: (c) => c },
    { header: 'TRAIN', value: (c) => d.counts.train[c] ?? 0, right: true },
    ...(hasVal ? [{ header: 'VAL', value: (c: string) => d.counts.val[c] ?? 0, right: true }] : []),
  ]);
  const skipped = d.counts.skippedFiles ?? [];
  if (skipped.length > 0) {
    printLine();
    printTable(skipped, [
      { header: 'SKIPPED FILE', value: (f) => f.path },
      { header: 'REASON', value: (f) => f.reason },
    ]);
  }
}
