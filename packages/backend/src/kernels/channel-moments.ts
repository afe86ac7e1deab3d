/**
 * `RegstackChannelMoments` (wasm and cpu): per-channel mean and biased variance in one pass over the
 * values in place, for `@regstack/models`' batch normalisation (see ops/channel-reductions.ts).
 */
import * as tf from '@tensorflow/tfjs-core';
import { CHANNEL_MOMENTS_KERNEL, channelSums, channelsOf } from '../ops/channel-reductions.js';
import { float32Buffers } from '../typed-array-backend.js';
import type { BackendKernelConfig } from './registry.js';

const kernelFunc: tf.KernelFunc = ({ inputs, backend }) => {
  const { x } = inputs as Record<string, tf.TensorInfo | undefined>;
  const channels = channelsOf(CHANNEL_MOMENTS_KERNEL, x, 'x');
  const buffers = float32Buffers(CHANNEL_MOMENTS_KERNEL, backend as tf.KernelBackend, [x!], [[channels], [channels]]);
  const values = buffers.inputs[0]!;
  const [mean, variance] = buffers.outputs as [(typeof buffers.outputs)[0], (typeof buffers.outputs)[0]];
  const count = values.length / channels;
  const sums = new Float64Array(channels);
  const squares = new Float64Array(channels);
  channelSums(values, values, channels, sums, squares);
  for (let channel = 0; channel < channels; channel++) {
    const channelMean = sums[channel]! / count;
    mean.values[channel] = channelMean;
    // Clamped: rounding can leave a constant channel's E[x²] − E[x]² a hair below 0.
    variance.values[channel] = Math.max(0, squares[channel]! / count - channelMean * channelMean);
  }
  return [mean.info, variance.info];
};

export const channelMomentsConfig: BackendKernelConfig = {
  kernelName: CHANNEL_MOMENTS_KERNEL,
  backends: ['wasm', 'cpu'],
  defaultBackends: ['wasm', 'cpu'],
  kernelFunc,
};
