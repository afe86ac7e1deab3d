/**
 * wasm's `Conv2D`: the direct WebAssembly SIMD convolution (simd/convolution.ts) for float32 NHWC
 * inputs with dilation 1 and output channels in multiples of 4, which shares its batch with the worker
 * threads itself; otherwise the shipped kernel (XNNPACK), its batch shared with the worker threads
 * through copies when there are any (see threads/conv-pool.ts). wasm only: it delegates to wasm's
 * shipped kernel, and the cpu backend keeps its own `Conv2D` as the reference the tests compare against.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { ConvGradientAttributes } from '../ops/conv-gradients.js';
import { simdConvolution, simdConvolutionSupports } from '../simd/convolution.js';
import { float32Buffers } from '../typed-array-backend.js';
import { convolutionWork, shareConvolution } from '../threads/parallel-conv.js';
import { shippedKernel, type BackendKernelConfig } from './registry.js';

type Rank4 = [number, number, number, number];

const kernelFunc: tf.KernelFunc = (args) => {
  const { x, filter } = args.inputs as tf.Conv2DInputs;
  const { strides, pad, dimRoundingMode, dilations, dataFormat } = args.attrs as unknown as tf.Conv2DAttrs;
  const info = tf.backend_util.computeConv2DInfo(
    x!.shape as Rank4,
    filter!.shape as Rank4,
    strides,
    dilations,
    pad,
    dimRoundingMode,
    false,
    tf.backend_util.convertConv2DDataFormat(dataFormat),
  );
  const outputShape: Rank4 = [info.batchSize, info.outHeight, info.outWidth, info.outChannels];
  if (info.dataFormat === 'channelsLast' && info.dilationHeight === 1 && info.dilationWidth === 1 && x!.dtype === 'float32' && filter!.dtype === 'float32') {
    const geometry = { ...info, padTop: info.padInfo.top, padLeft: info.padInfo.left };
    if (simdConvolutionSupports(geometry)) {
      const buffers = float32Buffers(tf.Conv2D, args.backend as tf.KernelBackend, [x!, filter!], [outputShape]);
      simdConvolution(buffers.inputs[0]!, buffers.inputs[1]!, buffers.outputs[0]!.values, geometry);
      return buffers.outputs[0]!.info;
    }
  }
  const shipped = shippedKernel('wasm', tf.Conv2D, args.backend);
  const fixed = reachingPadding(info, args.attrs as unknown as tf.Conv2DAttrs);
  const attrs = fixed ? (fixed as unknown as tf.NamedAttrMap) : args.attrs;
  const attributes = fixed
    ? { strides, pad: fixed.pad, dilations, dataFormat }
    : { strides, pad: pad as ConvGradientAttributes['pad'], dilations, dataFormat, ...(dimRoundingMode ? { dimRoundingMode } : {}) };
  const shared = shareConvolution('forward', args.backend, x!, filter!, attributes, outputShape, convolutionWork(outputShape, filter!.shape), (xs, f) =>
    tf.engine().makeTensorFromTensorInfo(shipped.kernelFunc({ ...args, attrs, inputs: { x: xs, filter: f } }) as tf.TensorInfo),
  );
  return shared ?? shipped.kernelFunc({ ...args, attrs });
};

/**
 * Explicit padding for the shipped kernel when the last windows reach past the padding (numeric
 * padding rounded up by `dimRoundingMode`): TF.js 4.22 hands XNNPACK the padding alone, so XNNPACK
 * computes fewer rows or columns than TF.js allocated and every value lands in the wrong place. With
 * the padding extended to what the windows reach, both agree. Undefined when nothing reaches past it.
 */
function reachingPadding(info: tf.backend_util.Conv2DInfo, attrs: tf.Conv2DAttrs): (tf.Conv2DAttrs & { pad: tf.backend_util.ExplicitPadding }) | undefined {
  if (info.dataFormat !== 'channelsLast') return undefined;
  const { inHeight, inWidth, outHeight, outWidth, strideHeight, strideWidth, effectiveFilterHeight, effectiveFilterWidth, padInfo } = info;
  const bottom = (outHeight - 1) * strideHeight + effectiveFilterHeight - inHeight - padInfo.top;
  const right = (outWidth - 1) * strideWidth + effectiveFilterWidth - inWidth - padInfo.left;
  if (bottom <= padInfo.bottom && right <= padInfo.right) return undefined;
  const pad: tf.backend_util.ExplicitPadding = [
    [0, 0],
    [padInfo.top, Math.max(bottom, padInfo.bottom)],
    [padInfo.left, Math.max(right, padInfo.right)],
    [0, 0],
  ];
  const { dimRoundingMode: _rounding, ...rest } = attrs;
  return { ...rest, pad };
}

export const conv2dConfig: BackendKernelConfig = {
  kernelName: tf.Conv2D,
  backends: ['wasm'],
  defaultBackends: ['wasm'],
  kernelFunc,
};
