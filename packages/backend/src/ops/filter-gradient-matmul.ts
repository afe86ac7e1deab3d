/**
 * Two GEMM forms of the Conv2D filter gradient, kept only to be measured against `conv2dFilterGradient`'s
 * `direct` and `convolution` methods in bench/conv-gradients.mjs (both measured slower: see the README's
 * table) and tested in conv-gradients.test.ts. Not part of the package's API.
 *
 * - `im2col`: the filter taps' strided windows of x concatenated into columns, one `matMul`;
 * - `per-tap`: one `matMul` per filter tap.
 */
import * as tf from '@tensorflow/tfjs-core';
import { convolutionInfo, padForWindows, tapWindow, toNhwc, type ConvGradientAttributes } from './conv-gradients.js';

/** A GEMM form of the filter gradient. */
export type MatMulFilterGradientForm = 'im2col' | 'per-tap';

type Rank4 = [number, number, number, number];

/**
 * The filter gradient as `conv2dFilterGradient` computes it, through the GEMM form `form`.
 *
 * @returns The filter gradient, shape `filterShape`; the caller owns it.
 */
export function conv2dFilterGradientByMatMul(form: MatMulFilterGradientForm, x: tf.Tensor4D, dy: tf.Tensor4D, filterShape: Rank4, attributes: ConvGradientAttributes): tf.Tensor4D {
  return tf.tidy(() => {
    const info = convolutionInfo(x.shape, filterShape, attributes);
    const { inChannels, filterHeight, filterWidth } = info;
    const positions = info.batchSize * info.outHeight * info.outWidth;
    const dyMatrix = tf.reshape(toNhwc(dy, attributes.dataFormat), [positions, info.outChannels]);
    const xPadded = padForWindows(toNhwc(x, attributes.dataFormat), info);

    const taps: tf.Tensor4D[] = [];
    for (let row = 0; row < filterHeight; row++) {
      for (let column = 0; column < filterWidth; column++) taps.push(tapWindow(xPadded, info, row, column));
    }
    // dyᵀ·columns rather than columnsᵀ·dy: wasm's matMul with transposeA is ~15x slower than without, and
    // transposing dy (outChannels wide) is cheaper than transposing the columns.
    const dyTransposed = tf.transpose(dyMatrix);
    if (form === 'per-tap') {
      const perTap = taps.map((tap) => tf.matMul(dyTransposed, tf.reshape(tap, [positions, inChannels])));
      const byTap = tf.transpose(tf.stack(perTap), [0, 2, 1]);
      return tf.reshape(byTap, filterShape);
    }
    // Column order (row, column, inChannel) is the row-major order of the filter, so one reshape finishes.
    const columns = taps.length === 1 ? taps[0]! : tf.concat(taps, 3);
    const gradient = tf.matMul(dyTransposed, tf.reshape(columns, [positions, filterHeight * filterWidth * inChannels]));
    return tf.reshape(tf.transpose(gradient), filterShape);
  });
}
