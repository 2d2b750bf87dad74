import { describe, it, expect } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { initBackend, activeBackend, tf } from '../src/backend.ts';

const run = promisify(execFile);
const backendModule = fileURLToPath(new URL('../src/backend.ts', import.meta.url));

/** initBackend in a fresh process (a process can only pick its backend once). */
async function inChild(choice: string): Promise<string> {
  const code = `import(${JSON.stringify(backendModule)}).then((m) => m.initBackend(${JSON.stringify(choice)}))
    .then((name) => console.log('OK ' + name), (e) => console.log('ERR ' + e.message.split('\\n')[0]))`;
  const { stdout } = await run(process.execPath, ['--conditions=development', '--import', 'tsx', '-e', code], { timeout: 60_000 });
  return stdout.trim();
}

describe('initBackend', () => {
  it('initialises wasm, is idempotent, and refuses to switch', async () => {
    expect(activeBackend()).toBeNull();
    const [a, b] = await Promise.all([initBackend('wasm'), initBackend('wasm')]);
    expect(a).toBe('wasm');
    expect(b).toBe('wasm');
    expect(tf.getBackend()).toBe('wasm');
    expect(await initBackend('auto')).toBe('wasm');
    await expect(initBackend('cpu')).rejects.toThrow(/already initialised as 'wasm'/);
    const y = tf.tidy(() => tf.tensor1d([1, 2, 3]).square().sum().dataSync()[0]);
    expect(y).toBe(14);
  });

  it("'auto' falls through the absent native bindings to wasm; explicit unavailable choices throw", async () => {
    const [auto, native, gpu, cpu] = await Promise.all([inChild('auto'), inChild('tensorflow'), inChild('tensorflow-gpu'), inChild('cpu')]);
    // On a machine where @tensorflow/tfjs-node installed, 'auto' picks it instead.
    expect(auto).toMatch(/^OK (wasm|tensorflow|tensorflow-gpu)$/);
    if (auto === 'OK wasm') {
      expect(native).toMatch(/^ERR ML backend 'tensorflow' unavailable: cannot load @tensorflow\/tfjs-node/);
      // Without a GPU driver the GPU check refuses first; with one, the absent binding does.
      expect(gpu).toMatch(/^ERR (ML_BACKEND=tensorflow-gpu, but no GPU is visible|ML backend 'tensorflow-gpu' unavailable: cannot load @tensorflow\/tfjs-node-gpu)/);
    }
    expect(cpu).toBe('OK cpu');
  });
});
