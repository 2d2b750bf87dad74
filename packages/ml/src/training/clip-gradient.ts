// ReLU6's gradient in one kernel, where the backend has it.
//
// Keras' ReLU(max_value=6) (MobileNetV2's activation) is clipByValue(x, 0, 6) in tfjs-layers, and
// tfjs-core differentiates that as where(x ≥ min ∧ x ≤ max, dy, 0): five kernels and four
// activation-sized temporaries per layer, about a quarter of a full MobileNetV2 step on wasm. The
// wasm backend gets a single-pass kernel for it (CLIP_BY_VALUE_GRAD, wasm-heap-kernels.ts) with the
// same values; backends without one keep tfjs' own gradient.
import { tf } from '../backend.ts';
import { CLIP_BY_VALUE_GRAD } from '../wasm-heap-kernels.ts';
import { replaceGradient } from './replace-gradient.ts';

const REPLACED = Symbol.for('finetune.clipByValueGradient');

/** Registers the gradient above for ClipByValue (process-global, every backend). Idempotent. */
export function registerClipByValueGradient(): void {
  replaceGradient('ClipByValue', REPLACED, (original) => ({
    inputsToSave: ['x'],
    gradFunc: (dy, saved, attrs) => {
      if (tf.getKernel(CLIP_BY_VALUE_GRAD, tf.getBackend()) == null) return original.gradFunc(dy, saved, attrs);
      const [x] = saved as tf.Tensor[];
      return { x: () => tf.engine().runKernel(CLIP_BY_VALUE_GRAD, { dy: dy as tf.Tensor, x: x! }, attrs) as tf.Tensor };
    },
  }));
}
