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

/**
 * Every (output position, filter tap) pair of a convolution whose input position is in range (the
 * padding's taps left out), as offsets in floats: `x` of the input position's first channel, `y` of
 * the output position's first channel (dy's for the gradients), `tap` of the tap's first [input][output]
 * channel pair in the filter. The three float64 references below sum over these.
 */
function forEachTap(g: SimdGeometry, visit: (x: number, y: number, tap: number) => void): void {
  for (let b = 0; b < g.batchSize; b++) {
    for (let oh = 0; oh < g.outHeight; oh++) {
      for (let ow = 0; ow < g.outWidth; ow++) {
        const y = ((b * g.outHeight + oh) * g.outWidth + ow) * g.outChannels;
        for (let kh = 0; kh < g.filterHeight; kh++) {
          const row = oh * g.strideHeight + kh - g.padTop;
          if (row < 0 || row >= g.inHeight) continue;
          for (let kw = 0; kw < g.filterWidth; kw++) {
            const column = ow * g.strideWidth + kw - g.padLeft;
            if (column < 0 || column >= g.inWidth) continue;
            visit(((b * g.inHeight + row) * g.inWidth + column) * g.inChannels, y, (kh * g.filterWidth + kw) * g.inChannels * g.outChannels);
          }
        }
      }
    }
  }
}

/** For this package's tests: the convolution's definition, summed in float64. */
export function convolutionReference(x: Float32Array, w: Float32Array, g: SimdGeometry): Float64Array {
  const y = new Float64Array(g.batchSize * g.outHeight * g.outWidth * g.outChannels);
  forEachTap(g, (input, output, tap) => {
    for (let ci = 0; ci < g.inChannels; ci++) {
      const xValue = x[input + ci]!;
      for (let co = 0; co < g.outChannels; co++) y[output + co]! += xValue * w[tap + ci * g.outChannels + co]!;
    }
  });
  return y;
}

/** For this package's tests: the filter gradient's definition, summed in float64: dW[kh,kw,ci,co] = Σ x[b, oh·s+kh−top, ow·s+kw−left, ci] · dy[b, oh, ow, co]. */
export function filterGradientReference(x: Float32Array, dy: Float32Array, g: SimdGeometry): Float64Array {
  const dw = new Float64Array(g.filterHeight * g.filterWidth * g.inChannels * g.outChannels);
  forEachTap(g, (input, output, tap) => {
    for (let ci = 0; ci < g.inChannels; ci++) {
      const xValue = x[input + ci]!;
      for (let co = 0; co < g.outChannels; co++) dw[tap + ci * g.outChannels + co]! += xValue * dy[output + co]!;
    }
  });
  return dw;
}

/**
 * For this package's tests: the input gradient's definition, summed in float64, for the forward
 * convolution of geometry `g` (filter `w` as it was applied, not flipped): every dy value goes back along
 * the taps that produced it, dx[b, oh·s+kh−top, ow·s+kw−left, ci] += w[kh,kw,ci,co] · dy[b, oh, ow, co].
 */
export function inputGradientReference(dy: Float32Array, w: Float32Array, g: SimdGeometry): Float64Array {
  const dx = new Float64Array(g.batchSize * g.inHeight * g.inWidth * g.inChannels);
  forEachTap(g, (input, output, tap) => {
    for (let ci = 0; ci < g.inChannels; ci++) {
      let sum = 0;
      for (let co = 0; co < g.outChannels; co++) sum += w[tap + ci * g.outChannels + co]! * dy[output + co]!;
      dx[input + ci]! += sum;
    }
  });
  return dx;
}
