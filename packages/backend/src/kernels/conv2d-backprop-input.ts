/**
 * `Conv2DBackpropInput` on wasm (whose shipped one is a direct loop several times slower than the forward
 * convolution): the sub-pixel form of `conv2dInputGradient`. Not on cpu by default: the shipped one is
 * as fast there at stride 1 and faster at stride 2.
 */
import * as tf from '@tensorflow/tfjs-core';
import { conv2dInputGradient, convGradientAttributesOf } from '../ops/conv-gradients.js';
import { asTensor } from '../typed-array-backend.js';
import { convolutionWork, shareConvolution } from '../threads/parallel-conv.js';
import { isOurs, type BackendKernelConfig } from './registry.js';

type Rank4 = [number, number, number, number];

const kernelFunc: tf.KernelFunc = ({ inputs, attrs, backend }) => {
  const { dy, filter } = inputs as tf.Conv2DBackpropInputInputs;
  const inputShape = (attrs as unknown as tf.Conv2DBackpropInputAttrs).inputShape as Rank4;
  const attributes = convGradientAttributesOf(attrs);
  // Its convolutions have the forward input's channels as outputs: when our Conv2D runs them directly,
  // they share their batches themselves.
  const channels = attributes.dataFormat === 'NCHW' ? inputShape[1] : inputShape[3];
  if (isOurs(tf.getBackend(), tf.Conv2D) && channels % 4 === 0) {
    return tf.tidy(() => conv2dInputGradient(inputShape, asTensor(dy!), asTensor(filter!), attributes));
  }
  const shared = shareConvolution('input', backend, dy!, filter!, attributes, inputShape, convolutionWork(dy!.shape, filter!.shape), (dys, f, shape) =>
    conv2dInputGradient(shape, dys, f, attributes),
  );
  return shared ?? tf.tidy(() => conv2dInputGradient(inputShape, asTensor(dy!), asTensor(filter!), attributes));
};

export const conv2dBackpropInputConfig: BackendKernelConfig = {
  kernelName: tf.Conv2DBackpropInput,
  backends: ['wasm', 'cpu'],
  defaultBackends: ['wasm'],
  kernelFunc,
};
