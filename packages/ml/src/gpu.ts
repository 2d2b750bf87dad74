import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * The CUDA libraries @tensorflow/tfjs-node-gpu 4.x loads: libtensorflow 2.9.1 is built against
 * CUDA 11.2 (its runtime library keeps the soname libcudart.so.11.0) and cuDNN 8. Without them
 * it does not fail: it quietly runs on the CPU.
 */
export const TFJS_GPU_LIBRARIES = ['libcudart.so.11.0', 'libcudnn.so.8'] as const;

export class GpuUnavailableError extends Error {
  constructor(message: string) {
    super(`ML_BACKEND=tensorflow-gpu, but ${message}`);
    this.name = 'GpuUnavailableError';
  }
}

/**
 * Checks that a GPU is visible (`nvidia-smi -L` lists one) and that the dynamic linker finds the
 * CUDA libraries tfjs-node-gpu needs (`ldconfig -p`), so a worker asked to train on a GPU fails
 * at start with what is missing instead of training on the CPU without a word. Returns the GPUs.
 */
export async function verifyGpu(): Promise<string[]> {
  let listing: string;
  try {
    listing = (await run('nvidia-smi', ['-L'], { timeout: 10_000 })).stdout;
  } catch (error) {
    const reason = (error as NodeJS.ErrnoException).code === 'ENOENT' ? 'nvidia-smi is not on PATH (no NVIDIA driver in this container?)' : (error as Error).message.split('\n')[0];
    throw new GpuUnavailableError(`no GPU is visible: ${reason}. Run the container with --gpus (NVIDIA Container Toolkit) or pick another ML_BACKEND`);
  }
  const gpus = listing.split('\n').filter((line) => /^GPU \d+:/.test(line.trim()));
  if (gpus.length === 0) throw new GpuUnavailableError('nvidia-smi lists no GPU (check CUDA_VISIBLE_DEVICES)');

  let linked = '';
  try {
    linked = (await run('ldconfig', ['-p'], { timeout: 10_000 })).stdout;
  } catch {
    // No ldconfig (a minimal image): nothing to check against; tfjs-node-gpu reports at load.
    return gpus;
  }
  const missing = TFJS_GPU_LIBRARIES.filter((lib) => !linked.includes(lib));
  if (missing.length > 0) {
    throw new GpuUnavailableError(
      `the dynamic linker cannot find ${missing.join(', ')}: tfjs-node-gpu (libtensorflow 2.9.1) needs CUDA 11.2 and cuDNN 8 (Dockerfile.gpu installs them)`,
    );
  }
  return gpus;
}
