// Hand-written WebAssembly SIMD loops that work on the tfjs wasm backend's own heap.
//
// Some memory-bound steps of training have no fast kernel in tfjs-backend-wasm 4.22, and a
// JavaScript loop over the heap runs at ~4 ns per value where 128-bit SIMD runs at ~0.5 (measured
// on an 8 × 112 × 112 × 96 activation: ReLU6's gradient 43 ms in JavaScript, 5.5 ms here). The
// loops are written in the WebAssembly text format below, assembled when the backend starts (wabt,
// ~30 ms), and instantiated against the backend's WebAssembly.Memory, so they read and write
// tensors in place at the byte offsets the backend keeps for them. Both of tfjs' builds are
// covered: the threaded one's memory is shared (and declared so here), the other's is not.
import { createRequire } from 'node:module';

/** The loops, by export name. Addresses are byte offsets into the heap; counts are elements. */
export interface SimdLoops {
  /** out[i] = dy[i] if min ≤ x[i] ≤ max else +0 (NaN x: +0): tfjs' clipByValue gradient, bit for bit. */
  clip_grad(x: number, dy: number, out: number, n: number, min: number, max: number): void;
  /**
   * dst[c][r] = src[r][c] for r < rows4, c < cols4 (multiples of 4) of a row-major [rows, cols]
   * float32 matrix; dst is [cols, rows]. 4 × 4 blocks through SIMD shuffles; the caller does the
   * rows and columns past the last whole block.
   */
  transpose_blocks(src: number, dst: number, rows: number, cols: number, rows4: number, cols4: number): void;
  /**
   * A depthwise convolution's filter gradient (depth multiplier 1, no dilation), added into `dw`:
   * dw[i][j][c] += Σ over b, y, x of in[b][y·sh + i − top][x·sw + j − left][c] · dy[b][y][x][c],
   * taps that fall outside `in` (the padding) counting as zero. `in` is [n, h, w, channels], dy
   * [n, outH, outW, channels], dw [kh, kw, channels]; channels a multiple of 4.
   */
  depthwise_filter_grad(
    input: number, dy: number, dw: number, n: number, h: number, w: number, channels: number,
    outH: number, outW: number, kh: number, kw: number, sh: number, sw: number, top: number, left: number,
  ): void;
}

// i8x16.shuffle lane lists for a 4 × 4 float transpose in two rounds: interleave the low (and
// high) halves of row pairs, then take 64-bit halves of the results.
const LO32 = '0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23'; // a0 b0 a1 b1
const HI32 = '8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31'; // a2 b2 a3 b3
const LO64 = '0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23'; // a.lo b.lo
const HI64 = '8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31'; // a.hi b.hi

function source(sharedMemory: boolean): string {
  // A shared memory must be imported as shared, with a maximum (tfjs' threaded build: 4 GiB).
  const memory = sharedMemory ? '(memory 1 65536 shared)' : '(memory 1)';
  return `(module
  (import "env" "memory" ${memory})

  (func (export "clip_grad") (param $x i32) (param $dy i32) (param $out i32) (param $n i32) (param $min f32) (param $max f32)
    (local $end i32) (local $vend i32) (local $lo v128) (local $hi v128) (local $v v128) (local $s f32)
    (local.set $lo (f32x4.splat (local.get $min)))
    (local.set $hi (f32x4.splat (local.get $max)))
    (local.set $end (i32.add (local.get $out) (i32.shl (local.get $n) (i32.const 2))))
    (local.set $vend (i32.add (local.get $out) (i32.shl (i32.and (local.get $n) (i32.const -4)) (i32.const 2))))
    ;; four at a time: dy AND (x >= min AND x <= max), the comparisons giving all-ones or zero lanes
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $out) (local.get $vend)))
      (local.set $v (v128.load (local.get $x)))
      (v128.store (local.get $out)
        (v128.and (v128.load (local.get $dy))
          (v128.and (f32x4.ge (local.get $v) (local.get $lo)) (f32x4.le (local.get $v) (local.get $hi)))))
      (local.set $x (i32.add (local.get $x) (i32.const 16)))
      (local.set $dy (i32.add (local.get $dy) (i32.const 16)))
      (local.set $out (i32.add (local.get $out) (i32.const 16)))
      (br $next)))
    ;; the last n mod 4
    (block $tail_done (loop $tail
      (br_if $tail_done (i32.ge_u (local.get $out) (local.get $end)))
      (local.set $s (f32.load (local.get $x)))
      (f32.store (local.get $out)
        (select (f32.load (local.get $dy)) (f32.const 0)
          (i32.and (f32.ge (local.get $s) (local.get $min)) (f32.le (local.get $s) (local.get $max)))))
      (local.set $x (i32.add (local.get $x) (i32.const 4)))
      (local.set $dy (i32.add (local.get $dy) (i32.const 4)))
      (local.set $out (i32.add (local.get $out) (i32.const 4)))
      (br $tail))))

  (func (export "transpose_blocks") (param $src i32) (param $dst i32) (param $rows i32) (param $cols i32) (param $rows4 i32) (param $cols4 i32)
    (local $r i32) (local $c i32) (local $rowBytes i32) (local $colBytes i32) (local $in i32) (local $o i32)
    (local $a v128) (local $b v128) (local $cc v128) (local $d v128) (local $t0 v128) (local $t1 v128) (local $t2 v128) (local $t3 v128)
    (local.set $rowBytes (i32.shl (local.get $cols) (i32.const 2)))
    (local.set $colBytes (i32.shl (local.get $rows) (i32.const 2)))
    ;; rows outermost: the source is read in order, four rows at a time
    (block $rows_done (loop $row
      (br_if $rows_done (i32.ge_u (local.get $r) (local.get $rows4)))
      (local.set $c (i32.const 0))
      (block $cols_done (loop $col
        (br_if $cols_done (i32.ge_u (local.get $c) (local.get $cols4)))
        (local.set $in (i32.add (local.get $src) (i32.shl (i32.add (i32.mul (local.get $r) (local.get $cols)) (local.get $c)) (i32.const 2))))
        (local.set $a (v128.load (local.get $in)))
        (local.set $b (v128.load (i32.add (local.get $in) (local.get $rowBytes))))
        (local.set $cc (v128.load (i32.add (local.get $in) (i32.shl (local.get $rowBytes) (i32.const 1)))))
        (local.set $d (v128.load (i32.add (local.get $in) (i32.mul (local.get $rowBytes) (i32.const 3)))))
        (local.set $t0 (i8x16.shuffle ${LO32} (local.get $a) (local.get $b)))
        (local.set $t1 (i8x16.shuffle ${HI32} (local.get $a) (local.get $b)))
        (local.set $t2 (i8x16.shuffle ${LO32} (local.get $cc) (local.get $d)))
        (local.set $t3 (i8x16.shuffle ${HI32} (local.get $cc) (local.get $d)))
        (local.set $o (i32.add (local.get $dst) (i32.shl (i32.add (i32.mul (local.get $c) (local.get $rows)) (local.get $r)) (i32.const 2))))
        (v128.store (local.get $o) (i8x16.shuffle ${LO64} (local.get $t0) (local.get $t2)))
        (v128.store (i32.add (local.get $o) (local.get $colBytes)) (i8x16.shuffle ${HI64} (local.get $t0) (local.get $t2)))
        (v128.store (i32.add (local.get $o) (i32.shl (local.get $colBytes) (i32.const 1))) (i8x16.shuffle ${LO64} (local.get $t1) (local.get $t3)))
        (v128.store (i32.add (local.get $o) (i32.mul (local.get $colBytes) (i32.const 3))) (i8x16.shuffle ${HI64} (local.get $t1) (local.get $t3)))
        (local.set $c (i32.add (local.get $c) (i32.const 4)))
        (br $col)))
      (local.set $r (i32.add (local.get $r) (i32.const 4)))
      (br $row))))
  (func (export "depthwise_filter_grad")
    (param $in i32) (param $dy i32) (param $dw i32) (param $n i32) (param $h i32) (param $w i32) (param $ch i32)
    (param $oh i32) (param $ow i32) (param $kh i32) (param $kw i32) (param $sh i32) (param $sw i32) (param $top i32) (param $left i32)
    (local $b i32) (local $y i32) (local $x i32) (local $i i32) (local $j i32) (local $row i32) (local $col i32)
    (local $rowBytes i32) (local $dyAt i32) (local $inAt i32) (local $acc i32) (local $k i32)
    (local.set $rowBytes (i32.shl (local.get $ch) (i32.const 2)))
    (local.set $dyAt (local.get $dy))
    ;; every output position in order (dy is read once, in order) ...
    (block $b_done (loop $b_next
      (br_if $b_done (i32.ge_u (local.get $b) (local.get $n)))
      (local.set $y (i32.const 0))
      (block $y_done (loop $y_next
        (br_if $y_done (i32.ge_u (local.get $y) (local.get $oh)))
        (local.set $x (i32.const 0))
        (block $x_done (loop $x_next
          (br_if $x_done (i32.ge_u (local.get $x) (local.get $ow)))
          ;; ... times every filter tap whose input position is inside the input
          (local.set $i (i32.const 0))
          (block $i_done (loop $i_next
            (br_if $i_done (i32.ge_u (local.get $i) (local.get $kh)))
            (local.set $row (i32.sub (i32.add (i32.mul (local.get $y) (local.get $sh)) (local.get $i)) (local.get $top)))
            (if (i32.lt_u (local.get $row) (local.get $h)) (then
              (local.set $j (i32.const 0))
              (block $j_done (loop $j_next
                (br_if $j_done (i32.ge_u (local.get $j) (local.get $kw)))
                (local.set $col (i32.sub (i32.add (i32.mul (local.get $x) (local.get $sw)) (local.get $j)) (local.get $left)))
                (if (i32.lt_u (local.get $col) (local.get $w)) (then
                  (local.set $inAt (i32.add (local.get $in)
                    (i32.mul (i32.add (i32.mul (i32.add (i32.mul (local.get $b) (local.get $h)) (local.get $row)) (local.get $w)) (local.get $col)) (local.get $rowBytes))))
                  (local.set $acc (i32.add (local.get $dw) (i32.mul (i32.add (i32.mul (local.get $i) (local.get $kw)) (local.get $j)) (local.get $rowBytes))))
                  (local.set $k (i32.const 0))
                  (block $c_done (loop $c_next
                    (br_if $c_done (i32.ge_u (local.get $k) (local.get $rowBytes)))
                    (v128.store (i32.add (local.get $acc) (local.get $k))
                      (f32x4.add (v128.load (i32.add (local.get $acc) (local.get $k)))
                        (f32x4.mul (v128.load (i32.add (local.get $inAt) (local.get $k))) (v128.load (i32.add (local.get $dyAt) (local.get $k))))))
                    (local.set $k (i32.add (local.get $k) (i32.const 16)))
                    (br $c_next)))))
                (local.set $j (i32.add (local.get $j) (i32.const 1)))
                (br $j_next)))))
            (local.set $i (i32.add (local.get $i) (i32.const 1)))
            (br $i_next)))
          (local.set $dyAt (i32.add (local.get $dyAt) (local.get $rowBytes)))
          (local.set $x (i32.add (local.get $x) (i32.const 1)))
          (br $x_next)))
        (local.set $y (i32.add (local.get $y) (i32.const 1)))
        (br $y_next)))
      (local.set $b (i32.add (local.get $b) (i32.const 1)))
      (br $b_next))))
)`;
}

const require = createRequire(import.meta.url);

/** The part of wabt's API used here. */
interface Wabt {
  parseWat(filename: string, source: string, features: { simd: boolean; threads: boolean }): {
    toBinary(options: object): { buffer: Uint8Array };
    destroy(): void;
  };
}
const assembled = new Map<boolean, Promise<Uint8Array>>();

/** The loops' binary for a shared or an unshared memory, assembled once per process. */
function binary(sharedMemory: boolean): Promise<Uint8Array> {
  let bytes = assembled.get(sharedMemory);
  if (!bytes) {
    bytes = (async () => {
      const wabt = await (require('wabt') as () => Promise<Wabt>)();
      const module = wabt.parseWat('finetune-simd.wat', source(sharedMemory), { simd: true, threads: sharedMemory });
      try {
        return module.toBinary({}).buffer;
      } finally {
        module.destroy();
      }
    })();
    assembled.set(sharedMemory, bytes);
  }
  return bytes;
}

/** The loops, instantiated against `memory` (the backend's heap). */
export async function instantiateSimdLoops(memory: WebAssembly.Memory): Promise<SimdLoops> {
  const sharedMemory = typeof SharedArrayBuffer !== 'undefined' && memory.buffer instanceof SharedArrayBuffer;
  const module = new WebAssembly.Module(new Uint8Array(await binary(sharedMemory)));
  return new WebAssembly.Instance(module, { env: { memory } }).exports as unknown as SimdLoops;
}
