import { describe, expect, it } from 'vitest';
import { tf } from '../../src/index.ts';
import { replaceGradient } from '../../src/training/replace-gradient.ts';

// The replacements training registers (ReLU6's, BatchNorm's) go through replaceGradient; here it
// replaces Square's gradient with one that counts its calls and defers to tfjs-core's.
describe('replaceGradient', () => {
  it("puts a gradient in place of tfjs-core's once, however often it is called, and hands it the original", async () => {
    await tf.setBackend('cpu');
    const marker = Symbol('test.squareGradient');
    let calls = 0;
    const replace = () =>
      replaceGradient('Square', marker, (original) => ({
        inputsToSave: original.inputsToSave,
        gradFunc: (dy, saved, attrs) => {
          calls++;
          return original.gradFunc(dy, saved, attrs);
        },
      }));
    replace();
    replace(); // a second wrapper would count every call twice
    const x = tf.tensor([3, -2]);
    const g = tf.grad((t: tf.Tensor) => tf.square(t))(x);
    expect(Array.from(g.dataSync())).toEqual([6, -4]);
    expect(calls).toBe(1);
    tf.dispose([x, g]);
  });

  it('does nothing for a kernel without a gradient', () => {
    let made = false;
    replaceGradient('NoSuchKernel', Symbol('test.none'), () => {
      made = true;
      return { gradFunc: () => ({}) };
    });
    expect(made).toBe(false);
    expect(tf.getGradient('NoSuchKernel')).toBeUndefined();
  });
});
