import '@tensorflow/tfjs-backend-wasm';
import '@tensorflow/tfjs-backend-cpu';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { relativeError } from '@regstack/regularizer/testing';
import { convolutionGeometry as geometry, inputGradientReference, randomValues } from '../test-values.js';
import { enableRelaxedSimd, multiplyAddModes, withMultiplyAdd } from './test-multiply-add.js';
import { setSubPixelInputGradient, simdSubPixelInputGradient, simdSubPixelSupports } from './sub-pixel.js';
import { registerKernels, unregisterKernels } from '../kernels/register-kernels.js';

type Rank4 = [number, number, number, number];

/**
 * Strided convolutions: stride 2 with 3 × 3 (phases of 2 × 2, 2 × 1, 1 × 2, 1 × 1 taps), 1 × 1 (one phase
 * with taps, three of zeros), 2 × 2 and 5 × 5 filters; stride 3 and mixed strides (a phase of no taps
 * beside ones with taps); 'same' (padding 0 in front at even sides, 1 at odd), 'valid' (windows that
 * skip the last rows) and numeric padding; dy channels that are not a multiple of 4; batches 1-3.
 */
const CASES: Array<{ x: Rank4; filter: Rank4; strides: number | [number, number]; pad: 'same' | 'valid' | number }> = [
  { x: [2, 28, 28, 16], filter: [3, 3, 16, 32], strides: 2, pad: 'same' },
  { x: [3, 7, 7, 8], filter: [3, 3, 8, 12], strides: 2, pad: 'same' },
  { x: [1, 4, 4, 64], filter: [3, 3, 64, 128], strides: 2, pad: 'same' },
  { x: [2, 9, 10, 4], filter: [3, 3, 4, 3], strides: 2, pad: 'valid' },
  { x: [2, 8, 8, 12], filter: [1, 1, 12, 20], strides: 2, pad: 'valid' },
  { x: [3, 7, 5, 4], filter: [1, 1, 4, 8], strides: 2, pad: 'same' },
  { x: [1, 10, 11, 8], filter: [2, 2, 8, 4], strides: 2, pad: 'valid' },
  { x: [2, 11, 9, 4], filter: [5, 5, 4, 6], strides: 2, pad: 2 },
  { x: [2, 12, 10, 8], filter: [3, 3, 8, 5], strides: 3, pad: 'same' },
  { x: [1, 9, 8, 4], filter: [3, 2, 4, 4], strides: [2, 3], pad: 'same' },
  { x: [2, 6, 9, 4], filter: [1, 3, 4, 8], strides: [3, 2], pad: 1 },
];

/** The input gradient through TF.js (our Conv2DBackpropInput kernel on the active backend). */
function throughTf(c: (typeof CASES)[number], dy: Float32Array, w: Float32Array, outputShape: number[]): Float32Array {
  return tf.tidy(() => tf.conv2dTranspose(tf.tensor4d(dy, outputShape as Rank4), tf.tensor4d(w, c.filter), c.x, c.strides, c.pad).dataSync() as Float32Array);
}

const relaxedSimd = enableRelaxedSimd();

describe('simdSubPixelInputGradient', () => {
  describe.each(multiplyAddModes(relaxedSimd))('with $mode', ({ fused }) => {
    withMultiplyAdd(fused);

    it.each(CASES)('equals the definition for x $x, filter $filter, strides $strides, pad $pad', (c) => {
      const g = geometry(c.x, c.filter, c.pad, c.strides as number);
      expect(simdSubPixelSupports(g)).toBe(true);
      const dy = randomValues(g.batchSize * g.outHeight * g.outWidth * g.outChannels, 3 + c.x[1]!);
      const w = randomValues(c.filter.reduce((a, b) => a * b), 5 + c.filter[3]!);
      const dx = new Float32Array(g.batchSize * g.inHeight * g.inWidth * g.inChannels).fill(Number.NaN);
      simdSubPixelInputGradient(dy, w, dx, g);
      // Float32 sums of at most a few hundred products: within the direct kernel's bound.
      expect(relativeError(dx, inputGradientReference(dy, w, g))).toBeLessThan(1e-6);
    });
  });

  // On wasm the phase convolutions of the former path are our Conv2D (the direct kernel); on cpu they
  // are TF.js's own loop, which sums in another order.
  describe.each([
    { backend: 'wasm' as const, kernels: [tf.Conv2D, tf.Conv2DBackpropInput], bitForBit: true },
    { backend: 'cpu' as const, kernels: [tf.Conv2DBackpropInput], bitForBit: false },
  ])('as the $backend Conv2DBackpropInput', ({ backend, kernels, bitForBit }) => {
    beforeAll(async () => {
      await tf.setBackend(backend);
      registerKernels(backend, kernels);
    });
    afterAll(() => {
      unregisterKernels(backend, kernels);
    });

    it.each(CASES)('gives x $x, filter $filter, strides $strides, pad $pad the values of the phase convolutions, bit for bit where they ran the direct kernel', (c) => {
      const g = geometry(c.x, c.filter, c.pad, c.strides as number);
      const outputShape = [g.batchSize, g.outHeight, g.outWidth, g.outChannels];
      const dy = randomValues(tf.util.sizeFromShape(outputShape), 11 + c.x[2]!);
      const w = randomValues(c.filter.reduce((a, b) => a * b), 13 + c.filter[2]!);
      const tensors = tf.memory().numTensors;
      const got = throughTf(c, dy, w, outputShape);
      expect(tf.memory().numTensors).toBe(tensors);
      setSubPixelInputGradient(false);
      let phases: Float32Array;
      try {
        phases = throughTf(c, dy, w, outputShape);
      } finally {
        setSubPixelInputGradient(true);
      }
      expect(relativeError(got, inputGradientReference(dy, w, g))).toBeLessThan(1e-6);
      // The same products summed in the same order; a 5 × 5 filter's 3 × 3 phase ran by Winograd before.
      if (!bitForBit || c.filter[0] === 5) expect(relativeError(got, phases)).toBeLessThan(1e-6);
      else expect(Array.from(got)).toEqual(Array.from(phases));
    });
  });

  it('is not used where it does not apply, and says why when called there', () => {
    expect(simdSubPixelSupports(geometry([2, 8, 8, 4], [3, 3, 4, 4], 'same', 1))).toBe(false);
    expect(simdSubPixelSupports(geometry([2, 8, 8, 6], [3, 3, 6, 4], 'same', 2))).toBe(false);
    const g = geometry([2, 8, 8, 4], [3, 3, 4, 4], 'same', 1);
    const dx = new Float32Array(2 * 8 * 8 * 4);
    expect(() => simdSubPixelInputGradient(new Float32Array(2 * 8 * 8 * 4), new Float32Array(9 * 16), dx, g)).toThrow(/stride above 1/);
    // No dy channels: dx is zeros (the kernels are not called: their loops run at least once).
    const none = geometry([2, 8, 8, 4], [3, 3, 4, 0], 'same', 2);
    expect(simdSubPixelSupports(none)).toBe(false);
    const zeros = new Float32Array(2 * 8 * 8 * 4).fill(Number.NaN);
    simdSubPixelInputGradient(new Float32Array(0), new Float32Array(0), zeros, none);
    expect(zeros.every((value) => value === 0)).toBe(true);
    const strided = geometry([2, 8, 8, 4], [3, 3, 4, 4], 'same', 2);
    expect(() => simdSubPixelInputGradient(new Float32Array(5), new Float32Array(9 * 16), dx, strided)).toThrow(/dy has 5 values, expected 128/);
  });
});
