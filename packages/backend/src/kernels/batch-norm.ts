/**
 * `RegstackBatchNorm` (wasm and cpu): batch normalisation's forward pass, optionally with a residual
 * added and the ReLU after it, in two passes over the values in place (statistics, then the affine map), and its gradient, which
 * `registerKernels` registers with it (see ops/batch-norm.ts for the contract).
 */
import * as tf from '@tensorflow/tfjs-core';
import { assertChoice, assertNumber, ConfigError } from '@regstack/regularizer';
import { channelSums } from '../ops/channel-reductions.js';
import {
  BATCH_NORM_GRAD_KERNEL,
  BATCH_NORM_KERNEL,
  BATCH_NORM_MODES,
  activationChannels,
  affine,
  expectInput,
  type BatchNormAttributes,
} from '../ops/batch-norm.js';
import { batchNormSimd, blockedSums, memoryOffset } from '../simd/batch-norm.js';
import { float32Buffers, isWasmHeapBackend } from '../typed-array-backend.js';
import type { BackendKernelConfig } from './registry.js';

/** The attributes after checking each (a ConfigError naming the attribute otherwise). */
export function batchNormAttributes(kernelName: string, attrs: tf.NamedAttrMap | undefined): BatchNormAttributes {
  const { mode, epsilon, momentum, relu, residual = false } = (attrs ?? {}) as Partial<Record<keyof BatchNormAttributes, unknown>>;
  if (typeof relu !== 'boolean') throw new ConfigError('relu', `${kernelName} needs attribute relu: true or false, got ${String(relu)}`);
  if (typeof residual !== 'boolean') throw new ConfigError('residual', `${kernelName} needs attribute residual: true, false or absent, got ${String(residual)}`);
  return {
    mode: assertChoice('mode', mode, BATCH_NORM_MODES),
    epsilon: assertNumber('epsilon', epsilon, { min: 0 }),
    momentum: assertNumber('momentum', momentum, { min: 0, max: 1 }),
    relu,
    residual,
  };
}

const kernelFunc: tf.KernelFunc = ({ inputs, attrs, backend }) => {
  const { x, gamma, beta, runningMean, runningVariance, residual } = inputs as Record<string, tf.TensorInfo | undefined>;
  const { mode, epsilon, momentum, relu, residual: withResidual } = batchNormAttributes(BATCH_NORM_KERNEL, attrs);
  const channels = activationChannels(BATCH_NORM_KERNEL, 'x', x);
  const perChannel = [channels];
  if (!withResidual && residual !== undefined) {
    throw new ConfigError('residual', `${BATCH_NORM_KERNEL} got input 'residual' without attribute residual: true (its gradient would be lost)`);
  }
  const checked = [
    x!,
    ...[gamma, beta, runningMean, runningVariance].map((input, index) =>
      expectInput(BATCH_NORM_KERNEL, ['gamma', 'beta', 'runningMean', 'runningVariance'][index]!, input, perChannel),
    ),
    ...(withResidual ? [expectInput(BATCH_NORM_KERNEL, 'residual', residual, x!.shape)] : []),
  ];
  const count = tf.util.sizeFromShape(x!.shape) / channels;
  if (mode !== 'eval' && count < 2) {
    throw new ConfigError('x', `${BATCH_NORM_KERNEL} in mode '${mode}' needs more than 1 value per channel, got ${count}`);
  }
  const simd = isWasmHeapBackend(backend) && channels % 4 === 0 && count > 0 ? batchNormSimd(backend) : null;
  // With SIMD, one more output is scratch on the backend's memory (freed below): the sums as 2·channels
  // doubles (4·channels floats), then scale and shift as float32.
  const outputShapes = [x!.shape, perChannel, perChannel, ...(mode === 'train' ? [perChannel, perChannel] : []), ...(simd ? [[6 * channels]] : [])];
  const buffers = float32Buffers(BATCH_NORM_KERNEL, backend as tf.KernelBackend, checked, outputShapes);
  const [values, gammaValues, betaValues, meanValues, varianceValues, residualValues] = buffers.inputs as Float32Array[] as [
    Float32Array, Float32Array, Float32Array, Float32Array, Float32Array, Float32Array | undefined,
  ];
  const outputs = buffers.outputs.slice(0, mode === 'train' ? 5 : 3);
  const scratch = simd ? buffers.outputs.at(-1)! : undefined;
  const offset = (info: tf.TensorInfo) => memoryOffset(backend, info.dataId);
  const mean = new Float64Array(channels);
  const variance = new Float64Array(channels);
  if (mode === 'eval') {
    mean.set(meanValues);
    variance.set(varianceValues);
  } else {
    let sums: Float64Array<ArrayBufferLike> = mean;
    let squares: Float64Array<ArrayBufferLike> = new Float64Array(channels);
    if (simd && scratch && offset(scratch.info) % 8 === 0) {
      const [xOffset, scratchOffset] = [offset(x!), offset(scratch.info)];
      [sums, squares] = blockedSums(scratch.values, channels, count, (rowOffset, rows) => simd.moments(xOffset + rowOffset, scratchOffset, rows, channels / 4));
    } else {
      channelSums(values, values, channels, sums, squares);
    }
    for (let channel = 0; channel < channels; channel++) {
      const channelMean = sums[channel]! / count;
      mean[channel] = channelMean;
      // Clamped: rounding can leave a constant channel's E[x²] − E[x]² a hair below 0.
      variance[channel] = Math.max(0, squares[channel]! / count - channelMean * channelMean);
    }
  }
  const scale = new Float64Array(channels);
  const shift = new Float64Array(channels);
  const inverseStd = outputs[2]!.values;
  for (let channel = 0; channel < channels; channel++) {
    const channelInverseStd = 1 / Math.sqrt(variance[channel]! + epsilon);
    inverseStd[channel] = channelInverseStd;
    scale[channel] = gammaValues[channel]! * channelInverseStd;
    shift[channel] = betaValues[channel]! - mean[channel]! * scale[channel]!;
  }
  outputs[1]!.values.set(mean);
  if (mode === 'train') {
    const unbiased = count / (count - 1);
    const newMean = outputs[3]!.values;
    const newVariance = outputs[4]!.values;
    for (let channel = 0; channel < channels; channel++) {
      newMean[channel] = (1 - momentum) * meanValues[channel]! + momentum * mean[channel]!;
      newVariance[channel] = (1 - momentum) * varianceValues[channel]! + momentum * unbiased * variance[channel]!;
    }
  }
  if (simd && scratch) {
    scratch.values.set(scale, 4 * channels);
    scratch.values.set(shift, 5 * channels);
    const residualOffset = withResidual ? offset(residual!) : null;
    simd.affine(relu, offset(x!), offset(outputs[0]!.info), offset(scratch.info) + 16 * channels, count, channels / 4, residualOffset);
    (backend as tf.KernelBackend).disposeData(scratch.info.dataId);
  } else {
    affine(values, scale, shift, relu, outputs[0]!.values, residualValues);
  }
  return outputs.map((output) => output.info);
};

export const batchNormConfig: BackendKernelConfig = {
  kernelName: BATCH_NORM_KERNEL,
  backends: ['wasm', 'cpu'],
  defaultBackends: ['wasm', 'cpu'],
  kernelFunc,
  gradient: {
    kernelName: BATCH_NORM_KERNEL,
    inputsToSave: ['x', 'gamma'],
    outputsToSave: [true, true, true],
    gradFunc: (dys, saved, attrs) => {
      const dy = Array.isArray(dys) ? dys[0]! : dys;
      const [x, gamma, y, mean, inverseStd] = saved as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor];
      const { mode, relu, residual = false } = attrs as unknown as BatchNormAttributes;
      // Eagerly, not inside the closures: the tape calls each closure inside its own tidy, which would
      // dispose the outputs that closure does not return. x always depends on weights, so dx is needed.
      const [dx, dGamma, dBeta, dResidual] = tf.engine().runKernel(
        BATCH_NORM_GRAD_KERNEL,
        { dy, x, y, gamma, mean, inverseStd },
        { relu, batchStatistics: mode !== 'eval', residual },
      ) as unknown as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor | undefined];
      // The running statistics are not differentiated (no gradient flows into them).
      return {
        x: () => dx,
        gamma: () => dGamma,
        beta: () => dBeta,
        runningMean: () => tf.zerosLike(mean),
        runningVariance: () => tf.zerosLike(mean),
        ...(dResidual ? { residual: () => dResidual } : {}),
      };
    },
  },
};
