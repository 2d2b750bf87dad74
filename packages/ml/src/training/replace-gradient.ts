// The one way training puts its own gradient in place of tfjs-core's (clip-gradient.ts,
// batch-norm-gradient.ts): process-global, every backend, once however often it is called.
import { tf } from '../backend.ts';

/**
 * Registers `make(original)` as the gradient of `kernelName`, where `original` is the gradient
 * registered now (tfjs-core's), for the new one to fall back on. Once per `marker`: a gradient
 * that carries it is left alone. No gradient registered for the kernel: nothing happens.
 */
export function replaceGradient(kernelName: string, marker: symbol, make: (original: tf.GradConfig) => Omit<tf.GradConfig, 'kernelName'>): void {
  const original = tf.getGradient(kernelName);
  if (!original || (original as unknown as Record<symbol, boolean>)[marker]) return;
  tf.registerGradient({ ...make(original), kernelName, [marker]: true } as tf.GradConfig);
}
