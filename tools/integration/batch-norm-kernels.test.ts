// The contract between @regstack/models' batch normalisation and @regstack/backend's per-channel
// reduction kernels: the same names, the same results with and without the kernels (forward, every
// gradient, running statistics), and a gradient of a gradient that still works.
import * as tf from '@tensorflow/tfjs-core';
import {
  CHANNEL_MOMENTS_KERNEL as BACKEND_MOMENTS,
  CHANNEL_SUMS_KERNEL as BACKEND_SUMS,
  registerKernels,
  unregisterKernels,
  useBackend,
} from '@regstack/backend';
import { CHANNEL_MOMENTS_KERNEL, CHANNEL_SUMS_KERNEL, batchNormalization, type BatchNormParameters } from '@regstack/models';
import { Random, type ModelMode } from '@regstack/regularizer';
import { relativeError } from '@regstack/regularizer/testing';
import { describe, expect, it } from 'vitest';

const CHANNELS = 6;

function tensorOf(shape: number[], seed: number, offset = 0): tf.Tensor {
  const random = new Random(seed);
  return tf.tensor(Array.from({ length: tf.util.sizeFromShape(shape) }, () => offset + random.normal()), shape);
}

function parameters(): BatchNormParameters {
  return {
    gamma: tf.variable(tensorOf([CHANNELS], 1, 1)),
    beta: tf.variable(tensorOf([CHANNELS], 2)),
    runningMean: tf.variable(tensorOf([CHANNELS], 3), false),
    runningVariance: tf.variable(tf.abs(tensorOf([CHANNELS], 4, 1)), false),
    momentum: 0.1,
    epsilon: 1e-5,
  };
}

/** Output, the gradients w.r.t. x, γ and β of Σ output·w, the running statistics after, and tensors leaked. */
function run(mode: ModelMode) {
  const x = tensorOf([3, 5, 4, CHANNELS], 5, 0.5);
  const weights = tensorOf([3, 5, 4, CHANNELS], 6);
  const layer = parameters();
  const before = tf.memory().numTensors;
  // The weight tape updates the running statistics (in 'train'); the other passes leave them alone.
  const { value, grads } = tf.variableGrads(() => tf.sum(tf.mul(batchNormalization(x, layer, mode), weights)) as tf.Scalar, [layer.gamma, layer.beta]);
  const still = { ...layer, momentum: 0 };
  const dx = tf.grad((input: tf.Tensor) => tf.sum(tf.mul(batchNormalization(input, still, mode), weights)))(x);
  const output = batchNormalization(x, still, mode);
  const result = {
    output: output.dataSync() as Float32Array,
    gradients: [dx, grads[layer.gamma.name]!, grads[layer.beta.name]!].map((gradient) => gradient.dataSync() as Float32Array),
    running: [layer.runningMean, layer.runningVariance].map((variable) => variable.dataSync() as Float32Array),
  };
  tf.dispose([value, dx, output, ...Object.values(grads)]);
  const leaked = tf.memory().numTensors - before;
  tf.dispose([x, weights, layer.gamma, layer.beta, layer.runningMean, layer.runningVariance]);
  return { ...result, leaked };
}

async function kernelsThatRan(mode: ModelMode): Promise<Set<string>> {
  const x = tensorOf([2, 3, 3, CHANNELS], 7);
  const layer = parameters();
  const profile = await tf.profile(() => {
    const gradient = tf.grad((input: tf.Tensor) => tf.sum(batchNormalization(input, layer, mode)))(x);
    gradient.dispose();
  });
  tf.dispose([x, layer.gamma, layer.beta, layer.runningMean, layer.runningVariance]);
  return new Set(profile.kernelNames);
}


describe.each(['wasm', 'cpu'] as const)('batch normalisation with and without the reduction kernels on %s', (backend) => {
  it('agree on the kernel names', () => {
    expect(CHANNEL_MOMENTS_KERNEL).toBe(BACKEND_MOMENTS);
    expect(CHANNEL_SUMS_KERNEL).toBe(BACKEND_SUMS);
  });

  it.each(['train', 'frozen-stats'] as const)('%s: the same output, gradients and running statistics, and the kernels do run', async (mode) => {
    await useBackend(backend);
    const withKernels = await kernelsThatRan(mode);
    expect(withKernels.has(CHANNEL_MOMENTS_KERNEL) && withKernels.has(CHANNEL_SUMS_KERNEL)).toBe(true);
    const fast = run(mode);

    unregisterKernels(backend, [BACKEND_MOMENTS, BACKEND_SUMS]);
    try {
      const withoutKernels = await kernelsThatRan(mode);
      expect(withoutKernels.has(CHANNEL_MOMENTS_KERNEL) || withoutKernels.has(CHANNEL_SUMS_KERNEL)).toBe(false);
      const plain = run(mode);
      expect(fast.leaked).toBe(0);
      expect(plain.leaked).toBe(0);
      expect(relativeError(fast.output, plain.output)).toBeLessThan(1e-6);
      for (const [index, gradient] of fast.gradients.entries()) {
        expect(relativeError(gradient, plain.gradients[index]!), `gradient ${['x', 'gamma', 'beta'][index]}`).toBeLessThan(1e-5);
      }
      for (const [index, statistic] of fast.running.entries()) expect(relativeError(statistic, plain.running[index]!)).toBeLessThan(1e-6);
    } finally {
      registerKernels(backend, [BACKEND_MOMENTS, BACKEND_SUMS]);
    }
  });

  it('differentiates a gradient through it (nested tapes run it as tf ops)', async () => {
    await useBackend(backend);
    const x = tensorOf([2, 3, 3, CHANNELS], 8);
    const layer = parameters();
    const weights = tensorOf([2, 3, 3, CHANNELS], 9);
    // d/dγ of ‖∂L/∂x‖², L = Σ BN(x)·w: nonzero, and the same by central differences in γ.
    const penalty = (gamma: tf.Tensor) => {
      const dx = tf.grad((input: tf.Tensor) => tf.sum(tf.mul(batchNormalization(input, { ...layer, gamma: gamma as tf.Variable }, 'frozen-stats'), weights)))(x);
      return tf.sum(tf.square(dx));
    };
    tf.tidy(() => {
      const analytic = tf.grad(penalty)(layer.gamma).dataSync();
      const step = 1e-2;
      for (const channel of [0, 3]) {
        const shift = tf.mul(tf.reshape(tf.oneHot([channel], CHANNELS), [CHANNELS]), step);
        const up = penalty(tf.add(layer.gamma, shift)).dataSync()[0]!;
        const down = penalty(tf.sub(layer.gamma, shift)).dataSync()[0]!;
        expect(Math.abs(analytic[channel]! - (up - down) / (2 * step))).toBeLessThan(1e-2 * Math.abs(analytic[channel]!) + 1e-3);
      }
      expect(Math.max(...Array.from(analytic).map(Math.abs))).toBeGreaterThan(1e-3);
    });
    tf.dispose([x, weights, layer.gamma, layer.beta, layer.runningMean, layer.runningVariance]);
  });
});
