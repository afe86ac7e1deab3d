/**
 * Batch normalisation as two kernels (wasm and cpu), for `@regstack/models`: the forward pass
 * (statistics, the affine map, optionally the ReLU after it, the new running statistics) and its
 * gradient (dx, dγ, dβ). Each is two passes over the values in place, with every per-channel number
 * computed in float64 inside the kernel: TF.js's ops spend about 30 kernel calls a layer on this, most
 * of them on [channels]-sized tensors, whose engine bookkeeping cost more than the arithmetic (see
 * tools/bench/README.md, issue 18). The passes are the loops below on cpu and WebAssembly SIMD on wasm
 * (simd/batch-norm.ts): against the tf-op form, a recipe step with these loops took 0.98× the time,
 * with SIMD elementwise passes 0.92× (one process, interleaved), since scalar JavaScript loses to
 * XNNPACK's elementwise ops pass for pass.
 *
 * `@regstack/models` calls them by name when both are registered for the active backend and the
 * gradient is registered (`registerKernels` does both), outside nested tapes; otherwise it computes the
 * same with tf ops. The names, inputs, attributes and outputs below are that contract.
 */
import * as tf from '@tensorflow/tfjs-core';
import { DataError } from '@regstack/regularizer';
import { channelSums } from './channel-reductions.js';

/**
 * Inputs `x` (float32, rank ≥ 2, channels last), `gamma`, `beta`, `runningMean`, `runningVariance`
 * (each [channels]), and with attribute `residual` also `residual` (x's shape); attributes
 * {@link BatchNormAttributes}. Outputs `[y, mean, inverseStd]`, and in mode `'train'` also
 * `[newRunningMean, newRunningVariance]`:
 * - `mean`, `inverseStd` ([channels]): the statistics `y` was normalised with, the batch's
 *   (`'train'`, `'frozen-stats'`: mean and 1/√(biased variance + ε)) or the running ones (`'eval'`);
 * - `y = x·γ·inverseStd + (β − mean·γ·inverseStd)`, plus `residual` (a residual block's shortcut),
 *   then max(0, ·) with `relu`;
 * - `newRunningMean = (1 − momentum)·runningMean + momentum·mean` and the same for the variance
 *   with the UNBIASED batch variance n/(n − 1)·σ², PyTorch's convention.
 *
 * Its gradient (registered with it) is {@link BATCH_NORM_GRAD_KERNEL}'s.
 */
export const BATCH_NORM_KERNEL = 'RegstackBatchNorm';
/**
 * Inputs `dy`, `x`, `y` (the forward's input and output, the same shape), `gamma`, `mean`,
 * `inverseStd` (the forward's outputs); attributes `relu`, `batchStatistics` (false in mode
 * `'eval'`, where the statistics are constants) and optionally `residual`. Outputs
 * `[dx, dGamma, dBeta]`, and with `residual` also `dResidual` = g, with g = dy (times [y > 0] with
 * `relu`) and x̂ = (x − mean)·inverseStd: dβ = Σg, dγ = Σg·x̂, and dx = γ·inverseStd·g minus, with
 * batch statistics, the gradient through the mean and variance (γ·inverseStd/n·(Σg + x̂·dγ)).
 */
export const BATCH_NORM_GRAD_KERNEL = 'RegstackBatchNormGrad';
/** Both kernel names. */
export const BATCH_NORM_KERNEL_NAMES = [BATCH_NORM_KERNEL, BATCH_NORM_GRAD_KERNEL] as const;

/** The modes of {@link BATCH_NORM_KERNEL}, those of `@regstack/models`' `ModelMode`. */
export const BATCH_NORM_MODES = ['train', 'frozen-stats', 'eval'] as const;

/** Attributes of {@link BATCH_NORM_KERNEL}. */
export interface BatchNormAttributes {
  /** `'train'`, `'frozen-stats'` (batch statistics, running ones untouched) or `'eval'` (running statistics). */
  mode: (typeof BATCH_NORM_MODES)[number];
  /** Added to the variance under the square root. */
  epsilon: number;
  /** Weight of the batch in the new running statistics (mode `'train'`). */
  momentum: number;
  /** Whether a ReLU follows the normalisation. */
  relu: boolean;
  /**
   * Whether input `residual` is added before the ReLU (default false). An attribute, not only the
   * input's presence, so that the registered gradient knows to return the residual's.
   */
  residual?: boolean;
}

/** Channels of `x` after checking it is a float32 tensor with rank ≥ 2 and at least one channel. */
export function activationChannels(kernelName: string, name: string, x: tf.TensorInfo | undefined): number {
  if (x === undefined) throw new DataError(name, `${kernelName} needs input '${name}'`);
  if (x.dtype !== 'float32') throw new DataError(name, `${kernelName} needs float32, got ${x.dtype}`);
  const channels = x.shape.at(-1);
  if (x.shape.length < 2 || channels === undefined || channels === 0) {
    throw new DataError(name, `${kernelName} needs rank ≥ 2 and at least one channel (last axis), got shape [${x.shape}]`);
  }
  return channels;
}

/** Checks that input `name` is a float32 tensor of `shape`. */
export function expectInput(kernelName: string, name: string, input: tf.TensorInfo | undefined, shape: readonly number[]): tf.TensorInfo {
  if (input === undefined) throw new DataError(name, `${kernelName} needs input '${name}'`);
  if (input.dtype !== 'float32') throw new DataError(name, `${kernelName} needs float32, got ${input.dtype}`);
  if (!tf.util.arraysEqual(input.shape, shape as number[])) {
    throw new DataError(name, `${kernelName} needs shape [${shape}], got [${input.shape}]`);
  }
  return input;
}

/**
 * Rows of a block: the loops below walk a block of up to 64 rows four channels at a time (their
 * coefficients in registers), which stays in the first-level cache, as channel-reductions.ts does.
 * Measured on [32, 28, 28, 16] in Node 20: 2× faster than row by row with the coefficients read from
 * arrays, and 3–4× faster than branching on the sign (`v < 0 ? 0 : v`): the signs of a normalised
 * activation are a coin toss, so V8's branches mispredict half the time; `v * (v > 0)` does not branch.
 */
const BLOCK_ROWS = 64;

/**
 * y = x·scale[c] + shift[c] (plus `residual`, then max(0, ·) with `relu`) over [rows, channels]
 * row-major values. NaN stays NaN through the ReLU (NaN·0), so a diverging step still shows in the
 * loss; `+ 0` turns the −0 of a negative value times 0 into 0.
 */
export function affine(x: Float32Array, scale: Float64Array, shift: Float64Array, relu: boolean, y: Float32Array, residual?: Float32Array): void {
  const channels = scale.length;
  const length = x.length;
  const blockLength = BLOCK_ROWS * channels;
  const unrolled = channels - (channels % 4);
  for (let start = 0; start < length; start += blockLength) {
    const end = Math.min(length, start + blockLength);
    for (let channel = 0; channel < unrolled; channel += 4) {
      const a0 = scale[channel]!, a1 = scale[channel + 1]!, a2 = scale[channel + 2]!, a3 = scale[channel + 3]!;
      const b0 = shift[channel]!, b1 = shift[channel + 1]!, b2 = shift[channel + 2]!, b3 = shift[channel + 3]!;
      if (residual !== undefined) {
        // Rounded to float32 before the residual is added, as the tf ops (mul, add, add) round.
        for (let index = start + channel; index < end; index += channels) {
          const v0 = Math.fround(x[index]! * a0 + b0) + residual[index]!, v1 = Math.fround(x[index + 1]! * a1 + b1) + residual[index + 1]!;
          const v2 = Math.fround(x[index + 2]! * a2 + b2) + residual[index + 2]!, v3 = Math.fround(x[index + 3]! * a3 + b3) + residual[index + 3]!;
          y[index] = relu ? v0 * +(v0 > 0) + 0 : v0;
          y[index + 1] = relu ? v1 * +(v1 > 0) + 0 : v1;
          y[index + 2] = relu ? v2 * +(v2 > 0) + 0 : v2;
          y[index + 3] = relu ? v3 * +(v3 > 0) + 0 : v3;
        }
      } else if (relu) {
        for (let index = start + channel; index < end; index += channels) {
          const v0 = x[index]! * a0 + b0, v1 = x[index + 1]! * a1 + b1, v2 = x[index + 2]! * a2 + b2, v3 = x[index + 3]! * a3 + b3;
          y[index] = v0 * +(v0 > 0) + 0;
          y[index + 1] = v1 * +(v1 > 0) + 0;
          y[index + 2] = v2 * +(v2 > 0) + 0;
          y[index + 3] = v3 * +(v3 > 0) + 0;
        }
      } else {
        for (let index = start + channel; index < end; index += channels) {
          y[index] = x[index]! * a0 + b0;
          y[index + 1] = x[index + 1]! * a1 + b1;
          y[index + 2] = x[index + 2]! * a2 + b2;
          y[index + 3] = x[index + 3]! * a3 + b3;
        }
      }
    }
    for (let channel = unrolled; channel < channels; channel++) {
      const a = scale[channel]!, b = shift[channel]!;
      for (let index = start + channel; index < end; index += channels) {
        const value = residual === undefined ? x[index]! * a + b : Math.fround(x[index]! * a + b) + residual[index]!;
        y[index] = relu ? value * +(value > 0) + 0 : value;
      }
    }
  }
}

/**
 * Per-channel Σg and Σg·x with g = dy where y > 0 and 0 elsewhere (the gradient through a ReLU whose
 * output is `y`), blocked and four channels at a time as `channelSums`; with `gOutput`, g is written
 * there too (a residual's gradient, which the dx pass then reads instead of dy and y).
 */
export function maskedChannelSums(
  dy: Float32Array,
  x: Float32Array,
  y: Float32Array,
  channels: number,
  sums: Float64Array,
  products: Float64Array,
  gOutput?: Float32Array,
): void {
  const length = dy.length;
  const blockLength = BLOCK_ROWS * channels;
  const unrolled = channels - (channels % 4);
  for (let start = 0; start < length; start += blockLength) {
    const end = Math.min(length, start + blockLength);
    for (let channel = 0; channel < unrolled; channel += 4) {
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      let p0 = 0, p1 = 0, p2 = 0, p3 = 0;
      for (let index = start + channel; index < end; index += channels) {
        const g0 = dy[index]! * +(y[index]! > 0);
        const g1 = dy[index + 1]! * +(y[index + 1]! > 0);
        const g2 = dy[index + 2]! * +(y[index + 2]! > 0);
        const g3 = dy[index + 3]! * +(y[index + 3]! > 0);
        if (gOutput !== undefined) {
          gOutput[index] = g0;
          gOutput[index + 1] = g1;
          gOutput[index + 2] = g2;
          gOutput[index + 3] = g3;
        }
        s0 += g0;
        s1 += g1;
        s2 += g2;
        s3 += g3;
        p0 += g0 * x[index]!;
        p1 += g1 * x[index + 1]!;
        p2 += g2 * x[index + 2]!;
        p3 += g3 * x[index + 3]!;
      }
      sums[channel]! += s0;
      sums[channel + 1]! += s1;
      sums[channel + 2]! += s2;
      sums[channel + 3]! += s3;
      products[channel]! += p0;
      products[channel + 1]! += p1;
      products[channel + 2]! += p2;
      products[channel + 3]! += p3;
    }
    for (let channel = unrolled; channel < channels; channel++) {
      let sum = 0;
      let product = 0;
      for (let index = start + channel; index < end; index += channels) {
        const g = dy[index]! * +(y[index]! > 0);
        if (gOutput !== undefined) gOutput[index] = g;
        sum += g;
        product += g * x[index]!;
      }
      sums[channel]! += sum;
      products[channel]! += product;
    }
  }
}

/**
 * dx = g·a[c] + x·b[c] + k[c] with g = dy (times [y > 0] when `y` is given), over [rows, channels]
 * row-major values.
 */
export function inputGradient(
  dy: Float32Array,
  x: Float32Array,
  y: Float32Array | undefined,
  a: Float64Array,
  b: Float64Array,
  k: Float64Array,
  dx: Float32Array,
): void {
  const channels = a.length;
  const length = dy.length;
  const blockLength = BLOCK_ROWS * channels;
  const unrolled = channels - (channels % 4);
  for (let start = 0; start < length; start += blockLength) {
    const end = Math.min(length, start + blockLength);
    for (let channel = 0; channel < unrolled; channel += 4) {
      const a0 = a[channel]!, a1 = a[channel + 1]!, a2 = a[channel + 2]!, a3 = a[channel + 3]!;
      const b0 = b[channel]!, b1 = b[channel + 1]!, b2 = b[channel + 2]!, b3 = b[channel + 3]!;
      const k0 = k[channel]!, k1 = k[channel + 1]!, k2 = k[channel + 2]!, k3 = k[channel + 3]!;
      if (y !== undefined) {
        for (let index = start + channel; index < end; index += channels) {
          dx[index] = dy[index]! * +(y[index]! > 0) * a0 + x[index]! * b0 + k0;
          dx[index + 1] = dy[index + 1]! * +(y[index + 1]! > 0) * a1 + x[index + 1]! * b1 + k1;
          dx[index + 2] = dy[index + 2]! * +(y[index + 2]! > 0) * a2 + x[index + 2]! * b2 + k2;
          dx[index + 3] = dy[index + 3]! * +(y[index + 3]! > 0) * a3 + x[index + 3]! * b3 + k3;
        }
      } else {
        for (let index = start + channel; index < end; index += channels) {
          dx[index] = dy[index]! * a0 + x[index]! * b0 + k0;
          dx[index + 1] = dy[index + 1]! * a1 + x[index + 1]! * b1 + k1;
          dx[index + 2] = dy[index + 2]! * a2 + x[index + 2]! * b2 + k2;
          dx[index + 3] = dy[index + 3]! * a3 + x[index + 3]! * b3 + k3;
        }
      }
    }
    for (let channel = unrolled; channel < channels; channel++) {
      const aValue = a[channel]!, bValue = b[channel]!, kValue = k[channel]!;
      for (let index = start + channel; index < end; index += channels) {
        const g = y === undefined ? dy[index]! : dy[index]! * +(y[index]! > 0);
        dx[index] = g * aValue + x[index]! * bValue + kValue;
      }
    }
  }
}

/** Per-channel Σg and Σg·x, then dγ, dβ and the coefficients of dx = g·a + x·b + k. */
export function gradientCoefficients(
  sums: Float64Array,
  products: Float64Array,
  gamma: Float32Array,
  mean: Float32Array,
  inverseStd: Float32Array,
  count: number,
  batchStatistics: boolean,
) {
  const channels = sums.length;
  const dGamma = new Float64Array(channels);
  const a = new Float64Array(channels);
  const b = new Float64Array(channels);
  const k = new Float64Array(channels);
  for (let channel = 0; channel < channels; channel++) {
    const s = inverseStd[channel]!;
    const mu = mean[channel]!;
    const sum = sums[channel]!;
    dGamma[channel] = s * (products[channel]! - mu * sum);
    const scale = gamma[channel]! * s;
    a[channel] = scale;
    if (batchStatistics) {
      const bValue = (-scale * s * dGamma[channel]!) / count;
      b[channel] = bValue;
      k[channel] = (-scale * sum) / count - bValue * mu;
    }
  }
  return { dGamma, a, b, k };
}
