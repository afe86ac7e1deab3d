/**
 * `RegstackBatchNormGrad` (wasm and cpu): dx, dγ and dβ of `RegstackBatchNorm` in two passes over the
 * values in place (the per-channel sums, then dx); see ops/batch-norm.ts for the contract. With a
 * residual, the sums pass also writes g (dy masked by y > 0), the residual's gradient, and the dx pass
 * reads g instead of dy and y: one stream fewer there.
 */
import * as tf from '@tensorflow/tfjs-core';
import { ConfigError } from '@regstack/regularizer';
import { channelSums } from '../ops/channel-reductions.js';
import { BATCH_NORM_GRAD_KERNEL, activationChannels, expectInput, gradientCoefficients, inputGradient, maskedChannelSums } from '../ops/batch-norm.js';
import { batchNormSimd, blockedSums, memoryOffset } from '../simd/batch-norm.js';
import { float32Buffers, isWasmHeapBackend, type OutputBuffer } from '../typed-array-backend.js';
import type { BackendKernelConfig } from './registry.js';

const kernelFunc: tf.KernelFunc = ({ inputs, attrs, backend }) => {
  const { dy, x, y, gamma, mean, inverseStd } = inputs as Record<string, tf.TensorInfo | undefined>;
  const { relu, batchStatistics, residual = false } = (attrs ?? {}) as { relu?: unknown; batchStatistics?: unknown; residual?: unknown };
  if (typeof relu !== 'boolean') throw new ConfigError('relu', `${BATCH_NORM_GRAD_KERNEL} needs attribute relu: true or false, got ${String(relu)}`);
  if (typeof residual !== 'boolean') {
    throw new ConfigError('residual', `${BATCH_NORM_GRAD_KERNEL} needs attribute residual: true, false or absent, got ${String(residual)}`);
  }
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
  // With `residual`, one more output: the residual's gradient g. With SIMD, one more output is scratch
  // on the backend's memory (freed below): the sums as 2·channels doubles (4·channels floats), then
  // dx's coefficients as float32.
  const outputShapes = [dy!.shape, perChannel, perChannel, ...(residual ? [dy!.shape] : []), ...(simd ? [[7 * channels]] : [])];
  const buffers = float32Buffers(BATCH_NORM_GRAD_KERNEL, backend as tf.KernelBackend, checked, outputShapes);
  const [dyValues, xValues, yValues, gammaValues, meanValues, inverseStdValues] = buffers.inputs as [
    Float32Array, Float32Array, Float32Array, Float32Array, Float32Array, Float32Array,
  ];
  const [dx, dGamma, dBeta] = buffers.outputs as [OutputBuffer, OutputBuffer, OutputBuffer];
  const dResidual = residual ? buffers.outputs[3]! : undefined;
  const scratch = simd ? buffers.outputs.at(-1)! : undefined;
  const offset = (info: tf.TensorInfo) => memoryOffset(backend, info.dataId);
  let sums: Float64Array<ArrayBufferLike> = new Float64Array(channels);
  let products: Float64Array<ArrayBufferLike> = new Float64Array(channels);
  // Whether the sums pass wrote g into dResidual (the dx pass then reads it, unmasked).
  let gWritten = false;
  if (simd && scratch && offset(scratch.info) % 8 === 0) {
    const [dyOffset, xOffset, yOffset, scratchOffset] = [offset(dy!), offset(x!), offset(y!), offset(scratch.info)];
    const gOffset = dResidual ? offset(dResidual.info) : null;
    [sums, products] = blockedSums(scratch.values, channels, count, (rowOffset, rows) =>
      simd.gradientSums(relu, dyOffset + rowOffset, xOffset + rowOffset, yOffset + rowOffset, scratchOffset, rows, channels / 4, gOffset === null ? null : gOffset + rowOffset),
    );
    gWritten = gOffset !== null;
  } else if (relu) {
    maskedChannelSums(dyValues, xValues, yValues, channels, sums, products, dResidual?.values);
    gWritten = dResidual !== undefined;
  } else {
    channelSums(dyValues, xValues, channels, sums, products);
    if (dResidual) {
      dResidual.values.set(dyValues);
      gWritten = true;
    }
  }
  const coefficients = gradientCoefficients(sums, products, gammaValues, meanValues, inverseStdValues, count, batchStatistics);
  // Read before the scratch (which holds the sums) is freed.
  dGamma.values.set(coefficients.dGamma);
  dBeta.values.set(sums);
  if (simd && scratch) {
    scratch.values.set(coefficients.a, 4 * channels);
    scratch.values.set(coefficients.b, 5 * channels);
    scratch.values.set(coefficients.k, 6 * channels);
    const [g, masked] = gWritten ? [dResidual!.info, false] : [dy!, relu];
    simd.inputGradient(masked, offset(g), offset(x!), offset(y!), offset(dx.info), offset(scratch.info) + 16 * channels, count, channels / 4);
    (backend as tf.KernelBackend).disposeData(scratch.info.dataId);
  } else {
    const [g, masked] = gWritten ? [dResidual!.values, false] : [dyValues, relu];
    inputGradient(g, xValues, masked ? yValues : undefined, coefficients.a, coefficients.b, coefficients.k, dx.values);
  }
  return [dx.info, dGamma.info, dBeta.info, ...(dResidual ? [dResidual.info] : [])];
};

export const batchNormGradConfig: BackendKernelConfig = {
  kernelName: BATCH_NORM_GRAD_KERNEL,
  backends: ['wasm', 'cpu'],
  defaultBackends: ['wasm', 'cpu'],
  kernelFunc,
};
