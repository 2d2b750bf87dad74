import { readFile } from 'node:fs/promises';
import { basename } from 'node:path';
import type { Command } from 'commander';
import type { Prediction } from '../api-types.ts';
import { contextOf, parseId } from '../context.ts';
import { UsageError } from '../errors.ts';
import { printJson, printTable } from '../output.ts';

/** The API's limit on instances per JSON request; more images are sent in several requests. */
const MAX_INSTANCES = 32;

interface PredictResponse {
  modelId: string;
  predictions: Prediction[];
}

export function predictCommand(program: Command): void {
  program
    .command('predict')
    .description('classify images with a trained model (one image: multipart; several: base64 JSON, 32 per request)')
    .argument('<model>', 'model id', parseId)
    .argument('<images...>', 'image files (JPEG, PNG, WebP, GIF, TIFF, AVIF)')
    .action(async (modelId: string, files: string[], _options: unknown, command: Command) => {
      const ctx = contextOf(command);
      const images = await Promise.all(files.map(readImage));
      const predictions: Prediction[] = [];
      if (images.length === 1) {
        const form = new FormData();
        form.append('file', new Blob([new Uint8Array(images[0]!.data)]), basename(files[0]!));
        predictions.push(...(await ctx.client.json<PredictResponse>('POST', `/v1/models/${modelId}/predict`, { body: form })).predictions);
      } else {
        for (let i = 0; i < images.length; i += MAX_INSTANCES) {
          const instances = images.slice(i, i + MAX_INSTANCES).map((image) => ({ b64: image.data.toString('base64') }));
          const res = await ctx.client.json<PredictResponse>('POST', `/v1/models/${modelId}/predict`, { json: { instances } });
          predictions.push(...res.predictions);
        }
      }
      if (ctx.json) return printJson({ modelId, predictions: predictions.map((p, i) => ({ file: files[i], ...p })) });
      printTable(
        predictions.map((p, i) => ({ file: files[i]!, ...p })),
        [
          { header: 'FILE', value: (p) => p.file },
          { header: 'LABEL', value: (p) => p.label },
          { header: 'SCORE', value: (p) => p.score.toFixed(4), right: true },
          { header: 'TOP', value: (p) => p.top.map((t) => `${t.label} ${t.score.toFixed(3)}`).join(', ') },
        ],
      );
    });
}

async function readImage(path: string): Promise<{ data: Buffer }> {
  try {
    return { data: await readFile(path) };
  } catch (error) {
    throw new UsageError(`cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
}
