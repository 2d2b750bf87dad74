// The PyTorch side of bench/run.ts: whether torch + torchvision import, a long-lived embedding
// process (bench/torch_embed.py) that runs one timed pass per request, and the fine-tuning step
// of bench/finetune_step.py.
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
// Debian's python3-torch installs into the system interpreter, which a pyenv shim may hide.
export const PYTHON = process.env.PYTHON ?? (existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3');

let available: boolean | undefined;
export function torchAvailable(): boolean {
  available ??= spawnSync(PYTHON, ['-c', 'import torch, torchvision'], { stdio: 'ignore' }).status === 0;
  return available;
}

export const TORCH_MISSING = 'PyTorch not installed';

export class TorchEmbedder {
  private constructor(
    private readonly child: ChildProcessWithoutNullStreams,
    private readonly lines: Interface,
    readonly info: string,
  ) {}

  /** Writes the images (NHWC float32, as the service decodes them) for the Python side and waits for its warm-up. */
  static async start(images: readonly Float32Array[], size: number, file: string, batch = 16): Promise<TorchEmbedder> {
    const all = new Float32Array(images.length * size * size * 3);
    images.forEach((img, i) => all.set(img, i * size * size * 3));
    await writeFile(file, new Uint8Array(all.buffer));
    return TorchEmbedder.open(file, images.length, size, batch);
  }

  /** Embeds `count` images already written to `file` (NHWC float32), `batch` at a time, on 2 threads. */
  static async open(file: string, count: number, size: number, batch = 16): Promise<TorchEmbedder> {
    const args = ['--input', file, '--count', String(count), '--size', String(size), '--batch', String(batch), '--threads', '2'];
    const child = spawn(PYTHON, [path.join(HERE, 'torch_embed.py'), ...args]);
    child.stderr.on('data', (d: Buffer) => process.stderr.write(`[torch] ${d.toString()}`));
    const lines = createInterface({ input: child.stdout });
    const ready = await nextLine(lines, child);
    if (!ready.startsWith('READY ')) throw new Error(`torch_embed.py: unexpected ${ready}`);
    return new TorchEmbedder(child, lines, (JSON.parse(ready.slice(6)) as { info: string }).info);
  }

  /** One pass over all images; milliseconds. */
  async pass(): Promise<number> {
    this.child.stdin.write('run\n');
    const line = await nextLine(this.lines, this.child);
    if (!line.startsWith('MS ')) throw new Error(`torch_embed.py: unexpected ${line}`);
    return Number(line.slice(3));
  }

  async close(): Promise<void> {
    this.child.stdin.end();
    if (this.child.exitCode === null) await new Promise((r) => this.child.once('exit', r));
  }
}

function nextLine(lines: Interface, child: ChildProcessWithoutNullStreams): Promise<string> {
  return new Promise((resolve, reject) => {
    const onLine = (line: string) => {
      cleanup();
      resolve(line);
    };
    const onExit = (code: number | null) => {
      cleanup();
      reject(new Error(`torch_embed.py exited (code ${code})`));
    };
    const cleanup = () => {
      lines.off('line', onLine);
      child.off('exit', onExit);
    };
    lines.on('line', onLine);
    child.on('exit', onExit);
  });
}

export interface ProcessResult {
  out: string;
  code: number | null;
}

export function runProcess(cmd: string, args: string[], timeoutMs: number): Promise<ProcessResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) process.stderr.write(`${cmd} ${args.join(' ')} exited ${code}:\n${err.slice(-2000)}\n`);
      resolve({ out, code });
    });
  });
}

/** `RESULT {json}` from a process's output, or null. */
export function resultLine<T>(out: string): T | null {
  const line = out.split('\n').find((l) => l.startsWith('RESULT '));
  return line ? (JSON.parse(line.slice(7)) as T) : null;
}

/**
 * The embedding network of torch_embed.py written as ONNX by PyTorch's exporter (NCHW input
 * `images`, output `embedding`), or null when the export fails.
 */
export async function exportTorchOnnx(file: string, size: number): Promise<string | null> {
  const r = await runProcess(PYTHON, [path.join(HERE, 'torch_embed.py'), '--export-onnx', file, '--size', String(size)], 300_000);
  return r.code === 0 && existsSync(file) ? file : null;
}

/** finetune_step.py, all layers trainable: the median step in ms over `steps` timed steps. */
export async function torchFinetuneStep(batch: number, steps: number): Promise<{ ms: number[]; info: string } | null> {
  const r = await runProcess(PYTHON, [path.join(HERE, 'finetune_step.py'), '--batch', String(batch), '--tops', 'all', '--steps', String(steps), '--threads', '2'], 900_000);
  const parsed = resultLine<{ info: string; results: Record<string, { step_ms: number[] }> }>(r.out);
  return parsed?.results.all ? { ms: parsed.results.all.step_ms, info: parsed.info } : null;
}
