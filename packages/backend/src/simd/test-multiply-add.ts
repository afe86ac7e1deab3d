/**
 * For the direct SIMD kernels' tests (not part of the package): both forms of their multiply-add,
 * `f32x4.mul` then `f32x4.add` and relaxed SIMD's `relaxed_madd`, so that every test runs with each.
 */
import v8 from 'node:v8';
import { afterAll, beforeAll } from 'vitest';
import { setFusedMultiplyAdd, simdKernels } from './instance.js';

/**
 * Relaxed SIMD (the fused multiply-add) is on by default from Node 22; on Node 20 its V8 flag turns it
 * on for this test process, so both forms of the kernels are tested on every Node. Returns whether
 * this engine now has it.
 */
export function enableRelaxedSimd(): boolean {
  const previous = setFusedMultiplyAdd(true);
  try {
    if (simdKernels()?.fused === true) return true;
    v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
    setFusedMultiplyAdd(true);
    return simdKernels()?.fused === true;
  } finally {
    setFusedMultiplyAdd(previous);
  }
}

/** The multiply-add forms to run the tests with: the separate one always, the fused one where the engine has it. */
export function multiplyAddModes(relaxedSimd: boolean): Array<{ mode: string; fused: boolean }> {
  return [{ mode: 'f32x4.mul then f32x4.add', fused: false }, ...(relaxedSimd ? [{ mode: 'relaxed_madd', fused: true }] : [])];
}

/** In a `describe`: its tests run with the kernels of this multiply-add form; 'auto' again after. */
export function withMultiplyAdd(fused: boolean): void {
  beforeAll(() => {
    setFusedMultiplyAdd(fused);
  });
  afterAll(() => {
    setFusedMultiplyAdd('auto');
  });
}
