// The one way this package puts code in front of a tfjs wasm kernel: the fast paths
// (wasm-fast-paths.ts), the heap kernels (wasm-heap-kernels.ts) and the failure guard
// (wasm-failures.ts) all wrap kernels through it, in any order and any number of times.
import * as tf from '@tensorflow/tfjs';

type Marked = tf.KernelFunc & Record<symbol, boolean>;

/**
 * Replaces wasm's kernel `name` with `wrapper(original)`. Once per `marker`: a kernel that already
 * carries it is left alone, so registering twice does not wrap twice. The new function keeps the
 * markers of the wrappers beneath it, and the kernel keeps its setupFunc, which binds the native
 * function when the backend initialises. No kernel of that name: nothing happens.
 */
export function wrapWasmKernel(name: string, marker: symbol, wrapper: (original: tf.KernelFunc) => tf.KernelFunc): void {
  const kernel = tf.getKernel(name, 'wasm');
  if (kernel == null || (kernel.kernelFunc as Marked)[marker]) return;
  const kernelFunc = Object.assign(wrapper(kernel.kernelFunc), kernel.kernelFunc, { [marker]: true });
  tf.unregisterKernel(name, 'wasm');
  tf.registerKernel({ ...kernel, kernelFunc });
}
