// What the tfjs wasm backend does when its heap is full: fail once, clearly, and never again touch
// a heap that failed.
//
// Met training a full MobileNetV2 step whose batch needs more than the heap's 4 GiB: once the heap
// is full, a small allocation inside tfjs-backend-wasm's C++ (its tensor registry, XNNPACK's
// packed weights) fails, and what follows depends on luck: "Aborted()", "memory access out of
// bounds" or "divide by zero" from a corrupted registry, or — in the threaded build, whose
// allocator takes a lock — a process spinning forever at 100 % CPU, so the job never failed.
// Three guards, around the JavaScript side of the backend:
// - Headroom: a tensor allocation that would leave the heap without HEADROOM_BYTES free for such
//   internal allocations throws Error('Out of memory: …') instead (checked only once the heap has
//   grown to within HEADROOM_BYTES of its maximum; below that, the heap can still grow).
// - tfjs takes _malloc's result as the tensor's address without checking it: a failed allocation
//   (0) throws the same error instead of writing over the bottom of the heap.
// - After the first abort or trap (a WebAssembly.RuntimeError) in any kernel or allocation, the
//   backend is sealed: frees become no-ops (tfjs frees a failed step's tensors, which is where
//   the threaded build hung) and every later kernel or allocation throws an error that repeats the
//   first. Such a process is finished with tfjs; the worker's training child exits after a failed
//   run. Training reports either error as backend_out_of_memory.
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { wrapWasmKernel } from './wasm-kernel-wrap.ts';

/** The emscripten module's allocator and heap, in either of tfjs' builds. */
interface Allocator {
  _malloc(bytes: number): number;
  _free(address: number): void;
  wasmMemory?: WebAssembly.Memory; // threaded build
  asm?: { memory?: WebAssembly.Memory }; // single-threaded build
  HEAPU8: Uint8Array;
}

const GUARDED = Symbol.for('finetune.wasmFailureGuard');

/** Free heap kept for tfjs' and XNNPACK's own allocations (packed weights reach ~15 MiB for MobileNetV2). */
export const HEADROOM_BYTES = 64 * 1024 ** 2;

/** tfjs-backend-wasm 4.22's heap maximum, in both builds (emscripten's getHeapMax(): 4 GiB − 64 KiB). */
const HEAP_MAX_BYTES = 4 * 1024 ** 3 - 64 * 1024;

type Guarded = BackendWasm & { [GUARDED]?: { failure: string | null } };

function sealedError(failure: string, what: string): Error {
  return new Error(`the wasm backend failed earlier (${failure}) and cannot run ${what}; this process must not use it again`);
}

/**
 * Guards `backend` as described above: checked allocations, and a seal after the first abort or
 * trap in any kernel registered for 'wasm' by now (call after every registration). Idempotent.
 */
export function guardWasmFailures(backend: BackendWasm): void {
  const guarded = backend as Guarded;
  if (guarded[GUARDED]) return;
  const state: { failure: string | null } = { failure: null };
  guarded[GUARDED] = state;
  const note = (error: unknown) => {
    if (error instanceof WebAssembly.RuntimeError && state.failure === null) state.failure = error.message;
  };

  const wasm = backend.wasm as unknown as Allocator;
  // emscripten's _malloc and _free start as stubs that replace themselves with the wasm exports on
  // their first call (which would drop a wrapper installed before it): make that call first.
  wasm._free(wasm._malloc(16));
  const malloc = wasm._malloc.bind(wasm);
  const free = wasm._free.bind(wasm);
  const heapBytes = () => (wasm.wasmMemory ?? wasm.asm?.memory)?.buffer.byteLength ?? wasm.HEAPU8.buffer.byteLength;
  const outOfMemory = (bytes: number) => new Error(`Out of memory: the wasm heap cannot hold another ${bytes} bytes`);
  wasm._malloc = (bytes: number) => {
    if (state.failure !== null) throw sealedError(state.failure, 'an allocation');
    const address = malloc(bytes);
    if (address === 0 && bytes > 0) throw outOfMemory(bytes);
    if (heapBytes() + HEADROOM_BYTES > HEAP_MAX_BYTES) {
      // Near the maximum: is there still room for the backend's own allocations?
      const probe = malloc(HEADROOM_BYTES);
      if (probe === 0) {
        free(address);
        throw outOfMemory(bytes);
      }
      free(probe);
    }
    return address;
  };

  const move = backend.move.bind(backend);
  backend.move = (...args: Parameters<BackendWasm['move']>) => {
    if (state.failure !== null) throw sealedError(state.failure, 'a new tensor');
    try {
      return move(...args);
    } catch (error) {
      note(error);
      throw error;
    }
  };
  const disposeData = backend.disposeData.bind(backend);
  backend.disposeData = (dataId: object, force?: boolean) => (state.failure !== null ? true : disposeData(dataId, force));

  // A marker of this guard's own: each backend guarded gets its kernels wrapped with its state.
  const marker = Symbol('finetune.wasmFailureGuard.kernel');
  for (const { kernelName } of tf.getKernelsForBackend('wasm')) {
    wrapWasmKernel(kernelName, marker, (run) =>
      ((args: Parameters<tf.KernelFunc>[0]) => {
        if (state.failure !== null) throw sealedError(state.failure, kernelName);
        try {
          return run(args);
        } catch (error) {
          note(error);
          throw error;
        }
      }) as tf.KernelFunc,
    );
  }
}
