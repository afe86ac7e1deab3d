import * as tf from '@tensorflow/tfjs-core';
import type { SimdGeometry } from './threads/conv-protocol.js';

/**
 * For this package's tests: fixed pseudo-random values in [−0.5, 0.5), reproducible without touching
 * TF.js's global seed (a linear congruential sequence: the tests need fixed values, not a good
 * generator). Not part of the package's exports.
 */
export function randomValues(size: number, seed: number): Float32Array {
  const values = new Float32Array(size);
  let state = seed;
  for (let index = 0; index < size; index++) {
    state = (state * 1664525 + 1013904223) >>> 0;
    values[index] = state / 2 ** 32 - 0.5;
  }
  return values;
}

/** For this package's tests: the SIMD kernels' geometry of an NHWC convolution (TF.js's own arithmetic, dilation 1). */
export function convolutionGeometry(input: number[], filter: number[], pad: 'same' | 'valid' | number, strides = 1): SimdGeometry {
  const info = tf.backend_util.computeConv2DInfo(input as [number, number, number, number], filter as [number, number, number, number], strides, 1, pad);
  return { ...info, padTop: info.padInfo.top, padLeft: info.padInfo.left };
}
