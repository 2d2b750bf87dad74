// A full wasm heap fails a training step once and clearly, and a backend that trapped is not used
// again (src/wasm-failures.ts). The step really runs out of memory: MobileNetV2, every layer
// trainable, batch 24 needs more than the heap's 4 GiB.
import { beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { tf, initBackend, loadBaseModel, registerTrainingGradients } from '../src/index.ts';

const run = promisify(execFile);
const indexModule = fileURLToPath(new URL('../src/index.ts', import.meta.url));

beforeAll(async () => {
  await initBackend('wasm');
  registerTrainingGradients();
});

describe('a full wasm heap', () => {
  it('fails the step with "Out of memory" and leaves the heap usable', async () => {
    const base = (await loadBaseModel('mobilenet_v2')).model;
    for (const layer of base.layers) layer.trainable = true;
    const vars = base.layers.flatMap((l) => l.trainableWeights).map((w) => (w as unknown as { read(): tf.Variable }).read());
    const x = tf.randomUniform([24, 224, 224, 3]);
    expect(() => tf.variableGrads(() => tf.mean(base.apply(x, { training: false }) as tf.Tensor) as tf.Scalar, vars)).toThrow(
      /^Out of memory: the wasm heap cannot hold another \d+ bytes$/,
    );
    // (tfjs keeps the tensors a failed forward pass saved for its backward pass: a training process
    // ends its run after such a failure, so nothing is expected back here.)
    x.dispose();
    for (const layer of base.layers) layer.trainable = false;
    // The heap is intact: a small step still runs, with the right answer.
    expect(tf.tidy(() => tf.sum(tf.mul(tf.ones([1000]), 2)).dataSync()[0])).toBe(2000);
  });
});

describe('a full heap in the threaded build', () => {
  it('fails the step the same way instead of spinning on its allocator', async () => {
    const code = `
      const ml = await import(${JSON.stringify(indexModule)});
      const { tf } = ml;
      await ml.initBackend('wasm');
      const base = (await ml.loadBaseModel('mobilenet_v2')).model;
      for (const layer of base.layers) layer.trainable = true;
      const vars = base.layers.flatMap((l) => l.trainableWeights).map((w) => w.read());
      const x = tf.randomUniform([24, 224, 224, 3]);
      let error = null;
      try { tf.variableGrads(() => tf.mean(base.apply(x, { training: false })), vars); } catch (e) { error = e.message; }
      console.log('REPORT ' + JSON.stringify({ threads: ml.wasmBackendThreads(), error }));`;
    const { stdout } = await run(process.execPath, ['--conditions=development', '--import', 'tsx', '--input-type=module', '-e', code], {
      timeout: 120_000,
      env: { ...process.env, WASM_THREADS: '2' },
    });
    const line = stdout.split('\n').find((l) => l.startsWith('REPORT '));
    expect(line, stdout).toBeDefined();
    const report = JSON.parse(line!.slice(7)) as { threads: number; error: string | null };
    expect(report.threads).toBe(2);
    expect(report.error).toMatch(/^Out of memory: the wasm heap cannot hold another \d+ bytes$/);
  });
});

describe('a backend that trapped', () => {
  it('is sealed: later kernels repeat the first failure, frees do nothing, and the process still exits', async () => {
    // In a fresh process, a kernel reads a tensor registered at an address past the heap's end:
    // a real WebAssembly trap inside a wasm kernel.
    const code = `
      const ml = await import(${JSON.stringify(indexModule)});
      const { tf } = ml;
      await ml.initBackend('wasm');
      const backend = tf.backend();
      const good = tf.ones([4]);
      const dataId = {};
      const id = 1e9;
      backend.wasm.tfjs.registerTensor(id, 4, 0xfff00000);
      backend.dataIdMap.set(dataId, { id, memoryOffset: 0xfff00000, shape: [4], dtype: 'float32', refCount: 1 });
      const bad = tf.engine().makeTensorFromDataId(dataId, [4], 'float32');
      const report = {};
      try { tf.neg(bad); } catch (e) { report.first = [e.constructor.name, e.message]; }
      try { tf.add(good, good); } catch (e) { report.later = e.message; }
      try { tf.ones([2]); } catch (e) { report.allocation = e.message; }
      good.dispose();
      report.disposed = true;
      console.log('REPORT ' + JSON.stringify(report));`;
    const { stdout } = await run(process.execPath, ['--conditions=development', '--import', 'tsx', '--input-type=module', '-e', code], { timeout: 60_000 });
    const line = stdout.split('\n').find((l) => l.startsWith('REPORT '));
    expect(line, stdout).toBeDefined();
    const report = JSON.parse(line!.slice(7)) as { first: [string, string]; later: string; allocation: string; disposed: boolean };
    expect(report.first).toEqual(['RuntimeError', 'memory access out of bounds']);
    expect(report.later).toMatch(/^the wasm backend failed earlier \(memory access out of bounds\) and cannot run Add/);
    expect(report.allocation).toMatch(/failed earlier \(memory access out of bounds\)/);
    expect(report.disposed).toBe(true);
  });
});
