/**
 * `Conv2DBackpropFilter` on wasm (which ships none) and cpu (whose scalar six-deep loop is ≈200× slower):
 * the direct SIMD loop where it applies (Winograd F(2×2, 3×3) for the stride-1 3×3 filters where that is
 * faster), else the convolution form of `conv2dFilterGradient`.
 */
import * as tf from '@tensorflow/tfjs-core';
import { conv2dFilterGradient, convGradientAttributesOf, filterGradientIsDirect } from '../ops/conv-gradients.js';
import { asTensor } from '../typed-array-backend.js';
import { convolutionWork, shareConvolution } from '../threads/parallel-conv.js';
import type { BackendKernelConfig } from './registry.js';

type Rank4 = [number, number, number, number];

const kernelFunc: tf.KernelFunc = ({ inputs, attrs, backend }) => {
  const { x, dy } = inputs as tf.Conv2DBackpropFilterInputs;
  const filterShape = (attrs as unknown as tf.Conv2DBackpropFilterAttrs).filterShape as Rank4;
  const attributes = convGradientAttributesOf(attrs);
  // The direct SIMD form shares its batch with the worker threads itself, without copies.
  if (filterGradientIsDirect(x!, dy!, filterShape, attributes)) return tf.tidy(() => conv2dFilterGradient(asTensor(x!), asTensor(dy!), filterShape, attributes));
  // With worker threads (useBackend's `threads` in Node), the batch is shared and the shares' sums added.
  const shared = shareConvolution('filter', backend, x!, dy!, attributes, filterShape, convolutionWork(dy!.shape, filterShape), (xs, dys, shape) =>
    conv2dFilterGradient(xs, dys, shape, attributes),
  );
  // Returning a Tensor (not a TensorInfo) hands ownership to the engine without an extra reference.
  return shared ?? tf.tidy(() => conv2dFilterGradient(asTensor(x!), asTensor(dy!), filterShape, attributes));
};

export const conv2dBackpropFilterConfig: BackendKernelConfig = {
  kernelName: tf.Conv2DBackpropFilter,
  backends: ['wasm', 'cpu'],
  defaultBackends: ['wasm', 'cpu'],
  kernelFunc,
};
