import '@tensorflow/tfjs-backend-wasm';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { relativeError } from '@regstack/regularizer/testing';
import { convolutionGeometry as geometry, filterGradientReference, randomValues } from '../test-values.js';
import { enableRelaxedSimd, multiplyAddModes, withMultiplyAdd } from './test-multiply-add.js';
import type { SimdGeometry } from '../threads/conv-protocol.js';
import { simdFilterGradient } from './filter-gradient.js';
import { simdKernels } from './instance.js';
import {
  setWinogradFilterGradient,
  setWinogradFilterGradientBlockBytes,
  simdWinogradFilterGradient,
  simdWinogradFilterGradientSupports,
  winogradFilterGradientChosen,
} from './winograd-filter-gradient.js';
import { registerKernels, unregisterKernels } from '../kernels/register-kernels.js';

function inputs(g: SimdGeometry, seed: number): { x: Float32Array; dy: Float32Array } {
  return {
    x: randomValues(g.batchSize * g.inHeight * g.inWidth * g.inChannels, seed),
    dy: randomValues(g.batchSize * g.outHeight * g.outWidth * g.outChannels, seed + 1),
  };
}

// Stale values must not survive: every value is written.
const filterGradient = (g: SimdGeometry) => new Float32Array(g.filterHeight * g.filterWidth * g.inChannels * g.outChannels).fill(Number.NaN);

/** The direct loop's filter gradient (Winograd switched off). */
function direct(x: Float32Array, dy: Float32Array, g: SimdGeometry): Float32Array {
  const dw = filterGradient(g);
  const previous = setWinogradFilterGradient(false);
  try {
    simdFilterGradient(x, dy, dw, g);
  } finally {
    setWinogradFilterGradient(previous);
  }
  return dw;
}

/**
 * Relative error (of dW's norm) allowed against the float64 definition, for both forms. Measured (values
 * in [−0.5, 0.5), both multiply-add forms): on these cases Winograd 2.8e-8 to 2.6e-7, the direct loop
 * 2.8e-8 to 2.5e-7; on the recipe's four layer shapes (batch 32) Winograd 2.6e-7 to 5.2e-7 against the
 * direct loop's 1.4e-7 to 5.0e-7 (the largest gap 3.2e-7 against 1.4e-7 at 4×4×128 → 128, where the
 * transforms' sums of 4 and 9 values weigh most against the short sums over 128 tiles).
 */
const TOLERANCE = 1e-6;

const relaxedSimd = enableRelaxedSimd();

describe('simdWinogradFilterGradient', () => {
  describe.each(multiplyAddModes(relaxedSimd))('with $mode', ({ fused }) => {
    withMultiplyAdd(fused);

    // Input channels 4, 8, 12, 16, 128; output channels 4 (no 8-wide block), 8, 12 (8 + 4), 20, 128; even
    // and odd sides (half-empty last tiles), 7 × 7, 4 × 4 and 1 × 1; 'same', 'valid' and pad 2; batches 1-3.
    it.each([
      { input: [1, 4, 4, 4], outChannels: 4, pad: 'same' as const },
      { input: [2, 7, 7, 4], outChannels: 12, pad: 'same' as const },
      { input: [3, 7, 7, 64], outChannels: 64, pad: 'same' as const },
      { input: [3, 5, 6, 16], outChannels: 16, pad: 'valid' as const },
      { input: [2, 1, 1, 8], outChannels: 8, pad: 'same' as const },
      { input: [2, 4, 4, 128], outChannels: 128, pad: 'same' as const },
      { input: [1, 3, 5, 128], outChannels: 8, pad: 'same' as const },
      { input: [3, 9, 2, 8], outChannels: 4, pad: 2 },
      { input: [2, 10, 11, 12], outChannels: 20, pad: 'valid' as const },
    ])('equals the definition and the direct loop for x $input → $outChannels channels, pad $pad', ({ input, outChannels, pad }) => {
      expect(simdKernels()!.fused).toBe(fused);
      const g = geometry(input, [3, 3, input[3]!, outChannels], pad);
      const { x, dy } = inputs(g, 11 + input[1]! + outChannels);
      const got = filterGradient(g);
      simdWinogradFilterGradient(x, dy, got, g);
      const want = filterGradientReference(x, dy, g);
      const directGot = direct(x, dy, g);
      expect(relativeError(got, want)).toBeLessThan(TOLERANCE);
      expect(relativeError(directGot, want)).toBeLessThan(TOLERANCE);
    });
  });

  it.each([
    ['one row of tiles per block', 1],
    ['the whole batch in one block', 1 << 24],
  ])('is as accurate with %s', (_, bytes) => {
    const g = geometry([5, 8, 7, 8], [3, 3, 8, 12], 'same');
    const { x, dy } = inputs(g, 43);
    const previous = setWinogradFilterGradientBlockBytes(bytes);
    try {
      const got = filterGradient(g);
      simdWinogradFilterGradient(x, dy, got, g);
      expect(relativeError(got, filterGradientReference(x, dy, g))).toBeLessThan(TOLERANCE);
    } finally {
      setWinogradFilterGradientBlockBytes(previous);
    }
  });

  it('rejects what it cannot compute, naming the field', () => {
    const g = geometry([1, 4, 4, 4], [3, 3, 4, 4], 'same');
    expect(() => simdWinogradFilterGradient(new Float32Array(64), new Float32Array(64), new Float32Array(144), { ...g, strideHeight: 2 })).toThrow(
      /simdWinogradFilterGradient: strides must be 1, got 2×1/,
    );
    const wide = geometry([1, 4, 4, 4], [5, 3, 4, 4], 'same');
    expect(() => simdWinogradFilterGradient(new Float32Array(64), new Float32Array(64), new Float32Array(240), wide)).toThrow(/filter must be 3×3, got 5×3/);
    const odd = geometry([1, 4, 4, 6], [3, 3, 6, 4], 'same');
    expect(() => simdWinogradFilterGradient(new Float32Array(96), new Float32Array(64), new Float32Array(216), odd)).toThrow(/inChannels must be a multiple of 4, got 6/);
    expect(() => simdWinogradFilterGradient(new Float32Array(64), new Float32Array(63), new Float32Array(144), g)).toThrow(/dy has 63 values, expected 64/);
    expect(() => simdWinogradFilterGradient(new Float32Array(64), new Float32Array(64), new Float32Array(143), g)).toThrow(/dw has 143 values, expected 144/);
  });
});

describe('routing: which filter gradients simdFilterGradient computes by Winograd', () => {
  afterAll(() => {
    setWinogradFilterGradient('auto');
  });

  it.each([
    // The recipe's stride-1 3 × 3 layers: Winograd.
    { input: [32, 28, 28, 16], filter: [3, 3, 16, 16], strides: 1, chosen: true },
    { input: [32, 14, 14, 32], filter: [3, 3, 32, 32], strides: 1, chosen: true },
    { input: [32, 7, 7, 64], filter: [3, 3, 64, 64], strides: 1, chosen: true },
    { input: [32, 4, 4, 128], filter: [3, 3, 128, 128], strides: 1, chosen: true },
    // 2 × 2 and 3 × 3 sides, 8 → 8 and 4 → 16 channels at 28 × 28: Winograd measured faster.
    { input: [32, 2, 2, 128], filter: [3, 3, 128, 128], strides: 1, chosen: true },
    { input: [32, 3, 3, 64], filter: [3, 3, 64, 64], strides: 1, chosen: true },
    { input: [32, 28, 28, 8], filter: [3, 3, 8, 8], strides: 1, chosen: true },
    { input: [32, 28, 28, 4], filter: [3, 3, 4, 16], strides: 1, chosen: true },
    // Measured slower: a side of 1, 4 → 4 channels, small calls.
    { input: [1, 7, 7, 64], filter: [3, 3, 64, 64], strides: 1, chosen: false, supported: true },
    { input: [32, 1, 1, 128], filter: [3, 3, 128, 128], strides: 1, chosen: false, supported: true },
    { input: [32, 28, 28, 4], filter: [3, 3, 4, 4], strides: 1, chosen: false, supported: true },
    { input: [32, 5, 5, 8], filter: [3, 3, 8, 8], strides: 1, chosen: false, supported: true },
    // Not computable: the stem (1 input channel), 17 channels, stride 2, 5 × 5 and 1 × 1 filters.
    { input: [32, 28, 28, 1], filter: [3, 3, 1, 16], strides: 1, chosen: false, supported: false },
    { input: [32, 28, 28, 17], filter: [3, 3, 17, 16], strides: 1, chosen: false, supported: false },
    { input: [32, 28, 28, 16], filter: [3, 3, 16, 32], strides: 2, chosen: false, supported: false },
    { input: [32, 28, 28, 16], filter: [5, 5, 16, 16], strides: 1, chosen: false, supported: false },
    { input: [32, 28, 28, 16], filter: [1, 1, 16, 16], strides: 1, chosen: false, supported: false },
  ])('x $input, filter $filter, stride $strides: Winograd $chosen', ({ input, filter, strides, chosen, supported }) => {
    const g = geometry(input, filter, 'same', strides);
    expect(winogradFilterGradientChosen(g)).toBe(chosen);
    expect(simdWinogradFilterGradientSupports(g)).toBe(supported ?? chosen);
    setWinogradFilterGradient(false);
    expect(winogradFilterGradientChosen(g)).toBe(false);
    setWinogradFilterGradient(true);
    expect(winogradFilterGradientChosen(g)).toBe(supported ?? chosen);
    setWinogradFilterGradient('auto');
  });

  it("takes Winograd's dW, bit for bit, where it is chosen, and the direct loop's elsewhere", () => {
    const run = (g: SimdGeometry, compute: (x: Float32Array, dy: Float32Array, dw: Float32Array) => void) => {
      const { x, dy } = inputs(g, 59);
      const dw = filterGradient(g);
      compute(x, dy, dw);
      return Array.from(dw);
    };
    const chosen = geometry([16, 9, 8, 32], [3, 3, 32, 32], 'same');
    expect(winogradFilterGradientChosen(chosen)).toBe(true);
    const routed = run(chosen, (x, dy, dw) => simdFilterGradient(x, dy, dw, chosen));
    expect(routed).toEqual(run(chosen, (x, dy, dw) => simdWinogradFilterGradient(x, dy, dw, chosen)));
    // The two differ in rounding somewhere, so the comparison above tells them apart.
    const directRouted = run(chosen, (x, dy, dw) => dw.set(direct(x, dy, chosen)));
    expect(routed).not.toEqual(directRouted);
    // 4 → 4 channels: the direct loop.
    const other = geometry([2, 6, 6, 4], [3, 3, 4, 4], 'same');
    expect(winogradFilterGradientChosen(other)).toBe(false);
    expect(run(other, (x, dy, dw) => simdFilterGradient(x, dy, dw, other))).toEqual(run(other, (x, dy, dw) => dw.set(direct(x, dy, other))));
  });
});

describe("a small model's filter gradients on wasm, by Winograd and by the direct loop", () => {
  beforeAll(async () => {
    await tf.setBackend('wasm');
    registerKernels('wasm', [tf.Conv2D, tf.Conv2DBackpropInput, tf.Conv2DBackpropFilter]);
  });
  afterAll(async () => {
    setWinogradFilterGradient('auto');
    unregisterKernels('wasm', [tf.Conv2D, tf.Conv2DBackpropInput, tf.Conv2DBackpropFilter]);
    await tf.setBackend('wasm');
  });

  /** Loss and gradients of two stride-1 3 × 3 convolutions (16 → 16 → 16 channels, 9 × 10, batch 48) with a ReLU between, then a weighted sum. */
  function lossAndGradients(): Float32Array[] {
    return tf.tidy(() => {
      const x = tf.tensor4d(randomValues(48 * 9 * 10 * 16, 71), [48, 9, 10, 16]);
      const w1 = tf.tensor4d(randomValues(9 * 16 * 16, 72), [3, 3, 16, 16]);
      const w2 = tf.tensor4d(randomValues(9 * 16 * 16, 73), [3, 3, 16, 16]);
      const u = tf.tensor4d(randomValues(48 * 9 * 10 * 16, 74), [48, 9, 10, 16]);
      const loss = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) =>
        tf.sum(tf.mul(tf.conv2d(tf.relu(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 1, 'same')), c as tf.Tensor4D, 1, 'same'), u));
      const { value, grads } = tf.valueAndGrads(loss)([x, w1, w2]);
      return [value, ...grads].map((tensor) => tensor.dataSync() as Float32Array);
    });
  }

  it('agree within the tolerance, and nothing is leaked', () => {
    const geometryOf = geometry([48, 9, 10, 16], [3, 3, 16, 16], 'same');
    expect(winogradFilterGradientChosen(geometryOf)).toBe(true);
    const before = tf.memory().numTensors;
    setWinogradFilterGradient(false);
    const direct = lossAndGradients();
    setWinogradFilterGradient('auto');
    const winograd = lossAndGradients();
    expect(tf.memory().numTensors).toBe(before);
    // The loss and dx do not involve the filter gradient: the same bits.
    expect(Array.from(winograd[0]!)).toEqual(Array.from(direct[0]!));
    expect(Array.from(winograd[1]!)).toEqual(Array.from(direct[1]!));
    for (const index of [2, 3]) {
      expect(relativeError(winograd[index]!, direct[index]!), ['loss', 'dx', 'dw1', 'dw2'][index]).toBeLessThan(TOLERANCE);
      // Not the same computation: some value differs in its last bits.
      expect(Array.from(winograd[index]!)).not.toEqual(Array.from(direct[index]!));
    }
  });
});
