/**
 * `RegstackBatchNormGrad` (wasm and cpu): dx, dγ and dβ of `RegstackBatchNorm` in two passes over the
 * values in place (the per-channel sums, then dx); see ops/batch-norm.ts for the contract.
 */
import * as tf from '@tensorflow/tfjs-core';
import { ConfigError } from '@regstack/regularizer';
import { channelSums } from '../ops/channel-reductions.js';
import { BATCH_NORM_GRAD_KERNEL, activationChannels, expectInput, gradientCoefficients, inputGradient, maskedChannelSums } from '../ops/batch-norm.js';
import { batchNormSimd, memoryOffset } from '../simd/batch-norm.js';
import { float32Buffers, isWasmHeapBackend, type OutputBuffer } from '../typed-array-backend.js';
import type { BackendKernelConfig } from './registry.js';

const kernelFunc: tf.KernelFunc = ({ inputs, attrs, backend }) => {
  const { dy, x, y, gamma, mean, inverseStd } = inputs as Record<string, tf.TensorInfo | undefined>;
  const { relu, batchStatistics } = (attrs ?? {}) as { relu?: unknown; batchStatistics?: unknown };
  if (typeof relu !== 'boolean') throw new ConfigError('relu', `${BATCH_NORM_GRAD_KERNEL} needs attribute relu: true or false, got ${String(relu)}`);
  if (typeof batchStatistics !== 'boolean') {
    throw new ConfigError('batchStatistics', `${BATCH_NORM_GRAD_KERNEL} needs attribute batchStatistics: true or false, got ${String(batchStatistics)}`);
  }
  const channels = activationChannels(BATCH_NORM_GRAD_KERNEL, 'dy', dy);
  const perChannel = [channels];
  const checked = [
    dy!,
    expectInput(BATCH_NORM_GRAD_KERNEL, 'x', x, dy!.shape),
    expectInput(BATCH_NORM_GRAD_KERNEL, 'y', y, dy!.shape),
    ...[gamma, mean, inverseStd].map((input, index) => expectInput(BATCH_NORM_GRAD_KERNEL, ['gamma', 'mean', 'inverseStd'][index]!, input, perChannel)),
  ];
  const count = tf.util.sizeFromShape(dy!.shape) / channels;
  const simd = isWasmHeapBackend(backend) && channels % 4 === 0 && count > 0 ? batchNormSimd(backend) : null;
  // With SIMD, one more output holds dx's coefficients as float32 on the backend's memory (freed below).
  const buffers = float32Buffers(BATCH_NORM_GRAD_KERNEL, backend as tf.KernelBackend, checked, [dy!.shape, perChannel, perChannel, ...(simd ? [[3 * channels]] : [])]);
  const [dyValues, xValues, yValues, gammaValues, meanValues, inverseStdValues] = buffers.inputs as [
    Float32Array, Float32Array, Float32Array, Float32Array, Float32Array, Float32Array,
  ];
  const [dx, dGamma, dBeta, coefficientBuffer] = buffers.outputs as [OutputBuffer, OutputBuffer, OutputBuffer, OutputBuffer | undefined];
  const sums = new Float64Array(channels);
  const products = new Float64Array(channels);
  if (relu) maskedChannelSums(dyValues, xValues, yValues, channels, sums, products);
  else channelSums(dyValues, xValues, channels, sums, products);
  const coefficients = gradientCoefficients(sums, products, gammaValues, meanValues, inverseStdValues, count, batchStatistics);
  if (simd && coefficientBuffer) {
    coefficientBuffer.values.set(coefficients.a);
    coefficientBuffer.values.set(coefficients.b, channels);
    coefficientBuffer.values.set(coefficients.k, 2 * channels);
    const offset = (info: tf.TensorInfo) => memoryOffset(backend, info.dataId);
    simd.inputGradient(relu, offset(dy!), offset(x!), offset(y!), offset(dx.info), offset(coefficientBuffer.info), count, channels / 4);
    (backend as tf.KernelBackend).disposeData(coefficientBuffer.info.dataId);
  } else {
    inputGradient(dyValues, xValues, relu ? yValues : undefined, coefficients.a, coefficients.b, coefficients.k, dx.values);
  }
  dGamma.values.set(coefficients.dGamma);
  dBeta.values.set(sums);
  return [dx.info, dGamma.info, dBeta.info];
};

export const batchNormGradConfig: BackendKernelConfig = {
  kernelName: BATCH_NORM_GRAD_KERNEL,
  backends: ['wasm', 'cpu'],
  defaultBackends: ['wasm', 'cpu'],
  kernelFunc,
};
