// One fine-tuning step of MobileNetV2 (224×224, nsfwjs weights) + a 10-class dense head, SGD,
// with the top N base layers trainable: wasm (the service's backend set-up: packages/ml's gradient
// kernels, fast paths and heap kernels, its threaded build when WASM_THREADS > 1; and the
// gradients its training steps register), cpu, and PyTorch CPU
// (bench/finetune_step.py) side by side. Every measurement runs in its own process (a process
// loads one backend, and a wasm error leaves a process broken).
//
//   node --conditions=development --import tsx bench/finetune-step.ts [--batch 8] [--tops 10,20,all] [--steps 3]
//        [--cpu-tops 10|none] [--cpu-timeout 300] [--no-torch] [--profile]
//
// BatchNorm runs in inference mode (moving statistics) on both sides, the usual choice when
// fine-tuning on small datasets; BN gamma/beta in the trainable layers still get gradients.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type * as tf from '@tensorflow/tfjs';

interface StepResult {
  backend: string;
  top: string;
  batch: number;
  trainableTensors: number;
  firstStepMs: number;
  stepMs: number[];
  profile?: Array<{ name: string; ms: number; calls: number }>;
}

const argv = process.argv.slice(2);
function flag(name: string, fallback: string): string {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : fallback;
}
const has = (name: string) => argv.includes(`--${name}`);

const here = path.dirname(fileURLToPath(import.meta.url));
// Debian's python3-torch installs into the system interpreter, which a pyenv shim may hide.
const PYTHON = process.env.PYTHON ?? (existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3');

if (has('child')) {
  const result = await runChild(flag('backend', 'wasm'), flag('top', '10'), Number(flag('batch', '8')), Number(flag('steps', '3')), has('profile'));
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
  process.exit(0);
} else {
  await runParent();
}

async function runChild(backend: string, top: string, batch: number, steps: number, profile: boolean): Promise<StepResult> {
  const { tf, initBackend, loadBaseModel, registerTrainingGradients } = await import('../packages/ml/src/index.ts');
  await initBackend(backend as 'wasm' | 'cpu');
  registerTrainingGradients(); // the gradients the service's training steps use
  const base = (await loadBaseModel('mobilenet_v2')).model;
  const layers = base.layers;
  const nTop = top === 'all' ? layers.length : Number(top);
  for (const layer of layers.slice(layers.length - nTop)) layer.trainable = true;
  const head = tf.layers.dense({ units: 10, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: 7 }) });
  head.build([null, 1280]);
  const vars = [...layers.slice(layers.length - nTop).flatMap((l) => l.trainableWeights), ...head.trainableWeights].map(
    (w) => (w as unknown as { read(): tf.Variable }).read(),
  );
  const optimizer = tf.train.sgd(0.01);
  const x = tf.randomUniform([batch, 224, 224, 3], 0, 1, 'float32', 1);
  const y = tf.oneHot(tf.tensor1d(Array.from({ length: batch }, (_, i) => i % 10), 'int32'), 10);
  const step = () => {
    const loss = optimizer.minimize(
      () => {
        const emb = base.apply(x, { training: false }) as tf.Tensor;
        const probs = head.apply(emb) as tf.Tensor;
        return tf.losses.softmaxCrossEntropy(y, tf.log(tf.clipByValue(probs, 1e-7, 1)));
      },
      true,
      vars,
    );
    loss?.dataSync();
    loss?.dispose();
  };
  let t = performance.now();
  step(); // first step: XNNPACK operator set-up, weight packing
  const firstStepMs = performance.now() - t;
  const stepMs: number[] = [];
  for (let i = 0; i < steps; i++) {
    t = performance.now();
    step();
    stepMs.push(performance.now() - t);
  }
  const result: StepResult = { backend, top, batch, trainableTensors: vars.length, firstStepMs, stepMs };
  if (profile) {
    const info = await tf.profile(() => step());
    const byName = new Map<string, { ms: number; calls: number }>();
    for (const k of info.kernels) {
      const e = byName.get(k.name) ?? { ms: 0, calls: 0 };
      e.ms += typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
      e.calls++;
      byName.set(k.name, e);
    }
    result.profile = [...byName].map(([name, e]) => ({ name, ...e })).sort((a, b) => b.ms - a.ms).slice(0, 15);
  }
  return result;
}

function runProcess(cmd: string, args: string[], timeoutMs: number): Promise<{ out: string; timedOut: boolean; code: number | null }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0 && !timedOut) process.stderr.write(`${cmd} ${args.join(' ')} exited ${code}:\n${err.slice(-2000)}\n`);
      resolve({ out, timedOut, code });
    });
  });
}

async function tfStep(backend: string, top: string, batch: number, steps: number, timeoutMs: number): Promise<StepResult | 'timeout' | 'failed'> {
  const args = ['--conditions=development', '--import', 'tsx', fileURLToPath(import.meta.url), '--child', '--backend', backend, '--top', top, '--batch', String(batch), '--steps', String(steps)];
  if (has('profile')) args.push('--profile');
  const r = await runProcess(process.execPath, args, timeoutMs);
  if (r.timedOut) return 'timeout';
  const line = r.out.split('\n').find((l) => l.startsWith('RESULT '));
  if (line) console.log(`${backend} top ${top}: ${line.slice(7)}`); // raw figures, as they arrive
  return line ? (JSON.parse(line.slice(7)) as StepResult) : 'failed';
}

function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
}
function fmt(ms: number): string {
  return `${(ms / 1000).toFixed(2)} s`;
}

async function runParent(): Promise<void> {
  const batch = Number(flag('batch', '8'));
  const tops = flag('tops', '10,20,all').split(',');
  const steps = Number(flag('steps', '3'));
  const cpuTops = flag('cpu-tops', '10') === 'none' ? [] : flag('cpu-tops', '10').split(',');
  const cpuTimeoutMs = Number(flag('cpu-timeout', '300')) * 1000;

  let torch: Record<string, { step_ms: number[]; first_step_ms: number }> | null = null;
  let torchInfo = '';
  if (!has('no-torch')) {
    const r = await runProcess(PYTHON, [path.join(here, 'finetune_step.py'), '--batch', String(batch), '--tops', tops.join(','), '--steps', String(steps)], 600_000);
    const line = r.out.split('\n').find((l) => l.startsWith('RESULT '));
    if (line) {
      const parsed = JSON.parse(line.slice(7)) as { info: string; results: Record<string, { step_ms: number[]; first_step_ms: number }> };
      torch = parsed.results;
      torchInfo = parsed.info;
    } else {
      torchInfo = 'PyTorch run failed (see stderr)';
    }
  }

  const rows: string[][] = [];
  for (const top of tops) {
    const wasm = await tfStep('wasm', top, batch, steps, 600_000);
    const cpu = cpuTops.includes(top) ? await tfStep('cpu', top, batch, 1, cpuTimeoutMs) : null;
    const pt = torch?.[top];
    const wasmMs = typeof wasm === 'object' ? median(wasm.stepMs) : NaN;
    const ptMs = pt ? median(pt.step_ms) : NaN;
    rows.push([
      top,
      typeof wasm === 'object' ? `${fmt(wasmMs)} (first ${fmt(wasm.firstStepMs)})` : wasm,
      cpu === null ? 'skipped' : typeof cpu === 'object' ? fmt(median(cpu.stepMs)) : cpu === 'timeout' ? `> ${cpuTimeoutMs / 1000} s (timeout)` : cpu,
      pt ? fmt(ptMs) : 'n/a',
      Number.isFinite(wasmMs / ptMs) ? `${(wasmMs / ptMs).toFixed(1)}×` : 'n/a',
      Number.isFinite(wasmMs / ptMs) ? (wasmMs / ptMs <= 5 ? 'yes' : 'NO') : 'n/a',
    ]);
    if (typeof wasm === 'object' && wasm.profile) {
      console.log(`wasm top ${top} kernel profile (ms, calls):`);
      for (const p of wasm.profile) console.log(`  ${p.name.padEnd(40)} ${p.ms.toFixed(0).padStart(7)} ${String(p.calls).padStart(5)}`);
    }
  }
  console.log(`\nMobileNetV2 224, batch ${batch}, SGD, one step (median of ${steps}; cpu: one step)`);
  if (torchInfo) console.log(`PyTorch: ${torchInfo}`);
  const header = ['trainable', 'wasm', 'cpu', 'PyTorch CPU', 'wasm / PyTorch', '≤ 5×'];
  for (const r of rows) r[0] = r[0] === 'all' ? 'all layers' : `top ${r[0]}`;
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  console.log(line(header));
  console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
  for (const r of rows) console.log(line(r));
}
