/**
 * `MaxPoolGrad` on wasm, in place on the backend's memory: TF.js 4.22's wasm kernel loses whole windows'
 * gradients (see `maxPoolGradient`). Not on cpu by default: the cpu backend's is correct (ours equals it
 * exactly).
 */
import * as tf from '@tensorflow/tfjs-core';
import { maxPoolGradientInfo, maxPoolGradientValues, type MaxPoolGradientAttributes } from '../ops/max-pool-gradient.js';
import { float32Buffers } from '../typed-array-backend.js';
import type { BackendKernelConfig } from './registry.js';

type Rank4 = [number, number, number, number];

const kernelFunc: tf.KernelFunc = ({ inputs, attrs, backend }) => {
  const { dy, input } = inputs as tf.MaxPoolGradInputs;
  const { filterSize, strides, pad, dimRoundingMode } = attrs as unknown as tf.MaxPoolGradAttrs;
  const attributes: MaxPoolGradientAttributes = { filterSize, strides, pad, ...(dimRoundingMode ? { dimRoundingMode } : {}) };
  const info = maxPoolGradientInfo(input!.shape as Rank4, dy!.shape, attributes);
  // In place on the backend's memory: no copies of x, dy or dx.
  const buffers = float32Buffers(tf.MaxPoolGrad, backend as tf.KernelBackend, [input!, dy!], [input!.shape]);
  const [values, upstream] = buffers.inputs as [Float32Array, Float32Array];
  maxPoolGradientValues(values, upstream, info, buffers.outputs[0]!.values);
  return buffers.outputs[0]!.info;
};

export const maxPoolGradConfig: BackendKernelConfig = {
  kernelName: tf.MaxPoolGrad,
  backends: ['wasm', 'cpu'],
  defaultBackends: ['wasm'],
  kernelFunc,
};
