/**
 * wasm's shipped `Identity` copies the values; TF.js calls it for every tensor a customGrad or a
 * gradient saves for the backward pass. Tensors are immutable and the wasm backend counts references
 * (its `Reshape` shares data the same way), so sharing the data is enough. Not on cpu by default: the
 * cpu backend's own `Identity` already shares.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { BackendKernelConfig } from './registry.js';

const kernelFunc: tf.KernelFunc = ({ inputs, backend }) => {
  const { x } = inputs as tf.IdentityInputs;
  (backend as unknown as { incRef(dataId: tf.DataId): void }).incRef(x!.dataId);
  return { dataId: x!.dataId, shape: x!.shape, dtype: x!.dtype };
};

export const identityConfig: BackendKernelConfig = {
  kernelName: tf.Identity,
  backends: ['wasm', 'cpu'],
  defaultBackends: ['wasm'],
  kernelFunc,
};
