// wrapWasmKernel, through which the fast paths, the heap kernels and the failure guard all wrap
// tfjs wasm kernels: once per marker, the markers of the wrappers beneath kept, the kernel's
// native binding (setupFunc) kept.
import { beforeAll, describe, expect, it } from 'vitest';
import { tf, initBackend } from '../src/index.ts';
import { wrapWasmKernel } from '../src/wasm-kernel-wrap.ts';

beforeAll(async () => {
  await initBackend('wasm');
});

describe('wrapWasmKernel', () => {
  it('wraps once per marker, in any order, and the kernel still computes', () => {
    const calls: string[] = [];
    const counting = (label: string) => (original: tf.KernelFunc) =>
      ((args: Parameters<tf.KernelFunc>[0]) => {
        calls.push(label);
        return original(args);
      }) as tf.KernelFunc;
    const a = Symbol('test.a');
    const b = Symbol('test.b');
    const setupBefore = tf.getKernel('Neg', 'wasm')?.setupFunc;
    wrapWasmKernel('Neg', a, counting('a'));
    wrapWasmKernel('Neg', b, counting('b'));
    wrapWasmKernel('Neg', a, counting('a')); // beneath b, yet still marked: not wrapped again
    wrapWasmKernel('Neg', b, counting('b'));
    expect(tf.getKernel('Neg', 'wasm')?.setupFunc).toBe(setupBefore);

    const x = tf.tensor([1, -2, 3]);
    const y = tf.neg(x);
    expect(Array.from(y.dataSync())).toEqual([-1, 2, -3]);
    expect(calls).toEqual(['b', 'a']);
    tf.dispose([x, y]);
  });

  it('does nothing for a kernel wasm does not have', () => {
    let made = false;
    wrapWasmKernel('NoSuchKernel', Symbol('test.none'), (original) => {
      made = true;
      return original;
    });
    expect(made).toBe(false);
    expect(tf.getKernel('NoSuchKernel', 'wasm')).toBeUndefined();
  });
});
