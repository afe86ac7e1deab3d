/**
 * Per-channel reductions over every axis but the last, as loops over the values (wasm and cpu): the
 * statistics of batch normalisation and the sums of its gradient. TF.js reduces over the outer axes of
 * an NHWC activation by transposing it first; these read it once, in place (see the README for the
 * measurements). Elementwise work stays with the backend's own (XNNPACK) ops, which are faster than
 * scalar JavaScript.
 *
 * `@regstack/models` calls them by name when they are registered for the active backend and falls back
 * to tf ops otherwise; the names and semantics below are that contract. The kernels themselves are
 * kernels/channel-moments.ts and kernels/channel-sums.ts.
 */
import * as tf from '@tensorflow/tfjs-core';

/**
 * `x` (float32, rank ≥ 2, channels last) → `[mean, variance]`, both [channels]: the mean and the BIASED
 * variance over every axis but the last, accumulated in float64 (E[x²] − E[x]² in float64, clamped at 0).
 */
export const CHANNEL_MOMENTS_KERNEL = 'RegstackChannelMoments';
/** `a`, `b` (float32, the same shape, channels last) → `[Σa, Σa·b]`, both [channels], sums in float64. */
export const CHANNEL_SUMS_KERNEL = 'RegstackChannelSums';
/** Both kernel names. */
export const CHANNEL_REDUCTION_KERNEL_NAMES = [CHANNEL_MOMENTS_KERNEL, CHANNEL_SUMS_KERNEL] as const;

/** Rows of a block: 64 rows of up to 64 channels stay in the first-level cache while 4 channels at a time sum over them. */
const BLOCK_ROWS = 64;

/**
 * Per-channel Σa and Σa·b over the rows of `a` and `b` ([rows, channels] row-major); `b === a` gives Σa².
 * Blocked so that each channel's strided walk stays in cache, four channels in registers at a time
 * (measured 2.3× faster than one pass with the accumulators in arrays).
 */
export function channelSums(a: Float32Array, b: Float32Array, channels: number, sums: Float64Array, products: Float64Array): void {
  const length = a.length;
  const blockLength = BLOCK_ROWS * channels;
  const unrolled = channels - (channels % 4);
  for (let start = 0; start < length; start += blockLength) {
    const end = Math.min(length, start + blockLength);
    for (let channel = 0; channel < unrolled; channel += 4) {
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      let p0 = 0, p1 = 0, p2 = 0, p3 = 0;
      for (let index = start + channel; index < end; index += channels) {
        const a0 = a[index]!, a1 = a[index + 1]!, a2 = a[index + 2]!, a3 = a[index + 3]!;
        s0 += a0;
        s1 += a1;
        s2 += a2;
        s3 += a3;
        p0 += a0 * b[index]!;
        p1 += a1 * b[index + 1]!;
        p2 += a2 * b[index + 2]!;
        p3 += a3 * b[index + 3]!;
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
        sum += a[index]!;
        product += a[index]! * b[index]!;
      }
      sums[channel]! += sum;
      products[channel]! += product;
    }
  }
}

/** Channels of input `name` of `kernelName`, after checking it is there with rank ≥ 2 and at least one channel. */
export function channelsOf(kernelName: string, x: tf.TensorInfo | undefined, name: string): number {
  if (x === undefined) throw new Error(`${kernelName}: input '${name}' is missing`);
  const channels = x.shape.at(-1);
  if (x.shape.length < 2 || channels === undefined || channels === 0) {
    throw new Error(`${kernelName}: '${name}' must have rank ≥ 2 and at least one channel, got shape [${x.shape}]`);
  }
  return channels;
}
