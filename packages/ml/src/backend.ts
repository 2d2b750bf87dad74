// Backend choice. The native bindings (@tensorflow/tfjs-node[-gpu]) are optionalDependencies:
// their install downloads libtensorflow, which fails softly where there is no internet, so they
// are imported dynamically and their absence is normal. Every package uses the `tf` exported
// here so that models, tensors and the registered backend belong to one tfjs-core instance.
import * as tf from '@tensorflow/tfjs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { MlBackendChoice } from '@finetune/core';
import { verifyGpu } from './gpu.ts';
import { wasmThreads } from './threads.ts';
import { registerWasmFastPaths } from './wasm-fast-paths.ts';
import { guardWasmFailures } from './wasm-failures.ts';
import { registerWasmGradientKernels } from './wasm-gradients.ts';
import { registerWasmHeapKernels } from './wasm-heap-kernels.ts';
import { registerThreadedWasm } from './wasm-threads.ts';

export { tf };

export type BackendName = 'tensorflow-gpu' | 'tensorflow' | 'wasm' | 'cpu';

const AUTO_ORDER: readonly BackendName[] = ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'];

let active: { choice: MlBackendChoice; name: BackendName } | null = null;
let pending: Promise<BackendName> | null = null;
// The wasm package, once imported (importing it registers the backend: only when wasm is chosen).
let wasmPackage: typeof import('@tensorflow/tfjs-backend-wasm') | null = null;

/**
 * Picks and initialises the tfjs backend once per process. 'auto' tries tensorflow-gpu,
 * tensorflow, wasm, cpu in that order; an explicit choice that cannot load throws.
 * Idempotent: later calls return the backend already in use. A later call with a *different*
 * explicit choice throws rather than silently keeping the first one.
 */
export async function initBackend(choice: MlBackendChoice): Promise<BackendName> {
  if (active) {
    if (choice !== 'auto' && choice !== active.choice && choice !== active.name) {
      throw new Error(`ML backend already initialised as '${active.name}'; cannot switch to '${choice}' in this process`);
    }
    return active.name;
  }
  if (!pending) {
    pending = pick(choice).then(
      (name) => {
        active = { choice, name };
        return name;
      },
      (error: unknown) => {
        pending = null; // allow a retry with another choice
        throw error;
      },
    );
  }
  return pending;
}

/** The threads the wasm backend's XNNPACK pool runs on (1: its single-threaded build), or null on another backend. */
export function wasmBackendThreads(): number | null {
  return active?.name === 'wasm' && wasmPackage ? wasmPackage.getThreadsCount() : null;
}

/** The backend chosen by initBackend, or null before it ran. */
export function activeBackend(): BackendName | null {
  return active?.name ?? null;
}

async function pick(choice: MlBackendChoice): Promise<BackendName> {
  if (choice !== 'auto') {
    await tryBackend(choice); // throws with the reason
    return choice;
  }
  const failures: string[] = [];
  for (const name of AUTO_ORDER) {
    try {
      await tryBackend(name);
      return name;
    } catch (error) {
      failures.push(`${name}: ${(error as Error).message.split('\n')[0]}`);
    }
  }
  throw new Error(`No tfjs backend could be initialised:\n  ${failures.join('\n  ')}`);
}

async function tryBackend(name: BackendName): Promise<void> {
  switch (name) {
    case 'tensorflow-gpu':
    case 'tensorflow': {
      // tfjs-node-gpu without a GPU or CUDA runs on the CPU silently: check first.
      if (name === 'tensorflow-gpu') await verifyGpu();
      const pkg = name === 'tensorflow-gpu' ? '@tensorflow/tfjs-node-gpu' : '@tensorflow/tfjs-node';
      try {
        // A variable specifier keeps TypeScript from resolving a package that is usually absent.
        await import(pkg);
      } catch (error) {
        throw new Error(`ML backend '${name}' unavailable: cannot load ${pkg} (${(error as Error).message.split('\n')[0]})`);
      }
      await setBackendOrThrow('tensorflow', name);
      return;
    }
    case 'wasm': {
      let wasm: typeof import('@tensorflow/tfjs-backend-wasm');
      try {
        wasm = await import('@tensorflow/tfjs-backend-wasm');
      } catch (error) {
        throw new Error(`ML backend 'wasm' unavailable: ${(error as Error).message}`);
      }
      // Point the loader at the installed .wasm files so nothing is fetched from a CDN.
      const require = createRequire(import.meta.url);
      const dist = path.join(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist') + path.sep;
      wasm.setWasmPaths(dist);
      wasmPackage = wasm;
      // More than one thread: the build whose XNNPACK runs on a thread pool (see wasm-threads.ts).
      const threads = wasmThreads();
      if (threads > 1) registerThreadedWasm(wasm, threads, (reason) => process.emitWarning(`tfjs wasm runs on one thread: its threaded build did not load (${reason})`));
      await setBackendOrThrow('wasm', name);
      // wasm lacks the conv gradient kernels that training conv layers needs (see wasm-gradients.ts).
      registerWasmGradientKernels();
      // Faster routes for kernels wasm has but runs slowly in a training step (see wasm-fast-paths.ts).
      registerWasmFastPaths();
      // Memory-bound steps of training straight on the heap, with SIMD loops (see wasm-heap-kernels.ts).
      const backend = tf.backend() as import('@tensorflow/tfjs-backend-wasm').BackendWasm;
      await registerWasmHeapKernels(backend);
      // A full heap fails once and clearly, and a failed heap is not used again (see wasm-failures.ts).
      guardWasmFailures(backend);
      return;
    }
    case 'cpu':
      await setBackendOrThrow('cpu', name);
      return;
    default:
      throw new Error(`Unknown ML backend '${String(name)}'`);
  }
}

async function setBackendOrThrow(tfName: string, name: BackendName): Promise<void> {
  let ok = false;
  try {
    ok = await tf.setBackend(tfName);
  } catch (error) {
    throw new Error(`ML backend '${name}' failed to initialise: ${(error as Error).message}`);
  }
  if (!ok || tf.getBackend() !== tfName) {
    throw new Error(`ML backend '${name}' failed to initialise (tf.setBackend('${tfName}') returned false)`);
  }
  await tf.ready();
}
