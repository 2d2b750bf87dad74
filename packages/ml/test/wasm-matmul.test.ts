// The fast path in front of wasm's BatchMatMul for transposed operands (src/wasm-gradients.ts)
// must give bit for bit what wasm's own loop gives. That loop still runs every batched product,
// so the same product computed twice in a batch of 2 is the reference.
import { beforeAll, describe, expect, it } from 'vitest';
import { tf, initBackend } from '../src/index.ts';

beforeAll(async () => {
  await initBackend('wasm');
});

function random(shape: number[], seed: number): tf.Tensor {
  return tf.randomUniform(shape, -3, 3, 'float32', seed);
}

/** op(a)·op(b) through wasm's own loop: as one of two identical products in a batch. */
function throughTheLoop(a: tf.Tensor, b: tf.Tensor, transposeA: boolean, transposeB: boolean): Float32Array {
  return tf.tidy(() => {
    const batched = tf.matMul(tf.stack([a, a]), tf.stack([b, b]), transposeA, transposeB);
    return tf.slice(batched, [0, 0, 0], [1, -1, -1]).dataSync() as Float32Array;
  });
}

function identical(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return false;
  return true;
}

describe('BatchMatMul with a transposed operand on wasm', () => {
  // [m, k, n]: a dense head's backward pass (1,280-d embeddings, 10 classes, batches of 32 and 8),
  // a hidden layer's, tiny and odd sizes, the loop's block (48) and past it (left to the loop).
  const shapes: Array<[number, number, number]> = [
    [1280, 32, 10],
    [32, 10, 1280],
    [1280, 8, 3],
    [256, 32, 64],
    [1, 1, 1],
    [7, 13, 5],
    [100, 48, 100],
    [64, 49, 20],
    [40, 200, 30],
  ];
  for (const [m, k, n] of shapes) {
    for (const [transposeA, transposeB] of [
      [true, false],
      [false, true],
      [true, true],
    ] as const) {
      it(`[${m}×${k}]·[${k}×${n}], transposeA ${transposeA}, transposeB ${transposeB}: the same bits as wasm's loop`, async () => {
        const a = random(transposeA ? [k, m] : [m, k], m * 7 + k);
        const b = random(transposeB ? [n, k] : [k, n], n * 11 + k);
        try {
          let fast: Float32Array = new Float32Array(0);
          const { kernels } = await tf.profile(() => {
            fast = tf.tidy(() => tf.matMul(a, b, transposeA, transposeB).dataSync() as Float32Array);
          });
          // The fast path ran (its explicit transposes show) up to the loop's block, not past it.
          expect(kernels.some((kernel) => kernel.name === 'Transpose')).toBe(k <= 48);
          expect(fast.length).toBe(m * n);
          expect(identical(fast, throughTheLoop(a, b, transposeA, transposeB))).toBe(true);
        } finally {
          tf.dispose([a, b]);
        }
      });
    }
  }

  it('keeps the shape of 3-D operands with a batch of 1 (as the fused matMul gradient passes them)', () => {
    const x = random([1, 32, 1280], 1);
    const dy = random([1, 32, 10], 2);
    try {
      const grad = tf.matMul(x, dy, true, false);
      expect(grad.shape).toEqual([1, 1280, 10]);
      expect(identical(grad.dataSync() as Float32Array, throughTheLoop(tf.squeeze(x, [0]), tf.squeeze(dy, [0]), true, false))).toBe(true);
      grad.dispose();
    } finally {
      tf.dispose([x, dy]);
    }
  });

  it('leaves no tensor behind', () => {
    const a = random([32, 1280], 3);
    const b = random([32, 10], 4);
    const before = tf.memory().numTensors;
    tf.matMul(a, b, true, false).dispose();
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([a, b]);
  });
});
