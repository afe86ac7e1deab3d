/**
 * `RegstackChannelSums` (wasm and cpu): per-channel Σa and Σa·b in one pass over the values in place, for
 * the gradient of `@regstack/models`' batch normalisation (see ops/channel-reductions.ts).
 */
import * as tf from '@tensorflow/tfjs-core';
import { CHANNEL_SUMS_KERNEL, channelSums, channelsOf } from '../ops/channel-reductions.js';
import { float32Buffers } from '../typed-array-backend.js';
import type { BackendKernelConfig } from './registry.js';

const kernelFunc: tf.KernelFunc = ({ inputs, backend }) => {
  const { a, b } = inputs as Record<string, tf.TensorInfo | undefined>;
  const channels = channelsOf(CHANNEL_SUMS_KERNEL, a, 'a');
  channelsOf(CHANNEL_SUMS_KERNEL, b, 'b');
  if (!tf.util.arraysEqual(a!.shape, b!.shape)) throw new Error(`${CHANNEL_SUMS_KERNEL}: a has shape [${a!.shape}], b [${b!.shape}]`);
  const buffers = float32Buffers(CHANNEL_SUMS_KERNEL, backend as tf.KernelBackend, [a!, b!], [[channels], [channels]]);
  const [aValues, bValues] = buffers.inputs as [Float32Array, Float32Array];
  const [sum, product] = buffers.outputs as [(typeof buffers.outputs)[0], (typeof buffers.outputs)[0]];
  const sums = new Float64Array(channels);
  const products = new Float64Array(channels);
  channelSums(aValues, bValues, channels, sums, products);
  sum.values.set(sums);
  product.values.set(products);
  return [sum.info, product.info];
};

export const channelSumsConfig: BackendKernelConfig = {
  kernelName: CHANNEL_SUMS_KERNEL,
  backends: ['wasm', 'cpu'],
  defaultBackends: ['wasm', 'cpu'],
  kernelFunc,
};
