import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { Option, type Command } from 'commander';
import type { Dataset, Page } from '../api-types.ts';
import { contextOf, parseId } from '../context.ts';
import { CliError, EXIT, NetworkError, UsageError } from '../errors.ts';
import type { ApiClient } from '../client.ts';
import { multipartFromFile } from '../multipart.ts';
import { bytes, note, printFields, printJson, printLine, printTable, when } from '../output.ts';
import { addPageOptions, fetchPages, type PageOptions } from '../paging.ts';
import { byteBar, interactive } from '../progress.ts';

/** Above this a zip goes straight to object storage (a presigned PUT) rather than through the API. */
export const DIRECT_UPLOAD_THRESHOLD = 64 * 1024 * 1024;

interface DirectUpload {
  uploadId: string;
  url: string;
  method: 'PUT';
  headers: Record<string, string>;
  expiresAt: string;
}

export function datasetCommands(program: Command): void {
  const datasets = program.command('datasets').description('upload, list, show and delete datasets (image-folder zips)');

  datasets
    .command('upload')
    .description('upload a zip of <class>/<image> (or train/<class>/…, val/<class>/…)')
    .argument('<zip>', 'the dataset zip')
    .option('--name <name>', 'a name for the dataset (default: none)')
    .addOption(new Option('--kind <kind>', 'unlabelled: images in no class folders, the target domain of a domain_adaptation job').choices(['labelled', 'unlabelled']))
    .option('--direct', `send the zip straight to object storage through a presigned URL (the default above ${bytes(DIRECT_UPLOAD_THRESHOLD)})`)
    .option('--no-direct', 'send the zip through the API as multipart, whatever its size')
    .action(async (file: string, options: { name?: string; kind?: string; direct?: boolean }, command: Command) => {
      const ctx = contextOf(command);
      const size = await fileSize(file);
      const direct = options.direct ?? size > DIRECT_UPLOAD_THRESHOLD;
      const bar = byteBar('upload', size);
      if (!interactive() && !ctx.json) note(`uploading ${basename(file)} (${bytes(size)})${direct ? ' to object storage' : ''}…`);
      let finished = false;
      const progress = (sent: number) => {
        bar.update(sent);
        if (sent >= size && !finished) {
          finished = true;
          bar.stop();
          if (!ctx.json) note('uploaded; the server is checking every entry of the zip…');
        }
      };
      let dataset: Dataset;
      try {
        if (direct) {
          dataset = await uploadDirect(ctx.client, file, size, { name: options.name, kind: options.kind }, progress);
        } else {
          const body = multipartFromFile(
            { ...(options.name === undefined ? {} : { name: options.name }), ...(options.kind === undefined ? {} : { kind: options.kind }) },
            { name: 'file', path: file, size, contentType: 'application/zip' },
            progress,
          );
          dataset = await ctx.client.json<Dataset>('POST', '/v1/datasets', {
            body: body.body,
            headers: { 'content-type': body.contentType, 'content-length': String(body.length) },
          });
        }
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

/**
 * Create an upload, PUT the file to its presigned URL (object storage, not the API: no API key
 * goes there), then complete it: the API inspects the zip and answers the dataset.
 */
async function uploadDirect(
  client: ApiClient,
  file: string,
  size: number,
  fields: { name: string | undefined; kind: string | undefined },
  onProgress: (sent: number) => void,
): Promise<Dataset> {
  const { name, kind } = fields;
  const upload = await client.json<DirectUpload>('POST', '/v1/datasets/uploads', {
    json: { filename: basename(file), size, ...(name === undefined ? {} : { name }), ...(kind === undefined ? {} : { kind }) },
  });
  async function* body(): AsyncGenerator<Uint8Array> {
    let sent = 0;
    for await (const chunk of createReadStream(file, { highWaterMark: 256 * 1024 }) as AsyncIterable<Buffer>) {
      yield chunk;
      sent += chunk.length;
      onProgress(sent);
    }
  }
  // The signed headers carry the exact Content-Length, so the body streams with it (no chunking).
  const init: RequestInit & { duplex: 'half' } = { method: upload.method, headers: upload.headers, body: body() as unknown as RequestInit['body'], duplex: 'half' };
  let response: Response;
  try {
    response = await fetch(upload.url, init);
  } catch (error) {
    throw new NetworkError(new URL(upload.url).origin, error);
  }
  if (!response.ok) {
    // S3 answers XML: <Error><Code>…</Code><Message>…</Message></Error>.
    const text = await response.text().catch(() => '');
    const field = (tag: string) => new RegExp(`<${tag}>([^<]*)</${tag}>`).exec(text)?.[1];
    throw new CliError(
      `object storage refused the upload (${response.status}${field('Code') ? ` ${field('Code')}` : ''}): ${field('Message') ?? (text.trim().slice(0, 200) || response.statusText)}`,
      response.status >= 500 ? EXIT.server : EXIT.clientError,
    );
  }
  await response.body?.cancel();
  return client.json<Dataset>('POST', `/v1/datasets/uploads/${upload.uploadId}/complete`);
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
    ['kind', d.kind ?? 'labelled'],
    ['layout', d.layout],
    ['images', d.counts.images],
    ['skipped', d.counts.skipped],
    ['size', bytes(d.sizeBytes)],
    ['sha256', d.sha256],
    ['created', when(d.createdAt)],
  ]);
  const hasVal = Object.values(d.counts.val ?? {}).some((n) => n > 0);
  // An unlabelled dataset has no classes to tabulate.
  if (d.classes.length > 0) {
    printLine();
    printTable(d.classes, [
      { header: 'CLASS', value: (c) => c },
      { header: 'TRAIN', value: (c) => d.counts.train[c] ?? 0, right: true },
      ...(hasVal ? [{ header: 'VAL', value: (c: string) => d.counts.val[c] ?? 0, right: true }] : []),
    ]);
  }
  const skipped = d.counts.skippedFiles ?? [];
  if (skipped.length > 0) {
    printLine();
    printTable(skipped, [
      { header: 'SKIPPED FILE', value: (f) => f.path },
      { header: 'REASON', value: (f) => f.reason },
    ]);
  }
}
