// The gradients a training step uses in place of tfjs-core's own (process-global).
import { registerBatchNormGradient } from './batch-norm-gradient.ts';
import { registerClipByValueGradient } from './clip-gradient.ts';

/** Registers every replacement gradient. Idempotent; call before the first training step. */
export function registerTrainingGradients(): void {
  registerBatchNormGradient();
  registerClipByValueGradient();
}
