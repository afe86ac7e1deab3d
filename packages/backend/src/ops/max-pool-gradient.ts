import * as tf from '@tensorflow/tfjs-core';

/** Attributes of TF.js's `MaxPoolGrad` kernel (those of the forward `tf.maxPool`). */
export interface MaxPoolGradientAttributes {
  /** Window size: one number for a square window, or [height, width]. */
  filterSize: number | [number, number];
  /** Window step: one number, or [height, width]. */
  strides: number | [number, number];
  /** Padding as `tf.maxPool` takes it. */
  pad: 'valid' | 'same' | number | tf.backend_util.ExplicitPadding;
  /** Rounding of the output size for a numeric `pad`. */
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
}

/**
 * The gradient of a 2-D max-pool (NHWC) w.r.t. its input: each window's upstream gradient goes to the
 * window's FIRST maximum in row-major order, as the cpu backend's `MaxPoolGrad` does; a window with no
 * finite maximum (all −∞ or NaN) passes nothing. Contributions of overlapping windows are summed in
 * float64 in the cpu kernel's order, so the result equals the cpu backend's bit for bit.
 *
 * Written over the tensors' values in JavaScript because wasm's shipped `MaxPoolGrad` (TF.js 4.22)
 * loses whole windows' gradients: on a [64, 32, 32, 32] input, 6% of 2×2 windows get none. One pass
 * over the windows, it also measured 1.3× faster than that kernel there (see the README).
 *
 * @param input The forward pass's input x, [batch, height, width, channels].
 * @param dy The gradient w.r.t. the pooled output.
 * @param attributes The forward pass's window, strides and padding.
 * @returns dx, shaped as `input`.
 */
export function maxPoolGradient(input: tf.Tensor4D, dy: tf.Tensor4D, attributes: MaxPoolGradientAttributes): tf.Tensor4D {
  const info = maxPoolGradientInfo(input.shape, dy.shape, attributes);
  const output = new Float32Array(input.size);
  maxPoolGradientValues(input.dataSync() as Float32Array, dy.dataSync() as Float32Array, info, output);
  return tf.tensor4d(output, input.shape);
}

/** The pooling's geometry, after checking that `dyShape` is what pooling `inputShape` gives. */
export function maxPoolGradientInfo(
  inputShape: [number, number, number, number],
  dyShape: readonly number[],
  attributes: MaxPoolGradientAttributes,
): tf.backend_util.Conv2DInfo {
  const info = tf.backend_util.computePool2DInfo(
    inputShape,
    attributes.filterSize,
    attributes.strides,
    1,
    attributes.pad,
    attributes.dimRoundingMode,
  );
  const expected = [info.batchSize, info.outHeight, info.outWidth, info.outChannels];
  if (!tf.util.arraysEqual([...dyShape], expected)) {
    throw new Error(`maxPoolGradient: dy has shape [${dyShape}], the pooling of [${inputShape}] gives [${expected}]`);
  }
  return info;
}

/**
 * {@link maxPoolGradient} over the values: `output` (shaped as the input, any contents) receives dx.
 * Where windows do not overlap (stride ≥ window, the usual 2×2 pooling) each input position gets at
 * most one contribution, written directly; otherwise contributions are summed in float64.
 */
export function maxPoolGradientValues(values: Float32Array, upstream: Float32Array, info: tf.backend_util.Conv2DInfo, output: Float32Array): void {
  const { inHeight, inWidth, inChannels: channels, outHeight, outWidth, strideHeight, strideWidth } = info;
  const filterHeight = info.effectiveFilterHeight;
  const filterWidth = info.effectiveFilterWidth;
  const { top, left } = info.padInfo;
  const rowStride = inWidth * channels;
  // float64 sums, rounded once: the cpu kernel accumulates in JavaScript numbers too.
  const sums = strideHeight < filterHeight || strideWidth < filterWidth ? new Float64Array(values.length) : undefined;
  output.fill(0);
  let position = 0;
  for (let batch = 0; batch < info.batchSize; batch++) {
    const batchOffset = batch * inHeight;
    for (let outRow = 0; outRow < outHeight; outRow++) {
      const rowCorner = outRow * strideHeight - top;
      const rowStart = Math.max(0, rowCorner);
      const rowEnd = Math.min(inHeight, rowCorner + filterHeight);
      for (let outColumn = 0; outColumn < outWidth; outColumn++) {
        const columnCorner = outColumn * strideWidth - left;
        const columnStart = Math.max(0, columnCorner);
        const columnEnd = Math.min(inWidth, columnCorner + filterWidth);
        const corner = ((batchOffset + rowStart) * inWidth + columnStart) * channels;
        if (sums === undefined && rowEnd - rowStart === 2 && columnEnd - columnStart === 2) {
          // The usual 2×2 window, unrolled; the same first-maximum rule as below.
          for (let channel = 0; channel < channels; channel++, position++) {
            const i0 = corner + channel;
            const i1 = i0 + channels;
            const i2 = i0 + rowStride;
            const i3 = i2 + channels;
            let best = Number.NEGATIVE_INFINITY;
            let bestIndex = -1;
            if (values[i0]! > best) (best = values[i0]!), (bestIndex = i0);
            if (values[i1]! > best) (best = values[i1]!), (bestIndex = i1);
            if (values[i2]! > best) (best = values[i2]!), (bestIndex = i2);
            if (values[i3]! > best) bestIndex = i3;
            if (bestIndex >= 0) output[bestIndex] = upstream[position]! + 0;
          }
          continue;
        }
        for (let channel = 0; channel < channels; channel++, position++) {
          let best = Number.NEGATIVE_INFINITY;
          let bestIndex = -1;
          // Strictly greater, in row-major order: the FIRST maximum wins, and NaN never does.
          for (let row = rowStart, rowIndex = corner + channel; row < rowEnd; row++, rowIndex += rowStride) {
            for (let column = columnStart, index = rowIndex; column < columnEnd; column++, index += channels) {
              if (values[index]! > best) {
                best = values[index]!;
                bestIndex = index;
              }
            }
          }
          if (bestIndex < 0) continue;
          // + 0 turns −0 into +0, as the cpu kernel's sum from 0 does.
          if (sums === undefined) output[bestIndex] = upstream[position]! + 0;
          else sums[bestIndex]! += upstream[position]!;
        }
      }
    }
  }
  if (sums !== undefined) output.set(sums);
}
