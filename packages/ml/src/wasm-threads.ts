// The multithreaded build of tfjs-backend-wasm, under Node.
//
// tfjs-backend-wasm 4.22 ships three builds: plain, SIMD, and SIMD + pthreads (XNNPACK's
// convolutions and matrix products on a thread pool). Under Node it always picks SIMD, one thread:
// its WASM_HAS_MULTITHREAD_SUPPORT flag is false there, because its loader hands emscripten Blob
// URLs (for the pthread worker script and for the module's own source), which Node's
// worker_threads cannot load. The emscripten glue itself runs pthreads on worker_threads. This
// module loads the threaded build with file paths instead and registers it as the 'wasm' backend,
// so every kernel registered for 'wasm' (tfjs's own and wasm-gradients.ts's) runs on it unchanged.
// Measured on a 2-core machine: a 1024² matmul 88 → 46 ms with 2 threads. WASM_THREADS picks it
// (threads.ts says why it is not the default).
//
// Two facts of the build this relies on (tfjs-backend-wasm 4.22, src/cc/backend.cc):
// - The pool size is capped at emscripten_num_logical_cores() / 2 (it assumes two hyperthreads
//   per core), read when the module starts, so a 2-core machine would get one thread. The import
//   is answered with twice the threads wanted.
// - emscripten starts 8 pthread workers up front (PTHREAD_POOL_SIZE); at most 8 threads are used.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import type * as TfjsWasm from '@tensorflow/tfjs-backend-wasm';
import * as tf from '@tensorflow/tfjs';

// The package is passed in, not imported here: importing it registers the 'wasm' backend, and a
// process that never chose wasm must not have it (tf.memory() would try to start it).
type WasmPackage = Pick<typeof TfjsWasm, 'BackendWasm' | 'setThreadsCount'>;

const require = createRequire(import.meta.url);
const packageRoot = path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json'));
const MODULE_JS = path.join(packageRoot, 'wasm-out', 'tfjs-backend-wasm-threaded-simd.js');
const WORKER_JS = path.join(packageRoot, 'wasm-out', 'tfjs-backend-wasm-threaded-simd.worker.js');
const WASM_BINARY = path.join(packageRoot, 'dist', 'tfjs-backend-wasm-threaded-simd.wasm');

/** The most threads the build's pool can hold (its PTHREAD_POOL_SIZE). */
export const MAX_WASM_THREADS = 8;

interface EmscriptenImports {
  env: Record<string, unknown>;
}

type WasmModule = ConstructorParameters<typeof TfjsWasm.BackendWasm>[0];

interface EmscriptenThreads {
  PThread: { runningWorkers: Array<{ unref(): void }> };
}

/**
 * The pthread worker script as a file (worker_threads loads files), in a directory of its own that
 * only this user can enter (code run from a shared, predictable path could be someone else's). The
 * package holds the script as a string for a Blob, with every "\n" inside its string literals
 * turned into a newline; tfjs escapes them back the same way.
 */
function writeWorkerScript(): { file: string; remove(): void } {
  const { wasmWorkerContents } = require(WORKER_JS) as { wasmWorkerContents: string };
  const dir = mkdtempSync(path.join(os.tmpdir(), 'finetune-wasm-threads-'));
  const file = path.join(dir, 'pthread-worker.cjs');
  writeFileSync(file, wasmWorkerContents.replace(/\n/g, '\\n'));
  return { file, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Runs `start` with worker_threads' Worker starting workers without this process's Node options.
 * emscripten makes its pthread workers with that class (it keeps the class it finds when the module
 * starts), and they run plain JavaScript: inheriting, say, a TypeScript loader (`--import tsx`)
 * cost 0.6 s and 1.2 s of CPU per process here, for 8 workers.
 */
function withPlainWorkers<T>(start: () => T): T {
  const threads = require('node:worker_threads') as typeof import('node:worker_threads');
  const Original = threads.Worker;
  threads.Worker = class PlainWorker extends Original {
    constructor(file: string | URL, options: import('node:worker_threads').WorkerOptions = {}) {
      super(file, { execArgv: [], ...options });
    }
  };
  try {
    return start();
  } finally {
    threads.Worker = Original;
  }
}

async function loadThreadedModule(threads: number): Promise<WasmModule> {
  const factory = require(MODULE_JS) as (config: Record<string, unknown>) => Promise<WasmModule & Record<string, unknown>>;
  const workerScript = writeWorkerScript();
  // The module is ready once every one of the pool's workers has loaded the script, and no thread
  // beyond the pool is ever started (threads ≤ MAX_WASM_THREADS): the file can go then.
  const loading = withPlainWorkers(() => factory({
    locateFile: (file: string, prefix: string) => (file.endsWith('.worker.js') ? workerScript.file : file.endsWith('.wasm') ? WASM_BINARY : prefix + file),
    // Each pthread worker evaluates the module's source from here.
    mainScriptUrlOrBlob: MODULE_JS,
    instantiateWasm(imports: EmscriptenImports, receiveInstance: (instance: WebAssembly.Instance, module: WebAssembly.Module) => void) {
      // backend.cc halves this (see above).
      imports.env['emscripten_num_logical_cores'] = () => 2 * threads;
      // Synchronous, so a failure throws here, where emscripten rejects the module's promise with it.
      const compiled = new WebAssembly.Module(readFileSync(WASM_BINARY));
      const instance = new WebAssembly.Instance(compiled, imports as unknown as WebAssembly.Imports);
      receiveInstance(instance, compiled);
      return instance.exports;
    },
  }));
  let module: Awaited<typeof loading>;
  try {
    module = await loading;
  } finally {
    workerScript.remove();
  }
  // The same bridge tfjs's own loader sets up (backend_wasm.ts, init()).
  const cwrap = module['cwrap'] as (name: string, ret: string | null, args: string[]) => unknown;
  (module as unknown as { tfjs: Record<string, unknown> }).tfjs = {
    init: cwrap('init', null, []),
    initWithThreadsCount: cwrap('init_with_threads_count', null, ['number']),
    getThreadsCount: cwrap('get_threads_count', 'number', []),
    registerTensor: cwrap('register_tensor', null, ['number', 'number', 'number']),
    disposeData: cwrap('dispose_data', null, ['number']),
    dispose: cwrap('dispose', null, []),
  };
  return module;
}

/**
 * Replaces the 'wasm' backend's factory with one that loads the threaded build of `wasm` (the
 * imported package) on `threads` threads (at most MAX_WASM_THREADS); where that build will not
 * load, tfjs's own loader (one thread) runs instead and `onFallback` hears why. Call before
 * tf.setBackend('wasm').
 */
export function registerThreadedWasm(wasm: WasmPackage, threads: number, onFallback: (reason: string) => void = () => {}): void {
  const n = Math.min(Math.max(1, Math.floor(threads)), MAX_WASM_THREADS);
  const original = tf.findBackendFactory('wasm');
  tf.removeBackend('wasm');
  tf.registerBackend(
    'wasm',
    async () => {
      try {
        wasm.setThreadsCount(n);
        const module = await loadThreadedModule(n);
        const backend = new wasm.BackendWasm(module); // starts the pool's threads
        // emscripten keeps a running pthread's worker referenced (a C program's threads keep it
        // alive); here the pool only serves the process, which must still exit when its work ends.
        for (const worker of (module as unknown as EmscriptenThreads).PThread.runningWorkers) worker.unref();
        return backend;
      } catch (error) {
        if (!original) throw error;
        onFallback((error as Error).message);
        wasm.setThreadsCount(1);
        return original();
      }
    },
    2,
  );
}
