import '@tensorflow/tfjs-backend-wasm';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { relativeError } from '@regstack/regularizer/testing';
import { convolutionGeometry as geometry, convolutionReference, randomValues } from '../test-values.js';
import { enableRelaxedSimd, multiplyAddModes, withMultiplyAdd } from './test-multiply-add.js';
import type { SimdGeometry } from '../threads/conv-protocol.js';
import { simdConvolution } from './convolution.js';
import { simdKernels } from './instance.js';
import { setWinogradBlockBytes, setWinogradConvolution, simdWinogradConvolution, simdWinogradSupports, winogradChosen } from './winograd.js';
import { registerKernels, unregisterKernels } from '../kernels/register-kernels.js';

function inputs(g: SimdGeometry, seed: number): { x: Float32Array; w: Float32Array } {
  return {
    x: randomValues(g.batchSize * g.inHeight * g.inWidth * g.inChannels, seed),
    w: randomValues(9 * g.inChannels * g.outChannels, seed + 1),
  };
}

const output = (g: SimdGeometry) => new Float32Array(g.batchSize * g.outHeight * g.outWidth * g.outChannels).fill(Number.NaN);

/**
 * Relative error (of the output's norm) allowed against the float64 definition: the direct kernel's
 * bound. Measured on these cases (values in [−0.5, 0.5)): Winograd at most 3.5e-7, the direct kernel at
 * most 5.8e-7; on the recipe's four layer shapes 1.6e-7 to 3.7e-7 against the direct kernel's 2.1e-7 to
 * 5.3e-7. F(2, 3)'s transforms add up to 4 values before and 9 after the products, but each of the 16
 * products sums only the input channels, a chain 9× shorter than the direct loop's.
 */
const TOLERANCE = 1e-6;

const relaxedSimd = enableRelaxedSimd();

describe('simdWinogradConvolution', () => {
  describe.each(multiplyAddModes(relaxedSimd))('with $mode', ({ fused }) => {
    withMultiplyAdd(fused);

    // Input channels 4, 8, 16, 128; output channels 4 (no 8-wide block), 8, 12 (8 + 4), 16, 128; even and
    // odd sides (half-empty last tiles), 7 × 7, 4 × 4 and 1 × 1; 'same', 'valid' and wider padding; batches 1-3.
    it.each([
      { input: [1, 4, 4, 4], outChannels: 4, pad: 'same' as const },
      { input: [2, 7, 7, 4], outChannels: 12, pad: 'same' as const },
      { input: [3, 5, 6, 16], outChannels: 16, pad: 'valid' as const },
      { input: [2, 1, 1, 8], outChannels: 8, pad: 'same' as const },
      { input: [2, 4, 4, 16], outChannels: 128, pad: 'same' as const },
      { input: [1, 3, 5, 128], outChannels: 8, pad: 'same' as const },
      { input: [3, 9, 2, 8], outChannels: 4, pad: 2 },
      { input: [2, 10, 11, 12], outChannels: 20, pad: 'valid' as const },
    ])('equals the definition and the direct kernel for x $input → $outChannels channels, pad $pad', ({ input, outChannels, pad }) => {
      expect(simdKernels()!.fused).toBe(fused);
      const g = geometry(input, [3, 3, input[3]!, outChannels], pad);
      const { x, w } = inputs(g, 7 + input[1]! + outChannels);
      const got = output(g);
      simdWinogradConvolution(x, w, got, g);
      const direct = output(g);
      setWinogradConvolution(false);
      try {
        simdConvolution(x, w, direct, g);
      } finally {
        setWinogradConvolution('auto');
      }
      const want = convolutionReference(x, w, g);
      expect(relativeError(got, want)).toBeLessThan(TOLERANCE);
      expect(relativeError(direct, want)).toBeLessThan(1e-6);
      expect(relativeError(got, direct)).toBeLessThan(TOLERANCE);
    });
  });

  it.each([
    ['one row of tiles per block', 1],
    ['the whole batch in one block', 1 << 24],
  ])('gives the same outputs, bit for bit, with %s', (_, bytes) => {
    const g = geometry([5, 8, 7, 8], [3, 3, 8, 12], 'same');
    const { x, w } = inputs(g, 41);
    const usual = output(g);
    simdWinogradConvolution(x, w, usual, g);
    const previous = setWinogradBlockBytes(bytes);
    try {
      const got = output(g);
      simdWinogradConvolution(x, w, got, g);
      expect(Array.from(got)).toEqual(Array.from(usual));
      expect(relativeError(got, convolutionReference(x, w, g))).toBeLessThan(TOLERANCE);
    } finally {
      setWinogradBlockBytes(previous);
    }
  });

  // Channel counts 4 → 4, 4 → 12 and 12 → 4 (not square: rows and columns of the transpose differ), 128 → 8, 16 → 128.
  it.each([
    { input: [2, 5, 4, 4], outChannels: 4 },
    { input: [1, 6, 7, 4], outChannels: 12 },
    { input: [3, 4, 4, 12], outChannels: 4 },
    { input: [1, 3, 3, 128], outChannels: 8 },
    { input: [2, 4, 4, 16], outChannels: 128 },
  ])("reads a forward filter 'flipped' as the flipped, transposed copy, bit for bit: x $input → $outChannels channels", ({ input, outChannels }) => {
    const g = geometry(input, [3, 3, input[3]!, outChannels], 'same');
    const { x } = inputs(g, 71 + outChannels);
    // A forward filter [3, 3, outChannels, inChannels] and, by the definition, this convolution's filter.
    const forward = randomValues(9 * g.inChannels * g.outChannels, 72 + outChannels);
    const flipped = new Float32Array(forward.length);
    for (let kh = 0; kh < 3; kh++) {
      for (let kw = 0; kw < 3; kw++) {
        for (let ci = 0; ci < g.inChannels; ci++) {
          for (let co = 0; co < g.outChannels; co++) {
            flipped[((kh * 3 + kw) * g.inChannels + ci) * g.outChannels + co] = forward[(((2 - kh) * 3 + (2 - kw)) * g.outChannels + co) * g.inChannels + ci]!;
          }
        }
      }
    }
    const want = output(g);
    simdWinogradConvolution(x, flipped, want, g);
    const got = output(g);
    simdWinogradConvolution(x, forward, got, g, 'flipped');
    expect(Array.from(got)).toEqual(Array.from(want));
    expect(relativeError(got, convolutionReference(x, flipped, g))).toBeLessThan(TOLERANCE);
  });

  it('gives zeros for no input channels, by either kernel, instead of running their loops 2³² times', () => {
    const g = geometry([2, 4, 5, 0], [3, 3, 0, 8], 'same');
    expect(winogradChosen(g)).toBe(false);
    for (const compute of [simdConvolution, simdWinogradConvolution]) {
      const y = output(g);
      compute(new Float32Array(0), new Float32Array(0), y, g);
      expect(Array.from(y)).toEqual(new Array(y.length).fill(0));
    }
  });

  it('rejects what it cannot compute, naming the field', () => {
    const g = geometry([1, 4, 4, 4], [3, 3, 4, 4], 'same');
    expect(() => simdWinogradConvolution(new Float32Array(64), new Float32Array(144), new Float32Array(64), { ...g, strideWidth: 2 })).toThrow(/strides must be 1, got 1×2/);
    const wide = geometry([1, 4, 4, 4], [3, 5, 4, 4], 'same');
    expect(() => simdWinogradConvolution(new Float32Array(64), new Float32Array(240), new Float32Array(64), wide)).toThrow(/filter must be 3×3, got 3×5/);
    const odd = geometry([1, 4, 4, 5], [3, 3, 5, 4], 'same');
    expect(() => simdWinogradConvolution(new Float32Array(80), new Float32Array(180), new Float32Array(64), odd)).toThrow(/inChannels must be a multiple of 4, got 5/);
    expect(() => simdWinogradConvolution(new Float32Array(63), new Float32Array(144), new Float32Array(64), g)).toThrow(/x has 63 values, expected 64/);
    expect(() => simdWinogradConvolution(new Float32Array(64), new Float32Array(144), new Float32Array(64), g, 'mirrored' as 'flipped')).toThrow(/filter must be 'as-is' or 'flipped', got 'mirrored'/);
  });

  describe('routing: which convolutions simdConvolution computes by Winograd', () => {
    afterAll(() => {
      setWinogradConvolution('auto');
    });

    it.each([
      // The recipe's stride-1 3 × 3 layers (forward and input gradient): Winograd.
      { input: [32, 28, 28, 16], filter: [3, 3, 16, 16], strides: 1, chosen: true },
      { input: [32, 14, 14, 32], filter: [3, 3, 32, 32], strides: 1, chosen: true },
      { input: [32, 7, 7, 64], filter: [3, 3, 64, 64], strides: 1, chosen: true },
      { input: [32, 4, 4, 128], filter: [3, 3, 128, 128], strides: 1, chosen: true },
      { input: [32, 2, 2, 64], filter: [3, 3, 64, 64], strides: 1, chosen: true },
      // The stem (1 input channel), 17 channels, stride 2, 5 × 5 and 1 × 1 filters: direct.
      { input: [32, 28, 28, 1], filter: [3, 3, 1, 16], strides: 1, chosen: false },
      { input: [32, 28, 28, 17], filter: [3, 3, 17, 16], strides: 1, chosen: false },
      { input: [32, 28, 28, 16], filter: [3, 3, 16, 32], strides: 2, chosen: false },
      { input: [32, 28, 28, 16], filter: [5, 5, 16, 16], strides: 1, chosen: false },
      { input: [32, 28, 28, 16], filter: [1, 1, 16, 16], strides: 1, chosen: false },
      // Small calls, and most of the tiles' outputs padding: Winograd still measured faster.
      { input: [1, 7, 7, 64], filter: [3, 3, 64, 64], strides: 1, chosen: true },
      { input: [32, 3, 3, 64], filter: [3, 3, 64, 64], strides: 1, chosen: true },
      { input: [32, 1, 1, 128], filter: [3, 3, 128, 128], strides: 1, chosen: true },
    ])('x $input, filter $filter, stride $strides: Winograd $chosen', ({ input, filter, strides, chosen }) => {
      const g = geometry(input, filter, 'same', strides);
      expect(winogradChosen(g)).toBe(chosen);
      expect(simdWinogradSupports(g)).toBe(chosen);
      setWinogradConvolution(false);
      expect(winogradChosen(g)).toBe(false);
      setWinogradConvolution('auto');
    });

    it("takes Winograd's outputs, bit for bit, where it is chosen, and the direct kernel's elsewhere", () => {
      const run = (g: SimdGeometry, compute: (x: Float32Array, w: Float32Array, y: Float32Array) => void) => {
        const { x, w } = inputs(g, 53);
        const y = output(g);
        compute(x, w, y);
        return Array.from(y);
      };
      const direct = (x: Float32Array, w: Float32Array, y: Float32Array, g: SimdGeometry) => {
        setWinogradConvolution(false);
        try {
          simdConvolution(x, w, y, g);
        } finally {
          setWinogradConvolution('auto');
        }
      };
      const chosen = geometry([4, 6, 6, 8], [3, 3, 8, 8], 'same');
      expect(winogradChosen(chosen)).toBe(true);
      const routed = run(chosen, (x, w, y) => simdConvolution(x, w, y, chosen));
      expect(routed).toEqual(run(chosen, (x, w, y) => simdWinogradConvolution(x, w, y, chosen)));
      // The two differ in rounding somewhere, so the comparison above tells them apart.
      expect(routed).not.toEqual(run(chosen, (x, w, y) => direct(x, w, y, chosen)));
      // 6 input channels: not whole vectors of 4, so the direct kernel.
      const other = geometry([2, 5, 3, 6], [3, 3, 6, 8], 'same');
      expect(winogradChosen(other)).toBe(false);
      expect(run(other, (x, w, y) => simdConvolution(x, w, y, other))).toEqual(run(other, (x, w, y) => direct(x, w, y, other)));
    });
  });
});

describe("a small model's gradients on wasm, by Winograd and by the direct kernel", () => {
  beforeAll(async () => {
    await tf.setBackend('wasm');
    // Conv2D, and the input gradient that runs a stride-1 one through it.
    registerKernels('wasm', [tf.Conv2D, tf.Conv2DBackpropInput, tf.Conv2DBackpropFilter]);
  });
  afterAll(async () => {
    setWinogradConvolution('auto');
    unregisterKernels('wasm', [tf.Conv2D, tf.Conv2DBackpropInput, tf.Conv2DBackpropFilter]);
    await tf.setBackend('wasm');
  });

  /** Loss and gradients of two stride-1 3 × 3 convolutions with a ReLU between, then a weighted sum. */
  function lossAndGradients(): Float32Array[] {
    return tf.tidy(() => {
      const x = tf.tensor4d(randomValues(4 * 10 * 9 * 8, 61), [4, 10, 9, 8]);
      const w1 = tf.tensor4d(randomValues(9 * 8 * 16, 62), [3, 3, 8, 16]);
      const w2 = tf.tensor4d(randomValues(9 * 16 * 12, 63), [3, 3, 16, 12]);
      const u = tf.tensor4d(randomValues(4 * 10 * 9 * 12, 64), [4, 10, 9, 12]);
      const loss = (a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) =>
        tf.sum(tf.mul(tf.conv2d(tf.relu(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 1, 'same')), c as tf.Tensor4D, 1, 'same'), u));
      const { value, grads } = tf.valueAndGrads(loss)([x, w1, w2]);
      return [value, ...grads].map((tensor) => tensor.dataSync() as Float32Array);
    });
  }

  it('agree within the tolerance, and nothing is leaked', () => {
    const before = tf.memory().numTensors;
    setWinogradConvolution(false);
    const direct = lossAndGradients();
    setWinogradConvolution(true);
    const winograd = lossAndGradients();
    expect(tf.memory().numTensors).toBe(before);
    for (const [index, values] of winograd.entries()) {
      // The loss sums values of both signs, so its relative error is larger (measured 8.5e-7; the
      // gradients 2.9e-7 to 3.4e-7).
      expect(relativeError(values, direct[index]!), ['loss', 'dx', 'dw1', 'dw2'][index]).toBeLessThan(index === 0 ? 5e-6 : TOLERANCE);
    }
    // Not the same computation: some value differs in its last bits.
    expect(winograd.some((values, index) => Array.from(values).some((value, at) => value !== direct[index]![at]))).toBe(true);
  });
});
