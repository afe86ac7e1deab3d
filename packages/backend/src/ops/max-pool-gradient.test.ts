import '@tensorflow/tfjs-backend-wasm';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { maxPoolGradient, type MaxPoolGradientAttributes } from './max-pool-gradient.js';
import { registerKernels, registeredKernels, unregisterKernels } from '../kernels/register-kernels.js';

/** Whether our MaxPoolGrad is registered for `backend`. */
const oursRegistered = (backend: string) => registeredKernels(backend).includes(tf.MaxPoolGrad);

type Rank4 = [number, number, number, number];

interface Case {
  label: string;
  input: Rank4;
  attributes: MaxPoolGradientAttributes;
  /** Small integers, so that windows hold ties (the first maximum must win, as on cpu). */
  ties?: boolean;
}

const cases: Case[] = [
  { label: '2x2 stride 2 valid (the small CNN)', input: [2, 8, 8, 3], attributes: { filterSize: 2, strides: 2, pad: 'valid' } },
  { label: '2x2 stride 2 valid, odd 7x5 (floor)', input: [1, 7, 5, 2], attributes: { filterSize: 2, strides: 2, pad: 'valid' } },
  // Overlapping windows: a position that is the maximum of several windows sums their gradients.
  { label: '3x3 stride 2 same, overlapping', input: [2, 9, 8, 2], attributes: { filterSize: 3, strides: 2, pad: 'same' } },
  { label: '3x3 stride 1 same', input: [1, 6, 6, 3], attributes: { filterSize: 3, strides: 1, pad: 'same' } },
  { label: '3x2 strides [1,2] numeric pad 1', input: [1, 6, 7, 2], attributes: { filterSize: [3, 2], strides: [1, 2], pad: 1 } },
  { label: '2x2 stride 1 valid with ties', input: [2, 5, 5, 2], attributes: { filterSize: 2, strides: 1, pad: 'valid' }, ties: true },
  { label: '2x2 stride 2 valid with ties (the unrolled 2x2 path)', input: [2, 6, 6, 5], attributes: { filterSize: 2, strides: 2, pad: 'valid' }, ties: true },
  { label: '2x2 stride 2 same, odd 5x5 (clipped edge windows)', input: [1, 5, 5, 3], attributes: { filterSize: 2, strides: 2, pad: 'same' } },
];

/** A seeded linear congruential sequence: the test needs fixed values, not a good generator. */
function values(count: number, seed: number, ties = false): Float32Array {
  let state = seed;
  return Float32Array.from({ length: count }, () => {
    state = (state * 1664525 + 1013904223) >>> 0;
    return ties ? state % 3 : state / 2 ** 32 - 0.5;
  });
}

function poolLoss(input: tf.Tensor4D, weights: tf.Tensor4D, attributes: MaxPoolGradientAttributes) {
  return tf.sum(tf.mul(tf.maxPool(input, attributes.filterSize, attributes.strides, attributes.pad, attributes.dimRoundingMode), weights));
}

function data(testCase: Case) {
  const size = testCase.input.reduce((a, b) => a * b);
  const pooledShape = tf.tidy(() => tf.maxPool(tf.zeros(testCase.input) as tf.Tensor4D, testCase.attributes.filterSize, testCase.attributes.strides, testCase.attributes.pad).shape) as Rank4;
  const input = values(size, 7, testCase.ties);
  const weights = values(pooledShape.reduce((a, b) => a * b), 11);
  return { input, weights, pooledShape };
}

/** The cpu backend's shipped MaxPoolGrad, through tf.grad: the reference. */
const references = new Map<string, Float32Array>();

beforeAll(() => {
  expect(oursRegistered('cpu')).toBe(false);
  for (const testCase of cases) {
    const { input, weights, pooledShape } = data(testCase);
    references.set(
      testCase.label,
      tf.tidy(() => tf.grad((x: tf.Tensor) => poolLoss(x as tf.Tensor4D, tf.tensor4d(weights, pooledShape), testCase.attributes))(tf.tensor4d(input, testCase.input)).dataSync() as Float32Array),
    );
  }
});

afterAll(() => {
  unregisterKernels('wasm', [tf.MaxPoolGrad]);
});

describe('maxPoolGradient', () => {
  it.each(cases.map((testCase) => [testCase.label, testCase] as const))('equals the cpu backend exactly: %s', async (_label, testCase) => {
    await tf.setBackend('cpu');
    const { input, weights, pooledShape } = data(testCase);
    const before = tf.memory().numTensors;
    const gradient = tf.tidy(() => maxPoolGradient(tf.tensor4d(input, testCase.input), tf.tensor4d(weights, pooledShape), testCase.attributes).dataSync());
    expect(tf.memory().numTensors).toBe(before);
    expect(Array.from(gradient)).toEqual(Array.from(references.get(testCase.label)!));
  });

  it('gives each window its dy once: the gradient of the summed max-pool counts how often each input is a maximum', async () => {
    await tf.setBackend('cpu');
    // Windows [0 1; 4 5] and [2 3; 6 7] of a 2x4 map: maxima 5 and 7 (first of a tie would win).
    const input = tf.tensor4d([0, 1, 2, 3, 4, 5, 6, 7], [1, 2, 4, 1]);
    const gradient = maxPoolGradient(input, tf.tensor4d([10, 20], [1, 1, 2, 1]), { filterSize: 2, strides: 2, pad: 'valid' });
    expect(Array.from(gradient.dataSync())).toEqual([0, 0, 0, 0, 0, 10, 0, 20]);
    const tie = maxPoolGradient(tf.tensor4d([3, 3, 3, 3], [1, 2, 2, 1]), tf.tensor4d([5], [1, 1, 1, 1]), { filterSize: 2, strides: 2, pad: 'valid' });
    expect(Array.from(tie.dataSync())).toEqual([5, 0, 0, 0]);
    // The first maximum among −∞ and NaN: NaN never wins, a window of only −∞ and NaN passes nothing,
    // and −0 from dy arrives as +0 (the cpu kernel sums from 0).
    const special = maxPoolGradient(
      tf.tensor4d([NaN, -Infinity, 2, NaN, -Infinity, NaN, NaN, -Infinity], [1, 2, 4, 1]),
      tf.tensor4d([-0, 7], [1, 1, 2, 1]),
      { filterSize: 2, strides: 2, pad: 'valid' },
    );
    expect(Array.from(special.dataSync()).map((value) => Object.is(value, -0) ? '-0' : value)).toEqual([0, 0, 7, 0, 0, 0, 0, 0]);
    const negativeZero = maxPoolGradient(tf.tensor4d([1, 0, 0, 0], [1, 2, 2, 1]), tf.tensor4d([-0], [1, 1, 1, 1]), { filterSize: 2, strides: 2, pad: 'valid' });
    expect(Object.is(negativeZero.dataSync()[0], 0)).toBe(true);
    tf.dispose([input, gradient, tie, special, negativeZero]);
  });

  it('names the mismatch when dy does not have the pooled shape', () => {
    const input = tf.zeros([1, 4, 4, 1]) as tf.Tensor4D;
    const dy = tf.zeros([1, 3, 3, 1]) as tf.Tensor4D;
    expect(() => maxPoolGradient(input, dy, { filterSize: 2, strides: 2, pad: 'valid' })).toThrow(/dy has shape \[1,3,3,1\].*gives \[1,2,2,1\]/);
    tf.dispose([input, dy]);
  });
});

describe('the wasm MaxPoolGrad kernel', () => {
  it('is needed: the shipped wasm kernel loses whole windows of the small-CNN case', async () => {
    await tf.setBackend('wasm');
    unregisterKernels('wasm', [tf.MaxPoolGrad]);
    const testCase = cases[0]!;
    const { input, weights, pooledShape } = data(testCase);
    const shipped = tf.tidy(() => tf.grad((x: tf.Tensor) => poolLoss(x as tf.Tensor4D, tf.tensor4d(weights, pooledShape), testCase.attributes))(tf.tensor4d(input, testCase.input)).dataSync());
    const reference = references.get(testCase.label)!;
    const differing = Array.from(shipped).filter((value, index) => value !== reference[index]).length;
    expect(differing).toBeGreaterThan(0);
  });

  it('is ours after registration: tf.grad through tf.maxPool on wasm equals cpu, frees its tensors, and restores the shipped one', async () => {
    await tf.setBackend('wasm');
    const shipped = tf.getKernel(tf.MaxPoolGrad, 'wasm');
    registerKernels('wasm', [tf.MaxPoolGrad]);
    registerKernels('wasm', [tf.MaxPoolGrad]); // idempotent
    expect(oursRegistered('wasm')).toBe(true);
    expect(tf.getKernel(tf.MaxPoolGrad, 'wasm')).not.toBe(shipped);
    for (const testCase of cases) {
      const { input, weights, pooledShape } = data(testCase);
      const before = tf.memory().numTensors;
      const gradient = tf.tidy(() =>
        tf.grad((x: tf.Tensor) => poolLoss(x as tf.Tensor4D, tf.tensor4d(weights, pooledShape), testCase.attributes))(tf.tensor4d(input, testCase.input)).dataSync(),
      );
      expect(tf.memory().numTensors).toBe(before);
      expect(Array.from(gradient), testCase.label).toEqual(Array.from(references.get(testCase.label)!));
    }
    unregisterKernels('wasm', [tf.MaxPoolGrad]);
    expect(oursRegistered('wasm')).toBe(false);
    expect(tf.getKernel(tf.MaxPoolGrad, 'wasm')).toBe(shipped);
    // The restored kernel must still run (wasm binds its C++ function in a setup step).
    const restored = tf.tidy(() => tf.grad((x: tf.Tensor) => tf.sum(tf.maxPool(x as tf.Tensor4D, 2, 2, 'valid')))(tf.ones([1, 2, 2, 1]) as tf.Tensor4D).dataSync());
    expect(restored).toHaveLength(4);
  });
});
