/**
 * wasm's shipped `Cast` copies the values even when the dtype does not change, and TF.js casts to the
 * dtype a tensor already has on every ReLU gradient (`dy · cast(step(x), 'float32')`) and in the
 * optimizers: one copy of a whole activation per ReLU. A cast to the same dtype shares the data with a
 * reference count, as our `Identity` does; any other cast is the shipped kernel's. Not on cpu by
 * default: the cpu backend's own `Cast` already shares in that case.
 */
import * as tf from '@tensorflow/tfjs-core';
import { shippedKernel, type BackendKernelConfig } from './registry.js';

const kernelFunc: tf.KernelFunc = (args) => {
  const { x } = args.inputs as tf.CastInputs;
  const { dtype } = args.attrs as unknown as tf.CastAttrs;
  if (dtype === x!.dtype) {
    (args.backend as unknown as { incRef(dataId: tf.DataId): void }).incRef(x!.dataId);
    return { dataId: x!.dataId, shape: x!.shape, dtype };
  }
  return shippedKernel('wasm', tf.Cast, args.backend).kernelFunc(args);
};

export const castConfig: BackendKernelConfig = {
  kernelName: tf.Cast,
  backends: ['wasm'],
  defaultBackends: ['wasm'],
  kernelFunc,
};
