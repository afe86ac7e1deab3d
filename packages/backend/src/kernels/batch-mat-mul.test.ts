import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import { registerKernels, registeredKernels, unregisterKernels } from './register-kernels.js';
import { relativeError } from '@regstack/regularizer/testing';
import { useBackend } from '../use-backend.js';

function values(shape: number[], seed: number): number[] {
  let state = seed;
  return Array.from({ length: tf.util.sizeFromShape(shape) }, () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32 - 0.5;
  });
}

/** Products with every transpose combination, batched, broadcast over a batch of 1, and rank 2. */
const cases: Array<{ a: number[]; b: number[]; transposeA: boolean; transposeB: boolean }> = [];
for (const transposeA of [false, true]) {
  for (const transposeB of [false, true]) {
    cases.push({ a: transposeA ? [7, 5] : [5, 7], b: transposeB ? [3, 7] : [7, 3], transposeA, transposeB });
    cases.push({ a: transposeA ? [2, 6, 4] : [2, 4, 6], b: transposeB ? [1, 5, 6] : [1, 6, 5], transposeA, transposeB });
  }
}

function products(): Float32Array[] {
  return cases.map(({ a, b, transposeA, transposeB }, index) =>
    tf.tidy(() => tf.matMul(tf.tensor(values(a, index + 1), a), tf.tensor(values(b, index + 50), b), transposeA, transposeB).dataSync() as Float32Array),
  );
}

describe("wasm's BatchMatMul with explicit transposes", () => {
  it('equals the cpu backend for every transpose combination, batched and broadcast, and frees what it makes', async () => {
    await tf.setBackend('cpu');
    const expected = products();
    const info = await useBackend('wasm');
    expect(info.kernels).toContain('BatchMatMul');
    expect(registeredKernels('wasm')).toContain(tf.BatchMatMul);
    const before = tf.memory().numTensors;
    const dataBefore = (tf.backend() as unknown as { numDataIds(): number }).numDataIds();
    const ours = products();
    expect(tf.memory().numTensors).toBe(before);
    expect((tf.backend() as unknown as { numDataIds(): number }).numDataIds()).toBe(dataBefore);
    for (const [index, product] of ours.entries()) expect(relativeError(product, expected[index]!), JSON.stringify(cases[index])).toBeLessThan(1e-6);
  });

  it("differentiates a linear layer as the shipped kernel does, and can be removed", async () => {
    await useBackend('wasm');
    const x = tf.tensor(values([6, 9], 3), [6, 9]);
    const w = tf.tensor(values([9, 4], 4), [9, 4]);
    const gradients = () => tf.grads((input: tf.Tensor, weight: tf.Tensor) => tf.sum(tf.square(tf.matMul(input, weight))))([x, w]).map((g) => g.dataSync() as Float32Array);
    const ours = gradients();
    unregisterKernels('wasm', [tf.BatchMatMul]);
    try {
      expect(registeredKernels('wasm')).not.toContain(tf.BatchMatMul);
      const shipped = gradients();
      for (const [index, gradient] of ours.entries()) expect(relativeError(gradient, shipped[index]!)).toBeLessThan(1e-6);
    } finally {
      registerKernels('wasm', [tf.BatchMatMul]);
    }
    tf.dispose([x, w]);
  });
});
