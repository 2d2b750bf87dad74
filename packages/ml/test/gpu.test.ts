// A GPU worker that cannot use its GPU must say so at start: tfjs-node-gpu would otherwise train
// on the CPU without a word. No GPU here: nvidia-smi is played by a script on PATH (the one part
// that cannot run on this machine); the dynamic linker's view is this machine's real one.
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { initBackend } from '../src/backend.ts';
import { verifyGpu } from '../src/gpu.ts';

let dir: string;
const originalPath = process.env.PATH;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'finetune-gpu-'));
});
afterEach(async () => {
  process.env.PATH = originalPath;
  await rm(dir, { recursive: true, force: true });
});

async function fakeNvidiaSmi(output: string) {
  const script = join(dir, 'nvidia-smi');
  await writeFile(script, `#!/bin/sh\nprintf '%s\\n' "${output}"\n`);
  await chmod(script, 0o755);
  // ldconfig lives in sbin.
  process.env.PATH = `${dir}:/usr/sbin:/sbin:/usr/bin:/bin`;
}

describe('verifyGpu', () => {
  it('fails when no driver is there (no nvidia-smi)', async () => {
    process.env.PATH = dir;
    await expect(verifyGpu()).rejects.toThrow(/tensorflow-gpu, but no GPU is visible: nvidia-smi is not on PATH/);
  });

  it('fails when the driver lists no GPU', async () => {
    await fakeNvidiaSmi('No devices were found');
    await expect(verifyGpu()).rejects.toThrow(/lists no GPU/);
  });

  it("names the CUDA libraries the linker cannot find (this machine has CUDA 13, not tfjs-node-gpu's 11.2)", async () => {
    await fakeNvidiaSmi('GPU 0: NVIDIA Test (UUID: GPU-0000)');
    await expect(verifyGpu()).rejects.toThrow(/cannot find libcudart\.so\.11\.0, libcudnn\.so\.8/);
  });

  it('stops ML_BACKEND=tensorflow-gpu before loading tfjs-node-gpu', async () => {
    process.env.PATH = dir;
    await expect(initBackend('tensorflow-gpu')).rejects.toThrow(/no GPU is visible/);
  });
});
