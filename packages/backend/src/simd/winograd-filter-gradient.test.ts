import '@tensorflow/tfjs-backend-wasm';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { relativeError } from '@regstack/regularizer/testing';
import { randomValues } from '../test-values.js';
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
import { setWinogradConvolution } from './winograd.js';
import { registerKernels, unregisterKernels } from '../kernels/register-kernels.js';

/** The definition (3 × 3 filter, stride 1), summed in float64: dW[kh,kw,ci,co] = Σ x[b, oh+kh−top, ow+kw−left, ci] · dy[b, oh, ow, co]. */
function reference(x: Float32Array, dy: Float32Array, g: SimdGeometry): Float64Array {
  const dw = new Float64Array(9 * g.inChannels * g.outChannels);
  for (let b = 0; b < g.batchSize; b++) {
    for (let oh = 0; oh < g.outHeight; oh++) {
      for (let ow = 0; ow < g.outWidth; ow++) {
        const source = ((b * g.outHeight + oh) * g.outWidth + ow) * g.outChannels;
        for (let kh = 0; kh < 3; kh++) {
          const row = oh + kh - g.padTop;
          if (row < 0 || row >= g.inHeight) continue;
          for (let kw = 0; kw < 3; kw++) {
            const column = ow + kw - g.padLeft;
            if (column < 0 || column >= g.inWidth) continue;
            for (let ci = 0; ci < g.inChannels; ci++) {
              const xValue = x[((b * g.inHeight + row) * g.inWidth + column) * g.inChannels + ci]!;
              const tap = ((kh * 3 + kw) * g.inChannels + ci) * g.outChannels;
              for (let co = 0; co < g.outChannels; co++) dw[tap + co]! += xValue * dy[source + co]!;
            }
          }
        }
      }
    }
  }
  return dw;
}

function geometry(input: number[], filter: number[], pad: 'same' | 'valid' | number, strides = 1): SimdGeometry {
  const info = tf.backend_util.computeConv2DInfo(input as [number, number, number, number], filter as [number, number, number, number], strides, 1, pad);
  return { ...info, padTop: info.padInfo.top, padLeft: info.padInfo.left };
}

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
 * Relative error (of dW's norm) allowed against the float64 definition, for both forms. Measured on
 * these cases (values in [−0.5, 0.5)): see the test below's expectations.
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
      const want = reference(x, dy, g);
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
      expect(relativeError(got, reference(x, dy, g))).toBeLessThan(TOLERANCE);
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
