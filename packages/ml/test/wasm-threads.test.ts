// The threaded wasm build (src/wasm-threads.ts): WASM_THREADS picks it and its pool size, and a
// training step's gradients agree with the single-threaded build's, and the pool's threads do not
// keep a process alive. Each setting runs in a fresh process (a process loads one backend).
import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';

const run = promisify(execFile);
const indexModule = fileURLToPath(new URL('../src/index.ts', import.meta.url));

interface ChildReport {
  threads: number;
  shared: boolean;
  grads: number[];
}

/** In a fresh process with WASM_THREADS=threads: the pool size, whether the heap is shared, and the gradients of a small conv net. */
async function inChild(threads: string): Promise<ChildReport> {
  const code = `
    const ml = await import(${JSON.stringify(indexModule)});
    const { tf } = ml;
    await ml.initBackend('wasm');
    ml.registerTrainingGradients();
    const wasm = tf.backend().wasm;
    const memory = wasm.wasmMemory ?? wasm.asm.memory;
    const input = tf.input({ shape: [12, 12, 8] });
    let h = tf.layers.conv2d({ filters: 16, kernelSize: 1, useBias: false, kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }) }).apply(input);
    h = tf.layers.batchNormalization().apply(h);
    h = tf.layers.reLU({ maxValue: 6 }).apply(h);
    h = tf.layers.depthwiseConv2d({ kernelSize: 3, strides: 2, padding: 'same', useBias: false, depthwiseInitializer: tf.initializers.glorotUniform({ seed: 2 }) }).apply(h);
    h = tf.layers.globalAveragePooling2d({}).apply(h);
    const out = tf.layers.dense({ units: 3, kernelInitializer: tf.initializers.glorotUniform({ seed: 3 }) }).apply(h);
    const model = tf.model({ inputs: input, outputs: out });
    const x = tf.randomUniform([4, 12, 12, 8], -1, 1, 'float32', 4);
    const vars = model.trainableWeights.map((w) => w.read());
    const { grads } = tf.variableGrads(() => tf.mean(tf.square(model.apply(x, { training: true }))), vars);
    const flat = Object.values(grads).flatMap((g) => Array.from(g.dataSync()));
    console.log('REPORT ' + JSON.stringify({ threads: ml.wasmBackendThreads(), shared: memory.buffer instanceof SharedArrayBuffer, grads: flat }));`;
  // The child must end on its own when its work is done: the pool's threads do not hold it.
  const { stdout } = await run(process.execPath, ['--conditions=development', '--import', 'tsx', '--input-type=module', '-e', code], {
    timeout: 60_000,
    env: { ...process.env, WASM_THREADS: threads },
  });
  const line = stdout.split('\n').find((l) => l.startsWith('REPORT '));
  if (!line) throw new Error(`no report from the child:\n${stdout}`);
  return JSON.parse(line.slice(7)) as ChildReport;
}

describe('the threaded wasm build', () => {
  it('runs on WASM_THREADS threads over a shared heap, 1 being the single-threaded build, with the same gradients', async () => {
    const [one, two, three] = await Promise.all([inChild('1'), inChild('2'), inChild('3')]);
    expect([one.threads, one.shared]).toEqual([1, false]);
    expect([two.threads, two.shared]).toEqual([2, true]);
    expect([three.threads, three.shared]).toEqual([3, true]);
    expect(two.grads.length).toBe(one.grads.length);
    const scale = Math.max(...one.grads.map(Math.abs));
    for (const other of [two, three]) {
      const worst = Math.max(...other.grads.map((g, i) => Math.abs(g - one.grads[i]!)));
      expect(worst / scale).toBeLessThan(1e-5);
    }
  });
});
